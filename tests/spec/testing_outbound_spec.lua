-- teams.testing: what the bot sends (create, send, reply, update, delete) and how the fake Bot
-- Connector answers: blocked (403 MessageWritesBlocked), throttled (429 + Retry-After), not found
-- (404), 5xx. tests/spec/bots/notify_bot.lua acts on command from an operator's chat and replies
-- with the outcome ("<verb> ok <id>" or "<verb> <code> state=... status=...").
local testing = require "teams.testing"

local function last(rows) return rows[#rows] end

describe("teams.testing outbound operations", function()
  local bot, ops, megan
  before_each(function()
    bot = testing.load("tests/spec/bots/notify_bot.lua")
    megan = bot:install { user = "megan" }
    ops = bot:install { user = "operator" }
    bot:clear()
  end)
  after_each(function() bot:close() end)

  local function run(cmd) return bot:message(cmd, { user = "operator" }) end

  it("creates a 1:1 conversation, then sends", function()
    run("notify 29:megan Your report is ready")
    local sent = bot:sent()
    assert.equal(3, #sent)
    assert.same({ "create", "send", "reply" }, { sent[1].op, sent[2].op, sent[3].op })
    assert.equal("29:megan", sent[1].user)
    assert.equal(testing.defaults.tenant, sent[1].tenant)
    assert.equal(megan, sent[1].conversation)   -- Teams answers with the existing 1:1 chat
    assert.equal(megan, sent[2].conversation)
    assert.equal("Your report is ready", sent[2].text)
    assert.created { user = "29:megan" }
    assert.sent_to(megan, "Your report is ready")
    assert.replied(ops, "notify ok " .. sent[2].activity_id)
  end)

  it("starts a channel thread with its first message", function()
    local channel = bot:install { team = "Contoso" }
    bot:clear()
    run("thread " .. channel .. " Deploy started")
    local create = bot:sent { op = "create" }[1]
    assert.equal(channel, create.channel)
    assert.equal("Deploy started", create.text)
    assert.matches("^19:contoso@thread.tacv2;messageid=%d+$", create.conversation)
    assert.sent_to(channel, "Deploy started")
    assert.replied(ops, "thread ok " .. create.conversation .. " " .. create.activity_id)
  end)

  it("sends, updates and deletes by key", function()
    run("post " .. megan .. " build-42 Build 42 running")
    local id = bot:last(megan).activity_id
    run("edit " .. megan .. " build-42 Build 42 passed")
    run("delete " .. megan .. " build-42")
    local mine = bot:sent(megan)
    assert.same({ "send", "update", "delete" }, { mine[1].op, mine[2].op, mine[3].op })
    assert.equal(id, mine[2].activity_id)
    assert.equal(id, mine[3].activity_id)
    assert.updated(megan, "Build 42 passed", id)
    assert.deleted(megan, id)
    assert.equal("PUT", mine[2].method)
    assert.equal("DELETE", mine[3].method)
    assert.equal(1, bot:query("SELECT count(*) AS n FROM message_keys WHERE key = 'build-42'")[1].n)
  end)

  it("an unknown key is an error, not a request", function()
    run("edit " .. megan .. " never-sent text")
    assert.replied(ops, "edit unknown_key")
    assert.equal(0, #bot:sent(megan))
  end)

  it("records the body as sent: attachments, cards, mentions", function()
    local other = testing.load("scripts/welcome.lua")
    local conv = other:install { user = "megan" }
    local op = other:last(conv)
    assert.equal("send", op.op)
    assert.equal(1, #op.attachments)
    assert.equal("AdaptiveCard", op.card.type)
    assert.equal("Welcome to herald's demo bot", op.card.body[1].text)
    assert.equal("markdown", op.body.textFormat)
    assert.equal("Welcome to herald's demo bot", op.summary)
    other:close()
  end)
end)

describe("teams.testing fake Teams answers", function()
  local bot, ops, megan
  before_each(function()
    bot = testing.load("tests/spec/bots/notify_bot.lua")
    megan = bot:install { user = "megan" }
    ops = bot:install { user = "operator" }
    bot:clear()
  end)
  after_each(function() bot:close() end)

  local function run(cmd) return bot:message(cmd, { user = "operator" }) end

  it("a notification to a blocked user yields 'blocked' and lands in the ledger", function()
    bot:block(megan)
    run("notify 29:megan Your report is ready")
    assert.replied(ops, "notify blocked state=blocked status=403")
    assert.not_sent_to(megan)
    local failed = bot:requests(megan)
    assert.equal(403, failed[#failed].status)
    assert.in_ledger(megan, "blocked")
    local row = bot:ledger(megan)
    assert.equal("MessageWritesBlocked", row.code)
    assert.equal("29:megan", row.user_id)
    assert.equal("aad-megan", row.user_aad_id)
    assert.equal(bot:now(), row.at)
    local op = last(bot:outbox { conversation = megan, kind = "send" })
    assert.equal("blocked", op.state)
    assert.equal(403, op.last_status)
    -- the next send fails at once, from the ledger, without calling Teams
    bot:clear()
    run("send " .. megan .. " again")
    assert.replied(ops, "send blocked state=blocked status=0")
    assert.equal(0, #bot:requests(megan))
  end)

  it("a user heard from again leaves the ledger", function()
    bot:block(megan)
    run("send " .. megan .. " hello")
    assert.in_ledger(megan, "blocked")
    bot:heal()
    bot:message("I'm back", { user = "megan" })
    assert.is_not.in_ledger(megan)
    run("send " .. megan .. " welcome back")
    assert.sent_to(megan, "welcome back")
  end)

  it("a throttled send is retried after Retry-After on the fake clock", function()
    bot:throttle(megan, 7)
    run("send " .. megan .. " hello")
    local first = bot:requests(megan)[1]
    assert.equal(429, first.status)
    assert.not_sent_to(megan)
    assert.is_nil(bot:last(ops))          -- the handler still waits for the send
    bot:advance("6.999s")
    assert.equal(1, #bot:requests(megan))
    bot:advance("1ms")
    local retry = bot:requests(megan)[2]
    assert.equal(201, retry.status)
    assert.equal(first.at + 7000, retry.at)
    assert.sent_to(megan, "hello")
    assert.replied(ops, "send ok")
    assert.equal(1, bot:stats().throttled)
    local attempts = bot:attempts(last(bot:outbox { conversation = megan }).id)
    assert.same({ 429, 201 }, { attempts[1].status, attempts[2].status })
  end)

  it("honours Retry-After on every throttled attempt", function()
    bot:throttle(megan, 30, 2)
    run("send " .. megan .. " hello")
    bot:advance("2m")
    local reqs = bot:requests(megan)
    assert.same({ 429, 429, 201 }, { reqs[1].status, reqs[2].status, reqs[3].status })
    assert.equal(30000, reqs[2].at - reqs[1].at)
    assert.equal(30000, reqs[3].at - reqs[2].at)
  end)

  it("a conversation Teams no longer knows yields 'not_found' and a ledger row", function()
    bot:gone(megan)
    run("send " .. megan .. " hello")
    assert.replied(ops, "send not_found state=not_found status=404")
    assert.in_ledger(megan, "gone")
    assert.equal("not_found", last(bot:outbox(megan)).state)
  end)

  it("retries a 5xx with backoff until it goes through", function()
    bot:fail(megan, 503, 2)
    run("send " .. megan .. " hello")
    assert.not_sent_to(megan)
    bot:advance("10s")
    local reqs = bot:requests(megan)
    assert.same({ 503, 503, 201 }, { reqs[1].status, reqs[2].status, reqs[3].status })
    -- backoff with jitter: 0.5–1 s after the first failure, 1–2 s after the second
    local d1, d2 = reqs[2].at - reqs[1].at, reqs[3].at - reqs[2].at
    assert.is_true(d1 >= 500 and d1 <= 1000, "first retry after " .. d1 .. " ms")
    assert.is_true(d2 >= 1000 and d2 <= 2000, "second retry after " .. d2 .. " ms")
    assert.sent_to(megan, "hello")
    assert.equal(2, bot:stats().retries)
  end)

  it("gives up after max_attempts of 5xx: 'unavailable', state failed", function()
    bot = testing.load("tests/spec/bots/notify_bot.lua", { max_attempts = 3 })
    megan = bot:install { user = "megan" }
    ops = bot:personal("operator")
    bot:fail(megan, 500, -1)
    run("send " .. megan .. " hello")
    bot:advance("1m")
    assert.equal(3 + 1, #bot:requests(megan))   -- the install greeting, then 3 attempts
    assert.replied(ops, "send unavailable state=failed status=500")
    assert.equal("failed", bot:outbox { conversation = megan, state = "failed" }[1].state)
  end)

  it("retries a connection reset and a timeout", function()
    bot:fail(megan, 200, { times = 1, reset = true })
    run("send " .. megan .. " one")
    bot:advance("5s")
    local reqs = bot:requests(megan)
    assert.equal(0, reqs[1].status)
    assert.equal(201, reqs[2].status)
    assert.sent_to(megan, "one")
  end)

  it("fails a wait = false send in the background, still durably", function()
    bot:block(megan)
    run("later " .. megan .. " fyi")
    assert.replied(ops, "later op")
    assert.equal("blocked", last(bot:outbox { conversation = megan, kind = "send" }).state)
  end)

  it("answers only the conversation it was told about", function()
    local ann = bot:install { user = "ann" }
    bot:block(megan)
    run("send " .. ann .. " hi ann")
    run("send " .. megan .. " hi megan")
    assert.sent_to(ann, "hi ann")
    assert.not_sent_to(megan, "hi megan")
    assert.is_nil(bot:ledger(ann))
  end)
end)
