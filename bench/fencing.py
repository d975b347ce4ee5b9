"""Fencing benchmark (issue 12; needs root and etcd): the scenarios of tests/e2e/fencing_scenarios.py
on the sidecar-mode pair of tests/e2e/fencepair.py, N fresh-pair runs of each scenario in strict and
degrade mode (the degrade window 30 by default), and a table per scenario and mode: runs,
acknowledged commits (zeo-load --verify + Python ZODB writer), lost, the longest time with no
writable server (from the 20 ms watcher), double-writer samples, takeover time, and for the full
disk the recovery time after the failed promotion and the epoch rise.

usage: python bench/fencing.py [--runs N] [--window-runs M] [--only SCENARIO[,..]] [--modes strict,degrade]
                               [--out bench/out/fencing.json] [--doc docs/BENCHMARKS.md]
       python bench/fencing.py --render-only "COMMAND"   (the table of the runs already in --out)
Binaries from $ZEORS_BIN_DIR (build them with --release), Python from $ZEORS_PYTHON.
Writes every run as JSON, prints the table and splices it into the document between
<!-- fencing:begin --> and <!-- fencing:end -->. A run that fails (a wait timed out) is recorded as
failed with its error and counts in the table.
"""
import argparse
import json
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

import fencing_scenarios  # noqa: E402
from benchdoc import splice  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else None


def fmt(x, unit=""):
    return "-" if x is None else f"{x:.2f}{unit}"


def table(rows):
    out = ["| scenario | mode | runs | failed | acknowledged | lost | no writable server, p50 / max (s) "
           "| double-writer samples | takeover p50 / max (s) | recovery after failed promotion, max (s) | epoch rise, max "
           "| old primary serves again |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = []
    for r in rows:
        if (r["scenario"], r["mode"]) not in keys:
            keys.append((r["scenario"], r["mode"]))
    for sc, mode in keys:
        rs = [r for r in rows if r["scenario"] == sc and r["mode"] == mode]
        ok = [r for r in rs if "error" not in r]
        gaps = [r["no_writable_s"] for r in ok]
        take = [r["takeover_s"] for r in ok if "takeover_s" in r]
        rec = [r["recovered_after_failed_promotion_s"] for r in ok if "recovered_after_failed_promotion_s" in r]
        rise = [r["epoch_after"] - r["epoch_before"] for r in ok]
        out.append(f"| {sc} | {mode} | {len(rs)} | {len(rs) - len(ok)} | {sum(r['acked'] for r in ok):,} "
                   f"| {sum(r['lost'] for r in ok)} | {fmt(pct(gaps, 50))} / {fmt(max(gaps, default=None))} "
                   f"| {sum(r['doubles'] for r in ok)} | {fmt(pct(take, 50))} / {fmt(max(take, default=None))} "
                   f"| {fmt(max(rec, default=None))} | {max(rise, default='-')} "
                   f"| {sum(r['survivor'] == r['victim'] for r in ok)} |")
    return "\n".join(out) + "\n"


def measure(a, rng):
    """Runs in rounds (one run of each scenario and mode per round, while it has runs left), so
    that an interrupted benchmark still has every combination about equally often."""
    plan = [(sc, mode, a.window_runs if sc == "degrade_window" else a.runs)
            for sc in a.only.split(",") for mode in a.modes.split(",")]
    rows = []
    for i in range(max(n for _, _, n in plan)):
        for sc, mode, n in plan:
            if i >= n:
                continue
            with tempfile.TemporaryDirectory(prefix=f"fence-{sc}-") as d:
                try:
                    row = fencing_scenarios.run(sc, mode, pathlib.Path(d), rng=rng)
                except Exception as e:  # a wait that timed out: recorded, and the table says so
                    traceback.print_exc()
                    row = {"scenario": sc, "mode": mode, "error": f"{type(e).__name__}: {e}"}
            rows.append(row)
            print(f"{sc} {mode} {i + 1}/{n}: {json.dumps(row)}", file=sys.stderr, flush=True)
            with open(a.out, "w") as f:
                json.dump(rows, f)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--window-runs", type=int, default=30, help="runs of the degrade window")
    ap.add_argument("--only", default=",".join(fencing_scenarios.SCENARIOS))
    ap.add_argument("--modes", default="strict,degrade")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "fencing.json"))
    ap.add_argument("--doc", default=os.path.join(HERE, "..", "docs", "BENCHMARKS.md"))
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--render-only", metavar="COMMAND",
                    help="render the runs already in --out (an interrupted run), reporting COMMAND as what made them")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    if a.render_only:
        rows = json.load(open(a.out))
        command = a.render_only
    else:
        rows = measure(a, rng)
        command = "python bench/fencing.py " + " ".join(sys.argv[1:])
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "server", "supervisor", "client"],
                           capture_output=True, text=True, cwd=HERE).stdout.strip()
    section = (
        f"Command: `{command}` (zeo-rs {git}{' + uncommitted changes' if dirty else ''}), {os.cpu_count()} cores "
        "shared with other jobs. Each run is a fresh sidecar-mode pair in network namespaces "
        "(tests/e2e/fencepair.py: servers not children of their supervisors, etcd lease, no address mover, "
        "`--wait-for-supervisor --require-write-lease`, the fast lease profile of docs/FAILOVER.md: lease 2.5 s, "
        "renew deadline 1.6 s); zeo-load `--verify` and a Python ZODB writer listing both servers. Strict: "
        "`--sync-standbys 1`; degrade: `--sync-timeout 500ms`. \"No writable server\" is the longest stretch "
        "after the fault in which the watcher (both servers' `/status` every 20 ms) found neither writable; "
        "takeover is from the fault until the other server is a writable primary. Scenarios: "
        "tests/e2e/fencing_scenarios.py. \"Old primary serves again\": runs that ended with the fault's victim as "
        "the primary (the degrade window: its supervisor had put the standby's out-of-sync mark in the lease "
        "before the kill, so only the restarted old primary could serve).\n\n" + table(rows))
    print(section)
    splice(a.doc, section, "<!-- fencing:begin -->", "<!-- fencing:end -->", "## Fencing", "# Benchmarks\n")


if __name__ == "__main__":
    main()
