/* lua_inbound.c — the script side of POST /api/messages: an activity activity.c accepted becomes
 * a table in the live generation and runs as a task, answered when the task ends or at the
 * response deadline; and POST /api/notify/{name}, decoded (cjson) in the generation's state. */
#include "lua_inbound.h"
#include "activity.h"
#include "clock.h"
#include "config.h"
#include "http_server.h"
#include "log.h"
#include "notify_auth.h"
#include "notify_ops.h"
#include "redelivery.h"
#include "runtime.h"
#include "store.h"
#include "task.h"
#include "vm.h"
#include "quarantine.h"

#include <event2/event.h>
#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One accepted-or-refused activity. Its task starts at once but waits in the gate until the batch
 * holding its reference commits: only then is it accepted (recorded as seen, run, answered 200 at
 * the latest by the response deadline); a batch that fails refuses it with 503 so Teams sends it
 * again, and an activity refused for any reason is never recorded as seen. */
struct inbound {
    runtime *rt;
    http_exchange *x;             /* NULL once answered */
    struct event *deadline;
    int invoke;
    int activity;                 /* registry ref of the script's copy until the task takes it */
    const char *label;            /* the task's name, by activity type */
    task *t;
    store_waiter waiter;          /* the commit of the reference */
    const char *hook;             /* "install" | "uninstall" | NULL: what dispatch runs */
    int zone_unknown;             /* its time zone is not one the system knows: ev.timezone nil */
    const char *refused;          /* cancelled before it ran: answered 503 with this reason */
    int redelivered;              /* cancelled before it ran: a copy was accepted in the same batch */
    char conversation[160];       /* for log lines */
    char *conv_id, *activity_id;  /* the redelivery key, in the allocation after this struct */
};

static void reply_error(runtime *rt, http_exchange *x, int status, const char *reason)
{
    activity_refuse(rt, x, status, reason, NULL);
}

/* Decodes a JSON body into the generation's state: pushes the value (LUA_OK) or a message (an
 * error code). cjson is library code, but what it allocates lives in the script's heap, so it runs
 * inside a slice: the collector runs only in slices (vm.c), so garbage from bodies that never
 * reach a script is collected here, and a collection the script's heap makes slow is the
 * watchdog's to see. The memory cap applies too: LUA_ERRMEM means "retry later", not bad JSON. */
static int decode_body(runtime *rt, const char *body, size_t len)
{
    lua_State *L = vm_state(rt->vm);
    vm_slice saved;
    vm_entry_push(L, vm_entries_of(rt->vm)->decode);
    lua_pushlstring(L, body, len);
    vm_slice_enter(rt->vm, L, vm_cfg(rt->vm)->slice_ms, "host\tdecode", &saved);
    int rc = lua_pcall(L, 1, 1, 0);
    vm_slice_leave(rt->vm, &saved);
    return rc;
}


/* An answer held until what its handler wrote is durable: a caller told "done" (Teams' 200, a
 * notify result listing what was sent) must not lose that work to a crash a moment later. The
 * batch of the current loop turn commits at the end of the turn, so the wait is short, unless the
 * commit fails: the store then keeps the batch's writes and replays them when it recovers
 * (store.h), and the answer is parked until then, since a kill -9 before the replay loses those
 * writes (the fault suite, tests/integration/jepsen.py, lost fire-and-forget sends whose
 * operation ids a notify answer had reported that way). Answering 503 instead would be wrong the
 * other way: the writes go out after the recovery. */
typedef struct held_answer {
    store_waiter w;               /* first: the waiter is the answer */
    runtime *rt;
    http_exchange *x;
    int status;
    const char *type;
    int parked;                   /* its batch failed: waits for inbound_store_recovered */
    struct held_answer *prev, *next;
    size_t len;
    char body[];
} held_answer;

static void held_unlink(held_answer *h)
{
    if (h->prev) h->prev->next = h->next; else h->rt->held = h->next;
    if (h->next) h->next->prev = h->prev;
}

static void held_send(held_answer *h)
{
    held_unlink(h);
    http_exchange_reply(h->x, h->status, h->type, h->len ? h->body : NULL, h->len);
    free(h);
}

static void on_answer_committed(store_waiter *w, int committed)
{
    held_answer *h = (held_answer *)(void *)w;
    if (committed)
        held_send(h);
    else
        h->parked = 1;
}

static void reply_durable(runtime *rt, http_exchange *x, int status, const char *type,
                          const char *body, size_t len)
{
    /* degraded with writes kept: this handler's may be among them (it may have yielded since) */
    int kept = !store_writable(rt->store) && store_kept_writes(rt->store) > 0;
    held_answer *h = store_in_batch(rt->store) || kept ? calloc(1, sizeof *h + len + 1) : NULL;
    if (!h) {
        http_exchange_reply(x, status, type, body, len);
        return;
    }
    h->rt = rt;
    h->x = x;
    h->status = status;
    h->type = type;
    h->len = body ? len : 0;
    if (h->len)
        memcpy(h->body, body, len);
    h->next = rt->held;
    if (rt->held)
        rt->held->prev = h;
    rt->held = h;
    h->w.fn = on_answer_committed;
    if (store_in_batch(rt->store))
        store_wait_commit(rt->store, &h->w);
    else
        h->parked = 1;
}

void inbound_store_recovered(void *arg)
{
    runtime *rt = arg;
    held_answer *next;
    for (held_answer *h = rt->held; h; h = next) {
        next = h->next;
        if (h->parked)
            held_send(h);
    }
}

void inbound_release_answers(void *arg)
{
    runtime *rt = arg;
    while (rt->held) {
        held_answer *h = rt->held;
        store_unwait(rt->store, &h->w);
        if (h->parked && !store_writable(rt->store)) {
            /* its writes go with this process (logged at exit): not "done" */
            static const char body[] = "{\"error\":\"storage unavailable\"}";
            held_unlink(h);
            http_exchange_reply(h->x, 503, "application/json; charset=utf-8", body, sizeof body - 1);
            free(h);
            continue;
        }
        held_send(h);
    }
}

static void answer(inbound *ib, int status, const char *body, size_t len)
{
    if (!ib->x)
        return;
    reply_durable(ib->rt, ib->x, status, body ? "application/json; charset=utf-8" : NULL, body, len);
    ib->x = NULL;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    inbound *ib = arg;
    if (ib->invoke)
        log_warn("invoke handler still running at the response deadline; answered 200 without a "
                 "body conversation=%s", ib->conversation);
    answer(ib, 200, NULL, 0);
}

static void on_task_done(task *t, enum task_status status, int nres, const char *message, void *ud)
{
    inbound *ib = ud;
    runtime *rt = ib->rt;
    if (status == TASK_CANCELLED && ib->redelivered) {
        rt->redelivered++;
        log_info("redelivered activity acknowledged, not run again conversation=%s id=%s",
                 ib->conversation, ib->activity_id);
        answer(ib, 200, NULL, 0);
    } else if (status == TASK_CANCELLED && ib->refused) {
        char body[96];
        int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}", ib->refused);
        answer(ib, 503, body, (size_t)n);
    } else if (status == TASK_ERROR) {
        rt->handler_errors++;
        log_error("handler failed task=%s conversation=%s error=%s", task_label(t), ib->conversation,
                  message);
        answer(ib, ib->invoke ? 500 : 200, ib->invoke ? "{\"error\":\"handler failed\"}" : NULL,
               ib->invoke ? 26 : 0);
    } else if (status == TASK_CANCELLED) {
        log_warn("handler cancelled task=%s conversation=%s reason=%s", task_label(t),
                 ib->conversation, message);
        answer(ib, 503, NULL, 0);
    } else if (ib->invoke && nres >= 2) {
        /* the dispatcher returns (status, json) for invokes */
        lua_State *T = task_thread(t);
        int code = (int)lua_tointeger(T, -nres);
        size_t len = 0;
        const char *body = lua_tolstring(T, -nres + 1, &len);
        answer(ib, code >= 200 && code <= 599 ? code : 200, body, body ? len : 0);
    } else {
        answer(ib, 200, NULL, 0);
    }
    if (ib->deadline)
        clock_timer_free(ib->deadline);
    free(ib);
}

static const char *label_for(const char *type, const char *hook)
{
    if (hook)
        return strcmp(hook, "install") == 0 ? "install" : "uninstall";
    if (strcmp(type, "message") == 0) return "message";
    if (strcmp(type, "invoke") == 0) return "invoke";
    if (strcmp(type, "conversationUpdate") == 0) return "conversationUpdate";
    if (strcmp(type, "installationUpdate") == 0) return "installationUpdate";
    return "activity";
}


/* ---- the commit gate ------------------------------------------------------------------------ */

static void gate_cancel(void *op)
{
    inbound *ib = op;
    store_unwait(ib->rt->store, &ib->waiter);   /* on_task_done answers and frees ib */
}

/* The gate's result: the hook dispatch runs. A NULL L is a cancel while ready; ib is not ours. */
static int push_hook(lua_State *L, void *op)
{
    inbound *ib = op;
    if (!L)
        return 0;
    if (ib->hook)
        lua_pushstring(L, ib->hook);
    else
        lua_pushnil(L);
    lua_pushboolean(L, ib->zone_unknown);
    return 2;
}

/* gate(ib) → hook, zone_unknown: yields until the batch holding the activity's reference has committed. */
static int inbound_gate(lua_State *L)
{
    inbound *ib = lua_touserdata(L, 1);
    task_check(L, "the inbound gate");
    return task_yield(L, ib, gate_cancel);
}

static void on_reference_committed(store_waiter *w, int committed)
{
    inbound *ib = (inbound *)(void *)((char *)w - offsetof(inbound, waiter));
    runtime *rt = ib->rt;
    if (!committed) {
        log_warn("activity refused with 503: its conversation could not be stored; Teams will "
                 "send it again conversation=%s", ib->conversation);
        ib->refused = "storage unavailable";
        task_cancel(ib->t, "the conversation could not be stored");
        return;
    }
    if (ib->activity_id && redelivery_check(rt->seen, ib->conv_id, ib->activity_id, vm_now_ms(),
                                            (int64_t)rt->cfg->redelivery_window_s * 1000)) {
        ib->redelivered = 1;      /* two copies in one batch: the first one runs */
        task_cancel(ib->t, "redelivered");
        return;
    }
    rt->activities++;
    ib->deadline = evtimer_new(rt->base, on_deadline, ib);
    if (ib->deadline)
        clock_timer_add(ib->deadline, rt->cfg->response_deadline_ms);
    else
        answer(ib, 200, NULL, 0);
    task_wake(ib->t, push_hook, ib);
}

/* Pushes the task body: function(ib, dispatch, activity) that passes the gate, then runs
 * dispatch(activity, hook) (nothing when the script never required "teams"). Made once per
 * generation's state. Returns 0 (nothing pushed) when it cannot be made. */
static int push_gated(lua_State *L)
{
    if (vm_entry_push(L, vm_entries_of(vm_of(L))->gated_dispatch) == LUA_TFUNCTION)
        return 1;
    lua_pop(L, 1);
    static const char chunk[] =
        "local gate = ...\n"
        "return function(ib, dispatch, activity)\n"
        "  local hook, zone_unknown = gate(ib)\n"
        "  if dispatch then return dispatch(activity, hook, zone_unknown) end\n"
        "end\n";
    if (luaL_loadbufferx(L, chunk, sizeof chunk - 1, "=herald.inbound", "t") != LUA_OK) {
        lua_pop(L, 1);
        return 0;
    }
    lua_pushcfunction(L, inbound_gate);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_pop(L, 1);
        return 0;
    }
    lua_pushvalue(L, -1);
    vm_entry_set(vm_of(L), L, &vm_entries_of(vm_of(L))->gated_dispatch);
    return 1;
}

/* ---- the handoff from activity.c ------------------------------------------------------------ */

/* Pushes v as lua-cjson decodes it, so handlers see what they always saw: objects and arrays as
 * tables, numbers as floats, null as cjson.null (a NULL light userdata). activity.c bounds the
 * depth (one C frame per level). Raises on memory. */
static void push_json(lua_State *L, const json_t *v)
{
    size_t i;
    const char *k;
    json_t *m;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        luaL_checkstack(L, 3, "activity nested too deep");
        lua_createtable(L, 0, json_object_size(v) < 1024 ? (int)json_object_size(v) : 1024);
        json_object_foreach((json_t *)v, k, m) {
            lua_pushstring(L, k);              /* jansson refuses a NUL in a key */
            push_json(L, m);
            lua_rawset(L, -3);
        }
        break;
    case JSON_ARRAY:
        luaL_checkstack(L, 2, "activity nested too deep");
        lua_createtable(L, json_array_size(v) < 1u << 20 ? (int)json_array_size(v) : 1 << 20, 0);
        json_array_foreach((json_t *)v, i, m) {
            push_json(L, m);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        lua_pushnumber(L, (lua_Number)json_integer_value(v));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(v));
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        lua_pushboolean(L, json_is_true(v));
        break;
    default:
        lua_pushlightuserdata(L, NULL);
        break;
    }
}

/* (vm, doc) → ref of the script's copy of doc, made in protected mode: the memory cap applies. */
static int ref_activity(lua_State *L)
{
    vm *v = lua_touserdata(L, 1);
    const json_t *doc = lua_touserdata(L, 2);
    push_json(L, doc);
    lua_pushinteger(L, vm_ref(v, L));
    return 1;
}

inbound *inbound_prepare(runtime *rt, http_exchange *x, const accepted_activity *a)
{
    size_t clen = strlen(a->conversation) + 1, alen = a->id ? strlen(a->id) + 1 : 0;
    inbound *ib = calloc(1, sizeof *ib + clen + alen);
    if (!ib) {
        reply_error(rt, x, 503, "out of memory");
        return NULL;
    }
    /* The tree jansson already holds becomes the table, rather than the text being decoded a
     * second time. What it allocates lives in the script's heap, so it runs inside a slice: the
     * collector runs only in slices (vm.c), and a collection the script's heap makes slow is the
     * watchdog's to see. The memory cap applies too: it means "retry later", not a bad activity. */
    lua_State *L = vm_state(rt->vm);
    int top = lua_gettop(L);
    vm_slice saved;
    lua_pushcfunction(L, ref_activity);
    lua_pushlightuserdata(L, rt->vm);
    lua_pushlightuserdata(L, (void *)a->doc);
    vm_slice_enter(rt->vm, L, vm_cfg(rt->vm)->slice_ms, "host\tdecode", &saved);
    int rc = lua_pcall(L, 2, 1, 0);
    vm_slice_leave(rt->vm, &saved);
    if (rc != LUA_OK) {
        if (rc != LUA_ERRMEM)
            log_error("cannot hand an activity to the script conversation=%s error=%s",
                      a->conversation, lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_settop(L, top);
        free(ib);
        reply_error(rt, x, 503, rc == LUA_ERRMEM ? "out of memory" : "too busy");
        return NULL;
    }
    ib->activity = (int)lua_tointeger(L, -1);
    lua_settop(L, top);
    ib->rt = rt;
    ib->x = x;
    ib->invoke = strcmp(a->type, "invoke") == 0;
    ib->label = label_for(a->type, NULL);
    ib->waiter.fn = on_reference_committed;
    ib->conv_id = (char *)(ib + 1);
    memcpy(ib->conv_id, a->conversation, clen);
    if (a->id) {
        ib->activity_id = ib->conv_id + clen;
        memcpy(ib->activity_id, a->id, alen);
    }
    snprintf(ib->conversation, sizeof ib->conversation, "%s", a->conversation);
    return ib;
}

void inbound_discard(inbound *ib)
{
    vm_unref(ib->rt->vm, ib->activity);
    free(ib);
}

void inbound_start(inbound *ib, const char *hook, int zone_unknown, const char *culprit)
{
    runtime *rt = ib->rt;
    lua_State *L = vm_state(rt->vm);
    int top = lua_gettop(L);
    ib->hook = hook;
    ib->zone_unknown = zone_unknown;
    if (!push_gated(L)) {
        reply_error(rt, ib->x, 503, "out of memory");
        inbound_discard(ib);
        return;
    }
    lua_pushlightuserdata(L, ib);
    if (vm_entry_push(L, vm_entries_of(rt->vm)->dispatch) != LUA_TFUNCTION) {
        log_debug("no dispatcher: the script never required \"teams\"");
        lua_pop(L, 1);
        lua_pushnil(L);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, ib->activity);   /* [gated ib dispatch activity] */
    vm_unref(rt->vm, ib->activity);
    ib->activity = LUA_NOREF;
    task_blame(rt->vm, "activity", culprit);
    int started;
    char *err = NULL;
    task *t = task_spawn(rt->vm, hook ? label_for(NULL, hook) : ib->label, 3, on_task_done, ib,
                         &started, &err);
    lua_settop(L, top);
    if (!started) {
        /* rare past activity.c's check (out of memory); the stored reference stays */
        log_error("cannot start a handler conversation=%s error=%s", ib->conversation,
                  err ? err : "?");
        free(err);
        reply_error(rt, ib->x, 503, "too busy");
        free(ib);
        return;
    }
    if (!t)
        return;                   /* the gate failed at once: on_task_done has answered */
    ib->t = t;
    store_wait_commit(rt->store, &ib->waiter);
}


/* ---- POST /api/notify/{name} --------------------------------------------------------------- */

/* Answers a refused trigger: 401 with the reason, or 429 when the replay cache is full. */
static void notify_refuse(runtime *rt, http_exchange *x, const char *name, enum notify_verdict v,
                          const char *reason, long retry_s)
{
    char body[512];
    int n;
    if (v == NOTIFY_FULL) {
        rt->rejected++;
        n = snprintf(body, sizeof body, "{\"error\":\"too many requests\",\"reason\":\"%s\","
                     "\"retry_after\":%ld}", reason, retry_s);
    } else {
        rt->unauthorized++;
        n = snprintf(body, sizeof body, "{\"error\":\"unauthorized\",\"reason\":\"%s\"}", reason);
    }
    log_warn("notify %s refused: %s", name, reason);
    http_exchange_reply(x, v == NOTIFY_FULL ? 429 : 401, "application/json; charset=utf-8", body,
                        (size_t)(n < (int)sizeof body ? n : (int)sizeof body - 1));
}

typedef struct notify_call {
    runtime *rt;
    http_exchange *x;
    struct event *deadline;
    uint64_t id;
    int kept;                     /* answered 202: its result goes to rt->notify_ops */
    char name[65];
} notify_call;

/* Operation ids start from the start time's unix seconds times 2^20, so an id a process before a
 * restart gave is not given again (a GET for it is a 404, never another operation's result), and
 * they stay below 2^53 for JavaScript callers. */
static uint64_t notify_seq;

static uint64_t notify_next_id(void)
{
    if (!notify_seq)
        notify_seq = (uint64_t)(clock_wall_ms() / 1000) << 20;
    return ++notify_seq;
}

static void notify_answer(notify_call *n, int status, const char *body)
{
    if (!n->x)
        return;
    reply_durable(n->rt, n->x, status, "application/json; charset=utf-8", body, strlen(body));
    n->x = NULL;
}

static void on_notify_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    notify_call *n = arg;
    char body[96];
    snprintf(body, sizeof body, "{\"status\":\"accepted\",\"operation\":%llu}",
             (unsigned long long)n->id);
    log_info("notify %s still running at the response deadline: answered 202 operation=%llu",
             n->name, (unsigned long long)n->id);
    /* kept before the answer goes: a caller may GET it as soon as it reads the 202 */
    n->kept = n->rt->notify_ops && notify_ops_begin(n->rt->notify_ops, n->id, n->name) == 0;
    notify_answer(n, 202, body);
}

static void on_notify_done(task *t, enum task_status status, int nres, const char *message,
                           void *ud)
{
    notify_call *n = ud;
    notify_ops *ops = n->kept ? n->rt->notify_ops : NULL;
    int64_t now = clock_wall_ms();
    if (status == TASK_ERROR) {
        n->rt->handler_errors++;
        log_error("notify handler failed trigger=%s operation=%llu error=%s", n->name,
                  (unsigned long long)n->id, message);
        notify_answer(n, 500, "{\"error\":\"handler failed\"}");
        if (ops)   /* the message stays in the log, as for the 500 */
            notify_ops_finish(ops, n->id, "failed", NULL, "handler failed", now);
    } else if (status == TASK_CANCELLED) {
        notify_answer(n, 503, "{\"error\":\"cancelled\"}");
        if (ops)
            notify_ops_finish(ops, n->id, "cancelled", NULL, "cancelled", now);
    } else {
        /* the dispatcher returns the handler's result encoded as JSON */
        const char *json = nres >= 1 ? lua_tostring(task_thread(t), -nres) : NULL;
        if (!n->x)
            log_info("notify %s finished operation=%llu", n->name, (unsigned long long)n->id);
        notify_answer(n, 200, json ? json : "null");
        if (ops)
            notify_ops_finish(ops, n->id, "done", json ? json : "null", NULL, now);
    }
    if (n->deadline)
        clock_timer_free(n->deadline);
    free(n);
}

/* Who may run trigger name (POST, signed_text = the body) or read one of its operations (GET): the
 * trigger's secret, one rule for both; answers x (401/404/429) and returns 0 when refused. A GET's
 * signature covers timestamp "." "GET /api/notify/operations/" id (a GET has no body; the method
 * and path make it one for this operation only, never a body some trigger accepts). */
static int notify_authorized(runtime *rt, http_exchange *x, const char *name, const char *signed_text,
                             size_t len)
{
    const char *secret;
    char var[sizeof "HERALD_NOTIFY_SECRET_" + NOTIFY_NAME_MAX];
    if (notify_auth_secret(name, &secret, var, sizeof var) < 0) {
        reply_error(rt, x, 404, "no such trigger");
        return 0;
    }
    if (secret) {
        const char *reason = "?";
        long retry_s = 0;
        enum notify_verdict v = notify_auth_check(
            rt->notify, secret, http_exchange_header(x, "X-Herald-Signature"),
            http_exchange_header(x, "X-Herald-Timestamp"), http_exchange_header(x, "Authorization"),
            signed_text, len, clock_wall_ms() / 1000, &reason, &retry_s);
        if (v != NOTIFY_OK) {
            notify_refuse(rt, x, name, v, reason, retry_s);
            return 0;
        }
    } else if (!rt->cfg->dev) {
        char reason[160];
        snprintf(reason, sizeof reason, "no secret configured: set %s or HERALD_NOTIFY_SECRET", var);
        notify_refuse(rt, x, name, NOTIFY_DENIED, reason, 0);
        return 0;
    }
    return 1;
}

void notify_operation_request(http_exchange *x, const char *id, void *arg)
{
    runtime *rt = arg;
    uint64_t n = strtoull(id, NULL, 10);
    const notify_op *op = rt->notify_ops ? notify_ops_get(rt->notify_ops, n, clock_wall_ms()) : NULL;
    if (!op) {
        /* an id says nothing secret (they count up), so this 404 needs no credentials */
        reply_error(rt, x, 404, "no such operation (unknown, expired, or from before a restart)");
        return;
    }
    char name[sizeof op->name], signed_text[64];
    snprintf(name, sizeof name, "%s", op->name);
    int len = snprintf(signed_text, sizeof signed_text, "GET /api/notify/operations/%s", id);
    if (!notify_authorized(rt, x, name, signed_text, (size_t)len))
        return;
    op = notify_ops_get(rt->notify_ops, n, clock_wall_ms());
    if (!op) {
        reply_error(rt, x, 404, "no such operation (unknown, expired, or from before a restart)");
        return;
    }
    json_error_t jerr;
    json_t *result = op->result ? json_loads(op->result, JSON_DECODE_ANY, &jerr) : NULL;
    json_t *doc = json_pack("{s:I, s:s, s:s}", "operation", (json_int_t)op->id, "trigger", op->name,
                            "state", op->state);
    if (doc && op->result)
        json_object_set_new(doc, "result", result ? result : json_null());
    else
        json_decref(result);
    if (doc && op->error)
        json_object_set_new(doc, "error", json_string(op->error));
    char *body = doc ? json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(doc);
    if (!body) {
        reply_error(rt, x, 503, "out of memory");
        return;
    }
    int running = op->finished_ms == 0;
    http_exchange_reply(x, running ? 202 : 200, "application/json; charset=utf-8", body, strlen(body));
    free(body);
}

void notify_request(http_exchange *x, const char *name, const char *body, size_t len, void *arg)
{
    runtime *rt = arg;
    lua_State *L = vm_state(rt->vm);
    int top = lua_gettop(L);
    if (rt->stopping) {
        reply_error(rt, x, 503, "shutting down");
        return;
    }
    if (rt->script_quarantined) {
        reply_error(rt, x, 503, "the script is quarantined");
        return;
    }
    /* a name outside the trigger alphabet can never be registered, so its 404 says nothing about
       which triggers exist; every other name is authenticated first */
    if (!notify_authorized(rt, x, name, body, len))
        return;
    int known = 0;
    if (vm_entry_push(L, vm_entries_of(rt->vm)->notify_handlers) == LUA_TTABLE)
        known = lua_getfield(L, -1, name) == LUA_TFUNCTION;
    lua_settop(L, top);
    if (!known) {
        reply_error(rt, x, 404, "no such trigger");
        return;
    }
    if (!activity_valid_utf8((const unsigned char *)body, len)) {
        reply_error(rt, x, 400, "malformed JSON: invalid UTF-8");
        return;
    }
    char culprit[QUARANTINE_KEY_MAX], digest[65];
    if (quarantine_hash(body, len, digest) < 0)
        digest[0] = 0;
    snprintf(culprit, sizeof culprit, "%s %s", name, digest);
    long long since = quarantine_since(vm_script_hash(rt->vm), "notify", culprit);
    if (since) {
        log_warn("notify %s not run: this payload stalled the host before and is quarantined "
                 "(since unix ms %lld) until the script changes", name, since);
        reply_error(rt, x, 422, "quarantined: this payload stalled the host before");
        return;
    }
    if (vm_entry_push(L, vm_entries_of(rt->vm)->notify_dispatch) != LUA_TFUNCTION) {
        lua_settop(L, top);
        reply_error(rt, x, 404, "no such trigger");
        return;
    }
    lua_pushstring(L, name);
    if (len) {
        int drc = decode_body(rt, body, len);
        if (drc != LUA_OK) {
            lua_settop(L, top);
            reply_error(rt, x, drc == LUA_ERRMEM ? 503 : 400,
                        drc == LUA_ERRMEM ? "out of memory" : "malformed JSON");
            return;
        }
    } else {
        lua_pushnil(L);                        /* [dispatch name payload] */
    }
    notify_call *n = calloc(1, sizeof *n);
    if (!n) {
        lua_settop(L, top);
        reply_error(rt, x, 503, "out of memory");
        return;
    }
    n->rt = rt;
    n->x = x;
    n->id = notify_next_id();
    snprintf(n->name, sizeof n->name, "%s", name);
    int started;
    char *err = NULL;
    task_blame(rt->vm, "notify", culprit);
    task *t = task_spawn(rt->vm, "notify", 2, on_notify_done, n, &started, &err);
    lua_settop(L, top);
    if (!started) {
        log_error("cannot start a notify handler: %s", err ? err : "?");
        free(err);
        reply_error(rt, x, 503, "too busy");
        free(n);
        return;
    }
    if (t && (n->deadline = evtimer_new(rt->base, on_notify_deadline, n)))
        clock_timer_add(n->deadline, rt->cfg->response_deadline_ms);
}
