-- notify_bot.lua — the bot of tests/integration/test_notify.py: triggers that report what they got.
--   echo   → { got = payload, count = N }   N counts this handler's runs, so a test can tell that a
--                                           refused request did not run it
--   other  → { other = true, got = payload } (a trigger with its own secret in the tests)
--   audit  → { audit = true }                a second trigger on the global secret
--   slow   { s, conv = {id, service_url}, text } sleeps s seconds, then sends text to conv
--          → { sent = activity id }
--   boom   { s } sleeps s seconds, then raises
local teams = require "teams"

local runs = 0

teams.on_notify("echo", function(ev)
  runs = runs + 1
  teams.log("info", "echo handler ran " .. runs)
  return { got = ev.payload, count = runs }
end)

teams.on_notify("other", function(ev)
  return { other = true, got = ev.payload }
end)

teams.on_notify("audit", function(ev)
  teams.log("info", "audit handler ran")
  return { audit = true }
end)

teams.on_notify("slow", function(ev)
  local p = ev.payload or {}
  teams.sleep(p.s or 1)
  local id, err, code = teams.send(p.conv, p.text or "slow done")
  teams.log("info", "slow handler finished " .. tostring(id or code))
  return { sent = id, error = err, code = code }
end)

teams.on_notify("boom", function(ev)
  teams.sleep((ev.payload or {}).s or 1)
  error("boom")
end)

teams.on_message(function(ev) end)
