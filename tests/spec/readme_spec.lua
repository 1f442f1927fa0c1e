-- The example of README "Testing your bot", run against the example bots, so it stays true.
local testing = require "teams.testing"

describe("the README example", function()
  local bot
  after_each(function() bot:close() end)

  it("welcomes once, even though Teams sends two install signals", function()
    bot = testing.load("scripts/welcome.lua", { start = "2027-03-13T18:00:00Z" })
    local conv = bot:install { scope = "personal", user = "megan" }
    assert.sent_count(1, conv)
    assert.sent_to(conv, "Welcome")
  end)

  it("retries a throttled reminder after Retry-After", function()
    bot = testing.load("scripts/reminders.lua", { start = "2027-03-13T18:00:00Z" })
    local conv = bot:personal("megan")
    bot:message("remind me at 9:00 to stretch", { user = "megan", timezone = "America/New_York" })
    bot:throttle(conv, 30)
    bot:advance_to("2027-03-14T09:00:30-04:00")
    local tries = bot:requests { conversation = conv, op = "send" }
    assert.equal(429, tries[1].status)
    assert.equal(testing.time("2027-03-14T13:00:30Z"), tries[2].at)
    assert.equal(201, tries[2].status)
  end)
end)
