-- wrk script: POST the file named by BENCH_BODY with Content-Type BENCH_CT to BENCH_PATH,
-- and print one machine-readable RESULT line at the end.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.path = os.getenv("BENCH_PATH") or "/upload"
wrk.headers["Content-Type"] = os.getenv("BENCH_CT") or "application/octet-stream"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"durationUs":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50Us":%d,"p99Us":%d,"maxUs":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end

-- BENCH_DELAY_MS (a mean in ms, fractions allowed): each connection waits that long after an
-- answer before it sends its next request (paced load). wrk's timers count whole ms, so each
-- wait is the floor or the ceiling of the mean, drawn so that the waits average to it.
local delayMs = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delayMs ~= nil then
  math.randomseed(os.time() + math.floor((os.clock() * 1e6) % 1e6))
  local base = math.floor(delayMs)
  local frac = delayMs - base
  function delay()
    if math.random() < frac then return base + 1 end
    return base
  end
end
