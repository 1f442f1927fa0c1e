-- notify_bot.lua — proactive operations on command, for the teams.testing specs. An operator
-- writes to the bot; it acts on another conversation and replies with the outcome:
--   notify <user id> <text>          create the 1:1 chat, then send            → "notify ok <id>"
--   send <conversation> <text>       teams.send                                → "send ok <id>"
--   post <conversation> <key> <text> teams.send with a key
--   edit <conversation> <key> <text> teams.update by key
--   delete <conversation> <key>      teams.delete by key
--   thread <channel> <text>          teams.create_conversation{channel, message}
--   later <conversation> <text>      teams.send with wait = false              → "later op <n>"
-- A failure replies "<verb> <code> state=<state> status=<status>".
local teams = require "teams"

local function outcome(ev, verb, id, err, code, details)
  if id then return ev:reply(("%s ok %s"):format(verb, tostring(id))) end
  details = details or {}
  ev:reply(("%s %s state=%s status=%s"):format(verb, tostring(code), tostring(details.state),
    tostring(details.status)))
  teams.log("info", verb, "failed:", err)
end

local commands = {}

function commands.notify(ev, user, text)
  local conv, err, code, details = teams.create_conversation { user = user, tenant = ev.tenant }
  if not conv then return outcome(ev, "notify", nil, err, code, details) end
  return outcome(ev, "notify", teams.send(conv, text))
end

function commands.send(ev, conv, text) return outcome(ev, "send", teams.send(conv, text)) end

function commands.post(ev, conv, rest)
  local key, text = rest:match("^(%S+)%s+(.+)$")
  return outcome(ev, "post", teams.send(conv, text, { key = key }))
end

function commands.edit(ev, conv, rest)
  local key, text = rest:match("^(%S+)%s+(.+)$")
  return outcome(ev, "edit", teams.update(conv, { key = key }, text))
end

function commands.delete(ev, conv, key)
  return outcome(ev, "delete", teams.delete(conv, { key = key }))
end

function commands.thread(ev, channel, text)
  local conv, first = teams.create_conversation { channel = channel, message = text }
  return outcome(ev, "thread", conv and (conv .. " " .. tostring(first)), first)
end

function commands.later(ev, conv, text)
  local op = teams.send(conv, text, { wait = false })
  ev:reply("later op " .. tostring(op))
end

teams.on_message(function(ev)
  local verb, target, rest = ev.text:match("^(%S+)%s+(%S+)%s*(.*)$")
  local fn = verb and commands[verb]
  if not fn then return ev:reply("unknown command") end
  return fn(ev, target, rest)
end)

teams.on_install(function(ev) ev:send("ready") end)
