-- scripts/notify.lua under teams.testing: a CI system calls POST /api/notify/build, the bot
-- broadcasts a build card to every subscribed personal chat; users opt out and in.
local testing = require "teams.testing"

local BUILD = { project = "herald", build = "1234", status = "failed", author = "Megan",
                url = "https://ci.example/1234" }

describe("notify.lua", function()
  local bot, megan, ann
  before_each(function()
    bot = testing.load("scripts/notify.lua")
    megan = bot:install { user = "megan" }
    ann = bot:install { user = "ann" }
  end)
  after_each(function() bot:close() end)

  it("explains itself on install", function()
    assert.sent_count(1, megan)
    assert.sent_to(megan, "Hi! I post **build notifications** here when your CI tells me.")
  end)

  it("tells every subscribed personal chat about a build, with a card", function()
    local channel = bot:install { team = "Contoso" }
    bot:clear()
    bot:notify("build", BUILD)
    bot:advance("10s")
    for _, conv in ipairs { megan, ann } do
      assert.sent_to(conv, "Build 1234 of herald failed")
      local op = bot:last(conv)
      assert.equal("Build 1234 of herald failed", op.summary)
      assert.equal("Attention", op.card.body[1].color)
      assert.equal("Action.OpenUrl", op.card.actions[1].type)
      assert.equal("https://ci.example/1234", op.card.actions[1].url)
      assert.equal("opt_out", op.card.actions[2].data.action)
    end
    assert.not_sent_to(channel)          -- personal chats only
    local b = bot:broadcasts()[1]
    assert.equal("Build 1234 of herald failed", b.name)
    assert.equal("builds", b.category)
    assert.equal(2, b.total)
  end)

  it("sends a card without holes when the payload has no url (issue 12, bug 1)", function()
    bot:clear()
    bot:notify("build", { project = "herald", build = "1", status = "failed" })
    bot:advance("10s")
    local op = bot:last(megan)
    assert.equal(1, #op.card.actions)
    assert.equal("Action.Submit", op.card.actions[1].type)
    assert.is_nil(op.json:find("null", 1, true))
  end)

  it("refuses a payload without a project", function()
    local r = bot:notify("build", { build = "1" })
    assert.equal(200, r.status)
    assert.equal("expected {project, build, status, author, url}", r.json.error)
    assert.equal(0, #bot:broadcasts())
  end)

  it("answers 404 for an unknown trigger", function()
    local r = bot:notify("deploy", BUILD)
    assert.equal(404, r.status)
  end)

  it("stops notifying a user who typed stop, and resumes on start", function()
    bot:message("stop", { user = "ann" })
    assert.replied(ann, "Done: no more build notifications.")
    bot:clear()
    bot:notify("build", BUILD)
    bot:advance("10s")
    assert.sent_to(megan, "Build 1234")
    assert.not_sent_to(ann)
    bot:message("start", { user = "ann" })
    assert.replied(ann, "You will get build notifications again.")
    bot:notify("build", { project = "herald", build = "1235", status = "passed" })
    bot:advance("10s")
    assert.sent_to(ann, "Build 1235 of herald passed")
  end)

  it("opts out from the card's \"Stop these\" button", function()
    local card = nil
    bot:notify("build", BUILD)
    bot:advance("10s")
    card = bot:last(megan).card
    bot:submit(card.actions[2].data, { user = "megan" })
    assert.replied(megan, "Done: no more build notifications.")
    bot:clear()
    bot:notify("build", BUILD)
    bot:advance("10s")
    assert.not_sent_to(megan)
    assert.sent_to(ann, "Build 1234")
  end)

  it("skips a user who blocked the bot, and records it", function()
    bot:block(megan)
    bot:notify("build", BUILD)
    bot:advance("1m")
    assert.not_sent_to(megan, "Build 1234")
    assert.sent_to(ann, "Build 1234")
    assert.in_ledger(megan, "blocked")
    local b = bot:broadcasts(bot:broadcasts()[1].id)
    local states = {}
    for _, r in ipairs(b.recipients) do states[r.conversation_id] = r.state end
    assert.equal("blocked", states[megan])
    assert.equal("sent", states[ann])
  end)

  it("answers other messages with a short help", function()
    bot:message("what?", { user = "megan" })
    assert.replied(megan, "I post build notifications. **stop** unsubscribes, **start** subscribes.")
  end)
end)
