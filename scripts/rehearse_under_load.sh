#!/usr/bin/env bash
# Rehearse the README's test command on a busy machine: run it ROUNDS times (default 2) while
# busy loops keep every core occupied (one per core by default), and write down how each round
# ended. Not part of CI; rerun it after any change to timing-sensitive tests.
#
#   bash scripts/rehearse_under_load.sh [ROUNDS] [-- ARGS FOR scripts/test.sh / pytest]
#
# LLMSPELL_REHEARSAL_HOGS sets the number of busy loops; logs go to .rehearsal/ (one per round,
# plus summary.txt). The busy loops are stopped on every exit, Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=2
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
    rounds=$1
    shift
fi
[ "${1:-}" = "--" ] && shift
hogs=${LLMSPELL_REHEARSAL_HOGS:-$(nproc)}
logs=.rehearsal
mkdir -p "$logs"
summary="$logs/summary.txt"

hog_pids=()
stop_hogs() {
    if [ ${#hog_pids[@]} -gt 0 ]; then
        kill "${hog_pids[@]}" 2>/dev/null || true
        wait "${hog_pids[@]}" 2>/dev/null || true
    fi
    hog_pids=()
}
trap stop_hogs EXIT
trap 'stop_hogs; exit 130' INT
trap 'stop_hogs; exit 143' TERM

# Set up once before the clock starts, so that no round measures the llama-cpp-python build.
bash scripts/setup.sh test

echo "rehearsal on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $hogs busy loops," \
    "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')" | tee -a "$summary"
failed=0
for round in $(seq 1 "$rounds"); do
    for _ in $(seq 1 "$hogs"); do
        python3 -c "while True: pass" &
        hog_pids+=($!)
    done
    log="$logs/round-$round.log"
    began=$(date +%s)
    status=0
    bash scripts/test.sh -p no:cacheprovider "$@" >"$log" 2>&1 || status=$?
    seconds=$(($(date +%s) - began))
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    stop_hogs
    result=$(grep -E '(passed|failed|error)' "$log" | tail -n 1 || true)
    echo "round $round: exit $status in ${seconds} s, load average $load: $result" | tee -a "$summary"
    grep -E '^(FAILED|ERROR) ' "$log" | tee -a "$summary" || true
    [ "$status" -eq 0 ] || failed=1
done
exit "$failed"
