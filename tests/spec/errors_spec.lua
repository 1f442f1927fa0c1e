-- Errors that point the way (issue 12): a misspelt teams field names the closest one, a dot for
-- a colon on an event method says so at the author's line, an on_invoke handler that returns
-- nothing is warned about once per handler.
local testing = require "teams.testing"

local function errors_matching(bot, pat)
  local n = 0
  for _, l in ipairs(bot:errors()) do if l:find(pat) then n = n + 1 end end
  return n
end

describe("errors that point the way", function()
  local bot
  after_each(function() if bot then bot:close() bot = nil end end)

  it("a misspelt hook name fails the load at the script's line, naming the closest name", function()
    local ok, err = pcall(testing.load, "tests/spec/bots/typo_bot.lua")
    assert.is_false(ok)
    assert.matches("typo_bot.lua:4: unknown field 'on_mesage' in teams (did you mean on_message?)",
      err, 1, true)
  end)

  describe("in handlers", function()
    before_each(function() bot = testing.load("tests/spec/bots/misuse_bot.lua") end)

    it("ev.send(...) says to use ev:send(...) at the author's line", function()
      bot:message("dot send")
      assert.equal(1, errors_matching(bot, "misuse_bot.lua:6: use ev:send%(%.%.%.%) with a colon"))
      assert.equal(0, errors_matching(bot, "init.lua:%d+: use"))
    end)

    it("ev.reply(...) says to use ev:reply(...)", function()
      bot:message("dot reply")
      assert.equal(1, errors_matching(bot, "misuse_bot.lua:7: use ev:reply%(%.%.%.%)"))
    end)

    it("a schedule event's ev.send(...) says the same", function()
      bot:message("schedule")
      bot:advance("2m")
      assert.is_true(errors_matching(bot, "misuse_bot.lua:14: use ev:send%(%.%.%.%)") >= 1)
    end)

    it("a misspelt field inside a handler raises with the closest name", function()
      bot:message("typo")
      assert.equal(1, errors_matching(bot,
        "misuse_bot.lua:8: unknown field 'sendd' in teams %(did you mean send%?%)"))
    end)

    it("the sub-tables say it too", function()
      bot:message("sub")
      assert.equal(1, errors_matching(bot,
        "misuse_bot.lua:10: unknown field 'cancle' in teams.schedule %(did you mean cancel%?%)"))
    end)

    it("rawget reads a missing field as nil, without raising", function()
      local conv = bot:personal("alex")
      bot:message("feature")
      assert.sent_to(conv, "nil")
      assert.same({}, bot:errors())
    end)

    it("an on_invoke handler that returns nothing is warned about once", function()
      local function warnings()
        local n = 0
        for _, l in ipairs(bot:logs()) do
          if l:find("on_invoke handler at tests/spec/bots/misuse_bot.lua:16 returned nothing", 1, true) then
            n = n + 1
          end
        end
        return n
      end
      bot:card_action({ x = 1 }, { verb = "ok" })
      assert.equal(0, warnings())
      local r = bot:card_action({ x = 1 }, { verb = "other" })
      assert.equal(200, r.status)
      assert.equal(1, warnings())
      bot:card_action({ x = 2 }, { verb = "other" })
      assert.equal(1, warnings())
    end)
  end)
end)
