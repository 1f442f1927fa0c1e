/* lua_inbound.c — one POST /api/messages: decode (cjson, in the generation's state), validate,
 * drop redeliveries, store the conversation reference, run the dispatcher as a task, and answer
 * when the task ends or at the response deadline, whichever comes first. */
#include "lua_inbound.h"
#include "auth_in.h"
#include "clock.h"
#include "config.h"
#include "http_server.h"
#include "log.h"
#include "notify_auth.h"
#include "notify_ops.h"
#include "outbox.h"
#include "redelivery.h"
#include "runtime.h"
#include "scheduler.h"
#include "store.h"
#include "task.h"
#include "trust.h"
#include "tz.h"
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
#include <strings.h>

/* One accepted-or-refused activity. Its task starts at once but waits in the gate until the batch
 * holding its reference commits: only then is it accepted (recorded as seen, run, answered 200 at
 * the latest by the response deadline); a batch that fails refuses it with 503 so Teams sends it
 * again, and an activity refused for any reason is never recorded as seen. */
typedef struct inbound {
    runtime *rt;
    http_exchange *x;             /* NULL once answered */
    struct event *deadline;
    int invoke;
    task *t;
    store_waiter waiter;          /* the commit of the reference */
    const char *hook;             /* "install" | "uninstall" | NULL: what dispatch runs */
    int zone_unknown;             /* its time zone is not one the system knows: ev.timezone nil */
    const char *refused;          /* cancelled before it ran: answered 503 with this reason */
    int redelivered;              /* cancelled before it ran: a copy was accepted in the same batch */
    char conversation[160];       /* for log lines */
    char *conv_id, *activity_id;  /* the redelivery key, in the allocation after this struct */
} inbound;

/* An activity whose token names a key we are fetching: kept whole and run again when the keys
 * arrive (the body is copied because the server reuses its buffer). */
struct pending_auth {
    runtime *rt;
    http_exchange *x;
    char *body;
    size_t len;
    pending_auth *next;
};

/* Answers status with {"error": reason} and, for a malformed activity, "field": the JSON path
 * of the field at fault ("from.id"). */
static void reply_refusal(runtime *rt, http_exchange *x, int status, const char *reason,
                          const char *field)
{
    char body[512];
    /* reasons and field names are ours (never echo client bytes): no JSON escaping needed */
    int n = field ? snprintf(body, sizeof body, "{\"error\":\"%s\",\"field\":\"%s\"}", reason, field)
                  : snprintf(body, sizeof body, "{\"error\":\"%s\"}", reason);
    if (status >= 400 && status < 500)
        rt->rejected++;
    http_exchange_reply(x, status, "application/json; charset=utf-8", body,
                        (size_t)(n < (int)sizeof body ? n : (int)sizeof body - 1));
}

static void reply_error(runtime *rt, http_exchange *x, int status, const char *reason)
{
    reply_refusal(rt, x, status, reason, NULL);
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

/* RFC 8259 wants UTF-8 and lua-cjson 2.1 passes any bytes through, so malformed sequences are
 * refused here: overlong forms, surrogates and code points past U+10FFFF included. */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return 0;
        if (i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

/* t[k1][k2]... as a non-empty string without NUL bytes, or NULL. The string stays alive while the
 * table on the stack holds it. Net stack effect: 0. */
static const char *get_str(lua_State *L, int t, const char *k1, const char *k2, const char *k3)
{
    const char *keys[3] = {k1, k2, k3};
    int top = lua_gettop(L);
    lua_pushvalue(L, t);
    const char *s = NULL;
    for (int i = 0; i < 3 && keys[i]; i++) {
        if (lua_type(L, -1) != LUA_TTABLE)
            goto out;
        lua_getfield(L, -1, keys[i]);
    }
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t len;
        s = lua_tolstring(L, -1, &len);
        /* "\u0000" decodes to a NUL: C would read a shorter id than the script sees */
        if (!*s || strlen(s) != len)
            s = NULL;
    }
out:
    lua_settop(L, top);
    return s;
}

/* The fields herald or the teams module read, and what each must be when present (JSON null
 * counts as absent). A field of the wrong type was silently read as missing: a numeric "text"
 * reached the handler as "", a numeric "from.id" stored a reference without its user. Checked in
 * order, so a container is checked before its members. cjson decodes arrays and objects alike
 * as tables: "array" accepts any table whose keys are 1..n. */
enum field_kind { F_STRING, F_OBJECT, F_ARRAY };
static const struct activity_field {
    const char *path;             /* for the answer */
    const char *k[3];
    enum field_kind kind;
} activity_fields[] = {
    {"type", {"type"}, F_STRING},
    {"id", {"id"}, F_STRING},
    {"serviceUrl", {"serviceUrl"}, F_STRING},
    {"channelId", {"channelId"}, F_STRING},
    {"conversation", {"conversation"}, F_OBJECT},
    {"conversation.id", {"conversation", "id"}, F_STRING},
    {"conversation.conversationType", {"conversation", "conversationType"}, F_STRING},
    {"conversation.tenantId", {"conversation", "tenantId"}, F_STRING},
    {"text", {"text"}, F_STRING},
    {"name", {"name"}, F_STRING},
    {"action", {"action"}, F_STRING},
    {"replyToId", {"replyToId"}, F_STRING},
    {"locale", {"locale"}, F_STRING},
    {"localTimezone", {"localTimezone"}, F_STRING},
    {"from", {"from"}, F_OBJECT},
    {"from.id", {"from", "id"}, F_STRING},
    {"from.name", {"from", "name"}, F_STRING},
    {"from.aadObjectId", {"from", "aadObjectId"}, F_STRING},
    {"recipient", {"recipient"}, F_OBJECT},
    {"recipient.id", {"recipient", "id"}, F_STRING},
    {"recipient.name", {"recipient", "name"}, F_STRING},
    {"channelData", {"channelData"}, F_OBJECT},
    {"channelData.tenant", {"channelData", "tenant"}, F_OBJECT},
    {"channelData.tenant.id", {"channelData", "tenant", "id"}, F_STRING},
    {"channelData.team", {"channelData", "team"}, F_OBJECT},
    {"channelData.team.id", {"channelData", "team", "id"}, F_STRING},
    {"channelData.team.name", {"channelData", "team", "name"}, F_STRING},
    {"channelData.team.aadGroupId", {"channelData", "team", "aadGroupId"}, F_STRING},
    {"channelData.channel", {"channelData", "channel"}, F_OBJECT},
    {"channelData.channel.id", {"channelData", "channel", "id"}, F_STRING},
    {"channelData.channel.name", {"channelData", "channel", "name"}, F_STRING},
    {"channelData.teamsChannelId", {"channelData", "teamsChannelId"}, F_STRING},
    {"channelData.eventType", {"channelData", "eventType"}, F_STRING},
    {"entities", {"entities"}, F_ARRAY},
    {"membersAdded", {"membersAdded"}, F_ARRAY},
    {"membersRemoved", {"membersRemoved"}, F_ARRAY},
};

/* 1 when the table at t has exactly the keys 1..#t (an empty table counts). Net stack: 0. */
static int is_sequence(lua_State *L, int t)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, t), count = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > n ||
            ++count > n) {
            lua_pop(L, 1);
            return 0;
        }
    }
    return count == n;
}

/* The first field of the activity at a whose type is wrong: its path, with *reason set; or NULL.
 * A member of a list of accounts (membersAdded, membersRemoved) must be an object whose id, when
 * present, is a string: herald compares it with the bot's id. Net stack effect: 0. */
static const char *activity_field_invalid(lua_State *L, int a, const char **reason)
{
    int top = lua_gettop(L);
    for (size_t i = 0; i < sizeof activity_fields / sizeof activity_fields[0]; i++) {
        const struct activity_field *f = &activity_fields[i];
        lua_pushvalue(L, a);
        int k = 0;
        for (; k < 3 && f->k[k] && lua_type(L, -1) == LUA_TTABLE; k++)
            lua_getfield(L, -1, f->k[k]);
        int t = lua_type(L, -1), ok;
        if ((k < 3 && f->k[k]) || t == LUA_TNIL || (t == LUA_TLIGHTUSERDATA && !lua_touserdata(L, -1)))
            ok = 1;               /* absent (or inside a non-object, refused as such), or JSON null */
        else if (f->kind == F_STRING)
            ok = t == LUA_TSTRING;
        else if (f->kind == F_OBJECT)
            ok = t == LUA_TTABLE && (lua_rawlen(L, -1) == 0 || !is_sequence(L, lua_gettop(L)));
        else
            ok = t == LUA_TTABLE && is_sequence(L, lua_gettop(L));
        if (ok && t == LUA_TTABLE && f->kind == F_ARRAY && f->path[0] == 'm') {
            int arr = lua_gettop(L);
            for (lua_Integer j = 1; ok && j <= (lua_Integer)lua_rawlen(L, arr); j++) {
                int mt = lua_rawgeti(L, arr, j);
                ok = mt == LUA_TTABLE;
                if (ok) {
                    int it = lua_getfield(L, -1, "id");
                    ok = it == LUA_TNIL || it == LUA_TSTRING ||
                         (it == LUA_TLIGHTUSERDATA && !lua_touserdata(L, -1));
                }
                lua_settop(L, arr);
            }
            if (!ok) {
                lua_settop(L, top);
                *reason = "each member must be an object whose id is a string";
                return f->path;
            }
        }
        lua_settop(L, top);
        if (!ok) {
            *reason = f->kind == F_STRING ? "must be a string"
                      : f->kind == F_OBJECT ? "must be an object" : "must be an array";
            return f->path;
        }
    }
    return NULL;
}

/* 1 when the array t[key] holds a member whose id is bot_id. Net stack effect: 0. */
static int members_include(lua_State *L, int t, const char *key, const char *bot_id)
{
    int found = 0, top = lua_gettop(L);
    if (bot_id && lua_getfield(L, t, key) == LUA_TTABLE) {
        int arr = lua_gettop(L);
        lua_Integer n = (lua_Integer)lua_rawlen(L, arr);
        for (lua_Integer i = 1; i <= n && !found; i++) {
            if (lua_rawgeti(L, arr, i) == LUA_TTABLE && lua_getfield(L, -1, "id") == LUA_TSTRING)
                found = strcmp(lua_tostring(L, -1), bot_id) == 0;
            lua_settop(L, arr);
        }
    }
    lua_settop(L, top);
    return found;
}

/* The user's IANA zone: localTimezone, else a clientInfo entity's timezone. Net stack: 0. */
static const char *get_timezone(lua_State *L, int t)
{
    const char *tz = get_str(L, t, "localTimezone", NULL, NULL);
    if (tz)
        return tz;
    int top = lua_gettop(L);
    if (lua_getfield(L, t, "entities") == LUA_TTABLE) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= n && !tz; i++) {
            lua_rawgeti(L, top + 1, i);
            int e = lua_gettop(L);
            const char *type = get_str(L, e, "type", NULL, NULL);
            if (type && strcmp(type, "clientInfo") == 0)
                tz = get_str(L, e, "timezone", NULL, NULL);
            lua_settop(L, top + 1);
        }
    }
    lua_settop(L, top);
    return tz;
}

/* 1 when name is a zone this system knows. A client that reports another ("Mars/Olympus") must
 * not replace the user's stored zone: their 09:00 schedules would silently move to the default.
 * tz_get caches what it loads, so a known zone costs one lookup. */
static int zone_known(const char *name)
{
    char *err = NULL;
    int ok = tz_name_valid(name) && tz_get(name, &err);
    free(err);
    return ok;
}

/* Logs an unknown zone once per (conversation, zone): a client sends it with every activity.
 * Remembered as hashes in a fixed table, so a stream of made-up zones costs no memory (a pair
 * pushed out by another may be logged again). */
static void warn_unknown_zone(runtime *rt, const char *conv, const char *zone)
{
    uint64_t h = 14695981039346656037ULL;          /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)conv; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    h = (h ^ '\n') * 1099511628211ULL;
    for (const unsigned char *p = (const unsigned char *)zone; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    h |= 1;                                         /* 0 marks an empty slot */
    uint64_t *slot = &rt->zone_warned[h % (sizeof rt->zone_warned / sizeof rt->zone_warned[0])];
    if (*slot == h)
        return;
    *slot = h;
    char shown[TZ_NAME_MAX];
    size_t i = 0;
    for (; zone[i] && i < sizeof shown - 1; i++)   /* client bytes: printable ASCII only */
        shown[i] = zone[i] > 0x20 && zone[i] < 0x7f && zone[i] != '"' ? zone[i] : '?';
    shown[i] = 0;
    log_warn("unknown time zone \"%s%s\" ignored: the stored zone is kept conversation=%s", shown,
             zone[i] ? "..." : "", conv);
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

static void retry_after_keys(void *ud)
{
    pending_auth *p = ud;
    runtime *rt = p->rt;
    for (pending_auth **pp = &rt->pending; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    inbound_activity(p->x, p->body, p->len, rt);
    free(p->body);
    free(p);
}

void inbound_abandon_pending(void *arg)
{
    runtime *rt = arg;
    while (rt->pending) {
        pending_auth *p = rt->pending;
        rt->pending = p->next;
        auth_in_forget(rt->auth_in, p);
        reply_error(rt, p->x, 503, "shutting down");
        free(p->body);
        free(p);
    }
}

/* Checks the bearer token. Returns 1 to go on; 0 when x was answered or parked. */
static int authenticate(runtime *rt, http_exchange *x, const char *body, size_t len,
                        const char *service_url, const char *channel_id, const char *conv)
{
    const char *reason = "?";
    enum auth_result r = auth_in_check(rt->auth_in, http_exchange_header(x, "Authorization"),
                                       service_url, channel_id, clock_wall_ms() / 1000, &reason);
    if (r == AUTH_PENDING) {
        /* park the activity (its body copied: the server reuses its buffer) until keys arrive */
        pending_auth *p = calloc(1, sizeof *p);
        char *copy = p ? malloc(len + 1) : NULL;
        r = AUTH_UNAVAILABLE;
        reason = "out of memory";
        if (copy) {
            memcpy(copy, body, len);
            copy[len] = 0;
            *p = (pending_auth){.body = copy, .len = len, .rt = rt, .x = x};
            if (auth_in_wait(rt->auth_in, retry_after_keys, p) == AUTH_PENDING) {
                p->next = rt->pending;
                rt->pending = p;
                return 0;
            }
            reason = "the signing key fetch could not start";
        }
        free(copy);
        free(p);
    }
    if (r == AUTH_OK) {
        trust_note_validated(rt->trust, service_url);
        return 1;
    }
    if (r == AUTH_UNAVAILABLE) {
        log_error("activity refused: %s conversation=%s", reason, conv);
        reply_error(rt, x, 503, "signing keys unavailable");
        return 0;
    }
    rt->unauthorized++;
    log_warn("unauthenticated activity rejected reason=\"%s\" conversation=%s", reason, conv);
    http_exchange_reply(x, 401, "application/json; charset=utf-8", "{\"error\":\"unauthorized\"}", 24);
    return 0;
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

void inbound_activity(http_exchange *x, const char *body, size_t len, void *arg)
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
    if (!valid_utf8((const unsigned char *)body, len)) {
        reply_error(rt, x, 400, "malformed JSON: invalid UTF-8");
        return;
    }
    int drc = decode_body(rt, body, len);
    if (drc == LUA_ERRMEM) {
        lua_settop(L, top);
        reply_error(rt, x, 503, "out of memory");
        return;
    }
    if (drc != LUA_OK) {
        char reason[200];
        const char *m = lua_tostring(L, -1);
        snprintf(reason, sizeof reason, "malformed JSON: %s", m ? m : "?");
        for (char *p = reason; *p; p++)
            if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
                *p = '\'';
        lua_settop(L, top);
        reply_error(rt, x, 400, reason);
        return;
    }
    int a = lua_gettop(L);                     /* [activity] */
    const char *why = NULL, *field = NULL, *kind_why = NULL;
    const char *type = NULL, *conv = NULL, *service_url = NULL;
    char reason[160];
    if (lua_type(L, a) != LUA_TTABLE || lua_rawlen(L, a) > 0)
        why = "an activity must be a JSON object";
    else if ((field = activity_field_invalid(L, a, &kind_why)))
        why = (snprintf(reason, sizeof reason, "%s %s", field, kind_why), reason);
    else if (!(type = get_str(L, a, "type", NULL, NULL)))
        why = "missing type", field = "type";
    else if (!(conv = get_str(L, a, "conversation", "id", NULL)))
        why = "missing conversation.id", field = "conversation.id";
    else if (!(service_url = get_str(L, a, "serviceUrl", NULL, NULL)))
        why = "missing serviceUrl", field = "serviceUrl";
    else if (strlen(conv) > 1024 || strlen(service_url) > 2048)
        why = "conversation.id or serviceUrl too long",
        field = strlen(conv) > 1024 ? "conversation.id" : "serviceUrl";
    else if ((why = trust_service_url_invalid(service_url)))
        field = "serviceUrl";
    else if (!rt->cfg->dev && !config_url_allowed(service_url))
        /* the token never goes to such a URL (trust.c), so a reference holding it is useless */
        why = "serviceUrl must be https (plain http only on a loopback host, or in dev mode)",
        field = "serviceUrl";
    if (why) {
        lua_settop(L, top);
        reply_refusal(rt, x, 400, why, field);
        return;
    }
    if (rt->auth_in && !authenticate(rt, x, body, len, service_url,
                                     get_str(L, a, "channelId", NULL, NULL), conv)) {
        lua_settop(L, top);
        return;
    }
    const char *activity_id = get_str(L, a, "id", NULL, NULL);
    if (activity_id && redelivery_seen(rt->seen, conv, activity_id, vm_now_ms(),
                                       (int64_t)rt->cfg->redelivery_window_s * 1000)) {
        rt->redelivered++;
        log_info("redelivered activity acknowledged, not run again conversation=%s id=%s", conv,
                 activity_id);
        lua_settop(L, top);
        http_exchange_reply(x, 200, NULL, NULL, 0);
        return;
    }
    /* Refused before anything is written: a stored install signal whose hook never ran would
     * make Teams' redelivery look like the second signal of the same install. */
    if (!store_writable(rt->store)) {
        log_debug("activity refused with 503: the store is not writable conversation=%s", conv);
        lua_settop(L, top);
        reply_error(rt, x, 503, "storage unavailable");
        return;
    }
    if (task_count(rt->vm) >= rt->cfg->max_tasks) {
        log_error("cannot start a handler conversation=%s error=too many tasks (%d alive, limit "
                  "HERALD_MAX_TASKS)", conv, task_count(rt->vm));
        lua_settop(L, top);
        reply_error(rt, x, 503, "too busy");
        return;
    }

    store_reference ref = {0};
    ref.id = conv;
    ref.service_url = service_url;
    ref.type = get_str(L, a, "conversation", "conversationType", NULL);
    ref.tenant_id = get_str(L, a, "channelData", "tenant", "id");
    if (!ref.tenant_id)
        ref.tenant_id = get_str(L, a, "conversation", "tenantId", NULL);
    ref.channel_id = get_str(L, a, "channelId", NULL, NULL);
    ref.bot_id = get_str(L, a, "recipient", "id", NULL);
    ref.bot_name = get_str(L, a, "recipient", "name", NULL);
    ref.user_id = get_str(L, a, "from", "id", NULL);
    ref.user_aad_id = get_str(L, a, "from", "aadObjectId", NULL);
    ref.user_name = get_str(L, a, "from", "name", NULL);
    ref.team_id = get_str(L, a, "channelData", "team", "id");
    ref.team_name = get_str(L, a, "channelData", "team", "name");
    ref.team_aad_group_id = get_str(L, a, "channelData", "team", "aadGroupId");
    ref.team_channel_id = get_str(L, a, "channelData", "channel", "id");
    if (!ref.team_channel_id)
        ref.team_channel_id = get_str(L, a, "channelData", "teamsChannelId", NULL);
    ref.locale = get_str(L, a, "locale", NULL, NULL);
    ref.timezone = get_timezone(L, a);
    int zone_unknown = ref.timezone && !zone_known(ref.timezone);
    if (zone_unknown) {
        warn_unknown_zone(rt, conv, ref.timezone);
        ref.timezone = NULL;                   /* the stored zone stays */
    }
    ref.last_activity_id = activity_id;
    char seal[65];
    if (rt->trust && trust_seal(rt->trust, conv, service_url, seal) == 0)
        ref.service_url_seal = seal;

    enum store_install_signal signal = STORE_SIGNAL_NONE;
    if (strcmp(type, "installationUpdate") == 0) {
        const char *action = get_str(L, a, "action", NULL, NULL);
        if (action && (strcasecmp(action, "add") == 0 || strcasecmp(action, "add-upgrade") == 0))
            signal = STORE_SIGNAL_INSTALL;
        else if (action && (strcasecmp(action, "remove") == 0 || strcasecmp(action, "remove-upgrade") == 0))
            signal = STORE_SIGNAL_UNINSTALL;
    } else if (strcmp(type, "conversationUpdate") == 0) {
        if (members_include(L, a, "membersAdded", ref.bot_id))
            signal = STORE_SIGNAL_INSTALL;
        else if (members_include(L, a, "membersRemoved", ref.bot_id))
            signal = STORE_SIGNAL_UNINSTALL;
    }
    size_t clen = strlen(conv) + 1, alen = activity_id ? strlen(activity_id) + 1 : 0;
    inbound *ib = calloc(1, sizeof *ib + clen + alen);
    if (!ib) {
        lua_settop(L, top);
        reply_error(rt, x, 503, "out of memory");
        return;
    }
    ib->rt = rt;
    ib->x = x;
    ib->invoke = strcmp(type, "invoke") == 0;
    ib->waiter.fn = on_reference_committed;
    ib->conv_id = (char *)(ib + 1);
    memcpy(ib->conv_id, conv, clen);
    if (activity_id) {
        ib->activity_id = ib->conv_id + clen;
        memcpy(ib->activity_id, activity_id, alen);
    }
    snprintf(ib->conversation, sizeof ib->conversation, "%s", conv);

    int run_hook = 0, zone_changed = 0;
    char *err = NULL;
    outbox_touch_batch(rt->outbox);            /* one commit per loop turn, not per activity */
    if (!store_in_batch(rt->store) ||
        store_put_inbound(rt->store, &ref, signal, clock_wall_ms(),
                          (int64_t)rt->cfg->install_window_s * 1000, &run_hook, &zone_changed,
                          &err) < 0) {
        log_error("cannot store the conversation reference conversation=%s error=%s", conv,
                  err ? err : store_last_error(rt->store) ? store_last_error(rt->store) : "?");
        free(err);
        free(ib);
        lua_settop(L, top);
        reply_error(rt, x, 503, "storage unavailable");
        return;
    }
    if (zone_changed && rt->scheduler)
        scheduler_zone_changed(rt->scheduler, conv);
    /* schedules follow the conversation's installed state (the one teams.conversations shows) */
    if (rt->scheduler && signal == STORE_SIGNAL_UNINSTALL)
        scheduler_conversation_uninstalled(rt->scheduler, conv);
    else if (rt->scheduler)
        scheduler_conversation_back(rt->scheduler, conv);
    if (signal != STORE_SIGNAL_UNINSTALL && outbox_ledger_state(rt->outbox, conv))
        outbox_heard_from(rt->outbox, conv);
    if (run_hook)
        ib->hook = signal == STORE_SIGNAL_INSTALL ? "install" : "uninstall";
    ib->zone_unknown = zone_unknown;

    char culprit[QUARANTINE_KEY_MAX];
    snprintf(culprit, sizeof culprit, "%s %s", conv, activity_id ? activity_id : "-");
    long long since = quarantine_since(vm_script_hash(rt->vm), "activity", culprit);
    if (since) {
        /* answered, so that Teams stops redelivering what stalled the host */
        log_warn("activity not run: it stalled the host before and is quarantined (since unix ms "
                 "%lld) until the script changes conversation=%s id=%s", since, conv,
                 activity_id ? activity_id : "-");
        lua_settop(L, top);
        free(ib);
        http_exchange_reply(x, 200, NULL, NULL, 0);
        return;
    }

    if (!push_gated(L)) {
        free(ib);
        lua_settop(L, top);
        reply_error(rt, x, 503, "out of memory");
        return;
    }
    lua_pushlightuserdata(L, ib);
    if (vm_entry_push(L, vm_entries_of(rt->vm)->dispatch) != LUA_TFUNCTION) {
        log_debug("no dispatcher: the script never required \"teams\"");
        lua_pop(L, 1);
        lua_pushnil(L);
    }
    lua_pushvalue(L, a);                       /* [activity gated ib dispatch activity] */
    task_blame(rt->vm, "activity", culprit);
    int started;
    task *t = task_spawn(rt->vm, label_for(type, ib->hook), 3, on_task_done, ib, &started, &err);
    lua_settop(L, top);
    if (!started) {
        /* rare past the check above (out of memory); the stored reference stays */
        log_error("cannot start a handler conversation=%s error=%s", ib->conversation,
                  err ? err : "?");
        free(err);
        reply_error(rt, x, 503, "too busy");
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
    if (!valid_utf8((const unsigned char *)body, len)) {
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
