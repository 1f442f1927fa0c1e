-- Rosters, channels and team details as a script sees them (issue 12: bugs 7 and 8, the
-- installer's and channel's names, the recipient of a personalised broadcast, teams.ledger).
-- The connector's answers are raw kit rules holding the JSON Teams sends.
local testing = require "teams.testing"
local cjson = require "cjson"

local TEAM = "19:contoso@thread.tacv2"

local function member(name, extra)
  local m = { id = "29:" .. name:lower(), name = name, aadObjectId = "aad-" .. name:lower(),
              userPrincipalName = name:lower() .. "@contoso.test", tenantId = testing.defaults.tenant }
  for k, v in pairs(extra or {}) do m[k] = v end
  return m
end

local function page(list, token)
  return cjson.encode { members = list, continuationToken = token }
end

local function gets(bot, what)
  local n = 0
  for _, r in ipairs(bot:requests()) do
    if r.method == "GET" and r.path:find(what, 1, true) then n = n + 1 end
  end
  return n
end

describe("rosters", function()
  local bot
  before_each(function()
    bot = testing.load("tests/spec/bots/roster_bot.lua")
    bot:install { team = "Contoso", user = "megan", both = false }
    bot:clear()
  end)
  after_each(function() bot:close() end)

  local function members(opts)
    local r = bot:notify("members", { target = TEAM, page_size = opts and opts.page_size })
    if r.pending then                                -- a timeout: the connector's 15 s pass
      bot:advance(60)
      r = bot:notify("last")
    end
    assert.equal(200, r.status, r.body)
    return r.json
  end

  it("iterates every page", function()
    bot:respond { method = "GET", match = "/pagedmembers", times = 1,
                  body = page({ member "Ann", member "Bo" }, "next+1/=") }
    bot:respond { method = "GET", match = "/pagedmembers", times = 1, body = page({ member "Cy" }) }
    local r = members()
    assert.same({ "29:ann", "29:bo", "29:cy" }, r.ids)
    assert.is_nil(r.error)
    assert.is_false(r.again)
  end)

  for _, case in ipairs {
    { what = "500", rule = { status = 500, body = '{"error":{"code":"ServiceError"}}' }, code = "unavailable" },
    { what = "404", rule = { status = 404, body = '{"error":{"code":"ConversationNotFound"}}' }, code = "not_found" },
    { what = "a timeout", rule = { timeout = true }, code = "timeout" },
    { what = "a body that is not a members page", rule = { body = "null" }, code = "bad_response" },
  } do
    it("ends the loop and sets it.error, it.code on " .. case.what .. " for the first page", function()
      local rule = { method = "GET", match = "/pagedmembers" }
      for k, v in pairs(case.rule) do rule[k] = v end
      bot:respond(rule)
      local r = members()
      assert.same({}, r.ids)
      assert.is_string(r.error)
      assert.equal(case.code, r.code)
      assert.is_false(r.again)                       -- a failed iterator does not try again
      assert.same({}, bot:errors())                  -- the handler did not raise
    end)

    it("keeps what came before " .. case.what .. " on a later page", function()
      bot:respond { method = "GET", match = "/pagedmembers", times = 1,
                    body = page({ member "Ann", member "Bo" }, "t2") }
      local rule = { method = "GET", match = "/pagedmembers" }
      for k, v in pairs(case.rule) do rule[k] = v end
      bot:respond(rule)
      local r = members()
      assert.same({ "29:ann", "29:bo" }, r.ids)
      assert.equal(case.code, r.code)
      assert.is_false(r.again)
      assert.same({}, bot:errors())
      local warned = false
      for _, l in ipairs(bot:logs()) do
        if l:find("teams.members", 1, true) and l:find("after 2 members", 1, true) then warned = true end
      end
      assert.is_true(warned, "a paging error is logged")
    end)
  end

  it("answers nil, message, code from member, channels and team on a connector error", function()
    bot:respond { method = "GET", match = "/members/", status = 500 }
    bot:respond { method = "GET", match = "/teams/", status = 404, body = '{"error":{"code":"NotFound"}}' }
    local r = bot:notify("member", { target = TEAM, id = "29:ann" }).json
    assert.same({ err = r.err, code = "unavailable", n = 3 }, r)
    assert.is_string(r.err)
    r = bot:notify("channels", { team = TEAM }).json
    assert.equal("not_found", r.code)
    r = bot:notify("team", { team = TEAM }).json
    assert.equal("not_found", r.code)
    assert.same({}, bot:errors())
  end)

  it("answers bad_response from member, channels and team on a 200 that is not an object", function()
    bot:respond { method = "GET", match = "/members/", body = "42" }
    bot:respond { method = "GET", match = "/conversations", body = "null" }
    bot:respond { method = "GET", match = "/teams/", body = '"a string"' }
    assert.equal("bad_response", bot:notify("member", { target = TEAM, id = "29:ann" }).json.code)
    assert.equal("bad_response", bot:notify("channels", { team = TEAM }).json.code)
    assert.equal("bad_response", bot:notify("team", { team = TEAM }).json.code)
    assert.same({}, bot:errors())
  end)

  it("a broadcast to a team whose roster fails returns nil, message, code and creates no job", function()
    bot:respond { method = "GET", match = "/pagedmembers", status = 503 }
    local r = bot:notify("greet", { to = { team = TEAM } }).json
    assert.is_nil(r.id)
    assert.equal("unavailable", r.code)
    assert.same({}, bot:broadcasts())
    assert.same({}, bot:errors())
  end)
end)

describe("a 1:1 with a roster member", function()
  local bot
  before_each(function()
    bot = testing.load("tests/spec/bots/roster_bot.lua")
    bot:install { team = "Contoso", user = "megan", both = false }
    bot:respond { method = "GET", match = "/pagedmembers",
                  body = page({ member "Ann", member("Bo", { aadObjectId = "aad-bo" }) }) }
    bot:clear()
  end)
  after_each(function() bot:close() end)

  for _, whole in ipairs { false, true } do
    it(("stores the member's name and Entra id (user = %s)"):format(whole and "m" or "m.id"), function()
      local r = bot:notify("dm-roster", { team = TEAM, whole = whole, tenant = testing.defaults.tenant })
      assert.equal(200, r.status, r.body)
      local list = r.json
      assert.equal(2, #list, r.body)
      assert.same({ conversation = "a:29:ann", name = "Ann", aad = "aad-ann", user = "29:ann" }, list[1])
      assert.same({ conversation = "a:29:bo", name = "Bo", aad = "aad-bo", user = "29:bo" }, list[2])
      local ref = bot:conversation("a:29:ann")
      assert.equal("Ann", ref.user_name or ref.name)
    end)
  end

  it("a personalised broadcast to those 1:1s greets each by name", function()
    bot:notify("dm-roster", { team = TEAM, tenant = testing.defaults.tenant })
    bot:clear()
    local r = bot:notify("greet", { to = { conversations = { "a:29:ann", "a:29:bo" } } }).json
    assert.is_number(r.id)
    bot:advance(5)
    assert.sent_to("a:29:ann", "Hi Ann")
    assert.sent_to("a:29:bo", "Hi Bo")
    assert.equal("aad-ann", r.seen[1].aad_object_id)
    assert.equal("29:ann", r.seen[1].user)
  end)
end)

describe("the recipient of a personalised broadcast", function()
  local bot
  before_each(function() bot = testing.load("tests/spec/bots/roster_bot.lua") end)
  after_each(function() bot:close() end)

  it("carries the stored name, locale, Entra id and time zone", function()
    bot:install { user = { id = "29:lena", name = "Lena", aad_object_id = "aad-lena", locale = "de-DE" } }
    bot:message("hallo", { user = { id = "29:lena", name = "Lena", aad_object_id = "aad-lena",
                                    locale = "de-DE" }, timezone = "Europe/Berlin" })
    for _, to in ipairs {
      { scope = "personal" },
      { conversations = { "a:29:lena" } },
      { users = { "29:lena" }, tenant = testing.defaults.tenant },
    } do
      local r = bot:notify("greet", { to = to }).json
      assert.is_number(r.id, cjson.encode(r))
      local seen = r.seen[1]
      assert.same({ conversation = "a:29:lena", user = "29:lena", name = "Lena", locale = "de-DE",
                    aad_object_id = "aad-lena", timezone = "Europe/Berlin" }, seen)
    end
  end)

  it("carries the roster's name for a team broadcast", function()
    bot:install { team = "Contoso", user = "megan", both = false }
    bot:respond { method = "GET", match = "/pagedmembers", body = page({ member "Ann" }) }
    local r = bot:notify("greet", { to = { team = TEAM } }).json
    assert.is_number(r.id, cjson.encode(r))
    assert.equal("Ann", r.seen[1].name)
    assert.equal("aad-ann", r.seen[1].aad_object_id)
    assert.equal("29:ann", r.seen[1].user)
    bot:advance(5)
    assert.sent_to("a:29:ann", "Hi Ann")
    -- the 1:1 the job created keeps what the roster said, for the next personalised broadcast
    local ref = bot:conversation("a:29:ann")
    assert.equal("Ann", ref.user_name)
    assert.equal("aad-ann", ref.user_aad_id or ref.user_aad_object_id)
  end)
end)

describe("the installer and the channel on a team install", function()
  local bot
  before_each(function() bot = testing.load("tests/spec/bots/roster_bot.lua") end)
  after_each(function() bot:close() end)

  local function install_activity(o)
    return {
      type = "installationUpdate", action = "add", id = "inst-1",
      serviceUrl = testing.defaults.service_url, channelId = "msteams",
      from = { id = "29:megan", aadObjectId = "aad-megan" },             -- Teams sends no name
      recipient = { id = testing.defaults.bot_id, name = "Test Bot" },
      conversation = { isGroup = true, conversationType = "channel", id = o.conversation,
                       tenantId = testing.defaults.tenant },
      channelData = { tenant = { id = testing.defaults.tenant },
                      team = { id = TEAM, aadGroupId = "group-contoso", name = o.team_name },
                      channel = { id = o.conversation },
                      settings = { selectedChannel = { id = o.conversation } } },
    }
  end

  it("looks up the installer, the team and the channel lazily, one call each", function()
    bot:respond { method = "GET", match = "/members/29:megan",
                  body = cjson.encode(member("Megan", { id = "29:megan", aadObjectId = "aad-megan" })) }
    bot:respond { method = "GET", match = "/teams/" .. TEAM .. "/conversations", body = cjson.encode {
      conversations = { { id = TEAM }, { id = "19:ops@thread.tacv2", name = "Ops" } } } }
    bot:respond { method = "GET", match = "/teams/" .. TEAM, body = cjson.encode {
      id = TEAM, name = "Contoso", aadGroupId = "group-contoso" } }
    bot:post(install_activity { conversation = "19:ops@thread.tacv2" })
    assert.sent_to("19:ops@thread.tacv2",
      "installer=Megan aad=aad-megan same=true team=Contoso channel=Ops err=nil")
    assert.equal(1, gets(bot, "/members/29:megan"))
    assert.equal(1, gets(bot, "/teams/" .. TEAM .. "/conversations"))
    assert.equal(2, gets(bot, "/teams/"))           -- the team's details once, the channels once
  end)

  it("names the General channel and costs nothing for names the activity carries", function()
    bot:respond { method = "GET", match = "/members/", body = cjson.encode(member "Megan") }
    bot:respond { method = "GET", match = "/teams/" .. TEAM .. "/conversations", body = cjson.encode {
      conversations = { { id = TEAM } } } }
    local a = install_activity { conversation = TEAM, team_name = "Contoso" }
    bot:post(a)
    assert.sent_to(TEAM, "team=Contoso channel=General")
    assert.equal(0, gets(bot, "/teams/" .. TEAM .. "?"))
    local team_gets = 0
    for _, r in ipairs(bot:requests()) do
      if r.method == "GET" and r.path:match("/teams/[^/]+$") then team_gets = team_gets + 1 end
    end
    assert.equal(0, team_gets)
  end)

  it("answers nil, message, code when a lookup fails, and the handler goes on", function()
    bot:respond { method = "GET", match = "/members/", status = 403,
                  body = '{"error":{"code":"BotNotInConversationRoster"}}' }
    bot:respond { method = "GET", match = "/teams/", status = 500 }
    bot:post(install_activity { conversation = "19:ops@thread.tacv2", team_name = "Contoso" })
    assert.sent_to("19:ops@thread.tacv2", "installer=nil aad=nil same=true team=Contoso channel=nil")
    assert.sent_to("19:ops@thread.tacv2", "code=blocked cerr=")
    assert.sent_to("19:ops@thread.tacv2", "ccode=unavailable")
    assert.equal(1, gets(bot, "/members/"))          -- a failure is cached for the event too
  end)
end)

describe("teams.ledger", function()
  local bot
  before_each(function() bot = testing.load("tests/spec/bots/roster_bot.lua") end)
  after_each(function() bot:close() end)

  local function ledger(filter)
    local r = bot:notify("ledger", { filter = filter })
    assert.equal(200, r.status, r.body)
    return r.json.entries
  end

  it("lists blocked, gone and uninstalled conversations, filtered by state and time", function()
    local ann = bot:install { user = { id = "29:ann", name = "Ann", aad_object_id = "aad-ann" } }
    local bo = bot:install { user = "bo" }
    local cy = bot:install { user = "cy" }
    bot:block(ann)
    bot:notify("send", { conversation = ann })
    local t1 = bot:now()
    bot:advance(60)
    bot:gone(bo)
    bot:notify("send", { conversation = bo })
    bot:uninstall { user = "cy" }
    local all = ledger()
    assert.equal(3, #all)
    local by = {}
    for _, e in ipairs(all) do by[e.conversation] = e end
    assert.equal("blocked", by[ann].state)
    assert.equal("Ann", by[ann].user_name)
    assert.equal("aad-ann", by[ann].user_aad_object_id)
    assert.equal("29:ann", by[ann].user_id)
    assert.equal(testing.defaults.tenant, by[ann].tenant)
    assert.equal(t1, by[ann].since)
    assert.is_string(by[ann].code)
    assert.is_string(by[ann].last_error)
    assert.equal("gone", by[bo].state)
    assert.equal("uninstalled", by[cy].state)
    local blocked = ledger { state = "blocked" }
    assert.equal(1, #blocked)
    assert.equal(ann, blocked[1].conversation)
    local recent = ledger { since = t1 + 1 }
    assert.equal(2, #recent)
    for _, e in ipairs(recent) do assert.is_true(e.since > t1) end
    assert.equal(0, #ledger { state = "gone", since = bot:now() + 1 })
  end)

  it("pages through a ledger larger than a page", function()
    local convs = {}
    for i = 1, 230 do convs[i] = bot:install { user = ("u%03d"):format(i), both = false } end
    bot:block("*")
    bot:notify("greet", { to = { scope = "personal" } })
    bot:advance("1h")
    local all = ledger { state = "blocked" }
    assert.equal(230, #all)
    local seen = {}
    for _, e in ipairs(all) do
      assert.is_nil(seen[e.conversation])
      seen[e.conversation] = true
    end
  end)

  it("raises on a bad filter", function()
    bot:notify("ledger", { filter = { state = "angry" } })
    assert.equal(1, #bot:errors())
    assert.matches("teams.ledger: state", bot:errors()[1], 1, true)
  end)
end)
