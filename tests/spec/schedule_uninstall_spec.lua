-- Schedules follow their conversation's install state (issue 12, bug 5): uninstalled, they pause
-- (no send to a conversation teams.conversations hides); installed again, they resume from the
-- next occurrence, without a burst of the ones missed meanwhile. tests/spec/bots/schedule_user_bot.lua.
local testing = require "teams.testing"

describe("schedules of an uninstalled conversation", function()
  local bot, conv
  local function fired(text)
    local out = {}
    for _, op in ipairs(bot:sent(conv)) do
      if op.op == "send" and op.text:find(text, 1, true) == 1 then out[#out + 1] = testing.iso(op.at) end
    end
    return out
  end

  before_each(function()
    bot = testing.load("tests/spec/bots/schedule_user_bot.lua", { start = "2027-06-01T10:00:00Z" })
    conv = bot:install({ user = "megan" })
    bot:message("every 1d@2027-06-02T09:00:00Z daily", { user = "megan" })
  end)
  after_each(function() bot:close() end)

  it("pauses while uninstalled and resumes at the next occurrence after a reinstall", function()
    bot:advance_to("2027-06-02T12:00:00Z")
    assert.same({ "2027-06-02T09:00:00Z" }, fired("daily"))
    bot:uninstall({ user = "megan" })
    bot:advance("1d")                          -- 2027-06-03T09:00 passes: nobody to send to
    assert.same({ "2027-06-02T09:00:00Z" }, fired("daily"))
    local s = bot:schedules(conv)[1]
    assert.equal("uninstalled", s.paused)
    assert.is_nil(s.next_fire)
    bot:advance("2d")
    assert.same({ "2027-06-02T09:00:00Z" }, fired("daily"))
    assert.equal("uninstalled", bot:schedules(conv)[1].paused)

    bot:install({ user = "megan" })           -- 2027-06-05T12:00: three were missed, none is sent
    bot:settle()
    assert.same({ "2027-06-02T09:00:00Z" }, fired("daily"))
    s = bot:schedules(conv)[1]
    assert.is_nil(s.paused)
    assert.equal(testing.time("2027-06-06T09:00:00Z") // 1000, s.next_fire)
    bot:advance_to("2027-06-06T10:00:00Z")
    assert.same({ "2027-06-02T09:00:00Z", "2027-06-06T09:00:00Z" }, fired("daily"))
  end)

  it("pauses one already due for an uninstalled conversation instead of sending", function()
    bot:uninstall({ user = "megan" })
    bot:advance("1d")
    assert.same({}, fired("daily"))
    assert.equal("uninstalled", bot:schedules(conv)[1].paused)
  end)

  it("goes on untouched when the bot comes back before the next occurrence", function()
    bot:uninstall({ user = "megan" })
    bot:advance("1h")
    bot:install({ user = "megan" })
    bot:advance_to("2027-06-02T10:00:00Z")
    assert.same({ "2027-06-02T09:00:00Z" }, fired("daily"))
  end)
end)
