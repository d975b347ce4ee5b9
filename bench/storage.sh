#!/usr/bin/env bash
# Storage benchmark, side by side in one run: Python's FileStorage (bench/storage_py.py), then the
# zeo-rs engine (storage/examples/storage_bench.rs), same workloads, same directory, same big file
# for the open workload. Saves both JSON documents under bench/out/ and renders the table.
#
# usage: bench/storage.sh [--quick]
#
#   --quick  smoke run (a few seconds per side); the table goes to bench/out/storage-quick.md only.
#   Without it (full run: the first one builds a 1 GB file for `open`, ~1 min, cached), the table
#   also replaces the "Storage engine" section of docs/BENCHMARKS.md.
#
# Environment:
#   ZEORS_BENCH_DIR    where temporary storages go (default bench/out/tmp). Must be a real disk:
#                      on tmpfs, fsync costs nothing and tiny commits mean nothing.
#   ZEORS_BENCH_CACHE  where the big open-benchmark file is cached (default bench/out/cache).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

quick=()
case "${1:-}" in
  --quick) quick=(--quick) ;;
  "") ;;
  *) echo "usage: bench/storage.sh [--quick]" >&2; exit 2 ;;
esac

out="$repo/bench/out"
dir="${ZEORS_BENCH_DIR:-$out/tmp}"
mkdir -p "$out" "$dir"
fstype="$(findmnt -no FSTYPE -T "$dir" 2>/dev/null || stat -f -c %T "$dir")"
echo "storage.sh: temporary storages in $dir ($fstype)" >&2
if [[ $fstype == tmpfs || $fstype == ramfs ]]; then
  echo "storage.sh: WARNING: $dir is $fstype: fsync is free there, tiny-commit numbers are meaningless" >&2
fi

echo "storage.sh: building the zeo-rs side (release)" >&2
cargo build --release -p zeo-storage --example storage_bench
scripts/setup-venv >&2

suffix="${quick:+-quick}"
py_json="$out/storage-py$suffix.json"
rs_json="$out/storage-rs$suffix.json"

echo "storage.sh: Python side" >&2
.venv/bin/python bench/storage_py.py "${quick[@]}" --dir "$dir" --only tiny,bulk,load,open,fsync > "$py_json"

# The zeo-rs side opens the very file the Python side built (or reused) for `open`.
open_file="$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["results"]["open"]["file"])' "$py_json")"

echo "storage.sh: zeo-rs side" >&2
"${CARGO_TARGET_DIR:-target}/release/examples/storage_bench" "${quick[@]}" --dir "$dir" --open-file "$open_file" > "$rs_json"

git="$(git rev-parse --short HEAD 2>/dev/null || true)"
if [[ -n $git && -n "$(git status --porcelain -- server proto 2>/dev/null)" ]]; then
  git="$git + uncommitted changes"
fi
render=(.venv/bin/python bench/render_storage.py "$py_json" "$rs_json"
        --command "bench/storage.sh${quick:+ --quick}" --git "$git")
if [[ ${#quick[@]} -gt 0 ]]; then
  "${render[@]}" --out "$out/storage-quick.md"
  cat "$out/storage-quick.md"
else
  "${render[@]}" --out "$out/storage.md" --doc docs/BENCHMARKS.md
  cat "$out/storage.md"
  echo "storage.sh: updated docs/BENCHMARKS.md" >&2
fi
