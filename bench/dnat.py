"""Kubernetes-like node loss through a DNAT (issue 17 item 4; needs root): the network-namespace
HA pair of tests/e2e (etcd host, two server hosts under supervisors, a client host), and in the
client's namespace a DNAT rule from a service address (198.18.0.10:8100) to the primary host's own
address, as kube-proxy installs for a ClusterIP Service. The client never uses the virtual IP.

Each run starts the unmodified Python ZODB writer (tests/e2e/zodb_writer.py) on the service
address, cuts the primary host's link (no reset ever comes: a lost node), and once the other host
is primary switches the rule to it, as kube-proxy does on an endpoint change. Connections already
made keep their conntrack entry to the dead host: only the client's own timeouts get it out.

Modes (--mode, repeatable):
  kit      the writer with the client kit (tests/e2e/with_kit.py: keepalive, TCP_USER_TIMEOUT 10 s)
  plain    the writer as it is (ZEO sets no timeout: TCP's retransmission timeout, ~15 min)
  retries  the writer as it is, the client namespace with net.ipv4.tcp_retries2=5 (the sysctl
           alternative for client pods)
A run whose writer has not written again --limit seconds after the cut is stopped and counted
as hung, its gap censored at the limit.

usage: python bench/dnat.py --runs N [--mode kit --mode plain ...] [--limit S] --out FILE.json
Prints one line per run to stderr; writes the runs and a per-mode summary as JSON.
"""
import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))

from netpair import PYTHON, WRITER, pair, primary_host, status, wait  # noqa: E402

E2E = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e")
WITH_KIT = os.path.join(E2E, "with_kit.py")
SERVICE = "198.18.0.10"
PORT = 8100
# The fast lease profile and degrading sync replication of bench/failover_hostcut.py.
FAST = ["--lease-duration", "2500ms", "--renew-deadline", "1600ms", "--retry-period", "400ms",
        "--demote-timeout", "600ms"]
DEGRADE = ["--sync-timeout", "500ms"]
WRITE_BEFORE_CUT = 3


def in_sync_standby(lab, host):
    st = status(lab, host) or {}
    return st.get("role") == "standby" and st.get("in_sync")


def dnat(lab, op, host):
    """The kube-proxy-like rule in the client's namespace: SERVICE:PORT -> host:PORT."""
    rule = ["-d", f"{SERVICE}/32", "-p", "tcp", "--dport", str(PORT), "-j", "DNAT",
            "--to-destination", f"{lab.ip(host)}:{PORT}"]
    lab.run("cl", "iptables", "-t", "nat", *op, "OUTPUT", *rule)


def acks(path):
    if not path.exists():
        return []
    return [float(line.split()[2]) for line in open(path)]


def one_run(lab, tmp, mode, run, limit):
    wait("one primary and a standby in sync",
         lambda: primary_host(lab) and any(in_sync_standby(lab, h) for h in ("h1", "h2")), 120)
    time.sleep(1.5)  # past --stable-for and --min-failover-interval
    victim = primary_host(lab)
    other = "h2" if victim == "h1" else "h1"
    lab.run("cl", "iptables", "-t", "nat", "-F", "OUTPUT")
    dnat(lab, ["-A"], victim)
    lab.run("cl", "sysctl", "-q", "-w", f"net.ipv4.tcp_retries2={5 if mode == 'retries' else 15}")
    log = tmp / f"{mode}{run}.acks"
    argv = [PYTHON] + ([WITH_KIT] if mode == "kit" else [])
    argv += [WRITER, "write", f"{SERVICE}:{PORT}", str(log), "--key", f"{mode}{run}"]
    writer = lab.spawn("cl", argv, stdout=subprocess.DEVNULL, stderr=open(tmp / f"{mode}{run}.txt", "wb"))
    wait("the writer writing", lambda: len(acks(log)) > 0, 60)
    time.sleep(WRITE_BEFORE_CUT)
    cut = time.time()
    lab.cut(victim)
    switched = {}

    def switch():
        # kube-proxy's endpoint change: the rule follows the new primary once it serves.
        wait("the other host primary", lambda: (status(lab, other) or {}).get("writable"), 60)
        lab.run("cl", "iptables", "-t", "nat", "-F", "OUTPUT")
        dnat(lab, ["-A"], other)
        switched["s"] = time.time() - cut
    t = threading.Thread(target=switch, daemon=True)
    t.start()
    # Done once the writer has written through the switched rule (to the new primary).
    end = time.monotonic() + limit

    def resumed():
        return "s" in switched and any(a > cut + switched["s"] for a in acks(log))
    while time.monotonic() < end and not resumed():
        time.sleep(0.05)
    time.sleep(0.5)
    stopped = time.time()
    writer.send_signal(signal.SIGTERM)
    try:
        writer.wait(3)
    except subprocess.TimeoutExpired:  # stuck in a call on the dead connection
        writer.kill()
        writer.wait()
    t.join(60)
    times = acks(log)
    hung = not resumed()
    # The longest pause between two acknowledgements that ends after the cut; a writer that never
    # resumed paused from its last acknowledgement until it was stopped.
    ends = times + ([stopped] if hung else [])
    gap = max(b - a for a, b in zip(ends, ends[1:]) if b > cut) * 1000
    lab.heal(victim)
    wait("the old primary rejoining in sync", lambda: in_sync_standby(lab, victim), 180)
    row = {"mode": mode, "gap_ms": gap, "hung": hung, "switched_s": switched.get("s"), "victim": victim}
    print(f"dnat {mode} {run}: {victim} cut, rule switched to {other} after {switched.get('s', float('nan')):.2f} s; "
          f"python gap {gap:.0f} ms{' (hung: no write until stopped)' if hung else ''}",
          file=sys.stderr, flush=True)
    return row


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--mode", action="append", choices=["kit", "plain", "retries"])
    p.add_argument("--limit", type=float, default=60.0, help="seconds after the cut before a run counts as hung")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    modes = args.mode or ["kit", "plain", "retries"]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        with pair(tmp, FAST, DEGRADE) as lab:
            lab.run("cl", "ip", "route", "add", "198.18.0.0/15", "dev", "eth0")
            for run in range(args.runs):
                for mode in modes:  # interleaved, so that the machine's load falls on all modes alike
                    rows.append(one_run(lab, tmp, mode, run, args.limit))
    summary = {}
    for mode in modes:
        gaps = [r["gap_ms"] for r in rows if r["mode"] == mode]
        summary[mode] = {"runs": len(gaps), "hung": sum(r["hung"] for r in rows if r["mode"] == mode),
                         "p50_ms": pct(gaps, 50), "max_ms": max(gaps), "min_ms": min(gaps)}
    print(json.dumps(summary, indent=1), file=sys.stderr)
    with open(args.out, "w") as f:
        json.dump({"limit_s": args.limit, "runs": rows, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
