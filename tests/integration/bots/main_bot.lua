-- main_bot.lua — the integration tests' bot. Commands arrive as message text (bot @mention removed).
local teams = require "teams"

local function words(s)
  local t = {}
  for w in (s or ""):gmatch("%S+") do t[#t + 1] = w end
  return t
end

-- hook run counters, reported by the "stats" command
local stats = { install = 0, uninstall = 0, added = 0, removed = 0 }

teams.on_install(function(ev)
  stats.install = stats.install + 1
  ev:send("welcome " .. tostring(ev.scope))
end)

teams.on_uninstall(function(ev)
  stats.uninstall = stats.uninstall + 1 -- nothing to send: the bot is gone from the conversation
end)

teams.on_members_added(function(ev)
  stats.added = stats.added + 1
  local ids = {}
  for _, m in ipairs(ev.members or {}) do ids[#ids + 1] = tostring(m.id) end
  ev:send("members added: " .. table.concat(ids, ","))
end)

teams.on_members_removed(function(ev)
  stats.removed = stats.removed + 1
end)

local commands = {}

commands.proactive = function(ev)
  local id, msg, code = teams.send(ev.conversation, "p1")
  local id2, msg2, code2 = teams.update(ev.conversation, id, "p1 edited")
  local ok, msg3, code3 = teams.delete(ev.conversation, id)
  ev:reply(string.format("sent=%s updated=%s deleted=%s codes=%s,%s,%s", tostring(id), tostring(id2),
    tostring(ok), tostring(code), tostring(code2), tostring(code3)))
end

-- create1on1 USER TENANT
commands.create1on1 = function(ev, w)
  local conv, msg, code = teams.create_conversation { user = w[2], tenant = w[3] }
  if not conv then
    ev:reply("create failed code=" .. tostring(code))
    return
  end
  local id, _, code2 = teams.send(conv, "hello 1:1")
  ev:reply(string.format("created=%s sent=%s code=%s", tostring(conv), tostring(id), tostring(code2)))
end

-- thread CHANNEL_ID
commands.thread = function(ev, w)
  local conv, aid, code = teams.create_conversation { channel = w[2], message = "thread start" }
  ev:reply(string.format("thread=%s activity=%s", tostring(conv), tostring(aid)))
end

-- probe CONV: send to a stored conversation and report the failure code into this conversation
commands.probe = function(ev, w)
  local id, msg, code = teams.send(w[2], "probe")
  ev:reply(string.format("probe id=%s code=%s", tostring(id), tostring(code)))
end

-- proberef CONV: the same through a reference table (not necessarily stored)
commands.proberef = function(ev, w)
  local id, msg, code = teams.send({ id = w[2], service_url = ev.activity.serviceUrl, tenant = ev.tenant },
    "probe")
  ev:reply(string.format("probe id=%s code=%s", tostring(id), tostring(code)))
end

local function list(opts)
  local ids = {}
  for ref in teams.conversations(opts) do ids[#ids + 1] = ref.id end
  table.sort(ids)
  return ids
end

commands.count = function(ev)
  local ids = list {}
  ev:reply(string.format("count=%d ids=%s", #ids, table.concat(ids, ",")))
end

commands.countall = function(ev)
  local ids = list { include_uninstalled = true }
  ev:reply(string.format("count=%d ids=%s", #ids, table.concat(ids, ",")))
end

commands.countscope = function(ev, w)
  local ids = list { scope = w[2] }
  ev:reply(string.format("count=%d ids=%s", #ids, table.concat(ids, ",")))
end

commands.sleep = function(ev, w)
  teams.sleep(tonumber(w[2]) or 1)
  ev:reply("slept " .. tostring(w[2]))
end

commands.boom = function(ev)
  error("boom from handler") -- HANDLER_ERROR_LINE
end

commands.whoami = function(ev)
  ev:reply(string.format("user=%s aad=%s tenant=%s scope=%s tz=%s locale=%s team=%s channel=%s",
    tostring(ev.user and ev.user.id), tostring(ev.user and ev.user.aad_object_id), tostring(ev.tenant),
    tostring(ev.scope), tostring(ev.timezone), tostring(ev.locale),
    tostring(ev.team and ev.team.id), tostring(ev.channel and ev.channel.id)))
end

commands.send = function(ev)
  local id = ev:send("top level")
  ev:reply("sent top level id=" .. tostring(id))
end

commands.card = function(ev)
  ev:reply { text = "with card", card = { type = "AdaptiveCard", version = "1.5",
    body = { { type = "TextBlock", text = "hi" } } } }
end

commands.stats = function(ev)
  ev:reply(string.format("install=%d uninstall=%d added=%d removed=%d", stats.install, stats.uninstall,
    stats.added, stats.removed))
end

commands.rich = function(ev)
  ev:reply { text = "Hi <at>Alex</at>", markdown = true, mentions = { { id = ev.user.id, name = "Alex" } },
             summary = "sum", importance = "high", alert = true }
end

teams.on_message(function(ev)
  local w = words(ev.text)
  local f = commands[w[1] or ""]
  if f then
    f(ev, w)
  else
    ev:reply("echo: " .. tostring(ev.text))
  end
end)

teams.on_invoke(function(ev)
  return { statusCode = 200, type = "application/vnd.microsoft.activity.message",
           value = "invoked " .. tostring(ev.name) .. " x=" .. tostring(ev.value and ev.value.x) }
end)
