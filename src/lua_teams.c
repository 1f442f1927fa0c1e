/* lua_teams.c — `herald.core`, the C half of the teams module: yielding connector calls
 * (send, update, delete, create), sleep, reference store access, the dispatcher slot, logging.
 * The pure-Lua half (lua/teams/init.lua) builds activities and events on top of it. */
#include "lua_teams.h"
#include "config.h"
#include "clock.h"
#include "connector.h"
#include "broadcast.h"
#include "log.h"
#include "lua_schedule.h"
#include "lua_timer.h"
#include "lua_util.h"
#include "outbox.h"
#include "runtime.h"
#include "send_policy.h"
#include "store.h"
#include "store_outbox.h"
#include "task.h"
#include "vm.h"

#include <event2/event.h>
#include <lauxlib.h>
#include <lua-cjson.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static runtime *rt_of(lua_State *L) { return vm_host(vm_of(L)); }

/* ---- conversations as arguments ---------------------------------------------------------- */

typedef struct target {
    const char *id;
    const char *service_url;
    const char *tenant;
    store_reference ref;          /* owns the strings when looked up by id */
} target;

/* nil, message, code for an operational failure whose message C owns (NULL: fallback). The
 * message is copied out and freed before anything is pushed: a push can raise under the memory
 * cap, and C memory held across it leaked. Returns 3. */
static int push_fail(lua_State *L, const char *code, char *owned, const char *fallback)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", owned ? owned : fallback);
    free(owned);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    lua_pushstring(L, code);
    return 3;
}

/* Raises prefix .. message for a failure whose message C owns, freed first (see push_fail). */
static int raise_owned(lua_State *L, const char *prefix, char *owned, const char *fallback)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s%s", prefix, owned ? owned : fallback);
    free(owned);
    return luaL_error(L, "%s", msg);
}

/* Pushes a refusal of send_policy as nil, message, code; clears v and returns 3. The message is
 * copied out and freed first: a push can raise under the memory cap. */
static int push_verdict(lua_State *L, send_verdict *v)
{
    char msg[1024];
    const char *code = v->code;   /* a static string */
    snprintf(msg, sizeof msg, "%s", v->message ? v->message : code);
    send_policy_clear(v);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    lua_pushstring(L, code);
    return 3;
}

/* Locates argument arg: a stored id, or a reference table with id and service_url (a table
 * without service_url names a stored id). Misuse raises. Returns 1, or 0 with *v refused. */
static int locate_target(lua_State *L, int arg, target *tg, send_verdict *v)
{
    memset(tg, 0, sizeof *tg);
    if (lua_type(L, arg) == LUA_TTABLE) {
        tg->id = lua_field_string(L, arg, "id");
        tg->service_url = lua_field_string(L, arg, "service_url");
        tg->tenant = lua_field_string(L, arg, "tenant");
        if (!tg->id || !*tg->id)
            luaL_argerror(L, arg, "conversation table needs a non-empty 'id'");
        if (!tg->service_url || !*tg->service_url) {
            char *err = NULL;
            int found = store_get_reference(rt_of(L)->store, tg->id, &tg->ref, &err);
            free(err);
            if (found != 1)
                luaL_argerror(L, arg, "conversation table needs 'service_url' (or a stored 'id')");
            tg->service_url = tg->ref.service_url;
            if (!tg->tenant)
                tg->tenant = tg->ref.tenant_id;
        }
        return 1;
    }
    const char *id = luaL_checkstring(L, arg);
    if (!send_policy_lookup(rt_of(L), id, &tg->ref, v))
        return 0;
    tg->id = tg->ref.id;
    tg->service_url = tg->ref.service_url;
    tg->tenant = tg->ref.tenant_id;
    return 1;
}

/* Resolves argument arg to a target and asks send_policy whether rq (its target fields are
 * filled here; category fields are the caller's) may go. Returns 1 (tg->ref to be cleared by the
 * caller, *not_before set), or pushes nil, message, code and returns 0 with nothing held. */
static int resolve_target(lua_State *L, int arg, target *tg, send_request *rq,
                          int64_t *not_before)
{
    send_verdict v = {0};
    if (!locate_target(L, arg, tg, &v)) {
        push_verdict(L, &v);
        return 0;
    }
    rq->conversation_id = tg->id;
    rq->service_url = tg->service_url;
    rq->seal_id = tg->id;
    rq->seal = tg->ref.service_url_seal;
    rq->user_id = tg->ref.user_id;
    rq->user_aad_id = tg->ref.user_aad_id;
    if (!send_policy_check(rt_of(L), rq, &v)) {
        store_reference_clear(&tg->ref);
        push_verdict(L, &v);
        return 0;
    }
    if (not_before)
        *not_before = v.not_before_ms;
    send_policy_clear(&v);
    return 1;
}

/* ---- yielding outbox operations ----------------------------------------------------------- */

typedef struct out_op {
    task *t;
    runtime *rt;
    outbox_watch *watch;          /* the operation waited on, until on_out_done */
    int kind;                     /* enum outbox_kind */
    int ok;
    long status;
    int64_t op_id;
    char *id, *conversation_id, *service_url, *code, *message, *state;
} out_op;

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void out_op_free(out_op *op)
{
    free(op->id);
    free(op->conversation_id);
    free(op->service_url);
    free(op->code);
    free(op->message);
    free(op->state);
    free(op);
}

static void set_opt_field(lua_State *L, const char *k, const char *v)
{
    if (v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, k);
    }
}

/* Pushes the final result of an operation onto the task's thread:
 *   sent:    send/reply/update → activity id (true when the connector gave none); delete → true;
 *            create → conversation_id, activity_id, service_url
 *   failure: nil, message, code, details{state, status, op} */
static int push_out_result(lua_State *L, void *arg)
{
    out_op *op = arg;
    if (!L) {
        out_op_free(op);
        return 0;
    }
    int n;
    if (op->ok) {
        switch (op->kind) {
        case OUTBOX_DELETE:
            lua_pushboolean(L, 1);
            n = 1;
            break;
        case OUTBOX_CREATE:
            /* the answer came from a trusted endpoint, so its serviceUrl is trusted too */
            send_policy_note_created(op->rt, op->service_url);
            lua_pushstring(L, op->conversation_id);
            if (op->id) lua_pushstring(L, op->id); else lua_pushnil(L);
            if (op->service_url) lua_pushstring(L, op->service_url); else lua_pushnil(L);
            n = 3;
            break;
        default:
            if (op->id) lua_pushstring(L, op->id); else lua_pushboolean(L, 1);
            n = 1;
        }
    } else {
        lua_pushnil(L);
        lua_pushstring(L, op->message ? op->message : "operation failed");
        lua_pushstring(L, op->code ? op->code : "rejected");
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, op->status);
        lua_setfield(L, -2, "status");
        lua_pushinteger(L, op->op_id);
        lua_setfield(L, -2, "op");
        set_opt_field(L, "state", op->state);
        n = 4;
    }
    out_op_free(op);
    return n;
}

static void on_out_done(const outbox_result *res, void *ud)
{
    out_op *op = ud;
    op->ok = strcmp(res->state, "sent") == 0;
    op->status = res->status;
    op->op_id = res->op_id;
    op->id = dup_or_null(res->activity_id);
    op->conversation_id = dup_or_null(res->conversation_id);
    op->service_url = dup_or_null(res->service_url);
    op->code = dup_or_null(res->code);
    op->message = dup_or_null(res->message);
    op->state = dup_or_null(res->state);
    task_wake(op->t, push_out_result, op);
}

static void cancel_out_op(void *arg)
{
    out_op *op = arg;
    outbox_unwatch(op->watch);            /* the operation itself goes on: it is durable */
    out_op_free(op);
}

/* What a generation is charged for the operations it queued. Operations outlive their generation
 * (they are durable), so each holds the account, and the account forgets its vm when it closes. */
typedef struct charge_account {
    vm *v;
    long refs;
} charge_account;

static void account_unref(charge_account *a)
{
    if (--a->refs == 0)
        free(a);
}

static void account_close(void *ext)
{
    charge_account *a = ext;
    a->v = NULL;
    account_unref(a);
}

static void uncharge(void *ud, size_t bytes)
{
    charge_account *a = ud;
    if (a->v)
        vm_charge(a->v, -(ptrdiff_t)bytes);
    account_unref(a);
}

/* Bounds a script's queued operations: the outbox's counts, and its memory against the script's
 * cap. Returns 1 with spec's release set (the caller owns one charge of bytes until
 * outbox_enqueue takes it over), or 0 with *why (malloc'd, may be NULL). */
static int admit(lua_State *L, outbox_spec *spec, size_t *bytes, char **why)
{
    runtime *rt = rt_of(L);
    if (!outbox_admit(rt->outbox, spec, why))
        return 0;
    vm *v = vm_of(L);
    charge_account *a = vm_ext(v, VM_EXT_CHARGES);
    if (!a && (a = calloc(1, sizeof *a))) {
        a->v = v;
        a->refs = 1;
        vm_set_ext(v, VM_EXT_CHARGES, a, account_close);
    }
    *bytes = outbox_spec_bytes(spec);
    if (!a || vm_charge(v, (ptrdiff_t)*bytes) < 0) {
        *why = strdup("queue full: the script's memory cap (HERALD_LUA_MEMORY_MB) has no room for "
                      "another queued operation; try again once some have finished");
        return 0;
    }
    a->refs++;
    spec->release = uncharge;
    spec->release_ud = a;
    return 1;
}

/* Enqueues spec. With wait, yields until the final state; else returns the operation id now.
 * owned (may be NULL) backs spec's strings and is released here, before the yield: in Lua 5.4 a
 * yield from C longjmps, so nothing after it in the caller would run. */
static int enqueue(lua_State *L, outbox_spec *spec, int wait, store_reference *owned)
{
    runtime *rt = rt_of(L);
    task *t = wait ? task_check(L, "teams.send/update/delete") : NULL;
    size_t bytes = 0;
    char *why = NULL;
    if (!admit(L, spec, &bytes, &why)) {
        if (owned)
            store_reference_clear(owned);
        log_debug("refused to queue an operation: %s", why ? why : "queue full");
        lua_pushnil(L);
        lua_pushstring(L, why ? why : "queue full");
        lua_pushliteral(L, "queue_full");
        free(why);
        return 3;
    }
    out_op *op = NULL;
    if (wait) {
        op = calloc(1, sizeof *op);
        if (!op) {
            if (owned)
                store_reference_clear(owned);
            spec->release(spec->release_ud, bytes);
            return luaL_error(L, "out of memory");
        }
        op->t = t;
        op->rt = rt;
        op->kind = (int)spec->kind;
    }
    char *err = NULL;
    int64_t id = outbox_enqueue(rt->outbox, spec, wait ? on_out_done : NULL, op,
                                wait ? &op->watch : NULL, &err);
    if (owned)
        store_reference_clear(owned);
    if (id < 0) {
        free(op);
        spec->release(spec->release_ud, bytes);
        return push_fail(L, "store", err, "cannot queue the operation");
    }
    if (!wait) {
        lua_pushinteger(L, id);
        return 1;
    }
    return task_yield(L, op, cancel_out_op);
}

/* Category options of a send: opt-outs and a frequency cap (max per per_ms, over "defer"|"drop"),
 * read into rq (which is otherwise zeroed). */
static void read_cat(lua_State *L, int i, send_request *rq)
{
    memset(rq, 0, sizeof *rq);
    if (lua_type(L, i) != LUA_TTABLE)
        return;
    rq->category = lua_field_string(L, i, "category");
    lua_pushliteral(L, "cap_max");
    lua_rawget(L, i);
    rq->cap_max = (long)lua_tointeger(L, -1);
    lua_pushliteral(L, "cap_per");
    lua_rawget(L, i);
    rq->cap_per_ms = (int64_t)(lua_tonumber(L, -1) * 1000);
    lua_pop(L, 2);
    const char *over = lua_field_string(L, i, "cap_over");
    rq->cap_drop = over && strcmp(over, "drop") == 0;
}

/* Options table at index i: key (string), wait (boolean, default true), send_if_missing. */
static void read_opts(lua_State *L, int i, const char **key, int *wait, int *flags)
{
    *key = NULL;
    *wait = 1;
    *flags = 0;
    if (lua_isnoneornil(L, i))
        return;
    luaL_checktype(L, i, LUA_TTABLE);
    /* raw reads: no script code runs while the key string is held (see lua_field_string) */
    lua_pushliteral(L, "key");
    if (lua_rawget(L, i) != LUA_TNIL) {
        luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) > 0, i,
                      "'key' must be a non-empty string");
        *key = lua_tostring(L, -1);
    }
    lua_pushliteral(L, "wait");
    if (lua_rawget(L, i) != LUA_TNIL)
        *wait = lua_toboolean(L, -1);
    lua_pushliteral(L, "send_if_missing");
    if (lua_rawget(L, i) != LUA_TNIL && lua_toboolean(L, -1))
        *flags |= OUTBOX_SEND_IF_MISSING;
    lua_pop(L, 3);                             /* the table keeps the key string alive */
}

/* core.send(conv, json [, reply_to_id [, opts]]) */
static int core_send(lua_State *L)
{
    size_t len;
    const char *json = luaL_checklstring(L, 2, &len);
    const char *reply_to = luaL_optstring(L, 3, NULL);
    const char *key;
    int wait, flags;
    read_opts(L, 4, &key, &wait, &flags);
    if (wait)                                  /* raises: before the target's strings are held */
        task_check(L, "teams.send/update/delete");
    send_request rq;
    read_cat(L, 4, &rq);
    target tg;
    int64_t not_before = 0;
    if (!resolve_target(L, 1, &tg, &rq, &not_before))
        return 3;
    outbox_spec spec = {.kind = reply_to ? OUTBOX_REPLY : OUTBOX_SEND, .conversation_id = tg.id,
                        .service_url = tg.service_url, .tenant_id = tg.tenant,
                        .target_id = reply_to, .msg_key = key, .body = json, .body_len = len,
                        .flags = flags, .category = rq.category, .not_before_ms = not_before};
    return enqueue(L, &spec, wait, &tg.ref);
}

/* core.update(conv, activity_id | nil, json [, opts{key, send_if_missing, wait}]) */
static int core_update(lua_State *L)
{
    const char *activity_id = luaL_optstring(L, 2, NULL);
    size_t len;
    const char *json = luaL_checklstring(L, 3, &len);
    const char *key;
    int wait, flags;
    read_opts(L, 4, &key, &wait, &flags);
    luaL_argcheck(L, activity_id || key, 2, "an activity id or a key is required");
    if (wait)
        task_check(L, "teams.send/update/delete");
    target tg;
    send_request rq = {0};                     /* no category: trust alone decides */
    if (!resolve_target(L, 1, &tg, &rq, NULL))
        return 3;
    outbox_spec spec = {.kind = OUTBOX_UPDATE, .conversation_id = tg.id,
                        .service_url = tg.service_url, .tenant_id = tg.tenant,
                        .target_id = activity_id, .msg_key = key, .body = json, .body_len = len,
                        .flags = flags};
    return enqueue(L, &spec, wait, &tg.ref);
}

/* core.delete(conv, activity_id | nil [, opts{key, wait}]) */
static int core_delete(lua_State *L)
{
    const char *activity_id = luaL_optstring(L, 2, NULL);
    const char *key;
    int wait, flags;
    read_opts(L, 3, &key, &wait, &flags);
    luaL_argcheck(L, activity_id || key, 2, "an activity id or a key is required");
    if (wait)
        task_check(L, "teams.send/update/delete");
    target tg;
    send_request rq = {0};                     /* no category: trust alone decides */
    if (!resolve_target(L, 1, &tg, &rq, NULL))
        return 3;
    outbox_spec spec = {.kind = OUTBOX_DELETE, .conversation_id = tg.id,
                        .service_url = tg.service_url, .tenant_id = tg.tenant,
                        .target_id = activity_id, .msg_key = key};
    return enqueue(L, &spec, wait, &tg.ref);
}

/* core.create(service_url, json, known_conversation_id, tenant, queue) → conversation_id,
 * activity_id, service_url */
static int core_create(lua_State *L)
{
    const char *service_url = luaL_checkstring(L, 1);
    size_t len;
    const char *json = luaL_checklstring(L, 2, &len);
    const char *known = luaL_optstring(L, 3, NULL);   /* stored conversation the URL came from */
    const char *tenant = luaL_optstring(L, 4, NULL);
    const char *queue = luaL_checkstring(L, 5);
    task_check(L, "teams.create_conversation");
    store_reference kref = {0};
    char *kerr = NULL;
    if (known && store_get_reference(rt_of(L)->store, known, &kref, &kerr) != 1)
        memset(&kref, 0, sizeof kref);
    free(kerr);
    send_request rq = {.service_url = service_url, .seal_id = kref.service_url ? known : NULL,
                       .seal = kref.service_url && strcmp(kref.service_url, service_url) == 0
                                   ? kref.service_url_seal : NULL};
    send_verdict v;
    int trusted = send_policy_check(rt_of(L), &rq, &v);
    store_reference_clear(&kref);
    if (!trusted)
        return push_verdict(L, &v);
    send_policy_clear(&v);
    outbox_spec spec = {.kind = OUTBOX_CREATE, .service_url = service_url, .tenant_id = tenant,
                        .queue = queue, .body = json, .body_len = len};
    return enqueue(L, &spec, 1, NULL);
}

/* ---- reads: rosters, channels, team details ------------------------------------------------ */

typedef struct get_op {
    task *t;
    connector_call *call;
    int ok;
    long status;
    char *body, *code, *message;
} get_op;

static void get_op_free(get_op *op)
{
    free(op->body);
    free(op->code);
    free(op->message);
    free(op);
}

/* body, status | nil, message, code */
static int push_get_result(lua_State *L, void *arg)
{
    get_op *op = arg;
    if (!L) {
        get_op_free(op);
        return 0;
    }
    int n;
    if (op->ok) {
        lua_pushstring(L, op->body ? op->body : "");
        lua_pushinteger(L, op->status);
        n = 2;
    } else {
        lua_pushnil(L);
        lua_pushstring(L, op->message ? op->message : "read failed");
        lua_pushstring(L, op->code ? op->code : "rejected");
        n = 3;
    }
    get_op_free(op);
    return n;
}

static void on_get_done(const connector_result *res, void *ud)
{
    get_op *op = ud;
    op->call = NULL;
    op->ok = res->ok;
    op->status = res->status;
    op->body = dup_or_null(res->body);
    op->code = dup_or_null(res->code);
    op->message = dup_or_null(res->message);
    task_wake(op->t, push_get_result, op);
}

static void cancel_get(void *arg)
{
    get_op *op = arg;
    if (op->call)
        connector_cancel(op->call);
    get_op_free(op);
}

/* core.get(conversation_or_team_id, path) → body, status | nil, message, code. The id names a
 * stored conversation, or a team whose channels are stored (its service URL is theirs). */
static int core_get(lua_State *L)
{
    task *t = task_check(L, "teams.members/member/channels/team");
    const char *id = luaL_checkstring(L, 1);
    const char *path = luaL_checkstring(L, 2);
    runtime *rt = rt_of(L);
    store_reference ref;
    char *err = NULL;
    int found = store_get_reference(rt->store, id, &ref, &err);
    if (found != 1) {
        free(err);
        err = NULL;
        found = store_find_channel_reference(rt->store, id, &ref, &err);
    }
    if (found != 1) {
        free(err);
        lua_pushnil(L);
        lua_pushfstring(L, "no stored conversation or team '%s'", id);
        lua_pushliteral(L, "unknown_conversation");
        return 3;
    }
    send_request rq = {.conversation_id = ref.id, .service_url = ref.service_url,
                       .seal_id = ref.id, .seal = ref.service_url_seal};
    send_verdict v;
    if (!send_policy_check(rt, &rq, &v)) {
        store_reference_clear(&ref);
        return push_verdict(L, &v);
    }
    send_policy_clear(&v);
    get_op *op = calloc(1, sizeof *op);
    if (!op) {
        store_reference_clear(&ref);
        return luaL_error(L, "out of memory");
    }
    op->t = t;
    connector_dest to = {ref.service_url, ref.id, ref.service_url_seal};
    op->call = connector_get(rt->conn, &to, path, on_get_done, op, &err);
    store_reference_clear(&ref);
    if (!op->call) {
        get_op_free(op);
        return push_fail(L, "network", err, "cannot start the read");
    }
    return task_yield(L, op, cancel_get);
}

/* core.encode_id(s): the connector's percent-encoding, for paths built in Lua */
static int core_encode_id(lua_State *L)
{
    char *e = connector_encode_id(luaL_checkstring(L, 1));
    if (!e)
        return luaL_error(L, "out of memory");
    lua_pushstring(L, e);
    free(e);
    return 1;
}

/* ---- sleep ------------------------------------------------------------------------------- */

typedef struct sleep_op {
    task *t;
    struct event *ev;
} sleep_op;

static int push_nothing(lua_State *L, void *arg)
{
    (void)L;
    sleep_op *op = arg;
    if (op->ev)
        clock_timer_free(op->ev);
    free(op);
    return 0;
}

static void on_sleep_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sleep_op *op = arg;
    task_wake(op->t, push_nothing, op);
}

static void cancel_sleep(void *arg) { push_nothing(NULL, arg); }

/* core.sleep(seconds) */
static int core_sleep(lua_State *L)
{
    task *t = task_check(L, "teams.sleep");
    lua_Number s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0 && s <= 86400 * 7 && !isnan(s), 1, "seconds must be between 0 and 604800");
    sleep_op *op = calloc(1, sizeof *op);
    if (!op)
        return luaL_error(L, "out of memory");
    op->t = t;
    op->ev = evtimer_new(rt_of(L)->base, on_sleep_done, op);
    if (!op->ev) {
        free(op);
        return luaL_error(L, "cannot create a timer");
    }
    clock_timer_add(op->ev, (int64_t)(s * 1000.0));
    return task_yield(L, op, cancel_sleep);
}

/* ---- references -------------------------------------------------------------------------- */

/* Pushes a reference as a Lua table (field names are the documented Lua ones). */
static void push_reference(lua_State *L, const store_reference *r)
{
    lua_createtable(L, 0, 22);
    set_opt_field(L, "id", r->id);
    set_opt_field(L, "scope", r->type);
    set_opt_field(L, "tenant", r->tenant_id);
    set_opt_field(L, "service_url", r->service_url);
    set_opt_field(L, "channel_id", r->channel_id);
    set_opt_field(L, "bot_id", r->bot_id);
    set_opt_field(L, "bot_name", r->bot_name);
    set_opt_field(L, "user_id", r->user_id);
    set_opt_field(L, "user_aad_object_id", r->user_aad_id);
    set_opt_field(L, "user_name", r->user_name);
    set_opt_field(L, "team_id", r->team_id);
    set_opt_field(L, "team_name", r->team_name);
    set_opt_field(L, "team_aad_group_id", r->team_aad_group_id);
    set_opt_field(L, "team_channel_id", r->team_channel_id);
    set_opt_field(L, "locale", r->locale);
    set_opt_field(L, "timezone", r->timezone);
    set_opt_field(L, "last_activity_id", r->last_activity_id);
    lua_pushboolean(L, r->installed);
    lua_setfield(L, -2, "installed");
    lua_pushinteger(L, r->created_at);
    lua_setfield(L, -2, "created_at");
    lua_pushinteger(L, r->updated_at);
    lua_setfield(L, -2, "updated_at");
    if (r->uninstalled_at) {
        lua_pushinteger(L, r->uninstalled_at);
        lua_setfield(L, -2, "uninstalled_at");
    }
}

/* runtime.h: the same table for teams.testing's views (bot:conversation), so the kit's shape
 * cannot drift from what a script gets. */
void lua_teams_push_reference(struct lua_State *L, const store_reference *r) { push_reference(L, r); }

/* Pushes the found reference, nil when absent; raises on a store error. */
static int push_lookup(lua_State *L, int found, store_reference *r, char *err)
{
    if (found < 0) {
        return raise_owned(L, "store error: ", err, "?");
    }
    if (found == 0) {
        lua_pushnil(L);
        return 1;
    }
    push_reference(L, r);
    store_reference_clear(r);
    return 1;
}

static int core_get_reference(lua_State *L)
{
    store_reference r;
    char *err = NULL;
    int found = store_get_reference(rt_of(L)->store, luaL_checkstring(L, 1), &r, &err);
    return push_lookup(L, found, &r, err);
}

static int core_find_user(lua_State *L)
{
    store_reference r;
    char *err = NULL;
    int found = store_find_user_reference(rt_of(L)->store, luaL_checkstring(L, 1),
                                          luaL_optstring(L, 2, NULL), luaL_optstring(L, 3, NULL),
                                          &r, &err);
    return push_lookup(L, found, &r, err);
}

static int core_find_channel(lua_State *L)
{
    store_reference r;
    char *err = NULL;
    int found = store_find_channel_reference(rt_of(L)->store, luaL_checkstring(L, 1), &r, &err);
    return push_lookup(L, found, &r, err);
}

static int core_find_tenant(lua_State *L)
{
    store_reference r;
    char *err = NULL;
    int found = store_find_tenant_reference(rt_of(L)->store, luaL_checkstring(L, 1), &r, &err);
    return push_lookup(L, found, &r, err);
}

int lua_teams_append_reference(const store_reference *r, void *ud)
{
    lua_State *L = ud;                          /* [... list] */
    push_reference(L, r);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

void lua_teams_read_filter(lua_State *L, int idx, store_filter *f)
{
    *f = (store_filter){0};
    f->tenant_id = lua_field_string(L, idx, "tenant");
    f->type = lua_field_string(L, idx, "scope");
    f->team_id = lua_field_string(L, idx, "team");
    f->user = lua_field_string(L, idx, "user");
    lua_getfield(L, idx, "include_uninstalled");
    f->include_uninstalled = lua_toboolean(L, -1);
    lua_pop(L, 1);
}

/* core.list(filter, after_id, limit) → array of references */
static int core_list(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    store_filter f;
    lua_teams_read_filter(L, 1, &f);
    const char *after = luaL_optstring(L, 2, NULL);
    int limit = (int)luaL_optinteger(L, 3, 100);
    luaL_argcheck(L, limit > 0 && limit <= 10000, 3, "limit must be 1..10000");
    lua_settop(L, 3);
    lua_createtable(L, limit < 64 ? limit : 64, 0);
    char *err = NULL;
    if (store_list_references(rt_of(L)->store, &f, after, limit, lua_teams_append_reference, L, &err) < 0) {
        return raise_owned(L, "store error: ", err, "?");
    }
    return 1;
}

/* core.put_reference{id=, service_url=, ...}: stores a reference the script learned (a created
 * conversation). Raises on misuse or a store error. */
static int core_put_reference(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    store_reference r = {0};
    r.id = lua_field_string(L, 1, "id");
    r.service_url = lua_field_string(L, 1, "service_url");
    luaL_argcheck(L, r.id && *r.id, 1, "reference needs 'id'");
    luaL_argcheck(L, r.service_url && *r.service_url, 1, "reference needs 'service_url'");
    r.type = lua_field_string(L, 1, "scope");
    r.tenant_id = lua_field_string(L, 1, "tenant");
    r.channel_id = lua_field_string(L, 1, "channel_id");
    r.bot_id = lua_field_string(L, 1, "bot_id");
    r.bot_name = lua_field_string(L, 1, "bot_name");
    r.user_id = lua_field_string(L, 1, "user_id");
    r.user_aad_id = lua_field_string(L, 1, "user_aad_object_id");
    r.user_name = lua_field_string(L, 1, "user_name");
    r.team_id = lua_field_string(L, 1, "team_id");
    r.team_name = lua_field_string(L, 1, "team_name");
    r.team_aad_group_id = lua_field_string(L, 1, "team_aad_group_id");
    r.team_channel_id = lua_field_string(L, 1, "team_channel_id");
    r.locale = lua_field_string(L, 1, "locale");
    r.timezone = lua_field_string(L, 1, "timezone");
    int run_hook = 0;
    char *err = NULL;
    runtime *rt = rt_of(L);
    char seal[65];
    if (send_policy_seal(rt, r.id, r.service_url, seal))
        r.service_url_seal = seal;
    if (store_put_reference(rt->store, &r, STORE_SIGNAL_NONE, clock_wall_ms(), 0, &run_hook,
                            &err) < 0) {
        return raise_owned(L, "store error: ", err, "?");
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- the blocked/gone ledger ----------------------------------------------------------------- */

static int ledger_one(const store_ledger_entry *e, void *ud)
{
    lua_State *L = ud;                          /* [... list] */
    lua_createtable(L, 0, 9);
    set_opt_field(L, "conversation", e->conversation_id);
    set_opt_field(L, "state", e->state);
    set_opt_field(L, "code", e->code);
    set_opt_field(L, "last_error", e->message);
    set_opt_field(L, "user_id", e->user_id);
    set_opt_field(L, "user_aad_object_id", e->user_aad_id);
    set_opt_field(L, "user_name", e->user_name);
    set_opt_field(L, "tenant", e->tenant_id);
    lua_pushinteger(L, e->since);
    lua_setfield(L, -2, "since");
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

/* core.ledger(state, tenant, since_ms, after, limit) → array of entries | nil, message, "store".
 * The Lua side checks the filter; this reads one page. */
static int core_ledger(lua_State *L)
{
    const char *state = luaL_optstring(L, 1, NULL);
    const char *tenant = luaL_optstring(L, 2, NULL);
    lua_Integer since = luaL_optinteger(L, 3, 0);
    const char *after = luaL_optstring(L, 4, NULL);
    lua_Integer limit = luaL_checkinteger(L, 5);
    luaL_argcheck(L, limit > 0 && limit <= 10000, 5, "limit must be 1..10000");
    lua_settop(L, 5);
    lua_createtable(L, (int)(limit < 64 ? limit : 64), 0);
    char *err = NULL;
    if (store_ledger_list(outbox_tables(rt_of(L)->outbox), state, tenant, since, after, (int)limit,
                          ledger_one, L, &err) < 0) {
        return push_fail(L, "store", err, "store error");
    }
    return 1;
}

/* ---- broadcasts and opt-outs ----------------------------------------------------------------- */

static broadcaster *bc_of(lua_State *L)
{
    broadcaster *b = rt_of(L)->broadcaster;
    if (!b)
        luaL_error(L, "broadcasts are not available");
    return b;
}

/* core.opt_out(subject, category, out) */
static int core_opt_out(lua_State *L)
{
    char *err = NULL;
    const char *subject = luaL_checkstring(L, 1), *category = luaL_optstring(L, 2, "*");
    int out = lua_toboolean(L, 3);
    outbox_touch_batch(rt_of(L)->outbox);
    if (store_opt_out_set(rt_of(L)->store, subject, category, out, clock_wall_ms(), &err) < 0) {
        return raise_owned(L, "opt-out: ", err, "store error");
    }
    return 0;
}

/* core.opted_out(conversation_or_user, category) → bool (a conversation counts its user too) */
static int core_opted_out(lua_State *L)
{
    const char *who = luaL_checkstring(L, 1);
    const char *cat = luaL_optstring(L, 2, "*");
    store_reference ref = {0};
    char *err = NULL;
    int found = store_get_reference(rt_of(L)->store, who, &ref, &err) == 1;
    free(err);
    int out = store_opt_out_check(rt_of(L)->store, who, found ? ref.user_id : NULL,
                                  found ? ref.user_aad_id : NULL, cat);
    store_reference_clear(&ref);
    lua_pushboolean(L, out);
    return 1;
}

/* A preparation as a Lua value, created closed (like liolib's newprefile) and then given its
 * broadcast_prep. One idempotent close serves p:close(), __close and __gc, so a creating task that
 * raises, is cancelled or is collected abandons its preparation instead of leaving it hanging. */
#define PREP_MT "herald.broadcast_prep"

typedef struct lprep {
    broadcast_prep *p;            /* NULL once closed (committed or abandoned) */
} lprep;

static lprep *check_prep(lua_State *L)
{
    lprep *lp = luaL_checkudata(L, 1, PREP_MT);
    if (!lp->p)
        luaL_error(L, "broadcast preparation already closed");
    return lp;
}

static int prep_close(lua_State *L)
{
    lprep *lp = luaL_checkudata(L, 1, PREP_MT);
    broadcast_prep_free(lp->p);
    lp->p = NULL;
    return 0;
}

/* core.broadcast_prepare(name, body, category, cap_max, cap_per_s, cap_drop, key) → preparation */
static int core_broadcast_prepare(lua_State *L)
{
    broadcast_spec spec = {.name = luaL_optstring(L, 1, NULL), .body = luaL_optstring(L, 2, NULL),
                           .category = luaL_optstring(L, 3, NULL),
                           .cap_max = (long)luaL_optinteger(L, 4, 0),
                           .cap_per_ms = (int64_t)(luaL_optnumber(L, 5, 0) * 1000),
                           .cap_drop = lua_toboolean(L, 6), .key = luaL_optstring(L, 7, NULL)};
    broadcaster *b = bc_of(L);
    lprep *lp = lua_newuserdatauv(L, sizeof *lp, 0);             /* [.. prep] */
    lp->p = NULL;
    luaL_setmetatable(L, PREP_MT);
    char *err = NULL;
    if (!(lp->p = broadcast_prepare(b, &spec, &err))) {
        return raise_owned(L, "", err, "store error");
    }
    return 1;
}

/* prep:add({ {conversation=, user=, tenant=, body=}, ... }) */
static int prep_add(lua_State *L)
{
    lprep *lp = check_prep(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)lua_rawlen(L, 2);
    broadcast_recipient *r = calloc((size_t)(n ? n : 1), sizeof *r);
    if (!r)
        return luaL_error(L, "out of memory");
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        int t = lua_gettop(L);
        if (lua_type(L, t) == LUA_TTABLE) {
            r[i].conversation_id = lua_field_string(L, t, "conversation");
            r[i].user_id = lua_field_string(L, t, "user");
            r[i].tenant_id = lua_field_string(L, t, "tenant");
            r[i].body = lua_field_string(L, t, "body");
            r[i].user_name = lua_field_string(L, t, "name");
            r[i].user_aad_id = lua_field_string(L, t, "aad_object_id");
        }
        lua_pop(L, 1);             /* the list keeps each entry (and its strings) alive */
    }
    char *err = NULL;
    int rc = broadcast_prep_add(lp->p, r, n, &err);
    free(r);
    if (rc < 0) {
        return raise_owned(L, "", err, "store error");
    }
    return 0;
}

/* prep:commit() → id | nil, message, "failed"; the preparation is closed either way */
static int prep_commit(lua_State *L)
{
    lprep *lp = check_prep(L);
    char *err = NULL;
    int64_t id = broadcast_prep_commit(lp->p, &err);
    broadcast_prep_free(lp->p);
    lp->p = NULL;
    if (id < 0) {
        return push_fail(L, "failed", err, "cannot start");
    }
    lua_pushinteger(L, id);
    return 1;
}

/* core.broadcast_find(key) → the id of the broadcast created under key, or nil */
static int core_broadcast_find(lua_State *L)
{
    int64_t id = broadcast_find_key(bc_of(L), luaL_checkstring(L, 1));
    if (id)
        lua_pushinteger(L, id);
    else
        lua_pushnil(L);
    return 1;
}

/* A refusal of broadcast control as nil, message, code: each reason its own code. */
static int push_broadcast_fail(lua_State *L, int rc, char *err)
{
    return push_fail(L, rc == BROADCAST_E_FINISHED   ? "finished"
                        : rc == BROADCAST_E_NO_MEMORY ? "no_memory"
                                                      : "not_found",
                     err, "cannot do that");
}

static int core_broadcast_control(lua_State *L)
{
    static const char *const actions[] = {"pause", "resume", "cancel", NULL};
    lua_Integer id = luaL_checkinteger(L, 1);
    const char *action = actions[luaL_checkoption(L, 2, NULL, actions)];
    char *err = NULL;
    int rc = broadcast_control(bc_of(L), id, action, &err);
    if (rc < 0)
        return push_broadcast_fail(L, rc, err);
    lua_pushboolean(L, 1);
    return 1;
}

static int core_broadcast_redo(lua_State *L)
{
    char *err = NULL;
    int n = broadcast_redo(bc_of(L), luaL_checkinteger(L, 1), luaL_optstring(L, 2, NULL), &err);
    if (n < 0)
        return push_broadcast_fail(L, n, err);
    lua_pushinteger(L, n);
    return 1;
}

static int core_broadcast_progress(lua_State *L)
{
    broadcast_progress p;
    if (!broadcast_get_progress(bc_of(L), luaL_checkinteger(L, 1), &p)) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 12);
    lua_pushstring(L, p.state);
    lua_setfield(L, -2, "state");
    lua_pushstring(L, p.name);
    lua_setfield(L, -2, "name");
    int64_t v[] = {p.total, p.pending, p.queued, p.sent, p.failed, p.blocked, p.not_found,
                   p.skipped, p.recalled, p.cancelled, p.capped};
    const char *k[] = {"total", "pending", "queued", "sent", "failed", "blocked", "not_found",
                       "skipped", "recalled", "cancelled", "capped"};
    for (int i = 0; i < 11; i++) {
        lua_pushinteger(L, v[i]);
        lua_setfield(L, -2, k[i]);
    }
    lua_pushnumber(L, p.rate);
    lua_setfield(L, -2, "rate");
    return 1;
}

/* ---- misc -------------------------------------------------------------------------------- */

static int core_set_dispatcher(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    vm_entry_set(vm_of(L), L, &vm_entries_of(vm_of(L))->dispatch);
    return 0;
}

/* core.set_notify(handlers, dispatch) */
static int core_set_notify(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    vm_entry_set(vm_of(L), L, &vm_entries_of(vm_of(L))->notify_dispatch);
    vm_entry_set(vm_of(L), L, &vm_entries_of(vm_of(L))->notify_handlers);
    return 0;
}

static int core_set_hooks(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    vm_entry_set(vm_of(L), L, &vm_entries_of(vm_of(L))->hooks);
    return 0;
}

static int core_log(lua_State *L)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    int level = luaL_checkoption(L, 1, "info", levels);
    const char *msg = luaL_checkstring(L, 2);
    log_at((enum log_level)level, "script: %s", msg);
    return 0;
}

/* where(fn) → "file:line" where a Lua function is defined, or nil for a C function: warnings
 * about a script's handler name it (the script has no debug library). */
static int core_where(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_Debug ar;
    lua_pushvalue(L, 1);                                       /* [fn ... fn] */
    if (!lua_getinfo(L, ">S", &ar) || ar.what[0] == 'C')       /* [fn ...] */
        return 0;
    lua_pushfstring(L, "%s:%d", ar.short_src, ar.linedefined);
    return 1;
}

static int core_now_ms(lua_State *L)
{
    lua_pushinteger(L, clock_wall_ms());
    return 1;
}

static int core_config(lua_State *L)
{
    runtime *rt = rt_of(L);
    lua_createtable(L, 0, 4);
    lua_pushboolean(L, rt->cfg->dev);
    lua_setfield(L, -2, "dev");
    if (rt->cfg->app_id) {
        lua_pushstring(L, rt->cfg->app_id);
        lua_setfield(L, -2, "app_id");
    }
    if (rt->cfg->tenant_id) {
        lua_pushstring(L, rt->cfg->tenant_id);
        lua_setfield(L, -2, "tenant_id");
    }
    return 1;
}

static const luaL_Reg core_funcs[] = {
    {"broadcast_control", core_broadcast_control},
    {"broadcast_find", core_broadcast_find},
    {"broadcast_prepare", core_broadcast_prepare},
    {"broadcast_progress", core_broadcast_progress},
    {"broadcast_redo", core_broadcast_redo},
    {"config", core_config},
    {"create", core_create},
    {"delete", core_delete},
    {"encode_id", core_encode_id},
    {"find_channel", core_find_channel},
    {"find_tenant", core_find_tenant},
    {"find_user", core_find_user},
    {"get", core_get},
    {"get_reference", core_get_reference},
    {"ledger", core_ledger},
    {"list", core_list},
    {"log", core_log},
    {"now_ms", core_now_ms},
    {"opt_out", core_opt_out},
    {"opted_out", core_opted_out},
    {"put_reference", core_put_reference},
    {"send", core_send},
    {"set_dispatcher", core_set_dispatcher},
    {"set_hooks", core_set_hooks},
    {"set_notify", core_set_notify},
    {"sleep", core_sleep},
    {"update", core_update},
    {"where", core_where},
    {NULL, NULL},
};

static const luaL_Reg prep_methods[] = {
    {"add", prep_add},
    {"close", prep_close},
    {"commit", prep_commit},
    {NULL, NULL},
};

static int luaopen_herald_core(lua_State *L)
{
    if (luaL_newmetatable(L, PREP_MT)) {                         /* [mt] */
        luaL_newlib(L, prep_methods);                            /* [mt methods] */
        lua_setfield(L, -2, "__index");                          /* [mt] */
        lua_pushcfunction(L, prep_close);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, prep_close);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "locked");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);                                               /* [] */
    luaL_newlib(L, core_funcs);
    return 1;
}

void lua_teams_install(vm *v)
{
    lua_State *L = vm_state(v);
    lua_timer_install(v);
    lua_schedule_install(v);
    lua_util_preload(L, "herald.core", luaopen_herald_core);
    /* a private cjson instance decodes inbound bodies, so a script's cjson settings never
     * change how activities are parsed */
    luaopen_cjson(L);                                            /* [cjson] */
    lua_getfield(L, -1, "decode");                               /* [cjson decode] */
    vm_entry_set(v, L, &vm_entries_of(v)->decode);               /* [cjson] */
    lua_pop(L, 1);                                               /* [] */
}
