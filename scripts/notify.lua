-- notify.lua — example bot: a CI system tells herald a build failed, herald tells the people who
-- asked for it. Follows Teams' guidance for notifications: what happened, to what, who did it,
-- what you can do (card actions), and how to stop (a card action that opts out).
--
-- Sign the request: an HMAC-SHA256, keyed with the secret, of the unix time, a dot and the body.
-- herald takes it within 5 minutes of its clock, once.
--
--   body='{"project":"herald","build":"1234","status":"failed","author":"Megan","url":"https://ci.example/1234"}'
--   ts=$(date +%s)
--   sig=$(printf '%s.%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$HERALD_NOTIFY_SECRET" | sed 's/^.* //')
--   curl -X POST http://127.0.0.1:3978/api/notify/build \
--        -H "X-Herald-Timestamp: $ts" -H "X-Herald-Signature: sha256=$sig" \
--        --data-binary "$body"
--
-- A caller that cannot sign may send the secret itself, over TLS only (it is replayable):
-- -H "Authorization: Bearer $HERALD_NOTIFY_SECRET".
local teams = require "teams"

local CATEGORY = "builds"
teams.frequency_cap(CATEGORY, { max = 20, per = 3600, over = "defer" })

local function build_card(p)
  local failed = p.status == "failed"
  -- a list built by appending: { p.url and {...} or nil, ... } would leave a hole when there is
  -- no url (teams.card drops holes, but the list says what it holds)
  local actions = {}
  if p.url then
    actions[#actions + 1] = { type = "Action.OpenUrl", title = "Open the build", url = p.url }
  end
  actions[#actions + 1] =
    { type = "Action.Submit", title = "Stop these", data = { action = "opt_out", category = CATEGORY } }
  return teams.card({
    { type = "TextBlock", size = "Medium", weight = "Bolder", wrap = true,
      color = failed and "Attention" or "Good",
      text = ("Build %s of %s %s"):format(p.build or "?", p.project or "?", p.status or "finished") },
    { type = "FactSet", facts = {
      { title = "Project", value = tostring(p.project or "?") },
      { title = "Build", value = tostring(p.build or "?") },
      { title = "Triggered by", value = tostring(p.author or "someone") },
      { title = "Branch", value = tostring(p.branch or "main") },
    } },
    { type = "TextBlock", isSubtle = true, size = "Small", wrap = true,
      text = "You get this because you subscribed to build notifications. "
        .. "Use \"Stop these\" to unsubscribe." },
  }, actions)
end

-- POST /api/notify/build: tell every subscribed personal chat; the answer is the broadcast id.
teams.on_notify("build", function(ev)
  local p = ev.payload or {}
  if type(p) ~= "table" or not p.project then
    return { error = "expected {project, build, status, author, url}" }
  end
  local text = ("Build %s of %s %s"):format(p.build or "?", p.project, p.status or "finished")
  local id, err = teams.broadcast {
    name = text, category = CATEGORY, to = { scope = "personal" },
    message = { text = text, summary = text, card = build_card(p) },
  }
  if not id then return { error = err } end
  return { broadcast = id }
end)

teams.on_install(function(ev)
  ev:send { markdown = true, text = "Hi! I post **build notifications** here when your CI tells me. "
    .. "Type **stop** to unsubscribe or **start** to subscribe again." }
end)

teams.on_message(function(ev)
  local v = ev.value
  local text = (ev.text or ""):lower()
  if (type(v) == "table" and v.action == "opt_out") or text == "stop" then
    teams.opt_out(ev.conversation, CATEGORY)
    return ev:reply "Done: no more build notifications. Type **start** to get them again."
  elseif text == "start" then
    teams.opt_in(ev.conversation, CATEGORY)
    return ev:reply "You will get build notifications again."
  end
  ev:reply { markdown = true, text = "I post build notifications. **stop** unsubscribes, **start** subscribes." }
end)
