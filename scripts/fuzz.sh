#!/usr/bin/env bash
# Nightly fuzzing of the ICAP parser and encoder, and of multipart delivery: every property in test/fuzz with
# ICAPKIT_FUZZ_RUNS generated inputs (default 100 000), the whole run bounded by
# ICAPKIT_FUZZ_TIMEOUT seconds (default 3600). Prints the inputs and time of each property.
#
#   scripts/fuzz.sh                           # 100 000 inputs per property
#   ICAPKIT_FUZZ_RUNS=1000000 scripts/fuzz.sh # more
#   ICAPKIT_FUZZ_SEED=<seed> ICAPKIT_FUZZ_PATH=<path> scripts/fuzz.sh  # replay a reported failure
#
# The multipart differential property (test/fuzz/multipart.differential.test.ts) sends each input
# through five framework apps and five parsers, so it takes ICAPKIT_MULTIPART_FUZZ_RUNS inputs
# (default: ICAPKIT_FUZZ_RUNS / 50, that is 2 000 inputs, 10 000 uploads).
# (The fail-closed property of test/hardening takes ICAPKIT_FAIL_CLOSED_RUNS; the client-cannot-fail-open
# property, run here too, takes ICAPKIT_CLIENT_FAIL_OPEN_RUNS, default 2000 requests per framework; the
# client-pacing property takes ICAPKIT_PACING_RUNS, default 1000 paced uploads; the swallowed-refusal
# property takes ICAPKIT_SWALLOWED_RUNS, default 2000 requests per Express version.)
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${ICAPKIT_FUZZ_RUNS:-100000}"
multipart_runs="${ICAPKIT_MULTIPART_FUZZ_RUNS:-$(( (${runs//_/} + 49) / 50 ))}"
limit="${ICAPKIT_FUZZ_TIMEOUT:-3600}"
report="$(mktemp -t icapkit-fuzz.XXXXXX)"
trap 'rm -f "$report"' EXIT

echo "fuzz: ${runs} inputs per property (multipart differential: ${multipart_runs}), at most ${limit} s"
start=$(date +%s)
status=0
ICAPKIT_FUZZ_RUNS="$runs" ICAPKIT_MULTIPART_FUZZ_RUNS="$multipart_runs" ICAPKIT_FUZZ_REPORT="$report" \
  ICAPKIT_CLIENT_FAIL_OPEN_RUNS="${ICAPKIT_CLIENT_FAIL_OPEN_RUNS:-2000}" ICAPKIT_PACING_RUNS="${ICAPKIT_PACING_RUNS:-1000}" \
  ICAPKIT_SWALLOWED_RUNS="${ICAPKIT_SWALLOWED_RUNS:-2000}" \
  timeout --kill-after=30 "$limit" npx vitest run test/fuzz test/hardening/client-cannot-fail-open.property.test.ts \
  test/hardening/client-pacing.property.test.ts test/hardening/refusal-swallowed.property.test.ts || status=$?
elapsed=$(($(date +%s) - start))

node - "$report" "$elapsed" "$status" <<'JS'
const [file, elapsed, status] = process.argv.slice(2);
const lines = require('node:fs').readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
let total = 0;
console.log(`\n${'property'.padEnd(61)}${'inputs'.padStart(10)}${'seconds'.padStart(10)}  result`);
for (const l of lines) {
  total += l.runs;
  console.log(`${l.property.padEnd(61)}${String(l.runs).padStart(10)}${(l.ms / 1000).toFixed(1).padStart(10)}  ${l.failed ? 'FAILED' : 'ok'}`);
}
const verdict = status === '0' ? 'passed' : status === '124' ? 'timed out' : 'failed';
console.log(`\n${lines.length} properties, ${total} inputs in ${elapsed} s: ${verdict}`);
JS
exit "$status"
