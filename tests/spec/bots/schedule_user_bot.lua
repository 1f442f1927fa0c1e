-- schedule_user_bot.lua — durable schedules on command, for tests/spec/schedule_*_spec.lua:
--   digest                      cron "0 9 * * *", tz = "user", id "digest:<conv>" (handler digest)
--   every <spec> <text>         schedule { every = spec }            (handler say)
--   at <time> [<zone>] <text>   schedule { at = time, tz = zone }    (handler say; zone has a '/')
--   cancel <id>                 teams.schedule.cancel
--   get <id>                    replies "runs=N next=ISO last=RESULT"
-- Each firing sends "<text> due <ISO due> zone <the conversation's stored zone>".
local teams = require "teams"

local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", t) end

local function zone_of(conv)
  local ref = teams.conversation(conv)
  return ref and ref.timezone or "-"
end

teams.on_schedule("digest", function(ev)
  ev:send(("digest due %s zone %s"):format(iso(ev.due), zone_of(ev.conversation)))
end)

teams.on_schedule("say", function(ev)
  ev:send(("%s due %s"):format(ev.payload.text, iso(ev.due)))
end)

local function put(ev, spec, text)
  spec.handler = spec.handler or "say"
  spec.conversation = ev.conversation
  if text then spec.payload = { text = text } end
  local id, next_fire, code = teams.schedule(spec)
  if not id then return ev:reply("schedule failed: " .. tostring(next_fire) .. " " .. tostring(code)) end
  ev:reply(("scheduled %s next %s"):format(id, iso(next_fire)))
end

teams.on_message(function(ev)
  local text = ev.text
  if text == "digest" then
    return put(ev, { id = "digest:" .. ev.conversation, handler = "digest", cron = "0 9 * * *",
                     tz = "user" })
  end
  local spec, what = text:match("^every (%S+) (.+)$")
  if spec then return put(ev, { every = tonumber(spec) or spec }, what) end
  local at, zone
  at, zone, what = text:match("^at (%S+) (%S+/%S+) (.+)$")
  if at then return put(ev, { at = at, tz = zone }, what) end
  at, what = text:match("^at (%S+) (.+)$")
  if at then return put(ev, { at = at }, what) end
  local id = text:match("^cancel (.+)$")
  if id then return ev:reply(teams.schedule.cancel(id) and "cancelled" or "no such schedule") end
  id = text:match("^get (.+)$")
  if id then
    local s = teams.schedule.get(id)
    if not s then return ev:reply("no such schedule") end
    return ev:reply(("runs=%d next=%s last=%s"):format(s.runs, s.next_fire and iso(s.next_fire) or "-",
                                                     s.last_result or "-"))
  end
  ev:reply("?")
end)
