/* fuzz_inbound.c — libFuzzer target over what herald does with a POST /api/messages body and a
 * POST /api/notify/{name} body: UTF-8 check, JSON decoding, validation, redelivery, reference
 * extraction and storage, install signals, and the teams library's dispatch into a bot whose
 * handlers cannot fail (tests/fuzz/inbound_bot.lua). It is the real runtime teams.testing builds
 * — store in memory, outbox, scheduler, a Lua generation, a fake connector, the virtual clock —
 * fresh for every input, fed through virtual exchanges (dev mode: no token check; the JWT is
 * fuzz_jwt's, the notify signature fuzz_notify's).
 *
 * Checked for every request: exactly one answer by the response deadline; never 5xx (a handler
 * error is the library's fault here) nor 401/404; 400 exactly when the body is not a valid
 * activity as read independently with jansson (an object with non-empty "type",
 * "conversation.id" and "serviceUrl" strings, the last two within 1024 and 2048 bytes, none
 * holding a NUL, the URL of the shape trust_service_url_invalid accepts); for an accepted one,
 * the stored reference has its conversation id and service URL (and tenant, user and bot ids)
 * byte for byte; no task or Lua registry ref outlives it.
 *
 * Input: requests separated by NUL bytes; one starting with '!' is a notify body (the rest),
 * anything else an activity body. At most 8 requests. */
#include "activity.h"
#include "broadcast.h"
#include "clock.h"
#include "config.h"
#include "connector.h"
#include "fuzz_util.h"
#include "http_client.h"
#include "http_server.h"
#include "log.h"
#include "lua_inbound.h"
#include "lua_schedule.h"
#include "lua_teams.h"
#include "outbox.h"
#include "redelivery.h"
#include "runtime.h"
#include "scheduler.h"
#include "store.h"
#include "task.h"
#include "trust.h"
#include "vm.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *bot_path;
static long next_id;
static store *db;                     /* opened once (its schema takes most of a start), wiped per input */

static void fake(const char *method, const char *url, const char *const *headers, const char *body,
                 size_t body_len, http_fake_answer *a, void *ud)
{
    (void)method, (void)url, (void)headers, (void)body, (void)body_len, (void)ud;
    char buf[64];
    snprintf(buf, sizeof buf, "{\"id\":\"fuzz-%ld\"}", ++next_id);
    a->status = 201;
    a->body = strdup(buf);
}

typedef struct host {
    runtime rt;
    config cfg;
} host;

static void host_close(host *h)
{
    runtime *rt = &h->rt;
    scheduler_free(rt->scheduler);
    broadcast_free(rt->broadcaster);
    vm_free(rt->vm);
    outbox_free(rt->outbox);
    connector_free(rt->conn);
    http_client_free(rt->http);
    redelivery_free(rt->seen);
    clock_virtual_reset();
    event_base_free(rt->base);
    config_free(&h->cfg);
}

/* The runtime herald run wires, as lua_testing.c builds it for teams.testing. */
static void host_open(host *h)
{
    memset(h, 0, sizeof *h);
    char *argv[] = {"herald", "run", "--dev", (char *)bot_path, NULL};
    char *err = NULL;
    if (config_load(&h->cfg, 4, argv, &err) != 0) {
        fprintf(stderr, "fuzz_inbound: config: %s\n", err ? err : "?");
        abort();
    }
    config *c = &h->cfg;
    free(c->db_path);
    c->db_path = strdup(":memory:");
    runtime *rt = &h->rt;
    rt->cfg = c;
    rt->base = event_base_new();
    clock_virtual(rt->base, 1798761600000LL);
    rt->started_ms = clock_mono_ms();
    rt->store = db;
    rt->seen = redelivery_new(100000);
    http_client_config hc = {.connect_timeout_ms = 5000, .max_host_connections = 64, .allow_http = 1};
    rt->http = rt->seen ? http_client_new(rt->base, &hc, &err) : NULL;
    if (rt->http)
        http_client_set_fake(rt->http, fake, NULL);
    connector_config cc = {.base = rt->base, .request_timeout_ms = c->connector_timeout_ms};
    rt->conn = rt->http ? connector_new(rt->http, &cc) : NULL;
    outbox_config oc = outbox_config_from(c);
    rt->outbox = rt->conn ? outbox_new(rt->base, rt->store, rt->conn, &oc, &err) : NULL;
    vm_config vc = vm_config_from(c);
    rt->vm = rt->outbox ? vm_new(rt->base, &vc, rt, &err) : NULL;
    if (rt->vm) {
        lua_teams_install(rt->vm);
        rt->scheduler = scheduler_new(rt, &lua_schedule_script, &err);
        rt->broadcaster = rt->scheduler ? broadcast_new(rt, &err) : NULL;
    }
    if (!rt->broadcaster || vm_load_script(rt->vm, bot_path, &err) < 0) {
        fprintf(stderr, "fuzz_inbound: cannot start the runtime: %s\n", err ? err : "?");
        abort();
    }
    clock_settle();
}

typedef struct reply {
    int calls, status;
} reply;

static void on_reply(int status, const char *body, size_t len, void *ud)
{
    (void)body, (void)len;
    reply *r = ud;
    r->calls++;
    r->status = status;
}

/* s as a C string when it is a non-empty JSON string without NUL, else NULL. */
static const char *field(json_t *v)
{
    const char *s = json_string_value(v);
    return s && *s && strlen(s) == json_string_length(v) ? s : NULL;
}

static size_t depth(json_t *v)
{
    size_t d = 0, i;
    const char *k;
    json_t *x;
    if (json_is_array(v))
        json_array_foreach(v, i, x) {
            size_t e = depth(x);
            d = e > d ? e : d;
        }
    else if (json_is_object(v))
        json_object_foreach(v, k, x) {
            size_t e = depth(x);
            d = e > d ? e : d;
        }
    return d + 1;
}

/* README "Malformed activities": the JSON type each field herald reads must have when present
 * (null counts as absent). Scripts see [] and {} alike (empty tables), so an empty one passes as
 * either. */
static const struct {
    const char *k[3];
    char kind;                    /* 's'tring, 'o'bject, 'a'rray, 'm'embers (objects with string ids) */
} typed[] = {
    {{"type"}, 's'}, {{"id"}, 's'}, {{"serviceUrl"}, 's'}, {{"channelId"}, 's'},
    {{"conversation"}, 'o'}, {{"conversation", "id"}, 's'},
    {{"conversation", "conversationType"}, 's'}, {{"conversation", "tenantId"}, 's'},
    {{"text"}, 's'}, {{"name"}, 's'}, {{"action"}, 's'}, {{"replyToId"}, 's'}, {{"locale"}, 's'},
    {{"localTimezone"}, 's'}, {{"from"}, 'o'}, {{"from", "id"}, 's'}, {{"from", "name"}, 's'},
    {{"from", "aadObjectId"}, 's'}, {{"recipient"}, 'o'}, {{"recipient", "id"}, 's'},
    {{"recipient", "name"}, 's'}, {{"channelData"}, 'o'}, {{"channelData", "tenant"}, 'o'},
    {{"channelData", "tenant", "id"}, 's'}, {{"channelData", "team"}, 'o'},
    {{"channelData", "team", "id"}, 's'}, {{"channelData", "team", "name"}, 's'},
    {{"channelData", "team", "aadGroupId"}, 's'}, {{"channelData", "channel"}, 'o'},
    {{"channelData", "channel", "id"}, 's'}, {{"channelData", "channel", "name"}, 's'},
    {{"channelData", "teamsChannelId"}, 's'}, {{"channelData", "eventType"}, 's'},
    {{"entities"}, 'a'}, {{"membersAdded"}, 'm'}, {{"membersRemoved"}, 'm'},
};

static int empty(json_t *v)
{
    return (json_is_array(v) && json_array_size(v) == 0) ||
           (json_is_object(v) && json_object_size(v) == 0);
}

static int types_ok(json_t *a)
{
    for (size_t i = 0; i < sizeof typed / sizeof typed[0]; i++) {
        json_t *v = a;
        for (int k = 0; k < 3 && typed[i].k[k] && v; k++)
            v = json_object_get(v, typed[i].k[k]);   /* NULL for a non-object */
        if (!v || json_is_null(v))
            continue;
        char kind = typed[i].kind;
        if (kind == 's' && !json_is_string(v))
            return 0;
        if (kind == 'o' && !json_is_object(v) && !empty(v))
            return 0;
        if ((kind == 'a' || kind == 'm') && !json_is_array(v) && !empty(v))
            return 0;
        size_t j;
        json_t *m;
        if (kind == 'm' && json_is_array(v))
            json_array_foreach(v, j, m) {
                json_t *id = json_object_get(m, "id");
                if ((!json_is_object(m) && !empty(m)) || (id && !json_is_null(id) && !json_is_string(id)))
                    return 0;
            }
    }
    return 1;
}

/* Redelivered activities (conversation + id seen before) are answered without being stored. */
static char seen[8][2200];
static int nseen;
/* An activity nested near herald's depth limit was taken: its conversation and id are not read
 * here, so the stored references are not checked for the rest of the input. */
static int unknown_taken;

static int is_redelivery(const char *conv, json_t *id)
{
    const char *s = json_string_value(id);
    if (!s || !*s)
        return 0;
    char key[2200];
    snprintf(key, sizeof key, "%s\n%s", conv, s);
    for (int i = 0; i < nseen; i++)
        if (strcmp(seen[i], key) == 0)
            return 1;
    if (nseen < 8)
        snprintf(seen[nseen++], sizeof seen[0], "%s", key);
    return 0;
}

static void expect_field(const char *what, const char *stored, const char *want)
{
    if (want)
        FUZZ_CHECK(stored && strcmp(stored, want) == 0, "stored %s '%s', the activity says '%s'",
                   what, stored ? stored : "(null)", want);
}

static void activity(host *h, const char *body, size_t len)
{
    runtime *rt = &h->rt;
    reply r = {0};
    uint64_t errors = rt->handler_errors;
    int refs = vm_ref_count(rt->vm);
    http_exchange *x = http_exchange_virtual(on_reply, &r);
    activity_request(x, body, len, rt);
    clock_advance(rt->cfg->response_deadline_ms + 1000);
    FUZZ_CHECK(r.calls == 1, "answered %d times", r.calls);
    FUZZ_CHECK(r.status == 200 || r.status == 400, "answered %d", r.status);
    FUZZ_CHECK(rt->handler_errors == errors, "a handler failed on this activity");
    FUZZ_CHECK(task_count(rt->vm) == 0 && vm_ref_count(rt->vm) == refs,
               "%d tasks and %d refs left (had %d)", task_count(rt->vm), vm_ref_count(rt->vm), refs);

    json_error_t e;
    json_t *a = json_loadb(body, len, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &e);
    /* herald parses with jansson too (activity.c): what jansson refuses is refused */
    FUZZ_CHECK(a || r.status == 400, "a body jansson cannot read answered %d", r.status);
    if (!a || depth(a) > 900) {       /* near herald's nesting limit (1000) */
        unknown_taken |= r.status != 400;
        json_decref(a);
        return;
    }
    const char *type = field(json_object_get(a, "type"));
    const char *conv = field(json_object_get(json_object_get(a, "conversation"), "id"));
    const char *su = field(json_object_get(a, "serviceUrl"));
    /* the serviceUrl's shape is trust_service_url_invalid's rule (README: an http(s) URL with a host) */
    int valid = json_is_object(a) && types_ok(a) && type && conv && su && strlen(conv) <= 1024 &&
                strlen(su) <= 2048 && !trust_service_url_invalid(su);
    FUZZ_CHECK(valid == (r.status != 400), "a%s valid activity answered %d", valid ? "" : "n in",
               r.status);
    if (valid && !is_redelivery(conv, json_object_get(a, "id")) && !unknown_taken) {
        store_reference ref;
        char *err = NULL;
        FUZZ_CHECK(store_get_reference(rt->store, conv, &ref, &err) == 1, "no reference stored for "
                   "'%s': %s", conv, err ? err : "not found");
        expect_field("conversation id", ref.id, conv);
        expect_field("service URL", ref.service_url, su);
        json_t *cd = json_object_get(a, "channelData");
        const char *tenant = json_is_string(json_object_get(json_object_get(cd, "tenant"), "id"))
            ? field(json_object_get(json_object_get(cd, "tenant"), "id"))
            : field(json_object_get(json_object_get(a, "conversation"), "tenantId"));
        expect_field("tenant", ref.tenant_id, tenant);
        expect_field("user id", ref.user_id, field(json_object_get(json_object_get(a, "from"), "id")));
        expect_field("bot id", ref.bot_id,
                     field(json_object_get(json_object_get(a, "recipient"), "id")));
        store_reference_clear(&ref);
    }
    json_decref(a);
}

static void notify(host *h, const char *body, size_t len)
{
    runtime *rt = &h->rt;
    reply r = {0};
    uint64_t errors = rt->handler_errors;
    http_exchange *x = http_exchange_virtual(on_reply, &r);
    notify_request(x, "fuzz", body, len, rt);
    clock_advance(rt->cfg->response_deadline_ms + 1000);
    FUZZ_CHECK(r.calls == 1, "notify answered %d times", r.calls);
    FUZZ_CHECK(r.status == 200 || r.status == 400, "notify answered %d", r.status);
    FUZZ_CHECK(rt->handler_errors == errors, "the notify handler failed");
    json_t *doc = json_loadb(body, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL,
                             NULL);
    if (doc && depth(doc) <= 900)
        FUZZ_CHECK(r.status == 200, "a valid JSON payload answered %d", r.status);
    if (len == 0)
        FUZZ_CHECK(r.status == 200, "an empty payload answered %d", r.status);
    json_decref(doc);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    bot_path = getenv("HERALD_FUZZ_BOT") ? getenv("HERALD_FUZZ_BOT") : "tests/fuzz/inbound_bot.lua";
    if (access(bot_path, R_OK) != 0) {
        fprintf(stderr, "fuzz_inbound: %s not found (run from the repository root or set "
                "HERALD_FUZZ_BOT)\n", bot_path);
        abort();
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    log_set_level(LOG_ERROR + 1);     /* refusals are the point; keep the output readable */
    char *err = NULL;
    if (!(db = store_open(":memory:", &err))) {
        fprintf(stderr, "fuzz_inbound: store: %s\n", err ? err : "?");
        abort();
    }
    return 0;
}

/* Empties every table, so each input starts from a new database without building the schema. */
static void wipe_store(void)
{
    sqlite3 *s = store_db(db);
    sqlite3_stmt *st;
    char *names[64];
    int n = 0;
    if (sqlite3_prepare_v2(s, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT "
                           "LIKE 'sqlite_%'", -1, &st, NULL) != SQLITE_OK)
        abort();
    while (n < 64 && sqlite3_step(st) == SQLITE_ROW)
        names[n++] = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    for (int i = 0; i < n; i++) {
        char sql[200];
        snprintf(sql, sizeof sql, "DELETE FROM \"%s\"", names[i]);
        if (sqlite3_exec(s, sql, NULL, NULL, NULL) != SQLITE_OK)
            abort();
        free(names[i]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    host h;
    wipe_store();
    host_open(&h);
    nseen = unknown_taken = 0;
    const uint8_t *p = data, *end = data + size;
    for (int n = 0; n < 8 && p <= end; n++) {
        const uint8_t *nul = memchr(p, 0, (size_t)(end - p));
        size_t len = nul ? (size_t)(nul - p) : (size_t)(end - p);
        /* an exact-size copy, so ASan sees any read past the body */
        char *body = malloc(len ? len : 1);
        memcpy(body, p, len);
        if (len && body[0] == '!')
            notify(&h, body + 1, len - 1);
        else
            activity(&h, body, len);
        free(body);
        if (!nul)
            break;
        p = nul + 1;
    }
    host_close(&h);
    return 0;
}
