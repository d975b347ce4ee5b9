"""A sidecar-mode HA pair for the fencing acceptance of issue 12, shared by tests/e2e/test_fencing.py
and bench/fencing.py. Needs root (netlab).

Hosts in network namespaces: `etcd`, `h1`, `h2` and a client host `cl`. On each server host a
zeo-server that is NOT a child of its supervisor (sidecar mode: started here, as the kubelet starts
a container) and a zeo-supervisor acting on it through its admin API, with a kill command that
SIGKILLs it by its pid file (what `shareProcessNamespace` gives a Kubernetes sidecar). No address
mover: clients list both servers and find the writable one, as clients connected straight to the
servers do after the address moved. Servers run with `--wait-for-supervisor --require-write-lease`.
The lease is in etcd (its own host), in a file, or in the fake Kubernetes API of kubefake.py.

Faults: signals to a supervisor or server, the replication link dropped (iptables on the port of
the primary's replication listener, in the primary's namespace: admin APIs and clients still get
through), the lease store dropped from one host only (iptables), a server's data directory full
(each data directory is a small tmpfs when `tmpfs=True`).

The `Watcher` samples both servers' `/status` every 20 ms from the root namespace (the bridge
reaches every host) and records each sample where both were writable.

Binaries: $ZEORS_BIN_DIR (default target/debug); Python: $ZEORS_PYTHON (default .venv).
"""
import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request

import netlab
from kubefake import FakeKube

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("ZEORS_BIN_DIR") or os.path.join(REPO, "target", "debug")
PYTHON = os.environ.get("ZEORS_PYTHON") or os.path.join(REPO, ".venv", "bin", "python")
WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zodb_writer.py")
TOKEN = "fence-e2e-token-0123456789abcdef"
HOSTS = ("h1", "h2")
ZEO, ADMIN, REPL, SUP = 8100, 8101, 8102, 8110

# The fast lease profile of docs/FAILOVER.md: keeps each run short; the arithmetic is the same.
FAST = ["--lease-duration", "2500ms", "--renew-deadline", "1600ms", "--retry-period", "400ms",
        "--demote-timeout", "600ms"]
MODES = {
    # Strict: one sync standby, commits wait for it however long.
    "strict": [],
    # Degrade: after 500 ms without the standby, degrade (only once the mark is in the lease).
    "degrade": ["--sync-timeout", "500ms"],
}


def wait(what, pred, timeout=60, dump=None):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            if dump:
                dump()
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def http_status(ip, timeout=0.5):
    """A server's /status from the root namespace; None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{ADMIN}/status", timeout=timeout) as r:
            return json.loads(r.read())
    except Exception:
        return None


def lab_subnet():
    """A /24 of the benchmark range 198.18.0.0/15 for this lab, random, so labs of parallel runs
    (and netlab's default 198.51.100.0/24) rarely meet; one in use (an address of it already on
    some interface) is skipped."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    for _ in range(50):
        subnet = f"198.{random.choice((18, 19))}.{random.randrange(1, 255)}"
        if f" {subnet}." not in used:
            return subnet
    raise AssertionError("no free /24 in 198.18.0.0/15")


class Pair:
    """Use as a context manager; `start()` returns once one server is a writable primary and the
    other an in-sync standby."""

    def __init__(self, tmp, mode="strict", lease="etcd", tmpfs_mb=None):
        assert mode in MODES and lease in ("etcd", "file", "kube")
        self.tmp, self.mode, self.lease, self.tmpfs_mb = tmp, mode, lease, tmpfs_mb
        self.lab = netlab.Lab(["etcd", *HOSTS, "cl"], subnet=lab_subnet())
        self.servers, self.supervisors = {}, {}
        self.mounts = []
        self.rules = []  # (host, iptables rule) to delete at exit
        self.kube = None
        self.kept, self.restarts, self.closing, self.keeper = {}, {}, False, None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self):
        self.lab.__enter__()
        try:
            self._setup()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        self.closing = True
        if self.keeper:
            self.keeper.join(10)
        self.lab.__exit__(*exc)
        if self.kube:
            self.kube.close()
        for m in self.mounts:
            subprocess.run(["umount", "-l", m], check=False, capture_output=True)

    def _setup(self):
        tmp = self.tmp
        (tmp / "token").write_text(TOKEN)
        certs = tmp / "certs"
        subprocess.run([os.path.join(REPO, "scripts", "replication-certs"), str(certs),
                        *[f"{h},{self.ip(h)}" for h in HOSTS]], check=True, capture_output=True)
        self.certs = certs
        if self.lease == "etcd":
            ip = self.ip("etcd")
            self.lab.spawn("etcd", [
                "etcd", "--name", "e", "--data-dir", str(tmp / "etcd"),
                "--listen-client-urls", f"http://{ip}:2379", "--advertise-client-urls", f"http://{ip}:2379",
                "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380", "--initial-cluster", "e=http://127.0.0.1:2380"],
                stdout=open(tmp / "etcd.log", "wb"), stderr=subprocess.STDOUT)
            wait("etcd", lambda: self.lab.reachable("h1", ip, 2379), 30)
        elif self.lease == "kube":
            # In the root namespace on the bridge: every host reaches it through its eth0.
            self.kube = FakeKube(self.lab.gateway)
            self.kube.kubeconfig(tmp / "kubeconfig", "zeo")
        for h in HOSTS:
            d = self.dir(h)
            d.mkdir()
            if self.tmpfs_mb:
                subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.tmpfs_mb}m", "tmpfs", str(d)], check=True)
                self.mounts.append(str(d))
            kill = tmp / f"kill-{h}"
            # Succeeds on a server that is already gone: the fence holds, the lease can be released.
            kill.write_text(f"#!/bin/sh\npid=$(cat {tmp}/{h}.pid)\n"
                            "kill -9 \"$pid\" 2>/dev/null || ! kill -0 \"$pid\" 2>/dev/null\n")
            kill.chmod(0o755)
            self.start_server(h)
            self.start_supervisor(h)

    def start(self, timeout=90):
        wait("a writable primary and an in-sync standby", self.settled, timeout, dump=self.dump)
        return self.primary()

    # -- processes -------------------------------------------------------------------------

    def ip(self, host):
        return self.lab.ip(host)

    def dir(self, host):
        return self.tmp / host

    def other(self, host):
        return "h2" if host == "h1" else "h1"

    def start_server(self, h):
        env = dict(os.environ,
                   ZEO_REPLICATION_TLS_CERT=str(self.certs / f"{h}.crt"),
                   ZEO_REPLICATION_TLS_KEY=str(self.certs / f"{h}.key"),
                   ZEO_REPLICATION_TLS_CA=str(self.certs / "ca.crt"),
                   ZEO_REPLICATION_PEERS=",".join(HOSTS), ZEO_STANDBY_NAME=h)
        log = open(self.tmp / f"{h}-server.log", "ab")
        p = self.lab.spawn(h, [
            os.path.join(BIN, "zeo-server"), "--path", str(self.dir(h) / "Data.fs"),
            "--listen", f"0.0.0.0:{ZEO}", "--admin", f"0.0.0.0:{ADMIN}", "--replication-listen", f"0.0.0.0:{REPL}",
            "--admin-token-file", str(self.tmp / "token"), "--standby-name", h, "--sync-standbys", "1",
            "--wait-for-supervisor", "--require-write-lease", "--log-format", "json", *MODES[self.mode]],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        # `ip netns exec` execs the command: the child's pid is the server's.
        (self.tmp / f"{h}.pid").write_text(str(p.pid))
        self.servers[h] = p
        return p

    def start_supervisor(self, h):
        o = self.other(h)
        if self.lease == "etcd":
            lease = ["--lease-backend", "etcd", "--etcd-endpoints", f"http://{self.ip('etcd')}:2379",
                     "--lease-name", "zeo-fence"]
        elif self.lease == "kube":
            lease = ["--lease-backend", "kubernetes", "--lease-name", "zeo-fence", "--namespace", "zeo"]
        else:
            lease = ["--lease-backend", "file", "--lease-file", str(self.tmp / "lease.json")]
        env = dict(os.environ, KUBECONFIG=str(self.tmp / "kubeconfig"))
        log = open(self.tmp / f"{h}-supervisor.log", "ab")
        p = self.lab.spawn(h, [
            os.path.join(BIN, "zeo-supervisor"), "--identity", h,
            "--server-admin", f"http://127.0.0.1:{ADMIN}", "--server-zeo", f"127.0.0.1:{ZEO}",
            "--replication-addr", f"{self.ip(h)}:{REPL}", "--token-file", str(self.tmp / "token"),
            "--peer", f"{o}=http://{self.ip(o)}:{ADMIN}={self.ip(o)}:{REPL}",
            "--listen", f"0.0.0.0:{SUP}", *lease, "--address", "none",
            "--kill-command", str(self.tmp / f"kill-{h}"),
            "--min-failover-interval", "1s", "--stable-for", "500ms", "--max-transitions", "1000",
            "--log-format", "json", *FAST],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        self.supervisors[h] = p
        return p

    def keep_running(self, h, delay=1.0):
        """From now on restarts `h`'s server `delay` seconds after each exit, as a kubelet restarts
        a container (its back-off aside). Needed: the fence of a supervisor whose server died can
        kill the server just restarted in its place (its kill command finds the new pid)."""
        self.kept[h] = delay
        if not self.keeper:
            self.keeper = threading.Thread(target=self._keep, daemon=True)
            self.keeper.start()

    def _keep(self):
        while not self.closing:
            for h, delay in list(self.kept.items()):
                if self.servers[h].poll() is not None:
                    time.sleep(delay)
                    if self.closing:
                        return
                    self.restarts[h] = self.restarts.get(h, 0) + 1
                    self.start_server(h)
            time.sleep(0.05)

    def signal_supervisor(self, h, sig):
        self.supervisors[h].send_signal(sig)
        if sig == signal.SIGKILL:
            self.supervisors[h].wait(10)

    def kill_server(self, h):
        self.servers[h].send_signal(signal.SIGKILL)
        self.servers[h].wait(10)

    # -- faults ----------------------------------------------------------------------------

    def _rule(self, h, op, rule):
        self.lab.run(h, "iptables", op, *rule)

    def _block(self, h, rules):
        for r in rules:
            self._rule(h, "-I", r)
            self.rules.append((h, r))

    def _unblock(self, h, match):
        for host, r in list(self.rules):
            if host == h and match(r):
                self._rule(h, "-D", r)
                self.rules.remove((host, r))

    def cut_replication(self, h):
        """Drops every packet of the replication link at `h` (both its listener and its dialler)."""
        self._block(h, [["INPUT", "-p", "tcp", "--dport", str(REPL), "-j", "DROP"],
                        ["OUTPUT", "-p", "tcp", "--sport", str(REPL), "-j", "DROP"],
                        ["OUTPUT", "-p", "tcp", "--dport", str(REPL), "-j", "DROP"],
                        ["INPUT", "-p", "tcp", "--sport", str(REPL), "-j", "DROP"]])

    def heal_replication(self, h):
        self._unblock(h, lambda r: str(REPL) in r)

    def cut_store(self, h):
        """The lease store unreachable from `h` only: packets to and from etcd dropped there; the
        fake Kubernetes API stalls every request from `h` (accepted, never answered)."""
        if self.kube:
            self.kube.stall(self.ip(h))
            return
        ip = self.ip("etcd")
        self._block(h, [["OUTPUT", "-d", ip, "-j", "DROP"], ["INPUT", "-s", ip, "-j", "DROP"]])

    def heal_store(self, h):
        if self.kube:
            self.kube.unstall(self.ip(h))
            return
        ip = self.ip("etcd")
        self._unblock(h, lambda r: ip in r)

    def fill_disk(self, h):
        """Fills `h`'s data directory (a tmpfs) to the last byte."""
        subprocess.run(["dd", "if=/dev/zero", f"of={self.dir(h)}/filler", "bs=1M"], capture_output=True)
        subprocess.run(["dd", "if=/dev/zero", f"of={self.dir(h)}/filler2", "bs=4k"], capture_output=True)

    def free_disk(self, h):
        for f in ("filler", "filler2"):
            try:
                os.unlink(self.dir(h) / f)
            except FileNotFoundError:
                pass

    # -- views -----------------------------------------------------------------------------

    def status(self, h):
        return http_status(self.ip(h))

    def primary(self):
        """The writable primary, or None."""
        for h in HOSTS:
            st = self.status(h) or {}
            if st.get("role") == "primary" and st.get("writable"):
                return h
        return None

    def in_sync_standby(self, h):
        st = self.status(h) or {}
        return st.get("role") == "standby" and st.get("in_sync") and not st.get("storage_error")

    def settled(self):
        p = self.primary()
        return p if p and self.in_sync_standby(self.other(p)) else None

    def epoch(self, h):
        return (self.status(h) or {}).get("epoch")

    def storages(self):
        return ",".join(f"{self.ip(h)}:{ZEO}" for h in HOSTS)

    def dump(self, lines=40):
        for h in HOSTS:
            print(f"== {h}: {json.dumps(self.status(h))}")
            for what in ("supervisor", "server"):
                path = self.tmp / f"{h}-{what}.log"
                if path.exists():
                    print(f"-- {h} {what} log (last {lines} lines)")
                    print("".join(open(path, errors="replace").readlines()[-lines:]))

    # -- clients ---------------------------------------------------------------------------

    def start_writers(self, duration, tag=""):
        """zeo-load --verify (stops after `duration` s) and the Python ZODB writer (stopped by
        `writer_reports`) on host `cl`, both listing both servers."""
        t = self.tmp
        rust = self.lab.spawn("cl", [
            os.path.join(BIN, "zeo-load"), "--storage", self.storages(), "--verify",
            "--duration", f"{duration}s", "--concurrency", "2", "--timeout", "5s", "--dead-after", "2s",
            "--json", str(t / f"load{tag}.json"), "--progress-interval", "1h"],
            stdout=open(t / f"load{tag}.txt", "wb"), stderr=subprocess.STDOUT)
        py = self.lab.spawn("cl", [PYTHON, WRITER, "write", self.storages(), str(t / f"py{tag}.acks"),
                                   "--key", f"py{tag}"],
                            stdout=open(t / f"py{tag}.txt", "wb"), stderr=subprocess.STDOUT)
        return rust, py

    def writer_reports(self, writers, tag="", timeout=240):
        """Waits for zeo-load, stops the Python writer and reads each of its acknowledged commits
        back from the writable server; returns (zeo-load's JSON, zodb_writer's check)."""
        rust, py = writers
        rust.wait(timeout)
        py.send_signal(signal.SIGTERM)
        try:
            py.wait(60)
        except subprocess.TimeoutExpired:
            py.kill()
            py.wait()
        t = self.tmp
        out = self.lab.run("cl", PYTHON, WRITER, "check", self.storages(), str(t / f"py{tag}.acks"),
                           "--key", f"py{tag}", check=False)
        try:
            py_report = json.loads(out.stdout)
        except ValueError:
            raise AssertionError(f"zodb_writer check failed: {out.stdout}{out.stderr}") from None
        if not py_report.get("lost"):
            py_report.pop("lost_ids", None)
        try:
            rust_report = json.load(open(t / f"load{tag}.json"))
        except (OSError, ValueError):
            raise AssertionError("zeo-load wrote no report: " + open(t / f"load{tag}.txt").read()[-2000:]) from None
        return rust_report, py_report


class Watcher(threading.Thread):
    """Samples both servers' /status every 20 ms. A sample is one round A, B, A (alternating which
    server is A): a double writer is a round in which B was writable between two reads that both
    found A writable. Also keeps the longest stretch in which no sample found a writable server."""

    PERIOD = 0.02

    def __init__(self, pair):
        super().__init__(daemon=True)
        self.ips = [pair.ip(h) for h in HOSTS]
        self.halt = threading.Event()
        self.samples = self.doubles = 0
        self.double_at = []
        self.last_writable = None
        self.longest_unwritable = 0.0
        self.since = None  # start counting the unwritable stretch from here (the fault)

    def writable(self, ip):
        return bool((http_status(ip, timeout=0.3) or {}).get("writable"))

    def run(self):
        flip = 0
        while not self.halt.is_set():
            t0 = time.monotonic()
            a, b = (self.ips[0], self.ips[1]) if flip == 0 else (self.ips[1], self.ips[0])
            flip ^= 1
            wa = self.writable(a)
            wb = self.writable(b)
            wa2 = self.writable(a) if wa and wb else wa
            if wa and wb and wa2:
                self.doubles += 1
                self.double_at.append(time.time())
            self.samples += 1
            now = time.monotonic()
            if wa or wb:
                self.last_writable = now
            elif self.since is not None:
                start = max(self.since, self.last_writable or self.since)
                self.longest_unwritable = max(self.longest_unwritable, now - start)
            self.halt.wait(max(0.0, self.PERIOD - (time.monotonic() - t0)))

    def mark_fault(self):
        self.since = time.monotonic()

    def stop(self):
        self.halt.set()
        self.join(10)
