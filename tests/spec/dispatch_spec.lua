-- Specs for the teams module's dispatcher: which hook runs for which activity. herald.core (the C
-- half) is replaced by a recorder, so these run under a stock busted with no host.
local function load_teams()
  local sent, dispatcher = {}, nil
  package.loaded["teams"] = nil
  package.loaded["herald.core"] = {
    set_dispatcher = function(fn) dispatcher = fn end,
    set_hooks = function() end,
    set_notify = function() end,
    send = function(conv, json, reply_to)
      sent[#sent + 1] = { conv = conv, json = json, reply_to = reply_to }
      return tostring(#sent)
    end,
    get_reference = function() return nil end,
    config = function() return { dev = true } end,
  }
  package.loaded["herald.timer"] = {}
  package.loaded["herald.schedule"] = {
    set_handlers = function() end, set_dispatch = function() end,
  }
  local teams = require "teams"
  return teams, function(...) return dispatcher(...) end, sent
end

local function activity(t)
  t.serviceUrl = t.serviceUrl or "http://127.0.0.1:1/c"
  t.conversation = t.conversation or { id = "c1", conversationType = "personal" }
  t.recipient = t.recipient or { id = "bot" }
  t.from = t.from or { id = "u1", name = "Ann", aadObjectId = "aad1" }
  return t
end

describe("teams dispatcher", function()
  it("runs on_install only when the host says this activity is the install", function()
    local teams, dispatch = load_teams()
    local n = 0
    teams.on_install(function(ev)
      n = n + 1
      assert.equal("u1", ev.installer.id)
    end)
    dispatch(activity { type = "installationUpdate", action = "add" }, "install")
    dispatch(activity { type = "conversationUpdate", membersAdded = { { id = "bot" } } }, nil)
    assert.equal(1, n)
  end)

  it("runs on_uninstall for the signal the host picked", function()
    local teams, dispatch = load_teams()
    local n = 0
    teams.on_uninstall(function() n = n + 1 end)
    dispatch(activity { type = "installationUpdate", action = "remove" }, "uninstall")
    assert.equal(1, n)
  end)

  it("passes other members to on_members_added, never the bot, and not in personal chats", function()
    local teams, dispatch = load_teams()
    local seen = {}
    teams.on_members_added(function(ev) seen[#seen + 1] = ev.members end)
    dispatch(activity { type = "conversationUpdate",
      conversation = { id = "19:x", conversationType = "channel" },
      membersAdded = { { id = "bot" }, { id = "u2", name = "Bo" } } }, nil)
    dispatch(activity { type = "conversationUpdate", membersAdded = { { id = "u3" } } }, nil)
    assert.equal(1, #seen)
    assert.same({ { id = "u2", name = "Bo" } }, seen[1])
  end)

  it("strips the bot mention from message text", function()
    local teams, dispatch = load_teams()
    local text
    teams.on_message(function(ev) text = ev.text end)
    dispatch(activity { type = "message", text = "<at>Bot</at>  do it ",
      entities = { { type = "mention", text = "<at>Bot</at>", mentioned = { id = "bot" } } } })
    assert.equal("do it", text)
  end)

  it("gives on_activity what no other hook took", function()
    local teams, dispatch = load_teams()
    local types = {}
    teams.on_activity(function(ev) types[#types + 1] = ev.type end)
    dispatch(activity { type = "messageReaction" })
    dispatch(activity { type = "message", text = "hi" })
    dispatch(activity { type = "installationUpdate", action = "add" }, nil)
    assert.same({ "messageReaction", "message" }, types)
  end)

  it("returns the invoke response, and 501 without a handler", function()
    local teams, dispatch = load_teams()
    local status, body = dispatch(activity { type = "invoke", name = "x" })
    assert.equal(501, status)
    teams.on_invoke(function(ev) return { status = 200, body = { echo = ev.name } } end)
    status, body = dispatch(activity { type = "invoke", name = "adaptiveCard/action" })
    assert.equal(200, status)
    assert.equal('{"echo":"adaptiveCard\\/action"}', body)
  end)

  it("ev:reply threads to the activity and uses the bot as sender", function()
    local teams, dispatch, sent = load_teams()
    teams.on_message(function(ev) ev:reply("pong") end)
    dispatch(activity { type = "message", id = "m9", text = "ping" })
    assert.equal(1, #sent)
    assert.equal("c1", sent[1].conv)
    assert.equal("m9", sent[1].reply_to)
    local body = require("cjson").decode(sent[1].json)
    assert.equal("pong", body.text)
    assert.equal("m9", body.replyToId)
    assert.equal("bot", body.from.id)
  end)

  it("rejects a non-function hook", function()
    local teams = load_teams()
    assert.has_error(function() teams.on_message("nope") end)
  end)
end)
