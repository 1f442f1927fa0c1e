-- 200 generated specs of the usual kind — load a bot, install it, talk to it, assert on the
-- replies, some advancing the clock by hours or days — to keep teams.testing fast: the whole
-- busted run should stay well under 5 s. Each case gets a fresh core (new in-memory database,
-- clock at the start).
local testing = require "teams.testing"

local SCOPES = { "personal", "groupChat", "team" }
local NY = "America/New_York"

local cases = {}

-- welcome.lua: install in a scope, exactly one welcome, a command, the proactive edit
cases[1] = function(i)
  local bot = testing.load("scripts/welcome.lua")
  local scope = SCOPES[i % 3 + 1]
  local conv = bot:install { scope = scope, user = "user" .. i, team = scope == "team" and ("Team " .. i) or nil,
                             chat = scope == "groupChat" and ("Chat " .. i) or nil }
  assert.sent_count(1, conv, "Welcome")
  bot:message("say " .. i, { conversation = conv, user = "user" .. i })
  assert.replied(conv, "You said: say " .. i)
  bot:advance("10s")
  assert.updated(conv, "(and edited 3 seconds later).")
  bot:close()
end

-- reminders.lua: a 9:00 local reminder, days ahead
cases[2] = function(i)
  local bot = testing.load("scripts/reminders.lua", { start = "2027-03-12T12:00:00Z" })
  local user = { name = "user" .. i, timezone = NY }
  local conv = bot:install { user = user }
  local h = 6 + i % 12
  bot:message(("remind me at %d:00 to task %d"):format(h, i), { user = user })
  assert.replied(conv, ("OK, I will remind you at %02d:00 (%s) to task %d."):format(h, NY, i))
  bot:advance("3d")
  assert.sent_count(1, conv, "⏰ Reminder: task " .. i)
  bot:close()
end

-- probe_bot.lua: a message with mentions in a channel, and a card action
cases[3] = function(i)
  local bot = testing.load("tests/spec/bots/probe_bot.lua")
  local conv = bot:install { team = "Contoso", user = "user" .. i }
  local r = bot:message("ping " .. i, { team = "Contoso", user = "user" .. i, thread = i })
  assert.replied(r.conversation, "echo: ping " .. i)
  assert.sent_to(conv, "installed in channel")
  local a = bot:card_action({ request = i }, { verb = "approve", team = "Contoso" })
  assert.equal("Approved " .. i, a.json.value)
  bot:close()
end

-- notify_bot.lua: a proactive send, throttled or blocked every so often
cases[4] = function(i)
  local bot = testing.load("tests/spec/bots/notify_bot.lua")
  local target = bot:install { user = "user" .. i }
  local ops = bot:personal("operator")
  if i % 3 == 0 then bot:throttle(target, 5) elseif i % 3 == 1 then bot:block(target) end
  bot:message(("send %s note %d"):format(target, i), { user = "operator" })
  bot:advance("1m")
  if i % 3 == 1 then
    assert.replied(ops, "send blocked")
    assert.in_ledger(target, "blocked")
  else
    assert.sent_to(target, "note " .. i)
    assert.replied(ops, "send ok")
  end
  bot:close()
end

describe("speed: 200 generated specs", function()
  for i = 1, 200 do
    it(("case %03d"):format(i), function() cases[i % 4 + 1](i) end)
  end
end)
