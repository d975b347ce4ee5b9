"""Interop scenarios: unmodified ZODB/ZEO client code against the server under test
($ZEORS_SERVER or --server: rust = our zeo-server, python = ZEO's runzeo).

Every test starts its own server(s) on fresh data, uses real ZODB objects through
ZEO.ClientStorage, and is bounded in time (conftest.time_limit plus a timeout on every wait).
"""
import hashlib
import json
import logging
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time

import pytest
import transaction
import ZODB
import ZODB.blob
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from persistent.list import PersistentList
from persistent.mapping import PersistentMapping
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError
from ZODB.POSException import POSKeyError
from ZODB.POSException import ReadConflictError
from ZODB.POSException import ReadOnlyError
from ZODB.POSException import UndoError
from ZODB.serialize import referencesf
from ZODB.utils import p64
from ZODB.utils import z64

from ZEO.ClientStorage import ClientStorage
from ZEO.Exceptions import ClientDisconnected

import servers
from interop_app import Account

HERE = os.path.dirname(os.path.abspath(__file__))

PLAIN_INTERFACES = (
    ("ZODB.interfaces", "IStorageRestoreable"),
    ("ZODB.interfaces", "IStorageIteration"),
    ("ZODB.interfaces", "IStorageUndoable"),
    ("ZODB.interfaces", "IStorageCurrentRecordIteration"),
    ("ZODB.interfaces", "IExternalGC"),
    ("ZODB.interfaces", "IStorage"),
    ("zope.interface", "Interface"),
)
BLOB_INTERFACES = (
    ("ZODB.interfaces", "IBlobStorageRestoreable"),
    ("ZODB.interfaces", "IBlobStorage"),
) + PLAIN_INTERFACES


# -- helpers ---------------------------------------------------------------------------------

def wait_until(pred, timeout=10.0, what="condition", interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(interval)


def storage(clients, addr, **kw):
    kw.setdefault("wait_timeout", 15)
    return clients.add(ClientStorage(addr, **kw))


def open_db(clients, addr, **kw):
    cs = ClientStorage(addr, **dict({"wait_timeout": 15}, **kw))
    return clients.add(ZODB.DB(cs))


def connect(db):
    """A connection with its own transaction manager (so several can be open at once)."""
    tm = transaction.TransactionManager()
    return db.open(transaction_manager=tm), tm


def seed(db, **items):
    conn, tm = connect(db)
    root = conn.root()
    for k, v in items.items():
        root[k] = v
    tm.commit()
    conn.close()


def read_frame(sock, timeout=5.0):
    sock.settimeout(timeout)
    buf = b""
    while len(buf) < 4:
        chunk = sock.recv(4 - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    (n,) = struct.unpack(">I", buf)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


class Worker:
    """A separate client process (worker.py) driven over JSON lines."""

    def __init__(self, addr):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "worker.py"), addr[0], str(addr[1])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        ready = self._read(30)
        assert ready.get("ready"), ready

    def _read(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise AssertionError(f"worker {self.proc.pid} did not answer within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"worker exited with {self.proc.wait(5)}")
        return json.loads(line)

    def __call__(self, op, timeout=30, **kw):
        self.proc.stdin.write(json.dumps(dict(op=op, **kw)) + "\n")
        self.proc.stdin.flush()
        reply = self._read(timeout)
        assert "error" not in reply, reply["error"]
        return reply

    def close(self):
        if self.proc.poll() is None:
            try:
                self("close", timeout=10)
            except Exception:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# -- connection basics -----------------------------------------------------------------------

def test_handshake_hello_and_ruok(server):
    """The server speaks first with `Z5`; a `ruok` probe gets one JSON status frame."""
    with socket.create_connection(server.addr, timeout=5) as s:
        assert read_frame(s) == b"Z5"
    with socket.create_connection(server.addr, timeout=5) as s:
        read_frame(s)
        s.sendall(struct.pack(">I", 4) + b"ruok")
        status = json.loads(read_frame(s))
        assert "1" in status, status


def test_fresh_storage_info(server, clients):
    """A client of an empty storage: last tid z64, the FileStorage interface tuple, undo."""
    cs = storage(clients, server.addr)
    assert cs.is_connected()
    assert cs.lastTransaction() == z64
    assert cs._info["interfaces"] == PLAIN_INTERFACES
    assert cs.supportsUndo()
    assert not cs.isReadOnly()
    with pytest.raises(POSKeyError):
        cs.load(p64(12345))


def test_objects_roundtrip(server, clients):
    """Persistent objects, PersistentMapping/List and an OOBTree of 300 objects written by one
    client are read back identically by a second client with an empty cache."""
    db = open_db(clients, server.addr)
    conn, tm = connect(db)
    root = conn.root()
    root["config"] = PersistentMapping({"name": "interop", "nested": PersistentList([1, 2])})
    tree = root["accounts"] = OOBTree()
    for i in range(300):
        acct = Account(f"user{i:03d}", i)
        acct.deposit(i * 2)
        tree[acct.owner] = acct
    tm.get().note("seed accounts")
    tm.commit()
    tree["user007"].deposit(1000)
    root["config"]["nested"].append(3)
    tm.commit()
    last = db.storage.lastTransaction()

    db2 = open_db(clients, server.addr)
    conn2, tm2 = connect(db2)
    root2 = conn2.root()
    assert db2.storage.lastTransaction() == last
    assert root2["config"]["name"] == "interop"
    assert list(root2["config"]["nested"]) == [1, 2, 3]
    tree2 = root2["accounts"]
    assert len(tree2) == 300
    assert list(tree2.keys()) == [f"user{i:03d}" for i in range(300)]
    for i in (0, 7, 150, 299):
        assert tree2[f"user{i:03d}"] == tree[f"user{i:03d}"]
    assert tree2["user007"].balance == 7 + 14 + 1000
    # Same object revisions on both sides.
    assert tree2["user007"]._p_serial == tree["user007"]._p_serial == last
    # history over the wire: newest first, two revisions of the account.
    hist = db2.storage.history(tree2["user007"]._p_oid, 10)
    assert [h["tid"] for h in hist][0] == last and len(hist) == 2
    assert hist[1]["description"] == b"seed accounts"
    assert len(db2.storage) >= 300


# -- invalidations between processes --------------------------------------------------------

@pytest.mark.timeout_s(120)
def test_two_processes_see_each_others_invalidations(server, clients):
    """Two client processes: each sees the other's commits through invalidations (their cached
    objects would otherwise stay stale), and concurrent increments of one counter with
    ConflictError retries add up exactly."""
    db = open_db(clients, server.addr)
    seed(db, shared=PersistentMapping({"x": 0, "counter": PersistentMapping({"v": 0})}))
    a = clients.add(Worker(server.addr))
    b = clients.add(Worker(server.addr))
    assert a("get", key="x")["value"] == 0
    assert b("get", key="x")["value"] == 0          # cached in both processes now
    for i in range(1, 6):
        writer, reader = (a, b) if i % 2 else (b, a)
        tid = writer("set", key="x", value=i)["tid"]
        got = reader("wait", key="x", value=i, timeout=10)
        assert got["ok"], f"round {i}: reader still sees {got['value']}"
        assert reader("last")["tid"] >= tid
    # Concurrent increments from both worker processes on the same object.
    a.proc.stdin.write(json.dumps({"op": "incr", "key": "counter", "n": 25}) + "\n")
    a.proc.stdin.flush()
    rb = b("incr", key="counter", n=25, timeout=90)
    ra = a._read(90)
    assert "error" not in ra, ra
    assert max(ra["value"], rb["value"]) == 50, (ra, rb)
    # This process learns about the last commit through an invalidation that may still be
    # on its way.
    conn, tm = connect(db)

    def total_is_50():
        tm.begin()
        return conn.root()["shared"]["counter"]["v"] == 50

    wait_until(total_is_50, 10, "this process seeing all 50 increments")
    print("conflicts retried:", ra["conflicts"], rb["conflicts"])


def test_invalidation_in_process_two_storages(server, clients):
    """A second ClientStorage gets invalidateTransaction for a commit it did not make."""
    db1 = open_db(clients, server.addr)
    db2 = open_db(clients, server.addr)
    seed(db1, obj=PersistentMapping({"v": 1}))
    # db2 already had the (empty) root cached: the seed commit reaches it as an invalidation.
    wait_until(lambda: db2.storage.lastTransaction() == db1.storage.lastTransaction(), 10,
               "second client catching up")
    c2, tm2 = connect(db2)
    tm2.begin()
    assert c2.root()["obj"]["v"] == 1
    c1, tm1 = connect(db1)
    c1.root()["obj"]["v"] = 2
    tm1.commit()

    def seen():
        tm2.begin()
        return c2.root()["obj"]["v"] == 2

    wait_until(seen, 10, "invalidation reaching the second client")
    assert db2.storage.lastTransaction() == db1.storage.lastTransaction()


# -- conflicts -------------------------------------------------------------------------------

def test_conflict_error_on_concurrent_writes(server, clients):
    """Two clients change one object from the same revision: the second commit raises
    ConflictError naming the oid and (committed, read) serials; after abort it sees the
    winner's data."""
    db1 = open_db(clients, server.addr)
    seed(db1, obj=PersistentMapping({"v": 0}))
    db2 = open_db(clients, server.addr)
    c1, tm1 = connect(db1)
    c2, tm2 = connect(db2)
    o1, o2 = c1.root()["obj"], c2.root()["obj"]
    assert o1["v"] == o2["v"] == 0
    read_serial = o2._p_serial
    o1["v"] = 1
    tm1.commit()
    committed = o1._p_serial
    o2["v"] = 2
    with pytest.raises(ConflictError) as info:
        tm2.commit()
    err = info.value
    assert err.oid == o2._p_oid
    assert err.serials == (committed, read_serial)
    tm2.abort()

    def sees_winner():
        tm2.begin()
        return c2.root()["obj"]["v"] == 1

    wait_until(sees_winner, 10, "the loser seeing the winner's data")


def test_conflict_error_raw_storage_api(server, clients):
    """The same at the storage API level: vote raises ConflictError (not a client-side check)."""
    cs = storage(clients, server.addr)
    oid = cs.new_oid()
    data1 = _pickle_minpo(1)
    t = TransactionMetaData()
    cs.tpc_begin(t)
    cs.store(oid, z64, data1, "", t)
    cs.tpc_vote(t)
    tid1 = cs.tpc_finish(t)
    t = TransactionMetaData()
    cs.tpc_begin(t)
    cs.store(oid, tid1, _pickle_minpo(2), "", t)
    cs.tpc_vote(t)
    tid2 = cs.tpc_finish(t)
    t = TransactionMetaData()
    cs.tpc_begin(t)
    cs.store(oid, tid1, _pickle_minpo(3), "", t)       # stale serial
    with pytest.raises(ConflictError) as info:
        cs.tpc_vote(t)
    cs.tpc_abort(t)
    assert info.value.oid == oid
    assert info.value.serials == (tid2, tid1)
    assert cs.load(oid)[1] == tid2


def _pickle_minpo(v):
    from ZODB.tests.MinPO import MinPO
    from ZODB.tests.StorageTestBase import zodb_pickle
    return zodb_pickle(MinPO(v))


def test_read_conflict_with_read_current(server, clients):
    """Connection.readCurrent(obj) + a concurrent change of obj -> ReadConflictError at vote."""
    db1 = open_db(clients, server.addr)
    seed(db1, a=PersistentMapping({"v": 0}), b=PersistentMapping({"v": 0}))
    db2 = open_db(clients, server.addr)
    c1, tm1 = connect(db1)
    c2, tm2 = connect(db2)
    a2 = c2.root()["a"]
    a2["v"]                                 # load it
    c2.readCurrent(a2)
    c2.root()["b"]["v"] = 1                 # c2 writes b, relying on a being current
    c1.root()["a"]["v"] = 1
    tm1.commit()
    with pytest.raises(ReadConflictError) as info:
        tm2.commit()
    assert info.value.oid == a2._p_oid
    tm2.abort()


def test_btrees_length_conflict_resolved_by_client(server, clients):
    """BTrees.Length and OOBTree bucket conflicts are resolved (client-side with zeo-server):
    both concurrent commits succeed and the result merges them; a true conflict (same key
    written twice) still raises ConflictError."""
    db1 = open_db(clients, server.addr)
    seed(db1, length=Length(10), tree=OOBTree({"m": 0}))
    db2 = open_db(clients, server.addr)
    c1, tm1 = connect(db1)
    c2, tm2 = connect(db2)
    r1, r2 = c1.root(), c2.root()
    r1["length"].change(3)
    r2["length"].change(5)
    r1["tree"]["a"] = 1
    r2["tree"]["z"] = 2
    tm1.commit()
    tm2.commit()                            # resolved, no ConflictError
    c3, tm3 = connect(open_db(clients, server.addr))
    assert c3.root()["length"]() == 18
    assert dict(c3.root()["tree"]) == {"a": 1, "m": 0, "z": 2}
    # Unresolvable: both change the same key's value.
    tm1.begin()
    tm2.begin()
    r1, r2 = c1.root(), c2.root()
    r1["tree"]["m"] = 100
    r2["tree"]["m"] = 200
    tm1.commit()
    with pytest.raises(ConflictError):
        tm2.commit()
    tm2.abort()


# -- read-only -------------------------------------------------------------------------------

def test_read_only_client(server, clients):
    """ClientStorage(read_only=True): reads work, writes raise ReadOnlyError, and it still
    receives invalidations."""
    db = open_db(clients, server.addr)
    seed(db, obj=PersistentMapping({"v": 1}))
    rodb = open_db(clients, server.addr, read_only=True)
    assert rodb.storage.isReadOnly()
    conn, tm = connect(rodb)
    assert conn.root()["obj"]["v"] == 1
    conn.root()["obj"]["v"] = 99
    with pytest.raises(ReadOnlyError):
        tm.commit()
    tm.abort()
    with pytest.raises(ReadOnlyError):
        rodb.storage.new_oid()
    # The server enforces it too: skip the client's own check and ask it for oids.
    rodb.storage._is_read_only = False
    try:
        with pytest.raises(ReadOnlyError):
            rodb.storage.new_oid()
    finally:
        rodb.storage._is_read_only = True
    # Invalidations still reach a read-only connection.
    c, t = connect(db)
    c.root()["obj"]["v"] = 2
    t.commit()

    def seen():
        tm.begin()
        return conn.root()["obj"]["v"] == 2

    wait_until(seen, 10, "invalidation on the read-only client")


@pytest.mark.parametrize("mode", ["read_only", "read_only_storage"])
def test_read_only_server(make_server, clients, mode):
    """A read-only server (or read-only storage) refuses writable registration: a plain client
    never connects; a read_only_fallback client connects read-only, reads, and cannot write."""
    srv = make_server()
    seeder = open_db(clients, srv.addr)
    seed(seeder, obj=PersistentMapping({"v": 7}))
    seeder.close()
    srv.restart(**{mode: True})

    plain = storage(clients, srv.addr, wait=False)
    time.sleep(2.5)
    assert not plain.is_connected(), "a writable client registered on a read-only server"
    plain._server.timeout = 1
    with pytest.raises(ClientDisconnected):
        plain.load(z64)
    plain.close()

    fb = open_db(clients, srv.addr, read_only_fallback=True)
    assert fb.storage.isReadOnly()
    conn, tm = connect(fb)
    assert conn.root()["obj"]["v"] == 7
    conn.root()["obj"]["v"] = 8
    with pytest.raises(ReadOnlyError):
        tm.commit()
    tm.abort()


# -- restarts, persistent cache, verification ------------------------------------------------

@pytest.mark.timeout_s(120)
def test_reconnect_after_restart_with_persistent_cache(make_server, clients, tmp_path):
    """A client with a persistent cache (client='a', var=DIR) survives a server restart,
    sees commits made while it was away (quick verification), and never serves stale
    data -- also when the invalidation queue has overflowed."""
    srv = make_server(invalidation_queue_size=2)
    var = str(tmp_path / "var")
    os.makedirs(var)
    opts = dict(client="a", var=var, min_disconnect_poll=0.2, max_disconnect_poll=0.5)
    db = open_db(clients, srv.addr, **opts)
    seed(db, x=PersistentMapping({"v": 1}), y=PersistentMapping({"v": 1}))
    conn, tm = connect(db)
    assert conn.root()["x"]["v"] == 1 and conn.root()["y"]["v"] == 1

    srv.stop()
    wait_until(lambda: not db.storage.is_connected(), 10, "client noticing the stop")
    srv.start()                                             # same port, same data
    wait_until(db.storage.is_connected, 15, "client reconnecting")
    other = open_db(clients, srv.addr)
    c, t = connect(other)
    c.root()["x"]["v"] = 2
    t.commit()

    def x_is(v):
        tm.begin()
        return conn.root()["x"]["v"] == v

    wait_until(lambda: x_is(2), 10, "invalidation after reconnect")

    # Close the cached client; one commit while it is away -> quick verification.
    conn.close()
    db.close()
    cache_files = [f for f in os.listdir(var) if f.endswith(".zec")]
    assert cache_files, "no persistent cache file written"
    c.root()["x"]["v"] = 3
    t.commit()
    db = open_db(clients, srv.addr, **opts)
    conn, tm = connect(db)
    assert conn.root()["x"]["v"] == 3
    assert conn.root()["y"]["v"] == 1

    # Away again; five commits overflow the queue of 2.
    conn.close()
    db.close()
    for i in range(5):
        t.begin()
        c.root()["y"]["v"] = 10 + i
        t.commit()
    db = open_db(clients, srv.addr, **opts)
    conn, tm = connect(db)
    assert conn.root()["y"]["v"] == 14
    assert conn.root()["x"]["v"] == 3
    assert db.storage.lastTransaction() == other.storage.lastTransaction()


@pytest.mark.timeout_s(120)
def test_server_behind_client_is_refused(make_server, clients, tmp_path):
    """A client whose persistent cache has seen transactions the server does not have
    (server restarted on an older copy of its data) refuses to use that server: it stays
    disconnected, logs "Server behind client", and never serves data it cannot check."""
    srv = make_server("orig")
    var = str(tmp_path / "var")
    os.makedirs(var)
    opts = dict(client="a", var=var, min_disconnect_poll=0.2, max_disconnect_poll=0.5)
    db = open_db(clients, srv.addr, **opts)
    seed(db, x=PersistentMapping({"v": 1}))
    old_last = db.storage.lastTransaction()
    srv.stop()
    shutil.copytree(srv.datadir, str(tmp_path / "old"),
                    ignore=shutil.ignore_patterns("*.log", "*.conf", ".ready*", "*.lock"))
    srv.start()
    wait_until(db.storage.is_connected, 15, "reconnect")
    conn, tm = connect(db)
    conn.root()["x"]["v"] = 2
    conn.root()["new"] = PersistentMapping({"n": 1})
    tm.commit()
    new_last = db.storage.lastTransaction()
    assert new_last > old_last
    conn.close()
    db.close()
    port = srv.addr[1]
    srv.stop()

    # Same address, older data.
    old = make_server("old", port=port)
    handler = _LogCapture("ZEO")
    try:
        cs = storage(clients, old.addr, wait=False, **opts)
        # The client logs its refusal when it compares the server's tid with its cache.
        wait_until(lambda: "Server behind client" in handler.text() or "out of sync" in handler.text(),
                   15, "the client refusing the server that is behind its cache")
        assert not cs.is_connected(), "client used a server that is behind its cache"
        cs._server.timeout = 1
        with pytest.raises(ClientDisconnected):
            cs.load(p64(999))
        cs.close()
    finally:
        handler.uninstall()
    assert "Server behind client" in handler.text() or "out of sync" in handler.text(), \
        handler.text()[-2000:]

    # The old server itself is fine for a client without that cache.
    fresh = storage(clients, old.addr)
    assert fresh.lastTransaction() == old_last


class _LogCapture(logging.Handler):
    def __init__(self, name):
        super().__init__(logging.DEBUG)
        self.records = []
        self.logger = logging.getLogger(name)
        self.old_level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)

    def emit(self, record):
        self.records.append(record)

    def text(self):
        return "\n".join(str(r.getMessage()) for r in self.records)

    def uninstall(self):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.old_level)


# -- undo, pack, copy ------------------------------------------------------------------------

def test_undo(server, clients):
    """undoLog lists transactions (newest first, with user, description and extension keys);
    DB.undo restores the previous state for every client; undoing a creation makes the
    object unloadable; an undo that conflicts with a later change raises UndoError."""
    db = open_db(clients, server.addr)
    conn, tm = connect(db)
    conn.root()["obj"] = PersistentMapping({"v": 1})
    txn = tm.get()
    txn.note("first")
    txn.setUser("alice")
    tm.commit()
    conn.root()["obj"]["v"] = 2
    txn = tm.get()
    txn.note("second")
    txn.setUser("bob")
    txn.setExtendedInfo("ticket", "T-42")
    tm.commit()

    # Storage level: what the server sends (bytes user/description, extension keys merged).
    slog = db.storage.undoLog(0, 10)
    assert [e["description"] for e in slog[:2]] == [b"second", b"first"]
    assert slog[0]["user_name"] == b"/ bob"
    assert slog[0]["ticket"] == "T-42"
    assert isinstance(slog[0]["id"], bytes) and isinstance(slog[0]["time"], float)
    info = db.storage.undoInfo(0, 10, {"description": b"first"})
    assert [e["description"] for e in info] == [b"first"]
    # DB level (decoded text), same transactions.
    log = db.undoLog(0, 10)
    assert [e["description"] for e in log[:2]] == ["second", "first"]
    assert [e["id"] for e in log] == [e["id"] for e in slog]

    db.undo(log[0]["id"], tm.get())
    tm.get().note("undo second")
    tm.commit()
    tm.begin()
    assert conn.root()["obj"]["v"] == 1
    c2, t2 = connect(open_db(clients, server.addr))
    assert c2.root()["obj"]["v"] == 1

    # Undo the creation of a new object: it becomes unloadable.
    conn.root()["tmp"] = tmp = PersistentMapping({"t": 1})
    tm.commit()
    tmp_oid = tmp._p_oid
    db.undo(db.undoLog(0, 1)[0]["id"], tm.get())
    tm.commit()
    fresh = storage(clients, server.addr)
    with pytest.raises(POSKeyError):
        fresh.load(tmp_oid)

    # Undo "second" again is not possible: obj changed since (the undo), -> UndoError.
    second = [e for e in db.undoLog(0, 20) if e["description"] == "second"][0]
    tm.begin()
    db.undo(second["id"], tm.get())
    with pytest.raises(UndoError):
        tm.commit()
    tm.abort()


@pytest.mark.parametrize("via", ["db", "storage"])
def test_pack_gc(server, clients, via):
    """Pack with GC: unreachable objects disappear (POSKeyError on load), reachable ones keep
    their current state, old revisions and pre-pack undo records are gone."""
    db = open_db(clients, server.addr)
    conn, tm = connect(db)
    root = conn.root()
    root["keep"] = keep = PersistentMapping({"v": 1})
    root["drop"] = drop = PersistentMapping({"child": PersistentMapping({"c": 1})})
    tm.commit()
    keep_oid, drop_oid = keep._p_oid, drop._p_oid
    child_oid = drop["child"]._p_oid
    first_keep_serial = keep._p_serial
    keep["v"] = 2
    del root["drop"]
    tm.commit()
    # A pack time after every commit, without waiting for the clock to pass the last tid.
    pack_time = time.time() + 1
    if via == "db":
        db.pack(pack_time)
    else:
        db.storage.pack(pack_time, referencesf)
    fresh = storage(clients, server.addr)
    assert fresh.load(keep_oid)[0] == db.storage.load(keep_oid)[0]
    fresh.load(z64)
    for oid in (drop_oid, child_oid):
        with pytest.raises(POSKeyError):
            fresh.load(oid)
    with pytest.raises(POSKeyError):
        fresh.loadSerial(keep_oid, first_keep_serial)
    assert fresh.undoLog(0, 10) == [] or list(fresh.undoLog(0, 10)) == []
    # The database still works after the pack.
    tm.begin()
    conn.root()["after"] = PersistentMapping({"a": 1})
    tm.commit()
    c2, _ = connect(open_db(clients, server.addr))
    assert c2.root()["after"]["a"] == 1 and c2.root()["keep"]["v"] == 2


def _iter_storage(st):
    out = []
    for txn in st.iterator():
        recs = [(r.oid, r.tid, r.data, r.data_txn) for r in txn]
        out.append((txn.tid, txn.status, txn.user, txn.description,
                    dict(txn.extension), recs))
    return out


def test_copy_transactions_from_client_storage(server, clients, tmp_path):
    """FileStorage.copyTransactionsFrom(ClientStorage) copies every transaction: same tids,
    status, metadata, records, backpointers (undo) and current data."""
    db = open_db(clients, server.addr)
    conn, tm = connect(db)
    root = conn.root()
    root["t"] = tree = OOBTree()
    for i in range(5):
        for j in range(20):
            tree[f"k{i}-{j}"] = Account(f"o{i}{j}", j)
        tm.get().note(f"batch {i}")
        tm.get().setExtendedInfo("batch", i)
        tm.commit()
    tree["k0-0"].deposit(5)
    tm.commit()
    db.undo(db.undoLog(0, 1)[0]["id"], tm.get())        # a backpointer transaction
    tm.commit()

    dest = FileStorage(str(tmp_path / "copy.fs"), create=True)
    try:
        dest.copyTransactionsFrom(db.storage)
        src = _iter_storage(db.storage)
        dst = _iter_storage(dest)
        assert len(src) == 8
        assert [t[0] for t in dst] == [t[0] for t in src]
        assert dst == src
        assert dest.lastTransaction() == db.storage.lastTransaction()
        for txn in src:
            for oid, *_ in txn[5]:
                assert dest.load(oid) == db.storage.load(oid)
    finally:
        dest.close()


# -- blobs -----------------------------------------------------------------------------------

@pytest.mark.timeout_s(120)
def test_blobs(make_server, clients, tmp_path):
    """Blobs through the server (non-shared blob dirs on both sides): small and large
    (> 59000 bytes, chunked) blobs written by one client read back by another with an
    empty blob cache; a new revision replaces it for both; the old revision stays loadable."""
    srv = make_server(blob_dir=str(tmp_path / "s" / "blobs"))
    db1 = open_db(clients, srv.addr, blob_dir=str(tmp_path / "cache1"), shared_blob_dir=False)
    assert db1.storage._info["interfaces"] == BLOB_INTERFACES
    small = b"hello blob\n"
    large = os.urandom(59000 * 5 + 1234)                # several chunks, odd tail
    conn, tm = connect(db1)
    root = conn.root()
    root["small"] = ZODB.blob.Blob(small)
    root["large"] = ZODB.blob.Blob()
    with root["large"].open("w") as f:
        f.write(large)
    tm.commit()
    large_oid, first_serial = root["large"]._p_oid, db1.storage.lastTransaction()

    db2 = open_db(clients, srv.addr, blob_dir=str(tmp_path / "cache2"), shared_blob_dir=False)
    c2, tm2 = connect(db2)
    with c2.root()["small"].open("r") as f:
        assert f.read() == small
    with c2.root()["large"].open("r") as f:
        got = f.read()
    assert len(got) == len(large) and hashlib.sha256(got).digest() == hashlib.sha256(
        large).digest()

    # A new revision from client 2, seen by client 1.
    with c2.root()["large"].open("a") as f:
        f.write(b"tail")
    tm2.commit()

    def updated():
        tm.begin()
        with conn.root()["large"].open("r") as f:
            return f.read() == large + b"tail"

    wait_until(updated, 15, "client 1 seeing the new blob revision")
    # The first revision is still there (loadBlob by serial, into a fresh cache).
    db3 = storage(clients, srv.addr, blob_dir=str(tmp_path / "cache3"))
    with open(db3.loadBlob(large_oid, first_serial), "rb") as f:
        assert f.read() == large
    # Blob files exist on the server side (layout is the server's business).
    server_blobs = [f for _, _, fs in os.walk(str(tmp_path / "s" / "blobs"))
                    for f in fs if f.endswith(".blob")]
    assert len(server_blobs) >= 3


@pytest.mark.timeout_s(120)
def test_pack_removes_blob_files_of_dropped_revisions(make_server, clients, tmp_path):
    """Pack with GC drops a blob's old revision; its file in the server's blob directory goes too,
    and the current revision still loads."""
    blobs = tmp_path / "s" / "blobs"
    srv = make_server(blob_dir=str(blobs))
    db = open_db(clients, srv.addr, blob_dir=str(tmp_path / "cache"), shared_blob_dir=False)
    conn, tm = connect(db)
    root = conn.root()
    root["b"] = ZODB.blob.Blob(b"first")
    tm.commit()
    with root["b"].open("w") as f:
        f.write(b"second")
    tm.commit()

    def blob_files():
        return sorted(f for _, _, fs in os.walk(str(blobs)) for f in fs if f.endswith(".blob"))

    assert len(blob_files()) == 2
    db.pack(time.time() + 1)  # a pack time after every commit
    wait_until(lambda: len(blob_files()) == 1, 15, "the old revision's blob file removed by pack")
    tm.begin()
    with conn.root()["b"].open("r") as f:
        assert f.read() == b"second"


# -- TLS -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tls_material(tmp_path_factory):
    if not shutil.which("openssl"):
        # A skip on a developer's machine (listed by -rs); under CI, where .ci/run installs it, a failure.
        reason = "needs the openssl CLI (apt-get install openssl)"
        pytest.fail("CI is set: " + reason) if os.environ.get("CI") else pytest.skip(reason)
    return servers.make_tls_material(str(tmp_path_factory.mktemp("tls")))


def _client_ctx(tls, cert=True, rogue_cert=False, cafile=None):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile or tls["ca"])
    if rogue_cert:
        ctx.load_cert_chain(tls["rogue_client_cert"], tls["rogue_client_key"])
    elif cert:
        ctx.load_cert_chain(tls["client_cert"], tls["client_key"])
    return ctx


@pytest.mark.timeout_s(120)
def test_tls_with_client_certificates(make_server, clients, tls_material):
    """TLS with client certificates: a client with a certificate from the trusted CA works
    (commit + read); no certificate, a certificate from another CA, a plain-TCP client and a
    client that does not trust the server's CA are all refused."""
    tls = tls_material
    srv = make_server(tls=dict(cert=tls["server_cert"], key=tls["server_key"],
                               client_ca=tls["ca"]))
    good = open_db(clients, srv.addr, ssl=_client_ctx(tls), ssl_server_hostname="localhost")
    seed(good, obj=PersistentMapping({"secret": 42}))
    c2, _ = connect(open_db(clients, srv.addr, ssl=_client_ctx(tls),
                            ssl_server_hostname="localhost"))
    assert c2.root()["obj"]["secret"] == 42

    bad = {
        "no client cert": dict(ssl=_client_ctx(tls, cert=False),
                               ssl_server_hostname="localhost"),
        "client cert from another CA": dict(ssl=_client_ctx(tls, rogue_cert=True),
                                            ssl_server_hostname="localhost"),
        "plain TCP": dict(),
        "server CA not trusted": dict(ssl=_client_ctx(tls, cafile=tls["rogue_ca"]),
                                      ssl_server_hostname="localhost"),
    }
    cs = {name: storage(clients, srv.addr, wait=False, **kw) for name, kw in bad.items()}
    time.sleep(2.5)
    connected = [name for name, c in cs.items() if c.is_connected()]
    assert not connected, f"connections that should have been refused: {connected}"
    for c in cs.values():
        c.close()
    # The good client is still fine afterwards.
    conn, tm = connect(good)
    conn.root()["obj"]["secret"] = 43
    tm.commit()


# -- msgpack ---------------------------------------------------------------------------------

def test_msgpack_mode(make_server, clients):
    """A msgpack server (hello `M5`): the client adapts automatically; objects, BTrees,
    conflicts (ConflictError payload) and POSKeyError all work over msgpack."""
    srv = make_server(msgpack=True)
    with socket.create_connection(srv.addr, timeout=5) as s:
        assert read_frame(s) == b"M5"
    db1 = open_db(clients, srv.addr)
    assert db1.storage._server.client.protocol.protocol_version == b"M5"
    seed(db1, tree=OOBTree({i: f"v{i}" for i in range(200)}),
         obj=PersistentMapping({"v": 0}), n=Length(0))
    db2 = open_db(clients, srv.addr)
    c1, tm1 = connect(db1)
    c2, tm2 = connect(db2)
    assert dict(c2.root()["tree"]) == {i: f"v{i}" for i in range(200)}
    c2.root()["obj"]["v"]
    c1.root()["obj"]["v"] = 1
    c1.root()["n"].change(1)
    c2.root()["n"].change(2)
    tm1.commit()
    c2.root()["obj"]["v"] = 2
    with pytest.raises(ConflictError) as info:
        tm2.commit()
    assert info.value.oid == c2.root()["obj"]._p_oid
    tm2.abort()
    tm2.begin()
    c2.root()["n"].change(2)
    tm2.commit()                                   # Length resolves

    def n_is_3():
        tm1.begin()
        return c1.root()["n"]() == 3

    wait_until(n_is_3, 10, "merged Length seen by client 1")
    with pytest.raises(POSKeyError):
        db2.storage.load(p64(424242))


# -- differential: the same wire-level observations as the Python server ---------------------

class _Normalizer:
    """Makes observations comparable across servers: tids become T1, T2, ... in order of
    first appearance; oids (small 8-byte ints) become oid:N; floats (times) become "float";
    other bytes become bytes:len:sha1-prefix; undo ids become "opaque-id"."""

    def __init__(self):
        self.tids = {}

    def tid(self, b):
        if b == z64:
            return "z64"
        if b not in self.tids:
            self.tids[b] = "T%d" % (len(self.tids) + 1)
        return self.tids[b]

    def norm(self, v, key=None):
        if key == "id" and isinstance(v, bytes):
            return "opaque-id"
        if isinstance(v, bytes):
            if len(v) == 8:
                n = int.from_bytes(v, "big")
                if n == 0:
                    return "z64"
                if n < 2 ** 32:
                    return "oid:%d" % n
                if n == 0x7fffffffffffffff:
                    return "maxtid"
                return self.tid(v)
            return "bytes:%d:%s" % (len(v), hashlib.sha1(v).hexdigest()[:10])
        if isinstance(v, float):
            return "float"
        if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
            return v
        if isinstance(v, dict):
            return {str(k): self.norm(x, k) for k, x in sorted(v.items(), key=lambda i: str(i[0]))}
        if isinstance(v, (list, tuple)):
            return [self.norm(x) for x in v]
        if isinstance(v, BaseException):
            return self.err(v)
        return repr(type(v))

    def err(self, e):
        out = {"error": f"{type(e).__module__}.{type(e).__name__}"}
        if type(e).__name__ == "ServerException" and e.args:
            out["server_error"] = str(e.args[0])     # the class name the server sent
        for attr in ("oid", "serials"):
            if getattr(e, attr, None) is not None:
                out[attr] = self.norm(getattr(e, attr))
        return out


def _observe(addr):
    """A fixed sequence of storage calls (mostly raw server calls) on a fresh storage, recording
    what comes back, normalised."""
    from ZODB.utils import maxtid
    N = _Normalizer()
    obs = {}
    cs = ClientStorage(addr, wait_timeout=15)
    call = cs._call

    def rec(name, fn):
        try:
            obs[name] = N.norm(fn())
        except Exception as e:
            obs[name] = N.err(e)

    def begin(**meta):
        t = TransactionMetaData(**meta)
        cs.tpc_begin(t)
        return t

    try:
        rec("register_last", cs.lastTransaction)
        info = call("get_info")
        rec("info", lambda: {k: info.get(k) for k in (
            "supportsUndo", "supports_record_iternext", "interfaces", "length", "size")})
        o1, o2 = cs.new_oid(), cs.new_oid()
        missing = p64(4242)
        t = begin(user="alice", description="first", extension={"x": 1})
        cs.store(o1, z64, _pickle_minpo(1), "", t)
        cs.store(o2, z64, _pickle_minpo(2), "", t)
        rec("vote1", lambda: call("vote", id(t)))
        rec("finish1", lambda: cs.tpc_finish(t))
        T1 = cs.lastTransaction()
        t = begin(user="bob", description="second")
        cs.store(o1, T1, _pickle_minpo(11), "", t)
        rec("vote2", lambda: call("vote", id(t)))
        rec("finish2", lambda: cs.tpc_finish(t))
        T2 = cs.lastTransaction()
        rec("info_after_commits", lambda: {k: call("get_info")[k] for k in ("length", "size")})

        # write conflict (client-conflict-resolution vote result) and read conflict
        t = begin()
        cs.store(o1, T1, _pickle_minpo(3), "", t)
        rec("vote_write_conflict", lambda: call("vote", id(t)))
        cs.tpc_abort(t)
        t = begin()
        cs.checkCurrentSerialInTransaction(o1, T1, t)
        cs.store(o2, T1, _pickle_minpo(22), "", t)
        rec("vote_read_conflict", lambda: call("vote", id(t)))
        cs.tpc_abort(t)
        rec("tpc_abort_unknown", lambda: call("tpc_abort", 12345))

        # loads
        rec("loadBefore_o1_T1", lambda: call("loadBefore", o1, T1))
        rec("loadBefore_o1_T2", lambda: call("loadBefore", o1, T2))
        rec("loadBefore_o1_max", lambda: call("loadBefore", o1, maxtid))
        rec("loadBefore_missing", lambda: call("loadBefore", missing, maxtid))
        rec("loadSerial_o1_T1", lambda: call("loadSerial", o1, T1))
        rec("loadSerial_o1_bad", lambda: call("loadSerial", o1, p64(5)))
        rec("getTid_o1", lambda: call("getTid", o1))
        rec("getTid_missing", lambda: call("getTid", missing))
        rec("history_o1", lambda: call("history", o1, 10))
        rec("history_o1_1", lambda: call("history", o1, 1))
        rec("history_missing", lambda: call("history", missing, 1))
        rec("undoLog", lambda: call("undoLog", 0, 10))
        rec("undoLog_1_2", lambda: call("undoLog", 1, 2))
        rec("undoInfo_first", lambda: call("undoInfo", 0, 10, {"description": b"first"}))
        rec("new_oids_default_len", lambda: len(call("new_oids")))
        rec("new_oids_5_len", lambda: len(call("new_oids", 5)))
        rec("iterator_next_unknown", lambda: call("iterator_next", 987654))

        # undo of the last transaction, then of the creation (conflicts)
        log = call("undoLog", 0, 10)
        t = begin(description="undo second")
        cs.undo(log[0]["id"], t)
        rec("vote_undo", lambda: call("vote", id(t)))
        rec("finish_undo", lambda: cs.tpc_finish(t))
        rec("loadBefore_o1_after_undo", lambda: call("loadBefore", o1, maxtid))
        t = begin(description="undo first")
        cs.undo(log[1]["id"], t)
        rec("vote_undo_creation", lambda: call("vote", id(t)))
        cs.tpc_abort(t)

        # IExternalGC deleteObject
        t = begin(description="delete o2")
        cs.deleteObject(o2, T1, t)
        rec("vote_delete", lambda: call("vote", id(t)))
        rec("finish_delete", lambda: cs.tpc_finish(t))
        rec("loadBefore_o2_after_delete", lambda: call("loadBefore", o2, maxtid))
        t = begin(description="delete stale")
        cs.deleteObject(o1, T1, t)
        rec("vote_delete_stale", lambda: call("vote", id(t)))
        cs.tpc_abort(t)

        rec("iterator", lambda: [
            (x.tid, x.status, x.user, x.description, dict(x.extension),
             [(r.oid, r.tid, r.data, r.data_txn) for r in x]) for x in cs.iterator()])
        rec("iterator_range", lambda: [x.tid for x in cs.iterator(T2, T2)])

        def walk():
            out, nxt = [], None
            while True:
                oid, tid, data, nxt = call("record_iternext", nxt)
                out.append((oid, tid, data))
                if nxt is None:
                    return out
        rec("record_iternext", walk)
        rec("server_status_keys", lambda: sorted(call("server_status")))
        rec("ping", lambda: call("ping"))

        # pack with GC at "now": first without a root object, then with a root that
        # references o1 (o3 is unreachable)
        rec("pack_without_root", lambda: call("pack", time.time() + 1, 1))
        from ZODB.tests.MinPO import MinPO
        ref = MinPO(0)
        ref._p_oid = o1
        from ZODB.tests.StorageTestBase import zodb_pickle
        o3 = cs.new_oid()
        t = begin(description="root")
        cs.store(z64, z64, zodb_pickle(MinPO({"o1": ref})), "", t)
        cs.store(o3, z64, _pickle_minpo(3), "", t)
        rec("vote_root", lambda: call("vote", id(t)))
        rec("finish_root", lambda: cs.tpc_finish(t))
        rec("pack", lambda: call("pack", time.time() + 1, 1))
        rec("loadBefore_o1_after_pack", lambda: call("loadBefore", o1, maxtid))
        rec("loadBefore_o3_after_pack", lambda: call("loadBefore", o3, maxtid))
        rec("loadBefore_root_after_pack", lambda: call("loadBefore", z64, maxtid))
        rec("loadSerial_o1_T2_after_pack", lambda: call("loadSerial", o1, T2))
        rec("undoLog_after_pack", lambda: call("undoLog", 0, 10))
        rec("iterator_after_pack", lambda: [(x.tid, x.status) for x in cs.iterator()])
        rec("length_after_pack", lambda: call("get_info")["length"])

        ro = ClientStorage(addr, wait_timeout=15, read_only=True)
        try:
            rec("ro_new_oids", lambda: ro._call("new_oids"))
            rec("ro_lastTransaction", lambda: ro.lastTransaction())
        finally:
            ro.close()
    finally:
        cs.close()
    return obs


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("encoding", ["pickle", "msgpack"])
def test_same_observations_as_python_server(make_server, kind, encoding):
    """The same fixed sequence of raw server calls (commits, conflicts, loads, history,
    undoLog/undoInfo, undo, deleteObject, iterators, record_iternext, pack, read-only) on a
    fresh storage of the server under test and of the Python reference server (in
    client-conflict-resolution mode, as zeo-server always is) gives the same results, up to
    tid values, times and opaque undo ids. Against python this compares the reference with
    itself (proving the observation is deterministic). Both encodings."""
    msgpack = encoding == "msgpack"
    ours = make_server("ours", msgpack=msgpack)
    ref = servers.Server("python", str(ours.datadir) + "-ref", msgpack=msgpack)
    ref.start()
    try:
        got, want = _observe(ours.addr), _observe(ref.addr)
    finally:
        ref.stop()
    diffs = [(k, got.get(k), want.get(k)) for k in sorted(set(got) | set(want))
             if got.get(k) != want.get(k)]
    assert not diffs, "differences from the Python server (ours, python):\n" + "\n".join(
        f"  {k}:\n    ours:   {a!r}\n    python: {b!r}" for k, a, b in diffs)
