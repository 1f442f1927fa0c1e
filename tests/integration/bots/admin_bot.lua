-- admin_bot.lua — the admin endpoint tests' bot (tests/integration/test_admin.py), public API only.
--
-- Triggers (POST /api/notify/{name}):
--   broadcast { tenant, text } → { id, state }   a broadcast to the tenant's stored conversations,
--                                                 paused at once, so its state only changes when a
--                                                 control reaches it
--   status    { id }           → teams.broadcast.status(id)
--   slow      { s, conv }      sleeps s seconds, then sends "slept" to conv ({ id, service_url })
--                                 if given → { slept = s }
local teams = require "teams"

teams.on_install(function() end)

teams.on_notify("broadcast", function(ev)
  local p = ev.payload or {}
  local id, err, code = teams.broadcast { to = { tenant = p.tenant }, message = { text = p.text or "hi" } }
  if not id then return { error = err, code = code } end
  local ok, perr = teams.broadcast.pause(id)
  return { id = id, paused = ok, error = perr, state = teams.broadcast.status(id).state }
end)

teams.on_notify("status", function(ev)
  return teams.broadcast.status(ev.payload.id)
end)

teams.on_notify("slow", function(ev)
  teams.sleep(ev.payload.s)
  if ev.payload.conv then teams.send(ev.payload.conv, "slept") end
  return { slept = ev.payload.s }
end)
