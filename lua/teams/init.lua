-- teams — the bot author's module: hooks, events, send/update/delete, create_conversation,
-- stored conversations. Builds activities in Lua; all I/O goes through herald.core (C), which
-- yields the calling handler until the connector answers.
local core = require "herald.core"
local message = require "teams.message"
local cjson = require "cjson"

local teams = {}

---------------------------------------------------------------------------------------------
-- misspelt names

-- Levenshtein distance, for the did-you-mean of an unknown field.
local function distance(a, b)
  local prev, cur = {}, {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    cur[0] = i
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev, cur = cur, prev
  end
  return prev[#b]
end

-- The closest name of t to k, if close enough to be a typo (a third of its length, at least 2).
local function nearest(t, k)
  local best, best_d
  for name in next, t do
    if type(name) == "string" and name:sub(1, 1) ~= "_" then
      local d = name:lower() == k:lower() and 0 or distance(k, name)
      if not best_d or d < best_d or (d == best_d and name < best) then best, best_d = name, d end
    end
  end
  if best and best_d <= math.max(2, #k // 3) then return best end
end

-- Reading a name the module does not have raises at the reader's line, with the closest name:
-- teams.on_mesage(f) would otherwise fail as "attempt to call a nil value" or, worse, register
-- nothing. `rawget(teams, name)` still reads without raising (a feature test). Assigning a new
-- field is allowed.
local function strict(t, what, mt)
  mt = mt or {}
  mt.__index = function(_, k)
    if type(k) ~= "string" then return nil end
    local near = nearest(t, k)
    error(("unknown field '%s' in %s%s"):format(k, what, near and (" (did you mean %s?)"):format(near) or ""), 2)
  end
  mt.__metatable = false
  return setmetatable(t, mt)
end

local hooks = {}
core.set_hooks(hooks)   -- the host counts them: a generation that registers none is refused

local HOOKS = {
  "on_install", "on_uninstall", "on_members_added", "on_members_removed", "on_message",
  "on_invoke", "on_activity",
}
for _, name in ipairs(HOOKS) do
  teams[name] = function(fn)
    if type(fn) ~= "function" then
      error(("teams.%s expects a function, got %s"):format(name, type(fn)), 2)
    end
    hooks[name] = fn
  end
end

---------------------------------------------------------------------------------------------
-- conversations and messages

local function conv_arg(conv, fname)
  local t = type(conv)
  if t == "string" then return conv end
  if t == "table" then
    if type(conv.id) ~= "string" or conv.id == "" then
      error(("teams.%s: conversation table needs an 'id'"):format(fname), 3)
    end
    return conv
  end
  error(("teams.%s: conversation must be an id string or a reference table, got %s")
    :format(fname, t), 3)
end

local function bot_account(conv)
  local ref = type(conv) == "table" and conv or core.get_reference(conv)
  if ref and ref.bot_id then return { id = ref.bot_id, name = ref.bot_name } end
  local cfg = core.config()
  if cfg.app_id then return { id = "28:" .. cfg.app_id } end
  return nil
end

local function conv_id(conv) return type(conv) == "table" and conv.id or conv end

local function check_opts(opts, fname, allowed)
  if opts == nil then return nil end
  if type(opts) ~= "table" then error(("teams.%s: options must be a table"):format(fname), 3) end
  for k in pairs(opts) do
    if not allowed[k] then error(("teams.%s: unknown option '%s'"):format(fname, tostring(k)), 3) end
  end
  if opts.key ~= nil and (type(opts.key) ~= "string" or opts.key == "") then
    error(("teams.%s: 'key' must be a non-empty string"):format(fname), 3)
  end
  if opts.category ~= nil and type(opts.category) ~= "string" then
    error(("teams.%s: 'category' must be a string"):format(fname), 3)
  end
  return opts
end

-- An activity named by id, or by the script's own key: "123" or { key = "build-42" }.
-- A send or reply that Teams accepted with a 2xx but no id returns true instead of an id (the
-- Agents Playground answers a text-plus-card message 202 with an empty body). That message
-- exists but cannot be named: updating or deleting it is an operational failure, not misuse.
local NO_ACTIVITY_ID = "the message was accepted without an activity id (a 2xx with no \"id\"), "
  .. "so it cannot be updated or deleted"

local function target_arg(target, fname)
  if type(target) == "string" and target ~= "" then return target, nil end
  if type(target) == "table" and type(target.key) == "string" and target.key ~= "" then
    return nil, target.key
  end
  error(("teams.%s: expected an activity id or { key = ... }"):format(fname), 3)
end

--- Sends message to a conversation through the durable outbox. Waits for the final state and
--- returns the new activity id, or nil, message, code, details. Options: key = "..." records the
--- script's own name for the message (for update/delete later); wait = false returns the
--- operation id at once instead of waiting.
local caps = {}

--- Frequency cap for a category (Teams' guidance against spamming): at most max messages per
--- recipient per `per` seconds; over the cap a message is deferred to the next window ("defer",
--- the default) or dropped with code "capped" ("drop").
function teams.frequency_cap(category, cap)
  if type(category) ~= "string" then error("teams.frequency_cap expects a category name", 2) end
  if cap == nil then caps[category] = nil return end
  if type(cap) ~= "table" or math.type(cap.max) ~= "integer" or cap.max < 1
      or type(cap.per) ~= "number" or cap.per <= 0 then
    error("teams.frequency_cap expects { max = N, per = seconds [, over = \"defer\"|\"drop\"] }", 2)
  end
  if cap.over ~= nil and cap.over ~= "defer" and cap.over ~= "drop" then
    error("teams.frequency_cap: over is \"defer\" or \"drop\"", 2)
  end
  caps[category] = cap
end

local function with_category(opts)
  if not opts or not opts.category then return opts end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  local cap = caps[opts.category]
  if cap then o.cap_max, o.cap_per, o.cap_over = cap.max, cap.per, cap.over end
  return o
end

function teams.send(conv, msg, opts)
  conv = conv_arg(conv, "send")
  opts = check_opts(opts, "send", { key = true, wait = true, category = true })
  local json = message.encode(msg, { from = bot_account(conv), conversation = conv_id(conv) }, 2)
  return core.send(conv, json, nil, with_category(opts))
end

---------------------------------------------------------------------------------------------
-- opt-outs

local function subject_arg(who, fname)
  if type(who) == "table" then who = who.id end
  if type(who) ~= "string" or who == "" then
    error(("teams.%s expects a conversation id, a user id or a reference"):format(fname), 3)
  end
  return who
end

--- The user (or conversation) no longer wants messages of category ("*" or nil: any).
function teams.opt_out(who, category) core.opt_out(subject_arg(who, "opt_out"), category or "*", true) end
function teams.opt_in(who, category) core.opt_out(subject_arg(who, "opt_in"), category or "*", false) end
function teams.opted_out(who, category) return core.opted_out(subject_arg(who, "opted_out"), category or "*") end

---------------------------------------------------------------------------------------------
-- broadcasts

local BROADCAST_FIELDS = { to = true, message = true, category = true, name = true, key = true }

-- Recipients of a selector as {conversation=} or {user=, tenant=} entries.
local function recipients_of(to)
  local out = {}
  if type(to) ~= "table" then error("teams.broadcast: 'to' must be a table", 3) end
  if to.conversations then
    for _, c in ipairs(to.conversations) do out[#out + 1] = { conversation = conv_id(c) } end
  elseif to.users then
    if not to.tenant then error("teams.broadcast: 'users' needs 'tenant'", 3) end
    for _, u in ipairs(to.users) do out[#out + 1] = { user = u, tenant = to.tenant } end
  elseif to.team then
    local tenant = to.tenant
    if not tenant then
      local ref = core.find_channel(to.team)
      tenant = ref and ref.tenant
    end
    local members = teams.members(to.team)
    for m in members do
      out[#out + 1] = { user = m.id, tenant = m.tenant or tenant, name = m.name,
                        aad_object_id = m.aad_object_id }
    end
    if members.error then return nil, members.error, members.code end
  else
    local filter = { tenant = to.tenant, scope = to.scope or "personal", team = to.team_of, user = to.user }
    for ref in teams.conversations(filter) do
      out[#out + 1] = { conversation = ref.id, tenant = ref.tenant }
      if #out % 2000 == 0 then teams.sleep(0) end   -- 100,000 references are read over 50 turns
    end
  end
  return out
end

-- What a personalised message function is given: the recipient as herald knows it, from the
-- stored conversation (or the user's latest 1:1) and, for a team's roster, the roster record. A
-- table of its own, so nothing the function does to it changes the job.
local function recipient_view(r)
  local ref
  if r.conversation then ref = core.get_reference(r.conversation)
  elseif r.user then ref = core.find_user(r.user, r.tenant, "personal") end
  ref = ref or {}
  return {
    conversation = r.conversation or ref.id,
    user = ref.user_id or r.user,
    tenant = r.tenant or ref.tenant,
    name = r.name or ref.user_name,
    aad_object_id = r.aad_object_id or ref.user_aad_object_id,
    locale = ref.locale,
    timezone = ref.timezone,
  }
end

-- Writes list into prep 500 recipients a loop turn (each turn's rows commit with it), so inbound
-- traffic goes on while 100,000 recipients are written.
local function fill(prep, list, msg, personal)
  local chunk = {}
  for i, r in ipairs(list) do
    if personal then
      local m = msg(recipient_view(r))
      if m ~= nil then r.body = message.encode(m, nil, 2) end
    end
    if not personal or r.body then chunk[#chunk + 1] = r end
    if #chunk == 500 or i == #list then
      prep:add(chunk)
      chunk = {}
      teams.sleep(0)
    end
  end
end

--- Sends message to many recipients through a durable job: every recipient gets exactly one
--- outbox entry, at the tenant's pace; the job survives restarts and can be paused, resumed,
--- cancelled, updated and recalled. `to` is one of:
---   { tenant = ..., scope = "personal" }     stored conversations (a filter, as teams.conversations)
---   { conversations = { id, ... } }          listed conversations
---   { users = { "29:...", ... }, tenant = }  users, reached 1:1 (created where needed)
---   { team = "19:..." }                      every member of a team, 1:1
--- message is a message, or a function(recipient) returning one (personalised); the recipient
--- is { conversation, user, tenant, name, aad_object_id, locale, timezone } as herald knows it.
--- The job is created whole or not at all: if this call raises, its task is cancelled or herald
--- stops before it returns, nothing of it is sent. key (optional) makes it idempotent: a second
--- call with the same key returns the first job's id and creates nothing.
--- Returns the broadcast id, or nil, message, code.
function teams.broadcast_send(spec)
  if type(spec) ~= "table" then error("teams.broadcast expects a table", 2) end
  for k in pairs(spec) do
    if not BROADCAST_FIELDS[k] then error(("teams.broadcast: unknown field '%s'"):format(tostring(k)), 2) end
  end
  if spec.message == nil then error("teams.broadcast: 'message' is required", 2) end
  local name, category, key = spec.name, spec.category, spec.key
  if name == cjson.null then name = nil end          -- a JSON payload's null means absent
  if category == cjson.null then category = nil end
  if key == cjson.null then key = nil end
  if name ~= nil and type(name) ~= "string" then error("teams.broadcast: 'name' must be a string", 2) end
  if category ~= nil and type(category) ~= "string" then
    error("teams.broadcast: 'category' must be a string", 2)
  end
  if key ~= nil and (type(key) ~= "string" or key == "") then
    error("teams.broadcast: 'key' must be a non-empty string", 2)
  end
  if key then
    local id = core.broadcast_find(key)
    if id then return id end
  end
  local personal = type(spec.message) == "function"
  local body = not personal and message.encode(spec.message, { from = nil }, 2) or nil
  local list, err, code = recipients_of(spec.to)
  if not list then return nil, err, code end
  -- interleave tenants, so each one's pacing window stays busy instead of one tenant at a time
  local by_tenant, order = {}, {}
  for _, r in ipairs(list) do
    local t = r.tenant or ""
    if not by_tenant[t] then by_tenant[t] = {} order[#order + 1] = t end
    local q = by_tenant[t]
    q[#q + 1] = r
  end
  if #order > 1 then
    list = {}
    for i = 1, math.huge do
      local any = false
      for _, t in ipairs(order) do
        local r = by_tenant[t][i]
        if r then list[#list + 1] = r any = true end
      end
      if not any then break end
    end
  end
  local cap = category and caps[category]
  -- closed on every way out: a cancelled task closes it, an error is caught below to close it now
  local prep <close> = core.broadcast_prepare(name, body, category, cap and cap.max, cap and cap.per,
    cap and cap.over == "drop", key)
  local ok, err = pcall(fill, prep, list, spec.message, personal)
  if not ok then
    prep:close()
    error(err, 0)
  end
  return prep:commit()
end

teams.broadcast = strict({
  status = function(id) return core.broadcast_progress(id) end,
  pause = function(id) return core.broadcast_control(id, "pause") end,
  resume = function(id) return core.broadcast_control(id, "resume") end,
  cancel = function(id) return core.broadcast_control(id, "cancel") end,
  --- Replaces every delivered copy with message.
  update = function(id, msg) return core.broadcast_redo(id, message.encode(msg, nil, 2)) end,
  --- Deletes every delivered copy.
  recall = function(id) return core.broadcast_redo(id, nil) end,
}, "teams.broadcast", { __call = function(_, spec) return teams.broadcast_send(spec) end })

--- Replaces the content of a message the bot sent earlier, named by activity id or { key = ... }.
--- Options: send_if_missing = true sends a new message when the key was never sent.
function teams.update(conv, target, msg, opts)
  conv = conv_arg(conv, "update")
  if target == true then return nil, NO_ACTIVITY_ID, "no_activity_id" end
  local id, key = target_arg(target, "update")
  opts = check_opts(opts, "update", { send_if_missing = true, wait = true })
  local o = { key = key, send_if_missing = opts and opts.send_if_missing,
              wait = opts and opts.wait }
  local json = message.encode(msg, {
    from = bot_account(conv), conversation = conv_id(conv), id = id,
  }, 2)
  return core.update(conv, id, json, o)
end

--- Deletes a message the bot sent earlier, named by activity id or { key = ... }.
function teams.delete(conv, target, opts)
  conv = conv_arg(conv, "delete")
  if target == true then return nil, NO_ACTIVITY_ID, "no_activity_id" end
  local id, key = target_arg(target, "delete")
  opts = check_opts(opts, "delete", { wait = true })
  return core.delete(conv, id, { key = key, wait = opts and opts.wait })
end

-- Roster records read lately, by Teams id and by Entra object id, so that create_conversation
-- { user = m.id } can store the name and Entra id the roster gave (issue 12, bug 8). Two
-- generations of at most ROSTER_RECALL keys each (two per member): bounded memory (a few MB at
-- most), O(1) work, and at least the last 2,048 members always kept; what falls out is only what
-- create_conversation could not name.
local ROSTER_RECALL = 4096
local recalled, recalled_old, recalled_n = {}, {}, 0
local function recall_put(key, m)
  if key == nil then return end
  if recalled[key] == nil then
    recalled_n = recalled_n + 1
    if recalled_n > ROSTER_RECALL then recalled, recalled_old, recalled_n = {}, recalled, 1 end
  end
  recalled[key] = m
end
local function recall(key) return recalled[key] or recalled_old[key] end

-- The global proactive endpoints, for when no stored conversation tells us a regional one.
local GLOBAL_SERVICE_URL = "https://smba.trafficmanager.net/teams/"

--- Starts a 1:1 chat with a user, or a new thread in a channel.
--- 1:1:     teams.create_conversation{ user = "29:..." | member | aad_object_id = "...", tenant = "..." }
---          (user may be a member table from teams.members/member: its name and Entra id are stored)
--- thread:  teams.create_conversation{ channel = "19:...@thread.tacv2", message = ... }
--- Returns the conversation id (stored; usable with teams.send), the first activity id if a
--- message was posted, or nil, message, code.
function teams.create_conversation(p)
  if type(p) ~= "table" then error("teams.create_conversation expects a table", 2) end
  local user = p.user or p.aad_object_id
  if (user == nil) == (p.channel == nil) then
    error("teams.create_conversation: give exactly one of 'user' (or 'aad_object_id') and 'channel'", 2)
  end
  -- who: what is known of the user, stored with the new conversation (bug 8): the member table
  -- given as user, else the roster's recent record of this id, else the user's stored name
  local known, params, who, by_user
  if type(user) == "table" then
    who = user
    user = who.id or who.aad_object_id
    if type(user) ~= "string" or user == "" then
      error("teams.create_conversation: a member table as 'user' needs an 'id' or 'aad_object_id'", 2)
    end
  end
  if user then
    if type(user) ~= "string" or user == "" then error("teams.create_conversation: bad 'user'", 2) end
    who = who or recall(user)
    by_user = core.find_user(user, p.tenant)
    local tenant = p.tenant or (who and who.tenant) or (by_user and by_user.tenant)
    known = by_user or (tenant and core.find_tenant(tenant))
    if not tenant then
      error("teams.create_conversation: 'tenant' is required for a user never seen before", 2)
    end
    local bot = bot_account(known or {}) or error("teams.create_conversation: bot id unknown "
      .. "(no stored conversation and no app id configured)", 2)
    params = {
      isGroup = false,
      bot = bot,
      members = { { id = user } },
      tenantId = tenant,
      channelData = { tenant = { id = tenant } },
    }
  else
    if type(p.channel) ~= "string" or p.channel == "" then
      error("teams.create_conversation: bad 'channel'", 2)
    end
    if p.message == nil then
      error("teams.create_conversation: a channel thread needs a 'message' to start it", 2)
    end
    known = core.find_channel(p.channel)
    params = {
      isGroup = true,
      channelData = { channel = { id = p.channel } },
      tenantId = p.tenant or (known and known.tenant),
    }
  end
  if p.message ~= nil then
    params.activity = message.build(p.message, { from = params.bot or bot_account(known or {}) }, 2)
  end
  local service_url = p.service_url or (known and known.service_url) or GLOBAL_SERVICE_URL
  local id, activity_id, new_url, details = core.create(service_url, message.json(params),
    known and known.service_url == service_url and known.id or nil, params.tenantId,
    "create:" .. (user or p.channel))
  if not id then return nil, activity_id, new_url, details end
  core.put_reference {
    id = id,
    service_url = new_url or service_url,
    scope = user and "personal" or "channel",
    tenant = params.tenantId,
    channel_id = "msteams",
    bot_id = params.bot and params.bot.id or (known and known.bot_id),
    bot_name = known and known.bot_name or nil,
    user_id = user and (user:match("^29:") and user or (who and who.id)) or nil,
    user_aad_object_id = user and (not user:match("^29:") and user
      or (who and who.aad_object_id) or (by_user and by_user.user_aad_object_id)) or nil,
    user_name = user and ((who and who.name) or (by_user and by_user.user_name)) or nil,
    team_id = (not user and known) and known.team_id or nil,
    team_channel_id = p.channel,
  }
  return id, activity_id
end

--- Iterates stored conversation references.
--- filter: { tenant=, scope= "personal"|"groupChat"|"channel", team=, user=, include_uninstalled= }
function teams.conversations(filter)
  filter = filter or {}
  if type(filter) ~= "table" then error("teams.conversations expects a table or nil", 2) end
  local page, i, after, done = {}, 0, nil, false
  return function()
    i = i + 1
    if i > #page then
      if done then return nil end
      page = core.list(filter, after, 200)
      i = 1
      if #page < 200 then done = true end
      if #page == 0 then return nil end
      after = page[#page].id
    end
    return page[i]
  end
end

--- Iterates the ledger `herald blocked` shows: conversations whose user blocked the bot
--- ("blocked"), that Teams no longer knows ("gone"), or that uninstalled it ("uninstalled").
--- filter: { state =, tenant =, since = unix ms (marked at or after) }. Entries come in
--- conversation-id order, read from the database a page at a time, each
--- { conversation, state, since, code, last_error, user_id, user_aad_object_id, user_name, tenant }.
--- A store error ends the loop early and sets the iterator's `error` and `code`, as teams.members.
local LEDGER_STATES = { blocked = true, gone = true, uninstalled = true }
local LEDGER_FILTER = { state = true, tenant = true, since = true }
local LEDGER_PAGE = 200
function teams.ledger(filter)
  if filter ~= nil and type(filter) ~= "table" then error("teams.ledger expects a table or nil", 2) end
  filter = filter or {}
  for k in pairs(filter) do
    if not LEDGER_FILTER[k] then error(("teams.ledger: unknown filter '%s'"):format(tostring(k)), 2) end
  end
  if filter.state ~= nil and not LEDGER_STATES[filter.state] then
    error("teams.ledger: state is \"blocked\", \"gone\" or \"uninstalled\", got " .. tostring(filter.state), 2)
  end
  if filter.tenant ~= nil and type(filter.tenant) ~= "string" then
    error("teams.ledger: tenant must be a string", 2)
  end
  local since = filter.since
  if since ~= nil and math.type(since) ~= "integer" then
    since = type(since) == "number" and math.tointeger(since) or nil
    if not since then error("teams.ledger: since is a time in unix milliseconds (teams.now())", 2) end
  end
  local state, tenant = filter.state, filter.tenant
  local page, i, after, done = {}, 0, nil, false
  local it = {}
  local function step()
    i = i + 1
    if i > #page then
      if done then return nil end
      local err, code
      page, err, code = core.ledger(state, tenant, since, after, LEDGER_PAGE)
      i = 1
      if not page then
        page, done, it.error, it.code = {}, true, err, code
        return nil
      end
      if #page < LEDGER_PAGE then done = true end
      if #page == 0 then return nil end
      after = page[#page].conversation
    end
    return page[i]
  end
  return setmetatable(it, { __call = step, __metatable = false })
end

---------------------------------------------------------------------------------------------
-- rosters and teams (reads; each yields until the connector answers)

-- JSON null (cjson.null) means absent to a script.
local function nn(v) if v == cjson.null then return nil end return v end

local function member_of(m)
  if type(m) ~= "table" then return nil end
  for k, v in pairs(m) do if v == cjson.null then m[k] = nil end end
  local out = {
    id = m.id, name = m.name, aad_object_id = m.aadObjectId or m.objectId,
    given_name = m.givenName, surname = m.surname, email = m.email,
    user_principal_name = m.userPrincipalName, tenant = m.tenantId, role = m.userRole,
  }
  recall_put(out.id, out)
  recall_put(out.aad_object_id, out)
  return out
end

local BAD_BODY = "the connector answered with something that is not a JSON object"

-- The decoded JSON object at path | nil, message, code. Everything but misuse is an answer: a
-- connector error keeps its code, and a 2xx whose body is not a JSON object is "bad_response".
local function read_json(target, path)
  local body, status_or_err, code = core.get(target, path)
  if not body then return nil, status_or_err, code end
  local ok, doc = pcall(cjson.decode, body)
  if not ok or type(doc) ~= "table" then return nil, BAD_BODY, "bad_response" end
  return doc
end

local function id_arg(v, fname, what)
  if type(v) ~= "string" or v == "" then
    error(("teams.%s expects %s, got %s"):format(fname, what, type(v)), 3)
  end
  return v
end

--- One page of a conversation's or team's members: members, continuation token (nil at the end)
--- | nil, message, code.
function teams.members_page(target, token, page_size)
  id_arg(target, "members_page", "a conversation or team id")
  if token ~= nil then id_arg(token, "members_page", "a continuation token (or nil)") end
  local size = math.tointeger(page_size or 200)
  if not size or size < 1 then error("teams.members_page: page_size must be a positive integer", 2) end
  local path = "/v3/conversations/" .. core.encode_id(target) .. "/pagedmembers?pageSize=" .. size
  if token then path = path .. "&continuationToken=" .. core.encode_id(token) end
  local doc, err, code = read_json(target, path)
  if not doc then return nil, err, code end
  local list = doc.members
  if list == nil or list == cjson.null then list = {} end
  if type(list) ~= "table" then return nil, BAD_BODY, "bad_response" end
  local out = {}
  for _, m in ipairs(list) do out[#out + 1] = member_of(m) end
  local nxt = doc.continuationToken
  if type(nxt) ~= "string" or nxt == "" then nxt = nil end
  return out, nxt
end

--- Iterates every member of a conversation or team, following continuation tokens:
---   local members = teams.members(team_id)
---   for m in members do ... end
---   if members.error then ... end        -- members.error, members.code: why the loop ended early
--- A connector failure (first page or a later one) never raises: the loop ends after the members
--- already read, the iterator's `error` and `code` say why (nil when the roster was read whole),
--- and a warning is logged. A spent or failed iterator returns nil from then on.
function teams.members(target, opts)
  id_arg(target, "members", "a conversation or team id")
  if opts ~= nil and type(opts) ~= "table" then error("teams.members: options must be a table", 2) end
  local size = math.tointeger(opts and opts.page_size or 200)
  if not size or size < 1 then
    error("teams.members: page_size must be a positive integer", 2)
  end
  local page, i, token, started, done, count = {}, 0, nil, false, false, 0
  local it = {}
  local function step()
    if done then return nil end
    i = i + 1
    while i > #page do
      if started and not token then done = true return nil end
      local members, nxt, code = teams.members_page(target, token, size)
      if not members then
        done, page = true, {}
        it.error, it.code = nxt, code
        core.log("warn", ("teams.members(%s): the roster ended early, after %d members: %s (%s)")
          :format(target, count, tostring(nxt), tostring(code)))
        return nil
      end
      page, i, token, started = members, 1, nxt, true
    end
    count = count + 1
    return page[i]
  end
  return setmetatable(it, { __call = step, __metatable = false })
end

--- One member by Teams id, Entra object id or UPN | nil, message, code.
function teams.member(target, id)
  id_arg(target, "member", "a conversation or team id")
  id_arg(id, "member", "a member id (Teams id, Entra object id or UPN)")
  local doc, err, code = read_json(target, "/v3/conversations/" .. core.encode_id(target)
    .. "/members/" .. core.encode_id(id))
  if not doc then return nil, err, code end
  return member_of(doc)
end

--- A team's channels: { {id, name}, ... } | nil, message, code. The General channel's id is the team's.
function teams.channels(team)
  id_arg(team, "channels", "a team id")
  local doc, err, code = read_json(team, "/v3/teams/" .. core.encode_id(team) .. "/conversations")
  if not doc then return nil, err, code end
  local list = doc.conversations
  if list == nil or list == cjson.null then list = {} end
  if type(list) ~= "table" then return nil, BAD_BODY, "bad_response" end
  local out = {}
  for _, c in ipairs(list) do
    if type(c) == "table" then
      out[#out + 1] = { id = nn(c.id), name = nn(c.name) or "General", type = nn(c.channelType) or nn(c.type) }
    end
  end
  return out
end

--- A team's details: {id, name, aad_group_id, channel_count, member_count, type} | nil, message, code.
function teams.team(team)
  id_arg(team, "team", "a team id")
  local doc, err, code = read_json(team, "/v3/teams/" .. core.encode_id(team))
  if not doc then return nil, err, code end
  return { id = nn(doc.id), name = nn(doc.name), aad_group_id = nn(doc.aadGroupId), type = nn(doc.type),
           channel_count = nn(doc.channelCount), member_count = nn(doc.memberCount) }
end

--- The stored reference of a conversation id, or nil.
function teams.conversation(id)
  if type(id) ~= "string" then error("teams.conversation expects an id string", 2) end
  return core.get_reference(id)
end

--- Wall-clock time in unix milliseconds as herald sees it (the test clock under teams.testing):
--- use it rather than os.time() in anything a spec should control.
function teams.now() return core.now_ms() end

--- Yields the calling handler for the given number of seconds.
function teams.sleep(seconds)
  if type(seconds) ~= "number" then error("teams.sleep expects a number of seconds", 2) end
  return core.sleep(seconds)
end

function teams.log(level, ...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  core.log(level, table.concat(parts, " "))
end

teams.timer = strict(require "herald.timer", "teams.timer")

---------------------------------------------------------------------------------------------
-- durable schedules

local sched = require "herald.schedule"
local schedule_handlers = {}
sched.set_handlers(schedule_handlers)

--- Registers the handler durable schedules name. It runs in a task of its own with
--- ev = { schedule, handler, payload, conversation, due, fired_at } and ev:send(message).
function teams.on_schedule(name, fn)
  if type(name) ~= "string" or name == "" then error("teams.on_schedule expects a name", 2) end
  if type(fn) ~= "function" then error("teams.on_schedule expects a function", 2) end
  schedule_handlers[name] = fn
  hooks["schedule:" .. name] = fn   -- counts as a hook: a script of schedules alone is valid
end

local SCHEDULE_FIELDS = {
  id = true, handler = true, at = true, every = true, cron = true, tz = true,
  conversation = true, payload = true, missed = true,
}

--- Creates or replaces (same id) a durable schedule. Exactly one of:
---   at = "2026-11-22T09:00:00+01:00"  or  at = "2026-11-22T09:00", tz = "Europe/Paris"
---   every = 3600 (seconds) or "15m"/"2h"/"1d" (optionally "1d@2026-11-22T09:00")
---   cron = "0 9 * * 1-5", tz = "America/New_York" | "user"
--- tz = "user" follows the owner conversation's time zone as captured from its activities.
--- Returns id, next fire (unix seconds), or nil, message, "bad_schedule" (or "store": the
--- database cannot be written now).
local function schedule(spec)
  if type(spec) ~= "table" then error("teams.schedule expects a table", 2) end
  for k in pairs(spec) do
    if not SCHEDULE_FIELDS[k] then error(("teams.schedule: unknown field '%s'"):format(tostring(k)), 2) end
  end
  local kind, expr
  for _, k in ipairs { "at", "every", "cron" } do
    if spec[k] ~= nil then
      if kind then error("teams.schedule: give only one of 'at', 'every', 'cron'", 2) end
      kind, expr = k, spec[k]
    end
  end
  if not kind then error("teams.schedule: give one of 'at', 'every', 'cron'", 2) end
  if kind == "every" and type(expr) == "number" then expr = tostring(math.floor(expr)) end
  if type(expr) ~= "string" then error(("teams.schedule: '%s' must be a string"):format(kind), 2) end
  if type(spec.handler) ~= "string" then error("teams.schedule: 'handler' names a teams.on_schedule handler", 2) end
  local conv = spec.conversation
  if type(conv) == "table" then conv = conv.id end
  if spec.tz == "user" and not conv then error("teams.schedule: tz = \"user\" needs a 'conversation'", 2) end
  local payload = spec.payload
  if payload ~= nil then payload = message.json(payload) end
  local id = spec.id or (spec.handler .. ":" .. (conv or "") .. ":" .. kind .. ":" .. expr)
  local next_fire, err, code = sched.put {
    id = id, handler = spec.handler, kind = kind, expr = expr, tz = spec.tz,
    conversation = conv, payload = payload, missed = spec.missed,
  }
  if not next_fire then return nil, err, code end
  return id, next_fire
end

teams.schedule = strict({
  cancel = function(id)
    if type(id) ~= "string" then error("teams.schedule.cancel expects an id", 2) end
    return sched.cancel(id)
  end,
  get = function(id)
    if type(id) ~= "string" then error("teams.schedule.get expects an id", 2) end
    return sched.get(id)
  end,
  --- list{ handler =, conversation = } → array of schedules (each with next_fire, last_result, ...)
  list = function(filter)
    filter = filter or {}
    local out, after = {}, nil
    repeat
      local page = sched.list(filter.handler, filter.conversation, after, 200)
      for _, s in ipairs(page) do out[#out + 1] = s end
      after = page[#page] and page[#page].id
    until #page < 200
    return out
  end,
}, "teams.schedule", { __call = function(_, spec) return schedule(spec) end })

teams.card = message.card
teams.mention = message.mention
teams.array = message.array

---------------------------------------------------------------------------------------------
-- events

-- The metatable is not the method table: with __index = itself, ev.__index handed a script the
-- metatable every later event is given, and a __gc put there became a finalizer herald ran with
-- hooks off (an endless one hung the loop at the next reload).
local Event = {}
local EVENT_MT = { __index = Event, __metatable = false }

-- ev.send("x") (a dot for the colon) passes "x" as self: say so at the caller's line (level 3:
-- the method's caller), instead of failing inside this file on a string's missing field.
-- `field` is one every event of that kind has.
local function method_self(self, field, name)
  if type(self) ~= "table" or rawget(self, field) == nil then
    error(("use ev:%s(...) with a colon: ev.%s(...) calls it without the event"):format(name, name), 3)
  end
end

--- Replies in the conversation the activity came from, threaded to it.
function Event:reply(msg, opts)
  method_self(self, "activity", "reply")
  local a = self.activity
  opts = check_opts(opts, "reply", { key = true, wait = true })
  local json = message.encode(msg, {
    from = a.recipient, conversation = self.conversation, reply_to = a.id,
  }, 2)
  return core.send(self.conversation, json, a.id, opts)
end

--- Sends a new top-level message to the conversation the activity came from.
function Event:send(msg, opts)
  method_self(self, "activity", "send")
  opts = check_opts(opts, "send", { key = true, wait = true, category = true })
  local json = message.encode(msg, { from = self.activity.recipient, conversation = self.conversation }, 2)
  return core.send(self.conversation, json, nil, with_category(opts))
end

local function str(v) if type(v) == "string" and v ~= "" then return v end end
local function tbl(v) if type(v) == "table" then return v end end

-- Lookups an event makes only when the script asks, each at most once per event: the answer
-- (or the failure) is kept with the event, weakly, so it goes when the event goes.
local lookups = setmetatable({}, { __mode = "k" })
local function lookup(ev, key, fn)
  local per = lookups[ev]
  if not per then per = {} lookups[ev] = per end
  local r = per[key]
  if not r then
    r = table.pack(fn())
    per[key] = r
  end
  return table.unpack(r, 1, r.n)
end

local function team_of(ev, fname)
  local team = ev.team and ev.team.id
  if not team then error(("ev:%s(): this event is not from a team (ev.team is nil)"):format(fname), 3) end
  return team
end

--- The team's name: from the activity when it carries one (no call), else one connector call
--- (GET /v3/teams/{id}), made once per event. name | nil, message, code.
function Event:team_name()
  local team = team_of(self, "team_name")
  if self.team.name then return self.team.name end
  return lookup(self, "team", function()
    local info, err, code = teams.team(team)
    if not info then return nil, err, code end
    return info.name
  end)
end

--- The channel's name: from the activity when it carries one, "General" for the team's General
--- channel (its id is the team's), else one connector call (GET /v3/teams/{id}/conversations),
--- made once per event. name | nil, message, code.
function Event:channel_name()
  local team = team_of(self, "channel_name")
  local channel = (self.channel and self.channel.id)
    or (self.scope == "channel" and self.conversation and self.conversation:gsub(";messageid=.*$", ""))
  if not channel then error("ev:channel_name(): this event names no channel", 2) end
  if self.channel and self.channel.id == channel and self.channel.name then return self.channel.name end
  if channel == team then return "General" end
  return lookup(self, "channel", function()
    local list, err, code = teams.channels(team)
    if not list then return nil, err, code end
    for _, c in ipairs(list) do
      if c.id == channel then return c.name end
    end
    return nil, ("channel %s is not among the team's channels"):format(channel), "not_found"
  end)
end

-- ev.installer is the account the activity names ({id, aad_object_id}: Teams sends no name);
-- calling it, ev:installer(), reads the member's roster record once per event (one connector
-- call, GET /v3/conversations/{team or conversation}/members/{id}).
local function installer_of(ev)
  local who = {}
  for k, v in pairs(ev.user or {}) do who[k] = v end
  return setmetatable(who, { __metatable = false, __call = function()
    if not who.id then return nil, "the install activity names no user", "not_found" end
    return lookup(ev, "installer", function()
      return teams.member((ev.team and ev.team.id) or ev.conversation, who.id)
    end)
  end })
end

local function account(a)
  a = tbl(a)
  if not a then return nil end
  return { id = str(a.id), aad_object_id = str(a.aadObjectId), name = str(a.name) }
end

local function timezone_of(a)
  if str(a.localTimezone) then return a.localTimezone end
  for _, e in ipairs(tbl(a.entities) or {}) do
    if type(e) == "table" and e.type == "clientInfo" and str(e.timezone) then return e.timezone end
  end
end

-- Text without the bot's own <at>mention</at>, trimmed: what the user asked.
local function strip_mention(a)
  local text = str(a.text) or ""
  local bot = tbl(a.recipient) and a.recipient.id
  for _, e in ipairs(tbl(a.entities) or {}) do
    if type(e) == "table" and e.type == "mention" and tbl(e.mentioned) and e.mentioned.id == bot
        and str(e.text) then
      local s, f = text:find(e.text, 1, true)
      if s then text = text:sub(1, s - 1) .. text:sub(f + 1) end
    end
  end
  return (text:gsub("^%s+", ""):gsub("%s+$", ""))
end

local function others(list, bot_id)
  local out = {}
  for _, m in ipairs(tbl(list) or {}) do
    if type(m) == "table" and m.id ~= bot_id then out[#out + 1] = account(m) end
  end
  return out
end

-- lua-cjson 2.1 decodes every number as a float; card payloads mean integers when they say 42.
local function integers(v, depth)
  if type(v) == "number" then return math.tointeger(v) or v end
  if type(v) ~= "table" or depth > 32 then return v end
  for k, x in pairs(v) do
    if type(x) == "number" or type(x) == "table" then v[k] = integers(x, depth + 1) end
  end
  return v
end

-- zone_unknown: the host found the activity's zone unknown to the system (and kept the stored one)
local function new_event(a, zone_unknown)
  if a.value ~= nil then a.value = integers(a.value, 0) end
  local cd = tbl(a.channelData) or {}
  local conv = tbl(a.conversation) or {}
  local team = tbl(cd.team)
  local channel = tbl(cd.channel)
  local ev = setmetatable({
    activity = a,
    type = a.type,
    conversation = conv.id,
    scope = str(conv.conversationType) or "personal",
    tenant = (tbl(cd.tenant) and str(cd.tenant.id)) or str(conv.tenantId),
    user = account(a.from),
    locale = str(a.locale),
    timezone = not zone_unknown and timezone_of(a) or nil,
    value = a.value,
    name = str(a.name),
    event_type = str(cd.eventType),
    team = team and { id = str(team.id), name = str(team.name), aad_group_id = str(team.aadGroupId) },
    channel = channel and { id = str(channel.id), name = str(channel.name) },
  }, EVENT_MT)
  if a.type == "message" then ev.text = strip_mention(a) end
  return ev
end

---------------------------------------------------------------------------------------------
-- dispatch (called by the host in a fresh task for every accepted activity)

local function invoke_result(r)
  if r == nil then return 200, nil end
  if type(r) == "table" and math.type(r.status) == "integer" then
    return r.status, r.body ~= nil and message.json(r.body) or nil
  end
  return 200, message.json(r)
end

-- An invoke answered 200 with no body leaves Teams without what it asked for (a card action shows
-- an error, a task module nothing): say so once per handler, not once per click.
local warned_invoke = setmetatable({}, { __mode = "k" })
local function invoke_returned_nothing(fn, ev)
  if warned_invoke[fn] then return end
  warned_invoke[fn] = true
  core.log("warn", ("the on_invoke handler at %s returned nothing for the invoke '%s': Teams got "
    .. "200 with no body. Return { status = 200, body = ... } (this warning is logged once per handler)")
    :format(core.where(fn) or "?", tostring(ev.name)))
end

-- hook: "install" / "uninstall" when the host decided this activity is the one that runs it.
local function dispatch(a, hook, zone_unknown)
  local ev = new_event(a, zone_unknown)
  local took = false
  if hook == "install" then
    ev.installer = installer_of(ev)
    if hooks.on_install then hooks.on_install(ev) end
    took = true
  elseif hook == "uninstall" then
    if hooks.on_uninstall then hooks.on_uninstall(ev) end
    took = true
  end
  if a.type == "installationUpdate" then
    took = true   -- the install/uninstall hooks own it; a repeated signal is not news
  elseif a.type == "conversationUpdate" then
    local bot = tbl(a.recipient) and a.recipient.id
    local bot_changed = false
    for _, key in ipairs { "membersAdded", "membersRemoved" } do
      for _, m in ipairs(tbl(a[key]) or {}) do
        if type(m) == "table" and m.id == bot then bot_changed = true end
      end
    end
    took = took or bot_changed
    if ev.scope ~= "personal" then   -- in a personal chat the only member added is the installer
      local added, removed = others(a.membersAdded, bot), others(a.membersRemoved, bot)
      if #added > 0 and hooks.on_members_added then
        ev.members = added
        hooks.on_members_added(ev)
        took = true
      end
      if #removed > 0 and hooks.on_members_removed then
        ev.members = removed
        hooks.on_members_removed(ev)
        took = true
      end
    end
  elseif a.type == "message" and hooks.on_message then
    hooks.on_message(ev)
    return
  elseif a.type == "invoke" then
    local fn = hooks.on_invoke
    if fn then
      local r = fn(ev)
      if r == nil then invoke_returned_nothing(fn, ev) end
      return invoke_result(r)
    end
    if hooks.on_activity then return invoke_result(hooks.on_activity(ev)) end
    return 501, cjson.encode { error = "no on_invoke handler" }
  end
  if not took and hooks.on_activity then hooks.on_activity(ev) end
end

core.set_dispatcher(dispatch)

-- notify triggers: POST /api/notify/{name} runs the handler with the JSON payload; its return
-- value is the JSON answer
local notify_handlers = {}
core.set_notify(notify_handlers, function(name, payload)
  local fn = notify_handlers[name]
  if not fn then error(("no notify handler '%s'"):format(name)) end
  if type(payload) == "table" then payload = integers(payload, 0) end
  local result = fn({ name = name, payload = payload })
  if result == nil then return "null" end
  return message.json(result)
end)

--- Registers the handler of POST /api/notify/{name}; it gets ev = {name, payload} and its return
--- value (a table, string, number, boolean or nil) is the JSON answer. Names are lower-case
--- letters, digits and '-' so that each maps to its own HERALD_NOTIFY_SECRET_<NAME> (upper-cased,
--- '-' as '_'); notify_auth.c applies the same rule to requests.
function teams.on_notify(name, fn)
  if type(name) ~= "string" or not name:match("^[a-z0-9-]+$") or #name > 64 then
    error("teams.on_notify expects a name of lower-case letters, digits and - (at most 64), "
      .. "so that its secret variable HERALD_NOTIFY_SECRET_<NAME> is its own", 2)
  end
  if type(fn) ~= "function" then error("teams.on_notify expects a function", 2) end
  notify_handlers[name] = fn
  hooks["notify:" .. name] = fn
end

local ScheduleEvent = {}
local SCHEDULE_EVENT_MT = { __index = ScheduleEvent, __metatable = false }
function ScheduleEvent:send(msg, opts)
  method_self(self, "schedule", "send")
  if not self.conversation then error("this schedule has no conversation to send to", 2) end
  return teams.send(self.conversation, msg, opts)
end

sched.set_dispatch(function(handler, id, payload, conv, due, now)
  local fn = schedule_handlers[handler]
  if not fn then error(("no schedule handler '%s'"):format(handler)) end
  local ev = setmetatable({
    schedule = id, handler = handler, conversation = conv, due = due, fired_at = now,
    payload = payload and cjson.decode(payload) or nil,
  }, SCHEDULE_EVENT_MT)
  if ev.payload ~= nil then ev.payload = integers(ev.payload, 0) end
  return fn(ev)
end)

strict(teams, "teams")

return teams
