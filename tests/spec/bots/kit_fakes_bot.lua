-- kit_fakes_bot.lua — answers each command with JSON (the message text), so teams.testing's specs
-- can compare what the runtime reads through the fake connector: rosters, channels, teams,
-- stored references; and starts a 1:1 from a notify trigger, before any activity.
local teams = require "teams"
local cjson = require "cjson"

local function out(ev, v) ev:send(cjson.encode(v)) end

local commands = {}

-- "pages <target> <size>": every page, as members_page gives them
commands.pages = function(ev, target, size)
  local pages, ids, token = 0, {}, nil
  repeat
    local members, nxt, code = teams.members_page(target, token, tonumber(size))
    if not members then return out(ev, { error = nxt, code = code }) end
    pages = pages + 1
    for _, m in ipairs(members) do ids[#ids + 1] = m.id end
    token = nxt
  until not token
  out(ev, { pages = pages, ids = ids })
end

-- "members <target>": the iterator, default page size
commands.members = function(ev, target)
  local list = {}
  for m in teams.members(target) do list[#list + 1] = m end
  out(ev, { members = list })
end

commands.member = function(ev, target, id)
  local m, err, code = teams.member(target, id)
  out(ev, m and { member = m } or { error = err, code = code })
end

commands.channels = function(ev, team)
  local list, err, code = teams.channels(team)
  out(ev, list and { channels = list } or { error = err, code = code })
end

commands.team = function(ev, team)
  local t, err, code = teams.team(team)
  out(ev, t and { team = t } or { error = err, code = code })
end

commands.ref = function(ev, id) out(ev, { ref = teams.conversation(id ~= "" and id or ev.conversation) }) end

commands.every = function(ev, expr)
  teams.schedule { id = "tick:" .. ev.conversation, handler = "tick", every = expr,
                   conversation = ev.conversation, payload = { n = 1 } }
  out(ev, { ok = true })
end

commands.schedules = function(ev)
  out(ev, { list = teams.schedule.list { conversation = ev.conversation },
            one = teams.schedule.get("tick:" .. ev.conversation) })
end

teams.on_schedule("tick", function() end)

teams.on_message(function(ev)
  local cmd, a, b = (ev.text or ""):match("^(%S+)%s*(%S*)%s*(%S*)$")
  local fn = commands[cmd or ""]
  if fn then return fn(ev, a, b) end
  ev:send("unknown command")
end)

-- a 1:1 started by an outside system, before any activity told herald who the bot is
teams.on_notify("dm", function(ev)
  local id, err, code = teams.create_conversation {
    user = ev.payload.user, tenant = ev.payload.tenant, message = "hello from a trigger",
  }
  return id and { conversation = id } or { error = err, code = code }
end)
