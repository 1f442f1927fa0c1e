-- inbound_rules_bot.lua — the bot of tests/spec/inbound_rules_spec.lua. "card": sends a text plus
-- a card, then tries to update and delete it, and replies with what each returned. "arrays": a
-- card with an empty list of actions; invokes "arrays" and "top" answer with empty lists.
local teams = require "teams"

teams.on_message(function(ev)
  if ev.text == "arrays" then
    -- a card with no actions yet; encoding copies around the marked table, never changes it
    local actions = teams.array()
    local card = teams.card({ { type = "TextBlock", text = "x" } }, actions)
    ev:send { card = card }
    ev:reply("same " .. tostring(card.content.actions == actions and next(actions) == nil))
  end
  if ev.text == "card" then
    local id = ev:send { text = "Build 42", card = { { type = "TextBlock", text = "passed" } } }
    local _, umsg, ucode = teams.update(ev.conversation, id, "Build 42 (edited)")
    local _, _, dcode = teams.delete(ev.conversation, id)
    ev:reply(("sent %s update %s delete %s (%s)"):format(tostring(id), tostring(ucode),
                                                           tostring(dcode), tostring(umsg)))
  end
end)

teams.on_invoke(function(ev)
  if ev.name == "arrays" then
    return { status = 200, body = { items = teams.array(), also = teams.array {}, meta = {},
                                    full = teams.array { 1, 2 } } }
  end
  return { status = 200, body = teams.array() }
end)

teams.on_notify("arrays", function()
  return { items = teams.array(), meta = {} }
end)
