-- Specs for teams.message: what scripts pass as a message becomes the activity Teams expects.
local message = require "teams.message"
local cjson = require "cjson"

describe("teams.message.build", function()
  it("turns a string into a message activity", function()
    local a = message.build("hello")
    assert.same({ type = "message", text = "hello" }, a)
  end)

  it("sets markdown, summary, importance and the alert flag", function()
    local a = message.build { text = "**hi**", markdown = true, summary = "s", importance = "high", alert = true }
    assert.equal("markdown", a.textFormat)
    assert.equal("s", a.summary)
    assert.equal("high", a.importance)
    assert.same({ notification = { alert = true } }, a.channelData)
  end)

  it("wraps a card body in an Adaptive Card attachment", function()
    local a = message.build { card = { { type = "TextBlock", text = "x" } } }
    assert.equal(1, #a.attachments)
    local att = a.attachments[1]
    assert.equal("application/vnd.microsoft.card.adaptive", att.contentType)
    assert.equal("AdaptiveCard", att.content.type)
    assert.equal("1.5", att.content.version)
    assert.equal("TextBlock", att.content.body[1].type)
  end)

  it("keeps a full card and raw attachments as given", function()
    local card = { type = "AdaptiveCard", version = "1.4", body = {} }
    local a = message.build { cards = { card }, attachments = { { contentType = "image/png", contentUrl = "u" } } }
    assert.equal("1.4", a.attachments[1].content.version)
    assert.equal("image/png", a.attachments[2].contentType)
  end)

  it("adds mention entities whose text appears in the message", function()
    local text, m = message.mention { id = "29:u", name = "Megan" }
    local a = message.build { text = "Hi " .. text, mentions = { m } }
    assert.same({ type = "mention", text = "<at>Megan</at>", mentioned = { id = "29:u", name = "Megan" } },
      a.entities[1])
  end)

  it("refuses a mention missing from the text", function()
    assert.has_error(function()
      message.build { text = "Hi", mentions = { { id = "29:u", name = "Megan" } } }
    end)
  end)

  it("refuses an empty message, unknown fields and wrong types", function()
    assert.has_error(function() message.build {} end)
    assert.has_error(function() message.build { text = "" } end)
    assert.has_error(function() message.build { txt = "typo" } end)
    assert.has_error(function() message.build(42) end)
    assert.has_error(function() message.build { text = 5 } end)
    assert.has_error(function() message.build { text = "x", attachments = { { content = {} } } } end)
  end)

  it("fills from, conversation, replyToId and id from the context", function()
    local a = message.build("x", { from = { id = "28:b" }, conversation = "c1", reply_to = "r1", id = "a1" })
    assert.same({ id = "28:b" }, a.from)
    assert.same({ id = "c1" }, a.conversation)
    assert.equal("r1", a.replyToId)
    assert.equal("a1", a.id)
  end)

  it("encodes to JSON that decodes back to the same activity", function()
    local json = message.encode({ text = "é ü \"quoted\" \n" }, { conversation = "a:1" })
    local back = cjson.decode(json)
    assert.equal("é ü \"quoted\" \n", back.text)
    assert.equal("a:1", back.conversation.id)
  end)
end)

-- Issue 12, bug 1: a nil hole in a list reached Teams as JSON null ("actions":[null,{...}]).
describe("lists with holes", function()
  local submit = { type = "Action.Submit", title = "Stop" }
  local function no_null(a) assert.is_nil(cjson.encode(a):find("null", 1, true)) end

  it("teams.card drops nil holes in its body and actions, keeping the order", function()
    local url = nil
    local att = message.card({ { type = "TextBlock", text = "a" }, nil, { type = "TextBlock", text = "b" } },
      { url and { type = "Action.OpenUrl", url = url } or nil, submit })
    assert.same({ submit }, att.content.actions)
    assert.same({ "a", "b" }, { att.content.body[1].text, att.content.body[2].text })
    no_null(att)
  end)

  it("teams.card drops holes in a full card's body and actions too", function()
    local att = message.card { type = "AdaptiveCard", body = { nil, { type = "TextBlock", text = "x" } },
                               actions = { nil, submit } }
    assert.equal(1, #att.content.body)
    assert.same({ submit }, att.content.actions)
  end)

  it("message building drops holes in card, cards, attachments, mentions and entities", function()
    local a = message.build { text = "hi", card = { nil, { type = "TextBlock", text = "x" } },
                              cards = { nil, { { type = "TextBlock", text = "y" } } },
                              entities = { nil, { type = "clientInfo" } } }
    assert.equal(2, #a.attachments)
    assert.equal("x", a.attachments[1].content.body[1].text)
    assert.equal(1, #a.entities)
    no_null(a)
  end)

  it("raises naming the field and index for a hole anywhere else", function()
    local ok, err = pcall(message.build, { text = "x", attachments = {
      { contentType = "application/vnd.microsoft.card.adaptive",
        content = { type = "AdaptiveCard", body = { { type = "ColumnSet", columns = { nil, {} } } } } } } })
    assert.is_false(ok)
    assert.matches("attachments[1].content.body[1].columns[1] is nil", err, 1, true)
  end)

  it("raises for a list mixed with named keys (it would be sent as an object)", function()
    local ok, err = pcall(message.build, { text = "x", channel_data = { list = { "a", b = 1 } } })
    assert.is_false(ok)
    assert.matches("channelData.list mixes list items and the key 'b'", err, 1, true)
  end)

  it("refuses a cycle instead of walking it for ever", function()
    local t = {}
    t.a, t.b = t, t
    local ok, err = pcall(message.build, { text = "x", channel_data = t })
    assert.is_false(ok)
    assert.matches("holds too many tables", err, 1, true)
  end)

  it("teams.card refuses a single element where the body list belongs", function()
    assert.has_error(function() message.card { type = "TextBlock", text = "x" } end)
  end)

  it("an error points at the caller's line", function()
    local ok, err = pcall(function()
      local a = message.build({ text = "x", channel_data = { l = { nil, 1 } } }, nil, 1)
      return a
    end)
    assert.is_false(ok)
    assert.matches("message_spec.lua:%d+: message: channelData.l%[1%] is nil", err)
  end)
end)
