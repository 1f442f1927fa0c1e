-- welcome.lua — herald's example bot, run by `make run` in the Agents Playground.
-- Follows Teams' guidance for welcome messages: say why the user gets it, what the bot offers and
-- what to try next; then it answers a few commands and shows a proactive message it later edits.
local teams = require "teams"

local HELP = table.concat({
  "Here is what I can do:",
  "",
  "- **help**: this list",
  "- **card**: an Adaptive Card",
  "- **proactive**: I message you in a few seconds without being asked, then edit that message",
  "- **whoami**: what I know about you and this conversation",
  "- anything else: I repeat it back",
}, "\n")

local function welcome_card(ev)
  local where = ev.scope == "personal" and "this chat"
    or (ev.team and ev.team.name and ("the team " .. ev.team.name)) or "this conversation"
  return teams.card({
    { type = "TextBlock", size = "Large", weight = "Bolder", text = "Welcome to herald's demo bot" },
    { type = "TextBlock", wrap = true,
      text = "You are getting this because the bot was just added to " .. where .. "." },
    { type = "TextBlock", wrap = true,
      text = "I show what a herald bot does: answer messages, send messages on my own, and "
        .. "edit them later." },
    { type = "TextBlock", wrap = true, text = "Try: **help**, **card**, **proactive** or **whoami**." },
  })
end

teams.on_install(function(ev)
  ev:send { text = "Welcome! Type **help** to see what I can do.", markdown = true,
            card = welcome_card(ev), summary = "Welcome to herald's demo bot" }
  -- A proactive follow-up: not a reply to anything, sent later from a stored reference.
  teams.sleep(5)
  local id = teams.send(ev.conversation, "A proactive hello, sent 5 seconds after install.")
  if id then
    teams.sleep(3)
    teams.update(ev.conversation, id, "A proactive hello, sent 5 seconds after install "
      .. "(and edited 3 seconds later).")
  end
end)

teams.on_uninstall(function(ev)
  teams.log("info", "uninstalled from", ev.conversation, "by", ev.user and ev.user.name or "?")
end)

teams.on_members_added(function(ev)
  for _, m in ipairs(ev.members) do
    ev:send(("Welcome, %s! I'm the team's herald demo bot: mention me with **help**.")
      :format(m.name or "new member"))
  end
end)

local commands = {}

function commands.help(ev) ev:reply { text = HELP, markdown = true } end

function commands.card(ev)
  ev:reply { card = {
    { type = "TextBlock", size = "Medium", weight = "Bolder", text = "An Adaptive Card" },
    { type = "FactSet", facts = {
      { title = "Conversation", value = ev.scope },
      { title = "Locale", value = ev.locale or "unknown" },
      { title = "Time zone", value = ev.timezone or "unknown" },
    } },
  }, summary = "An Adaptive Card" }
end

function commands.proactive(ev)
  ev:reply "OK: watch for a message from me in 3 seconds."
  teams.sleep(3)
  local id, err, code = teams.send(ev.conversation, "This message was sent proactively.")
  if not id then
    teams.log("warn", "proactive send failed:", err, code)
    return
  end
  teams.sleep(3)
  teams.update(ev.conversation, id, "This message was sent proactively, and edited 3 seconds later.")
end

function commands.whoami(ev)
  local ref = teams.conversation(ev.conversation)
  ev:reply { markdown = true, text = table.concat({
    ("You are **%s** (%s)."):format(ev.user and ev.user.name or "someone", ev.user and ev.user.id or "?"),
    ("Conversation: %s (%s), tenant %s."):format(ev.conversation, ev.scope, ev.tenant or "?"),
    ("Stored reference: service URL %s, time zone %s."):format(ref.service_url, ref.timezone or "unknown"),
  }, "\n\n") }
end

teams.on_message(function(ev)
  local word = (ev.text or ""):lower():match("^(%S+)")
  local command = word and commands[word]
  if command then return command(ev) end
  if ev.text == "" then
    return ev:reply "I can only read text for now. Type **help**."
  end
  ev:reply("You said: " .. ev.text)
end)
