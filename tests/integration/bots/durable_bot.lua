-- durable_bot.lua — the durability tests' bot (tests/integration/test_durability.py,
-- test_inbound_accept.py).
--
--   message "trickle TAG GAP_S [wait]"  sends "TAG i" to conversation "a:TAG-i" (a reference table
--        with this activity's serviceUrl) for i = 1, 2, ... every GAP_S seconds until invoke "stop"
--        names TAG; fire-and-forget unless "wait". What each teams.send returned is recorded.
--   message "hold S"                    sleeps S seconds, then replies "held" (keeps a task busy;
--                                       a test holding the connector's answers keeps it longer)
--   any other message                   ev:reply("echo: " .. text)
--   invoke "report" {tag}               → { done, results = { ["i"] = { ok = op or id, code } } }
--   invoke "stop" {tag}                 stops that trickle
local teams = require "teams"

local trickles, stop = {}, {}

local function trickle(ev, tag, gap, wait)
  local t = { done = false, results = {} }
  trickles[tag] = t
  local url = ev.activity.serviceUrl
  local i = 0
  while not stop[tag] do
    i = i + 1
    local ok, msg, code = teams.send({ id = "a:" .. tag .. "-" .. i, service_url = url },
                                     tag .. " " .. i, { wait = wait })
    t.results[tostring(i)] = { ok = ok, code = code, msg = msg and tostring(msg) or nil }
    teams.sleep(gap)
  end
  t.done = true
end

teams.on_message(function(ev)
  local tag, gap, mode = ev.text:match("^trickle (%S+) (%S+)%s*(%S*)$")
  if tag then
    return trickle(ev, tag, tonumber(gap), mode == "wait")
  end
  local s = ev.text:match("^hold (%S+)$")
  if s then
    teams.sleep(tonumber(s))
    ev:reply("held")
    return
  end
  ev:reply("echo: " .. ev.text)
end)

teams.on_invoke(function(ev)
  local v = ev.value or {}
  if ev.name == "stop" then
    stop[v.tag] = true
    return { status = 200, body = { stopped = v.tag } }
  elseif ev.name == "report" then
    local t = trickles[v.tag]
    if not t then return { status = 404, body = { error = "no such trickle" } } end
    return { status = 200, body = { done = t.done, results = t.results } }
  end
  return { status = 400, body = { error = "unknown invoke" } }
end)
