-- Handler mistakes a new author makes (errors_spec): a dot for a colon, a misspelt name inside a
-- handler, an on_invoke handler that returns nothing. Line numbers matter to the spec.
local teams = require "teams"

teams.on_message(function(ev)
  if ev.text == "dot send" then ev.send("x") end
  if ev.text == "dot reply" then ev.reply("x") end
  if ev.text == "typo" then teams.sendd(ev.conversation, "x") end
  if ev.text == "feature" then ev:send(tostring(rawget(teams, "sendd"))) end
  if ev.text == "sub" then teams.schedule.cancle("x") end
  if ev.text == "schedule" then teams.schedule { handler = "tick", every = "1m", conversation = ev.conversation } end
end)

teams.on_schedule("tick", function(ev) ev.send("tock") end)

teams.on_invoke(function(ev)
  if ev.value and ev.value.action and ev.value.action.verb == "ok" then
    return { status = 200, body = { statusCode = 200 } }
  end
end)
