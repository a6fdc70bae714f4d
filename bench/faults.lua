-- wrk script for bench/faults.py: every request carries the next session cookie of a list
-- (as bench/sessions.lua), and each connection pauses PAUSE_MS before each request, so that
-- C connections send about C * 1000 / (PAUSE_MS + latency) requests per second: a low,
-- steady load next to a fault instead of a saturating one.
--
--   wrk -tT -cC --latency -s bench/faults.lua URL -- COOKIE_FILE PAUSE_MS
--
-- Ends with the WRK_JSON line of bench/report.lua (p50/p99 in microseconds, error counts).

dofile("bench/report.lua")

local cookies = {}
local next_index = 1
local pause = 0

local thread_counter = 0
function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_number", thread_counter)
end

function init(args)
  local path = args[1]
  pause = tonumber(args[2] or "0") or 0
  if path == nil then
    error("faults.lua: pass COOKIE_FILE PAUSE_MS after --")
  end
  for line in io.lines(path) do
    if #line > 0 then
      cookies[#cookies + 1] = line
    end
  end
  if #cookies == 0 then
    error("faults.lua: no cookies in " .. path)
  end
  next_index = ((thread_number or 1) - 1) * 7919 % #cookies + 1
end

function delay()
  return pause
end

function request()
  local cookie = cookies[next_index]
  next_index = next_index % #cookies + 1
  return wrk.format(nil, nil, { ["Cookie"] = cookie })
end
