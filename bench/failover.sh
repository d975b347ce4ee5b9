#!/usr/bin/env bash
# Failover benchmark, three scenarios of N runs each: SIGKILL of the primary's server and planned
# switchover on the local HA pair (two zeo-servers with sync replication under their supervisors,
# file lease, local service address, a client writing through it), and the primary host cut off
# in network namespaces (bench/failover_hostcut.py; needs root, etcd, arping). Reports the client-
# observed write gap (p50/p99/max) and the acknowledged writes lost, draws every run into
# docs/failover-gaps.svg, and replaces the "Failover" section of docs/BENCHMARKS.md (between
# <!-- failover:begin --> and <!-- failover:end -->).
#
# usage: bench/failover.sh [--runs N] [--only local|hostcut|fencing]   (default 30 per scenario, ~20 min)
# --only fencing runs bench/fencing.py instead (issue 12's fencing scenarios, N runs each; needs root
# and etcd) and updates its own section of docs/BENCHMARKS.md.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
runs=30
only=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    # Re-run one part; the other's results are taken from bench/out as its last run left them.
    --only) only="$2"; shift 2 ;;
    *) echo "usage: bench/failover.sh [--runs N] [--only local|hostcut|fencing]" >&2; exit 2 ;;
  esac
done
mkdir -p bench/out
if [[ $only == fencing ]]; then
  cargo build --release -p zeo-server -p zeo-supervisor -p zeo-load --bins
  [[ -x .venv/bin/python ]] || scripts/setup-venv
  exec env ZEORS_BIN_DIR="$repo/target/release" ZEORS_PYTHON="$repo/.venv/bin/python" \
    .venv/bin/python bench/fencing.py --runs "$runs" --out bench/out/fencing.json
fi
cargo build --release -p zeo-server -p zeo-supervisor -p zeo-load --bins --example failover_bench
if [[ $only != hostcut ]]; then
  target/release/examples/failover_bench --runs "$runs" --out bench/out/failover-local.md \
    --json bench/out/failover-local.json 2> bench/out/failover.log
fi
hostcut=""
if [[ $only == local ]]; then
  [[ -f bench/out/failover-hostcut.json ]] && hostcut=bench/out/failover-hostcut.json
elif [[ $(id -u) -eq 0 ]] && command -v etcd >/dev/null && command -v arping >/dev/null; then
  [[ -x .venv/bin/python ]] || scripts/setup-venv
  ZEORS_BIN_DIR="$repo/target/release" ZEORS_PYTHON="$repo/.venv/bin/python" \
    .venv/bin/python bench/failover_hostcut.py --runs "$runs" --out bench/out/failover-hostcut.json \
    2>> bench/out/failover.log
  hostcut=bench/out/failover-hostcut.json
else
  echo "failover.sh: host-cut scenario skipped (needs root, etcd and arping)" >&2
fi
md=bench/out/failover.md
git="$(git rev-parse --short HEAD 2>/dev/null || true)"
[[ -z "$(git status --porcelain -- server supervisor client 2>/dev/null)" ]] || git="$git + uncommitted changes"
{
  if [[ -n $only ]]; then
    echo "Command: \`bench/failover.sh --runs $runs --only $only\` (zeo-rs $git), $(nproc) cores; the other scenarios are from the previous full run."
  else
    echo "Command: \`bench/failover.sh --runs $runs\` (zeo-rs $git), $(nproc) cores, one run of everything."
  fi
  echo "SIGKILL and switchover: the local pair of \`scripts/ha-local\` (exec mode, file lease, local service"
  echo "address, strict sync replication; supervisors with \`--min-failover-interval 1s --stable-for 500ms\`); a"
  echo "zeo-client writes new objects through the service address without pause. Host cut: two server hosts,"
  echo "an etcd host and a client host in network namespaces, the virtual IP moved by gratuitous ARP, the"
  echo "primary host's link cut; fast lease profile and \`--sync-timeout 500ms\` (docs/FAILOVER.md), zeo-load"
  echo "\`--verify --dead-after 2s\` and a Python ZODB application writing through the virtual IP. The gap is the"
  echo "longest pause between two acknowledged writes around the failover."
  echo
  python3 bench/render_failover.py bench/out/failover-local.json $hostcut --svg docs/failover-gaps.svg
} > "$md"
python3 - "$md" <<'PY'
import sys
sys.path.insert(0, "bench")
from benchdoc import splice
splice("docs/BENCHMARKS.md", open(sys.argv[1]).read(), "<!-- failover:begin -->", "<!-- failover:end -->",
       "## Failover", "# Benchmarks\n")
PY
cat "$md"
