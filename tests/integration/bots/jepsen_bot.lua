-- jepsen_bot.lua — the fault suite's bot (tests/integration/jepsen.py): remote-controlled through
-- POST /api/notify/ctl; it keeps no state of its own, so a kill -9 loses nothing of the driver's.
--
--   send      { items = { {conv, service_url, seq}, ... } }  sends "m <conv> <seq>" to each,
--             fire-and-forget, in order → { r = { op id | false, code | false }... }
--   seed      { n, prefix, tenant, service_url }  put_reference of n personal conversations
--             (needs HERALD_UNSAFE_LUA=1: herald's internal core)
--   broadcast { key, tenant }  teams.broadcast of "b <key>" to the tenant's conversations, under
--             that key (a retry after a kill names the same job) → { id } | { error, code }
--   bstatus   { id }  → teams.broadcast.status(id)
--   schedule  { id, convs, service_url }  every second: "s <conv> <due>" to each of convs
--   park      { id }  moves that schedule's next run to 2099 (its row and run count stay)
local teams = require "teams"

teams.on_schedule("tick", function(ev)
  local p = ev.payload or {}
  for _, conv in ipairs(p.convs or {}) do
    -- no yield between the sends: the firing's advance and its sends are one commit
    teams.send({ id = conv, service_url = p.service_url }, ("s %s %d"):format(conv, ev.due),
               { wait = false })
  end
end)

local cmds = {}

function cmds.send(p)
  local out = {}
  for i, it in ipairs(p.items or {}) do
    local conv, url, seq = it[1], it[2], math.tointeger(it[3])
    local op, _, code = teams.send({ id = conv, service_url = url }, ("m %s %d"):format(conv, seq),
                                   { wait = false })
    out[i] = { op or false, op and false or tostring(code) }
  end
  return { r = out }
end

function cmds.seed(p)
  local core = require "herald.core"
  for i = 0, math.tointeger(p.n) - 1 do
    core.put_reference {
      id = p.prefix .. i, service_url = p.service_url, scope = "personal", tenant = p.tenant,
      channel_id = "msteams", bot_id = "28:bot", user_id = "29:" .. p.prefix .. i,
      user_aad_object_id = "aad-" .. p.prefix .. i,
    }
  end
  return { seeded = math.tointeger(p.n) }
end

function cmds.broadcast(p)
  local id, err, code = teams.broadcast { to = { tenant = p.tenant }, message = { text = "b " .. p.key },
                                          key = p.key, name = p.key }
  if not id then return { error = tostring(err), code = code } end
  return { id = id }
end

function cmds.bstatus(p) return teams.broadcast.status(p.id) end

function cmds.schedule(p)
  local id, nxt, code = teams.schedule { id = p.id, handler = "tick", every = "1", missed = "once",
                                         payload = { convs = p.convs, service_url = p.service_url } }
  return { id = id, next = nxt, code = code }
end

function cmds.park(p)
  local id, nxt, code = teams.schedule { id = p.id, handler = "tick", at = "2099-01-01T00:00:00Z" }
  return { id = id, next = nxt, code = code }
end

teams.on_notify("ctl", function(ev)
  local p = ev.payload or {}
  local f = cmds[p.cmd]
  if not f then return { error = "unknown cmd " .. tostring(p.cmd) } end
  return f(p)
end)
