-- What herald records and answers at its edges (issue 12): a message Teams accepted without an
-- activity id (the Agents Playground's 202 with an empty body), and empty arrays in JSON answers.
local testing = require "teams.testing"

describe("a 2xx without an activity id", function()
  local bot
  before_each(function() bot = testing.load("tests/spec/bots/inbound_rules_bot.lua") end)
  after_each(function() bot:close() end)

  it("is recorded sent once, with no id, and cannot be updated or deleted", function()
    local conv = bot:personal("megan")
    bot:respond { method = "POST", match = "/activities", status = 202, body = "", times = 1 }
    bot:message("card", { user = "megan" })
    assert.replied(conv, "sent true update no_activity_id delete no_activity_id")
    local sends = bot:outbox { conversation = conv, kind = "send" }
    assert.equal(1, #sends)
    assert.equal("sent", sends[1].state)
    assert.is_nil(sends[1].result_id)
    assert.equal(202, sends[1].last_status)
    assert.equal(1, sends[1].attempts)
    bot:advance("1h")                              -- no retry comes later either
    local posts = 0
    for _, r in ipairs(bot:requests(conv)) do
      if r.op == "send" then posts = posts + 1 end
    end
    assert.equal(1, posts)
    assert.equal(0, #bot:outbox { conversation = conv, kind = "update" })
    local warned = 0
    for _, l in ipairs(bot:logs()) do
      if l:find("without an activity id: recorded sent", 1, true) then warned = warned + 1 end
    end
    assert.equal(1, warned)
  end)
end)

-- Bug 4: a client reporting a zone the system does not know must not replace a good stored one,
-- or the user's 09:00 schedule silently moves to the default zone (UTC).
describe("an unknown time zone in an activity", function()
  local bot, conv
  local BERLIN = "Europe/Berlin"
  local function say(text, tz) return bot:message(text, { user = "megan", timezone = tz }) end
  local function digests()
    local out = {}
    for _, op in ipairs(bot:sent(conv)) do
      if op.text and op.text:find("^digest due") then out[#out + 1] = testing.iso(op.at) end
    end
    return out
  end
  local function warnings()
    local n = 0
    for _, l in ipairs(bot:logs()) do
      if l:find('unknown time zone "Mars/Olympus" ignored', 1, true) then n = n + 1 end
    end
    return n
  end

  before_each(function()
    -- June 2027: Berlin is on CEST (UTC+2), so 09:00 there is 07:00Z
    bot = testing.load("tests/spec/bots/schedule_user_bot.lua", { start = "2027-06-01T10:00:00Z" })
    conv = bot:personal("megan")
  end)
  after_each(function() bot:close() end)

  it("keeps the stored zone, so the 09:00 schedule stays at 09:00 Berlin, and is logged once",
    function()
      say("digest", BERLIN)
      assert.replied(conv, "scheduled digest:" .. conv .. " next 2027-06-02T07:00:00Z")
      for _ = 1, 3 do say("get digest:" .. conv, "Mars/Olympus") end
      assert.equal(BERLIN, bot:conversation(conv).timezone)
      assert.replied(conv, "runs=0 next=2027-06-02T07:00:00Z")
      bot:advance_to("2027-06-03T12:00:00Z")
      assert.same({ "2027-06-02T07:00:00Z", "2027-06-03T07:00:00Z" }, digests())
      assert.sent_to(conv, "digest due 2027-06-03T07:00:00Z zone Europe/Berlin")
      assert.equal(1, warnings())
      -- a good zone still moves the user
      say("get digest:" .. conv, "Asia/Kathmandu")
      assert.equal("Asia/Kathmandu", bot:conversation(conv).timezone)
    end)

  it("leaves ev.timezone nil for the unknown zone", function()
    bot:close()
    bot = testing.load("tests/spec/bots/probe_bot.lua")
    bot:message("hi", { user = "megan", timezone = "Mars/Olympus" })
    bot:message("hi", { user = "megan", timezone = BERLIN })
    local zones = {}
    for _, l in ipairs(bot:logs()) do
      local j = l:match("probe (%b{})")
      if j then zones[#zones + 1] = require("cjson").decode(j).timezone or "nil" end
    end
    assert.same({ "nil", BERLIN }, zones)
  end)
end)

-- lua-cjson 2.1 writes every empty table as {}; teams.array marks one that must stay [].
describe("empty arrays in herald's JSON", function()
  local bot
  before_each(function() bot = testing.load("tests/spec/bots/inbound_rules_bot.lua") end)
  after_each(function() bot:close() end)

  it("writes a table marked by teams.array as [] and an unmarked empty one as {}", function()
    local r = bot:invoke("arrays", {}, { user = "megan" })
    assert.equal(200, r.status)
    local cjson = require "cjson"
    assert.same({ items = "[]", also = "[]", meta = "{}", full = "[1,2]" }, (function()
      local out = {}
      for _, k in ipairs { "items", "also", "meta", "full" } do
        out[k] = r.body:match('"' .. k .. '":(%b[])') or r.body:match('"' .. k .. '":(%b{})')
      end
      return out
    end)())
    assert.same({ items = {}, also = {}, meta = {}, full = { 1, 2 } }, cjson.decode(r.body))
    r = bot:invoke("top", {}, { user = "megan" })
    assert.equal("[]", r.body)
  end)

  it("writes [] in a message too, and leaves the script's tables as they were", function()
    local conv = bot:personal("megan")
    bot:message("arrays", { user = "megan" })
    assert.replied(conv, "same true")
    local sent = bot:sent { conversation = conv, op = "send" }
    assert.equal(1, #sent)
    assert.truthy(sent[1].json:find('"actions":[]', 1, true), sent[1].json)
  end)
end)
