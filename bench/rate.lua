-- wrk script for the half-load phase of bench/run: a rate-limited wrk (Debian ships wrk, not
-- wrk2), each connection pausing before each request.
--
--   wrk -tT -cC --latency -s bench/rate.lua URL -- MEAN_DELAY_MS PERIOD_MS SEED C_PER_THREAD
--
-- wrk calls delay() before every request on a connection (also before its first one) and
-- waits that many milliseconds, an integer (it truncates). A connection then sends one
-- request every delay + response time, so C connections send about C / (delay + latency)
-- requests per second. To get a mean delay that is not a whole number of milliseconds,
-- delay() returns floor(MEAN_DELAY_MS) or the next integer, at random, with the probability
-- that makes the mean right. bench/driver.py chooses MEAN_DELAY_MS and corrects it after
-- short calibration runs and between rounds (the response time and the lateness of wrk's
-- millisecond timers are not known beforehand).
--
-- The first delay of each connection is drawn uniformly in [0, PERIOD_MS] (PERIOD_MS = the
-- intended time between two requests on one connection), so the connections do not start in
-- step and the requests do not arrive in bursts of C.
--
-- wrk's latency is per request, from the request being written to its response: the delays
-- are not counted in it. Ends with one machine-readable line for bench/driver.py:
--
--   WRK_JSON {"requests":..,"duration_us":..,"p50_us":..,"p99_us":..,"p999_us":..,...}

local mean_delay, floor_delay, p_ceil, period
local spread_left = 0

local thread_counter = 0
function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_number", thread_counter)
end

function init(args)
  -- args[0] is the URL; ours follow the `--`.
  mean_delay = tonumber(args[1])
  period = tonumber(args[2])
  local seed = tonumber(args[3])
  local per_thread = tonumber(args[4])
  if mean_delay == nil or period == nil or seed == nil or per_thread == nil then
    error("rate.lua: pass MEAN_DELAY_MS PERIOD_MS SEED CONNECTIONS_PER_THREAD after --")
  end
  if mean_delay < 0 then
    mean_delay = 0
  end
  floor_delay = math.floor(mean_delay)
  p_ceil = mean_delay - floor_delay
  math.randomseed(seed + 7919 * (thread_number or 1))
  spread_left = per_thread
end

function delay()
  if spread_left > 0 then
    -- The first delay() of each of this thread's connections (they all connect at once,
    -- before any response can arrive).
    spread_left = spread_left - 1
    return math.floor(math.random() * (period + 1))
  end
  if math.random() < p_ceil then
    return floor_delay + 1
  end
  return floor_delay
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"stdev_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, latency.stdev))
end
