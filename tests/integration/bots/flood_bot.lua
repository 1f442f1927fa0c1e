-- flood_bot.lua — the queue bound tests' bot: fire-and-forget sends in bulk to reference tables
-- (any service URL: dev mode), counting what teams.send returned. Results are logged as
-- "FLOOD <cmd> ..." lines.
local teams = require "teams"

local function words(s)
  local t = {}
  for w in (s or ""):gmatch("%S+") do t[#t + 1] = w end
  return t
end

local function log(fmt, ...)
  teams.log("info", "FLOOD " .. string.format(fmt, ...))
end

local commands = {}

-- burst URL CONV/TENANT/N,... [SIZE]: N fire-and-forget sends (of SIZE-byte texts) to each
-- conversation in turn, in one handler turn (nothing is attempted before it ends); logs ok/full
-- per conversation
commands.burst = function(ev, w)
  local text = w[4] and string.rep("b", tonumber(w[4])) or "burst"
  for item in w[3]:gmatch("[^,]+") do
    local conv, tenant, n = item:match("^(.+)/([^/]+)/(%d+)$")
    local ok, full, msg = 0, 0, ""
    for _ = 1, tonumber(n) do
      local id, m, code = teams.send({ id = conv, service_url = w[2], tenant = tenant }, text, { wait = false })
      if id then ok = ok + 1 elseif code == "queue_full" then full = full + 1; msg = m else error(tostring(m)) end
    end
    log("burst conv=%s ok=%d full=%d msg=%s", conv, ok, full, msg)
  end
  log("burst end")
end

-- wait URL CONV TENANT: one send that waits for its outcome
commands.wait = function(ev, w)
  local id, msg, code = teams.send({ id = w[3], service_url = w[2], tenant = w[4] }, "wait")
  log("wait conv=%s id=%s code=%s msg=%s", w[3], tostring(id), tostring(code), tostring(msg))
end

-- flood URL N CONVS TENANTS SIZE: N fire-and-forget sends of SIZE-byte texts spread over CONVS
-- conversations and TENANTS tenants, yielding every 1000 so the loop keeps turning
commands.flood = function(ev, w)
  local n, convs, tenants = tonumber(w[3]), tonumber(w[4]), tonumber(w[5])
  local pad = string.rep("x", tonumber(w[6]))
  local ok, full, first_full = 0, 0, nil
  for i = 1, n do
    local ref = { id = "a:flood-" .. (i % convs), service_url = w[2], tenant = "t-" .. (i % tenants) }
    local id, m, code = teams.send(ref, pad .. i, { wait = false })
    if id then ok = ok + 1
    elseif code == "queue_full" then full = full + 1; first_full = first_full or m
    else error(tostring(m)) end
    if i % 1000 == 0 then
      if i % 20000 == 0 then log("progress i=%d ok=%d full=%d", i, ok, full) end
      teams.sleep(0)
    end
  end
  log("flood done ok=%d full=%d first=%s", ok, full, tostring(first_full))
end

teams.on_message(function(ev)
  local w = words(ev.text)
  local f = commands[w[1] or ""]
  if f then f(ev, w) else log("unknown %s", tostring(ev.text)) end
end)
