#!/usr/bin/env bash
# Store-conflict benchmark (issue 14): N Python ZEO clients incrementing Lengths and inserting into one
# OOBTree, against runzeo, zeo-server (server-side resolution, its default) and zeo-server
# --client-conflict-resolution (the behaviour before it), one after the other in one run
# (bench/conflicts.py). Counts the conflicts that reached clients, those clients resolved themselves,
# the transactions that exhausted their retries, and throughput.
#
# usage: bench/conflicts.sh [--doc] [conflicts.py options: --clients N --seconds S --lengths K --attempts A]
#
#   --doc  also replace the "Store conflicts" section of docs/BENCHMARKS.md (between
#          <!-- conflicts:begin --> and <!-- conflicts:end -->) with the table.
#   Bounded: --seconds (default 10) of load per server, every wait with a deadline (~1 min in all).
#
# Environment: ZEORS_BENCH_DIR, where the servers' data directories go (default bench/out/tmp; a real
# disk, not tmpfs, or fsync costs nothing).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

doc=0
if [[ ${1:-} == --doc ]]; then doc=1; shift; fi

out="$repo/bench/out"
dir="${ZEORS_BENCH_DIR:-$out/tmp}"
mkdir -p "$out" "$dir"

echo "conflicts.sh: building zeo-server (release)" >&2
cargo build --release -p zeo-server --bin zeo-server
export ZEORS_SERVER_BIN="$repo/target/release/zeo-server"
scripts/setup-venv >&2

git="$(git rev-parse --short HEAD 2>/dev/null || true)"
if [[ -n $git && -n "$(git status --porcelain -- server storage resolve 2>/dev/null)" ]]; then
  git="$git + uncommitted changes"
fi
started=$SECONDS
.venv/bin/python bench/conflicts.py --dir "$dir" --json "$out/conflicts.json" "$@" > "$out/conflicts-table.md"
{
  echo "Command: \`bench/conflicts.sh${*:+ $*}\` (zeo-rs $git, $((SECONDS - started)) s; raw JSON in \`bench/out/conflicts.json\`), 2 shared cores."
  echo
  cat "$out/conflicts-table.md"
} > "$out/conflicts.md"
cat "$out/conflicts.md"

if [[ $doc == 1 ]]; then
  .venv/bin/python - "$out/conflicts.md" docs/BENCHMARKS.md <<'PY'
import sys
table, doc = open(sys.argv[1]).read(), sys.argv[2]
text = open(doc).read()
begin, end = "<!-- conflicts:begin -->", "<!-- conflicts:end -->"
if begin not in text:
    text = text.rstrip("\n") + f"\n\n## Store conflicts\n\n{begin}\n{end}\n"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc, "w").write(f"{head}{begin}\n{table}{end}{tail}")
PY
  echo "conflicts.sh: updated docs/BENCHMARKS.md" >&2
fi
