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
