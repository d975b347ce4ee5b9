#!/usr/bin/env bash
# Failover benchmark: a real local HA pair (two zeo-servers with sync replication under their
# zeo-supervisors, file lease, local service address) and a client writing through the service
# address; N SIGKILLs of the primary's server, then N planned switchovers. Reports the client-
# observed write gap (p50/p99/max) and the acknowledged writes lost, and replaces the "Failover"
# section of docs/BENCHMARKS.md (between <!-- failover:begin --> and <!-- failover:end -->).
#
# usage: bench/failover.sh [--runs N]     (default 30 per scenario, ~5 min)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
runs=30
[[ "${1:-}" == --runs ]] && runs="$2"
mkdir -p bench/out
cargo build --release -p zeo-server -p zeo-supervisor --bins --example failover_bench
md=bench/out/failover.md
target/release/examples/failover_bench --runs "$runs" --out "$md.body" 2> bench/out/failover.log
git="$(git rev-parse --short HEAD 2>/dev/null || true)"
[[ -z "$(git status --porcelain -- server supervisor client 2>/dev/null)" ]] || git="$git + uncommitted changes"
{
  echo "Command: \`bench/failover.sh --runs $runs\` (zeo-rs $git), $(nproc) cores, the local pair of \`scripts/ha-local\`"
  echo "(exec mode, file lease, local service address; supervisors with \`--min-failover-interval 1s --stable-for 500ms\`)."
  echo "A zeo-client writes new objects through the service address without pause; the gap is the longest"
  echo "pause between two acknowledged writes from the event until the next one."
  echo
  cat "$md.body"
} > "$md"
python3 - "$md" <<'PY'
import sys
sys.path.insert(0, "bench")
from benchdoc import splice
splice("docs/BENCHMARKS.md", open(sys.argv[1]).read(), "<!-- failover:begin -->", "<!-- failover:end -->",
       "## Failover", "# Benchmarks\n")
PY
cat "$md"
