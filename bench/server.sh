#!/usr/bin/env bash
# Server benchmark, side by side in one run: the same Python ZEO client workload (bench/server_load.py:
# ClientStorage + ZODB.DB in 1, 2 and 8 client processes) against the Python ZEO server (runzeo) and
# against zeo-server, taking turns. Saves one JSON document per server under bench/out/ and renders
# the table (bench/render_server.py).
#
# usage: bench/server.sh [--quick]
#
#   --quick  smoke run (2 s per workload, ~1.2 min); the table goes to bench/out/server-quick.md only.
#   Without it (full run: 2 rounds x 7.5 s per workload, ~8 min), the table also replaces the "Server (ZEO
#   protocol)" section of docs/BENCHMARKS.md (between <!-- server:begin --> and <!-- server:end -->).
#
# Environment:
#   ZEORS_BENCH_DIR    where the servers' data directories go (default bench/out/tmp). Must be a
#                      real disk: on tmpfs, fsync costs nothing and commit numbers mean nothing.
#
# zeo-server is always the release build of the working tree (target/release/zeo-server).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

quick=()
case "${1:-}" in
  --quick) quick=(--quick) ;;
  "") ;;
  *) echo "usage: bench/server.sh [--quick]" >&2; exit 2 ;;
esac

out="$repo/bench/out"
dir="${ZEORS_BENCH_DIR:-$out/tmp}"
mkdir -p "$out" "$dir"
fstype="$(findmnt -no FSTYPE -T "$dir" 2>/dev/null || stat -f -c %T "$dir")"
echo "server.sh: server data directories in $dir ($fstype)" >&2
if [[ $fstype == tmpfs || $fstype == ramfs ]]; then
  echo "server.sh: WARNING: $dir is $fstype: fsync is free there, commit numbers are meaningless" >&2
fi

echo "server.sh: building zeo-server (release)" >&2
cargo build --release -p zeo-server --bin zeo-server
export ZEORS_SERVER_BIN="$repo/target/release/zeo-server"
scripts/setup-venv >&2

suffix="${quick:+-quick}"
py_json="$out/server-py$suffix.json"
rs_json="$out/server-rs$suffix.json"

.venv/bin/python bench/server_load.py "${quick[@]}" --dir "$dir" --out-py "$py_json" --out-rs "$rs_json"

git="$(git rev-parse --short HEAD 2>/dev/null || true)"
if [[ -n $git && -n "$(git status --porcelain -- server proto 2>/dev/null)" ]]; then
  git="$git + uncommitted changes"
fi
render=(.venv/bin/python bench/render_server.py "$py_json" "$rs_json"
        --command "bench/server.sh${quick:+ --quick}" --git "$git")
if [[ ${#quick[@]} -gt 0 ]]; then
  "${render[@]}" --out "$out/server-quick.md"
  cat "$out/server-quick.md"
else
  "${render[@]}" --out "$out/server.md" --doc docs/BENCHMARKS.md
  cat "$out/server.md"
  echo "server.sh: updated docs/BENCHMARKS.md" >&2
fi
