# scripts/test's suite runner (bash, sourced): runs suites without stopping at a failure, counts
# each one's tests from its runner's own summary lines, prints the table; and the CPU load of
# --under-load.
# shellcheck shell=bash

SUITE_LOGS="$(mktemp -d "${TMPDIR:-/tmp}/zeors-test.XXXXXX")"
SUITE_NAMES=() SUITE_RESULTS=() SUITE_PASSED=() SUITE_FAILED=() SUITE_SKIPPED=() SUITE_SECONDS=()
SKIPPED_SUITES=()

banner() { printf '\n==================== %s ====================\n' "$*"; }

# Prints "passed failed skipped" from a log: cargo's `test result:` lines, or pytest's closing
# lines ("3 passed, 1 skipped in 2.1s"), summed over every run in the log.
_count_tests() {
  local kind=$1 log=$2
  case $kind in
    cargo)
      awk '/^test result: /{
             for (i = 1; i <= NF; i++) {
               n = $i + 0; w = $(i + 1); sub(/[;,.]$/, "", w)
               if (w == "passed") p += n; else if (w == "failed") f += n; else if (w == "ignored") s += n
             }
           } END { printf "%d %d %d\n", p, f, s }' "$log"
      ;;
    pytest)
      awk '/[0-9]+ (passed|failed|skipped|errors?)/ && / in [0-9.]+s/ {
             gsub(/[=,]/, " ")
             for (i = 1; i < NF; i++) {
               if ($i !~ /^[0-9]+$/) continue
               n = $i + 0; w = $(i + 1)
               if (w == "passed" || w == "xpassed") p += n
               else if (w == "failed" || w == "error" || w == "errors") f += n
               else if (w == "skipped" || w == "xfailed") s += n
             }
           } END { printf "%d %d %d\n", p, f, s }' "$log"
      ;;
    *) echo "0 0 0" ;;
  esac
}

# run_suite NAME KIND TITLE COMMAND...: KIND is cargo, pytest or check (one pass or fail).
# Never stops the script: the result is recorded for the summary.
run_suite() {
  local name=$1 kind=$2 title=$3
  shift 3
  banner "$title"
  local log="$SUITE_LOGS/$name.log" start=$SECONDS rc passed failed skipped
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  read -r passed failed skipped < <(_count_tests "$kind" "$log")
  if [[ $kind == check ]]; then
    if ((rc == 0)); then passed=1; else failed=1; fi
  fi
  # A failing command whose runner printed no failure (a build error, a crash) still counts one.
  ((rc != 0 && failed == 0)) && failed=1
  SUITE_NAMES+=("$name") SUITE_PASSED+=("$passed") SUITE_FAILED+=("$failed") SUITE_SKIPPED+=("$skipped")
  SUITE_SECONDS+=($((SECONDS - start)))
  if ((rc == 0)); then SUITE_RESULTS+=(ok); else SUITE_RESULTS+=("FAILED($rc)"); fi
  if ((rc == 0 && skipped > 0)); then
    echo "$name: $skipped test(s) skipped: see the runner's skip reasons above"
  fi
}

# skip_suite NAME WHY: a suite left out on purpose, listed in the summary.
skip_suite() {
  banner "skipped: $1 ($2)"
  SKIPPED_SUITES+=("$1 ($2)")
}

# Prints the table and the closing line; exits 1 if a suite failed.
summary() {
  local i total_p=0 total_f=0 total_s=0 failed=()
  banner "summary"
  printf '%-18s %-12s %8s %8s %8s %8s\n' suite result passed failed skipped seconds
  for i in "${!SUITE_NAMES[@]}"; do
    printf '%-18s %-12s %8s %8s %8s %8s\n' "${SUITE_NAMES[$i]}" "${SUITE_RESULTS[$i]}" \
      "${SUITE_PASSED[$i]}" "${SUITE_FAILED[$i]}" "${SUITE_SKIPPED[$i]}" "${SUITE_SECONDS[$i]}"
    total_p=$((total_p + SUITE_PASSED[i])) total_f=$((total_f + SUITE_FAILED[i]))
    total_s=$((total_s + SUITE_SKIPPED[i]))
    [[ ${SUITE_RESULTS[$i]} == ok ]] || failed+=("${SUITE_NAMES[$i]}")
  done
  echo
  if ((${#SKIPPED_SUITES[@]})); then
    local joined
    joined="$(printf '%s; ' "${SKIPPED_SUITES[@]}")"
    echo "${#SKIPPED_SUITES[@]} suites skipped: ${joined%; }"
  fi
  if ((${#failed[@]})); then
    echo "${#failed[@]} suites failed: ${failed[*]} (logs in $SUITE_LOGS)"
  elif ((${#SKIPPED_SUITES[@]} == 0 && total_s == 0)); then
    echo "every suite ran and passed"
  else
    echo "the suites that ran passed; not everything ran (see the skips above)"
  fi
  echo "total: $total_p passed, $total_f failed, $total_s skipped"
  stop_cpu_load
  if ((${#failed[@]})); then exit 1; fi
  rm -rf "$SUITE_LOGS"
  exit 0
}

# ---- --under-load: a CPU load on every core, killed on exit ----------------------------------

LOAD_PIDS_FILE="$SUITE_LOGS/load.pids"

start_cpu_load() {
  local cores i
  cores="$(nproc)"
  # Bounded like any other process this script starts: at most 3 hours, whatever happens.
  if command -v stress-ng >/dev/null; then
    echo "load: stress-ng --cpu $cores"
    stress-ng --cpu "$cores" --timeout 3h --quiet &
    echo "$!" >>"$LOAD_PIDS_FILE"
  else
    echo "load: $cores busy loops (no stress-ng)"
    for ((i = 0; i < cores; i++)); do
      timeout 3h bash -c 'while :; do :; done' &
      echo "$!" >>"$LOAD_PIDS_FILE"
    done
  fi
}

stop_cpu_load() {
  [[ -s $LOAD_PIDS_FILE ]] || return 0
  local pid
  # SIGTERM: timeout(1) and stress-ng pass it on to their workers.
  while read -r pid; do kill "$pid" 2>/dev/null; done <"$LOAD_PIDS_FILE"
  : >"$LOAD_PIDS_FILE"
}

trap stop_cpu_load EXIT
