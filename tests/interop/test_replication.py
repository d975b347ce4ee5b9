"""Replication seen by unmodified Python ZEO clients (our server only: runzeo has none).

- Clients commit on the primary and read on a standby: the standby's read-only clients see the
  new data, through invalidations, as it arrives.
- Sync mode: a client with a persistent cache writes through a service address (a forwarder
  standing in for the address the supervisor moves), the primary is SIGKILLed, the standby is
  promoted and the address moved; the client reconnects without "Server behind client", every
  acknowledged commit is there, and it writes on.

(ZEO clients given several addresses do not fail over by themselves: once the standby refused
their writable registration they only poll the dead address. That is why zeo-rs moves one
service address instead.)
"""
import json
import os
import pathlib
import socket
import subprocess
import threading
import urllib.request

import pytest
import transaction
from persistent.mapping import PersistentMapping

from test_interop import _LogCapture, connect, open_db, seed, wait_until

TOKEN = "interop-replication-token-0123456789"


@pytest.fixture(autouse=True)
def rust_only(kind):
    if kind != "rust":
        pytest.skip("replication is a zeo-rs feature; runzeo has none")


REPO = pathlib.Path(__file__).resolve().parents[2]


def _link_args(tmp_path, name):
    """Mutual TLS on the replication link (issue 13): one CA per test (scripts/replication-certs
    reuses it), a certificate per member, the members "a" and "b" accepting each other."""
    certs = tmp_path / "link-certs"
    subprocess.run([str(REPO / "scripts/replication-certs"), str(certs), name], check=True,
                   stdout=subprocess.DEVNULL)
    return ["--replication-tls-cert", str(certs / f"{name}.crt"),
            "--replication-tls-key", str(certs / f"{name}.key"),
            "--replication-tls-ca", str(certs / "ca.crt"), "--replication-peers", "a,b"]


def _node(make_server, tmp_path, name, *args):
    tok = tmp_path / f"{name}.token"
    tok.write_text(TOKEN)
    return make_server(name, extra_args=[
        "--admin", "127.0.0.1:0", "--replication-listen", "127.0.0.1:0",
        "--admin-token-file", str(tok), "--standby-name", name, *_link_args(tmp_path, name), *args])


def _admin(srv, path, body=None):
    req = urllib.request.Request(
        f"http://{srv.ready_info['admin']}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


class Forwarder:
    """A TCP service address whose target can be moved (what a Service or VIP does)."""

    def __init__(self, target):
        self.target = target
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.addr = self.sock.getsockname()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=2)
            except OSError:
                c.close()
                continue
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.sock.close()


def test_standby_readers_see_primary_commits(make_server, clients, tmp_path):
    a = _node(make_server, tmp_path, "a")
    b = _node(make_server, tmp_path, "b", "--standby-of", a.ready_info["replication"])
    writer = open_db(clients, a.addr)
    seed(writer, page=PersistentMapping({"rev": 0, "text": "hello"}))
    reader = open_db(clients, b.addr, read_only=True)
    rconn, rtm = connect(reader)

    def rev_is(v):
        rtm.begin()
        return rconn.root().get("page") is not None and rconn.root()["page"]["rev"] == v

    wait_until(lambda: rev_is(0), 10, "the standby reader seeing the seed")
    wconn, wtm = connect(writer)
    for i in range(1, 21):
        wconn.root()["page"]["rev"] = i
        wconn.root()["page"]["text"] = f"edit {i}"
        wtm.commit()
    wait_until(lambda: rev_is(20), 10, "the standby reader seeing the last edit")
    assert rconn.root()["page"]["text"] == "edit 20"
    assert reader.storage.lastTransaction() == writer.storage.lastTransaction()
    # Writing through the standby is refused.
    with pytest.raises(Exception):
        rconn.root()["page"]["rev"] = -1
        rtm.commit()
    rtm.abort()


@pytest.mark.timeout_s(120)
def test_cached_client_follows_a_promotion_without_server_behind(make_server, clients, tmp_path):
    a = _node(make_server, tmp_path, "a", "--sync-standbys", "1")
    b = _node(make_server, tmp_path, "b", "--standby-of", a.ready_info["replication"])
    var = str(tmp_path / "var")
    os.makedirs(var)
    handler = _LogCapture("ZEO")
    try:
        service = Forwarder(a.addr)
        db = open_db(clients, service.addr, client="a", var=var,
                     min_disconnect_poll=0.2, max_disconnect_poll=0.5)
        seed(db, counter=PersistentMapping({"n": 0}))
        conn, tm = connect(db)
        acked = 0
        for i in range(1, 31):
            conn.root()["counter"]["n"] = i
            tm.commit()
            acked = i
        last_seen = db.storage.lastTransaction()

        a.proc.kill()
        a.proc.wait(10)
        _admin(b, "/promote", {"epoch": 1})
        service.target = b.addr
        wait_until(db.storage.is_connected, 20, "the client reconnecting to the promoted standby")

        def committed_again():
            try:
                tm.begin()
                conn.root()["counter"]["n"] = acked + 1
                tm.commit()
                return True
            except Exception:
                tm.abort()
                return False

        wait_until(committed_again, 20, "a commit on the promoted standby")
        assert db.storage.lastTransaction() > last_seen
        tm.begin()
        assert conn.root()["counter"]["n"] == acked + 1
    finally:
        handler.uninstall()
        service.close()
    text = handler.text()
    assert "Server behind client" not in text and "out of sync" not in text, text[-2000:]
    status = _admin(b, "/status")
    assert status["role"] == "primary" and status["epoch"] == 1


def test_blobs_replicate_in_the_copy_and_in_the_stream(make_server, clients, tmp_path):
    """A blob committed before the standby exists travels in its copy of the file; one
    committed later travels in the stream; both read back through the standby."""
    import hashlib
    import ZODB.blob
    a = _node(make_server, tmp_path, "a")
    a_blobs = str(tmp_path / "a" / "blobs")
    a.options["blob_dir"] = a_blobs
    a.stop()
    a.start()
    db = open_db(clients, a.addr, blob_dir=str(tmp_path / "cache-w"), shared_blob_dir=False)
    conn, tm = connect(db)
    before = os.urandom(200_000)
    conn.root()["before"] = ZODB.blob.Blob(before)
    tm.commit()
    b = make_server("b", blob_dir=str(tmp_path / "b" / "blobs"), extra_args=[
        "--admin", "127.0.0.1:0", "--standby-of", a.ready_info["replication"],
        "--standby-name", "b", *_link_args(tmp_path, "b")])
    after = os.urandom(3_000_000)
    conn.root()["after"] = ZODB.blob.Blob(after)
    tm.commit()
    last = db.storage.lastTransaction()
    reader = open_db(clients, b.addr, read_only=True, blob_dir=str(tmp_path / "cache-r"),
                     shared_blob_dir=False)
    wait_until(lambda: reader.storage.lastTransaction() == last, 15, "the standby applying both")
    rconn, rtm = connect(reader)
    rtm.begin()
    for name, data in (("before", before), ("after", after)):
        with rconn.root()[name].open("r") as f:
            got = f.read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), name


@pytest.mark.timeout_s(120)
def test_standby_behind_a_pack_needs_and_gets_a_reseed(make_server, clients, tmp_path):
    """A standby that was away while the primary packed past its position cannot be caught
    up from the log: it says so (status needs_reseed) and one call re-seeds it."""
    import time as _time
    a = _node(make_server, tmp_path, "a")
    b = _node(make_server, tmp_path, "b", "--standby-of", a.ready_info["replication"])
    db = open_db(clients, a.addr)
    seed(db, x=PersistentMapping({"v": 0}))
    conn, tm = connect(db)
    wait_until(lambda: _admin(b, "/status")["last_tid"] ==
               db.storage.lastTransaction().hex(), 10, "b in step")
    b.stop()
    for i in range(1, 6):
        conn.root()["x"]["v"] = i
        tm.commit()
    _time.sleep(0.01)
    db.pack(_time.time())
    conn.root()["x"]["v"] = 99
    tm.commit()
    b.start()
    wait_until(lambda: _admin(b, "/status")["needs_reseed"] is not None, 15, "b asking for a re-seed")
    assert "re-seed" in open(b.log_path).read()
    _admin(b, "/rejoin", {"primary": a.ready_info["replication"], "reseed": True})
    last = db.storage.lastTransaction().hex()
    wait_until(lambda: _admin(b, "/status")["last_tid"] == last, 15, "b re-seeded and in step")
    reader = open_db(clients, b.addr, read_only=True)
    rconn, rtm = connect(reader)
    assert rconn.root()["x"]["v"] == 99
    assert os.path.exists(os.path.join(b.datadir, "Data.fs.before-reseed"))


def test_a_pack_on_the_primary_is_replayed_on_the_standby(make_server, clients, tmp_path):
    """The standby packs to the same time once it has every transaction before it: both files
    end up byte-identical (pack is deterministic), and the standby keeps following."""
    import time as _time
    a = _node(make_server, tmp_path, "a")
    b = _node(make_server, tmp_path, "b", "--standby-of", a.ready_info["replication"])
    db = open_db(clients, a.addr)
    seed(db, x=PersistentMapping({"v": 0}), junk=PersistentMapping({"big": "x" * 5000}))
    conn, tm = connect(db)
    for i in range(1, 20):
        conn.root()["x"]["v"] = i
        tm.commit()
    del conn.root()["junk"]
    tm.commit()
    _time.sleep(0.01)
    db.pack(_time.time())
    a_path = os.path.join(a.datadir, "Data.fs")
    b_path = os.path.join(b.datadir, "Data.fs")

    def same_files():
        with open(a_path, "rb") as fa, open(b_path, "rb") as fb:
            return fa.read() == fb.read()

    wait_until(same_files, 15, "the standby packing to the same bytes")
    conn.root()["x"]["v"] = 100
    tm.commit()
    last = db.storage.lastTransaction().hex()
    wait_until(lambda: _admin(b, "/status")["last_tid"] == last, 10, "b following after the pack")
    assert "pack complete" in open(b.log_path).read()
