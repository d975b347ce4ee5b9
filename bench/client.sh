#!/usr/bin/env bash
# Client benchmark, side by side in one run: zeo-client (Rust) and ZEO's ClientStorage (Python)
# against the same zeo-server (release), taking turns: cold loads per second, cache-hit loads,
# tiny commits per second (client/examples/client_bench.rs, bench/client_py.py).
#
# usage: bench/client.sh [--quick]
#   --quick: 1 round, small counts, output in bench/out/client-quick.md only. Without it: 3 rounds,
#   and the "Client" section of docs/BENCHMARKS.md (between <!-- client:begin --> and
#   <!-- client:end -->) is replaced.
# Environment: ZEORS_BENCH_DIR, where the server's data go (default bench/out/tmp; a real disk).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
quick=""
case "${1:-}" in --quick) quick=--quick ;; "") ;; *) echo "usage: bench/client.sh [--quick]" >&2; exit 2 ;; esac
out="$repo/bench/out"
dir="${ZEORS_BENCH_DIR:-$out/tmp}/client"
rm -rf "$dir" && mkdir -p "$dir" "$out"
cargo build --release -p zeo-server --bin zeo-server -p zeo-client --example client_bench
scripts/setup-venv >&2
py=.venv/bin/python
target/release/zeo-server --path "$dir/Data.fs" --listen 127.0.0.1:0 --ready-file "$dir/ready" 2>"$dir/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do [[ -f $dir/ready ]] && break; sleep 0.1; done
addr="$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['listen'])" "$dir/ready")"
objects=$([[ -n $quick ]] && echo 1000 || echo 5000)
$py bench/client_py.py setup "$addr" "$dir/oids" "$objects"
rounds=$([[ -n $quick ]] && echo 1 || echo 3)
: > "$dir/results.jsonl"
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  echo "{\"client\": \"python\", \"r\": $($py bench/client_py.py run "$addr" "$dir/oids" $quick)}" >> "$dir/results.jsonl"
  echo "{\"client\": \"rust\", \"r\": $(target/release/examples/client_bench "$addr" "$dir/oids" $quick)}" >> "$dir/results.jsonl"
done
git="$(git rev-parse --short HEAD 2>/dev/null || true)"
[[ -z "$(git status --porcelain -- client proto server 2>/dev/null)" ]] || git="$git + uncommitted changes"
md="$out/client${quick:+-quick}.md"
$py - "$dir/results.jsonl" "$md" "$git" "$quick" "$objects" "$rounds" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
git, quick, objects, rounds = sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
med = lambda c, k: statistics.median(r["r"][k] for r in rows if r["client"] == c)
lines = [
    f"Command: `bench/client.sh{' --quick' if quick else ''}` (zeo-rs {git}); one client process each, "
    f"sequential calls, {objects} objects of 300 bytes, against the same zeo-server (release); "
    f"medians of {rounds} round(s), clients taking turns.", "",
    "| measure | zeo-client (Rust) | ClientStorage (Python ZEO 6.2) | ratio |",
    "|---|---|---|---|",
]
for key, label, better_high in [("cold_loads_per_s", "cold loads per second", True),
                                 ("cache_hit_ns", "cache-hit load (ns)", False),
                                 ("commits_per_s", "tiny commits per second", True)]:
    rs, py = med("rust", key), med("python", key)
    ratio = rs / py if better_high else py / rs
    lines.append(f"| {label} | {rs:,.0f} | {py:,.0f} | {ratio:.1f}x |")
text = "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(text)
if not quick:
    sys.path.insert(0, "bench")
    from benchdoc import splice
    splice("docs/BENCHMARKS.md", text, "<!-- client:begin -->", "<!-- client:end -->", "## Client", "# Benchmarks\n")
print(text)
PY
