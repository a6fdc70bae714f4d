-- wrk script: at the end of a run, print one machine-readable line for bench/driver.py.
--
--   WRK_JSON {"requests":..,"duration_us":..,"p50_us":..,"p99_us":..,...}
--
-- Latencies are wrk's (microseconds, per request, connection-level). `status` counts answers
-- of 400 and above: bench/driver.py checks beforehand that every target answers 200, because
-- wrk would count a 302 as a success.

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
