-- tests/e2e/bot.lua — the bot that tests/e2e/playground.test.cjs drives through the real
-- Microsoft 365 Agents Playground.
local teams = require "teams"

teams.on_install(function(ev)
  ev:send("welcome to herald (" .. tostring(ev.scope) .. ")")
end)

teams.on_message(function(ev)
  if ev.text == "proactive" then
    local id, msg, code = teams.send(ev.conversation, "proactive 1")
    assert(id, "teams.send failed: " .. tostring(msg) .. " " .. tostring(code))
    teams.sleep(0.2)
    local id2, msg2, code2 = teams.update(ev.conversation, id, "proactive 1 (edited)")
    assert(id2, "teams.update failed: " .. tostring(msg2) .. " " .. tostring(code2))
    return
  end
  ev:reply("echo: " .. ev.text)
end)
