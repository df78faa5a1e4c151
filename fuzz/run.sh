#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each, one after another (one core: the machine is
# shared), and writes a table of executions per target to fuzz/artifacts/summary.txt. Exits
# non-zero if any target crashed, hung (-timeout) or broke a property; the input is kept in
# fuzz/artifacts/<target>/ and the run's log in fuzz/artifacts/<target>.log.
#
# usage: fuzz/run.sh [SECONDS]   (after fuzz/seed.sh; cargo-fuzz on PATH)
set -uo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
# cargo-fuzz passes nightly-only flags (-Zsanitizer, ...); stable 1.95 takes them with this.
export RUSTC_BOOTSTRAP=1
mkdir -p artifacts
summary=artifacts/summary.txt
failed=0
printf '%-17s %12s %9s %7s %7s  %s\n' target execs "execs/s" cov corpus result | tee "$summary"
for target in $(cargo fuzz list); do
  log=artifacts/$target.log
  mkdir -p "corpus/$target"
  cargo fuzz run "$target" -- -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1
  status=$?
  stat() { grep -o "stat::$1: *[0-9]*" "$log" | tail -1 | grep -o '[0-9]*$' || echo '?'; }
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo '?')
  result=ok
  if [[ $status -ne 0 ]]; then
    result="FAILED (exit $status, see fuzz/$log)"
    failed=1
  fi
  printf '%-17s %12s %9s %7s %7s  %s\n' "$target" "$(stat number_of_executed_units)" \
    "$(stat average_exec_per_sec)" "$cov" "$(find "corpus/$target" -type f | wc -l)" "$result" \
    | tee -a "$summary"
done
exit $failed
