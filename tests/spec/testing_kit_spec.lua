-- teams.testing itself: reading the outbox, ledger and schedules, resetting between tests,
-- failure messages that show what was sent, and the time helpers.
local testing = require "teams.testing"

local function failure(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "the assertion should have failed")
  return tostring(err)
end

describe("teams.testing state", function()
  local bot
  before_each(function() bot = testing.load("tests/spec/bots/notify_bot.lua") end)
  after_each(function() bot:close() end)

  it("reads the outbox: one row per operation, with its final state", function()
    local megan = bot:install { user = "megan" }
    local ann = bot:install { user = "ann" }
    bot:block(ann)
    bot:message("send " .. megan .. " one", { user = "operator" })
    bot:message("send " .. ann .. " two", { user = "operator" })
    local rows = bot:outbox()
    assert.equal(6, #rows)    -- 2 greetings; 2 sends, each answered to the operator
    local states = {}
    for _, r in ipairs(rows) do states[#states + 1] = r.kind .. ":" .. r.state end
    assert.same({ "send:sent", "send:sent", "send:sent", "reply:sent", "send:blocked", "reply:sent" }, states)
    assert.equal(1, #bot:outbox { state = "blocked" })
    assert.equal(2, #bot:outbox { kind = "reply" })
    assert.equal(2, #bot:outbox(megan))
    assert.equal(0, bot:stats().queued)
  end)

  it("reads the ledger", function()
    local megan = bot:install { user = "megan" }
    local ann = bot:install { user = "ann" }
    bot:block(megan)
    bot:gone(ann)
    bot:message("send " .. megan .. " one", { user = "operator" })
    bot:message("send " .. ann .. " two", { user = "operator" })
    local ledger = bot:ledger()
    assert.equal(2, #ledger)
    assert.equal("blocked", bot:ledger(megan).state)
    assert.equal("gone", bot:ledger(ann).state)
    assert.is_nil(bot:ledger(bot:personal("operator")))
  end)

  it("reads stored conversations and runs read-only SQL", function()
    bot:install { user = "megan" }
    bot:install { team = "Contoso" }
    assert.equal(2, #bot:conversations())
    local n = bot:query("SELECT count(*) AS n FROM conversations WHERE type = ?", "channel")[1].n
    assert.equal(1, n)
    assert.has_error(function() bot:query("DELETE FROM conversations") end)
  end)

  it("resets to a fresh bot: no state, no answers, the clock back at the start", function()
    local megan = bot:install { user = "megan" }
    bot:block(megan)
    bot:advance("3h")
    bot:message("send " .. megan .. " one", { user = "operator" })
    bot:reset()
    assert.equal(testing.time(testing.defaults.start), bot:now())
    assert.equal(0, #bot:sent())
    assert.equal(0, #bot:outbox())
    assert.equal(0, #bot:ledger())
    assert.equal(0, #bot:conversations())
    megan = bot:install { user = "megan" }
    assert.sent_to(megan, "ready")       -- not blocked any more
  end)

  it("clears what was sent without touching the bot", function()
    local megan = bot:install { user = "megan" }
    bot:clear()
    assert.equal(0, #bot:sent())
    assert.not_sent_to(megan)
    bot:message("send " .. megan .. " one", { user = "operator" })
    assert.sent_count(1, megan)
    assert.equal(3, #bot:outbox())
  end)

  it("refuses a closed bot", function()
    bot:close()
    assert.has_error(function() bot:message("hi") end)
    assert.has_error(function() assert.sent_count(0) end)
  end)

  it("lets only one bot live at a time", function()
    local first = bot
    local second = testing.load("tests/spec/bots/probe_bot.lua")
    assert.has_error(function() first:message("hi") end)
    assert.equal(second, testing.current())
    second:close()
  end)

  it("reports a script that cannot load", function()
    local ok, err = pcall(testing.load, "tests/spec/bots/missing_bot.lua")
    assert.is_false(ok)
    assert.matches("cannot load tests/spec/bots/missing_bot.lua", err, 1, true)
  end)

  it("heals the fake connector", function()
    local megan = bot:install { user = "megan" }
    bot:fail(megan, 500, -1)
    bot:heal()
    bot:message("send " .. megan .. " one", { user = "operator" })
    assert.sent_to(megan, "one")
  end)

  it("answers with a raw rule", function()
    local megan = bot:install { user = "megan" }
    bot:respond { match = "/conversations/" .. megan .. "/activities", method = "POST",
                  status = 201, body = '{"id":"custom-7"}' }
    bot:message("send " .. megan .. " one", { user = "operator" })
    assert.equal("custom-7", bot:last(megan).activity_id)
    assert.replied(bot:personal("operator"), "send ok custom-7")
  end)
end)

describe("teams.testing failure messages", function()
  local bot
  before_each(function() bot = testing.load("tests/spec/bots/faulty_bot.lua") end)
  after_each(function() bot:close() end)

  it("show what was sent instead", function()
    bot:message("hello", { user = "megan" })
    local err = failure(function() assert.sent_to("a:29:megan", "goodbye") end)
    assert.matches('Expected a message to a:29:megan matching "goodbye"', err, 1, true)
    assert.matches('The bot sent 1 request:', err, 1, true)
    assert.matches('reply  -> a:29:megan #1 at 2027-01-01T00:00:00Z (+0s) "fine"', err, 1, true)
  end)

  it("show failed attempts with their status", function()
    bot:block("a:29:megan")
    bot:message("hello", { user = "megan" })
    local err = failure(function() assert.sent_count(1) end)
    assert.matches("Expected 1 message, got 0", err, 1, true)
    assert.matches("[HTTP 403]", err, 1, true)
  end)

  it("show handler errors", function()
    bot:message("boom", { user = "megan" })
    local err = failure(function() assert.replied("a:29:megan", "fine") end)
    assert.matches("The bot sent nothing.", err, 1, true)
    assert.matches("kaboom in the handler", err, 1, true)
    assert.equal(1, #bot:errors())
    assert.equal(1, bot:stats().handler_errors)
  end)

  it("negate", function()
    bot:message("hello", { user = "megan" })
    local err = failure(function() assert.not_sent_to("a:29:megan") end)
    assert.matches("Did not expect a message to a:29:megan", err, 1, true)
    err = failure(function() assert.in_ledger("a:29:megan") end)
    assert.matches("the ledger holds:\n  nothing", err, 1, true)
  end)

  it("match tables and predicates", function()
    bot:message("hello", { user = "megan" })
    assert.sent_to("a:29:megan", { op = "reply", text = "fin" })
    assert.sent_to("a:29:megan", function(op) return op.reply_to == "f:1" end)
    assert.is_not.sent_to("a:29:megan", { op = "send" })
    assert.sent_count(1, nil, { op = "reply" })
  end)
end)

describe("teams.testing time helpers", function()
  it("read ISO 8601 times", function()
    assert.equal(1798761600000, testing.time("2027-01-01T00:00:00Z"))
    assert.equal(1798761600000, testing.time("2027-01-01"))
    assert.equal(1798761600000, testing.time("2026-12-31T19:00:00-05:00"))
    assert.equal(1798761600000, testing.time("2027-01-01T05:30+05:30"))
    assert.equal(1798761600250, testing.time("2027-01-01T00:00:00.25Z"))
    assert.equal(testing.time("2027-03-14T13:00:00Z"), testing.time("2027-03-14T09:00:00-04:00"))
    assert.has_error(function() testing.time("2027-03-14T09:00:00") end)
    assert.has_error(function() testing.time("tomorrow") end)
  end)

  it("write ISO 8601 times", function()
    assert.equal("2027-01-01T00:00:00Z", testing.iso(1798761600000))
    assert.equal("2027-01-01T00:00:00.250Z", testing.iso(1798761600250))
    assert.equal("2024-02-29T12:00:00Z", testing.iso(testing.time("2024-02-29T12:00:00Z")))
  end)

  it("read durations", function()
    assert.equal(90, testing.duration(90))
    assert.equal(90, testing.duration("90s"))
    assert.equal(900, testing.duration("15m"))
    assert.equal(7200, testing.duration("2h"))
    assert.equal(86400, testing.duration("1d"))
    assert.equal(5400, testing.duration("1h30m"))
    assert.equal(0.5, testing.duration("500ms"))
    assert.has_error(function() testing.duration("soon") end)
  end)

  it("build users and teams", function()
    assert.same({ id = "29:megan-bowen", name = "Megan Bowen", aad_object_id = "aad-megan-bowen" },
      testing.user("megan bowen"))
    assert.equal("29:x1", testing.user("29:x1").id)
    assert.equal("Europe/Paris", testing.user { name = "zoe", timezone = "Europe/Paris" }.timezone)
    assert.same({ id = "19:contoso@thread.tacv2", name = "Contoso", aad_group_id = "group-contoso" },
      testing.team("Contoso"))
  end)
end)
