-- broadcast_bot.lua — the notification tests' bot (tests/integration/test_notify*.py,
-- test_broadcast*.py, test_roster*.py; tests/bench/broadcast.sh).
--
-- Triggers (POST /api/notify/{name}):
--   echo   → { got = payload, count = N }      N counts the runs of this handler (so a test can tell
--                                              that a refused request did not run it)
--   other  → { other = true, got = payload }   (a trigger with its own secret in the tests)
--   slow   { s, conv = {id, service_url}, text } sleeps s seconds, then sends text to conv
--          → { sent = activity id }
--   ctl    { cmd = ..., ... }                   remote control, the answer is the result:
--     seed       { n, start = 0, prefix, tenant, service_url, user_prefix, bot_id, chunk }
--                put_reference of n personal conversations prefix..i (user user_prefix..i)
--     broadcast  { to, text, category, name, key, personal, fail_at } → { id } | { error, code }
--                (personal: the message function raises at its fail_at-th recipient)
--     status     { id } → teams.broadcast.status(id)
--     pause | resume | cancel { id } → { ok, error, code }
--     update     { id, text } | recall { id } → { n, error }
--     opt_out | opt_in { who, category } → {} ; opted_out { who, category } → { out }
--     cap        { category, max, per, over }
--     send       { conv, text, category, wait } → { r = {a, b, c} }
--     members    { target, page_size } → { count, unique, first, last, error, code }
--     page       { target, token, size } → { members = n, token, error, code }
--     member     { target, id } | channels { team } | team { team } → { r = {a, b, c} }
--     now        → { ms = teams.now() }
--     dm         { team, whole } → { list = { {conversation, name, aad}, ... } } (create_conversation
--                with each member's id, or the member table when whole)
--     ledger     { filter } → { entries, error } (teams.ledger)
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

teams.on_notify("slow", function(ev)
  local p = ev.payload or {}
  teams.sleep(p.s or 1)
  local id, err, code = teams.send(p.conv, p.text or "slow done")
  teams.log("info", "slow handler finished " .. tostring(id or code))
  return { sent = id, error = err, code = code }
end)

local function pack(...) return { n = select("#", ...), ... } end
local function result(t)
  local r = {}
  for i = 1, t.n do
    if t[i] ~= nil then r[({ "a", "b", "c", "d", "e" })[i]] = t[i] end
  end
  return { r = r }
end

local cmds = {}

-- Seeding writes references straight through herald's internal core, which only an unsafe
-- generation (HERALD_UNSAFE_LUA=1, as test_broadcast.py and the broadcast bench run it) can reach.
function cmds.seed(p)
  local core = require "herald.core"
  local n, start = math.tointeger(p.n) or 1, math.tointeger(p.start) or 0
  local prefix, uprefix = p.prefix or "a:bc-", p.user_prefix or "29:u-"
  for i = start, start + n - 1 do
    core.put_reference {
      id = prefix .. i, service_url = p.service_url, scope = "personal", tenant = p.tenant,
      channel_id = "msteams", bot_id = p.bot_id or "28:bot", user_id = uprefix .. i,
      user_aad_object_id = "aad-" .. uprefix .. i,
    }
    if i % 2000 == 1999 then teams.sleep(0) end
  end
  return { seeded = n }
end

function cmds.broadcast(p)
  local msg
  if p.personal then
    local n = 0
    msg = function(r)
      n = n + 1
      if n == p.fail_at then error("no message for recipient " .. n) end
      return { text = (p.text or "hi") .. " for " .. tostring(r.conversation or r.user) }
    end
  else
    msg = { text = p.text or "hi" }
  end
  local id, err, code = teams.broadcast { to = p.to, message = msg, category = p.category, name = p.name,
                                          key = p.key }
  if not id then return { error = err, code = code } end
  return { id = id }
end

function cmds.status(p) return teams.broadcast.status(p.id) end
for _, a in ipairs { "pause", "resume", "cancel" } do
  cmds[a] = function(p)
    local ok, err, code = teams.broadcast[a](p.id)
    return { ok = ok, error = err, code = code }
  end
end
function cmds.update(p)
  local n, err = teams.broadcast.update(p.id, { text = p.text or "edited" })
  return { n = n, error = err }
end
function cmds.recall(p)
  local n, err = teams.broadcast.recall(p.id)
  return { n = n, error = err }
end

function cmds.opt_out(p) teams.opt_out(p.who, p.category) return {} end
function cmds.opt_in(p) teams.opt_in(p.who, p.category) return {} end
function cmds.opted_out(p) return { out = teams.opted_out(p.who, p.category) } end
function cmds.cap(p)
  teams.frequency_cap(p.category, { max = math.tointeger(p.max), per = p.per, over = p.over })
  return {}
end
function cmds.send(p)
  local opts = { category = p.category }
  if p.wait == false then opts.wait = false end
  return result(pack(teams.send(p.conv, p.text or "hello", opts)))
end

function cmds.members(p)
  local seen, count, unique, first, last = {}, 0, 0, nil, nil
  local members = teams.members(p.target, p.page_size and { page_size = p.page_size } or nil)
  for m in members do
    count = count + 1
    if not seen[m.id] then seen[m.id] = true; unique = unique + 1 end
    first = first or m
    last = m
  end
  return { count = count, unique = unique, first = first, last = last, error = members.error,
           code = members.code }
end
function cmds.page(p)
  local members, token, code = teams.members_page(p.target, p.token, p.size)
  if not members then return { error = token, code = code } end
  return { members = #members, token = token, first = members[1] }
end
function cmds.member(p) return result(pack(teams.member(p.target, p.id))) end
function cmds.channels(p) return result(pack(teams.channels(p.team))) end
function cmds.team(p) return result(pack(teams.team(p.team))) end
function cmds.now() return { ms = teams.now() } end
function cmds.dm(p)                          -- a 1:1 with each roster member, and what was stored
  local out = {}
  for m in teams.members(p.team) do
    local conv, err, code = teams.create_conversation { user = p.whole and m or m.id }
    if not conv then return { error = err, code = code } end
    local ref = teams.conversation(conv)
    out[#out + 1] = { conversation = conv, name = ref.user_name, aad = ref.user_aad_object_id }
  end
  return { list = out }
end
function cmds.ledger(p)
  local it, out = teams.ledger(p.filter), {}
  for e in it do out[#out + 1] = e end
  return { entries = out, error = it.error }
end

teams.on_notify("ctl", function(ev)
  local p = ev.payload or {}
  local f = cmds[p.cmd]
  if not f then return { error = "unknown cmd " .. tostring(p.cmd) } end
  return f(p)
end)

teams.on_message(function(ev) ev:reply("ok") end)
