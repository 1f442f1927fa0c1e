-- reminders.lua — example bot: "remind me at 9:00 to ..." and "daily digest", delivered at that
-- time in the user's own time zone (captured by herald from their activities), durable across
-- restarts and reloads. Try: "remind me at 9:00 to water the plants", "remind me in 10 minutes to
-- stretch", "daily digest", "stop digest", "my reminders".
local teams = require "teams"

local function zone_of(ev)
  local ref = teams.conversation(ev.conversation)
  return ev.timezone or (ref and ref.timezone) or "UTC"
end

local function reply_help(ev)
  ev:reply { markdown = true, text = table.concat({
    "I can remind you of things, at your local time:",
    "",
    "- **remind me at 9:00 to** water the plants",
    "- **remind me in 10 minutes to** stretch",
    "- **daily digest**: a summary every day at 09:00 your time (**stop digest** to end it)",
    "- **my reminders**: what is scheduled",
  }, "\n") }
end

-- Tried in this order, first match wins: a list, because pairs() over a table keyed by pattern
-- visits them in no defined order, and the catch-all "remind me ..." must come last.
local handlers = {}
local function on(pattern, fn) handlers[#handlers + 1] = { pattern = pattern, fn = fn } end

on("^remind me at (%d%d?):(%d%d) to (.+)$", function(ev, h, m, what)
  h, m = tonumber(h), tonumber(m)
  if h > 23 or m > 59 then return ev:reply("That is not a time of day.") end
  local zone = zone_of(ev)
  -- a daily cron pinned to the time, fired once: "at" needs a date, cron finds the next one
  local id = ("remind:%s:%02d%02d:%s"):format(ev.conversation, h, m, what)
  local _, next_fire, code = teams.schedule {
    id = id, handler = "reminder", cron = ("%d %d * * *"):format(m, h), tz = "user",
    conversation = ev.conversation, payload = { what = what, once = true },
  }
  if not next_fire then return ev:reply("I could not schedule that: " .. tostring(code)) end
  ev:reply(("OK, I will remind you at %02d:%02d (%s) to %s."):format(h, m, zone, what))
end)

on("^remind me in (%d+) minutes? to (.+)$", function(ev, n, what)
  local at = os.date("!%Y-%m-%dT%H:%M:%SZ", teams.now() // 1000 + tonumber(n) * 60)
  local _, next_fire = teams.schedule {
    handler = "reminder", at = at, conversation = ev.conversation, payload = { what = what },
  }
  if not next_fire then return ev:reply("I could not schedule that.") end
  ev:reply(("OK, in %d minute%s I will remind you to %s."):format(n, n == "1" and "" or "s", what))
end)

on("^daily digest$", function(ev)
  teams.schedule {
    id = "digest:" .. ev.conversation, handler = "digest", cron = "0 9 * * *", tz = "user",
    conversation = ev.conversation, missed = "skip",
  }
  ev:reply(("Daily digest on: every day at 09:00 %s."):format(zone_of(ev)))
end)

on("^stop digest$", function(ev)
  local existed = teams.schedule.cancel("digest:" .. ev.conversation)
  ev:reply(existed and "Daily digest stopped." or "You had no daily digest.")
end)

on("^my reminders$", function(ev)
  local lines = {}
  for _, s in ipairs(teams.schedule.list { conversation = ev.conversation }) do
    local what = s.handler == "digest" and "daily digest"
      or (s.payload and s.payload:match('"what":"(.-)"')) or s.handler
    lines[#lines + 1] = ("- %s: next %s UTC"):format(what, os.date("!%Y-%m-%d %H:%M", s.next_fire))
  end
  ev:reply(#lines > 0 and table.concat(lines, "\n") or "Nothing scheduled.")
end)

-- last: any other "remind me ..." gets the two forms it can use, not the general help
on("^remind me ", function(ev)
  ev:reply { markdown = true, text = "Tell me when: **remind me at 9:00 to** ... or "
    .. "**remind me in 10 minutes to** ..." }
end)

teams.on_message(function(ev)
  local text = (ev.text or ""):lower()
  for _, h in ipairs(handlers) do
    local caps = { text:match(h.pattern) }
    if caps[1] then return h.fn(ev, table.unpack(caps)) end
  end
  reply_help(ev)
end)

teams.on_install(function(ev)
  ev:send "Hi! I send reminders at your local time. Try **remind me at 9:00 to drink water**."
end)

teams.on_schedule("reminder", function(ev)
  ev:send("⏰ Reminder: " .. ev.payload.what)
  if ev.payload.once then teams.schedule.cancel(ev.schedule) end
end)

teams.on_schedule("digest", function(ev)
  local n = 0
  for _ in pairs(teams.schedule.list { conversation = ev.conversation }) do n = n + 1 end
  ev:send(("Good morning! Your daily digest: %d active reminder%s."):format(n - 1, n == 2 and "" or "s"))
end)
