-- faulty_bot.lua — a handler that fails on "boom", for the teams.testing failure-message specs.
local teams = require "teams"

teams.on_message(function(ev)
  if ev.text == "boom" then error("kaboom in the handler") end
  ev:reply("fine")
end)
