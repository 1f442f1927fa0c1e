---@meta teams
-- Editor definitions for the `teams` module (lua-language-server ---@meta file): completion and
-- type checks for bot scripts. Not loaded by herald; `herald new` points .luarc.json here.
-- tests/spec/defs_spec.lua checks that these and README.md name the same functions.

---A message: plain text, or a table (README "Messages"). Unknown fields raise.
---@alias teams.Message string|teams.MessageTable

---@class teams.MessageTable
---@field text? string
---@field markdown? boolean
---@field card? table Adaptive Card body elements, or a full card with type = "AdaptiveCard"
---@field cards? table[]
---@field attachment_layout? "list"|"carousel"
---@field attachments? table[]
---@field mentions? teams.Mention[]
---@field summary? string
---@field importance? "normal"|"high"|"urgent"
---@field alert? boolean

---@class teams.Mention
---@field id string
---@field name string

---A stored conversation id, or a reference table.
---@alias teams.Conversation string|teams.Reference

---@class teams.Reference
---@field id string
---@field scope? "personal"|"groupChat"|"channel"
---@field tenant? string
---@field service_url? string
---@field bot_id? string
---@field user_id? string
---@field user_aad_object_id? string
---@field user_name? string
---@field team_id? string
---@field team_name? string
---@field team_channel_id? string
---@field locale? string
---@field timezone? string
---@field installed? boolean
---@field created_at? integer
---@field updated_at? integer
---@field uninstalled_at? integer

---@class teams.Account
---@field id string
---@field aad_object_id? string
---@field name? string

---@class teams.Details
---@field state string the operation's final state
---@field status integer its last HTTP status
---@field op integer its id in the outbox

---Operational failure codes (README "Errors").
---@alias teams.ErrorCode "blocked"|"forbidden"|"not_found"|"throttled"|"too_large"|"unauthorized"|"rejected"|"unavailable"|"timeout"|"network"|"bad_response"|"unknown_conversation"|"unknown_key"|"auth"|"untrusted_service_url"|"expired"|"queue_full"|"store"|"opted_out"|"capped"|"no_activity_id"|"quarantined"|"too_many_timers"

---The event a hook gets.
---@class teams.Event
---@field activity table the decoded activity
---@field type string "message", "installationUpdate", ...
---@field conversation string the stored conversation id
---@field text? string message text without the bot's own mention, trimmed
---@field user? teams.Account the sender
---@field installer? teams.Account the user who installed the bot (on_install), as the activity names them; ev:installer() reads their roster record
---@field members? teams.Account[] the members added or removed (member hooks)
---@field scope "personal"|"groupChat"|"channel"
---@field tenant? string
---@field locale? string
---@field timezone? string
---@field team? {id: string, name?: string, aad_group_id?: string}
---@field channel? {id: string, name?: string}
---@field value? any the invoke or card-submit payload
---@field name? string the invoke name
---@field schedule? string on_schedule: the schedule id
---@field handler? string on_schedule: the handler name
---@field payload? any on_schedule / on_notify: the payload
---@field due? integer on_schedule: when it was due (unix s)
---@field fired_at? integer on_schedule: when it fired
local Event = {}

---Replies threaded to this activity. Returns the new activity id.
---@param message teams.Message
---@param opts? {key?: string, wait?: boolean}
---@return string|integer|nil id
---@return string? err
---@return teams.ErrorCode? code
---@return teams.Details? details
function Event:reply(message, opts) end

---Sends a new top-level message in this conversation. Returns the activity id.
---@param message teams.Message
---@param opts? {key?: string, wait?: boolean, category?: string}
---@return string|integer|nil id
---@return string? err
---@return teams.ErrorCode? code
---@return teams.Details? details
function Event:send(message, opts) end

---(on_install) The installer's roster record: one Bot Connector call, made once per event.
---@return teams.Member? member
---@return string? err
---@return teams.ErrorCode? code
function Event:installer() end

---(in a team) The team's name: from the activity, else one call (GET /v3/teams/{id}) per event.
---Raises outside a team.
---@return string? name
---@return string? err
---@return teams.ErrorCode? code
function Event:team_name() end

---(in a team) The channel's name: from the activity, "General" for the General channel, else one
---call (GET /v3/teams/{id}/conversations) per event. Raises outside a team.
---@return string? name
---@return string? err
---@return teams.ErrorCode? code
function Event:channel_name() end

---@class teams
local teams = {}

---Bot added: personal, group chat or team. Runs once per install.
---@param fn fun(ev: teams.Event)
function teams.on_install(fn) end

---Bot removed; the stored reference is marked, not deleted.
---@param fn fun(ev: teams.Event)
function teams.on_uninstall(fn) end

---Other people joined (ev.members); not for personal chats.
---@param fn fun(ev: teams.Event)
function teams.on_members_added(fn) end

---@param fn fun(ev: teams.Event)
function teams.on_members_removed(fn) end

---@param fn fun(ev: teams.Event)
function teams.on_message(fn) end

---Card actions and other invokes. Return {status = 200, body = {...}}: returning nothing answers
---200 with no body (and logs a warning once).
---@param fn fun(ev: teams.Event): ({status: integer, body?: any}|table|nil)
function teams.on_invoke(fn) end

---Anything no other hook took (reactions, events, ...).
---@param fn fun(ev: teams.Event): any
function teams.on_activity(fn) end

---Handler of POST /api/notify/{name}; its return value is the JSON answer.
---@param name string lower-case letters, digits and -, at most 64
---@param fn fun(ev: {name: string, payload: any}): any
function teams.on_notify(name, fn) end

---Handler that durable schedules name (teams.schedule{handler = name}).
---@param name string
---@param fn fun(ev: teams.Event)
function teams.on_schedule(name, fn) end

---Sends a message through the durable outbox. Returns the activity id (the operation id with
---wait = false), or nil, message, code, details.
---@param conversation teams.Conversation
---@param message teams.Message
---@param opts? {key?: string, wait?: boolean, category?: string}
---@return string|integer|nil id
---@return string? err
---@return teams.ErrorCode? code
---@return teams.Details? details
function teams.send(conversation, message, opts) end

---Replaces a message the bot sent, named by activity id or {key = ...}.
---@param conversation teams.Conversation
---@param target string|{key: string}
---@param message teams.Message
---@param opts? {send_if_missing?: boolean, wait?: boolean}
---@return string|integer|nil id
---@return string? err
---@return teams.ErrorCode? code
---@return teams.Details? details
function teams.update(conversation, target, message, opts) end

---Deletes a message the bot sent, named by activity id or {key = ...}.
---@param conversation teams.Conversation
---@param target string|{key: string}
---@param opts? {wait?: boolean}
---@return true|integer|nil ok
---@return string? err
---@return teams.ErrorCode? code
---@return teams.Details? details
function teams.delete(conversation, target, opts) end

---Starts a 1:1 chat ({user =, tenant =}) or a channel thread ({channel =, message =}).
---Returns the stored conversation id and the first activity id, or nil, message, code.
---user may be a member table from teams.members/member: its name and Entra id are stored.
---@param params {user?: string|teams.Member, aad_object_id?: string, tenant?: string, channel?: string, message?: teams.Message, service_url?: string}
---@return string? conversation
---@return string? first_id_or_err
---@return teams.ErrorCode? code
function teams.create_conversation(params) end

---Iterates stored conversation references.
---@param filter? {tenant?: string, scope?: "personal"|"groupChat"|"channel", team?: string, user?: string, include_uninstalled?: boolean}
---@return fun(): teams.Reference?
function teams.conversations(filter) end

---One stored reference, or nil.
---@param id string
---@return teams.Reference?
function teams.conversation(id) end

---@class teams.Member
---@field id string
---@field name? string
---@field aad_object_id? string
---@field given_name? string
---@field surname? string
---@field email? string
---@field user_principal_name? string
---@field tenant? string
---@field role? string

---The iterator teams.members returns: call it (a for loop does) for the next member. A connector
---failure ends the loop; error and code then say why (nil when the roster was read whole).
---@class teams.MemberIterator
---@overload fun(): teams.Member?
---@field error? string
---@field code? teams.ErrorCode

---Iterates every member of a conversation or team (continuation tokens followed). Never raises
---on a connector error: the loop ends and the iterator's error and code say why.
---@param target string
---@param opts? {page_size?: integer}
---@return teams.MemberIterator
function teams.members(target, opts) end

---@class teams.LedgerEntry
---@field conversation string
---@field state "blocked"|"gone"|"uninstalled"
---@field since integer unix ms
---@field code? string Teams' error code of the send that marked it
---@field last_error? string
---@field user_id? string
---@field user_aad_object_id? string
---@field user_name? string
---@field tenant? string

---The iterator teams.ledger returns; a store error ends the loop and sets error and code.
---@class teams.LedgerIterator
---@overload fun(): teams.LedgerEntry?
---@field error? string
---@field code? teams.ErrorCode

---Iterates the ledger `herald blocked` shows, a page of 200 at a time, in conversation-id order.
---@param filter? {state?: "blocked"|"gone"|"uninstalled", tenant?: string, since?: integer}
---@return teams.LedgerIterator
function teams.ledger(filter) end

---One member by Teams id, Entra object id or UPN.
---@param target string
---@param id string
---@return teams.Member?
---@return string? err
---@return teams.ErrorCode? code
function teams.member(target, id) end

---A team's channels. The General channel's id is the team's.
---@param team string
---@return {id: string, name: string, type?: string}[]?
---@return string? err
---@return teams.ErrorCode? code
function teams.channels(team) end

---A team's details.
---@param team string
---@return {id: string, name?: string, aad_group_id?: string, type?: string, channel_count?: integer, member_count?: integer}?
---@return string? err
---@return teams.ErrorCode? code
function teams.team(team) end

---An Adaptive Card attachment from body elements and actions (nil holes are dropped).
---@param body table[]
---@param actions? table[]
---@return table
function teams.card(body, actions) end

---Marks t (a new table without one) as a list: herald writes it [] when it is empty, in
---everything it encodes from Lua. Returns t itself (no copy, no metatable).
---@generic T: table
---@param t? T
---@return T
function teams.array(t) end

---"<at>Name</at>" and the entry for a message's mentions.
---@param user teams.Account|{id: string, name: string}
---@return string text
---@return teams.Mention mention
function teams.mention(user) end

---The user (or conversation) no longer wants messages of category ("*" or nil: any).
---@param who string|teams.Reference
---@param category? string
function teams.opt_out(who, category) end

---@param who string|teams.Reference
---@param category? string
function teams.opt_in(who, category) end

---@param who string|teams.Reference
---@param category? string
---@return boolean
function teams.opted_out(who, category) end

---At most max messages of a category per recipient per `per` seconds.
---@param category string
---@param cap {max: integer, per: number, over?: "defer"|"drop"}|nil
function teams.frequency_cap(category, cap) end

---Yields the handler for this many seconds.
---@param seconds number
function teams.sleep(seconds) end

---herald's wall clock in unix milliseconds (the test clock under teams.testing).
---@return integer
function teams.now() end

---Writes to herald's log.
---@param level "debug"|"info"|"warn"|"error"
---@param ... any
function teams.log(level, ...) end

---What a personalised broadcast's message function is given (any field may be nil).
---@class teams.Recipient
---@field conversation? string
---@field user? string
---@field tenant? string
---@field name? string
---@field aad_object_id? string
---@field locale? string
---@field timezone? string

---@class teams.BroadcastSpec
---@field to {tenant?: string, scope?: string, conversations?: teams.Conversation[], users?: string[], team?: string}
---@field message teams.Message|fun(recipient: teams.Recipient): teams.Message?
---@field category? string
---@field name? string
---@field key? string

---@class teams.BroadcastStatus
---@field state "preparing"|"running"|"paused"|"cancelled"|"done"|"abandoned"
---@field total integer
---@field sent integer
---@field failed integer
---@field blocked integer
---@field not_found integer
---@field skipped integer
---@field pending integer
---@field queued integer
---@field rate number

---A durable broadcast job: teams.broadcast{to =, message =, ...} returns its id.
---@class teams.broadcast
---@overload fun(spec: teams.BroadcastSpec): (integer?, string?, teams.ErrorCode?)
teams.broadcast = {}

---@param id integer
---@return teams.BroadcastStatus?
function teams.broadcast.status(id) end

---@param id integer
function teams.broadcast.pause(id) end

---@param id integer
function teams.broadcast.resume(id) end

---@param id integer
function teams.broadcast.cancel(id) end

---Edits every delivered copy.
---@param id integer
---@param message teams.Message
function teams.broadcast.update(id, message) end

---Deletes every delivered copy.
---@param id integer
function teams.broadcast.recall(id) end

---@class teams.ScheduleSpec
---@field handler string the teams.on_schedule name
---@field id? string
---@field at? string RFC 3339, or a local date-time with tz
---@field every? string|number seconds, or "15m", "2h", "1d"
---@field cron? string five fields
---@field tz? string an IANA zone, or "user"
---@field conversation? teams.Conversation
---@field payload? any
---@field missed? "once"|"skip"

---A durable schedule: teams.schedule{...} returns its id and next fire (unix s).
---@class teams.schedule
---@overload fun(spec: teams.ScheduleSpec): (string?, integer|string?, string?)
teams.schedule = {}

---@param id string
function teams.schedule.cancel(id) end

---@param id string
---@return table?
function teams.schedule.get(id) end

---@param filter? {handler?: string, conversation?: string}
---@return table[]
function teams.schedule.list(filter) end

---@class teams.Timer
local Timer = {}
function Timer:cancel() end

---In-memory timers of this script generation (cancelled on reload).
---@class teams.timer
teams.timer = {}

---@param seconds number
---@param fn fun(...: any)
---@param ... any passed to fn
---@return teams.Timer?
---@return string? err
---@return teams.ErrorCode? code
function teams.timer.after(seconds, fn, ...) end

---@param seconds number
---@param fn fun(...: any)
---@param ... any passed to fn
---@return teams.Timer?
---@return string? err
---@return teams.ErrorCode? code
function teams.timer.every(seconds, fn, ...) end

return teams
