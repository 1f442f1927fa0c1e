-- Durable schedules with tz = "user" (issue 5 acceptance: "a user whose zone changes between
-- runs"): a daily 09:00 digest follows the zone the user's own Teams client reports, read from
-- the stored conversation (localTimezone / clientInfo), and the next firing after the user moves
-- is 09:00 in the new zone. Virtual clock: no sleeping. tests/spec/bots/schedule_user_bot.lua.
--
-- June 2027: New York is on EDT (UTC-4, 09:00 = 13:00Z), Paris on CEST (UTC+2, 09:00 = 07:00Z),
-- Kathmandu is UTC+05:45 all year (09:00 = 03:15Z).
local testing = require "teams.testing"

local NY, PARIS, KTM = "America/New_York", "Europe/Paris", "Asia/Kathmandu"

local function digests(bot, conv)
  local out = {}
  for _, op in ipairs(bot:sent(conv)) do
    if op.text and op.text:find("^digest due") then out[#out + 1] = testing.iso(op.at) end
  end
  return out
end

describe("schedules with tz = \"user\"", function()
  local bot, conv
  local function say(text, tz) return bot:message(text, { user = "megan", timezone = tz }) end

  before_each(function()
    bot = testing.load("tests/spec/bots/schedule_user_bot.lua", { start = "2027-06-01T10:00:00Z" })
    conv = bot:personal("megan")
  end)
  after_each(function() bot:close() end)

  it("fires a daily 09:00 digest at 09:00 in the user's zone", function()
    say("digest", NY)
    assert.replied(conv, "scheduled digest:" .. conv .. " next 2027-06-01T13:00:00Z")
    local s = bot:schedule("digest:" .. conv)
    assert.same({ "cron", "0 9 * * *", "user" }, { s.kind, s.expr, s.tz })
    bot:advance_to("2027-06-01T12:59:59Z")
    assert.same({}, digests(bot, conv))
    bot:advance_to("2027-06-03T12:00:00Z")
    assert.same({ "2027-06-01T13:00:00Z", "2027-06-02T13:00:00Z" }, digests(bot, conv))
    assert.sent_to(conv, "digest due 2027-06-01T13:00:00Z zone America/New_York")
    assert.equal(2, bot:schedule("digest:" .. conv).runs)
  end)

  it("fires at 09:00 Paris the day after the user moved from New York to Paris", function()
    say("digest", NY)
    bot:advance_to("2027-06-01T13:00:00Z")
    assert.same({ "2027-06-01T13:00:00Z" }, digests(bot, conv))     -- 09:00 New York
    -- that evening the user writes from Paris: Teams reports localTimezone Europe/Paris
    bot:advance_to("2027-06-01T18:00:00Z")
    say("get digest:" .. conv, PARIS)
    assert.equal(PARIS, bot:conversation(conv).timezone)
    bot:advance_to("2027-06-04T00:00:00Z")
    assert.same({ "2027-06-01T13:00:00Z",      -- 09:00 EDT, before the move
                  "2027-06-02T07:00:00Z",      -- 09:00 CEST: the very next firing follows the move
                  "2027-06-03T07:00:00Z" },
      digests(bot, conv))
    assert.sent_to(conv, "digest due 2027-06-02T07:00:00Z zone Europe/Paris")
  end)

  it("fires at 09:00 New York the day after the user moved from Paris to New York", function()
    say("digest", PARIS)
    bot:advance_to("2027-06-02T07:00:00Z")
    assert.same({ "2027-06-02T07:00:00Z" }, digests(bot, conv))     -- 09:00 Paris
    bot:advance_to("2027-06-02T20:00:00Z")
    say("hello from New York", NY)
    assert.equal(NY, bot:conversation(conv).timezone)
    bot:advance_to("2027-06-05T00:00:00Z")
    -- not 2027-06-03T07:00Z, which is 03:00 in New York
    assert.same({ "2027-06-02T07:00:00Z", "2027-06-03T13:00:00Z", "2027-06-04T13:00:00Z" },
      digests(bot, conv))
  end)

  it("uses the configured default zone until the user's zone is known", function()
    bot = testing.load("tests/spec/bots/schedule_user_bot.lua",
                       { start = "2027-06-01T10:00:00Z", default_tz = KTM })
    conv = bot:personal("megan")
    say("digest")                                   -- no localTimezone, no clientInfo zone
    assert.is_nil(bot:conversation(conv).timezone)
    assert.replied(conv, "next 2027-06-02T03:15:00Z")   -- 09:00 in Kathmandu (+05:45)
    bot:advance_to("2027-06-02T03:15:00Z")
    assert.same({ "2027-06-02T03:15:00Z" }, digests(bot, conv))
    assert.sent_to(conv, "digest due 2027-06-02T03:15:00Z zone -")
    say("hi", NY)
    bot:advance_to("2027-06-04T00:00:00Z")
    assert.same({ "2027-06-02T03:15:00Z", "2027-06-02T13:00:00Z", "2027-06-03T13:00:00Z" },
      digests(bot, conv))
  end)

  it("keeps 09:00 local across the user's own DST change", function()
    bot = testing.load("tests/spec/bots/schedule_user_bot.lua", { start = "2027-10-29T12:00:00Z" })
    conv = bot:personal("megan")
    say("digest", PARIS)
    bot:advance_to("2027-11-02T00:00:00Z")
    -- CEST (UTC+2) until Sunday 2027-10-31 03:00, CET (UTC+1) after
    assert.same({ "2027-10-30T07:00:00Z", "2027-10-31T08:00:00Z", "2027-11-01T08:00:00Z" },
      digests(bot, conv))
  end)

  -- The missed-run policy (missed = "once" | "skip") needs herald to be down past a fire time;
  -- the kit has no restart, so it is tested against the real binary in
  -- tests/integration/test_schedules.py.
end)
