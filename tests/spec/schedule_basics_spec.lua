-- Durable schedules through teams.testing (issue 5 acceptance: at and every on a controllable
-- clock). tests/spec/bots/schedule_user_bot.lua. Cron, DST and the odd zones have their own specs
-- (testing_clock_spec.lua, reminders_spec.lua, schedule_user_tz_spec.lua) and C unit tests.
local testing = require "teams.testing"

local function times(ops)
  local out = {}
  for i, op in ipairs(ops) do out[i] = testing.iso(op.at) end
  return out
end

describe("schedules through the kit", function()
  local bot, conv
  local function say(text) return bot:message(text, { user = "megan" }) end
  local function fired(text)
    local out = {}
    for _, op in ipairs(bot:sent(conv)) do
      if op.op == "send" and op.text:find(text, 1, true) == 1 then out[#out + 1] = op end
    end
    return out
  end

  before_each(function()
    bot = testing.load("tests/spec/bots/schedule_user_bot.lua", { start = "2027-06-01T10:00:00Z" })
    conv = bot:personal("megan")
  end)
  after_each(function() bot:close() end)

  describe("every", function()
    it("fires at once, then on the grid of its interval, each with its own due time", function()
      say("every 15m tick")
      assert.replied(conv, "next 2027-06-01T10:00:00Z")
      bot:advance("1h")
      assert.same({ "2027-06-01T10:00:00Z", "2027-06-01T10:15:00Z", "2027-06-01T10:30:00Z",
                    "2027-06-01T10:45:00Z", "2027-06-01T11:00:00Z" }, times(fired("tick")))
      assert.equal("tick due 2027-06-01T10:45:00Z", fired("tick")[4].text)
      local s = bot:schedules(conv)[1]
      assert.same({ "every", "15m", 5 }, { s.kind, s.expr, s.runs })
      assert.equal(testing.time("2027-06-01T11:15:00Z") // 1000, s.next_fire)
    end)

    it("takes seconds as a number", function()
      say("every 90 beat")
      bot:advance("5m")
      assert.same({ "2027-06-01T10:00:00Z", "2027-06-01T10:01:30Z", "2027-06-01T10:03:00Z",
                    "2027-06-01T10:04:30Z" }, times(fired("beat")))
    end)

    it("starts at its anchor and keeps to it", function()
      say("every 1d@2027-06-03T09:00:00+02:00 daily")
      assert.replied(conv, "next 2027-06-03T07:00:00Z")
      bot:advance_to("2027-06-05T12:00:00Z")
      assert.same({ "2027-06-03T07:00:00Z", "2027-06-04T07:00:00Z", "2027-06-05T07:00:00Z" },
        times(fired("daily")))
    end)

    it("stops when cancelled", function()
      say("every 1h ping")
      local id = bot:schedules(conv)[1].id
      bot:advance("2h")
      assert.equal(3, #fired("ping"))           -- 10:00, 11:00, 12:00
      say("cancel " .. id)
      assert.replied(conv, "cancelled")
      bot:advance("1d")
      assert.equal(3, #fired("ping"))
      assert.is_nil(bot:schedule(id))
      say("cancel " .. id)
      assert.replied(conv, "no such schedule")
    end)

    it("is replaced, not doubled, when scheduled again under the same id", function()
      say("every 1h ping")
      bot:advance("30m")
      say("every 1h ping")                      -- same id: one row, anchored anew at 10:30
      assert.equal(1, #bot:schedules(conv))
      bot:advance("2h")
      assert.same({ "2027-06-01T10:00:00Z", "2027-06-01T10:30:00Z", "2027-06-01T11:30:00Z",
                    "2027-06-01T12:30:00Z" }, times(fired("ping")))
    end)

    it("refuses an interval it cannot use", function()
      say("every 0 never")
      assert.replied(conv, "schedule failed:")
      say("every 5x never")
      assert.replied(conv, "schedule failed:")
      assert.equal(0, #bot:schedules(conv))
    end)
  end)

  describe("at", function()
    it("fires once at an RFC 3339 instant with an offset", function()
      say("at 2027-06-01T15:30:00+02:00 standup")
      assert.replied(conv, "next 2027-06-01T13:30:00Z")
      bot:advance_to("2027-06-01T13:29:59Z")
      assert.equal(0, #fired("standup"))
      bot:advance("1s")
      assert.same({ "2027-06-01T13:30:00Z" }, times(fired("standup")))
      bot:advance("7d")
      assert.equal(1, #fired("standup"))
      local s = bot:schedules(conv)[1]
      assert.equal(1, s.runs)
      assert.is_nil(s.next_fire)             -- kept for the record, never due again
      assert.equal("fired", s.last_result)
    end)

    it("fires at a local date-time in an IANA zone, 45-minute offsets included", function()
      say("at 2027-06-02T09:00 Asia/Kathmandu namaste")
      assert.replied(conv, "next 2027-06-02T03:15:00Z")
      -- (another local time: the default id is handler:conversation:kind:expr, without the zone)
      say("at 2027-06-02T09:01 America/New_York morning")
      assert.replied(conv, "next 2027-06-02T13:01:00Z")
      bot:advance_to("2027-06-03T00:00:00Z")
      assert.same({ "2027-06-02T03:15:00Z" }, times(fired("namaste")))
      assert.same({ "2027-06-02T13:01:00Z" }, times(fired("morning")))
    end)

    it("fires an at of the current second, and refuses one in the past or without a zone", function()
      say("at 2027-06-01T10:00:00Z now")
      assert.same({ "2027-06-01T10:00:00Z" }, times(fired("now")))
      say("at 2027-06-01T09:59:59Z late")
      assert.replied(conv, "schedule failed: that time is in the past")
      say("at 2027-06-02T09:00 floating")
      assert.replied(conv, "schedule failed:")
      assert.equal(1, #bot:schedules(conv))
    end)

    it("can be cancelled before it fires", function()
      say("at 2027-06-01T12:00:00Z lunch")
      local id = bot:schedules(conv)[1].id
      say("cancel " .. id)
      bot:advance("1d")
      assert.equal(0, #fired("lunch"))
    end)
  end)
end)
