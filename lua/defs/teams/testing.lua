---@meta teams.testing
-- Editor definitions for `teams.testing` (lua-language-server ---@meta file): the bot-testing kit
-- of README "Unit-testing a bot with teams.testing". Not loaded by herald or busted.
-- tests/spec/defs_spec.lua checks that these and README.md name the same functions.

---A user: a name ("megan" becomes 29:megan) or a table.
---@alias teams.testing.User string|{id?: string, name?: string, aad_object_id?: string, timezone?: string, locale?: string}

---A time: ISO 8601 with an offset, or unix ms.
---@alias teams.testing.Time string|integer

---What Teams (or, for bot:notify, the calling system) gets back.
---@class teams.testing.Result
---@field status? integer nil while the handler is still running
---@field body? string the answer's text exactly as sent over HTTP ("" when empty)
---@field json? any the body decoded; nil when it is not JSON
---@field activity? table
---@field conversation? string
---@field pending? boolean

---One operation the bot made.
---@class teams.testing.Op
---@field op "create"|"send"|"reply"|"update"|"delete"|"get"
---@field conversation string
---@field activity_id? string nil when the answer carried none (an empty 202)
---@field reply_to? string
---@field text? string
---@field attachments? table[]
---@field card? table the first Adaptive Card's content
---@field cards? table[]
---@field mentions? table[]
---@field summary? string
---@field body? table the JSON sent, decoded
---@field json? string the JSON sent
---@field answer? string the fake's answer body
---@field at integer unix ms
---@field status integer

---A conversation id, or {conversation =, op =}.
---@alias teams.testing.Filter string|{conversation?: string, op?: string}

---@class teams.testing.Where
---@field user? teams.testing.User
---@field conversation? string
---@field scope? "personal"|"groupChat"|"team"|"channel"
---@field team? string
---@field chat? string
---@field channel? string
---@field thread? string
---@field timezone? string
---@field locale? string
---@field mentions? string[]
---@field mention_bot? boolean
---@field verb? string

---A bot under test, from testing.load.
---@class teams.testing.Bot
local Bot = {}

---Starts again from nothing: an empty database, the clock at the start, no fake answers.
function Bot:reset() end
---Ends the bot.
function Bot:close() end
---@return integer unix ms
function Bot:now() end
---@return string ISO time
function Bot:clock() end
---Fires every timer, sleep, retry and schedule due on the way.
---@param d number|string seconds, or "15m", "2h", "1h30m", "1d"
function Bot:advance(d) end
---@param t teams.testing.Time
function Bot:advance_to(t) end

---@param user? teams.testing.User
---@return string conversation "a:29:megan"
function Bot:personal(user) end
---@param name? string
---@return string
function Bot:group_chat(name) end
---@param team string
---@param channel? string
---@return string
function Bot:channel(team, channel) end

---installationUpdate (add) then conversationUpdate (membersAdded), like Teams.
---@param o? {scope?: "personal"|"groupChat"|"team", user?: teams.testing.User, team?: string, chat?: string, channel?: string, first?: string, via?: string, both?: boolean}
---@return string conversation
---@return teams.testing.Result[] results
function Bot:install(o) end
---@param o? {scope?: "personal"|"groupChat"|"team", user?: teams.testing.User, team?: string, chat?: string, channel?: string}
---@return string conversation
---@return teams.testing.Result[] results
function Bot:uninstall(o) end
---@param o {members: teams.testing.User[], team?: string, chat?: string}
---@return teams.testing.Result
function Bot:members_added(o) end
---@param o {members: teams.testing.User[], team?: string, chat?: string}
---@return teams.testing.Result
function Bot:members_removed(o) end
---@param text string
---@param o? teams.testing.Where
---@return teams.testing.Result
function Bot:message(text, o) end
---An Action.Execute (invoke adaptiveCard/action).
---@param data table
---@param o? teams.testing.Where
---@return teams.testing.Result
function Bot:card_action(data, o) end
---An Action.Submit: a message with value = data.
---@param data table
---@param o? teams.testing.Where
---@return teams.testing.Result
function Bot:submit(data, o) end
---@param name string
---@param value any
---@param o? teams.testing.Where
---@return teams.testing.Result
function Bot:invoke(name, value, o) end
---Any activity, a table or JSON.
---@param activity table|string
---@return teams.testing.Result
function Bot:post(activity) end
---The last activity again, with the same id.
---@return teams.testing.Result
function Bot:redeliver() end
---POST /api/notify/{name}.
---@param name string
---@param payload any
---@return teams.testing.Result
function Bot:notify(name, payload) end

---Operations Teams accepted, in order.
---@param filter? teams.testing.Filter
---@return teams.testing.Op[]
function Bot:sent(filter) end
---New messages (create, send, reply) to a conversation.
---@param conversation string
---@return teams.testing.Op[]
function Bot:sent_to(conversation) end
---@param filter? teams.testing.Filter
---@return teams.testing.Op?
function Bot:last(filter) end
---@param filter? teams.testing.Filter
---@return teams.testing.Op[]
function Bot:messages(filter) end
---Every attempt, failed ones and retries included (status 0: reset or timeout).
---@param filter? teams.testing.Filter
---@return teams.testing.Op[]
function Bot:requests(filter) end
---Forgets what was sent so far.
function Bot:clear() end
---Prints everything the bot did.
function Bot:describe() end

---403 MessageWritesBlocked.
---@param conversation string "*" for every conversation
---@param times? integer
function Bot:block(conversation, times) end
---404 ConversationNotFound.
---@param conversation string
---@param times? integer
function Bot:gone(conversation, times) end
---429 with Retry-After.
---@param conversation string
---@param retry_after_s number
---@param times? integer
function Bot:throttle(conversation, retry_after_s, times) end
---5xx, a reset or a timeout.
---@param conversation string
---@param status integer
---@param times? integer|{times?: integer, reset?: boolean, timeout?: boolean}
function Bot:fail(conversation, status, times) end
---A raw rule for the fake connector.
---@param rule {match?: string, method?: string, status?: integer, body?: string, retry_after?: string|number, delay_ms?: integer, times?: integer}
function Bot:respond(rule) end
---Removes every fake answer.
function Bot:heal() end

---@param filter? string|{conversation?: string, state?: string, kind?: string}
---@return table[]
function Bot:outbox(filter) end
---@param op_id integer
---@return table[]
function Bot:attempts(op_id) end
---@param conversation? string
---@return table[]
function Bot:ledger(conversation) end
---Schedules as teams.schedule.list gives them.
---@param filter? string|{conversation?: string, handler?: string}
---@return table[]
function Bot:schedules(filter) end
---One schedule as teams.schedule.get gives it.
---@param id string
---@return table?
function Bot:schedule(id) end
---A stored reference exactly as teams.conversation(id) gives it.
---@param id string
---@return teams.Reference?
function Bot:conversation(id) end
---References as teams.conversations(filter) yields them; no filter: all, uninstalled included.
---@param filter? {tenant?: string, scope?: string, team?: string, user?: string, include_uninstalled?: boolean}
---@return teams.Reference[]
function Bot:conversations(filter) end

---A roster member for the fake: a name, the fields teams.members returns, or raw Teams JSON (with aadObjectId).
---@alias teams.testing.Member string|{id?: string, name?: string, aad_object_id?: string, given_name?: string, surname?: string, email?: string, user_principal_name?: string, tenant?: string, role?: string}|table

---Replaces the roster the fake answers for a team or conversation (pagedmembers, members, members/{id}).
---@param target string|table a team (name, id or table) or a conversation id
---@param members teams.testing.Member[]
---@param opts? {page_size?: integer} no page holds more than page_size members
---@return teams.testing.Bot
function Bot:roster(target, members, opts) end
---Replaces a team's channel list (General stays first).
---@param team string|table
---@param channels (string|{id?: string, name?: string, type?: string})[]
---@return teams.testing.Bot
function Bot:channels(team, channels) end
---Overrides what GET /v3/teams/{id} answers.
---@param team string|table
---@param details {name?: string, aad_group_id?: string, type?: string, member_count?: integer, channel_count?: integer}
---@return teams.testing.Bot
function Bot:team_details(team, details) end
---@param id? integer
---@return table
function Bot:broadcasts(id) end
---Read-only SQL.
---@param sql string
---@param ... any
---@return table[]
function Bot:query(sql, ...) end
---herald's log lines.
---@return string[]
function Bot:logs() end
---Handler errors, with tracebacks.
---@return string[]
function Bot:errors() end
---@return {tasks: integer, queued: integer, sent: integer, retries: integer, throttled: integer, handler_errors: integer}
function Bot:stats() end

---@class teams.testing
local testing = {}

---Loads a bot script into a fresh core (one bot at a time).
---@param script string
---@param opts? {start?: teams.testing.Time, tenant?: string, bot_id?: string, bot_name?: string, service_url?: string, user?: teams.testing.User, locale?: string, max_attempts?: integer, retry_base_ms?: integer, tenant_rps?: integer, governor?: boolean, response_deadline_ms?: integer, task_slice_ms?: integer, lua_memory_mb?: integer, default_tz?: string}
---@return teams.testing.Bot
function testing.load(script, opts) end

---ISO 8601 (with an offset) or unix ms → unix ms.
---@param t teams.testing.Time
---@return integer
function testing.time(t) end

---unix ms → ISO 8601 (UTC).
---@param ms integer
---@return string
function testing.iso(ms) end

---"2h", "15m", "1h30m", "1d" or seconds → ms.
---@param d string|number
---@return integer
function testing.duration(d) end

return testing
