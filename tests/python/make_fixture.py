#!/usr/bin/env python3
"""Write a FileStorage (Data.fs) fixture with the real ZODB.

usage: python make_fixture.py OUT.fs [--pack] [--real-clock]

The history (about 100 transactions) exercises everything a storage client
can observe:

- the root PersistentMapping, a PersistentMapping, a PersistentList, a
  BTrees.Length and an OOBTree of a few hundred keys (many buckets), with
  many revisions of the same objects;
- user names and descriptions (ASCII, empty, non-ASCII UTF-8) and extension
  dicts, one of them large (> 1000 keys, nested containers, bytes, big and
  negative ints, floats, bools, None, non-ASCII strings, a shared sub-object);
- raw storage-level stores of non-pickle data (b'x') through
  tpc_begin/store/tpc_vote/tpc_finish, an empty transaction (no records),
  restore() with an explicit tid (a backpointer and a "no data" creation);
- deleteObject on unreachable objects;
- undo of a modifying transaction, undo of that undo, undo of an
  object-creating transaction (leaves "no data" backpointers), and an undo
  whose backpointer reaches data that is non-current at the pack time;
- objects that become unreachable (pack GC), one kept only by a WeakRef.

With --pack the storage is packed (GC on, referencesf) at the tid of a
transaction in the middle of the history, then more transactions follow.
The history is the same with and without --pack.

The clock is fake by default (starts 2024-01-01T00:00:00Z, +0.25 s per
time.time() call), so tids and the file bytes are reproducible run to run;
--real-clock uses the real time.

Prints a JSON summary on stdout.
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import time


class FakeClock:
    """Deterministic replacement for time.time (used by FileStorage for tids)."""

    def __init__(self, start=1704067200.0, step=0.25):
        self.now = start
        self.step = step

    def __call__(self):
        self.now += self.step
        return self.now


def big_extension():
    """A large, varied extension dict (> 1000 keys, pickled size < 64 KiB)."""
    shared = ["shared", 1, None]  # referenced twice: exercises the pickle memo
    ext = {
        "ints": [0, 1, -1, 255, 256, 65535, 65536, -129, 2**31 - 1, -(2**31),
                 2**31, 2**63 - 1, -(2**63), 2**63, 2**64, 2**64 + 1,
                 -(2**64) - 1, 2**200 + 7, -(10**40), 10**40],
        "floats": [0.0, -0.0, 0.1, 1.5, -2.25, 1e300, 5e-324, 123456789.125,
                   float("inf"), float("-inf")],
        "bools": [True, False],
        "none": None,
        "bytes": [b"", b"\x00\xff\x80", bytes(range(256)), b"x" * 300],
        "strs": ["", "ascii", "caf\u00e9", "\u65e5\u672c\u8a9e",
                 "\U0001f600 emoji", "quote\"back\\slash\nnl\ttab",
                 "\u00e9" * 200],
        "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), ((), [()])],
        "nested": {"a": {"b": {"c": [1, [2, [3, {"d": b"deep"}]]]}},
                   "list_of_dicts": [{"k": i} for i in range(3)]},
        "shared1": shared,
        "shared2": shared,
        7: "int key",
        b"bkey": "bytes key",
        (1, "t"): "tuple key",
        -5: None,
        "long_list": list(range(1500)),  # > 1000 items: APPENDS in batches
        "big": {f"key{i:04d}": i * 3 - 1000 for i in range(1200)},  # SETITEMS batches
        "user_key_\u00fc": "\u00fc",
    }
    return ext


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--pack", action="store_true",
                    help="pack in the middle of history, then commit more")
    ap.add_argument("--real-clock", action="store_true",
                    help="use the real clock (tids not reproducible)")
    args = ap.parse_args()

    if not args.real_clock:
        # Every tid comes from time.time() in BaseStorage.tpc_begin.
        time.time = FakeClock()

    import transaction
    import ZODB
    from BTrees.Length import Length
    from BTrees.OOBTree import OOBTree
    from persistent.list import PersistentList
    from persistent.mapping import PersistentMapping
    from persistent.wref import WeakRef
    from ZODB.Connection import TransactionMetaData
    from ZODB.FileStorage import FileStorage
    from ZODB.serialize import referencesf
    from ZODB.TimeStamp import TimeStamp
    from ZODB.utils import load_current, p64, u64

    out = args.out
    for ext in ("", ".index", ".lock", ".tmp", ".old", ".pack"):
        if os.path.exists(out + ext):
            os.remove(out + ext)

    storage = FileStorage(out, create=True, pack_keep_old=False)
    db = ZODB.DB(storage)  # transaction 0: "initial database creation"
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    root = conn.root()

    def commit(user="", desc="", ext=None):
        t = tm.get()
        t.user = user
        t.description = desc
        for k, v in (ext or {}).items():
            t.setExtendedInfo(k, v)
        tm.commit()
        return storage.lastTransaction()

    def raw_txn(user, desc, ext, body, tid=None):
        """One storage-level transaction; body(txn) does the stores."""
        t = TransactionMetaData(user, desc, ext or {})
        storage.tpc_begin(t, tid)
        body(t)
        storage.tpc_vote(t)
        return storage.tpc_finish(t)

    def undo_of(tid):
        """db.undo() the transaction with this tid and commit."""
        ids = [d["id"] for d in db.undoLog(0, 10000)
               if base64.decodebytes(d["id"] + b"\n") == tid]
        assert ids, "transaction not undoable"
        db.undo(ids[0], tm.get())

    users = ["/ alice", "/ bob", "", "/ \u00e9milie", "/ carol"]
    descs = ["", "step", "caf\u00e9 \u2615", "multi\nline note", "x" * 200]

    # 1: the main containers.
    root["map"] = PersistentMapping()
    root["list"] = PersistentList()
    root["len"] = Length()
    tree = root["tree"] = OOBTree()
    for i in range(300):
        tree[f"k{i:04d}"] = f"value {i}"
    root["undo_me"] = PersistentMapping({"x": 0})
    commit("/ alice", "setup", {"app": "fixture", "step": 1})

    # 2: the big extension.
    root["map"]["big"] = True
    commit("/ bob", "big extension \u00fc", big_extension())

    def churn(i):
        """One ordinary modifying transaction, varied by i."""
        m, lst = root["map"], root["list"]
        m[f"k{i % 7}"] = i
        if i % 3 == 0:
            lst.append(i)
        root["len"].change(1)
        tree[f"k{(i * 37) % 300:04d}"] = f"rev {i}"
        if i % 5 == 0:
            tree[f"n{i:04d}"] = i  # new keys: bucket splits
        if i % 11 == 0:
            tree.pop(f"k{(i * 13) % 300:04d}", None)
        ext = None
        if i % 4 == 1:
            ext = {"i": i, "f": i / 8, "neg": -i, "big": 2**64 + i,
                   "s": "\u00e9" * (i % 3)}
        elif i % 4 == 2:
            ext = {"nested": {"l": [i, (i, str(i))], "b": bytes([i % 256])}}
        return commit(users[i % len(users)], descs[i % len(descs)], ext)

    for i in range(30):
        churn(i)

    # Unreachable objects (pack GC): attach, commit, detach.
    root["tmp"] = PersistentMapping({"a": PersistentMapping({"v": 1}),
                                     "b": PersistentList([1, 2])})
    commit("/ alice", "tmp objects")
    tmp = root["tmp"]
    tmp["a"]["v"] = 2
    commit("/ alice", "tmp modified")
    del root["tmp"]
    commit("/ alice", "tmp dropped")
    # deleteObject on a whole unreachable subgraph (what an external GC such
    # as zc.zodbdgc does; fsrefs complains about references to deleted oids).
    garbage = [tmp._p_oid, tmp["a"]._p_oid, tmp["b"]._p_oid]
    raw_txn("/ gc", "delete unreachable", None, lambda t: [
        storage.deleteObject(oid, load_current(storage, oid)[1], t) for oid in garbage])

    # An object kept only by a WeakRef (weak refs are not followed by GC).
    root["weakly"] = PersistentMapping({"w": 1})
    commit("", "weak target")
    root["weak"] = WeakRef(root["weakly"])
    del root["weakly"]
    commit("", "weak only")

    # Raw, non-pickle data through the storage API.
    r1, r2, r3 = storage.new_oid(), storage.new_oid(), storage.new_oid()
    t_raw1 = raw_txn("/ raw", "raw store", {"raw": 1}, lambda t: (
        storage.store(r1, p64(0), b"x", "", t),
        storage.store(r2, p64(0), b"\x00\x01not a pickle\xff", "", t)))
    raw_txn("/ raw", "raw rev 2", None,
            lambda t: storage.store(r1, t_raw1, b"y" * 50, "", t))
    raw_txn("/ raw", "raw delete", None,
            lambda t: storage.deleteObject(r2, t_raw1, t))
    raw_txn("/ raw", "empty transaction", {"empty": True}, lambda t: None)
    # restore() with an explicit tid: a backpointer to t_raw1's b'x' record,
    # and a "no data" creation (George Bailey object).
    explicit = p64(u64(storage.lastTransaction()) + 12345)
    raw_txn("/ raw", "restore", None, lambda t: (
        storage.restore(r1, explicit, b"x", "", t_raw1, t),
        storage.restore(r3, explicit, None, "", None, t)), tid=explicit)

    for i in range(30, 45):
        churn(i)

    # Undo a modifying transaction, then undo the undo.
    root["undo_me"]["x"] = 1
    root["undo_me"]["y"] = "new"
    t_mod = commit("/ alice", "to be undone")
    undo_of(t_mod)
    t_undo = commit("/ alice", "undo 1", {"undo": "first"})
    undo_of(t_undo)
    commit("/ alice", "undo the undo")

    # Undo an object-creating transaction: "no data" backpointers.
    root["created"] = PersistentMapping({"child": PersistentMapping()})
    t_create = commit("/ bob", "creates objects")
    undo_of(t_create)
    commit("/ bob", "undo creation")

    for i in range(45, 60):
        churn(i)

    # Around the pack time: X revisions a, b; pack time = tid of c; then d
    # undoes b, so d's backpointer reaches a, which is non-current at c.
    xobj = root["x_obj"] = PersistentMapping({"rev": "a"})
    commit("", "x rev a")
    xobj["rev"] = "b"
    t_b = commit("", "x rev b")
    t_c = churn(60)
    churn(61)
    undo_of(t_b)
    commit("", "undo x rev b")

    for i in range(62, 75):
        churn(i)

    pack_time = pack_stop = None
    if args.pack:
        pack_time = TimeStamp(t_c).timeTime()
        pack_stop = TimeStamp(*time.gmtime(pack_time)[:5] + (pack_time % 60,)).raw()
        storage.pack(pack_time, referencesf)
        conn.cacheMinimize()

    # More history after the (optional) pack.
    for i in range(75, 85):
        churn(i)
    root["undo_me"]["z"] = 3
    t_late = commit("/ alice", "late change")
    undo_of(t_late)
    commit("/ alice", "late undo")

    conn.close()
    db.close()  # writes OUT.index (kept); .lock and .tmp are left behind
    for ext in (".lock", ".tmp"):
        os.remove(out + ext)

    storage = FileStorage(out, read_only=True)
    tids, oids = [], set()
    for txn in storage.iterator():
        tids.append(txn.tid)
        oids.update(r.oid for r in txn)
    storage.close()
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    json.dump({
        "path": out,
        "transactions": len(tids),
        "oids": len(oids),
        "first_tid": tids[0].hex(),
        "last_tid": tids[-1].hex(),
        "packed": args.pack,
        "pack_time": pack_time,
        "pack_stop_tid": pack_stop.hex() if pack_stop else None,
        "size": os.path.getsize(out),
        "sha256": digest,
    }, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
