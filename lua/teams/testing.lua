-- teams.testing — unit-test a herald bot with busted, against the real herald core.
--
--   local testing = require "teams.testing"
--   local bot = testing.load("scripts/welcome.lua")
--   local conv = bot:install { scope = "personal", user = "megan" }
--   assert.sent_to(conv, "Welcome")
--
-- The bot runs in herald's own C core (herald.testing_core, built by `make` into build/lua):
-- the same store (SQLite in memory), durable outbox, governor, retries, ledgers, scheduler and
-- sandboxed Lua, on a virtual clock, with a fake Bot Connector that answers like Teams unless
-- told otherwise (bot:block, bot:throttle, bot:gone, bot:fail, bot:respond). No sockets, no
-- sleeping: bot:advance("2h") passes two hours in microseconds and fires every timer, retry and
-- schedule due on the way, in order.
local core = require "herald.testing_core"
local cjson = require "cjson"

local testing = {}

--- What a fresh bot sees unless testing.load's options say otherwise.
testing.defaults = {
  tenant = "00000000-0000-0000-0000-000000000001",
  bot_id = "28:00000000-0000-0000-0000-0000000000b0",
  bot_name = "Test Bot",
  service_url = "https://smba.trafficmanager.net/amer/",
  user = "alex",
  locale = "en-US",
  start = "2027-01-01T00:00:00Z",
}

--- The bodies Teams answers with (PROTOCOL.md §6).
testing.BODIES = {
  blocked = '{"errorCode":209,"message":"{\\"subCode\\":\\"MessageWritesBlocked\\",'
    .. '\\"details\\":\\"Thread is blocked from message writes.\\"}"}',
  not_found = '{"error":{"code":"ConversationNotFound","message":"Conversation not found"}}',
  throttled = '{"error":{"code":"TooManyRequests","message":"Too many requests"}}',
  failed = '{"error":{"code":"ServiceError","message":"Internal server error"}}',
}

---------------------------------------------------------------------------------------------
-- time

local function days_from_civil(y, m, d)   -- H. Hinnant's algorithm: days since 1970-01-01
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

--- "2027-03-14T09:00:00-04:00" / "...Z" / "2027-03-14" (UTC midnight) / unix ms → unix ms.
function testing.time(t)
  if math.type(t) == "integer" then return t end
  if type(t) == "number" then return math.floor(t) end
  if type(t) ~= "string" then error("teams.testing: a time is an ISO 8601 string or unix ms", 3) end
  local y, mo, d, rest = t:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then error(("teams.testing: cannot read the time %q"):format(t), 3) end
  local h, mi, s, frac, zone = 0, 0, 0, 0, "Z"
  if rest ~= "" then
    local hh, mm, tail = rest:match("^[T ](%d%d):(%d%d)(.*)$")
    if not hh then error(("teams.testing: cannot read the time %q"):format(t), 3) end
    h, mi = tonumber(hh), tonumber(mm)
    local ss, tail2 = tail:match("^:(%d%d)(.*)$")
    if ss then s, tail = tonumber(ss), tail2 end
    local f, tail3 = tail:match("^%.(%d+)(.*)$")
    if f then frac, tail = tonumber(("0." .. f)), tail3 end
    zone = tail
  end
  local offset
  if zone == "Z" or zone == "z" then
    offset = 0
  else
    local sign, oh, om = zone:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then
      error(("teams.testing: %q needs a UTC offset (Z or +hh:mm): the test clock is not in "
        .. "a time zone"):format(t), 3)
    end
    offset = (tonumber(oh) * 60 + tonumber(om)) * (sign == "-" and -1 or 1)
  end
  local secs = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
    + h * 3600 + mi * 60 + s - offset * 60
  return secs * 1000 + math.floor(frac * 1000 + 0.5)
end

--- unix ms → "2027-03-14T13:00:00Z" (milliseconds shown only when there are some).
function testing.iso(ms)
  local s = os.date("!%Y-%m-%dT%H:%M:%S", ms // 1000)
  if ms % 1000 ~= 0 then s = s .. (".%03d"):format(ms % 1000) end
  return s .. "Z"
end

local UNITS = { ms = 0.001, s = 1, m = 60, h = 3600, d = 86400, w = 604800 }

--- 90 / "90s" / "15m" / "2h" / "1d" / "1h30m" / "500ms" → seconds.
function testing.duration(d)
  if type(d) == "number" then return d end
  if type(d) ~= "string" or d == "" then error("teams.testing: a duration is seconds or \"2h\"", 3) end
  local total, pos = 0, 1
  while pos <= #d do
    local n, unit, nxt = d:match("^%s*(%d+%.?%d*)%s*(%a*)%s*()", pos)
    unit = unit and unit:lower()
    if unit == "" then unit = "s" end
    if not n or not UNITS[unit] then
      error(("teams.testing: cannot read the duration %q (use s, m, h, d, ms)"):format(d), 3)
    end
    total = total + tonumber(n) * UNITS[unit]
    pos = nxt
  end
  return total
end

---------------------------------------------------------------------------------------------
-- people, teams, chats

local function slug(s) return (s:lower():gsub("[^%w]+", "-"):gsub("^%-+", ""):gsub("%-+$", "")) end
local function title(s) return (s:gsub("(%a)([%w]*)", function(a, b) return a:upper() .. b end)) end

--- "megan" → { id = "29:megan", name = "Megan", aad_object_id = "aad-megan" }; a table is
--- completed the same way (id, name, aad_object_id, timezone, locale).
function testing.user(u)
  if type(u) == "table" then
    if u.id == nil and u.name == nil then error("teams.testing: a user needs an id or a name", 3) end
    local out = {}
    for k, v in pairs(u) do out[k] = v end
    local base = u.name or u.id:gsub("^29:", "")
    out.id = out.id or ("29:" .. slug(base))
    out.name = out.name or title(base)
    out.aad_object_id = out.aad_object_id or ("aad-" .. slug(out.id:gsub("^29:", "")))
    return out
  end
  if type(u) ~= "string" or u == "" then error("teams.testing: a user is a name or a table", 3) end
  if u:match("^29:") then
    local base = u:sub(4)
    return { id = u, name = title(base), aad_object_id = "aad-" .. slug(base) }
  end
  return { id = "29:" .. slug(u), name = title(u), aad_object_id = "aad-" .. slug(u) }
end

--- "Contoso" → { id = "19:contoso@thread.tacv2", name = "Contoso", aad_group_id = "group-contoso" }.
--- The team's General channel has the team's id, as in Teams.
function testing.team(t)
  if type(t) == "table" then
    local out = {}
    for k, v in pairs(t) do out[k] = v end
    local base = t.name or t.id
    if not base then error("teams.testing: a team needs an id or a name", 3) end
    out.id = out.id or ("19:" .. slug(base) .. "@thread.tacv2")
    out.name = out.name or base
    out.aad_group_id = out.aad_group_id or ("group-" .. slug(base))
    return out
  end
  if type(t) ~= "string" or t == "" then error("teams.testing: a team is a name or a table", 3) end
  if t:match("^19:") then return { id = t, name = t, aad_group_id = "group-" .. slug(t) } end
  return { id = "19:" .. slug(t) .. "@thread.tacv2", name = t, aad_group_id = "group-" .. slug(t) }
end

local function personal_id(user) return "a:" .. user.id end
local function chat_id(name)
  if name:match("^19:") then return name end
  return "19:" .. slug(name) .. "@thread.v2"
end
local function channel_id(team, channel)
  if channel == nil then return team.id end
  if channel:match("^19:") then return channel end
  return "19:" .. slug(team.name) .. "-" .. slug(channel) .. "@thread.tacv2"
end

local function scope_of_id(id)
  if id:match("^a:") then return "personal" end
  if id:match("@thread%.tacv2") or id:match("@thread%.skype") then return "channel" end
  if id:match("^19:") then return "groupChat" end
  return "personal"
end

---------------------------------------------------------------------------------------------
-- JSON helpers

local function decode(s)
  if type(s) ~= "string" or s == "" then return nil end
  local ok, v = pcall(cjson.decode, s)
  if ok then return v end
  return nil
end

local function nonnull(v) if v ~= cjson.null then return v end end

local function card_texts(v, out, depth)
  if type(v) ~= "table" or depth > 40 then return out end
  for k, x in pairs(v) do
    if type(x) == "string" and (k == "text" or k == "title" or k == "value") then
      out[#out + 1] = x
    elseif type(x) == "table" then
      card_texts(x, out, depth + 1)
    end
  end
  return out
end

---------------------------------------------------------------------------------------------
-- the bot under test

local Bot = {}
Bot.__index = Bot

local live   -- the one bot with a live host (virtual time is process-wide)

local HOST_OPTS = {
  "tenant_rps", "governor", "max_attempts", "retry_base_ms", "response_deadline_ms",
  "task_slice_ms", "lua_memory_mb", "default_tz",
}
local LOAD_OPTS = { "start", "tenant", "bot_id", "bot_name", "service_url", "user", "locale" }

-- Levenshtein distance, for "did you mean".
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a:byte(i) == b:byte(j) and 0 or 1))
    end
    prev = cur
  end
  return prev[#b]
end

local function check_load_opts(opts)
  if type(opts) ~= "table" then error("teams.testing.load: options must be a table", 3) end
  local known = {}
  for _, k in ipairs(LOAD_OPTS) do known[k] = true end
  for _, k in ipairs(HOST_OPTS) do known[k] = true end
  for k in pairs(opts) do
    if not known[k] then
      local best, bd = nil, math.huge
      if type(k) == "string" then
        for name in pairs(known) do
          local d = distance(k, name)
          if d < bd or (d == bd and name < best) then best, bd = name, d end
        end
      end
      local hint = best and bd <= math.max(2, #tostring(k) // 3) and (" (did you mean %s?)"):format(best) or ""
      error(("teams.testing.load: unknown option '%s'%s"):format(tostring(k), hint), 3)
    end
  end
end

--- Loads a bot script into a fresh herald core. Options: start (ISO time or unix ms, default
--- 2027-01-01T00:00:00Z), tenant, bot_id, bot_name, service_url, user (the default user),
--- locale, and the host's own: tenant_rps, governor, max_attempts, retry_base_ms,
--- response_deadline_ms, task_slice_ms, lua_memory_mb, default_tz. Any other option raises.
function testing.load(script, opts)
  if type(script) ~= "string" then error("teams.testing.load expects the path of a bot script", 2) end
  opts = opts or {}
  check_load_opts(opts)
  local self = setmetatable({ script = script, opts = opts }, Bot)
  self:reset()
  return self
end

--- A fresh core for the same script and options: empty database, the clock back at the start,
--- no fake answers, nothing sent. Returns the bot.
function Bot:reset()
  if self.host then self.host:close() end
  local o, d = self.opts, testing.defaults
  self.tenant = o.tenant or d.tenant
  self.bot_id = o.bot_id or d.bot_id
  self.bot_name = o.bot_name or d.bot_name
  self.service_url = o.service_url or d.service_url
  self.locale = o.locale or d.locale
  self.default_user = testing.user(o.user or d.user)
  -- the bot's app id is its id without "28:", as a deployed bot's: create_conversation knows
  -- who it is before any activity stored a reference
  local spec = { script = self.script, start_ms = testing.time(o.start or d.start),
                 app_id = (self.bot_id:gsub("^28:", "")) }
  for _, k in ipairs(HOST_OPTS) do spec[k] = o[k] end
  self.start_ms = spec.start_ms
  self.host = core.new(spec)
  live = self
  self.seq = 0
  self.decoded = {}        -- every request, decoded, in order
  self.mark = 0            -- bot:clear() hides requests up to here
  self.convs = {}          -- conversation id → { scope, team, chat, channel }
  self.threads = 0
  self.last_activity = nil
  -- what the fake answers roster, channel and team reads with: { explicit, list/details }
  self.rosters, self.channel_lists, self.team_infos = {}, {}, {}
  return self
end

--- Shuts the core down. The bot cannot be used afterwards (except bot:reset()).
function Bot:close()
  if self.host then self.host:close() end
  self.host = nil
  if live == self then live = nil end
end

local function host(self)
  if not self.host then error("teams.testing: this bot is closed (bot:reset() starts it again)", 3) end
  return self.host
end

function Bot:now() return host(self):now() end
--- The test clock as an ISO 8601 UTC string.
function Bot:clock() return testing.iso(host(self):now()) end

--- Passes time: 90, "90s", "15m", "2h", "1d", "1h30m". Every timer, retry, sleep and schedule
--- due on the way fires, in order, at its own instant.
function Bot:advance(d)
  local s = testing.duration(d)
  if s < 0 then error("teams.testing: cannot go back in time", 2) end
  host(self):advance(s)
  return self
end

--- Passes time up to an instant: "2027-03-14T09:00:00-04:00", "...Z" or unix ms.
function Bot:advance_to(t)
  local target, now = testing.time(t), host(self):now()
  if target < now then
    error(("teams.testing: %s is in the past (the clock is at %s)")
      :format(testing.iso(target), testing.iso(now)), 2)
  end
  host(self):advance((target - now) / 1000)
  return self
end

--- Runs whatever is ready now without moving the clock.
function Bot:settle()
  -- advance(0) also fires timers due at this very instant (the fake connector answers through
  -- zero-delay timers, which settle() alone leaves for the next advance)
  host(self):advance(0)
  return self
end

---------------------------------------------------------------------------------------------
-- activities in

function Bot:user(u) return u == nil and self.default_user or testing.user(u) end
function Bot:team(t) return testing.team(t) end
--- The personal (1:1) conversation id of a user: "a:29:alex". It is also what the fake
--- connector answers when the bot creates a 1:1 conversation with that user id.
function Bot:personal(u) return personal_id(self:user(u)) end
function Bot:group_chat(name) return chat_id(name or "group chat") end
function Bot:channel(team, channel) return channel_id(testing.team(team), channel) end

-- Where an activity happens: { conversation, scope (Teams' conversationType), team, channel,
-- chat, user }.
local function where(self, o)
  local user = self:user(o.user)
  local scope = o.scope
  if scope == "team" then scope = "channel" end
  local w = { user = user }
  if o.team or scope == "channel" then
    local team = testing.team(o.team or "team")
    w.scope, w.team = "channel", team
    w.channel = channel_id(team, o.channel)
    if o.channel and not o.channel:match("^19:") then w.channel_name = o.channel end
    w.conversation = o.conversation or w.channel
  elseif o.chat or scope == "groupChat" then
    w.scope = "groupChat"
    w.chat = o.chat or "group chat"
    w.conversation = o.conversation or chat_id(w.chat)
  elseif o.conversation then
    local known = self.convs[o.conversation:gsub(";messageid=.*$", "")]
    if known then
      for k, v in pairs(known) do w[k] = v end
      w.user = user
    else
      w.scope = scope or scope_of_id(o.conversation)
    end
    w.conversation = o.conversation
  else
    if scope and scope ~= "personal" then
      error(("teams.testing: unknown scope %q (personal, groupChat or team)"):format(scope), 3)
    end
    w.scope = "personal"
    w.conversation = personal_id(user)
  end
  if w.scope == "channel" and o.thread then
    local n = o.thread
    if n == true then self.threads = self.threads + 1; n = 1700000000000 + self.threads end
    w.conversation = w.conversation:gsub(";messageid=.*$", "") .. ";messageid=" .. tostring(n)
  end
  return w
end

local function account(user)
  return { id = user.id, name = user.name, aadObjectId = user.aad_object_id }
end

local function envelope(self, typ, w, o)
  self.seq = self.seq + 1
  local a = {
    type = typ,
    id = o.id or ("f:" .. self.seq),
    timestamp = testing.iso(host(self):now()),
    serviceUrl = o.service_url or self.service_url,
    channelId = "msteams",
    from = account(w.user),
    recipient = { id = self.bot_id, name = self.bot_name },
    conversation = {
      conversationType = w.scope,
      tenantId = o.tenant or self.tenant,
      id = w.conversation,
      isGroup = w.scope ~= "personal" or nil,
    },
    locale = o.locale or w.user.locale or self.locale,
    channelData = { tenant = { id = o.tenant or self.tenant } },
  }
  if w.team then
    a.channelData.team = { id = w.team.id, name = w.team.name, aadGroupId = w.team.aad_group_id }
    a.channelData.channel = { id = w.channel }
  end
  if w.chat and not w.chat:match("^19:") then a.conversation.name = w.chat end
  return a
end

---------------------------------------------------------------------------------------------
-- rosters, channels and teams: what the fake answers GET /v3/conversations/{id}/pagedmembers,
-- /members, /members/{id}, /v3/teams/{id}/conversations and /v3/teams/{id}

local function json_list(list) return #list == 0 and "[]" or cjson.encode(list) end

-- A roster entry as the connector sends it. A name or a kit user table (the fields teams.members
-- returns: id, name, aad_object_id, given_name, surname, email, user_principal_name, tenant,
-- role); a table with aadObjectId or objectId is raw Teams JSON and goes as it is.
local function member_json(self, m, level)
  if type(m) == "table" and (m.aadObjectId ~= nil or m.objectId ~= nil) then return m end
  if type(m) ~= "string" and type(m) ~= "table" then
    error("teams.testing: a member is a name, a user table or a Teams member table", level + 1)
  end
  local u = testing.user(m)
  local given, sur = u.name:match("^(%S+)%s+(.-)%s*$")
  local upn = u.user_principal_name or u.email or (slug(u.name):gsub("%-", ".") .. "@contoso.example")
  return { id = u.id, name = u.name, aadObjectId = u.aad_object_id,
           givenName = u.given_name or given or u.name, surname = u.surname or sur,
           email = u.email or upn, userPrincipalName = upn,
           tenantId = u.tenant or self.tenant, userRole = u.role or "user" }
end

local function roster_of(self, key)
  local r = self.rosters[key]
  if not r then r = { list = {} }; self.rosters[key] = r end
  return r
end

local function team_info(self, team)
  local t = self.team_infos[team.id]
  if not t then t = { team = team, details = {} }; self.team_infos[team.id] = t end
  return t
end

-- A team's channels as Teams lists them: General first (the team's id, name null: Teams leaves
-- it to the client to localise), then the others.
local function channels_json(self, tid)
  local out = { { id = tid, name = cjson.null } }
  local cl = self.channel_lists[tid]
  for _, c in ipairs(cl and cl.list or {}) do
    if c.id ~= tid then out[#out + 1] = { id = c.id, name = c.name or cjson.null, type = c.type } end
  end
  return out
end

-- Hands the fake what it answers for a team: its roster (also under each channel's id, as
-- Teams answers a channel's roster with the team's), its channels and its details.
local function sync_team(self, tid)
  local h = host(self)
  local r = roster_of(self, tid)
  local members = json_list(r.list)
  local channels = channels_json(self, tid)
  for _, c in ipairs(channels) do
    h:fake_data("members:" .. c.id, members)
    h:fake_data("pagesize:" .. c.id, r.page_size and tostring(r.page_size) or nil)
  end
  h:fake_data("channels:" .. tid, json_list(channels))
  local info = self.team_infos[tid] or { team = testing.team(tid), details = {} }
  local d = info.details
  local doc = { id = tid, name = info.team.name, aadGroupId = info.team.aad_group_id, type = "standard",
                memberCount = #r.list, channelCount = #channels }
  if d.name ~= nil then doc.name = d.name end
  if d.aad_group_id ~= nil then doc.aadGroupId = d.aad_group_id end
  if d.type ~= nil then doc.type = d.type end
  if d.member_count ~= nil then doc.memberCount = d.member_count end
  if d.channel_count ~= nil then doc.channelCount = d.channel_count end
  h:fake_data("team:" .. tid, cjson.encode(doc))
end

local function sync_roster(self, key)
  local r = roster_of(self, key)
  host(self):fake_data("members:" .. key, json_list(r.list))
  host(self):fake_data("pagesize:" .. key, r.page_size and tostring(r.page_size) or nil)
end

-- A user seen in a conversation is in its roster, unless the test set the roster itself.
local function note_member(self, key, user)
  local r = roster_of(self, key)
  if r.explicit then return false end
  for _, m in ipairs(r.list) do if m.id == user.id then return false end end
  r.list[#r.list + 1] = member_json(self, user, 1)
  return true
end

local function drop_member(self, key, user)
  local r = roster_of(self, key)
  if r.explicit then return false end
  for i, m in ipairs(r.list) do
    if m.id == user.id then table.remove(r.list, i); return true end
  end
  return false
end

local function note_channel(self, tid, id, name)
  if id == tid then return false end
  local cl = self.channel_lists[tid]
  if not cl then cl = { list = {} }; self.channel_lists[tid] = cl end
  if cl.explicit then return false end
  for _, c in ipairs(cl.list) do if c.id == id then return false end end
  cl.list[#cl.list + 1] = { id = id, name = name }
  return true
end

local function remember(self, w, added, removed)
  local base = w.conversation:gsub(";messageid=.*$", "")
  self.convs[base] = { scope = w.scope, team = w.team, channel = w.channel, chat = w.chat }
  local key, changed = base, false
  if w.team then
    key = w.team.id
    if not self.team_infos[key] then team_info(self, w.team); changed = true end
    changed = note_channel(self, key, w.channel, w.channel_name) or changed
  end
  changed = note_member(self, key, w.user) or changed
  for _, m in ipairs(added or {}) do changed = note_member(self, key, testing.user(m)) or changed end
  for _, m in ipairs(removed or {}) do changed = drop_member(self, key, testing.user(m)) or changed end
  if changed then
    if w.team then sync_team(self, key) else sync_roster(self, key) end
  end
end

-- A roster's key (a team's id, or a conversation id without its thread) and its team, if any.
local function roster_target(self, t, level)
  if type(t) == "table" then
    local team = testing.team(t)
    return team.id, (self.team_infos[team.id] or {}).team or team
  end
  if type(t) ~= "string" or t == "" then
    error("teams.testing: expected a team (name, id or table) or a conversation id", level + 1)
  end
  local base = t:gsub(";messageid=.*$", "")
  local known = self.convs[base]
  if known and known.team then return known.team.id, known.team end
  if self.team_infos[base] then return base, self.team_infos[base].team end
  if known or base:match("^a:") or base:match("@thread%.v2$") or base:match("^29:") then
    return base, nil
  end
  local team = testing.team(base)
  return team.id, (self.team_infos[team.id] or {}).team or team
end

--- The roster the fake answers for a team or a conversation: members are names ("megan"), user
--- tables with the fields teams.members returns ({id, name, aad_object_id, given_name, surname,
--- email, user_principal_name, tenant, role}), or raw Teams member JSON (a table with
--- aadObjectId, sent as it is). opts: { page_size = n }: no page holds more than n members,
--- whatever pageSize the bot asks for, so a short roster still exercises continuation tokens.
--- Replaces what the kit gathered from activities (which stops adding to it). Returns the bot.
function Bot:roster(target, members, opts)
  local key, team = roster_target(self, target, 2)
  if type(members) ~= "table" then error("teams.testing: bot:roster expects a list of members", 2) end
  local bad = opts ~= nil and type(opts) ~= "table"
  for k, v in pairs(type(opts) == "table" and opts or {}) do
    if k ~= "page_size" or math.type(v) ~= "integer" or v < 1 then bad = true end
  end
  if bad then error("teams.testing: bot:roster options are { page_size = n (n >= 1) }", 2) end
  local r = roster_of(self, key)
  r.explicit, r.list, r.page_size = true, {}, opts and opts.page_size
  for i, m in ipairs(members) do r.list[i] = member_json(self, m, 2) end
  if team then team_info(self, team); sync_team(self, key) else sync_roster(self, key) end
  return self
end

--- A team's channels as the fake lists them (GET /v3/teams/{id}/conversations): names
--- ("Design"), or tables {id =, name =, type =}. The General channel (the team's id) is always
--- first. Replaces the channels the kit gathered from activities. Returns the bot.
function Bot:channels(team, channels)
  if type(channels) ~= "table" then error("teams.testing: bot:channels expects a list of channels", 2) end
  local tid, t = roster_target(self, team, 2)
  t = t or testing.team(tid)
  local list = {}
  for _, c in ipairs(channels) do
    if type(c) == "string" then
      if c ~= "General" then list[#list + 1] = { id = channel_id(t, c), name = c } end
    elseif type(c) == "table" and (c.id or c.name) then
      list[#list + 1] = { id = c.id or channel_id(t, c.name), name = c.name, type = c.type }
    else
      error("teams.testing: a channel is a name or a table {id =, name =}", 2)
    end
  end
  self.channel_lists[tid] = { explicit = true, list = list }
  team_info(self, t)
  sync_team(self, tid)
  return self
end

local TEAM_DETAILS = { name = true, aad_group_id = true, type = true, member_count = true, channel_count = true }

--- What the fake answers for GET /v3/teams/{id}: { name =, aad_group_id =, type =,
--- member_count =, channel_count = } (the fields teams.team returns) over the defaults: the
--- team's name and group id, type "standard", and the counts of its roster and channels.
--- Returns the bot.
function Bot:team_details(team, details)
  if type(details) ~= "table" then error("teams.testing: bot:team_details expects a table", 2) end
  for k in pairs(details) do
    if not TEAM_DETAILS[k] then error(("teams.testing: bot:team_details: unknown field '%s'"):format(tostring(k)), 2) end
  end
  local tid, t = roster_target(self, team, 2)
  local info = team_info(self, t or testing.team(tid))
  for k, v in pairs(details) do info.details[k] = v end
  sync_team(self, tid)
  return self
end

-- An HTTP answer as the caller gets it: status, body (the bytes, "" when empty) and json (the
-- body decoded, nil when it is not JSON); status and body are nil while the handler still runs.
local function answer(r, status, body)
  r.status, r.pending = status, status == nil
  r.body = body
  r.json = body and body ~= "" and decode(body) or nil
  return r
end

--- Posts a Bot Framework activity (a table or a JSON string) as Teams would, and runs what it
--- starts until it waits on the clock. Returns { status, body (the answer's text, as Teams gets
--- it), json (the body decoded, or nil), activity, conversation, pending }: status is nil
--- (pending = true) while the handler still runs, e.g. in teams.sleep; Teams then gets its
--- answer at the response deadline.
function Bot:post(activity)
  local json = type(activity) == "string" and activity or cjson.encode(activity)
  local a = type(activity) == "table" and activity or decode(activity)
  self.last_activity = json
  local status, body = host(self):post(json)
  host(self):advance(0)
  return answer({ activity = a,
                  conversation = a and type(a.conversation) == "table" and a.conversation.id or nil },
                status, body)
end

--- Posts the last activity again, same id: what Teams does when it retries a delivery.
function Bot:redeliver()
  if not self.last_activity then error("teams.testing: nothing was posted yet", 2) end
  return self:post(self.last_activity)
end

--- An outside system calls POST /api/notify/{name} with a JSON body (a table or a string):
--- runs teams.on_notify(name, fn). Returns { status, body (the answer's text, as the caller
--- gets it), json (the body decoded, or nil), pending }: status nil while the handler still
--- runs (it then gets 202 at the deadline).
function Bot:notify(name, payload)
  if type(name) ~= "string" then error("teams.testing: bot:notify expects a trigger name", 2) end
  local json = payload
  if type(payload) == "table" then json = cjson.encode(payload) elseif payload == nil then json = "" end
  local status, body = host(self):notify(name, json)
  host(self):advance(0)
  return answer({}, status, body)
end

local function signals(o, default_first, default_second)
  local list
  if o.via then
    list = { o.via }
  elseif o.both == false then
    list = { default_first }
  else
    list = { default_first, default_second }
    if o.first == default_second then list = { default_second, default_first } end
  end
  for _, s in ipairs(list) do
    if s ~= "installationUpdate" and s ~= "conversationUpdate" then
      error(("teams.testing: unknown signal %q"):format(tostring(s)), 3)
    end
  end
  return list
end

local function install_activity(self, typ, w, o, add)
  local a = envelope(self, typ, w, o)
  if typ == "installationUpdate" then
    a.action = o.action or (add and "add" or "remove")
    a.channelData.source = { name = "message" }
    a.channelData.settings = { selectedChannel = { id = w.channel or w.conversation } }
    a.entities = { { type = "clientInfo", locale = a.locale } }
  else
    local bot = { id = self.bot_id }
    local members = { bot }
    if w.scope == "personal" then members = { account(w.user), bot } end
    if add then a.membersAdded = members else a.membersRemoved = members end
    if w.team then a.channelData.eventType = add and "teamMemberAdded" or "teamMemberRemoved" end
    if w.team and add then a.channelData.settings = { selectedChannel = { id = w.channel } } end
  end
  return a
end

local function install(self, o, add)
  o = o or {}
  local w = where(self, o)
  remember(self, w)
  local results = {}
  for _, typ in ipairs(signals(o, "installationUpdate", "conversationUpdate")) do
    results[#results + 1] = self:post(install_activity(self, typ, w, o, add))
  end
  return w.conversation, results
end

--- Installs the bot. { scope = "personal" | "groupChat" | "team", user =, team =, channel =,
--- chat =, conversation = } Like Teams, it sends installationUpdate then conversationUpdate;
--- first = "conversationUpdate" swaps them, both = false or via = "..." sends one.
--- Returns the conversation id and the list of results.
function Bot:install(o) return install(self, o, true) end

--- Uninstalls the bot (installationUpdate remove + conversationUpdate membersRemoved).
function Bot:uninstall(o) return install(self, o, false) end

local function members_activity(self, o, key)
  o = o or {}
  if type(o.members) ~= "table" or #o.members == 0 then
    error(("teams.testing: %s needs members = { \"megan\", ... }"):format(key), 3)
  end
  local w = where(self, o)
  if key == "membersAdded" then remember(self, w, o.members) else remember(self, w, nil, o.members) end
  local a = envelope(self, "conversationUpdate", w, o)
  local list = {}
  for i, m in ipairs(o.members) do list[i] = account(testing.user(m)) end
  a[key] = list
  if w.team then
    a.channelData.eventType = key == "membersAdded" and "teamMemberAdded" or "teamMemberRemoved"
  end
  return self:post(a)
end

--- Other people join: { members = { "megan", ... }, team = | chat = | conversation =, user = (who
--- added them) }.
function Bot:members_added(o) return members_activity(self, o, "membersAdded") end
function Bot:members_removed(o) return members_activity(self, o, "membersRemoved") end

local function with_timezone(a, tz)
  if not tz then return end
  a.localTimezone = tz
  a.entities = a.entities or {}
  table.insert(a.entities, { type = "clientInfo", locale = a.locale, country = "US",
                             platform = "Web", timezone = tz })
end

--- A user writes to the bot. Options: user =, conversation =, scope =, team =, channel =,
--- chat =, thread = (true or a message id: a channel reply chain), timezone = (IANA, as Teams'
--- localTimezone and clientInfo), locale =, mentions = { "bot", "megan", {id=, name=} }
--- (every <at>Name</at> must be in the text; the bot's is added when missing), id =, value =,
--- attachments =. In a channel or group chat the bot is mentioned unless mention_bot = false
--- (Teams only delivers those messages to a bot that is mentioned).
function Bot:message(text, o)
  o = o or {}
  if type(text) ~= "string" then error("teams.testing: bot:message expects the text", 2) end
  local w = where(self, o)
  remember(self, w)
  local a = envelope(self, "message", w, o)
  a.textFormat = "plain"
  local mentions = {}
  for _, m in ipairs(o.mentions or {}) do mentions[#mentions + 1] = m end
  local mention_bot = o.mention_bot
  if mention_bot == nil then mention_bot = w.scope ~= "personal" end
  if mention_bot then
    local has = false
    for _, m in ipairs(mentions) do if m == "bot" then has = true end end
    if not has then table.insert(mentions, 1, "bot") end
  end
  local entities = {}
  for _, m in ipairs(mentions) do
    local who
    if m == "bot" then
      who = { id = self.bot_id, name = self.bot_name }
      local tag = "<at>" .. self.bot_name .. "</at>"
      if not text:find(tag, 1, true) then text = tag .. " " .. text end
    else
      local u = testing.user(m)
      who = { id = u.id, name = u.name }
      if not text:find("<at>" .. u.name .. "</at>", 1, true) then
        error(("teams.testing: the text must contain <at>%s</at> to mention %s")
          :format(u.name, u.id), 2)
      end
    end
    entities[#entities + 1] = { type = "mention", text = "<at>" .. who.name .. "</at>", mentioned = who }
  end
  a.text = text
  if #entities > 0 then a.entities = entities end
  with_timezone(a, o.timezone or w.user.timezone)
  if o.value ~= nil then a.value = o.value end
  if o.attachments ~= nil then a.attachments = o.attachments end
  if o.reply_to_id then a.replyToId = o.reply_to_id end
  return self:post(a)
end

--- An invoke activity: bot:invoke("adaptiveCard/action", value, opts). Returns the result of
--- bot:post; for an invoke, status and body are what on_invoke returned.
function Bot:invoke(name, value, o)
  o = o or {}
  local w = where(self, o)
  remember(self, w)
  local a = envelope(self, "invoke", w, o)
  a.name = name
  a.value = value
  with_timezone(a, o.timezone or w.user.timezone)
  if o.reply_to_id then a.replyToId = o.reply_to_id end
  return self:post(a)
end

--- The user presses an Action.Execute button: invoke "adaptiveCard/action" with
--- value = { action = { type = "Action.Execute", verb =, data = data }, trigger = "manual" }.
--- Options as bot:message, plus verb = and raw = true (data is the whole value).
function Bot:card_action(data, o)
  o = o or {}
  local value = data
  if not o.raw then
    value = { action = { type = "Action.Execute", verb = o.verb, data = data or {} }, trigger = "manual" }
  end
  return self:invoke("adaptiveCard/action", value, o)
end

--- The user presses an Action.Submit button: a message with value = data and no text.
function Bot:submit(data, o)
  o = o or {}
  local w = where(self, o)
  remember(self, w)
  local a = envelope(self, "message", w, o)
  a.value = data
  with_timezone(a, o.timezone or w.user.timezone)
  return self:post(a)
end

---------------------------------------------------------------------------------------------
-- the fake connector

local function add_rule(self, r)
  if r.retry_after ~= nil then r.retry_after = tostring(r.retry_after) end   -- the core reads strings
  host(self):respond(r)
end

--- Adds a raw rule to the fake connector: { match = substring of the decoded URL path,
--- method =, status =, body =, retry_after =, delay_ms =, reset =, timeout =, times = }.
--- Rules are checked in the order they were added; the first that matches answers.
function Bot:respond(r)
  if type(r) ~= "table" then error("teams.testing: bot:respond expects a table", 2) end
  add_rule(self, r)
  return self
end

--- Forgets every fake answer: the connector answers like a healthy Teams again.
function Bot:heal()
  host(self):clear_responses()
  return self
end

local function conv_rules(self, conv, r, forever)
  if conv == nil or conv == "*" then
    r.match = ""
    add_rule(self, r)
    return
  end
  if type(conv) ~= "string" then error("teams.testing: expected a conversation id", 3) end
  -- "/conversations/<id>/" names the conversation and nothing longer; a channel's threads
  -- ("<id>;messageid=N") get their own rule when the answer holds for good
  r.match = "/conversations/" .. conv .. "/"
  add_rule(self, r)
  if forever and not conv:find(";messageid=", 1, true) then
    local r2 = {}
    for k, v in pairs(r) do r2[k] = v end
    r2.match = "/conversations/" .. conv .. ";messageid="
    add_rule(self, r2)
  end
end

local function times_opts(times)
  if type(times) == "table" then return times end
  return { times = times }
end

--- Teams answers 403 MessageWritesBlocked for this conversation (the user blocked the bot).
--- Options (or a number of times): times =, method =.
function Bot:block(conv, o)
  o = times_opts(o)
  conv_rules(self, conv, { status = 403, body = testing.BODIES.blocked, times = o.times,
                           method = o.method }, o.times == nil)
  return self
end

--- Teams answers 404 ConversationNotFound for this conversation.
function Bot:gone(conv, o)
  o = times_opts(o)
  conv_rules(self, conv, { status = 404, body = testing.BODIES.not_found, times = o.times,
                           method = o.method }, o.times == nil)
  return self
end

--- Teams answers 429 with Retry-After: retry_after seconds (default 1), `times` times
--- (default 1; -1 forever).
function Bot:throttle(conv, retry_after, times)
  local o = times_opts(times)
  conv_rules(self, conv, { status = 429, body = testing.BODIES.throttled,
                           retry_after = tostring(retry_after or 1), times = o.times or 1,
                           method = o.method }, false)
  return self
end

--- Teams answers `status` (default 500) `times` times (default 1; -1 forever). Options table:
--- { times =, method =, body =, retry_after =, reset = true (connection reset), timeout = true }.
function Bot:fail(conv, status, times)
  local o = times_opts(times)
  conv_rules(self, conv, { status = status or 500, body = o.body or testing.BODIES.failed,
                           times = o.times or 1, method = o.method, retry_after = o.retry_after,
                           reset = o.reset, timeout = o.timeout }, false)
  return self
end

-- What the fake answered a request with: (id, activityId) from its body, or nil (no body, not
-- JSON, or no id: a 202 with an empty body, as the Agents Playground answers, has none).
local function answered_ids(rec)
  local v = decode(rec.answer)
  if type(v) ~= "table" then return nil end
  local id, activity_id = nonnull(v.id), nonnull(v.activityId)
  return type(id) == "string" and id or nil, type(activity_id) == "string" and activity_id or nil
end

local function decode_request(self, i, rec)
  local op = {
    index = i, method = rec.method, url = rec.url, path = rec.path, status = rec.status,
    at = rec.at, json = rec.body, answer = rec.answer,
  }
  op.ok = rec.status >= 200 and rec.status < 300
  local id, activity_id = answered_ids(rec)
  local body = decode(rec.body)
  op.body = body
  local conv, tail = rec.path:match("/v3/conversations/(.-)/activities(.*)$")
  local msg = body
  if conv then
    op.conversation = conv
    local target = tail:match("^/(.+)$")
    if rec.method == "POST" then
      op.op = target and "reply" or "send"
      op.reply_to = target
      op.activity_id = op.ok and id or nil
    elseif rec.method == "PUT" then
      op.op, op.activity_id = "update", target
    elseif rec.method == "DELETE" then
      op.op, op.activity_id, msg = "delete", target, nil
    else
      op.op = rec.method:lower()
    end
  elseif rec.method == "POST" and rec.path:match("/v3/conversations/?$") then
    op.op = "create"
    body = body or {}
    local m = type(body.members) == "table" and body.members[1]
    op.user = type(m) == "table" and m.id or nil
    op.channel = type(body.channelData) == "table" and type(body.channelData.channel) == "table"
      and body.channelData.channel.id or nil
    op.tenant = nonnull(body.tenantId)
    op.conversation = op.ok and id or (op.user and "a:" .. op.user) or op.channel
    op.activity_id = op.ok and activity_id or nil
    msg = type(body.activity) == "table" and body.activity or nil
  else
    op.op = rec.method:lower()
  end
  if type(msg) == "table" then
    op.text = nonnull(msg.text)
    op.summary = nonnull(msg.summary)
    op.attachments = type(msg.attachments) == "table" and msg.attachments or nil
    op.cards = {}
    for _, att in ipairs(op.attachments or {}) do
      if type(att) == "table" and att.contentType == "application/vnd.microsoft.card.adaptive" then
        op.cards[#op.cards + 1] = att.content
      end
    end
    op.card = op.cards[1]
    op.mentions = {}
    for _, e in ipairs(type(msg.entities) == "table" and msg.entities or {}) do
      if type(e) == "table" and e.type == "mention" then op.mentions[#op.mentions + 1] = e end
    end
    op.importance = nonnull(msg.importance)
    op.reply_to = op.reply_to or nonnull(msg.replyToId)
  end
  return op
end

-- Every request so far, decoded (incrementally: replaying the fake's answers needs order).
local function all_ops(self)
  local recs = host(self):requests()
  for i = #self.decoded + 1, #recs do
    self.decoded[i] = decode_request(self, i, recs[i])
  end
  return self.decoded
end

local function conv_matches(op, conv)
  if conv == nil then return true end
  if op.conversation == conv or op.channel == conv then return true end
  return op.conversation ~= nil and op.conversation:sub(1, #conv + 11) == conv .. ";messageid="
end

local function filter_of(f)
  if f == nil then return {} end
  if type(f) == "string" then return { conversation = f } end
  if type(f) ~= "table" then error("teams.testing: filter is a conversation id or a table", 3) end
  return f
end

local function select_ops(self, f, delivered)
  f = filter_of(f)
  local out = {}
  local ops = all_ops(self)
  for i = self.mark + 1, #ops do
    local op = ops[i]
    if (not delivered or op.ok) and conv_matches(op, f.conversation)
        and (f.op == nil or f.op == op.op) then
      out[#out + 1] = op
    end
  end
  return out
end

--- Every operation Teams accepted (2xx) since the start or bot:clear(), in order:
--- { op = "create"|"send"|"reply"|"update"|"delete", conversation, activity_id, reply_to, text,
---   attachments, card (the first Adaptive Card's content), cards, mentions, summary, body (the
---   decoded JSON sent), at (unix ms), status, method, path }. Filter: a conversation id (its
---   threads and conversations created in it included) or { conversation =, op = }.
function Bot:sent(filter) return select_ops(self, filter, true) end

--- bot:sent(conversation).
function Bot:sent_to(conv) return select_ops(self, conv, true) end

--- Every request the bot made, failed attempts and retries included (status 0: reset/timeout).
function Bot:requests(filter) return select_ops(self, filter, false) end

--- The last accepted operation (in a conversation), or nil.
function Bot:last(filter)
  local ops = select_ops(self, filter, true)
  return ops[#ops]
end

--- New messages (create with a message, send, reply) accepted since the start or bot:clear().
function Bot:messages(filter)
  local out = {}
  for _, op in ipairs(select_ops(self, filter, true)) do
    if op.op == "send" or op.op == "reply" or (op.op == "create" and (op.text or op.attachments)) then
      out[#out + 1] = op
    end
  end
  return out
end

--- Forgets what was sent so far (for bot:sent, bot:requests and the assertions).
function Bot:clear()
  self.mark = #all_ops(self)
  return self
end

---------------------------------------------------------------------------------------------
-- state

function Bot:query(sql, ...) return host(self):query(sql, ...) end
function Bot:logs() return host(self):logs() end

--- The log lines of level error (a failed handler, with its traceback), oldest first.
function Bot:errors()
  local out = {}
  for _, l in ipairs(host(self):logs()) do
    if l:match("^%S+ error ") then out[#out + 1] = l end
  end
  return out
end
--- { tasks, refs, queued, sent, retries, throttled, handler_errors, timers }
function Bot:stats() return host(self):stats() end

--- Outbox rows (oldest first). Filter: a conversation id or { conversation =, state =, kind = }.
function Bot:outbox(f)
  f = filter_of(f)
  return host(self):query("SELECT * FROM outbox WHERE (?1 IS NULL OR conversation_id = ?1) AND "
    .. "(?2 IS NULL OR state = ?2) AND (?3 IS NULL OR kind = ?3) ORDER BY id",
    f.conversation, f.state, f.kind)
end

--- The attempts of one outbox operation: { op_id, at, status, code, error } rows.
function Bot:attempts(op_id)
  return host(self):query("SELECT * FROM outbox_attempts WHERE op_id = ? ORDER BY rowid", op_id)
end

--- The ledger (blocked / gone conversations). With a conversation id: its row or nil.
function Bot:ledger(conv)
  if conv then return host(self):query("SELECT * FROM ledger WHERE conversation_id = ?", conv)[1] end
  return host(self):query("SELECT * FROM ledger ORDER BY at, conversation_id")
end

--- Durable schedules, as teams.schedule.list(filter) gives them to the bot (id, handler, kind,
--- expr, tz, conversation, payload, missed, next_fire, last_fire, last_result, runs,
--- waiting_for_handler; ordered by id). Filter: a conversation id or { conversation =, handler = }.
function Bot:schedules(f)
  f = filter_of(f)
  return host(self):schedules(f.handler, f.conversation)
end
--- One schedule as teams.schedule.get(id) gives it, or nil.
function Bot:schedule(id)
  if type(id) ~= "string" then error("teams.testing: bot:schedule expects an id", 2) end
  return host(self):schedule(id)
end

--- Broadcast jobs (teams.broadcast). With an id: that job with its recipients
--- ({ broadcast_id, seq, conversation_id, user_id, state, op_id, activity_id } rows) or nil.
function Bot:broadcasts(id)
  if id == nil then return host(self):query("SELECT * FROM broadcasts ORDER BY id") end
  local b = host(self):query("SELECT * FROM broadcasts WHERE id = ?", id)[1]
  if b then
    b.recipients = host(self):query(
      "SELECT * FROM broadcast_recipients WHERE broadcast_id = ? ORDER BY seq", id)
  end
  return b
end

--- A stored conversation reference, exactly as teams.conversation(id) gives it to the bot
--- (tenant, user_aad_object_id, installed = true|false, ...), or nil.
function Bot:conversation(id)
  if type(id) ~= "string" then error("teams.testing: bot:conversation expects an id", 2) end
  return host(self):reference(id)
end

--- Stored references as teams.conversations(filter) yields them, in its order, as a list.
--- filter: { tenant =, scope =, team =, user =, include_uninstalled = }; with no filter, every
--- reference, uninstalled ones included.
function Bot:conversations(filter)
  if filter == nil then filter = { include_uninstalled = true } end
  if type(filter) ~= "table" then error("teams.testing: bot:conversations expects a filter table", 2) end
  return host(self):references(filter)
end

---------------------------------------------------------------------------------------------
-- describing what happened (for failure messages)

local function short(s, n)
  s = tostring(s):gsub("\n", "\\n")
  if #s > n then s = s:sub(1, n - 3) .. "..." end
  return s
end

local function describe_op(self, op)
  local parts = { ("%-6s"):format(op.op or "?") }
  parts[#parts + 1] = "-> " .. tostring(op.conversation or op.user or op.channel or op.path)
  if op.activity_id then
    parts[#parts + 1] = "#" .. op.activity_id
  elseif op.ok and (op.op == "send" or op.op == "reply") then
    parts[#parts + 1] = "(no activity id)"
  end
  parts[#parts + 1] = ("at %s (+%gs)"):format(testing.iso(op.at), (op.at - self.start_ms) / 1000)
  if not op.ok then parts[#parts + 1] = ("[HTTP %s]"):format(op.status == 0 and "no answer" or op.status) end
  if op.text then parts[#parts + 1] = '"' .. short(op.text, 100) .. '"' end
  if op.card then
    parts[#parts + 1] = "card: " .. short(table.concat(card_texts(op.card, {}, 0), " | "), 100)
  end
  return table.concat(parts, " ")
end

--- A readable list of every request since the start or bot:clear(), and any handler errors.
function Bot:describe()
  local ops = select_ops(self, nil, false)
  local lines = {}
  if #ops == 0 then
    lines[1] = "The bot sent nothing."
  else
    lines[1] = ("The bot sent %d request%s:"):format(#ops, #ops == 1 and "" or "s")
    for i, op in ipairs(ops) do lines[#lines + 1] = ("  %d. %s"):format(i, describe_op(self, op)) end
  end
  lines[#lines + 1] = ("The clock is at %s."):format(self:clock())
  local errs = {}
  for _, l in ipairs(self:errors()) do errs[#errs + 1] = "  " .. l end
  if #errs > 0 then
    lines[#lines + 1] = "Errors logged:"
    for _, l in ipairs(errs) do lines[#lines + 1] = l end
  end
  return table.concat(lines, "\n")
end

---------------------------------------------------------------------------------------------
-- matching and assertions

--- Does an operation match? expected: a string (found, plain, in the text or in any text of its
--- cards), a table of fields ({ op =, text =, activity_id =, reply_to =, ... }; text by
--- substring), or a function(op) → boolean.
function testing.matches(op, expected)
  if expected == nil then return true end
  local t = type(expected)
  if t == "function" then return expected(op) and true or false end
  if t == "string" then
    if op.text and op.text:find(expected, 1, true) then return true end
    for _, c in ipairs(op.cards or {}) do
      for _, s in ipairs(card_texts(c, {}, 0)) do
        if s:find(expected, 1, true) then return true end
      end
    end
    return false
  end
  if t == "table" then
    for k, v in pairs(expected) do
      if k == "text" then
        if not testing.matches(op, v) then return false end
      elseif op[k] ~= v then
        return false
      end
    end
    return true
  end
  error("teams.testing: expected a string, a table or a function", 3)
end

--- The bot under test in this process (the last one loaded and not closed).
function testing.current()
  if not live or not live.host then
    error("teams.testing: no bot is loaded (testing.load(script) first)", 3)
  end
  return live
end

local function show(v)
  if v == nil then return "anything" end
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) == "function" then return "a message the predicate accepts" end
  local keys = {}
  for k, x in pairs(v) do keys[#keys + 1] = ("%s = %s"):format(k, type(x) == "string" and ("%q"):format(x) or tostring(x)) end
  table.sort(keys)
  return "{ " .. table.concat(keys, ", ") .. " }"
end

local ok_luassert, luassert = pcall(require, "luassert")
local ok_say, say = pcall(require, "say")

local function register(name, fn, positive, negative)
  if not (ok_luassert and ok_say) then return end
  say:set("assertion." .. name .. ".positive", positive)
  say:set("assertion." .. name .. ".negative", negative)
  luassert:register("assertion", name, function(state, args)
    local ok, text = fn(table.unpack(args, 1, args.n))
    args[1], args.n, args.nofmt = text, 1, { true }
    return ok
  end, "assertion." .. name .. ".positive", "assertion." .. name .. ".negative")
end

local function count_matching(ops, expected)
  local n = 0
  for _, op in ipairs(ops) do if testing.matches(op, expected) then n = n + 1 end end
  return n
end

local function kinds(list) -- ops that are new messages
  local out = {}
  for _, op in ipairs(list) do
    if op.op == "send" or op.op == "reply" or (op.op == "create" and (op.text or op.attachments)) then
      out[#out + 1] = op
    end
  end
  return out
end

-- assert.sent_to(conv, expected): a message (create with a message, send or reply) was sent
-- to conv (its threads included) and matches expected. assert.not_sent_to(conv [, expected]).
register("sent_to", function(conv, expected)
  local bot = testing.current()
  local n = count_matching(kinds(bot:sent(conv)), expected)
  return n > 0, ("a message to %s matching %s\n%s"):format(tostring(conv), show(expected), bot:describe())
end, "Expected %s", "Did not expect %s")

-- assert.replied(conv, expected): a threaded reply (ev:reply) matching expected.
register("replied", function(conv, expected)
  local bot = testing.current()
  local n = count_matching(bot:sent { conversation = conv, op = "reply" }, expected)
  return n > 0, ("a reply in %s matching %s\n%s"):format(tostring(conv), show(expected), bot:describe())
end, "Expected %s", "Did not expect %s")

-- assert.sent_count(n [, conv [, expected]]): exactly n new messages (create with a message,
-- send, reply) — updates and deletes are not counted.
register("sent_count", function(n, conv, expected)
  local bot = testing.current()
  local got = count_matching(kinds(bot:sent(conv)), expected)
  return got == n, ("%d message%s%s%s, got %d\n%s"):format(n, n == 1 and "" or "s",
    conv and (" to " .. conv) or "", expected and (" matching " .. show(expected)) or "", got,
    bot:describe())
end, "Expected %s", "Did not expect %s")

-- assert.updated(conv, expected [, activity_id]): an update (PUT) whose new content matches.
register("updated", function(conv, expected, activity_id)
  local bot = testing.current()
  local n = 0
  for _, op in ipairs(bot:sent { conversation = conv, op = "update" }) do
    if (activity_id == nil or op.activity_id == activity_id) and testing.matches(op, expected) then
      n = n + 1
    end
  end
  return n > 0, ("an update in %s%s matching %s\n%s"):format(tostring(conv),
    activity_id and (" of #" .. activity_id) or "", show(expected), bot:describe())
end, "Expected %s", "Did not expect %s")

-- assert.deleted(conv [, activity_id]).
register("deleted", function(conv, activity_id)
  local bot = testing.current()
  local n = 0
  for _, op in ipairs(bot:sent { conversation = conv, op = "delete" }) do
    if activity_id == nil or op.activity_id == activity_id then n = n + 1 end
  end
  return n > 0, ("a delete in %s%s\n%s"):format(tostring(conv),
    activity_id and (" of #" .. activity_id) or "", bot:describe())
end, "Expected %s", "Did not expect %s")

-- assert.created(expected): the bot created a conversation (1:1 or channel thread) matching
-- expected ({ user = }, { channel = }, or text of its first message).
register("created", function(expected)
  local bot = testing.current()
  local n = count_matching(bot:sent { op = "create" }, expected)
  return n > 0, ("a created conversation matching %s\n%s"):format(show(expected), bot:describe())
end, "Expected %s", "Did not expect %s")

-- assert.in_ledger(conv [, state]): the conversation is in the ledger (state "blocked" or
-- "gone"), not cleared.
register("in_ledger", function(conv, state)
  local bot = testing.current()
  local row = bot:ledger(conv)
  local ok = row ~= nil and row.cleared_at == nil and (state == nil or row.state == state)
  local rows = {}
  for _, r in ipairs(bot:ledger()) do
    rows[#rows + 1] = ("  %s: %s (%s)%s"):format(r.conversation_id, r.state, tostring(r.code),
      r.cleared_at and " cleared" or "")
  end
  return ok, ("%s in the ledger%s; the ledger holds:\n%s"):format(tostring(conv),
    state and (" as " .. state) or "", #rows > 0 and table.concat(rows, "\n") or "  nothing")
end, "Expected %s", "Did not expect %s")

return testing
