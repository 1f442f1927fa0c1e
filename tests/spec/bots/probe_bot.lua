-- probe_bot.lua — reports every event it sees, as JSON in herald's log ("probe {...}"), so the
-- teams.testing specs can check what an activity built by the kit looks like to a bot.
local teams = require "teams"
local cjson = require "cjson"

local function ids(members)
  local out = {}
  for i, m in ipairs(members or {}) do out[i] = m.id end
  return out
end

local function report(hook, ev)
  teams.log("info", "probe " .. cjson.encode {
    hook = hook, type = ev.type, conversation = ev.conversation, scope = ev.scope,
    tenant = ev.tenant, user = ev.user and ev.user.id, user_name = ev.user and ev.user.name,
    aad = ev.user and ev.user.aad_object_id, installer = ev.installer and ev.installer.id,
    members = ev.members and ids(ev.members), team = ev.team and ev.team.name,
    team_id = ev.team and ev.team.id, channel = ev.channel and ev.channel.id, text = ev.text,
    timezone = ev.timezone, locale = ev.locale, value = ev.value, name = ev.name,
    mentions = (function()
      local out = {}
      for _, e in ipairs(ev.activity.entities or {}) do
        if e.type == "mention" then out[#out + 1] = e.mentioned.id end
      end
      return out
    end)(),
  })
end

teams.on_install(function(ev)
  report("install", ev)
  ev:send("installed in " .. ev.scope)
end)
teams.on_uninstall(function(ev) report("uninstall", ev) end)
teams.on_members_added(function(ev)
  report("members_added", ev)
  for _, m in ipairs(ev.members) do ev:send("hello " .. (m.name or m.id)) end
end)
teams.on_members_removed(function(ev) report("members_removed", ev) end)

teams.on_message(function(ev)
  report("message", ev)
  if ev.value ~= nil then return ev:reply("submitted " .. cjson.encode(ev.value)) end
  ev:reply("echo: " .. ev.text)
end)

teams.on_invoke(function(ev)
  report("invoke", ev)
  local action = ev.value and ev.value.action or {}
  if action.verb == "approve" then
    return { status = 200, body = { statusCode = 200, type = "application/vnd.microsoft.activity.message",
                                    value = "Approved " .. tostring(action.data.request) } }
  elseif action.verb == "refresh" then
    return { status = 200, body = { statusCode = 200, type = "application/vnd.microsoft.card.adaptive",
                                    value = teams.card({ { type = "TextBlock", text = "Refreshed" } }).content } }
  end
  return { status = 400, body = { statusCode = 400, type = "application/vnd.microsoft.error",
                                  value = { code = "BadRequest", message = "unknown verb" } } }
end)
