-- scripts/welcome.lua, herald's demo bot, under teams.testing.
local testing = require "teams.testing"

describe("welcome.lua", function()
  local bot
  before_each(function() bot = testing.load("scripts/welcome.lua") end)
  after_each(function() bot:close() end)

  describe("on install", function()
    it("welcomes exactly once when Teams sends installationUpdate and conversationUpdate", function()
      local conv, results = bot:install { scope = "personal", user = "megan" }
      assert.equal(2, #results)
      assert.sent_count(1, conv)
      assert.sent_to(conv, "Welcome! Type **help** to see what I can do.")
      bot:advance("1m")     -- the proactive follow-up comes later: still only one welcome
      assert.sent_count(1, conv, "Welcome")
    end)

    it("welcomes exactly once when conversationUpdate comes first", function()
      local conv = bot:install { user = "megan", first = "conversationUpdate" }
      bot:advance("1m")
      assert.sent_count(1, conv, "Welcome")
    end)

    it("welcomes exactly once when Teams redelivers the install", function()
      local conv = bot:install { user = "megan" }
      bot:redeliver()
      bot:advance("2m")
      bot:install { user = "megan" }   -- a late duplicate signal, inside the install window
      bot:advance("1m")
      assert.sent_count(1, conv, "Welcome")
    end)

    it("says why the user gets the welcome card, and what to try", function()
      local conv = bot:install { user = "megan" }
      local op = bot:last(conv)
      assert.equal("send", op.op)
      assert.equal("Welcome to herald's demo bot", op.summary)
      assert.equal("Welcome to herald's demo bot", op.card.body[1].text)
      assert.sent_to(conv, "You are getting this because the bot was just added to this chat.")
      assert.sent_to(conv, "Try: **help**, **card**, **proactive** or **whoami**.")
    end)

    it("names the team when installed in a team", function()
      local conv = bot:install { scope = "team", team = "Contoso" }
      assert.sent_count(1, conv)
      assert.sent_to(conv, "added to the team Contoso.")
    end)

    it("welcomes a group chat", function()
      local conv = bot:install { scope = "groupChat", chat = "Launch" }
      assert.sent_count(1, conv)
      assert.sent_to(conv, "added to this conversation.")
    end)

    it("sends a proactive message 5 s after install, then edits it 3 s later", function()
      local conv = bot:install { user = "megan" }
      local t0 = bot:now()
      bot:advance(4.999)
      assert.sent_count(1, conv)
      bot:advance("1ms")
      local proactive = bot:last(conv)
      assert.equal("send", proactive.op)
      assert.equal("A proactive hello, sent 5 seconds after install.", proactive.text)
      assert.equal(t0 + 5000, proactive.at)
      bot:advance(3)
      local edit = bot:last(conv)
      assert.equal("update", edit.op)
      assert.equal(proactive.activity_id, edit.activity_id)
      assert.equal(t0 + 8000, edit.at)
      assert.updated(conv, "(and edited 3 seconds later).", proactive.activity_id)
      assert.same({ "send", "send", "update" }, { bot:sent(conv)[1].op, bot:sent(conv)[2].op, bot:sent(conv)[3].op })
    end)

    it("does not edit a proactive message the user never got", function()
      local conv = bot:install { user = "megan" }
      bot:block(conv)
      bot:advance("10s")
      assert.sent_count(1, conv)
      assert.is_not.updated(conv)
      assert.in_ledger(conv, "blocked")
    end)
  end)

  describe("commands", function()
    local conv
    before_each(function()
      conv = bot:install { user = "megan" }
      bot:advance("10s")
      bot:clear()
    end)

    it("help lists the commands", function()
      bot:message("help", { user = "megan" })
      assert.replied(conv, "Here is what I can do:")
      assert.replied(conv, "- **whoami**: what I know about you and this conversation")
      assert.equal("markdown", bot:last(conv).body.textFormat)
      assert.sent_count(1)
    end)

    it("help works when mentioned in a channel", function()
      local channel = bot:install { team = "Contoso" }
      bot:clear()
      local r = bot:message("help", { team = "Contoso" })
      assert.equal("<at>Test Bot</at> help", r.activity.text)
      assert.replied(channel, "Here is what I can do:")
    end)

    it("card answers an Adaptive Card with the conversation's facts", function()
      bot:message("card", { user = "megan", timezone = "America/New_York" })
      local op = bot:last(conv)
      assert.equal("reply", op.op)
      assert.equal("An Adaptive Card", op.card.body[1].text)
      local facts = {}
      for _, f in ipairs(op.card.body[2].facts) do facts[f.title] = f.value end
      assert.same({ Conversation = "personal", Locale = "en-US", ["Time zone"] = "America/New_York" }, facts)
    end)

    it("whoami tells the user what the bot knows", function()
      bot:message("whoami", { user = "megan", timezone = "Europe/Berlin" })
      assert.replied(conv, "You are **Megan** (29:megan).")
      assert.replied(conv, "Conversation: a:29:megan (personal), tenant " .. testing.defaults.tenant .. ".")
      assert.replied(conv, "time zone Europe/Berlin.")
    end)

    it("proactive replies, sends 3 s later, and edits 3 s after that", function()
      bot:message("proactive", { user = "megan" })
      assert.replied(conv, "OK: watch for a message from me in 3 seconds.")
      bot:advance(3)
      local sent = bot:last(conv)
      assert.equal("This message was sent proactively.", sent.text)
      assert.is_nil(sent.reply_to)
      bot:advance(3)
      assert.updated(conv, "This message was sent proactively, and edited 3 seconds later.", sent.activity_id)
    end)

    it("proactive logs a failed send and stops", function()
      bot:message("proactive", { user = "megan" })
      bot:gone(conv)
      bot:advance("10s")
      assert.is_not.updated(conv)
      local warned = false
      for _, line in ipairs(bot:logs()) do
        if line:find("proactive send failed", 1, true) and line:find("not_found", 1, true) then warned = true end
      end
      assert.is_true(warned)
    end)

    it("echoes anything else", function()
      bot:message("Hello, bot", { user = "megan" })
      assert.replied(conv, "You said: Hello, bot")
      assert.equal(bot:last(conv).reply_to, bot:last(conv).body.replyToId)
    end)

    it("asks for text when there is none", function()
      bot:submit({ x = 1 }, { user = "megan" })
      assert.replied(conv, "I can only read text for now.")
    end)
  end)

  it("welcomes members added to a team", function()
    local conv = bot:install { team = "Contoso" }
    bot:clear()
    bot:members_added { team = "Contoso", members = { "Ann Lee", "raj" } }
    assert.sent_to(conv, "Welcome, Ann Lee! I'm the team's herald demo bot")
    assert.sent_to(conv, "Welcome, Raj!")
    assert.sent_count(2)
  end)

  it("logs the uninstall", function()
    bot:install { user = "megan" }
    bot:advance("11m")
    bot:clear()
    bot:uninstall { user = "megan" }
    local logged = false
    for _, line in ipairs(bot:logs()) do
      if line:find("uninstalled from a:29:megan by Megan", 1, true) then logged = true end
    end
    assert.is_true(logged)
    assert.sent_count(0)
  end)
end)
