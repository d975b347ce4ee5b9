"""Failover between hosts, in network namespaces (needs root): etcd on its own host, two server
hosts each running zeo-server under zeo-supervisor (exec mode, etcd lease, virtual IP moved with
gratuitous ARP), and a client host writing through the virtual IP with zeo-load in verify mode.

Scenarios: SIGKILL of the primary's server, the primary host cut off from everyone (its link
down), the primary's server paused (SIGSTOP). In each, every acknowledged write must survive
(sync replication), a new primary must take over, and at no moment may two servers be writable.
Binaries: target/debug (or $ZEORS_BIN_DIR).
"""
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request

import pytest

import netlab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("ZEORS_BIN_DIR") or os.path.join(REPO, "target", "debug")
VIP = f"{netlab.SUBNET}.100"
TOKEN = "netns-e2e-token-0123456789abcdef"

pytestmark = pytest.mark.skipif(
    not netlab.can_run() or not shutil.which("etcd") or not shutil.which("arping"),
    reason="needs root, network namespaces, etcd and arping (.ci/run installs them)")


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


@pytest.fixture
def cluster(tmp_path):
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
                "--log-format", "json", "--",
                os.path.join(BIN, "zeo-server"), "--path", str(d / "Data.fs"), "--listen", "0.0.0.0:8100",
                "--admin", "0.0.0.0:8101", "--replication-listen", "0.0.0.0:8102",
                "--admin-token-file", str(tmp_path / "token"), "--standby-name", host,
                "--sync-standbys", "1", "--wait-for-supervisor", "--log-format", "json"],
                stdout=log, stderr=subprocess.STDOUT)
        wait("a primary holding the virtual IP",
             lambda: any(VIP in lab.addresses(h) for h in ("h1", "h2")), 60)
        yield lab, tmp_path


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


@pytest.mark.parametrize("fault", ["sigkill", "link_cut", "sigstop"])
def test_failover_through_the_virtual_ip(cluster, fault):
    lab, tmp = cluster
    wait("a standby in sync", lambda: any((status(lab, h) or {}).get("in_sync") for h in ("h1", "h2")), 60)
    time.sleep(1.5)  # past --stable-for and --min-failover-interval since the election
    report = tmp / "load.json"
    load = lab.spawn("cl", [os.path.join(BIN, "zeo-load"), "--storage", f"{VIP}:8100", "--verify",
                            "--duration", "25s", "--concurrency", "2", "--timeout", "5s",
                            "--json", str(report), "--progress-interval", "1h"],
                     stdout=open(tmp / "load.txt", "wb"), stderr=subprocess.STDOUT)
    watch = Watch(lab)
    watch.start()
    time.sleep(4)
    victim = primary_host(lab)
    assert victim, "a primary before the fault"
    pid = server_pid(str(tmp / victim))
    if fault == "sigkill":
        os.kill(pid, signal.SIGKILL)
    elif fault == "link_cut":
        lab.cut(victim)
    else:
        os.kill(pid, signal.SIGSTOP)
    other = "h2" if victim == "h1" else "h1"
    wait("the other host promoted and holding the virtual IP",
         lambda: (status(lab, other) or {}).get("role") == "primary" and VIP in lab.addresses(other), 60)
    if fault == "link_cut":
        # The cut-off primary fenced itself: its server no longer accepts commits.
        wait("the cut-off primary fenced", lambda: not (status(lab, victim) or {}).get("writable"), 30)
        lab.heal(victim)
    elif fault == "sigstop":
        # Its supervisor fences a server that stops answering: demote, else kill (exec mode). A
        # paused process cannot answer the demotion, so it is killed and never resumes as primary.
        wait("the paused server killed by its supervisor", lambda: server_pid(str(tmp / victim)) != pid, 30)
    # The old primary comes back as a standby of the new one.
    wait("the old primary rejoining", lambda: (status(lab, victim) or {}).get("role") == "standby", 90)
    load.wait(120)
    watch.stop.set()
    watch.join(10)
    r = json.load(open(report))
    print(f"{fault}: acknowledged {r['acknowledged']}, lost {r['lost']}, client gap {r['max_gap_ms']:.0f} ms")
    assert r["acknowledged"] > 0
    assert r["lost"] == 0, r
    assert watch.samples > 10 and watch.doubles == 0, "two writable servers at once"
