-- echo_bot.lua — the bot `make bench` runs: one reply per message, nothing else.
local teams = require "teams"

teams.on_message(function(ev)
  ev:reply("echo: " .. ev.text)
end)
