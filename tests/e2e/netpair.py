"""An HA pair across network namespaces, shared by tests/e2e and bench/: etcd on its own host,
two server hosts each running zeo-server under zeo-supervisor (exec mode, etcd lease, virtual IP
moved with gratuitous ARP), and a client host. Needs root (netlab).
Binaries: target/debug (or $ZEORS_BIN_DIR).
"""
import contextlib
import json
import os
import signal
import subprocess
import threading
import time

import netlab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("ZEORS_BIN_DIR") or os.path.join(REPO, "target", "debug")
VIP = f"{netlab.SUBNET}.100"
TOKEN = "netns-e2e-token-0123456789abcdef"


def status(lab, host):
    """A server's /status, read from inside its host; None when it does not answer."""
    code = ("import json,sys,urllib.request\n"
            "try: print(urllib.request.urlopen(sys.argv[1], timeout=1).read().decode())\n"
            "except Exception: print('null')\n")
    out = lab.run(host, "python3", "-c", code, "http://127.0.0.1:8101/status", check=False).stdout
    try:
        return json.loads(out)
    except ValueError:
        return None


def wait(what, pred, timeout=60):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def server_pid(host_dir):
    """The zeo-server process serving host_dir (found in /proc)."""
    needle = os.path.join(host_dir, "Data.fs").encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"zeo-server") and needle in args:
            return int(pid)
    return None


def replication_certs(directory, lab):
    """A throwaway CA and a certificate per member (identity h1 or h2, plus its lab address as an IP
    SAN), made by the same script the drills and ha-local use."""
    script = os.path.join(REPO, "scripts", "replication-certs")
    subprocess.run([script, str(directory), *(f"{h},{lab.ip(h)}" for h in ("h1", "h2"))],
                   check=True, stdout=subprocess.DEVNULL)
    return directory


def tls_env(directory, host):
    """The server's mutual TLS on the replication link, through the environment its supervisor
    passes on to it; the members allowed on the link are the two hosts."""
    return {**os.environ, "ZEO_REPLICATION_TLS_CERT": str(directory / f"{host}.crt"),
            "ZEO_REPLICATION_TLS_KEY": str(directory / f"{host}.key"),
            "ZEO_REPLICATION_TLS_CA": str(directory / "ca.crt"), "ZEO_REPLICATION_PEERS": "h1,h2"}


@contextlib.contextmanager
def pair(tmp_path, supervisor_args=(), server_args=()):
    """etcd on host `etcd`, servers under supervisors on `h1` and `h2`, a client host `cl`; yields
    the lab once one server holds the virtual IP. `supervisor_args` and `server_args` are added to
    both supervisors and both servers."""
    with netlab.Lab(["etcd", "h1", "h2", "cl"]) as lab:
        (tmp_path / "token").write_text(TOKEN)
        etcd_ip = lab.ip("etcd")
        lab.spawn("etcd", [
            "etcd", "--name", "e", "--data-dir", str(tmp_path / "etcd"),
            "--listen-client-urls", f"http://{etcd_ip}:2379", "--advertise-client-urls", f"http://{etcd_ip}:2379",
            "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "e=http://127.0.0.1:2380"],
            stdout=open(tmp_path / "etcd.log", "wb"), stderr=subprocess.STDOUT)
        wait("etcd", lambda: lab.reachable("h1", etcd_ip, 2379), 30)
        tls = replication_certs(tmp_path / "tls", lab)
        for host, peer in (("h1", "h2"), ("h2", "h1")):
            d = tmp_path / host
            d.mkdir()
            log = open(d / "supervisor.log", "wb")
            lab.spawn(host, [
                os.path.join(BIN, "zeo-supervisor"), "--identity", host,
                "--server-admin", "http://127.0.0.1:8101", "--server-zeo", "127.0.0.1:8100",
                "--replication-addr", f"{lab.ip(host)}:8102", "--token-file", str(tmp_path / "token"),
                "--peer", f"{peer}=http://{lab.ip(peer)}:8101={lab.ip(peer)}:8102",
                "--listen", "0.0.0.0:8110", "--lease-backend", "etcd",
                "--etcd-endpoints", f"http://{etcd_ip}:2379", "--lease-name", "zeo-e2e",
                "--address", "vip", "--vip", f"{VIP}/24", "--vip-interface", "eth0",
                "--min-failover-interval", "1s", "--stable-for", "500ms", "--max-transitions", "100",
                "--log-format", "json", *supervisor_args, "--",
                os.path.join(BIN, "zeo-server"), "--path", str(d / "Data.fs"), "--listen", "0.0.0.0:8100",
                "--admin", "0.0.0.0:8101", "--replication-listen", "0.0.0.0:8102",
                "--admin-token-file", str(tmp_path / "token"), "--standby-name", host,
                "--sync-standbys", "1", "--wait-for-supervisor", "--log-format", "json", *server_args],
                stdout=log, stderr=subprocess.STDOUT, env=tls_env(tls, host))
        try:
            wait("a primary holding the virtual IP",
                 lambda: any(VIP in lab.addresses(h) for h in ("h1", "h2")), 60)
        except AssertionError:
            for h in ("h1", "h2"):
                print(f"== {h}: {status(lab, h)}\n" + "".join(open(tmp_path / h / "supervisor.log").readlines()[-15:]))
            raise
        yield lab


def primary_host(lab):
    for h in ("h1", "h2"):
        st = status(lab, h)
        if st and st["role"] == "primary" and st["writable"]:
            return h
    return None


class Watch(threading.Thread):
    """Samples both servers; records any moment with two writable servers."""

    def __init__(self, lab):
        super().__init__(daemon=True)
        self.lab, self.stop, self.doubles, self.samples = lab, threading.Event(), 0, 0

    def writable(self):
        return sum(1 for h in ("h1", "h2") if (status(self.lab, h) or {}).get("writable"))

    def run(self):
        while not self.stop.is_set():
            # The two reads are sequential: a failover between them can look like two primaries.
            # Only a double that is still there when read again counts.
            if self.writable() > 1 and self.writable() > 1:
                self.doubles += 1
            self.samples += 1


PYTHON = os.environ.get("ZEORS_PYTHON") or os.path.join(REPO, ".venv", "bin", "python")


WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zodb_writer.py")


def start_writers(lab, tmp_path, duration, tag="", dead_after="4s"):
    """Rust (zeo-load --verify, stops after `duration` seconds) and Python (ZODB, zodb_writer.py,
    stopped by writer_reports) clients on host `cl`, writing through the virtual IP."""
    rust = lab.spawn("cl", [os.path.join(BIN, "zeo-load"), "--storage", f"{VIP}:8100", "--verify",
                            "--duration", f"{duration}s", "--concurrency", "2", "--timeout", "5s",
                            "--dead-after", dead_after,
                            "--json", str(tmp_path / f"load{tag}.json"), "--progress-interval", "1h"],
                     stdout=open(tmp_path / f"load{tag}.txt", "wb"), stderr=subprocess.STDOUT)
    py = lab.spawn("cl", [PYTHON, WRITER, "write", f"{VIP}:8100", str(tmp_path / f"py{tag}.acks"), "--key", f"py{tag}"],
                   stdout=open(tmp_path / f"py{tag}.txt", "wb"), stderr=subprocess.STDOUT)
    return rust, py


def writer_reports(lab, tmp_path, writers, tag="", timeout=180):
    """Waits for zeo-load, stops the Python writer, reads every acknowledged write back; returns
    both reports (zeo-load's JSON, zodb_writer's check)."""
    rust, py = writers
    rust.wait(timeout)
    stopped = time.time()
    py.send_signal(signal.SIGTERM)
    try:
        # A ZEO call sent to a host that vanished has no deadline: it may not see the signal soon.
        py.wait(30)
    except subprocess.TimeoutExpired:
        py.kill()
        py.wait()
    out = lab.run("cl", PYTHON, WRITER, "check", f"{VIP}:8100", str(tmp_path / f"py{tag}.acks"), "--key", f"py{tag}",
                  check=False)
    try:
        py_report = json.loads(out.stdout)
    except ValueError:
        raise AssertionError(f"zodb_writer check failed: {out.stdout}{out.stderr}") from None
    # A writer stuck on a dead connection until it was stopped saw that whole stretch as a pause.
    log = tmp_path / f"py{tag}.acks"
    acks = [float(line.split()[2]) for line in open(log)] if log.exists() else []
    if acks:
        py_report["max_gap_ms"] = max(py_report["max_gap_ms"], (stopped - acks[-1]) * 1000)
    return json.load(open(tmp_path / f"load{tag}.json")), py_report
