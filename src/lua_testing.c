/* lua_testing.c — `herald.testing_core`, the C half of teams.testing: the same runtime `herald run`
 * wires (store, outbox, governor, scheduler, Lua generation), built in-process for a busted spec,
 * on virtual time, with an in-memory database and a fake Bot Connector instead of the network.
 * Built as build/lua/herald/testing_core.so; lua/teams/testing.lua is the API bot authors use. */
#include "lua_testing.h"
#include "activity.h"
#include "broadcast.h"
#include "clock.h"
#include "config.h"
#include "connector.h"
#include "err.h"
#include "http_client.h"
#include "http_server.h"
#include "log.h"
#include "lua_inbound.h"
#include "lua_schedule.h"
#include "lua_teams.h"
#include "lua_util.h"
#include "outbox.h"
#include "redelivery.h"
#include "runtime.h"
#include "scheduler.h"
#include "store.h"
#include "task.h"
#include "vm.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HOST_MT "herald.testing.host"

typedef struct fake_rule {
    char *match;                  /* substring of the request URL path (decoded), or "" for all */
    char *method;                 /* NULL: any */
    long status;
    char *body, *retry_after;
    long delay_ms;
    int reset, timeout;
    int times;                    /* remaining uses; -1: forever */
} fake_rule;

typedef struct fake_record {
    char *method, *url, *path, *body;
    char *answer;                 /* the body the fake answered with (NULL: none, reset/timeout) */
    int64_t at;                   /* wall ms */
    long status;
} fake_record;

/* What the fake knows of rosters, channels and teams, set from Lua (bot:roster, bot:channels,
 * bot:team_details and what activities showed): "members:<conversation id>" → a JSON array of
 * Teams members, "pagesize:<conversation id>" → the largest page it answers, "channels:<team id>"
 * → a JSON array of channels, "team:<team id>" → the team's JSON object. */
typedef struct fake_datum {
    char *key, *value;
} fake_datum;

typedef struct host {
    runtime rt;
    config cfg;
    int open;
    fake_rule *rules;
    int nrules;
    fake_record *recs;
    int nrecs, caprecs;
    long next_id;
    fake_datum *data;
    int ndata;
    char *default_tz;             /* owned copies of options */
    char *app_id;
    char **logs;
    int nlogs, caplogs;
    lua_State *L;                 /* busted's state, for nothing but errors */
} host;

static host *current;             /* virtual time is process-wide: one live host at a time */

/* ---- the fake connector ---------------------------------------------------------------- */

static char *url_path(const char *url)
{
    const char *p = strstr(url, "://");
    p = p ? strchr(p + 3, '/') : NULL;
    if (!p)
        return strdup("/");
    int n = 0;
    char *out = curl_easy_unescape(NULL, p, 0, &n);
    char *copy = out ? strdup(out) : strdup(p);
    curl_free(out);
    return copy;
}

static const char *datum(const host *h, const char *kind, const char *id, size_t id_len)
{
    size_t kl = strlen(kind);
    for (int i = 0; i < h->ndata; i++) {
        const char *k = h->data[i].key;
        if (strncmp(k, kind, kl) == 0 && k[kl] == ':' && strlen(k + kl + 1) == id_len &&
            strncmp(k + kl + 1, id, id_len) == 0)
            return h->data[i].value;
    }
    return NULL;
}

static void not_faked(http_fake_answer *a)
{
    a->status = 404;
    a->body = strdup("{\"error\":{\"code\":\"NotFound\",\"message\":\"not faked\"}}");
}

static void answer_json(http_fake_answer *a, long status, json_t *doc)
{
    a->status = status;
    a->body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    if (!a->body)
        not_faked(a);
    json_decref(doc);
}

/* A query parameter's value (the path is already decoded), or NULL. */
static char *query_param(const char *path, const char *name)
{
    const char *q = strchr(path, '?');
    size_t n = strlen(name);
    for (const char *p = q; p; p = strchr(p + 1, '&')) {
        if (strncmp(p + 1, name, n) == 0 && p[1 + n] == '=')
            return strndup(p + 2 + n, strcspn(p + 2 + n, "&"));
    }
    return NULL;
}

/* GET on a roster: /v3/conversations/{id}/pagedmembers, /members, /members/{member}. rest is
 * what follows "/v3/conversations/". Returns 0 when it is not a roster read. */
static int roster_answer(const host *h, const char *rest, http_fake_answer *a)
{
    size_t id_len = strcspn(rest, "/?");
    const char *tail = rest + id_len;
    size_t base_len = id_len;
    const char *mid = memmem(rest, id_len, ";messageid=", 11);  /* a thread: its channel's roster */
    if (mid)
        base_len = (size_t)(mid - rest);
    int paged = strncmp(tail, "/pagedmembers", 13) == 0 && (tail[13] == 0 || tail[13] == '?');
    int all = strcmp(tail, "/members") == 0 || strcmp(tail, "/members/") == 0;
    int one = !all && strncmp(tail, "/members/", 9) == 0;
    if (!paged && !all && !one)
        return 0;
    const char *list = datum(h, "members", rest, base_len);
    json_t *members = list ? json_loads(list, 0, NULL) : NULL;
    if (!json_is_array(members)) {
        json_decref(members);
        a->status = 404;
        a->body = strdup("{\"error\":{\"code\":\"NotFound\",\"message\":\"not faked: no roster for "
                         "this conversation (bot:roster)\"}}");
        return 1;
    }
    if (all) {
        answer_json(a, 200, members);
        return 1;
    }
    if (one) {
        const char *want = tail + 9;
        size_t i;
        json_t *m;
        json_array_foreach(members, i, m) {
            const char *keys[] = {"id", "aadObjectId", "objectId", "userPrincipalName", "email"};
            for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
                const char *v = json_string_value(json_object_get(m, keys[k]));
                if (v && strcasecmp(v, want) == 0) {
                    answer_json(a, 200, json_incref(m));
                    json_decref(members);
                    return 1;
                }
            }
        }
        json_decref(members);
        a->status = 404;
        a->body = strdup("{\"error\":{\"code\":\"MemberNotFoundInConversation\","
                         "\"message\":\"The member was not found in the conversation.\"}}");
        return 1;
    }
    /* a page: pageSize as asked, no more than the roster's own page size; the continuation token
     * is the offset of the next page, opaque to the runtime */
    char *size_s = query_param(tail, "pageSize"), *token = query_param(tail, "continuationToken");
    long size = size_s ? strtol(size_s, NULL, 10) : 200;
    const char *cap = datum(h, "pagesize", rest, base_len);
    if (cap && strtol(cap, NULL, 10) > 0 && strtol(cap, NULL, 10) < size)
        size = strtol(cap, NULL, 10);
    if (size < 1)
        size = 1;
    long from = 0;
    if (token && strncmp(token, "kit-page-", 9) == 0)
        from = strtol(token + 9, NULL, 10);
    int bad_token = token && (strncmp(token, "kit-page-", 9) != 0 || from < 0 ||
                              (size_t)from > json_array_size(members));
    free(size_s);
    free(token);
    if (bad_token) {
        json_decref(members);
        a->status = 400;
        a->body = strdup("{\"error\":{\"code\":\"BadArgument\",\"message\":\"invalid continuation token\"}}");
        return 1;
    }
    json_t *page = json_array();
    size_t n = json_array_size(members);
    for (size_t i = (size_t)from; i < n && i < (size_t)(from + size); i++)
        json_array_append(page, json_array_get(members, i));
    json_t *doc = json_object();
    json_object_set_new(doc, "members", page);
    if ((size_t)(from + size) < n) {
        char *next = errf("kit-page-%ld", from + size);
        json_object_set_new(doc, "continuationToken", json_string(next ? next : ""));
        free(next);
    }
    json_decref(members);
    answer_json(a, 200, doc);
    return 1;
}

/* GET /v3/teams/{id} and /v3/teams/{id}/conversations. */
static void team_answer(const host *h, const char *rest, http_fake_answer *a)
{
    size_t id_len = strcspn(rest, "/?");
    const char *tail = rest + id_len;
    if (strcmp(tail, "/conversations") == 0) {
        const char *list = datum(h, "channels", rest, id_len);
        json_t *channels = list ? json_loads(list, 0, NULL) : NULL;
        if (json_is_array(channels)) {
            json_t *doc = json_object();
            json_object_set_new(doc, "conversations", channels);
            answer_json(a, 200, doc);
            return;
        }
        json_decref(channels);
    } else if (*tail == 0 || *tail == '?') {
        const char *team = datum(h, "team", rest, id_len);
        json_t *doc = team ? json_loads(team, 0, NULL) : NULL;
        if (json_is_object(doc)) {
            answer_json(a, 200, doc);
            return;
        }
        json_decref(doc);
    }
    a->status = 404;
    a->body = strdup("{\"error\":{\"code\":\"NotFound\",\"message\":\"not faked: no such team "
                     "(bot:team_details, bot:channels)\"}}");
}

/* What Teams answers when no rule says otherwise. */
static void default_answer(host *h, const char *method, const char *path, const char *body,
                           size_t len, http_fake_answer *a)
{
    const char *teams = strstr(path, "/v3/teams/");
    if (teams && strcmp(method, "GET") == 0) {
        team_answer(h, teams + strlen("/v3/teams/"), a);
        return;
    }
    const char *conv = strstr(path, "/v3/conversations");
    if (!conv) {
        not_faked(a);
        return;
    }
    conv += strlen("/v3/conversations");
    if (strcmp(method, "GET") == 0 && *conv == '/' && roster_answer(h, conv + 1, a))
        return;
    if (strcmp(method, "POST") == 0 && (*conv == 0 || strcmp(conv, "/") == 0)) {
        json_error_t jerr;
        json_t *p = json_loadb(body, len, 0, &jerr);
        long n = ++h->next_id;
        if (json_is_true(json_object_get(p, "isGroup"))) {
            const char *ch = json_string_value(json_object_get(json_object_get(
                json_object_get(p, "channelData"), "channel"), "id"));
            a->body = errf("{\"id\":\"%s;messageid=%ld\",\"activityId\":\"%ld\"}", ch ? ch : "19:channel",
                          n, n);
        } else {
            const char *user = json_string_value(json_object_get(
                json_array_get(json_object_get(p, "members"), 0), "id"));
            a->body = errf("{\"id\":\"a:%s\"}", user ? user : "user");
        }
        json_decref(p);
        a->status = 201;
        return;
    }
    const char *acts = strstr(conv, "/activities");
    if (strcmp(method, "POST") == 0 && acts) {
        a->status = 201;
        a->body = errf("{\"id\":\"%ld\"}", ++h->next_id);
    } else if (strcmp(method, "PUT") == 0 && acts) {
        a->status = 200;
        a->body = errf("{\"id\":\"%s\"}", acts + strlen("/activities/"));
    } else if (strcmp(method, "DELETE") == 0) {
        a->status = 200;
        a->body = strdup("");
    } else {
        a->status = 404;
        a->body = strdup("{\"error\":{\"code\":\"NotFound\",\"message\":\"not faked\"}}");
    }
}

static void fake(const char *method, const char *url, const char *const *headers, const char *body,
                 size_t body_len, http_fake_answer *a, void *ud)
{
    (void)headers;
    host *h = ud;
    char *path = url_path(url);
    fake_rule *rule = NULL;
    for (int i = 0; i < h->nrules && !rule; i++) {
        fake_rule *r = &h->rules[i];
        if (r->times == 0 || (r->method && strcmp(r->method, method) != 0))
            continue;
        if (!*r->match || (path && strstr(path, r->match)))
            rule = r;
    }
    if (rule) {
        if (rule->times > 0)
            rule->times--;
        a->status = rule->status;
        a->body = rule->body ? strdup(rule->body) : strdup("");
        a->retry_after = rule->retry_after ? strdup(rule->retry_after) : NULL;
        a->delay_ms = rule->delay_ms;
        a->reset = rule->reset;
        a->timeout = rule->timeout;
        if (rule->status >= 200 && rule->status < 300 && !rule->body)
            default_answer(h, method, path ? path : "/", body ? body : "", body_len, a),
                a->status = rule->status;
    } else {
        default_answer(h, method, path ? path : "/", body ? body : "", body_len, a);
    }
    if (h->nrecs == h->caprecs) {
        int cap = h->caprecs ? h->caprecs * 2 : 64;
        fake_record *n = realloc(h->recs, (size_t)cap * sizeof *n);
        if (!n) {
            free(path);
            return;
        }
        h->recs = n;
        h->caprecs = cap;
    }
    fake_record *rec = &h->recs[h->nrecs++];
    rec->method = strdup(method);
    rec->url = strdup(url);
    rec->path = path;
    rec->body = body ? strndup(body, body_len) : NULL;
    rec->answer = a->reset || a->timeout || !a->body ? NULL : strdup(a->body);
    rec->at = clock_wall_ms();
    rec->status = a->reset || a->timeout ? 0 : a->status;
}

static void clear_records(host *h)
{
    for (int i = 0; i < h->nrecs; i++) {
        free(h->recs[i].method);
        free(h->recs[i].url);
        free(h->recs[i].path);
        free(h->recs[i].body);
        free(h->recs[i].answer);
    }
    h->nrecs = 0;
}

static void clear_rules(host *h)
{
    for (int i = 0; i < h->nrules; i++) {
        free(h->rules[i].match);
        free(h->rules[i].method);
        free(h->rules[i].body);
        free(h->rules[i].retry_after);
    }
    free(h->rules);
    h->rules = NULL;
    h->nrules = 0;
}

static void sink(const char *line, size_t len, void *ud)
{
    host *h = ud;
    if (h->nlogs == h->caplogs) {
        int cap = h->caplogs ? h->caplogs * 2 : 64;
        char **n = realloc(h->logs, (size_t)cap * sizeof *n);
        if (!n)
            return;
        h->logs = n;
        h->caplogs = cap;
    }
    h->logs[h->nlogs++] = strndup(line, len && line[len - 1] == '\n' ? len - 1 : len);
}

/* ---- host lifetime ------------------------------------------------------------------------ */

static void host_close(host *h)
{
    if (!h->open)
        return;
    h->open = 0;
    runtime *rt = &h->rt;
    scheduler_free(rt->scheduler);
    broadcast_free(rt->broadcaster);
    vm_free(rt->vm);
    outbox_free(rt->outbox);
    connector_free(rt->conn);
    http_client_free(rt->http);
    redelivery_free(rt->seen);
    store_close(rt->store);
    clock_virtual_reset();
    event_base_free(rt->base);
    config_free(&h->cfg);
    free(h->default_tz);
    h->default_tz = NULL;
    free(h->app_id);
    h->app_id = NULL;
    for (int i = 0; i < h->ndata; i++) {
        free(h->data[i].key);
        free(h->data[i].value);
    }
    free(h->data);
    h->data = NULL;
    h->ndata = 0;
    clear_records(h);
    free(h->recs);
    h->recs = NULL;
    h->caprecs = 0;
    clear_rules(h);
    for (int i = 0; i < h->nlogs; i++)
        free(h->logs[i]);
    free(h->logs);
    h->logs = NULL;
    h->nlogs = h->caplogs = 0;
    if (current == h) {
        current = NULL;
        log_set_sink(NULL, NULL);
    }
}

static long opt_int(lua_State *L, int t, const char *k, long def)
{
    lua_getfield(L, t, k);
    long v = lua_isnil(L, -1) ? def : (long)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    return v;
}

/* core.new{script=, start_ms=, tenant_rps=, governor=, max_attempts=, retry_base_ms=,
 *          default_tz=, app_id=, response_deadline_ms=, task_slice_ms=, lua_memory_mb=} → host */
static int t_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *script = lua_field_string(L, 1, "script");
    luaL_argcheck(L, script, 1, "needs 'script'");
    if (current)
        host_close(current);
    host *h = lua_newuserdatauv(L, sizeof *h, 0);
    memset(h, 0, sizeof *h);
    luaL_setmetatable(L, HOST_MT);
    char *argv[] = {"herald", "run", "--dev", (char *)script, NULL};
    char *err = NULL;
    if (config_load(&h->cfg, 4, argv, &err) != 0) {
        lua_pushfstring(L, "teams.testing: %s", err ? err : "bad configuration");
        free(err);
        config_free(&h->cfg);
        return lua_error(L);
    }
    config *c = &h->cfg;
    free(c->db_path);
    c->db_path = strdup(":memory:");
    c->tenant_rps = opt_int(L, 1, "tenant_rps", 50);
    lua_getfield(L, 1, "governor");
    c->governor = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_pop(L, 1);
    c->outbox_max_attempts = opt_int(L, 1, "max_attempts", 8);
    c->retry_base_ms = opt_int(L, 1, "retry_base_ms", 1000);
    c->response_deadline_ms = opt_int(L, 1, "response_deadline_ms", 4000);
    c->task_slice_ms = opt_int(L, 1, "task_slice_ms", 1000);
    c->lua_memory_bytes = (size_t)opt_int(L, 1, "lua_memory_mb", 64) << 20;
    if (lua_field_string(L, 1, "default_tz") && (h->default_tz = strdup(lua_field_string(L, 1, "default_tz"))))
        c->default_tz = h->default_tz;
    /* the bot's identity from the start, as a deployed bot's app id: create_conversation works
     * before any activity stored a reference */
    if (lua_field_string(L, 1, "app_id") && (h->app_id = strdup(lua_field_string(L, 1, "app_id"))))
        c->app_id = h->app_id;
    int64_t start = (int64_t)opt_int(L, 1, "start_ms", 1798761600000L); /* 2027-01-01T00:00Z */

    runtime *rt = &h->rt;
    rt->cfg = c;
    rt->base = event_base_new();
    clock_virtual(rt->base, start);
    current = h;
    h->L = L;
    log_set_sink(sink, h);
    rt->started_ms = clock_mono_ms();
    rt->store = store_open(":memory:", &err);
    rt->seen = rt->store ? redelivery_new(100000) : NULL;
    http_client_config hc = {.connect_timeout_ms = 5000, .max_host_connections = 64, .allow_http = 1};
    rt->http = rt->seen ? http_client_new(rt->base, &hc, &err) : NULL;
    if (rt->http)
        http_client_set_fake(rt->http, fake, h);
    connector_config cc = {.base = rt->base, .request_timeout_ms = c->connector_timeout_ms};
    rt->conn = rt->http ? connector_new(rt->http, &cc) : NULL;
    outbox_config oc = outbox_config_from(c);
    rt->outbox = rt->conn ? outbox_new(rt->base, rt->store, rt->conn, &oc, &err) : NULL;
    vm_config vc = vm_config_from(c);
    rt->vm = rt->outbox ? vm_new(rt->base, &vc, rt, &err) : NULL;
    h->open = 1;
    if (rt->vm) {
        lua_teams_install(rt->vm);
        rt->scheduler = scheduler_new(rt, &lua_schedule_script, &err);
        rt->broadcaster = rt->scheduler ? broadcast_new(rt, &err) : NULL;
        if (!rt->broadcaster) {
            scheduler_free(rt->scheduler);
            rt->scheduler = NULL;
        }
    }
    if (!rt->scheduler || vm_load_script(rt->vm, script, &err) < 0) {
        lua_pushfstring(L, "teams.testing: cannot load %s: %s", script, err ? err : "setup failed");
        free(err);
        host_close(h);
        return lua_error(L);
    }
    clock_settle();
    return 1;
}

static host *check_host(lua_State *L)
{
    host *h = luaL_checkudata(L, 1, HOST_MT);
    if (!h->open)
        luaL_error(L, "teams.testing: this bot was reset or closed");
    return h;
}

typedef struct reply_box {
    int done, status, abandoned;
    char *body;
} reply_box;

static void on_reply(int status, const char *body, size_t len, void *ud)
{
    reply_box *b = ud;
    if (b->abandoned) {           /* the test moved on; the late answer is only dropped */
        free(b);
        return;
    }
    b->done = 1;
    b->status = status;
    b->body = strndup(body, len);
}

/* Runs one request through a virtual exchange and pushes status, body — or nil, nil while its
 * handler is still waiting (the answer then comes at the response deadline, as over HTTP). */
typedef void (*virtual_handler)(http_exchange *x, const char *name, const char *body, size_t len,
                                runtime *rt);

static void call_inbound(http_exchange *x, const char *name, const char *body, size_t len,
                         runtime *rt)
{
    (void)name;
    activity_request(x, body, len, rt);
}

static void call_notify(http_exchange *x, const char *name, const char *body, size_t len,
                        runtime *rt)
{
    notify_request(x, name, body, len, rt);
}

static int run_virtual(lua_State *L, host *h, virtual_handler fn, const char *name,
                       const char *body, size_t len)
{
    reply_box *b = calloc(1, sizeof *b);
    http_exchange *x = b ? http_exchange_virtual(on_reply, b) : NULL;
    if (!x) {
        free(b);
        return luaL_error(L, "out of memory");
    }
    fn(x, name, body, len, &h->rt);
    clock_settle();
    if (!b->done) {
        b->abandoned = 1;         /* on_reply frees it when the deadline answers */
        lua_pushnil(L);
        lua_pushnil(L);
        return 2;
    }
    lua_pushinteger(L, b->status);
    lua_pushstring(L, b->body ? b->body : "");
    free(b->body);
    free(b);
    return 2;
}

/* host:post(activity_json) → status, body */
static int t_post(lua_State *L)
{
    host *h = check_host(L);
    size_t len;
    const char *json = luaL_checklstring(L, 2, &len);
    return run_virtual(L, h, call_inbound, NULL, json, len);
}

/* host:notify(name, json) → status, body (as POST /api/notify/{name}; dev mode: no secret) */
static int t_notify(lua_State *L)
{
    host *h = check_host(L);
    const char *name = luaL_checkstring(L, 2);
    size_t len = 0;
    const char *json = luaL_optlstring(L, 3, "", &len);
    return run_virtual(L, h, call_notify, name, json, len);
}

static int t_advance(lua_State *L)
{
    host *h = check_host(L);
    (void)h;
    lua_Number s = luaL_checknumber(L, 2);
    luaL_argcheck(L, s >= 0, 2, "cannot go back in time");
    clock_advance((int64_t)(s * 1000.0 + 0.5));
    return 0;
}

static int t_settle(lua_State *L)
{
    check_host(L);
    clock_settle();
    return 0;
}

static int t_now(lua_State *L)
{
    check_host(L);
    lua_pushinteger(L, clock_wall_ms());
    return 1;
}

/* host:requests() → { {method, url, path, body, at, status}, ... } */
static int t_requests(lua_State *L)
{
    host *h = check_host(L);
    lua_createtable(L, h->nrecs, 0);
    for (int i = 0; i < h->nrecs; i++) {
        fake_record *r = &h->recs[i];
        lua_createtable(L, 0, 6);
        lua_pushstring(L, r->method);
        lua_setfield(L, -2, "method");
        lua_pushstring(L, r->url);
        lua_setfield(L, -2, "url");
        lua_pushstring(L, r->path ? r->path : "");
        lua_setfield(L, -2, "path");
        if (r->body) {
            lua_pushstring(L, r->body);
            lua_setfield(L, -2, "body");
        }
        if (r->answer) {
            lua_pushstring(L, r->answer);
            lua_setfield(L, -2, "answer");
        }
        lua_pushinteger(L, r->at);
        lua_setfield(L, -2, "at");
        lua_pushinteger(L, r->status);
        lua_setfield(L, -2, "status");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int t_clear_requests(lua_State *L)
{
    clear_records(check_host(L));
    return 0;
}

/* host:respond{match=, method=, status=, body=, retry_after=, delay_ms=, reset=, timeout=, times=} */
static int t_respond(lua_State *L)
{
    host *h = check_host(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    fake_rule *n = realloc(h->rules, (size_t)(h->nrules + 1) * sizeof *n);
    if (!n)
        return luaL_error(L, "out of memory");
    h->rules = n;
    fake_rule *r = &h->rules[h->nrules++];
    memset(r, 0, sizeof *r);
    const char *match = lua_field_string(L, 2, "match");
    r->match = strdup(match ? match : "");
    r->method = lua_field_string(L, 2, "method") ? strdup(lua_field_string(L, 2, "method")) : NULL;
    r->status = opt_int(L, 2, "status", 200);
    r->body = lua_field_string(L, 2, "body") ? strdup(lua_field_string(L, 2, "body")) : NULL;
    r->retry_after = lua_field_string(L, 2, "retry_after") ? strdup(lua_field_string(L, 2, "retry_after")) : NULL;
    r->delay_ms = opt_int(L, 2, "delay_ms", 0);
    lua_getfield(L, 2, "reset");
    r->reset = lua_toboolean(L, -1);
    lua_getfield(L, 2, "timeout");
    r->timeout = lua_toboolean(L, -1);
    lua_pop(L, 2);
    r->times = (int)opt_int(L, 2, "times", -1);
    return 0;
}

/* host:fake_data(key, value|nil): sets or removes what the fake answers roster, channel and
 * team reads with (see fake_datum) */
static int t_fake_data(lua_State *L)
{
    host *h = check_host(L);
    const char *key = luaL_checkstring(L, 2);
    const char *value = luaL_optstring(L, 3, NULL);
    for (int i = 0; i < h->ndata; i++) {
        if (strcmp(h->data[i].key, key) != 0)
            continue;
        free(h->data[i].value);
        if (value && (h->data[i].value = strdup(value)))
            return 0;
        free(h->data[i].key);
        h->data[i] = h->data[--h->ndata];
        if (value)
            return luaL_error(L, "out of memory");
        return 0;
    }
    if (!value)
        return 0;
    fake_datum *n = realloc(h->data, (size_t)(h->ndata + 1) * sizeof *n);
    if (!n)
        return luaL_error(L, "out of memory");
    h->data = n;
    n[h->ndata].key = strdup(key);
    n[h->ndata].value = strdup(value);
    if (!n[h->ndata].key || !n[h->ndata].value) {
        free(n[h->ndata].key);
        free(n[h->ndata].value);
        return luaL_error(L, "out of memory");
    }
    h->ndata++;
    return 0;
}

/* host:reference(id) → the stored reference as teams.conversation(id) gives it, or nil */
static int t_reference(lua_State *L)
{
    host *h = check_host(L);
    store_reference r;
    char *err = NULL;
    int found = store_get_reference(h->rt.store, luaL_checkstring(L, 2), &r, &err);
    if (found < 0) {
        lua_pushfstring(L, "store error: %s", err ? err : "?");
        free(err);
        return lua_error(L);
    }
    if (found == 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_teams_push_reference(L, &r);
    store_reference_clear(&r);
    return 1;
}

/* host:schedule(id) → the schedule as teams.schedule.get(id) gives it, or nil */
static int t_schedule(lua_State *L)
{
    host *h = check_host(L);
    return lua_schedule_push_get(L, h->rt.scheduler, luaL_checkstring(L, 2));
}

/* host:schedules(handler, conversation) → every matching schedule as teams.schedule.list gives
 * them (its order: by id) */
static int t_schedules(lua_State *L)
{
    host *h = check_host(L);
    const char *handler = luaL_optstring(L, 2, NULL), *conv = luaL_optstring(L, 3, NULL);
    lua_settop(L, 3);
    lua_newtable(L);                                        /* [.. out] */
    char *after = NULL;
    for (;;) {
        lua_schedule_push_list(L, h->rt.scheduler, handler, conv, after, 500);  /* [.. out page] */
        free(after);
        after = NULL;
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            lua_rawseti(L, -3, (lua_Integer)lua_rawlen(L, -3) + 1);
        }
        if (n < 500) {
            lua_pop(L, 1);
            break;
        }
        lua_rawgeti(L, -1, n);
        lua_getfield(L, -1, "id");
        after = strdup(lua_tostring(L, -1));
        lua_pop(L, 3);
        if (!after)
            return luaL_error(L, "out of memory");
    }
    return 1;
}

/* host:references{tenant=, scope=, team=, user=, include_uninstalled=} → every matching stored
 * reference, in the store's order, as teams.conversations yields them */
static int t_references(lua_State *L)
{
    host *h = check_host(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    store_filter f;
    lua_teams_read_filter(L, 2, &f);
    lua_newtable(L);
    char *after = NULL, *err = NULL;
    for (;;) {
        lua_Unsigned before = lua_rawlen(L, -1);
        if (store_list_references(h->rt.store, &f, after, 500, lua_teams_append_reference, L,
                                  &err) < 0) {
            char msg[1024];       /* freed before the raise: C memory held across it leaks */
            snprintf(msg, sizeof msg, "store error: %s", err ? err : "?");
            free(after);
            free(err);
            return luaL_error(L, "%s", msg);
        }
        lua_Unsigned now = lua_rawlen(L, -1);
        free(after);
        after = NULL;
        if (now - before < 500)
            break;
        lua_rawgeti(L, -1, (lua_Integer)now);
        lua_getfield(L, -1, "id");
        after = strdup(lua_tostring(L, -1));
        lua_pop(L, 2);
        if (!after)
            return luaL_error(L, "out of memory");
    }
    return 1;
}

static int t_clear_responses(lua_State *L)
{
    clear_rules(check_host(L));
    return 0;
}

/* host:query(sql, ...) → rows: a read-only window onto the database for assertions */
static int t_query(lua_State *L)
{
    host *h = check_host(L);
    const char *sql = luaL_checkstring(L, 2);
    sqlite3 *db = store_db(h->rt.store);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return luaL_error(L, "query: %s", sqlite3_errmsg(db));
    if (!sqlite3_stmt_readonly(st)) {
        sqlite3_finalize(st);
        return luaL_error(L, "query: only read-only statements");
    }
    int nargs = lua_gettop(L) - 2;
    for (int i = 1; i <= nargs; i++) {
        if (lua_isinteger(L, 2 + i))
            sqlite3_bind_int64(st, i, lua_tointeger(L, 2 + i));
        else if (lua_isnil(L, 2 + i))
            sqlite3_bind_null(st, i);
        else
            sqlite3_bind_text(st, i, luaL_checkstring(L, 2 + i), -1, SQLITE_TRANSIENT);
    }
    lua_newtable(L);
    int row = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        lua_newtable(L);
        for (int c = 0; c < sqlite3_column_count(st); c++) {
            switch (sqlite3_column_type(st, c)) {
            case SQLITE_INTEGER: lua_pushinteger(L, sqlite3_column_int64(st, c)); break;
            case SQLITE_FLOAT: lua_pushnumber(L, sqlite3_column_double(st, c)); break;
            case SQLITE_NULL: lua_pushnil(L); break;
            default: lua_pushstring(L, (const char *)sqlite3_column_text(st, c));
            }
            lua_setfield(L, -2, sqlite3_column_name(st, c));
        }
        lua_rawseti(L, -2, ++row);
    }
    sqlite3_finalize(st);
    return 1;
}

static int t_logs(lua_State *L)
{
    host *h = check_host(L);
    lua_createtable(L, h->nlogs, 0);
    for (int i = 0; i < h->nlogs; i++) {
        lua_pushstring(L, h->logs[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int t_stats(lua_State *L)
{
    host *h = check_host(L);
    outbox_stats os;
    outbox_get_stats(h->rt.outbox, &os);
    lua_createtable(L, 0, 9);
    lua_pushinteger(L, task_count(h->rt.vm));
    lua_setfield(L, -2, "tasks");
    lua_pushinteger(L, vm_ref_count(h->rt.vm));
    lua_setfield(L, -2, "refs");
    lua_pushinteger(L, (lua_Integer)os.queued);
    lua_setfield(L, -2, "queued");
    lua_pushinteger(L, (lua_Integer)os.sent);
    lua_setfield(L, -2, "sent");
    lua_pushinteger(L, (lua_Integer)os.retries);
    lua_setfield(L, -2, "retries");
    lua_pushinteger(L, (lua_Integer)os.throttled);
    lua_setfield(L, -2, "throttled");
    lua_pushinteger(L, (lua_Integer)os.resends);
    lua_setfield(L, -2, "resends");
    lua_pushinteger(L, (lua_Integer)h->rt.handler_errors);
    lua_setfield(L, -2, "handler_errors");
    lua_pushinteger(L, clock_virtual_pending());
    lua_setfield(L, -2, "timers");
    return 1;
}

static int t_close(lua_State *L)
{
    host *h = luaL_checkudata(L, 1, HOST_MT);
    host_close(h);
    return 0;
}

static const luaL_Reg host_methods[] = {
    {"advance", t_advance},
    {"clear_requests", t_clear_requests},
    {"clear_responses", t_clear_responses},
    {"close", t_close},
    {"fake_data", t_fake_data},
    {"logs", t_logs},
    {"notify", t_notify},
    {"now", t_now},
    {"post", t_post},
    {"query", t_query},
    {"reference", t_reference},
    {"references", t_references},
    {"requests", t_requests},
    {"respond", t_respond},
    {"schedule", t_schedule},
    {"schedules", t_schedules},
    {"settle", t_settle},
    {"stats", t_stats},
    {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"new", t_new},
    {NULL, NULL},
};

int luaopen_herald_testing_core(lua_State *L)
{
    static int curl_ready;
    if (!curl_ready) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        curl_ready = 1;
    }
    log_set_level(LOG_INFO);
    if (luaL_newmetatable(L, HOST_MT)) {
        luaL_newlib(L, host_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, t_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}
