-- scripts/reminders.lua under teams.testing: reminders at the user's local time, across the US
-- DST change of Sunday 2027-03-14 (02:00 EST → 03:00 EDT: New York goes from UTC-5 to UTC-4).
local testing = require "teams.testing"

local NY = "America/New_York"

local function times(ops)
  local out = {}
  for i, op in ipairs(ops) do out[i] = testing.iso(op.at) end
  return out
end

describe("reminders.lua", function()
  local bot, conv
  before_each(function()
    -- Friday 2027-03-12, 15:00 in New York
    bot = testing.load("scripts/reminders.lua", { start = "2027-03-12T15:00:00-05:00" })
    conv = bot:install { user = "megan" }
  end)
  after_each(function() bot:close() end)

  local function say(text) return bot:message(text, { user = { name = "megan", timezone = NY } }) end

  it("greets on install, once", function()
    assert.sent_count(1, conv)
    assert.sent_to(conv, "Hi! I send reminders at your local time.")
  end)

  it("explains itself when it does not understand", function()
    say("hello?")
    assert.replied(conv, "I can remind you of things, at your local time:")
    assert.replied(conv, "**remind me in 10 minutes to** stretch")
  end)

  it("answers an unreadable \"remind me ...\" with the two forms it understands", function()
    say("remind me tomorrow to call Ann")
    assert.replied(conv, "Tell me when: **remind me at 9:00 to** ...")
    assert.equal(0, #bot:schedules(conv))
  end)

  it("fires a \"9:00 local\" reminder at 09:00 EST before the DST change", function()
    say("remind me at 9:00 to water the plants")
    assert.replied(conv, "OK, I will remind you at 09:00 (America/New_York) to water the plants.")
    bot:advance_to("2027-03-13T08:59:59-05:00")
    assert.not_sent_to(conv, "Reminder")
    bot:advance("1s")
    assert.sent_to(conv, "⏰ Reminder: water the plants")
    assert.equal(testing.time("2027-03-13T14:00:00Z"), bot:last(conv).at)
    -- once: the reminder cancelled itself
    bot:advance("3d")
    assert.sent_count(1, conv, "Reminder")
    assert.equal(0, #bot:schedules(conv))
  end)

  it("fires a \"9:00 local\" reminder at 09:00 EDT right after the DST change", function()
    bot:advance_to("2027-03-13T15:00:00-05:00")          -- Saturday afternoon, still EST
    say("remind me at 9:00 to call mom")
    local s = bot:schedules(conv)[1]
    assert.equal("user", s.tz)
    -- Sunday 09:00 in New York is 13:00 UTC: an hour earlier than on Saturday
    assert.equal(testing.time("2027-03-14T09:00:00-04:00") // 1000, s.next_fire)
    bot:advance_to("2027-03-14T12:59:59Z")
    assert.not_sent_to(conv, "Reminder")
    bot:advance("1s")
    assert.sent_to(conv, "⏰ Reminder: call mom")
    assert.equal(testing.time("2027-03-14T13:00:00Z"), bot:last(conv).at)
  end)

  it("fires \"remind me in N minutes\" N minutes later", function()
    say("remind me in 10 minutes to stretch")
    assert.replied(conv, "OK, in 10 minutes I will remind you to stretch.")
    local t0 = bot:now()
    bot:advance("9m59s")
    assert.not_sent_to(conv, "Reminder: stretch")
    bot:advance("1s")
    assert.sent_to(conv, "⏰ Reminder: stretch")
    assert.equal(t0 + 600000, bot:last(conv).at)
  end)

  it("says \"1 minute\" for one minute", function()
    say("remind me in 1 minute to breathe")
    assert.replied(conv, "OK, in 1 minute I will remind you to breathe.")
    bot:advance("1m")
    assert.sent_to(conv, "⏰ Reminder: breathe")
  end)

  it("refuses a time that is not a time of day", function()
    say("remind me at 25:00 to sleep")
    assert.replied(conv, "That is not a time of day.")
    assert.equal(0, #bot:schedules(conv))
  end)

  it("sends the daily digest at 09:00 local on consecutive days across the DST change", function()
    say("daily digest")
    assert.replied(conv, "Daily digest on: every day at 09:00 America/New_York.")
    bot:advance_to("2027-03-16T12:00:00Z")
    local digests = {}
    for _, op in ipairs(bot:sent(conv)) do
      if op.text and op.text:find("Good morning!", 1, true) then digests[#digests + 1] = op end
    end
    assert.same({ "2027-03-13T14:00:00Z",     -- Sat 09:00 EST
                  "2027-03-14T13:00:00Z",     -- Sun 09:00 EDT (the change was at 02:00)
                  "2027-03-15T13:00:00Z" },   -- Mon 09:00 EDT
      times(digests))
    assert.equal("Good morning! Your daily digest: 0 active reminders.", digests[1].text)
    assert.equal(3, bot:schedule("digest:" .. conv).runs)
  end)

  it("counts active reminders in the digest", function()
    say("daily digest")
    say("remind me at 10:00 to stand up")
    say("remind me at 11:00 to drink water")
    bot:advance_to("2027-03-13T09:00:00-05:00")
    assert.sent_to(conv, "Good morning! Your daily digest: 2 active reminders.")
  end)

  it("stops the digest", function()
    say("daily digest")
    bot:advance_to("2027-03-13T10:00:00-05:00")
    assert.sent_count(1, conv, "Good morning!")
    say("stop digest")
    assert.replied(conv, "Daily digest stopped.")
    bot:advance("3d")
    assert.sent_count(1, conv, "Good morning!")
    assert.is_nil(bot:schedule("digest:" .. conv))
    say("stop digest")
    assert.replied(conv, "You had no daily digest.")
  end)

  it("lists what is scheduled", function()
    say("my reminders")
    assert.replied(conv, "Nothing scheduled.")
    bot:clear()
    say("daily digest")
    say("remind me at 9:30 to water the plants")
    say("my reminders")
    local list = bot:last(conv).text
    assert.matches("- daily digest: next 2027%-03%-13 14:00 UTC", list)
    assert.matches("- water the plants: next 2027%-03%-13 14:30 UTC", list)
  end)

  it("delivers the digest late, not twice, when Teams throttles it", function()
    say("daily digest")
    bot:advance_to("2027-03-13T08:00:00-05:00")
    bot:throttle(conv, 120)
    bot:advance("2h")
    local reqs = bot:requests { conversation = conv, op = "send" }
    local last_two = { reqs[#reqs - 1], reqs[#reqs] }
    assert.same({ 429, 201 }, { last_two[1].status, last_two[2].status })
    assert.same({ "2027-03-13T14:00:00Z", "2027-03-13T14:02:00Z" }, times(last_two))
    assert.sent_count(1, conv, "Good morning!")
  end)

  it("keeps a blocked user's digest out of Teams and in the ledger", function()
    say("daily digest")
    bot:block(conv)
    bot:advance_to("2027-03-14T10:00:00-04:00")
    assert.sent_count(0, conv, "Good morning!")
    assert.in_ledger(conv, "blocked")
    local digest = bot:schedule("digest:" .. conv)
    assert.equal(2, digest.runs)
  end)
end)

-- Issue 12, bug 1: the commands were tried in pairs() order, which Lua leaves undefined; with a
-- catch-all among them, which one answered depended on the table's hashing. The script is run
-- here outside the kit, with a stub `teams`, under pairs() in both directions: the answer must
-- not change.
describe("reminders.lua dispatch order", function()
  local function run(text, reverse)
    local on_message
    local scheduled, replies = {}, {}
    local stub = {
      conversation = function() return nil end,
      now = function() return 0 end,
      on_message = function(fn) on_message = fn end,
      on_install = function() end,
      on_schedule = function() end,
      schedule = setmetatable({ cancel = function() return false end, list = function() return {} end },
        { __call = function(_, s) scheduled[#scheduled + 1] = s; return s.id, 1 end }),
    }
    local function ordered_pairs(t)
      local keys = {}
      for k in next, t do keys[#keys + 1] = k end
      local i, n, step = reverse and #keys + 1 or 0, #keys, reverse and -1 or 1
      return function()
        i = i + step
        if i < 1 or i > n then return nil end
        return keys[i], t[keys[i]]
      end, t, nil
    end
    local env = setmetatable({ require = function() return stub end, pairs = ordered_pairs },
      { __index = _G })
    assert(loadfile("scripts/reminders.lua", "t", env))()
    on_message({ text = text, conversation = "a:29:megan",
                 reply = function(_, m) replies[#replies + 1] = m end })
    return scheduled, replies
  end

  for _, reverse in ipairs { false, true } do
    it("schedules \"remind me at 9:00 to ...\" whatever pairs() order (reverse = " .. tostring(reverse) .. ")",
      function()
        local scheduled, replies = run("remind me at 9:00 to stretch", reverse)
        assert.equal(1, #scheduled)
        assert.equal("0 9 * * *", scheduled[1].cron)
        assert.matches("OK, I will remind you at 09:00", replies[1], 1, true)
      end)
  end
end)
