"""Start and stop a ZEO server for the interop tests: ours (Rust) or the Python reference.

    from servers import start_server
    srv = start_server("python", "/tmp/d", blob_dir="/tmp/d/blobs", msgpack=True)
    ClientStorage(srv.addr)
    srv.restart()          # same port, same data
    srv.stop()             # SIGTERM, then SIGKILL after a grace period

kind:
  "rust"    the zeo-server binary: $ZEORS_SERVER_BIN, default <repo>/target/debug/zeo-server.
  "python"  ZEO's runzeo (through pyserver.py, which only adds a ready file) on a zeo.conf
            generated here.
  Both run with client-side conflict resolution (runzeo's `client-conflict-resolution true`,
  zeo-server's `--client-conflict-resolution`) unless client_conflict_resolution=False is
  passed: then both resolve BTrees and Length conflicts on the server (their defaults).
  None      $ZEORS_SERVER, default "rust".

Both kinds write a ready file ({"listen": "127.0.0.1:PORT", ...}) once they accept
connections; start_server waits for it, so port 0 works for both. Logs (stdout and
stderr of the server) are appended to Server.log_path.

Options (keyword arguments of start_server, also accepted by restart to change them):
  path                       Data.fs path (default DATADIR/Data.fs)
  blob_dir                   serve blobs from this directory
  read_only                  the whole server is read-only
  read_only_storage          storage '1' is read-only (FileStorage read-only)
  invalidation_queue_size    int
  transaction_timeout        seconds (int)
  msgpack                    serve the msgpack encoding (M5)
  tls                        dict(cert=..., key=..., client_ca=...): TLS with client certs
  client_conflict_resolution both kinds (default True, see above)
  log_path                   default DATADIR/server-<kind>.log
  extra_args                 extra command-line arguments (rust only)
  start_timeout              seconds to wait for the ready file (default 30)
"""
import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time


HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
KINDS = ("rust", "python")


def server_kind(kind=None):
    """The server kind to use: the argument, else $ZEORS_SERVER, else "rust"."""
    kind = kind or os.environ.get("ZEORS_SERVER") or "rust"
    if kind not in KINDS:
        raise ValueError(f"unknown server kind {kind!r} (expected one of {KINDS})")
    return kind


def rust_binary():
    return os.environ.get("ZEORS_SERVER_BIN") or os.path.join(
        REPO, "target", "debug", "zeo-server")


def _server_env():
    """The caller's environment without ZEO_* settings (zeo-server reads ZEO_PATH,
    ZEO_MSGPACK, ... as flag fallbacks; runzeo reads ZEO_MSGPACK): only the options given
    here may configure the server."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ZEO_")}


class ServerStartError(RuntimeError):
    pass


def _tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return "(no log)"
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


def can_connect(addr, timeout=1.0):
    try:
        with socket.create_connection(addr, timeout=timeout):
            return True
    except OSError:
        return False


_RUNNING = set()


@atexit.register
def _kill_leftovers():
    for server in list(_RUNNING):
        server.kill()


class Server:
    """One server process (restartable). Attributes: kind, datadir, addr, log_path,
    options, proc, starts (how many times it was started)."""

    def __init__(self, kind, datadir, port=0, **options):
        self.kind = server_kind(kind)
        self.datadir = os.path.abspath(datadir)
        os.makedirs(self.datadir, exist_ok=True)
        self.port = port
        self.options = dict(options)
        self.options.setdefault("path", os.path.join(self.datadir, "Data.fs"))
        self.options.setdefault(
            "log_path", os.path.join(self.datadir, f"server-{self.kind}.log"))
        self.log_path = self.options["log_path"]
        self.proc = None
        self.addr = None
        self.starts = 0
        self.ready_info = None

    # -- command lines -------------------------------------------------

    def _rust_argv(self, port, ready_file):
        o = self.options
        argv = [rust_binary(), "--listen", f"127.0.0.1:{port}", "--path", o["path"],
                "--ready-file", ready_file, "--log-format", "plain"]
        if o.get("blob_dir"):
            argv += ["--blob-dir", o["blob_dir"]]
        if o.get("read_only"):
            argv.append("--read-only")
        if o.get("read_only_storage"):
            argv += ["--read-only-storage", "1"]
        if o.get("msgpack"):
            argv.append("--msgpack")
        if o.get("client_conflict_resolution", True):
            argv.append("--client-conflict-resolution")
        if o.get("invalidation_queue_size"):
            argv += ["--invalidation-queue-size", str(int(o["invalidation_queue_size"]))]
        if o.get("transaction_timeout"):
            argv += ["--transaction-timeout", f"{int(o['transaction_timeout'])}s"]
        tls = o.get("tls")
        if tls:
            argv += ["--tls-cert", tls["cert"], "--tls-key", tls["key"],
                     "--tls-client-ca", tls["client_ca"]]
        argv += list(o.get("extra_args") or ())
        return argv

    def python_config(self, port):
        """The zeo.conf text for runzeo."""
        o = self.options
        zeo = [f"address 127.0.0.1:{port}",
               "read-only " + ("true" if o.get("read_only") else "false")]
        if o.get("invalidation_queue_size"):
            zeo.append(f"invalidation-queue-size {int(o['invalidation_queue_size'])}")
        if o.get("transaction_timeout"):
            zeo.append(f"transaction-timeout {int(o['transaction_timeout'])}")
        if o.get("client_conflict_resolution", True):
            zeo.append("client-conflict-resolution true")
        if o.get("msgpack"):
            zeo.append("msgpack true")
        tls = o.get("tls")
        if tls:
            zeo += ["<ssl>", f"certificate {tls['cert']}", f"key {tls['key']}",
                    f"authenticate {tls['client_ca']}", "</ssl>"]
        fs = ["<filestorage%s>" % ("" if o.get("blob_dir") else " 1"),
              f"path {o['path']}"]
        if o.get("read_only_storage"):
            fs.append("read-only true")
        fs.append("</filestorage>")
        if o.get("blob_dir"):
            fs = ["<blobstorage 1>", f"blob-dir {o['blob_dir']}"] + fs + ["</blobstorage>"]
        return "<zeo>\n  %s\n</zeo>\n\n%s\n" % ("\n  ".join(zeo), "\n".join(fs))

    def _python_argv(self, port, ready_file):
        conf = os.path.join(self.datadir, f"zeo-{self.starts}.conf")
        with open(conf, "w") as f:
            f.write(self.python_config(port))
        return [sys.executable, os.path.join(HERE, "pyserver.py"), conf, ready_file]

    # -- lifecycle -----------------------------------------------------

    def start(self):
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("server already running")
        port = self.port if self.addr is None else self.addr[1]
        ready_file = os.path.join(self.datadir, f".ready-{os.getpid()}-{self.starts}")
        if os.path.exists(ready_file):
            os.unlink(ready_file)
        if self.kind == "rust":
            argv = self._rust_argv(port, ready_file)
            if not os.path.exists(argv[0]):
                raise ServerStartError(f"zeo-server binary not found: {argv[0]}")
        else:
            argv = self._python_argv(port, ready_file)
        self.argv = argv
        timeout = self.options.get("start_timeout", 30)
        deadline = time.monotonic() + timeout
        # A restart on a fixed port can race with the old socket's release.
        while True:
            with open(self.log_path, "ab") as log:
                log.write(("\n=== start #%d: %s\n" % (self.starts, " ".join(argv))).encode())
                log.flush()
                self.proc = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=self.datadir, start_new_session=True, env=_server_env())
            self.starts += 1
            _RUNNING.add(self)
            try:
                info = self._wait_ready(ready_file, deadline)
                break
            except ServerStartError:
                exited = self.proc.poll() is not None
                if exited and port and time.monotonic() < deadline and \
                        "in use" in _tail(self.log_path, 10):
                    time.sleep(0.3)
                    continue
                self.kill()
                raise
        host, _, p = info["listen"].rpartition(":")
        self.addr = (host or "127.0.0.1", int(p))
        self.ready_info = info
        return self

    def _wait_ready(self, ready_file, deadline):
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.kind} server exited with {self.proc.returncode} before it was "
                    f"ready; log {self.log_path}:\n{_tail(self.log_path)}")
            try:
                with open(ready_file) as f:
                    info = json.loads(f.read())
                if info.get("listen"):
                    host, _, port = info["listen"].rpartition(":")
                    if can_connect((host or "127.0.0.1", int(port))):
                        return info
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise ServerStartError(
            f"{self.kind} server not ready in time; log {self.log_path}:\n"
            f"{_tail(self.log_path)}")

    def stop(self, timeout=10):
        """SIGTERM, wait up to `timeout` s, then SIGKILL. Returns the exit code."""
        proc = self.proc
        _RUNNING.discard(self)
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        try:
            proc.send_signal(signal.SIGTERM)
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with open(self.log_path, "ab") as log:
                log.write(b"\n=== did not stop within %d s of SIGTERM; killed\n" % timeout)
            return self.kill()

    def kill(self):
        proc = self.proc
        _RUNNING.discard(self)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        return None if proc is None else proc.returncode

    def restart(self, **changes):
        """Stop, then start again on the same port (and data) with optional changed options."""
        self.stop()
        self.options.update(changes)
        return self.start()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=40):
        return _tail(self.log_path, lines)

    def __repr__(self):
        return f"<Server {self.kind} {self.addr} {self.datadir}>"


def start_server(kind, datadir, port=0, **options):
    """Start a server (see the module docstring) and return the running Server."""
    return Server(kind, datadir, port, **options).start()


# -- TLS material ------------------------------------------------------


def _openssl(*args, cwd):
    subprocess.run(("openssl",) + args, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_tls_material(directory):
    """A CA, a server cert (SAN 127.0.0.1, localhost) and a client cert signed by it, plus
    a second unrelated CA and a client cert it signed (for negative tests). All EC P-256,
    PEM, proper v3 extensions (rustls refuses self-signed end-entity certs). Returns a dict
    of absolute paths."""
    d = os.path.abspath(directory)
    os.makedirs(d, exist_ok=True)

    def key(name):
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", f"{name}.key", cwd=d)

    def ca(name, cn):
        key(name)
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write("basicConstraints=critical,CA:TRUE\n"
                    "keyUsage=critical,keyCertSign,cRLSign\n"
                    "subjectKeyIdentifier=hash\n")
        _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-sha256", "-days", "3650",
                 "-subj", f"/CN={cn}", "-out", f"{name}.pem",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)

    def leaf(name, cn, ca_name, usage, san=None):
        key(name)
        _openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}",
                 "-out", f"{name}.csr", cwd=d)
        ext = ["basicConstraints=critical,CA:FALSE",
               "keyUsage=critical,digitalSignature,keyEncipherment",
               f"extendedKeyUsage={usage}",
               "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid"]
        if san:
            ext.append(f"subjectAltName={san}")
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write("\n".join(ext) + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca_name}.pem",
                 "-CAkey", f"{ca_name}.key", "-CAcreateserial", "-days", "3650", "-sha256",
                 "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)

    ca("ca", "zeo-rs interop test CA")
    leaf("server", "localhost", "ca", "serverAuth", "DNS:localhost,IP:127.0.0.1")
    leaf("client", "interop-client", "ca", "clientAuth")
    ca("rogue-ca", "unrelated CA")
    leaf("rogue-client", "rogue-client", "rogue-ca", "clientAuth")
    p = lambda n: os.path.join(d, n)  # noqa: E731
    return dict(ca=p("ca.pem"), server_cert=p("server.pem"), server_key=p("server.key"),
                client_cert=p("client.pem"), client_key=p("client.key"),
                rogue_ca=p("rogue-ca.pem"), rogue_client_cert=p("rogue-client.pem"),
                rogue_client_key=p("rogue-client.key"))
