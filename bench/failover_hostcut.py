"""Host-cut failover benchmark (run by bench/failover.sh; needs root): the network-namespace HA
pair of tests/e2e (etcd host, two server hosts under supervisors moving a virtual IP with
gratuitous ARP, a client host). Each run starts a Rust writer (zeo-load --verify) and a Python
ZODB writer on the client host, cuts the primary host's link, waits for the other host to take
over, heals the link, and waits for the old primary to rejoin as a standby in sync.

The supervisors use the fast lease profile of docs/FAILOVER.md (lease 2.5 s, renew deadline 1.6 s,
retry every 400 ms, demote timeout 600 ms); the servers replicate in sync mode degrading after
500 ms (`--sync-timeout 500ms`: with its only standby cut off, a strict primary would hold every commit until
the host returns); zeo-load drops a connection silent for 2 s.

usage: python bench/failover_hostcut.py --runs N --out FILE.json
Writes per-run gaps (ms) and counts as JSON; bench/failover.sh renders them.
"""
import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))

from netpair import VIP, pair, primary_host, start_writers, status, wait, writer_reports  # noqa: E402

FAST = ["--lease-duration", "2500ms", "--renew-deadline", "1600ms", "--retry-period", "400ms",
        "--demote-timeout", "600ms"]
# With its only standby cut off, a strict sync primary would hold every commit until the host comes
# back: a pair that must stay writable degrades after a bounded wait (docs/REPLICATION.md).
DEGRADE = ["--sync-timeout", "500ms"]
WRITE_SECONDS = 12
CUT_AT = 3


def in_sync_standby(lab, host):
    st = status(lab, host) or {}
    return st.get("role") == "standby" and st.get("in_sync")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        with pair(tmp, FAST, DEGRADE) as lab:
            for run in range(args.runs):
                wait("one primary and a standby in sync", lambda: primary_host(lab) and any(
                    in_sync_standby(lab, h) for h in ("h1", "h2")), 120)
                time.sleep(1.5)  # past --stable-for and --min-failover-interval
                writers = start_writers(lab, tmp, WRITE_SECONDS, tag=str(run), dead_after="2s")
                time.sleep(CUT_AT)
                victim = primary_host(lab)
                other = "h2" if victim == "h1" else "h1"
                cut = time.monotonic()
                lab.cut(victim)
                wait("the other host promoted, holding the virtual IP",
                     lambda: (status(lab, other) or {}).get("role") == "primary" and VIP in lab.addresses(other), 60)
                promoted = time.monotonic() - cut
                rust, py = writer_reports(lab, tmp, writers, tag=str(run))
                lab.heal(victim)
                try:
                    wait("the old primary rejoining in sync", lambda: in_sync_standby(lab, victim), 120)
                except AssertionError:
                    for h in (victim, other):
                        print(h, json.dumps(status(lab, h)), file=sys.stderr)
                        print("".join(open(tmp / h / "supervisor.log").readlines()[-40:]), file=sys.stderr)
                    raise
                row = {
                    "promoted_s": promoted,
                    "rust_gap_ms": rust["max_gap_ms"], "rust_acked": rust["acknowledged"], "rust_lost": rust["lost"],
                    "py_gap_ms": py["max_gap_ms"], "py_acked": py["acknowledged"], "py_lost": py["lost"],
                }
                runs.append(row)
                print(f"host cut {run}: {victim} -> {other} promoted after {promoted:.2f} s; "
                      f"zeo-load gap {row['rust_gap_ms']:.0f} ms, lost {row['rust_lost']}; "
                      f"python gap {row['py_gap_ms']:.0f} ms, lost {row['py_lost']}", file=sys.stderr, flush=True)
    with open(args.out, "w") as f:
        json.dump(runs, f)


if __name__ == "__main__":
    main()
