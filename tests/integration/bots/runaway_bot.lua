-- runaway_bot.lua — runaway handlers for test_runaway.py (issue 6). Each invoke name is one way a
-- script can misbehave; "ping" is the well-behaved request that must keep being answered.
local teams = require "teams"

local parked        -- a task's own coroutine, captured by "park" for "hijack"
local hog           -- memory held across a yield by "hog"

local runaway = {}

runaway.ping = function() return { ok = true } end

runaway.spin = function() while true do end end

runaway.pcall_spin = function()
  while true do pcall(function() while true do end end) end
end

runaway.xpcall_spin = function()
  local caught = 0
  while true do
    xpcall(function() while true do end end, function() caught = caught + 1 end)
  end
end

runaway.spin_in_callback = function()   -- Lua called back from C (gsub) must be stopped too
  string.gsub(string.rep("x", 100), ".", function() while true do end end)
end

runaway.double = function()
  local s = "x"
  while true do s = s .. s end
end

runaway.table_bomb = function()
  local t = {}
  while true do t[#t + 1] = { #t } end
end

runaway.pcall_double = function()        -- catches the memory error and tries again, forever
  while true do
    pcall(function() local s = "y"; while true do s = s .. s end end)
  end
end

runaway.recurse = function()
  local function f(n) return f(n + 1) + 1 end
  f(1)
end

runaway.c_recurse = function()           -- recursion through C (pcall, gsub)
  local function f() return pcall(f) end
  f()
  local function g(s) return (s:gsub(".", g)) end
  g("ab")
end

runaway.sleep_forever = function() teams.sleep(3600) end

runaway.dead_reply = function(ev)        -- the activity's serviceUrl points at a dead connector
  local id, msg, code = ev:reply("into the void")
  return { id = id, msg = msg, code = code }
end

runaway.yield = function() coroutine.yield() end

runaway.yield_value = function() coroutine.yield("x", 1, {}) end

runaway.nested_io = function()           -- teams calls from a coroutine the script made
  local co = coroutine.wrap(function() teams.sleep(0.01) end)
  co()
end

runaway.park = function(ev)
  parked = coroutine.running()
  teams.sleep(ev.value.seconds or 1)
  return { parked = "woke" }
end

runaway.park_on_reply = function(ev)   -- parked until the test's connector answers the reply
  parked = coroutine.running()
  ev:reply("parked")
  return { parked = "woke" }
end

runaway.hijack = function()
  local status = coroutine.status(parked)
  local ok, err = coroutine.resume(parked, "forged")
  return { status = status, ok = ok, err = tostring(err) }
end

runaway.close_parked = function()
  local ok, err = coroutine.close(parked)
  return { ok = ok, err = tostring(err), status = coroutine.status(parked) }
end

runaway.hog = function(ev)               -- fills the generation's memory, then waits holding it
  hog = {}
  pcall(function() while true do hog[#hog + 1] = string.rep("h", 1000000) .. #hog end end)
  local n = #hog
  teams.sleep(ev.value.seconds or 1)
  hog = nil
  collectgarbage()
  return { held = n }
end

runaway.pattern = function(ev)           -- C-level backtracking: no Lua instruction runs meanwhile
  local n = ev.value.n or 200
  return { found = string.rep("a", n):find(string.rep("a-", 3) .. "b") ~= nil }
end

teams.on_invoke(function(ev)
  local f = runaway[ev.name]
  if not f then return { status = 404, body = { error = "no such runaway" } } end
  local r = f(ev)
  return r or { done = ev.name }
end)

teams.on_message(function(ev) ev:reply("pong: " .. ev.text) end)
