#!/usr/bin/env bash
# Scale benchmark, side by side in one run: a 10-million-object Data.fs (generated once with the
# zeo-rs engine's commit path, cached out of git), then for the zeo-rs engine
# (storage/examples/scale_bench.rs) and Python's FileStorage (bench/scale_py.py), each measurement
# in a fresh process: open with and without the index, RSS after open and after a pass of random
# first loads, load p50/p99, pack (no GC, on a copy) time and peak RSS.
#
# usage: bench/scale.sh [--objects N]      (default 10000000; the table goes to bench/out/scale.md,
#                                           and for the default size into docs/BENCHMARKS.md)
#
# Takes about 15 minutes on two cores at 10M objects the first time (generation ~1 min, Python's
# first scan to write its Data.fs.index ~2 min, Python's pack several minutes), less when cached.
# Disk: the file (~1.6 GB at 10M objects) plus one copy at a time for pack.
#
# Environment:
#   ZEORS_BENCH_DIR    where pack copies go (default bench/out/tmp); a real disk.
#   ZEORS_BENCH_CACHE  where the generated file is kept (default bench/out/cache).
#   ZEORS_PYTHON       the Python with ZODB (default .venv/bin/python, made by scripts/setup-venv).
#   ZEORS_SCALE_TIMEOUT seconds allowed per measurement (default 1800).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

objects=10000000
case "${1:-}" in
  --objects) objects="${2:?--objects needs a number}" ;;
  "") ;;
  *) echo "usage: bench/scale.sh [--objects N]" >&2; exit 2 ;;
esac
updates=$((objects / 10))
out="$repo/bench/out"
dir="${ZEORS_BENCH_DIR:-$out/tmp}"
cache="${ZEORS_BENCH_CACHE:-$out/cache}"
limit="${ZEORS_SCALE_TIMEOUT:-1800}"
mkdir -p "$out" "$dir" "$cache"

if [[ -z ${ZEORS_PYTHON:-} ]]; then
  scripts/setup-venv >&2
  ZEORS_PYTHON="$repo/.venv/bin/python"
fi
py="$ZEORS_PYTHON"

echo "scale.sh: building the zeo-rs side (release)" >&2
cargo build --release -p zeo-storage --example scale_bench
target="${CARGO_TARGET_DIR:-$repo/target}"
rs="$target/release/examples/scale_bench"

file="$cache/scale-${objects}.fs"
json="$out/scale.json"
: > "$json.tmp"
record() { # record SIDE WHAT JSON
  printf '{"side": "%s", "what": "%s", "result": %s}\n' "$1" "$2" "$3" >> "$json.tmp"
  echo "scale.sh: $1 $2: $3" >&2
}
run() { # run SIDE WHAT CMD...: one measurement, bounded
  local side="$1" what="$2"; shift 2
  local res
  if res="$(timeout "$limit" "$@")"; then record "$side" "$what" "$res"
  else record "$side" "$what" "{\"failed\": \"exit $? (timeout is ${limit}s)\"}"; fi
}

if [[ ! -f $file.done ]]; then
  rm -f "$file" "$file".*
  echo "scale.sh: generating $file ($objects objects + $updates revisions)" >&2
  run rs generate "$rs" generate --out "$file" --objects "$objects" --updates "$updates"
  # Python's index, written by its first read-write open (a full scan) and close.
  run py first-open-rw "$py" bench/scale_py.py --file "$file" --phase index
  rm -f "$file.lock" "$file.tmp" "$file.rsoids"
  # How the file was made, for the table of later runs that reuse it.
  cp "$json.tmp" "$file.made.jsonl"
  touch "$file.done"
else
  echo "scale.sh: reusing $file" >&2
  cat "$file.made.jsonl" >> "$json.tmp" 2>/dev/null || true
fi

# The zeo-rs snapshot in this build's layout (the file itself is not changed).
run rs write-index "$rs" phase --phase index --file "$file"
rm -f "$file.lock"

# Without an index: a symlink in a directory that has none.
bare="$(mktemp -d "$dir/scale-bare.XXXXXX")"
ln -s "$file" "$bare/Data.fs"
for side in rs py; do
  if [[ $side == rs ]]; then cmd=("$rs" phase --phase); else cmd=("$py" bench/scale_py.py --phase); fi
  run "$side" open-with-index "${cmd[@]}" open --file "$file"
  run "$side" open-without-index "${cmd[@]}" open --file "$bare/Data.fs"
  run "$side" reads "${cmd[@]}" reads --file "$file" --reads 100000
  # Pack on a copy (with this side's own index), removed afterwards.
  copy="$(mktemp -d "$dir/scale-pack.XXXXXX")"
  cp --reflink=auto "$file" "$copy/Data.fs"
  if [[ $side == rs ]]; then cp "$file.rsindex" "$copy/Data.fs.rsindex"; else cp "$file.index" "$copy/Data.fs.index"; fi
  run "$side" pack "${cmd[@]}" pack --file "$copy/Data.fs"
  rm -rf "$copy"
done
rm -rf "$bare"
mv "$json.tmp" "$json"

git="$(git rev-parse --short HEAD 2>/dev/null || true)"
if [[ -n $git && -n "$(git status --porcelain -- storage 2>/dev/null)" ]]; then
  git="$git + uncommitted changes"
fi
render=("$py" bench/render_scale.py "$json" --file "$file" --command "bench/scale.sh${1:+ $*}" --git "$git"
        --out "$out/scale.md")
if [[ $objects == 10000000 ]]; then render+=(--doc docs/BENCHMARKS.md); fi
"${render[@]}"
cat "$out/scale.md"
