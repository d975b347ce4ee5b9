#!/usr/bin/env bash
# Replication benchmark, side by side in one run: commit throughput and latency with no standby, an
# async standby and a sync standby, each standby over a plain-TCP link and over mutual TLS (modes
# take turns), the TLS cost on a lone writer's median commit, and the replication lag at 500
# commits/s (server/examples/replication_bench.rs, release build).
#
# usage: bench/replication.sh [--quick]
#
#   --quick  smoke run (2 s per run, ~1 min); the section goes to bench/out/replication-quick.md only.
#   Without it (8 s per run, 2 rounds, ~4 min) the section also replaces the "Replication" section of
#   docs/BENCHMARKS.md (between <!-- replication:begin --> and <!-- replication:end -->).
#
# Environment: ZEORS_BENCH_DIR, where the servers' data go (default bench/out/tmp; a real disk).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
quick=()
case "${1:-}" in
  --quick) quick=(--quick) ;;
  "") ;;
  *) echo "usage: bench/replication.sh [--quick]" >&2; exit 2 ;;
esac
out="$repo/bench/out"
dir="${ZEORS_BENCH_DIR:-$out/tmp}/replication"
mkdir -p "$out" "$dir"
cargo build --release -p zeo-server --bin zeo-server --example replication_bench
target="${CARGO_TARGET_DIR:-$repo/target}"
suffix="${quick:+-quick}"
md="$out/replication$suffix.md"
"$target/release/examples/replication_bench" "${quick[@]}" --server-bin "$target/release/zeo-server" \
  --dir "$dir" --out "$md" --json "$out/replication$suffix.json"
git="$(git rev-parse --short HEAD 2>/dev/null || true)"
if [[ -n $git && -n "$(git status --porcelain -- server proto client 2>/dev/null)" ]]; then
  git="$git + uncommitted changes"
fi
{
  echo "Command: \`bench/replication.sh${quick:+ --quick}\` (zeo-rs $git), $(nproc) cores, data on $(findmnt -no FSTYPE -T "$dir" 2>/dev/null || echo '?')."
  echo
  cat "$md"
} > "$md.tmp" && mv "$md.tmp" "$md"
if [[ ${#quick[@]} -eq 0 ]]; then
  python3 - "$md" <<'PY'
import sys
sys.path.insert(0, "bench")
from benchdoc import splice
section = open(sys.argv[1]).read()
splice("docs/BENCHMARKS.md", section, "<!-- replication:begin -->", "<!-- replication:end -->",
       "## Replication", "# Benchmarks\n")
PY
fi
cat "$md"
