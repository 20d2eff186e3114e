#!/usr/bin/env bash
# Runs the timing-sensitive test suites many times while the machine is
# busy (one busy loop per core competes with them for the CPU), and counts
# failures per test. A test that fails here fails for somebody's CI one day:
# find its cause rather than raising its timeout. The output of every
# failed run is kept in target/stress/.
#
#   scripts/stress.sh                                  # 20 runs of the default suites
#   RUNS=5 SUITES="streams security" scripts/stress.sh
#   LOAD=0 scripts/stress.sh                           # without the competing load
#   TEST_REDIS=cluster scripts/stress.sh               # the Redis suites on a cluster
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${RUNS:-20}
suites=${SUITES:-streams security moderation webhooks crowds authorship exactly_once interest}
load=${LOAD:-$(nproc)}
out=target/stress
mkdir -p "$out"

args=()
for suite in $suites; do args+=(--test "$suite"); done
# Built once; the runs use the binaries directly.
binaries=$(cargo test -p server --no-run "${args[@]}" 2>&1 |
  sed -n 's/.*Executable tests\/[a-z_]*\.rs (\(target\/debug\/deps\/[a-z_]*-[0-9a-f]*\)).*/\1/p')
[[ -n "$binaries" ]] || { echo "no test binaries built" >&2; exit 1; }

burners=()
stop_load() { for pid in "${burners[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_load EXIT
for _ in $(seq "$load"); do
  (while :; do :; done) &
  burners+=($!)
done
echo "stress: $runs runs of: $suites; $load busy loops competing for $(nproc) cores"

declare -A failures=()
failed_runs=0
started=$SECONDS
for run in $(seq "$runs"); do
  for binary in $binaries; do
    suite=$(basename "$binary" | sed 's/-[0-9a-f]*$//')
    log="$out/$suite.run$run.log"
    if (cd server && "../$binary") >"$log" 2>&1; then
      rm -f "$log"
      continue
    fi
    failed_runs=$((failed_runs + 1))
    while read -r name; do
      key="$suite::$name"
      failures[$key]=$(( ${failures[$key]:-0} + 1 ))
    done < <(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$log")
    echo "run $run: $suite failed (log: $log)"
  done
  echo "run $run of $runs done ($((SECONDS - started)) s)"
done

echo
echo "| test | failures in $runs runs |"
echo "|---|---|"
if ((${#failures[@]} == 0)); then
  echo "| (none) | 0 |"
fi
for key in "${!failures[@]}"; do
  echo "| $key | ${failures[$key]} |"
done
((failed_runs == 0))
