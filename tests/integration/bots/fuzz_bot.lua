-- fuzz_bot.lua — reads every ev field the host offers (exercising the inbound decode) and sends nothing.
local teams = require "teams"

local handled = 0

local function touch(ev)
  handled = handled + 1
  local parts = {}
  for _, k in ipairs { "type", "conversation", "text", "tenant", "scope", "locale", "timezone", "name" } do
    parts[#parts + 1] = tostring(ev[k])
  end
  local function walk(v, depth)
    if depth > 50 or type(v) ~= "table" then return end
    for k2, v2 in pairs(v) do
      parts[#parts + 1] = tostring(k2)
      walk(v2, depth + 1)
    end
  end
  walk(ev.user, 0)
  walk(ev.team, 0)
  walk(ev.channel, 0)
  walk(ev.members, 0)
  walk(ev.value, 0)
  walk(ev.activity, 0)
  return #table.concat(parts, "|")
end

teams.on_install(touch)
teams.on_uninstall(touch)
teams.on_members_added(touch)
teams.on_members_removed(touch)
teams.on_message(function(ev)
  if ev.text == "fuzz-report" then
    ev:reply("handled=" .. handled)
    return
  end
  touch(ev)
end)
teams.on_activity(touch)
teams.on_invoke(function(ev)
  touch(ev)
  return { status = 200, body = { ok = true } }
end)
