-- teams.testing: simulated activities from Teams — install and uninstall in every scope, members
-- added and removed, messages with mentions and time zones, Adaptive Card actions — as the bot
-- sees them. tests/spec/bots/probe_bot.lua logs every event it gets as "probe {json}".
local testing = require "teams.testing"
local cjson = require "cjson"

local function events(bot, hook)
  local out = {}
  for _, line in ipairs(bot:logs()) do
    local json = line:match("probe (%b{})")
    if json then
      local ev = cjson.decode(json)
      if hook == nil or ev.hook == hook then out[#out + 1] = ev end
    end
  end
  return out
end

describe("teams.testing install and uninstall", function()
  local bot
  before_each(function() bot = testing.load("tests/spec/bots/probe_bot.lua") end)
  after_each(function() bot:close() end)

  it("installs in a personal chat: both signals, on_install once", function()
    local conv, results = bot:install { scope = "personal", user = "megan" }
    assert.equal("a:29:megan", conv)
    assert.equal(2, #results)
    assert.equal("installationUpdate", results[1].activity.type)
    assert.equal("conversationUpdate", results[2].activity.type)
    local installs = events(bot, "install")
    assert.equal(1, #installs)
    assert.same({ scope = "personal", user = "29:megan", installer = "29:megan", user_name = "Megan" },
      { scope = installs[1].scope, user = installs[1].user, installer = installs[1].installer,
        user_name = installs[1].user_name })
    assert.equal(testing.defaults.tenant, installs[1].tenant)
    assert.sent_count(1, conv)
    assert.sent_to(conv, "installed in personal")
    local ref = bot:conversation(conv)
    assert.equal("personal", ref.scope)
    assert.equal("https://smba.trafficmanager.net/amer/", ref.service_url)
    assert.equal(testing.defaults.bot_id, ref.bot_id)
    assert.is_true(ref.installed)
  end)

  it("runs on_install once when conversationUpdate comes first", function()
    local conv = bot:install { user = "megan", first = "conversationUpdate" }
    assert.equal(1, #events(bot, "install"))
    assert.sent_count(1, conv)
  end)

  it("installs with one signal only", function()
    local conv = bot:install { user = "megan", via = "conversationUpdate" }
    assert.equal(1, #events(bot, "install"))
    assert.sent_to(conv, "installed")
    local conv2, results = bot:install { user = "ann", both = false }
    assert.equal(1, #results)
    assert.equal("installationUpdate", results[1].activity.type)
    assert.sent_count(1, conv2)
  end)

  it("installs in a group chat", function()
    local conv = bot:install { scope = "groupChat", chat = "Project X", user = "megan" }
    assert.equal("19:project-x@thread.v2", conv)
    local ev = events(bot, "install")[1]
    assert.equal("groupChat", ev.scope)
    assert.equal(conv, ev.conversation)
    assert.sent_to(conv, "installed in groupChat")
    assert.sent_count(1)
    assert.equal("groupChat", bot:conversation(conv).scope)
  end)

  it("installs in a team: the conversation is the General channel", function()
    local conv = bot:install { scope = "team", team = "Contoso", user = "megan" }
    assert.equal("19:contoso@thread.tacv2", conv)
    assert.equal(bot:channel("Contoso"), conv)
    local ev = events(bot, "install")[1]
    assert.equal("channel", ev.scope)
    assert.equal("Contoso", ev.team)
    assert.equal(conv, ev.team_id)
    assert.sent_to(conv, "installed in channel")
    assert.sent_count(1)
    local ref = bot:conversation(conv)
    assert.equal("channel", ref.scope)
    assert.equal("Contoso", ref.team_name)
  end)

  it("uninstalls in each scope: on_uninstall once, the reference kept but marked", function()
    local personal = bot:install { user = "megan" }
    local chat = bot:install { scope = "groupChat" }
    local team = bot:install { team = "Contoso" }
    bot:advance("20m")    -- past the install window: a later signal is a new event
    bot:uninstall { user = "megan" }
    bot:uninstall { scope = "groupChat" }
    bot:uninstall { team = "Contoso" }
    local gone = events(bot, "uninstall")
    assert.equal(3, #gone)
    assert.same({ personal, chat, team }, { gone[1].conversation, gone[2].conversation, gone[3].conversation })
    for _, conv in ipairs { personal, chat, team } do
      local ref = bot:conversation(conv)
      assert.is_false(ref.installed)
      assert.is_number(ref.uninstalled_at)
    end
  end)

  it("installs again after an uninstall", function()
    local conv = bot:install { user = "megan" }
    bot:advance("11m")
    bot:uninstall { user = "megan" }
    bot:advance("11m")
    bot:install { user = "megan" }
    assert.equal(2, #events(bot, "install"))
    assert.sent_count(2, conv, "installed")
    assert.is_true(bot:conversation(conv).installed)
  end)
end)

describe("teams.testing members added and removed", function()
  local bot
  before_each(function() bot = testing.load("tests/spec/bots/probe_bot.lua") end)
  after_each(function() bot:close() end)

  it("reports members added to a team, the bot excluded", function()
    local conv = bot:install { team = "Contoso" }
    bot:members_added { team = "Contoso", members = { "megan", "Ann Lee" } }
    local ev = events(bot, "members_added")[1]
    assert.same({ "29:megan", "29:ann-lee" }, ev.members)
    assert.equal("Contoso", ev.team)
    assert.sent_to(conv, "hello Megan")
    assert.sent_to(conv, "hello Ann Lee")
    assert.sent_count(3, conv)
  end)

  it("reports members removed from a group chat", function()
    local conv = bot:install { scope = "groupChat", chat = "Ops" }
    bot:members_removed { chat = "Ops", members = { "megan" } }
    local ev = events(bot, "members_removed")[1]
    assert.same({ "29:megan" }, ev.members)
    assert.equal(conv, ev.conversation)
    assert.equal("groupChat", ev.scope)
  end)

  it("needs members", function()
    assert.has_error(function() bot:members_added { team = "Contoso" } end)
  end)
end)

describe("teams.testing messages", function()
  local bot
  before_each(function() bot = testing.load("tests/spec/bots/probe_bot.lua") end)
  after_each(function() bot:close() end)

  it("delivers a personal message with the user's time zone", function()
    local r = bot:message("hello there", { user = "megan", timezone = "America/New_York" })
    assert.equal("a:29:megan", r.conversation)
    local ev = events(bot, "message")[1]
    assert.equal("hello there", ev.text)
    assert.equal("America/New_York", ev.timezone)
    assert.equal("en-US", ev.locale)
    assert.equal("aad-megan", ev.aad)
    assert.replied("a:29:megan", "echo: hello there")
    -- herald stores the time zone it saw with the conversation
    assert.equal("America/New_York", bot:conversation("a:29:megan").timezone)
  end)

  it("takes the time zone and locale from a user table", function()
    bot:message("hi", { user = { name = "Jun", timezone = "Asia/Tokyo", locale = "ja-JP" } })
    local ev = events(bot, "message")[1]
    assert.equal("Asia/Tokyo", ev.timezone)
    assert.equal("ja-JP", ev.locale)
    assert.equal("29:jun", ev.user)
  end)

  it("mentions the bot in a channel, and the bot sees the text without it", function()
    local r = bot:message("status please", { team = "Contoso" })
    assert.equal("19:contoso@thread.tacv2", r.conversation)
    assert.equal("<at>Test Bot</at> status please", r.activity.text)
    local ev = events(bot, "message")[1]
    assert.equal("status please", ev.text)
    assert.same({ testing.defaults.bot_id }, ev.mentions)
    assert.replied(r.conversation, "echo: status please")
  end)

  it("carries user mentions", function()
    bot:message("<at>Test Bot</at> ping <at>Megan</at>", { scope = "groupChat", mentions = { "bot", "megan" } })
    local ev = events(bot, "message")[1]
    assert.same({ testing.defaults.bot_id, "29:megan" }, ev.mentions)
    assert.equal("ping <at>Megan</at>", ev.text)
    assert.has_error(function() bot:message("no tag", { mentions = { "megan" } }) end)
  end)

  it("posts in a channel thread", function()
    local r = bot:message("in a thread", { team = "Contoso", thread = 42 })
    assert.equal("19:contoso@thread.tacv2;messageid=42", r.conversation)
    assert.replied(r.conversation, "echo: in a thread")
    -- a channel's threads count as sent to the channel
    assert.sent_to("19:contoso@thread.tacv2", "echo: in a thread")
  end)

  it("ignores a redelivered activity", function()
    bot:message("once", { user = "megan" })
    bot:redeliver()
    assert.equal(1, #events(bot, "message"))
    assert.sent_count(1)
  end)

  it("submits an Action.Submit card as a message with a value", function()
    bot:submit({ choice = "yes", n = 3 }, { user = "megan" })
    local ev = events(bot, "message")[1]
    assert.same({ choice = "yes", n = 3 }, ev.value)
    assert.replied("a:29:megan", "submitted")
  end)
end)

describe("teams.testing Adaptive Card actions", function()
  local bot
  before_each(function() bot = testing.load("tests/spec/bots/probe_bot.lua") end)
  after_each(function() bot:close() end)

  it("returns the invoke response of an Action.Execute", function()
    local r = bot:card_action({ request = 17 }, { verb = "approve", user = "megan" })
    assert.equal(200, r.status)
    assert.equal("Approved 17", r.json.value)
    local ev = events(bot, "invoke")[1]
    assert.equal("adaptiveCard/action", ev.name)
    assert.equal("approve", ev.value.action.verb)
    assert.equal(17, ev.value.action.data.request)
  end)

  it("returns a refreshed card", function()
    local r = bot:card_action({}, { verb = "refresh", team = "Contoso" })
    assert.equal(200, r.status)
    assert.equal("application/vnd.microsoft.card.adaptive", r.json.type)
    assert.equal("Refreshed", r.json.value.body[1].text)
  end)

  it("returns an error response", function()
    local r = bot:card_action({}, { verb = "nope" })
    assert.equal(400, r.status)
    assert.equal("BadRequest", r.json.value.code)
  end)

  it("answers 501 when the bot has no on_invoke", function()
    local other = testing.load("tests/spec/bots/clock_bot.lua")
    local r = other:card_action({ x = 1 })
    assert.equal(501, r.status)
    other:close()
  end)
end)
