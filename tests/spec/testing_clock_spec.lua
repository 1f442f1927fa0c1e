-- teams.testing: the clock. bot:advance / bot:advance_to fire timers, sleeps, retries and
-- durable schedules at their own instants, DST included. tests/spec/bots/clock_bot.lua.
local testing = require "teams.testing"

local function times(ops)
  local out = {}
  for i, op in ipairs(ops) do out[i] = testing.iso(op.at) end
  return out
end

describe("teams.testing clock", function()
  local bot, conv
  before_each(function()
    bot = testing.load("tests/spec/bots/clock_bot.lua", { start = "2027-03-10T12:00:00Z" })
    conv = bot:personal("megan")
  end)
  after_each(function() bot:close() end)

  local function say(text, o)
    o = o or {}
    o.user = o.user or "megan"
    return bot:message(text, o)
  end

  it("starts where it is told, and moves only when told", function()
    assert.equal(testing.time("2027-03-10T12:00:00Z"), bot:now())
    assert.equal("2027-03-10T12:00:00Z", bot:clock())
    bot:advance("1h30m")
    assert.equal("2027-03-10T13:30:00Z", bot:clock())
    bot:advance(90)
    assert.equal("2027-03-10T13:31:30Z", bot:clock())
    bot:advance_to("2027-03-10T10:00:00-04:00")
    assert.equal("2027-03-10T14:00:00Z", bot:clock())
    assert.has_error(function() bot:advance_to("2027-03-01T00:00:00Z") end)
  end)

  it("wakes a sleeping handler when its time comes", function()
    local r = say("sleep 30")
    assert.is_true(r.pending)
    assert.sent_count(0)
    bot:advance(29)
    assert.sent_count(0)
    bot:advance(1)
    assert.replied(conv, "woke")
    assert.equal(testing.time("2027-03-10T12:00:30Z"), bot:last(conv).at)
  end)

  it("fires a one-shot timer", function()
    say("after 600 tea is ready")
    bot:advance("9m59s")
    assert.not_sent_to(conv, "tea is ready")
    bot:advance("1s")
    assert.sent_to(conv, "tea is ready")
    assert.equal(testing.time("2027-03-10T12:10:00Z"), bot:last(conv).at)
  end)

  it("fires a repeating timer at every interval until cancelled", function()
    say("every 60 tick")
    bot:advance("5m")
    local ticks = bot:sent { conversation = conv, op = "send" }
    assert.equal(5, #ticks)
    assert.same({ "2027-03-10T12:01:00Z", "2027-03-10T12:02:00Z", "2027-03-10T12:03:00Z",
                  "2027-03-10T12:04:00Z", "2027-03-10T12:05:00Z" }, times(ticks))
    assert.equal("tick 5", ticks[5].text)
    say("stop")
    assert.replied(conv, "stopped")
    bot:advance("10m")
    assert.sent_count(5, conv, { op = "send" })
  end)

  it("fires a schedule at an instant", function()
    say("at 2027-03-11T08:30:00Z standup")
    assert.replied(conv, "next 2027-03-11T08:30:00Z")
    local s = bot:schedules(conv)[1]
    assert.equal("at", s.kind)
    assert.equal(testing.time("2027-03-11T08:30:00Z") // 1000, s.next_fire)
    bot:advance_to("2027-03-11T08:29:59Z")
    assert.not_sent_to(conv, "standup")
    bot:advance("1s")
    assert.sent_to(conv, "standup (due 2027-03-11T08:30:00Z)")
    assert.equal(1, bot:schedule(s.id).runs)
  end)

  it("fires an every-schedule: at once, then at every interval", function()
    say("each 2h backup")
    bot:advance("7h")
    assert.sent_count(4, conv, "backup")
    assert.same({ "2027-03-10T12:00:00Z", "2027-03-10T14:00:00Z", "2027-03-10T16:00:00Z",
                  "2027-03-10T18:00:00Z" },
      times(bot:sent { conversation = conv, op = "send" }))
  end)

  it("keeps a cron schedule at 09:00 New York time across the DST change", function()
    say("cron 0_9_*_*_* America/New_York coffee")
    bot:advance_to("2027-03-16T00:00:00Z")
    -- EST (UTC-5) until Sunday 2027-03-14 02:00, EDT (UTC-4) after
    assert.same({ "2027-03-10T14:00:00Z", "2027-03-11T14:00:00Z", "2027-03-12T14:00:00Z",
                  "2027-03-13T14:00:00Z", "2027-03-14T13:00:00Z", "2027-03-15T13:00:00Z" },
      times(bot:sent { conversation = conv, op = "send" }))
  end)

  it("follows the user's own time zone with tz = \"user\"", function()
    say("cron 0_9_*_*_* user coffee", { timezone = "Europe/Paris" })
    bot:advance_to("2027-03-12T00:00:00Z")
    assert.same({ "2027-03-11T08:00:00Z" }, times(bot:sent { conversation = conv, op = "send" }))
  end)

  it("stops a cancelled schedule", function()
    say("each 1h ping")
    local id = bot:schedules(conv)[1].id
    bot:advance("1h")
    say("cancel " .. id)
    assert.replied(conv, "cancelled")
    bot:advance("5h")
    assert.sent_count(2, conv, "ping")     -- at once, then at 13:00
    assert.is_nil(bot:schedule(id))
  end)

  it("delays a schedule's send that Teams throttles, on the same clock", function()
    say("at 2027-03-10T13:00:00Z report")
    bot:throttle(conv, 20)
    bot:advance("2h")
    local reqs = bot:requests { conversation = conv, op = "send" }
    assert.same({ 429, 201 }, { reqs[1].status, reqs[2].status })
    assert.same({ "2027-03-10T13:00:00Z", "2027-03-10T13:00:20Z" }, times(reqs))
  end)
end)
