local teams = require "teams"

teams.on_message(function(ev)
  ev:reply("never" ..)
end)
