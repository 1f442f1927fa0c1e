-- outbox_bot.lua — the outbox tests' bot (tests/integration/test_outbox*.py, tests/bench/outbox.sh).
-- Remote control through invokes named "outbox": value = { cmd = ..., ... }; the invoke's answer is
-- the result as JSON, so a test reads what teams.send/update/delete returned without a reply.
--
--   blast  { n, m, prefix = "a:blast-", tenant = nil, service_url = nil, tag = "b", wait = false,
--            start = 0 }
--          n messages over m conversations given as reference tables (id = prefix .. j,
--          service_url, tenant); message i (start .. start+n-1) goes to conversation i % m with text
--          "<tag> <i> <j>", fire-and-forget unless wait. → { ops = n, first = op, last = op }
--   send   { conv = id | {id, service_url, tenant}, text, key, wait }   → { r = {...} }
--   update { conv, id | key, text, send_if_missing, wait }              → { r = {...} }
--   delete { conv, id | key, wait }                                     → { r = {...} }
--   reply  { text }                      ev:reply to the invoke itself  → { r = {...} }
-- r = { a, b, c, d } are the values the call returned (nil ones left out).
local teams = require "teams"

local function pack(...)
  return { n = select("#", ...), ... }
end

local function result(t)
  local r = {}
  for i = 1, t.n do
    if t[i] ~= nil then r[({ "a", "b", "c", "d", "e" })[i]] = t[i] end
  end
  return { r = r }
end

local function conv_of(v)
  if type(v) == "table" then
    return { id = v.id, service_url = v.service_url, tenant = v.tenant }
  end
  return v
end

local cmds = {}

function cmds.blast(ev, v)
  local n, m = math.tointeger(v.n) or 1, math.tointeger(v.m) or 1
  local prefix = v.prefix or "a:blast-"
  local url = v.service_url or ev.activity.serviceUrl
  local tag = v.tag or "b"
  local refs = {}
  for j = 0, m - 1 do
    refs[j] = { id = prefix .. j, service_url = url, tenant = v.tenant }
  end
  local first, last
  local opts = { wait = v.wait == true }
  local start = math.tointeger(v.start) or 0
  for i = start, start + n - 1 do
    local j = i % m
    local op, msg, code = teams.send(refs[j], tag .. " " .. i .. " " .. j, opts)
    if not op then return { error = tostring(msg), code = code, at = i } end
    first = first or op
    last = op
  end
  return { ops = n, first = first, last = last }
end

function cmds.send(ev, v)
  local opts = {}
  if v.key then opts.key = v.key end
  if v.wait == false then opts.wait = false end
  return result(pack(teams.send(conv_of(v.conv), v.text or "hello", opts)))
end

local function target(v)
  if v.key then return { key = v.key } end
  return v.id
end

function cmds.update(ev, v)
  local opts = {}
  if v.send_if_missing then opts.send_if_missing = true end
  if v.wait == false then opts.wait = false end
  return result(pack(teams.update(conv_of(v.conv), target(v), v.text or "edited", opts)))
end

function cmds.delete(ev, v)
  local opts = {}
  if v.wait == false then opts.wait = false end
  return result(pack(teams.delete(conv_of(v.conv), target(v), opts)))
end

function cmds.reply(ev, v)
  return result(pack(ev:reply(v.text or "reply")))
end

teams.on_invoke(function(ev)
  local v = ev.value or {}
  local f = ev.name == "outbox" and cmds[v.cmd]
  if not f then return { status = 400, body = { error = "unknown command" } } end
  return f(ev, v)
end)

teams.on_message(function(ev)
  -- nothing: inbound messages only matter to the ledger (heard from)
end)
