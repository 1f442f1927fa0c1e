-- roster_bot.lua — reads rosters, channels, team details and the ledger on command (notify
-- triggers that answer with what the script saw), and greets installs with the installer's and
-- the channel's names, for tests/spec/roster_spec.lua.
local teams = require "teams"

local function pack(...) return { n = select("#", ...), ... } end

-- nil, msg, code as a table the spec can compare: { ok = value } or { err = msg, code = code }
local function outcome(r)
  if r[1] ~= nil then return { ok = r[1] } end
  return { err = r[2], code = r[3], n = r.n }
end

local last   -- the last "members" answer, for a spec whose trigger outlived the response deadline
teams.on_notify("members", function(ev)
  local p = ev.payload
  local seen = {}
  local it = teams.members(p.target, p.page_size and { page_size = p.page_size } or nil)
  for m in it do seen[#seen + 1] = m.id end
  -- the loop ended: a second loop over a spent iterator stays ended
  local again = it()
  last = { ids = seen, error = it.error, code = it.code, again = again ~= nil }
  return last
end)
teams.on_notify("last", function() return last end)

teams.on_notify("member", function(ev)
  return outcome(pack(teams.member(ev.payload.target, ev.payload.id)))
end)
teams.on_notify("channels", function(ev) return outcome(pack(teams.channels(ev.payload.team))) end)
teams.on_notify("team", function(ev) return outcome(pack(teams.team(ev.payload.team))) end)

-- a 1:1 with every member of the roster, then what was stored for each
teams.on_notify("dm-roster", function(ev)
  local p = ev.payload
  local out = {}
  for m in teams.members(p.team) do
    local conv, err, code = teams.create_conversation { user = p.whole and m or m.id, tenant = p.tenant }
    if not conv then return { err = err, code = code } end
    local ref = teams.conversation(conv)
    out[#out + 1] = { conversation = conv, name = ref.user_name, aad = ref.user_aad_object_id,
                      user = ref.user_id }
  end
  return out
end)

-- a personalised broadcast; the message function records the recipient it was given
teams.on_notify("greet", function(ev)
  local seen = {}
  local id, err, code = teams.broadcast {
    to = ev.payload.to,
    message = function(r)
      seen[#seen + 1] = { conversation = r.conversation, user = r.user, name = r.name,
                          locale = r.locale, aad_object_id = r.aad_object_id, timezone = r.timezone }
      return "Hi " .. (r.name or "there")
    end,
  }
  return { id = id, err = err, code = code, seen = seen }
end)

teams.on_notify("ledger", function(ev)
  local p = ev.payload
  local it = teams.ledger(p.filter)
  local out = {}
  for e in it do out[#out + 1] = e end
  return { entries = out, error = it.error }
end)

teams.on_notify("send", function(ev)
  local id, err, code = teams.send(ev.payload.conversation, ev.payload.text or "hello")
  return { id = id, err = err, code = code }
end)

teams.on_install(function(ev)
  if ev.scope ~= "channel" then return end
  local who, err, code = ev:installer()
  local again = ev:installer()
  local team = ev:team_name()
  local channel, cerr, ccode = ev:channel_name()
  ev:send(("installer=%s aad=%s same=%s team=%s channel=%s err=%s code=%s cerr=%s ccode=%s"):format(
    who and who.name, who and who.aad_object_id, tostring(who == again), team, channel,
    err, code, cerr, ccode))
end)
