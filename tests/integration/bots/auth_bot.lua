-- auth_bot.lua — the authentication tests' bot. Every handler run is logged first
-- ("AUTHBOT run n=N text=..."), so a test can tell whether a rejected activity reached the script.
-- Results of connector calls are logged as "AUTHBOT <cmd> ... id=... code=..." (a send that fails
-- for lack of a token cannot report through the connector).
local teams = require "teams"

local runs = 0

local function words(s)
  local t = {}
  for w in (s or ""):gmatch("%S+") do t[#t + 1] = w end
  return t
end

local function out(cmd, tag, id, msg, code)
  teams.log("info", string.format("AUTHBOT %s tag=%s id=%s code=%s msg=%s", cmd, tostring(tag),
    tostring(id), tostring(code), tostring(msg)))
end

teams.on_install(function(ev)
  runs = runs + 1
  teams.log("info", "AUTHBOT run n=" .. runs .. " text=(install)")
end)

local commands = {}

-- send TAG: a new top-level message in this conversation
commands.send = function(ev, w)
  local id, msg, code = ev:send("sent " .. tostring(w[2]))
  out("send", w[2], id, msg, code)
end

-- quiet TAG: runs and logs, sends nothing
commands.quiet = function(ev, w)
  out("quiet", w[2], nil, nil, nil)
end

-- probe CONV: send to a stored conversation (its stored service URL)
commands.probe = function(ev, w)
  local id, msg, code = teams.send(w[2], "probe")
  out("probe", w[2], id, msg, code)
end

-- proberef CONV URL: send through a script-supplied reference table
commands.proberef = function(ev, w)
  local id, msg, code = teams.send({ id = w[2], service_url = w[3] }, "probe")
  out("proberef", w[2], id, msg, code)
end

-- update CONV ID / delete CONV ID: the other token-bearing calls on a stored conversation
commands.update = function(ev, w)
  local id, msg, code = teams.update(w[2], w[3], "edited")
  out("update", w[2], id, msg, code)
end

commands.delete = function(ev, w)
  local ok, msg, code = teams.delete(w[2], w[3])
  out("delete", w[2], ok, msg, code)
end

-- later CONV: a fire-and-forget send to a stored conversation (logs the outbox op id)
commands.later = function(ev, w)
  local id, msg, code = teams.send(w[2], "later", { wait = false })
  out("later", w[2], id, msg, code)
end

-- bcast TAG CONV1,CONV2,...: a broadcast to stored conversations (logs the broadcast id)
commands.bcast = function(ev, w)
  local convs = {}
  for c in (w[3] or ""):gmatch("[^,]+") do convs[#convs + 1] = c end
  local id, msg, code = teams.broadcast { to = { conversations = convs }, message = "bcast" }
  out("bcast", w[2], id, msg, code)
end

-- bcastu TAG TENANT USER1,USER2,...: a broadcast to users, reached 1:1 (created where needed)
commands.bcastu = function(ev, w)
  local users = {}
  for u in (w[4] or ""):gmatch("[^,]+") do users[#users + 1] = u end
  local id, msg, code = teams.broadcast { to = { users = users, tenant = w[3] }, message = "bcast" }
  out("bcastu", w[2], id, msg, code)
end

-- stats: how many handler runs so far (this one included)
commands.stats = function(ev)
  local id, msg, code = ev:reply("runs=" .. runs)
  out("stats", runs, id, msg, code)
end

teams.on_message(function(ev)
  runs = runs + 1
  teams.log("info", "AUTHBOT run n=" .. runs .. " text=" .. tostring(ev.text))
  local w = words(ev.text)
  local f = commands[w[1] or ""]
  if f then
    f(ev, w)
  else
    local id, msg, code = ev:reply("echo " .. tostring(ev.text))
    out("echo", ev.text, id, msg, code)
  end
end)
