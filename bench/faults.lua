-- wrk script for bench/faults.py: bench/sessions.lua (every request carries the next session
-- cookie of a list), plus a pause of PAUSE_MS before each request, so that C connections send
-- about C * 1000 / (PAUSE_MS + latency) requests per second: a low, steady load next to a
-- fault instead of a saturating one.
--
--   wrk -tT -cC --latency -s bench/faults.lua URL -- COOKIE_FILE PAUSE_MS
--
-- Ends with the WRK_JSON line of bench/report.lua (p50/p99 in microseconds, error counts).

dofile("bench/sessions.lua")

local pause = 0
local read_cookies = init

function init(args)
  pause = tonumber(args[2] or "0") or 0
  read_cookies(args)
end

function delay()
  return pause
end
