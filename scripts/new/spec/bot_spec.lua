-- The specs of {{NAME}}: `busted` runs them against herald's real core, on a virtual clock, with a
-- fake Teams. README "Unit-testing a bot with teams.testing" lists what the kit can do.
local testing = require "teams.testing"

describe("{{NAME}}", function()
  local bot
  before_each(function() bot = testing.load("bot.lua") end)
  after_each(function() bot:close() end)

  it("welcomes once on install", function()
    local conv = bot:install { scope = "personal", user = "megan" }
    assert.sent_count(1, conv)
    assert.sent_to(conv, "Type **ping**")
  end)

  it("answers ping", function()
    local conv = bot:personal("megan")
    bot:message("ping", { user = "megan" })
    assert.replied(conv, "pong")
  end)

  it("announces to every personal chat", function()
    local megan = bot:install { scope = "personal", user = "megan" }
    local ann = bot:install { scope = "personal", user = "ann" }
    bot:clear()
    bot:notify("announce", { text = "Maintenance tonight at 22:00" })
    assert.sent_to(megan, "Maintenance tonight at 22:00")
    assert.sent_to(ann, "Maintenance tonight at 22:00")
  end)
end)
