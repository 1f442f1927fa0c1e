-- A bot with a misspelt hook name at top level (errors_spec): loading it must fail at line 4
-- with the closest name.
local teams = require "teams"
teams.on_mesage(function(ev) ev:reply("hi") end)
