-- Request generator for bench/bench.py (wrk 4.x, LuaJIT).
--
-- Every scenario runs through this same script, so the load generator does the same work
-- per request whether or not a key is sent. Settings come from the environment:
--   BENCH_KEYS        number of distinct API keys to rotate through; 0 = send no key
--   BENCH_KEY_FORMAT  string.format pattern for key i (0-based), e.g. "hk_bench_%04d"
--   BENCH_OUT         file that done() writes its JSON summary to
--   BENCH_DELAY_MS    if > 0, each connection waits this long before each request: a paced,
--                     below-capacity load for latency (otherwise wrk saturates the target)
--
-- Keys rotate in order (key 0, 1, 2, ...), so with N keys and C connections no two
-- requests in flight share a key while C < N: a cache miss is never hidden by the
-- filter coalescing concurrent callouts for one key.

local nkeys = tonumber(os.getenv("BENCH_KEYS") or "0")
local key_format = os.getenv("BENCH_KEY_FORMAT") or "hk_bench_%04d"

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")

local threads = {}
local prepared = {}
local next_index = 0

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  local count = math.max(nkeys, 1)
  for i = 0, count - 1 do
    local headers = {}
    for name, value in pairs(wrk.headers) do
      headers[name] = value
    end
    if nkeys > 0 then
      headers["Authorization"] = "Bearer " .. string.format(key_format, i)
    end
    prepared[i + 1] = wrk.format(nil, nil, headers)
  end
  -- Threads start at different keys (bench.py uses one thread; this keeps -t N honest).
  next_index = ((thread_index or 0) * 7919) % count
end

function request()
  next_index = next_index % #prepared + 1
  return prepared[next_index]
end

if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local path = os.getenv("BENCH_OUT")
  if not path then
    return
  end
  local e = summary.errors
  local f = assert(io.open(path, "w"))
  f:write(string.format(
    '{"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "stdev": %.1f, "max": %d, ' ..
    '"p50": %d, "p90": %d, "p99": %d, "p99_9": %d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
  f:close()
end
