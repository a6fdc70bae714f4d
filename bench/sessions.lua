-- wrk script for the soak: every request carries the next session cookie of a list, so all
-- the sessions signed in beforehand stay in use (and in linkgate's session cache).
--
--   wrk ... -s bench/sessions.lua URL -- COOKIE_FILE
--
-- COOKIE_FILE has one `name=value` cookie per line. Each wrk thread starts at a different
-- place in the list. Ends with the same WRK_JSON line as bench/report.lua.

dofile("bench/report.lua")

local cookies = {}
local next_index = 1

local thread_counter = 0
function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_number", thread_counter)
end

function init(args)
  local path = args[1]
  if path == nil then
    error("sessions.lua: pass the cookie file after --")
  end
  for line in io.lines(path) do
    if #line > 0 then
      cookies[#cookies + 1] = line
    end
  end
  if #cookies == 0 then
    error("sessions.lua: no cookies in " .. path)
  end
  -- Spread the threads over the list.
  next_index = ((thread_number or 1) - 1) * 7919 % #cookies + 1
end

function request()
  local cookie = cookies[next_index]
  next_index = next_index % #cookies + 1
  return wrk.format(nil, nil, { ["Cookie"] = cookie })
end
