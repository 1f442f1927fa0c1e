-- inbound_bot.lua — the bot fuzz_inbound runs: every hook reads the event the library built from
-- the fuzzed activity, replies, and cannot fail on its own, so a handler error is the library's.
local teams = require "teams"

local function touch(ev)
  local parts = {}
  for _, k in ipairs { "type", "conversation", "text", "tenant", "scope", "locale", "timezone",
                       "name", "event_type" } do
    parts[#parts + 1] = tostring(ev[k])
  end
  local seen = {}
  local function walk(v, depth)
    if depth > 40 or type(v) ~= "table" or seen[v] then return end
    seen[v] = true
    for k, x in pairs(v) do
      parts[#parts + 1] = tostring(k)
      walk(x, depth + 1)
    end
  end
  for _, k in ipairs { "user", "team", "channel", "members", "value", "installer" } do walk(ev[k], 0) end
  return #table.concat(parts, "|")
end

teams.on_install(function(ev) touch(ev) ev:send("installed") end)
teams.on_uninstall(touch)
teams.on_members_added(function(ev) touch(ev) ev:send("welcome " .. #ev.members) end)
teams.on_members_removed(touch)
teams.on_message(function(ev)
  touch(ev)
  ev:reply("echo " .. ev.text:sub(1, 64))
end)
teams.on_activity(touch)
teams.on_invoke(function(ev)
  touch(ev)
  return { status = 200, body = { ok = true, size = touch(ev) } }
end)
teams.on_notify("fuzz", function(ev)
  local function depth(v, d)
    if type(v) ~= "table" or d > 40 then return d end
    local m = d
    for _, x in pairs(v) do m = math.max(m, depth(x, d + 1)) end
    return m
  end
  return { kind = type(ev.payload), depth = depth(ev.payload, 0) }
end)
