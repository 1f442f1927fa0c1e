-- teams.message — turns what a script passes as a message (a string, or a table with text,
-- markdown, cards, mentions, ...) into a Bot Framework activity, and checks it on the way.
local cjson = require("cjson").new()

local M = {}

local ADAPTIVE = "application/vnd.microsoft.card.adaptive"
local KNOWN = {
  text = true, markdown = true, text_format = true, card = true, cards = true, attachments = true,
  attachment_layout = true, mentions = true, summary = true, importance = true, alert = true,
  channel_data = true, entities = true, suggested_actions = true,
}

-- A list argument without its nil holes, order kept: { cond and x or nil, y } is { y } when cond
-- is false (a hole would reach Teams as JSON null). nil stays nil; a table with keys other than
-- 1..n is refused, naming what (an object where a list belongs would reach Teams as one).
local function compact(list, what, level)
  if list == nil then return nil end
  if type(list) ~= "table" then error(("%s must be a list, got %s"):format(what, type(list)), level + 1) end
  local max, n = 0, 0
  for k in pairs(list) do
    if math.type(k) ~= "integer" or k < 1 then
      error(("%s must be a list, but it has the key %s"):format(what,
        type(k) == "string" and ("'" .. k .. "'") or tostring(k)), level + 1)
    end
    n = n + 1
    if k > max then max = k end
  end
  if max == n then return list end
  local out = {}
  for i = 1, max do
    if list[i] ~= nil then out[#out + 1] = list[i] end
  end
  return out
end

--- An Adaptive Card attachment from a card body: teams.card{ {type="TextBlock", text="hi"} } or a
--- full card table (with type = "AdaptiveCard"). nil holes in the body and actions lists are
--- dropped, so { cond and {...} or nil, {...} } leaves out what cond rules out.
function M.card(card, actions, level)
  level = (level or 1) + 1
  if type(card) ~= "table" then error("teams.card expects a table", level) end
  if card.type ~= "AdaptiveCard" then
    card = { type = "AdaptiveCard",
             body = compact(card, "teams.card: the body (a list of elements, or a card with "
               .. "type = \"AdaptiveCard\")", level),
             actions = compact(actions, "teams.card: actions", level) }
  else
    local full = {}
    for k, v in pairs(card) do full[k] = v end
    full.body = compact(card.body, "teams.card: the card's body", level)
    full.actions = compact(card.actions, "teams.card: the card's actions", level)
    card = full
  end
  card["$schema"] = card["$schema"] or "http://adaptivecards.io/schemas/adaptive-card.json"
  card.version = card.version or "1.5"
  return { contentType = ADAPTIVE, content = card }
end

--- A mention of a user: returns the "<at>Name</at>" text to put in the message and the entry
--- for the message's `mentions` list.
function M.mention(user)
  if type(user) ~= "table" or type(user.id) ~= "string" then
    error("teams.mention expects {id = ..., name = ...}", 2)
  end
  local name = user.name or user.id
  local text = "<at>" .. name .. "</at>"
  return text, { id = user.id, name = name, text = text }
end

local check_lists

local function fail(level, fmt, ...)
  error("message: " .. fmt:format(...), level + 1)
end

-- Every table under the fields a script fills (attachments, entities, channelData,
-- suggestedActions) with integer keys must be a list 1..n: a hole would be sent as JSON null and
-- a mix of keys as an object with "1", "2" keys, which Teams rejects or misreads. Raises naming
-- the field and index (cjson.null, put there on purpose, is left alone). Breadth-first over a
-- work list, not recursive, and nothing allocated for a message without those fields: a deeper
-- Lua stack is a reallocation that can fail near the memory cap, where a queued send must meet
-- queue_full rather than a memory error.
local ROOTS = { "attachments", "entities", "channelData", "suggestedActions" }
local MAX_DEPTH, MAX_TABLES = 64, 100000

check_lists = function(a, level)
  local nodes, parents, keys, depths
  for _, name in ipairs(ROOTS) do
    if type(a[name]) == "table" then
      if not nodes then nodes, parents, keys, depths = {}, {}, {}, {} end
      local n = #nodes + 1
      nodes[n], parents[n], keys[n], depths[n] = a[name], 0, name, 1
    end
  end
  if not nodes then return end
  local function path_of(i)
    local parts = {}
    while i > 0 do
      local k = keys[i]
      parts[#parts + 1] = math.type(k) == "integer" and ("[" .. k .. "]")
        or (parents[i] == 0 and tostring(k) or "." .. tostring(k))
      i = parents[i]
    end
    local out = {}
    for x = #parts, 1, -1 do out[#out + 1] = parts[x] end
    return table.concat(out)
  end
  local i = 0
  while i < #nodes do
    i = i + 1
    local t = nodes[i]
    if depths[i] > MAX_DEPTH then fail(level, "%s is nested too deeply", path_of(i)) end
    local max, n, other = 0, 0, nil
    for k, v in pairs(t) do
      if math.type(k) == "integer" and k >= 1 then
        n = n + 1
        if k > max then max = k end
      elseif other == nil then
        other = k
      end
      if type(v) == "table" then
        local m = #nodes + 1
        if m > MAX_TABLES then fail(level, "%s holds too many tables (a cycle?)", path_of(i)) end
        nodes[m], parents[m], keys[m], depths[m] = v, i, k, depths[i] + 1
      end
    end
    if n > 0 and other ~= nil then
      fail(level, "%s mixes list items and the key '%s' (a list, or a table with names, not both)",
        path_of(i), tostring(other))
    end
    if max ~= n then
      for x = 1, max do
        if t[x] == nil then
          fail(level, "%s[%d] is nil: a hole in a list (would be sent as null)", path_of(i), x)
        end
      end
    end
  end
end

--- Builds the activity table. ctx: from, conversation (id), reply_to, id.
function M.build(msg, ctx, level)
  level = (level or 1) + 1
  if type(msg) == "string" then msg = { text = msg } end
  if type(msg) ~= "table" then fail(level, "expected a string or a table, got %s", type(msg)) end
  for k in pairs(msg) do
    if not KNOWN[k] then fail(level, "unknown field '%s'", tostring(k)) end
  end
  local a = { type = "message" }
  if msg.text ~= nil then
    if type(msg.text) ~= "string" then fail(level, "'text' must be a string") end
    a.text = msg.text
  end
  if msg.text_format then a.textFormat = msg.text_format
  elseif msg.markdown then a.textFormat = "markdown" end
  -- the list fields lose their nil holes (order kept), as teams.card's arguments do
  local att = {}
  if msg.card ~= nil then
    if type(msg.card) ~= "table" then fail(level, "'card' must be a table") end
    att[#att + 1] = msg.card.contentType and msg.card or M.card(msg.card, nil, level)
  end
  for i, c in ipairs(compact(msg.cards, "message: 'cards'", level) or {}) do
    if type(c) ~= "table" then fail(level, "cards[%d] must be a table", i) end
    att[#att + 1] = c.contentType and c or M.card(c, nil, level)
  end
  for _, c in ipairs(compact(msg.attachments, "message: 'attachments'", level) or {}) do
    if type(c) ~= "table" or type(c.contentType) ~= "string" then
      fail(level, "each attachment needs a contentType")
    end
    att[#att + 1] = c
  end
  if #att > 0 then a.attachments = att end
  if msg.attachment_layout then a.attachmentLayout = msg.attachment_layout end
  if (a.text == nil or a.text == "") and #att == 0 then
    fail(level, "needs 'text' or at least one card/attachment")
  end
  local entities = {}
  for _, m in ipairs(compact(msg.mentions, "message: 'mentions'", level) or {}) do
    if type(m) ~= "table" or type(m.id) ~= "string" then fail(level, "each mention needs an 'id'") end
    local text = m.text or ("<at>" .. (m.name or m.id) .. "</at>")
    if not (a.text or ""):find(text, 1, true) then
      fail(level, "mention text '%s' does not appear in the message text", text)
    end
    entities[#entities + 1] = { type = "mention", text = text,
      mentioned = { id = m.id, name = m.name or m.id } }
  end
  for _, e in ipairs(compact(msg.entities, "message: 'entities'", level) or {}) do
    entities[#entities + 1] = e
  end
  if #entities > 0 then a.entities = entities end
  if msg.summary then a.summary = msg.summary end
  if msg.importance then a.importance = msg.importance end
  if msg.suggested_actions then a.suggestedActions = msg.suggested_actions end
  local cd = msg.channel_data
  if msg.alert then
    cd = cd or {}
    cd.notification = cd.notification or { alert = true }
  end
  if cd then a.channelData = cd end
  if ctx then
    if ctx.from then a.from = ctx.from end
    if ctx.conversation then a.conversation = { id = ctx.conversation } end
    if ctx.reply_to then a.replyToId = ctx.reply_to end
    if ctx.id then a.id = ctx.id end
  end
  check_lists(a, level + 1)
  return a
end

-- Empty arrays. Lua has one table type, and lua-cjson 2.1 (Debian's) writes every empty table as
-- {} (it has no empty_array or array_mt; OpenResty's fork does). teams.array(t) marks t, by
-- identity in a weak set so a script's own metatable stays free; herald's encodings write a marked
-- table that is empty as []. Empty marked tables are swapped for a random token before cjson runs
-- and the token's JSON string for [] after: cjson still writes every byte of the JSON.
local ARRAYS = setmetatable({}, { __mode = "k" })
local TOKEN = ("herald-empty-array-%08x%08x%08x"):format(math.random(0, 0x7fffffff),
  math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
local TOKEN_JSON = ('"' .. TOKEN .. '"'):gsub("%p", "%%%0")

--- Marks t (a new table when nil) as a JSON array, so that it is written [] when empty; returns t.
function M.array(t)
  if t == nil then t = {} end
  if type(t) ~= "table" then error("teams.array expects a table or nothing", 2) end
  ARRAYS[t] = true
  return t
end

-- v with every empty marked table swapped for TOKEN; tables on the way are copied, never changed.
-- Past cjson's depth limit it stops, and cjson raises as it would have.
local function swap(v, depth)
  if type(v) ~= "table" or depth > 1000 then return v end
  if ARRAYS[v] and next(v) == nil then return TOKEN end
  local copy
  for k, x in next, v do
    local y = swap(x, depth + 1)
    if y ~= x then
      if not copy then
        copy = {}
        for k2, x2 in next, v do copy[k2] = x2 end
      end
      copy[k] = y
    end
  end
  return copy or v
end

--- v as JSON, as cjson writes it, except that an empty table marked by M.array is [].
function M.json(v)
  if next(ARRAYS) == nil then return cjson.encode(v) end
  local out = cjson.encode(swap(v, 1))
  return (out:gsub(TOKEN_JSON, "[]"))
end

function M.encode(msg, ctx, level)
  return M.json(M.build(msg, ctx, (level or 1) + 1))
end

return M
