/* activity.c — POST /api/messages up to the script: UTF-8, JSON (jansson), field types, token,
 * redeliveries, the reference and install signal, ledgers and schedules, all in C; an accepted
 * activity goes on to lua_inbound.c, so nothing untrusted ever reaches a script's state. */
#include "activity.h"

#include "auth_in.h"
#include "clock.h"
#include "config.h"
#include "http_server.h"
#include "log.h"
#include "outbox.h"
#include "quarantine.h"
#include "redelivery.h"
#include "runtime.h"
#include "scheduler.h"
#include "store.h"
#include "task.h"
#include "trust.h"
#include "tz.h"
#include "vm.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* An activity whose token names a key we are fetching: kept whole and run again when the keys
 * arrive (the body is copied because the server reuses its buffer). */
struct pending_auth {
    runtime *rt;
    http_exchange *x;
    char *body;
    size_t len;
    pending_auth *next;
};

/* The nesting a body may have: lua-cjson's limit, which decoded bodies before (the script's copy
 * is built recursively, one C frame per level). */
#define ACTIVITY_MAX_DEPTH 1000

void activity_refuse(runtime *rt, http_exchange *x, int status, const char *reason, const char *field)
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
    activity_refuse(rt, x, status, reason, NULL);
}

/* RFC 8259 wants UTF-8; jansson checks it too, but this check also guards the notify route,
 * whose bodies go to the script's cjson, which passes any bytes through. */
int activity_valid_utf8(const unsigned char *s, size_t n)
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

/* The script decodes arrays and objects alike as tables, so an empty array passes wherever an
 * object is expected, and an empty object wherever an array is: the rules below keep that. */
static int is_table(const json_t *v)
{
    return json_is_object(v) || json_is_array(v);
}

static int object_like(const json_t *v)
{
    return json_is_object(v) || (json_is_array(v) && json_array_size(v) == 0);
}

static int array_like(const json_t *v)
{
    return json_is_array(v) || (json_is_object(v) && json_object_size(v) == 0);
}

/* v[k1][k2]... as a non-empty string without NUL bytes, or NULL (a "\u0000" would make C read a
 * shorter id than the script sees). */
static const char *get_str(const json_t *v, const char *k1, const char *k2, const char *k3)
{
    const char *keys[3] = {k1, k2, k3};
    for (int i = 0; i < 3 && keys[i]; i++)
        v = json_object_get(v, keys[i]);       /* NULL for a non-object or an absent key */
    const char *s = json_string_value(v);
    return s && *s && strlen(s) == json_string_length(v) ? s : NULL;
}

/* 1 when v nests containers deeper than limit. */
static int too_deep(const json_t *v, int limit)
{
    if (!is_table(v))
        return 0;
    if (limit <= 0)
        return 1;
    size_t i;
    const char *k;
    json_t *m;
    if (json_is_array(v)) {
        json_array_foreach((json_t *)v, i, m)
            if (too_deep(m, limit - 1))
                return 1;
    } else {
        json_object_foreach((json_t *)v, k, m)
            if (too_deep(m, limit - 1))
                return 1;
    }
    return 0;
}

/* The fields herald or the teams module read, and what each must be when present (JSON null
 * counts as absent). A field of the wrong type was silently read as missing: a numeric "text"
 * reached the handler as "", a numeric "from.id" stored a reference without its user. Checked in
 * order, so a container is checked before its members. */
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

/* The first field of activity a whose type is wrong: its path, with *reason set; or NULL. A member
 * of a list of accounts (membersAdded, membersRemoved) must be a table whose id, when present, is
 * a string: herald compares it with the bot's id. */
static const char *activity_field_invalid(const json_t *a, const char **reason)
{
    for (size_t i = 0; i < sizeof activity_fields / sizeof activity_fields[0]; i++) {
        const struct activity_field *f = &activity_fields[i];
        const json_t *v = a;
        int k = 0;
        for (; k < 3 && f->k[k] && is_table(v); k++)
            v = json_object_get(v, f->k[k]);   /* an array has no named members: absent */
        int ok;
        if ((k < 3 && f->k[k]) || !v || json_is_null(v))
            ok = 1;               /* absent (or inside a non-object, refused as such), or JSON null */
        else if (f->kind == F_STRING)
            ok = json_is_string(v);
        else if (f->kind == F_OBJECT)
            ok = object_like(v);
        else
            ok = array_like(v);
        if (ok && f->kind == F_ARRAY && f->path[0] == 'm' && json_is_array(v)) {
            size_t j;
            json_t *m;
            json_array_foreach((json_t *)v, j, m) {
                json_t *id = json_object_get(m, "id");
                if (!object_like(m) || (id && !json_is_null(id) && !json_is_string(id))) {
                    *reason = "each member must be an object whose id is a string";
                    return f->path;
                }
            }
        }
        if (!ok) {
            *reason = f->kind == F_STRING ? "must be a string"
                      : f->kind == F_OBJECT ? "must be an object" : "must be an array";
            return f->path;
        }
    }
    return NULL;
}

/* 1 when the array a[key] holds a member whose id is bot_id. */
static int members_include(const json_t *a, const char *key, const char *bot_id)
{
    const json_t *arr = json_object_get(a, key);
    size_t i;
    json_t *m;
    if (bot_id && json_is_array(arr))
        json_array_foreach((json_t *)arr, i, m) {
            const char *id = json_string_value(json_object_get(m, "id"));
            if (id && strcmp(id, bot_id) == 0)
                return 1;
        }
    return 0;
}

/* The user's IANA zone: localTimezone, else a clientInfo entity's timezone. */
static const char *get_timezone(const json_t *a)
{
    const char *tz = get_str(a, "localTimezone", NULL, NULL);
    const json_t *ents = json_object_get(a, "entities");
    size_t i;
    json_t *e;
    if (!tz && json_is_array(ents))
        json_array_foreach((json_t *)ents, i, e) {
            const char *type = get_str(e, "type", NULL, NULL);
            if (type && strcmp(type, "clientInfo") == 0 && (tz = get_str(e, "timezone", NULL, NULL)))
                break;
        }
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

static void retry_after_keys(void *ud)
{
    pending_auth *p = ud;
    runtime *rt = p->rt;
    for (pending_auth **pp = &rt->pending; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    activity_request(p->x, p->body, p->len, rt);
    free(p->body);
    free(p);
}

void activity_abandon_pending(void *arg)
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

/* Parses body into *doc, or answers x (400) and returns 0. The reason names the error and where,
 * never the bytes there (jansson's "near '...'" would echo the client). */
static int parse(runtime *rt, http_exchange *x, const char *body, size_t len, json_t **doc)
{
    json_error_t e;
    /* reals for integers: the script has always seen JSON numbers as floats, and an integer
       past 64 bits is still a number; NUL allowed: "\u0000" is valid JSON (read as missing) */
    *doc = json_loadb(body, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &e);
    const char *what = e.text;
    if (*doc && too_deep(*doc, ACTIVITY_MAX_DEPTH)) {
        json_decref(*doc);
        *doc = NULL;
        what = "too many nested data structures";
        e.position = 0;
    }
    if (*doc)
        return 1;
    char reason[200];
    int n = snprintf(reason, sizeof reason, "malformed JSON: %s", what);
    char *near = strstr(reason, " near ");
    if (near)
        n = (int)(near - reason);
    if (n >= 0 && (size_t)n < sizeof reason && e.position)
        snprintf(reason + n, sizeof reason - (size_t)n, " at character %d", e.position);
    for (char *p = reason; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            *p = '\'';
    reply_error(rt, x, 400, reason);
    return 0;
}

/* The checks that refuse a body with 400 before its token is even looked at: the reason and the
 * field at fault, or NULL. */
static const char *invalid(runtime *rt, const json_t *a, const char **field, char *buf, size_t size)
{
    const char *why = NULL, *kind_why = NULL, *conv, *service_url;
    *field = NULL;
    if (!object_like(a))
        why = "an activity must be a JSON object";
    else if ((*field = activity_field_invalid(a, &kind_why)))
        why = (snprintf(buf, size, "%s %s", *field, kind_why), buf);
    else if (!get_str(a, "type", NULL, NULL))
        why = "missing type", *field = "type";
    else if (!(conv = get_str(a, "conversation", "id", NULL)))
        why = "missing conversation.id", *field = "conversation.id";
    else if (!(service_url = get_str(a, "serviceUrl", NULL, NULL)))
        why = "missing serviceUrl", *field = "serviceUrl";
    else if (strlen(conv) > 1024 || strlen(service_url) > 2048)
        why = "conversation.id or serviceUrl too long",
        *field = strlen(conv) > 1024 ? "conversation.id" : "serviceUrl";
    else if ((why = trust_service_url_invalid(service_url)))
        *field = "serviceUrl";
    else if (!rt->cfg->dev && !config_url_allowed(service_url))
        /* the token never goes to such a URL (trust.c), so a reference holding it is useless */
        why = "serviceUrl must be https (plain http only on a loopback host, or in dev mode)",
        *field = "serviceUrl";
    return why;
}

static enum store_install_signal install_signal(const json_t *a, const char *type, const char *bot_id)
{
    if (strcmp(type, "installationUpdate") == 0) {
        const char *action = get_str(a, "action", NULL, NULL);
        if (action && (strcasecmp(action, "add") == 0 || strcasecmp(action, "add-upgrade") == 0))
            return STORE_SIGNAL_INSTALL;
        if (action && (strcasecmp(action, "remove") == 0 || strcasecmp(action, "remove-upgrade") == 0))
            return STORE_SIGNAL_UNINSTALL;
    } else if (strcmp(type, "conversationUpdate") == 0) {
        if (members_include(a, "membersAdded", bot_id))
            return STORE_SIGNAL_INSTALL;
        if (members_include(a, "membersRemoved", bot_id))
            return STORE_SIGNAL_UNINSTALL;
    }
    return STORE_SIGNAL_NONE;
}

/* From an authenticated, new activity to its task: the reference, install signal, ledgers and
 * schedules, then the script side. Answers x. */
static void accept_activity(runtime *rt, http_exchange *x, const json_t *a)
{
    const char *type = get_str(a, "type", NULL, NULL);
    const char *conv = get_str(a, "conversation", "id", NULL);
    const char *service_url = get_str(a, "serviceUrl", NULL, NULL);
    const char *activity_id = get_str(a, "id", NULL, NULL);

    store_reference ref = {0};
    ref.id = conv;
    ref.service_url = service_url;
    ref.type = get_str(a, "conversation", "conversationType", NULL);
    ref.tenant_id = get_str(a, "channelData", "tenant", "id");
    if (!ref.tenant_id)
        ref.tenant_id = get_str(a, "conversation", "tenantId", NULL);
    ref.channel_id = get_str(a, "channelId", NULL, NULL);
    ref.bot_id = get_str(a, "recipient", "id", NULL);
    ref.bot_name = get_str(a, "recipient", "name", NULL);
    ref.user_id = get_str(a, "from", "id", NULL);
    ref.user_aad_id = get_str(a, "from", "aadObjectId", NULL);
    ref.user_name = get_str(a, "from", "name", NULL);
    ref.team_id = get_str(a, "channelData", "team", "id");
    ref.team_name = get_str(a, "channelData", "team", "name");
    ref.team_aad_group_id = get_str(a, "channelData", "team", "aadGroupId");
    ref.team_channel_id = get_str(a, "channelData", "channel", "id");
    if (!ref.team_channel_id)
        ref.team_channel_id = get_str(a, "channelData", "teamsChannelId", NULL);
    ref.locale = get_str(a, "locale", NULL, NULL);
    ref.timezone = get_timezone(a);
    int zone_unknown = ref.timezone && !zone_known(ref.timezone);
    if (zone_unknown) {
        warn_unknown_zone(rt, conv, ref.timezone);
        ref.timezone = NULL;                   /* the stored zone stays */
    }
    ref.last_activity_id = activity_id;
    char seal[65];
    if (rt->trust && trust_seal(rt->trust, conv, service_url, seal) == 0)
        ref.service_url_seal = seal;
    enum store_install_signal signal = install_signal(a, type, ref.bot_id);

    /* the script's copy first: a script out of memory refuses the activity before anything is
       written (a stored install signal whose hook never ran would make Teams' redelivery look
       like the second signal of the same install) */
    accepted_activity acc = {.doc = a, .type = type, .conversation = conv, .id = activity_id};
    inbound *ib = inbound_prepare(rt, x, &acc);
    if (!ib)
        return;

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
        inbound_discard(ib);
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

    char culprit[QUARANTINE_KEY_MAX];
    snprintf(culprit, sizeof culprit, "%s %s", conv, activity_id ? activity_id : "-");
    long long since = quarantine_since(vm_script_hash(rt->vm), "activity", culprit);
    if (since) {
        /* answered, so that Teams stops redelivering what stalled the host */
        log_warn("activity not run: it stalled the host before and is quarantined (since unix ms "
                 "%lld) until the script changes conversation=%s id=%s", since, conv,
                 activity_id ? activity_id : "-");
        inbound_discard(ib);
        http_exchange_reply(x, 200, NULL, NULL, 0);
        return;
    }
    inbound_start(ib, run_hook ? (signal == STORE_SIGNAL_INSTALL ? "install" : "uninstall") : NULL,
                  zone_unknown, culprit);
}

void activity_request(http_exchange *x, const char *body, size_t len, void *arg)
{
    runtime *rt = arg;
    if (rt->stopping) {
        reply_error(rt, x, 503, "shutting down");
        return;
    }
    if (rt->script_quarantined) {
        reply_error(rt, x, 503, "the script is quarantined");
        return;
    }
    if (!activity_valid_utf8((const unsigned char *)body, len)) {
        reply_error(rt, x, 400, "malformed JSON: invalid UTF-8");
        return;
    }
    json_t *a;
    if (!parse(rt, x, body, len, &a))
        return;
    char buf[160];
    const char *field, *why = invalid(rt, a, &field, buf, sizeof buf);
    if (why) {
        activity_refuse(rt, x, 400, why, field);
        json_decref(a);
        return;
    }
    const char *conv = get_str(a, "conversation", "id", NULL);
    if (rt->auth_in && !authenticate(rt, x, body, len, get_str(a, "serviceUrl", NULL, NULL),
                                     get_str(a, "channelId", NULL, NULL), conv)) {
        json_decref(a);
        return;
    }
    const char *activity_id = get_str(a, "id", NULL, NULL);
    if (activity_id && redelivery_seen(rt->seen, conv, activity_id, vm_now_ms(),
                                       (int64_t)rt->cfg->redelivery_window_s * 1000)) {
        rt->redelivered++;
        log_info("redelivered activity acknowledged, not run again conversation=%s id=%s", conv,
                 activity_id);
        http_exchange_reply(x, 200, NULL, NULL, 0);
    } else if (!store_writable(rt->store)) {
        /* refused before anything is written, as an install signal must be (accept_activity) */
        log_debug("activity refused with 503: the store is not writable conversation=%s", conv);
        reply_error(rt, x, 503, "storage unavailable");
    } else if (task_count(rt->vm) >= rt->cfg->max_tasks) {
        log_error("cannot start a handler conversation=%s error=too many tasks (%d alive, limit "
                  "HERALD_MAX_TASKS)", conv, task_count(rt->vm));
        reply_error(rt, x, 503, "too busy");
    } else {
        accept_activity(rt, x, a);
    }
    json_decref(a);
}
