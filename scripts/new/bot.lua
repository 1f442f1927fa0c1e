-- {{NAME}}: a herald bot. Run it against the Agents Playground with `herald run --dev bot.lua`,
-- test it with `busted`, check it with `herald check --dev bot.lua`.
local teams = require "teams"

-- Welcome: runs once per install (a personal chat, a group chat or a team), even though Teams
-- sends two install signals.
teams.on_install(function(ev)
  ev:send("Hi, I'm {{NAME}}! Type **ping** and I'll answer.")
end)

-- One command; anything else gets a hint.
teams.on_message(function(ev)
  if ev.text:lower() == "ping" then
    ev:reply("pong")
  else
    ev:reply("I know one command: **ping**.")
  end
end)

-- Proactive: an outside system calls POST /api/notify/announce with {"text": "..."}, and every
-- personal chat with the bot gets the text, unasked. Outside dev mode the call must be signed
-- with HERALD_NOTIFY_SECRET_ANNOUNCE (see env/.env.local).
teams.on_notify("announce", function(ev)
  local text = type(ev.payload) == "table" and ev.payload.text
  if type(text) ~= "string" or text == "" then return { error = 'want {"text": "..."}' } end
  local sent = 0
  for ref in teams.conversations { scope = "personal" } do
    if teams.send(ref.id, text) then sent = sent + 1 end
  end
  return { sent = sent }
end)
