#!/usr/bin/env bash
# zeo-app benchmark: HTTP requests per second through 1 and 3 app replicas against one zeo-server
# (release builds), reads only and mixed (20% writes), driven by zeo-load (one per replica, the
# same total concurrency). Results: bench/out/app.md and, without --quick, the "Client" section's
# app table in docs/BENCHMARKS.md (between <!-- app:begin --> and <!-- app:end -->).
#
# usage: bench/app.sh [--quick]     (--quick: 3 s per run instead of 10 s)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
quick=""
case "${1:-}" in --quick) quick=1 ;; "") ;; *) echo "usage: bench/app.sh [--quick]" >&2; exit 2 ;; esac
secs=$([[ -n $quick ]] && echo 3 || echo 10)
out="$repo/bench/out"
dir="${ZEORS_BENCH_DIR:-$out/tmp}/app"
rm -rf "$dir" && mkdir -p "$dir" "$out"
cargo build --release -p zeo-server -p zeo-app -p zeo-load --bins
bin=target/release
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
wait_ready() { for _ in $(seq 200); do [[ -f $1 ]] && return; sleep 0.05; done; echo "no $1" >&2; exit 1; }
listen_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['listen'])" "$1"; }

$bin/zeo-server --path "$dir/Data.fs" --listen 127.0.0.1:0 --ready-file "$dir/server.ready" 2>"$dir/server.log" &
pids+=($!)
wait_ready "$dir/server.ready"
zeo="$(listen_of "$dir/server.ready")"
apps=()
for i in 1 2 3; do
  $bin/zeo-app --listen 127.0.0.1:0 --storage "$zeo" --ready-file "$dir/app$i.ready" 2>"$dir/app$i.log" &
  pids+=($!)
  wait_ready "$dir/app$i.ready"
  apps+=("http://$(listen_of "$dir/app$i.ready")")
done

total_concurrency=12
: > "$dir/results.tsv"
for mix in 0 0.2; do
  for replicas in 1 3; do
    per=$((total_concurrency / replicas))
    jsons=()
    loads=()
    for i in $(seq 0 $((replicas - 1))); do
      j="$dir/load-$mix-$replicas-$i.json"
      jsons+=("$j")
      $bin/zeo-load --target "${apps[$i]}" --duration "${secs}s" --concurrency "$per" --write-ratio "$mix" \
        --objects 200 --json "$j" --progress-interval 1h >"$j.txt" 2>&1 &
      loads+=($!)
    done
    wait "${loads[@]}"
    python3 - "$mix" "$replicas" "${jsons[@]}" >> "$dir/results.tsv" <<'PY'
import json, sys
mix, replicas, files = sys.argv[1], sys.argv[2], sys.argv[3:]
rs = [json.load(open(f)) for f in files]
ops = sum(r["throughput_ops_s"] for r in rs)
failed = sum(r["failed"] for r in rs)
p99 = max((r["reads"] or {}).get("p99_ms") or 0 for r in rs)
wp99 = max(((r.get("writes") or {}).get("p99_ms") or 0) for r in rs)
print(f"{mix}\t{replicas}\t{ops:.0f}\t{p99:.2f}\t{wp99:.2f}\t{failed}")
PY
    echo "mix=$mix replicas=$replicas: $(tail -1 "$dir/results.tsv")" >&2
  done
done
git="$(git rev-parse --short HEAD 2>/dev/null || true)"
[[ -z "$(git status --porcelain -- client server proto 2>/dev/null)" ]] || git="$git + uncommitted changes"
md="$out/app${quick:+-quick}.md"
{
  echo "Command: \`bench/app.sh${quick:+ --quick}\` (zeo-rs $git), $(nproc) cores: zeo-server, three zeo-app"
  echo "replicas and the zeo-load processes all share them; ${secs} s per run, ${total_concurrency} requests in flight in total."
  echo
  echo "| workload | app replicas | requests/s | read p99 (ms) | write p99 (ms) | failed |"
  echo "|---|---|---|---|---|---|"
  while IFS=$'\t' read -r mix replicas ops p99 wp99 failed; do
    name=$([[ $mix == 0 ]] && echo "reads" || echo "mixed (20% writes)")
    echo "| $name | $replicas | $ops | $p99 | $([[ $mix == 0 ]] && echo - || echo "$wp99") | $failed |"
  done < "$dir/results.tsv"
} > "$md"
if [[ -z $quick ]]; then
  python3 - "$md" <<'PY'
import sys
sys.path.insert(0, "bench")
from benchdoc import splice
splice("docs/BENCHMARKS.md", open(sys.argv[1]).read(), "<!-- app:begin -->", "<!-- app:end -->",
       "## Client", "# Benchmarks\n")
PY
fi
cat "$md"
