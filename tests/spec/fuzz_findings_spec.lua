-- Regressions found by tests/fuzz/fuzz_inbound (corpus file tests/fuzz/corpus/inbound/regress-*):
-- what herald does with a POST /api/messages body, through teams.testing's real core.
local testing = require "teams.testing"

describe("inbound activities the fuzzer found", function()
  local bot
  before_each(function() bot = testing.load("tests/spec/bots/probe_bot.lua") end)
  after_each(function() bot:close() end)

  -- "\u0000" decodes to a NUL byte: C read a shorter id than the script saw, so the activity was
  -- stored (and answered) as conversation "a:1" while the handler ran for "a:1<NUL>b".
  it("refuses a conversation id or serviceUrl holding a NUL", function()
    local r = bot:post('{"type":"message","conversation":{"id":"a:1\\u0000b"},'
      .. '"serviceUrl":"https://smba.trafficmanager.net/amer/"}')
    assert.equal(400, r.status)
    assert.same({ error = "missing conversation.id", field = "conversation.id" }, r.json)
    r = bot:post('{"type":"message","conversation":{"id":"a:2"},'
      .. '"serviceUrl":"https://smba.trafficmanager.net/amer/\\u0000.evil.example"}')
    assert.equal(400, r.status)
    assert.same({ error = "missing serviceUrl", field = "serviceUrl" }, r.json)
    assert.equal(0, #bot:query("SELECT id FROM conversations"))
  end)

  it("still takes the same activity without the NUL", function()
    local r = bot:post('{"type":"message","conversation":{"id":"a:1b"},'
      .. '"serviceUrl":"https://smba.trafficmanager.net/amer/"}')
    assert.equal(200, r.status)
  end)
end)
