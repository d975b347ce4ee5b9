"""One zeo.conf, two servers: runzeo and `zeo-server -C` started from the same file (in the shapes
plone.recipe.zeoserver and the plone-zeo image write), a ClientStorage committing an object and
a blob through each; and the same syntax errors refused by both, on the same line (issue 14).

Runs whatever --server says: it always starts both kinds itself.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import transaction
import ZODB
from ZEO.ClientStorage import ClientStorage
from ZEO.Exceptions import ClientDisconnected
from ZODB.blob import Blob

import servers

START_LIMIT = 60

# plone.recipe.zeoserver's zeo_conf_template with a blob storage; the address is the loopback.
RECIPE = """\
%define INSTANCE {base}/parts/zeoserver

<zeo>
  address 127.0.0.1:0
  read-only false
  invalidation-queue-size 100
  pid-filename {base}/var/zeoserver.pid
</zeo>

<blobstorage 1>
  blob-dir {base}/var/blobstorage
  <filestorage 1>
    path {base}/var/filestorage/Data.fs
  </filestorage>
</blobstorage>

<eventlog>
  level info
  <logfile>
      path {base}/var/log/zeoserver.log
      format %(asctime)s %(message)s
    </logfile>
</eventlog>

<runner>
  program $INSTANCE/bin/runzeo
  socket-name {base}/var/zeoserver.zdsock
  daemon true
  forever false
  backoff-limit 10
  exit-codes 0, 2
  directory $INSTANCE
  default-to-interactive true
  logfile {base}/var/log/zeoserver.log
</runner>
"""

# The plone-zeo image's etc/zeo.conf: values from the environment its start script fills.
PLONE_ZEO = """\
%define INSTANCE {base}/app
%define DATA_DIR {base}/data

<zeo>
  address 127.0.0.1:$(ZEO_PORT)
  read-only $(ZEO_READ_ONLY)
  invalidation-queue-size $(ZEO_INVALIDATION_QUEUE_SIZE)
  pid-filename $INSTANCE/var/zeo.pid
</zeo>

<filestorage 1>
  path $DATA_DIR/filestorage/Data.fs
  blob-dir $DATA_DIR/blobstorage
  pack-keep-old $(ZEO_PACK_KEEP_OLD)
</filestorage>

<eventlog>
  level info
  <logfile>
      path $DATA_DIR/log/zeo.log
      format %(asctime)s %(message)s
    </logfile>
</eventlog>

<runner>
  program $INSTANCE/bin/runzeo
  socket-name $INSTANCE/var/zeo.zdsock
  daemon true
  logfile $DATA_DIR/log/zeo.log
</runner>
"""

PLONE_ZEO_ENV = {"ZEO_PORT": "0", "ZEO_READ_ONLY": "false",
                 "ZEO_INVALIDATION_QUEUE_SIZE": "100", "ZEO_PACK_KEEP_OLD": "true"}

SHAPES = {
    "recipe": (RECIPE, {}, "var/zeoserver.pid",
               ["var/filestorage", "var/blobstorage", "var/log", "parts/zeoserver"]),
    "plone-zeo": (PLONE_ZEO, PLONE_ZEO_ENV, "app/var/zeo.pid",
                  ["data/filestorage", "data/blobstorage", "data/log", "app/var"]),
}


def command(kind, conf, ready):
    if kind == "python":
        return [sys.executable, os.path.join(servers.HERE, "pyserver.py"), conf, ready]
    return [servers.rust_binary(), "-C", conf, "--ready-file", ready]


def clean_env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEO_")}
    env.update(extra)
    return env


def start(kind, base, conf, env):
    ready = os.path.join(base, "ready.json")
    log = open(os.path.join(base, "stderr.log"), "wb")
    proc = subprocess.Popen(command(kind, conf, ready), env=clean_env(env),
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + START_LIMIT
    while not os.path.exists(ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            with open(os.path.join(base, "stderr.log")) as f:
                pytest.fail(f"{kind} did not start: {f.read()}")
        time.sleep(0.02)
    with open(ready) as f:
        host, port = json.load(f)["listen"].rsplit(":", 1)
    return proc, (host, int(port))


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=START_LIMIT)


def commit_and_read_back(addr, cache):
    db = ZODB.DB(ClientStorage(addr, blob_dir=os.path.join(cache, "a"), wait_timeout=60))
    try:
        conn = db.open()
        root = conn.root()
        root["title"] = "Plone site"
        blob = Blob()
        with blob.open("w") as f:
            f.write(b"image bytes")
        root["image"] = blob
        transaction.commit()
        conn.close()
    finally:
        db.close()
    db = ZODB.DB(ClientStorage(addr, blob_dir=os.path.join(cache, "b"), wait_timeout=60))
    try:
        root = db.open().root()
        with root["image"].open() as f:
            return root["title"], f.read()
    finally:
        db.close()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_same_zeo_conf_serves_on_both(tmp_path, shape):
    text, env, pid_file, dirs = SHAPES[shape]
    results = {}
    for kind in ("python", "rust"):
        base = str(tmp_path / kind)
        for d in dirs:
            os.makedirs(os.path.join(base, d))
        conf = os.path.join(base, "zeo.conf")
        with open(conf, "w") as f:
            f.write(text.format(base=base))
        proc, addr = start(kind, base, conf, env)
        try:
            with open(os.path.join(base, pid_file)) as f:
                assert f.read().strip() == str(proc.pid), kind
            results[kind] = commit_and_read_back(addr, os.path.join(base, "cache"))
        finally:
            status = stop(proc)
        assert status == 0, (kind, status)
        assert not os.path.exists(os.path.join(base, pid_file)), f"{kind} left its pid file"
    assert results["rust"] == results["python"] == ("Plone site", b"image bytes")


def test_named_storages_on_both(tmp_path):
    """Several storages by name: ZConfig lower-cases section names, so `<blobstorage Catalog>`
    is served as "catalog" by both; a client of each storage commits, a client naming the
    unlowered "Catalog" is refused by both."""
    for kind in ("python", "rust"):
        base = tmp_path / kind
        base.mkdir()
        conf = base / "zeo.conf"
        conf.write_text(
            "<zeo>\n  address 127.0.0.1:0\n</zeo>\n"
            f"<filestorage 1>\n  path {base}/Data.fs\n</filestorage>\n"
            f"<blobstorage Catalog>\n  blob-dir {base}/catalog-blobs\n"
            f"  <filestorage>\n    path {base}/Catalog.fs\n  </filestorage>\n</blobstorage>\n")
        proc, addr = start(kind, str(base), str(conf), {})
        try:
            for name, blobs in (("1", None), ("catalog", str(base / "cache"))):
                db = ZODB.DB(ClientStorage(addr, storage=name, blob_dir=blobs, wait_timeout=60))
                try:
                    conn = db.open()
                    conn.root()["where"] = name
                    transaction.commit()
                    conn.close()
                    assert db.open().root()["where"] == name, (kind, name)
                finally:
                    db.close()
            # The server refuses the register ("unknown storage"); the client gives up waiting.
            with pytest.raises(ClientDisconnected):
                ClientStorage(addr, storage="Catalog", wait_timeout=5).close()
        finally:
            assert stop(proc) == 0, kind


def test_same_ssl_section_on_both(tmp_path):
    """`<ssl>` with certificate, key and authenticate (the CA of the client certificates): a
    client with a certificate commits through both servers."""
    import ssl
    tls = servers.make_tls_material(str(tmp_path / "tls"))
    for kind in ("python", "rust"):
        base = tmp_path / kind
        base.mkdir()
        conf = base / "zeo.conf"
        conf.write_text(
            "<zeo>\n  address 127.0.0.1:0\n  <ssl>\n"
            f"    certificate {tls['server_cert']}\n    key {tls['server_key']}\n"
            f"    authenticate {tls['ca']}\n  </ssl>\n</zeo>\n"
            f"<filestorage 1>\n  path {base}/Data.fs\n</filestorage>\n")
        proc, addr = start(kind, str(base), str(conf), {})
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls["ca"])
            ctx.load_cert_chain(tls["client_cert"], tls["client_key"])
            db = ZODB.DB(ClientStorage(addr, ssl=ctx, ssl_server_hostname="localhost",
                                       wait_timeout=60))
            try:
                conn = db.open()
                conn.root()["secret"] = 42
                transaction.commit()
                conn.close()
                assert db.open().root()["secret"] == 42, kind
            finally:
                db.close()
        finally:
            assert stop(proc) == 0, kind


# Files both servers must refuse, the line each error is on, and whether ZConfig names it (it
# reports a malformed substitution without its line; zeo-server always names the line).
BROKEN = [
    ("<zeo>\n  address 127.0.0.1:0\n</zeo>\n<filestorage 1>\n  path $DATA/Data.fs\n</filestorage>\n", 5, True),
    ("<zeo>\n  address 127.0.0.1:0\n</zeo>\n<filestorage 1>\n  path {base}/Data.fs\n</blobstorage>\n", 6, True),
    ("%define A 1\n%define A 2\n<zeo>\n  address 127.0.0.1:0\n</zeo>\n", 2, True),
    ("<zeo>\n  address 127.0.0.1:0\n  x $\n</zeo>\n", 3, False),
]


@pytest.mark.parametrize("text,line,zconfig_names_line", BROKEN)
def test_syntax_errors_refused_by_both_on_the_same_line(tmp_path, text, line, zconfig_names_line):
    for kind in ("python", "rust"):
        base = tmp_path / kind
        base.mkdir()
        conf = base / "zeo.conf"
        conf.write_text(text.format(base=base))
        out = subprocess.run(command(kind, str(conf), str(base / "ready.json")), env=clean_env({}),
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=START_LIMIT)
        message = out.stdout + out.stderr
        assert out.returncode != 0, (kind, message)
        if kind == "rust":
            assert out.returncode == 64, message
            assert message.startswith(f"zeo-server: {conf}:{line}: "), message
        elif zconfig_names_line:
            # ZConfig reports "(line N)" or "line N" in its messages.
            assert re.search(rf"\bline {line}\b", message), message
        assert not (base / "ready.json").exists()
