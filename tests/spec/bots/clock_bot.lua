-- clock_bot.lua — timers, sleeps and schedules on command, for the teams.testing specs:
--   sleep <s>                       teams.sleep, then reply "woke"
--   after <s> <text>                teams.timer.after → send text
--   every <s> <text>                teams.timer.every → send text (n)
--   stop                            cancel the every-timer
--   at <ISO time> <text>            schedule { at = ... }
--   cron <expr with _ for spaces> <tz> <text>   schedule { cron =, tz = } ("user" follows the user)
--   each <every> <text>             schedule { every = ... }
--   cancel <id>                     teams.schedule.cancel
local teams = require "teams"

local ticking

teams.on_schedule("say", function(ev)
  ev:send(ev.payload.text .. " (due " .. os.date("!%Y-%m-%dT%H:%M:%SZ", ev.due) .. ")")
end)

local function schedule(ev, spec, text)
  spec.handler, spec.conversation, spec.payload = "say", ev.conversation, { text = text }
  local id, next_fire, code = teams.schedule(spec)
  if not id then return ev:reply("schedule failed: " .. tostring(code)) end
  ev:reply(("scheduled %s next %s"):format(id, os.date("!%Y-%m-%dT%H:%M:%SZ", next_fire)))
end

teams.on_message(function(ev)
  local text = ev.text
  local conv = ev.conversation
  local n = text:match("^sleep (%d+)$")
  if n then
    teams.sleep(tonumber(n))
    return ev:reply("woke")
  end
  local s, what = text:match("^after (%d+) (.+)$")
  if s then
    teams.timer.after(tonumber(s), function() teams.send(conv, what) end)
    return ev:reply("armed")
  end
  s, what = text:match("^every (%d+) (.+)$")
  if s then
    local count = 0
    ticking = teams.timer.every(tonumber(s), function()
      count = count + 1
      teams.send(conv, what .. " " .. count)
    end)
    return ev:reply("ticking")
  end
  if text == "stop" then
    return ev:reply(ticking and ticking:cancel() and "stopped" or "nothing to stop")
  end
  local at
  at, what = text:match("^at (%S+) (.+)$")
  if at then return schedule(ev, { at = at }, what) end
  local expr, tz
  expr, tz, what = text:match("^cron (%S+) (%S+) (.+)$")
  if expr then return schedule(ev, { cron = expr:gsub("_", " "), tz = tz }, what) end
  local every
  every, what = text:match("^each (%S+) (.+)$")
  if every then return schedule(ev, { every = every }, what) end
  local id = text:match("^cancel (.+)$")
  if id then return ev:reply(teams.schedule.cancel(id) and "cancelled" or "no such schedule") end
  ev:reply("?")
end)
