-- The example of README "Testing your bot", run against the example bots, so it stays true.
local testing = require "teams.testing"

describe("the README example", function()
  local bot
  after_each(function() bot:close() end)

  it("welcomes once, even though Teams sends two install signals", function()
    bot = testing.load("scripts/welcome.lua", { start = "2027-03-13T18:00:00Z" })
    local conv = bot:install { scope = "personal", user = "megan" }
    assert.sent_count(1, conv)
    assert.sent_to(conv, "Welcome")
  end)

  it("retries a throttled reminder after Retry-After", function()
    bot = testing.load("scripts/reminders.lua", { start = "2027-03-13T18:00:00Z" })
    local conv = bot:personal("megan")
    bot:message("remind me at 9:00 to stretch", { user = "megan", timezone = "America/New_York" })
    bot:throttle(conv, 30)
    bot:advance_to("2027-03-14T09:00:30-04:00")
    local tries = bot:requests { conversation = conv, op = "send" }
    assert.equal(429, tries[1].status)
    assert.equal(testing.time("2027-03-14T13:00:30Z"), tries[2].at)
    assert.equal(201, tries[2].status)
  end)
end)

-- Issue 12: the README told bot authors to copy the repository's .busted, whose ROOT is
-- tests/spec, so a bot project with spec/ ran nothing. The README's bot .busted, written into a
-- fresh project (bot.lua, spec/bot_spec.lua) and run by busted with nothing else set, must pass.
describe("the README's .busted for a bot project", function()
  local function readme_busted()
    local f = assert(io.open("README.md"))
    local text = f:read("a")
    f:close()
    for block in text:gmatch("```lua\n(.-)```") do
      if block:find("^%-%- %.busted for a bot project") then return block end
    end
  end

  it("runs the project's spec/ against this checkout", function()
    local config = readme_busted()
    assert.is_string(config, "README has no block starting \"-- .busted for a bot project\"")
    local here = assert(io.popen("pwd")):read("l")
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. "/spec"))
    local function write(name, content)
      local f = assert(io.open(dir .. "/" .. name, "w"))
      f:write(content)
      f:close()
    end
    write(".busted", config)
    write("bot.lua", 'local teams = require "teams"\n'
      .. 'teams.on_install(function(ev) ev:send "Welcome" end)\n')
    write("spec/bot_spec.lua", 'local testing = require "teams.testing"\n'
      .. 'describe("bot", function()\n'
      .. '  it("welcomes", function()\n'
      .. '    local bot = testing.load("bot.lua")\n'
      .. '    assert.sent_to(bot:install { user = "megan" }, "Welcome")\n'
      .. '    bot:close()\n'
      .. '  end)\n'
      .. 'end)\n')
    -- nothing inherited from this run: the project's .busted alone must find herald
    local p = io.popen(("cd %s && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 "
      .. "HERALD_HOME=%s busted -o TAP 2>&1"):format(dir, here))
    local out = p:read("a")
    local ok = p:close()
    os.execute("rm -rf " .. dir)
    assert.is_true(ok, out)
    assert.matches("ok 1 - bot welcomes", out, 1, true)
  end)
end)
