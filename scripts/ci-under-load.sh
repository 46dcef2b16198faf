#!/usr/bin/env bash
# Runs the test command N times while CPU burners keep the other core(s) busy, to find tests
# that only pass on an idle machine. Prints each run's result (and the names of the tests that
# failed in it) and ends with "N passed, N failed" counted over runs.
#
#   scripts/ci-under-load.sh                                  # `pnpm test`, 5 runs
#   scripts/ci-under-load.sh -n 3 -- npx vitest run test/hardening test/conformance
#
# Environment:
#   ICAPKIT_LOAD_RUNS     runs (default 5; -n overrides)
#   ICAPKIT_LOAD_PROCS    CPU burners (default: cores - 1, at least 1)
#   ICAPKIT_LOAD_SECONDS  the longest the burners live (default 3600): they also stop by
#                         themselves as soon as this script is gone, whatever ended it
#   ICAPKIT_RUN_TIMEOUT   seconds one run may take before it is killed (default 1800)
set -uo pipefail
cd "$(dirname "$0")/.."

runs="${ICAPKIT_LOAD_RUNS:-5}"
if [ "${1:-}" = "-n" ]; then
  runs="$2"
  shift 2
fi
[ "${1:-}" = "--" ] && shift
if [ "$#" -gt 0 ]; then cmd=("$@"); else cmd=(pnpm test); fi
case "$runs" in '' | *[!0-9]*) echo "runs must be a number (got '$runs')" >&2; exit 2 ;; esac

cores=$(nproc 2>/dev/null || echo 2)
procs="${ICAPKIT_LOAD_PROCS:-$((cores > 1 ? cores - 1 : 1))}"
lifetime="${ICAPKIT_LOAD_SECONDS:-3600}"
run_timeout="${ICAPKIT_RUN_TIMEOUT:-1800}"

work="$(mktemp -d -t icapkit-load.XXXXXX)"
burners=()
stop_burners() {
  for pid in "${burners[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${burners[@]}"; do wait "$pid" 2>/dev/null; done
  burners=()
}
trap 'stop_burners; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# One burner: spins in slices of 50 ms; stops at its deadline or once its parent (this script)
# is gone, so it never outlives the run even if this script is killed with SIGKILL.
start_burners() {
  for _ in $(seq 1 "$procs"); do
    node -e '
      const parent = Number(process.argv[1]);
      const end = Date.now() + Number(process.argv[2]) * 1000;
      const alive = () => { try { process.kill(parent, 0); return true; } catch { return false; } };
      let x = 0;
      const slice = () => {
        if (Date.now() > end || !alive()) process.exit(0);
        const until = Date.now() + 50;
        while (Date.now() < until) x = (x * 1103515245 + 12345) % 2147483648;
        setImmediate(slice);
      };
      slice();
    ' "$$" "$lifetime" &
    burners+=("$!")
  done
}

echo "ci-under-load: ${runs} run(s) of: ${cmd[*]}"
echo "ci-under-load: ${procs} CPU burner(s) on ${cores} core(s)"
passed_runs=0
failed_runs=0
for i in $(seq 1 "$runs"); do
  report="$work/run-$i.json"
  log="$work/run-$i.log"
  start_burners
  t0=$(date +%s)
  ICAPKIT_JSON_REPORT="$report" timeout --kill-after=30 "$run_timeout" "${cmd[@]}" >"$log" 2>&1
  status=$?
  elapsed=$(($(date +%s) - t0))
  stop_burners
  summary="exit $status"
  failures=""
  if [ -s "$report" ]; then
    summary=$(node -e '
      const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      console.log(`${r.numPassedTests} tests passed, ${r.numFailedTests} failed, ${r.numFailedTestSuites} file(s) failed`);
    ' "$report")
    failures=$(node -e '
      const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      for (const f of r.testResults) {
        const bad = f.assertionResults.filter((a) => a.status === "failed");
        if (bad.length === 0 && f.status === "failed") console.log(`    ${f.name}: ${(f.message || "failed").split("\n")[0]}`);
        for (const a of bad) console.log(`    ${a.fullName}`);
      }
    ' "$report")
  fi
  if [ "$status" -eq 0 ]; then
    passed_runs=$((passed_runs + 1))
    echo "run $i/$runs: passed (${summary}) in ${elapsed} s"
  else
    failed_runs=$((failed_runs + 1))
    echo "run $i/$runs: FAILED (${summary}) in ${elapsed} s"
    [ -n "$failures" ] && echo "$failures"
    [ -z "$failures" ] && tail -20 "$log" | sed 's/^/    /'
    [ -z "${kept:-}" ] && kept="$(mktemp -d -t icapkit-load-logs.XXXXXX)"
    cp "$log" "$kept/run-$i.log" && echo "    full output: $kept/run-$i.log"
  fi
done
echo "${passed_runs} passed, ${failed_runs} failed"
[ "$failed_runs" -eq 0 ]
