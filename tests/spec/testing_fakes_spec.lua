-- teams.testing's fake connector beyond messages (issue 12, the kit's gaps): rosters (paged),
-- channels and team details answered where the runtime reads them, the bot's identity before any
-- install, any status and body (a 202 with an empty body, as the Agents Playground answers), and
-- the kit's views in the runtime's shapes.
local testing = require "teams.testing"
local cjson = require "cjson"

local TEAM = "19:contoso@thread.tacv2"

describe("teams.testing fakes", function()
  local bot
  before_each(function() bot = testing.load("tests/spec/bots/kit_fakes_bot.lua") end)
  after_each(function() bot:close() end)

  -- runs a command in alex's 1:1 and returns the bot's JSON answer
  local function ask(cmd)
    bot:clear()
    bot:message(cmd)
    local op = bot:last(bot:personal())
    assert(op, "the bot answered nothing\n" .. bot:describe())
    return cjson.decode(op.text)
  end

  describe("rosters", function()
    it("a team installed through the kit has its installer in the roster", function()
      bot:install { team = "Contoso" }
      local r = ask("members " .. TEAM)
      assert.equal(1, #r.members)
      local m = r.members[1]
      assert.same({ "29:alex", "Alex", "aad-alex", testing.defaults.tenant, "user" },
        { m.id, m.name, m.aad_object_id, m.tenant, m.role })
      assert.equal("alex@contoso.example", m.user_principal_name)
    end)

    it("grows with the users seen in the team and with members added, shrinks with those removed", function()
      bot:install { team = "Contoso" }
      bot:message("hi", { team = "Contoso", user = "megan" })
      bot:members_added { team = "Contoso", members = { "ann", "bob" } }
      bot:members_removed { team = "Contoso", members = { "bob" } }
      local ids = {}
      for _, m in ipairs(ask("members " .. TEAM).members) do ids[#ids + 1] = m.id end
      assert.same({ "29:alex", "29:megan", "29:ann" }, ids)
    end)

    it("pages a roster with continuation tokens (page_size), whatever page size the bot asks", function()
      bot:install { team = "Contoso" }
      bot:roster("Contoso", { "megan", "ann", "bob", "carol", "dave" }, { page_size = 2 })
      local r = ask("pages " .. TEAM .. " 200")
      assert.equal(3, r.pages)
      assert.same({ "29:megan", "29:ann", "29:bob", "29:carol", "29:dave" }, r.ids)
      assert.equal(3, #bot:requests { op = "get" })
      local paths = {}
      for _, op in ipairs(bot:requests { op = "get" }) do paths[#paths + 1] = op.path end
      assert.matches("/pagedmembers?pageSize=200", paths[1], 1, true)
      assert.matches("&continuationToken=kit-page-2", paths[2], 1, true)
      -- the runtime's iterator follows the tokens
      assert.equal(5, #ask("members " .. TEAM).members)
      -- a page size the bot asks for is honoured too
      bot:roster("Contoso", { "megan", "ann", "bob" })
      assert.equal(2, ask("pages " .. TEAM .. " 2").pages)
    end)

    it("takes user tables and raw Teams members", function()
      bot:install { team = "Contoso" }
      bot:roster(TEAM, {
        { name = "Megan Bowen", email = "megan@contoso.com", role = "owner" },
        { id = "29:guest", name = "Guest", aadObjectId = "g-1", userRole = "guest" },
      })
      local m = ask("members " .. TEAM).members
      assert.same({ "29:megan-bowen", "Megan", "Bowen", "megan@contoso.com", "owner" },
        { m[1].id, m[1].given_name, m[1].surname, m[1].email, m[1].role })
      assert.same({ "29:guest", "g-1", "guest" }, { m[2].id, m[2].aad_object_id, m[2].role })
      assert.is_nil(m[2].email)
    end)

    it("answers one member by Teams id, Entra id or UPN, and 404 for a stranger", function()
      bot:install { team = "Contoso" }
      bot:roster("Contoso", { "megan", "ann" })
      assert.equal("Ann", ask("member " .. TEAM .. " 29:ann").member.name)
      assert.equal("Megan", ask("member " .. TEAM .. " aad-megan").member.name)
      assert.equal("Ann", ask("member " .. TEAM .. " ann@contoso.example").member.name)
      local r = ask("member " .. TEAM .. " 29:nobody")
      assert.is_nil(r.member)
      assert.is_string(r.error)
      assert.equal(404, bot:requests()[#bot:requests() - 1].status)
    end)

    it("answers a channel's and a thread's roster with the team's", function()
      bot:install { team = "Contoso" }
      bot:message("hi", { team = "Contoso", channel = "Design", user = "megan" })
      local design = bot:channel("Contoso", "Design")
      assert.equal(2, #ask("members " .. design).members)
      bot:roster("Contoso", { "ann" })
      assert.equal("29:ann", ask("members " .. design).members[1].id)
    end)

    it("has the user in a personal chat's roster, and the chat's people in a group chat's", function()
      local conv = bot:install { user = "megan" }
      assert.same({ "29:megan" }, { ask("members " .. conv).members[1].id })
      local chat = bot:install { scope = "groupChat", chat = "Project X", user = "ann" }
      bot:message("hi", { chat = "Project X", user = "bob" })
      local ids = {}
      for _, m in ipairs(ask("members " .. chat).members) do ids[#ids + 1] = m.id end
      assert.same({ "29:ann", "29:bob" }, ids)
    end)

    it("rejects a bad roster call", function()
      local function refused(fn, what)
        local ok, err = pcall(fn)
        assert.is_false(ok)
        assert.matches("teams.testing: " .. what, err, 1, true)
      end
      refused(function() bot:roster("Contoso", "megan") end, "bot:roster expects a list")
      refused(function() bot:roster("Contoso", {}, { page = 2 }) end, "bot:roster options are")
      refused(function() bot:roster("Contoso", { 42 }) end, "a member is a name")
    end)
  end)

  describe("channels and team details", function()
    it("a team installed through the kit has a General channel and details", function()
      bot:install { team = "Contoso" }
      assert.same({ { id = TEAM, name = "General" } }, ask("channels " .. TEAM).channels)
      local t = ask("team " .. TEAM).team
      assert.same({ id = TEAM, name = "Contoso", aad_group_id = "group-contoso", type = "standard",
                    member_count = 1, channel_count = 1 }, t)
    end)

    it("lists the channels seen in activities, with their names", function()
      bot:install { team = "Contoso" }
      bot:message("hi", { team = "Contoso", channel = "Design" })
      local list = ask("channels " .. TEAM).channels
      assert.equal(2, #list)
      assert.same({ id = bot:channel("Contoso", "Design"), name = "Design" }, list[2])
      -- the General channel's name is null in what Teams sends
      local get = bot:requests { op = "get" }
      assert.matches('"name":null', get[#get].answer, 1, true)
    end)

    it("bot:channels and bot:team_details replace the defaults", function()
      bot:install { team = "Contoso" }
      bot:channels("Contoso", { "Design", { id = "19:ops@thread.tacv2", name = "Ops", type = "private" } })
      bot:team_details("Contoso", { name = "Contoso Ltd", member_count = 40 })
      local list = ask("channels " .. TEAM).channels
      assert.same({ TEAM, bot:channel("Contoso", "Design"), "19:ops@thread.tacv2" },
        { list[1].id, list[2].id, list[3].id })
      assert.equal("private", list[3].type)
      local t = ask("team " .. TEAM).team
      assert.same({ "Contoso Ltd", 40, 3 }, { t.name, t.member_count, t.channel_count })
      assert.has_error(function() bot:team_details("Contoso", { nmae = "x" }) end)
    end)
  end)

  describe("the bot's identity", function()
    it("creates a 1:1 before any install (the kit has a bot id from the start)", function()
      bot:notify("dm", { user = "29:megan", tenant = testing.defaults.tenant })
      bot:advance("1s")
      assert.created { user = "29:megan" }
      assert.sent_to("a:29:megan", "hello from a trigger")
      local create = bot:sent { op = "create" }[1]
      assert.equal(testing.defaults.bot_id, create.body.bot.id)
      assert.same({}, bot:errors())
    end)

    it("uses the bot_id option", function()
      bot:close()
      bot = testing.load("tests/spec/bots/kit_fakes_bot.lua", { bot_id = "28:my-app" })
      bot:notify("dm", { user = "29:megan", tenant = testing.defaults.tenant })
      bot:advance("1s")
      assert.equal("28:my-app", bot:sent { op = "create" }[1].body.bot.id)
    end)
  end)

  describe("shapes", function()
    it("bot:conversation(id) is what a handler gets from teams.conversation(id)", function()
      local conv = bot:install { user = { name = "megan", timezone = "Europe/Berlin" } }
      bot:install { team = "Contoso" }
      for _, id in ipairs { conv, TEAM } do
        local seen = ask("ref " .. id).ref
        local mine = bot:conversation(id)
        mine.updated_at = seen.updated_at       -- "ref" itself was an activity after the read
        assert.same(seen, mine)
      end
      local ref = bot:conversation(conv)
      assert.equal(testing.defaults.tenant, ref.tenant)
      assert.equal("aad-megan", ref.user_aad_object_id)
      assert.is_true(ref.installed)
      assert.is_nil(ref.tenant_id)
      assert.is_nil(bot:conversation("a:29:nobody"))
    end)

    it("bot:schedules and bot:schedule are what teams.schedule.list and .get give", function()
      local conv = bot:install { user = "megan" }
      bot:message("every 1h", { user = "megan" })
      bot:advance("90m")
      local seen = ask("schedules")      -- asked in alex's chat: megan's schedule is not listed
      assert.same({}, seen.list)
      bot:clear()
      bot:message("schedules", { user = "megan" })
      seen = cjson.decode(bot:last(conv).text)
      assert.equal(1, #seen.list)
      assert.same(seen.list, bot:schedules(conv))
      assert.same(seen.one, bot:schedule("tick:" .. conv))
      assert.is_true(bot:schedule("tick:" .. conv).runs >= 1)
      assert.is_number(bot:schedule("tick:" .. conv).next_fire)
    end)

    it("bot:conversations(filter) is what teams.conversations(filter) yields", function()
      bot:install { user = "megan" }
      bot:install { team = "Contoso" }
      bot:uninstall { user = "megan" }
      assert.equal(2, #bot:conversations())
      local live = bot:conversations { scope = "channel" }
      assert.equal(1, #live)
      assert.equal("Contoso", live[1].team_name)
      assert.equal(0, #bot:conversations { scope = "personal" })
      assert.equal(1, #bot:conversations { scope = "personal", include_uninstalled = true })
    end)

    it("bot:notify answers with the HTTP status and body as the caller gets them", function()
      local r = bot:notify("dm", { user = "29:megan", tenant = testing.defaults.tenant })
      assert.equal(200, r.status)
      assert.is_string(r.body)
      assert.equal("a:29:megan", cjson.decode(r.body).conversation)
      assert.equal("a:29:megan", r.json.conversation)
      local missing = bot:notify("nope", {})
      assert.equal(404, missing.status)
      assert.is_string(missing.body)
    end)

    it("testing.load refuses an unknown option, naming it", function()
      local ok, err = pcall(testing.load, "tests/spec/bots/kit_fakes_bot.lua", { strat = "2027-01-01" })
      assert.is_false(ok)
      assert.matches("unknown option 'strat' (did you mean start?)", err, 1, true)
      ok, err = pcall(testing.load, "tests/spec/bots/kit_fakes_bot.lua", { zzz = 1 })
      assert.matches("unknown option 'zzz'", err, 1, true)
      assert.is_nil(err:find("did you mean", 1, true))
    end)
  end)

  describe("any answer", function()
    it("answers 202 with an empty body, and the views cope with no activity id (Agents Playground)",
      function()
        local conv = bot:install { user = "megan" }
        bot:clear()
        bot:respond { method = "POST", match = "/activities", status = 202, body = "", times = 1 }
        bot:message("ref", { user = "megan" })
        local op = bot:requests(conv)[1]
        assert.same({ 202, "", "send" }, { op.status, op.answer, op.op })
        assert.is_nil(op.activity_id)
        assert.equal(1, #bot:sent(conv))
        assert.equal(1, #bot:messages(conv))
        assert.sent_to(conv, "ref")
        assert.matches("(no activity id)", bot:describe(), 1, true)
        -- times = 1: the next send gets an id again
        bot:message("ref", { user = "megan" })
        assert.is_string(bot:last(conv).activity_id)
      end)
  end)
end)
