#!/usr/bin/env bash
# Measures a pool of buildkitd daemons on this machine and appends the
# results to bench/results.md: sticky routing against random choice on the
# 30-build workload, and the warm context transfer of the 575 MB context.
# Run as root after scripts/setup.sh.
#   scripts/bench-pool.sh [--no-record] [routing|warm]...
set -euo pipefail
cd "$(dirname "$0")/.."
record=1
tests=()
for a in "$@"; do
  case "$a" in
    --no-record) record=0 ;;
    routing) tests+=(measure_sticky_against_random_routing) ;;
    warm) tests+=(measure_warm_transfer_of_the_575_mb_context) ;;
    *) echo "error: unknown argument $a (expected --no-record, routing or warm)" >&2; exit 2 ;;
  esac
done
[ ${#tests[@]} -gt 0 ] || tests=(measure_sticky_against_random_routing measure_warm_transfer_of_the_575_mb_context)
out=$(mktemp /tmp/bkd-bench-pool.XXXXXX)
trap 'rm -f "$out"' EXIT
for t in "${tests[@]}"; do
  BKD_BENCH_OUT="$out" cargo test --release --locked --test pool -- --ignored --exact "$t" --nocapture
done
if [ "$record" = 1 ]; then
  cat "$out" >> bench/results.md
  echo "appended to bench/results.md"
fi
