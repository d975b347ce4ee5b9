#!/usr/bin/env python3
"""Print one canonical JSON document of everything a client can observe in a FileStorage.

usage: python describe.py FILE.fs [--full-probes]

The file is opened read-only with ZODB.FileStorage.FileStorage (an existing
FILE.fs.index is used if sane; nothing is written). The output is meant to be
compared for (structural) equality with the same document produced by the
Rust storage engine; README.md in this directory specifies the format.

Conventions: bytes are lowercase hex; tids/oids are 16 hex digits; the
extension is decoded and written with canon() below. Keys are sorted and the
output is deterministic (same file -> same bytes).

load_before probes per object (see README.md): the tid of every record of
the object, each +1; every 10th transaction tid (index 0, 10, 20, ...) and
the last one, each +1; z64, 0000000000000001 and maxtid 7fffffffffffffff.
With --full-probes every transaction tid (and +1) is probed for every object
(about 5x larger output).
"""

import argparse
import base64
import json
import sys

from ZODB.FileStorage import FileStorage
from ZODB.POSException import POSKeyError
from ZODB.utils import p64, u64

MAXTID = b"\x7f\xff\xff\xff\xff\xff\xff\xff"
Z64 = b"\x00" * 8
NEVER_STORED = bytes.fromhex("ffffffffffffff00")


def canon(v):
    """Type-tagged JSON form of an unpickled extension value."""
    if v is None:
        return None
    if isinstance(v, bool):  # before int: bool is an int subclass
        return {"bool": v}
    if isinstance(v, int):
        return {"int": str(v)}
    if isinstance(v, float):
        return {"float": repr(v)}
    if isinstance(v, str):
        return {"str": v}
    if isinstance(v, bytes):
        return {"bytes": v.hex()}
    if isinstance(v, list):
        return {"list": [canon(x) for x in v]}
    if isinstance(v, tuple):
        return {"tuple": [canon(x) for x in v]}
    if isinstance(v, dict):
        return {"dict": [[canon(k), canon(x)] for k, x in v.items()]}
    return {"other": repr(v)}


def hx(b):
    return None if b is None else b.hex()


def add(tid, n):
    """tid +/- n as u64 arithmetic, clamped to [0, 2**64-1]."""
    return p64(min(max(u64(tid) + n, 0), 2**64 - 1))


def load_before(st, oid, tid):
    try:
        r = st.loadBefore(oid, tid)
    except POSKeyError:
        return "POSKeyError"
    if r is None:
        return "none"
    data, start, end = r
    return {"data": hx(data), "start": hx(start), "end": hx(end)}


def describe(path, full_probes=False):
    st = FileStorage(path, read_only=True)
    try:
        return _describe(st, full_probes)
    finally:
        st.close()


def _describe(st, full_probes):
    doc = {"last_tid": hx(st.lastTransaction()), "length": len(st)}

    # Full iteration.
    txns, tids, records_of = [], [], {}
    for t in st.iterator():
        recs = []
        for r in t:
            recs.append({"oid": hx(r.oid), "tid": hx(r.tid),
                         "data": hx(r.data), "data_txn": hx(r.data_txn)})
            records_of.setdefault(r.oid, []).append(r.tid)
        tids.append(t.tid)
        txns.append({"tid": hx(t.tid), "status": t.status,
                     "user": hx(t.user), "description": hx(t.description),
                     # TransactionRecord.extension decodes extension_bytes
                     # (b'' -> {}).
                     "extension": canon(t.extension),
                     "records": recs})
    doc["transactions"] = txns

    # Ranges of storage.iterator(start, stop); tK = K-th tid, 0-based,
    # tN = the last one. Ranges needing a missing index are skipped.
    n = len(tids)
    ranges = []
    if n > 7:
        t3, t5, t7 = tids[3], tids[5], tids[7]
        ranges += [(t3, t7), (add(t3, 1), add(t7, -1)), (t5, t5), (t7, t3)]
    if n:
        ranges += [(tids[-1], None), (None, tids[0]), (add(tids[-1], 1), None)]
    ranges = [(None, None)] + ranges + [(None, MAXTID)]
    doc["iter_ranges"] = [
        {"start": hx(a), "stop": hx(b), "tids": [hx(t.tid) for t in st.iterator(a, b)]}
        for a, b in ranges]

    # Per object.
    oids = sorted(set(records_of) | {Z64, NEVER_STORED})
    common = set()
    if tids:
        every10 = tids[::10] + [tids[-1]]
        common = set(every10) | {add(t, 1) for t in every10}
    common |= {Z64, p64(1), MAXTID}
    if full_probes:
        common |= set(tids) | {add(t, 1) for t in tids}
    objects = {}
    for oid in oids:
        own = records_of.get(oid, [])
        probes = sorted(common | set(own) | {add(t, 1) for t in own})
        try:
            hist = [{"tid": hx(h["tid"]), "size": h["size"],
                     "user_name": hx(h["user_name"]),
                     "description": hx(h["description"])}
                    for h in st.history(oid, size=1000000)]
        except POSKeyError:
            hist = "POSKeyError"
        serials = []
        for tid in own:
            try:
                serials.append([hx(tid), hx(st.loadSerial(oid, tid))])
            except POSKeyError:
                serials.append([hx(tid), "POSKeyError"])
        objects[hx(oid)] = {
            "history": hist,
            "load_before": [[hx(p), load_before(st, oid, p)] for p in probes],
            "load_serial": serials,
        }
    doc["objects"] = objects

    # record_iternext, oid order. FileStorage raises POSKeyError for an oid
    # whose current record has no data (deleted / creation undone); we then
    # emit {"oid", "error"} and continue with the next oid of the index.
    iternext = []
    nxt = None
    index = st._index
    while len(index):
        try:
            oid, tid, data, nxt = st.record_iternext(nxt)
            iternext.append({"oid": hx(oid), "tid": hx(tid), "data": hx(data)})
        except POSKeyError:
            oid = index.minKey(nxt)
            iternext.append({"oid": hx(oid), "error": "POSKeyError"})
            try:
                nxt = index.minKey(add(oid, 1)) if u64(oid) < 2**64 - 1 else None
            except ValueError:
                nxt = None
        if nxt is None:
            break
    doc["record_iternext"] = iternext

    doc["undo_log"] = [
        {"id": d["id"].decode("ascii"), "user_name": hx(d["user_name"]),
         "description": hx(d["description"]), "size": d["size"]}
        for d in st.undoLog(0, 1000000)]
    # Sanity: the undo id is base64 of the tid.
    for d in doc["undo_log"]:
        assert len(base64.decodebytes(d["id"].encode() + b"\n")) == 8
    return doc


def dumps(doc):
    return json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=True) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--full-probes", action="store_true",
                    help="probe loadBefore at every transaction tid for every object")
    args = ap.parse_args()
    sys.stdout.write(dumps(describe(args.path, args.full_probes)))


if __name__ == "__main__":
    main()
