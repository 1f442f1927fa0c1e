/* main.c — the herald command line: parse the configuration, wire store, HTTP client/server,
 * connector and the Lua generation onto one event loop, handle signals, shut down in bounds. */
#include "activity.h"
#include "auth_in.h"
#include "clock.h"
#include "auth_out.h"
#include "broadcast.h"
#include "check.h"
#include "config.h"
#include "connector.h"
#include "http_client.h"
#include "http_server.h"
#include "log.h"
#include "lua_inbound.h"
#include "lua_schedule.h"
#include "lua_teams.h"
#include "notify_auth.h"
#include "notify_ops.h"
#include "outbox.h"
#include "redelivery.h"
#include "reload.h"
#include "scheduler.h"
#include "report.h"
#include "runtime.h"
#include "scaffold.h"
#include "store.h"
#include "task.h"
#include "trust.h"
#include "vm.h"
#include "quarantine.h"
#include "watchdog.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <event2/event.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct event *shutdown_timer, *shutdown_poll;

/* What /healthz and /metrics report, gathered in one place. */
typedef struct snapshot {
    auth_in_stats ai;
    auth_out_stats ao;
    outbox_stats os;
    reload_stats rs;
} snapshot;

static void take_snapshot(runtime *rt, snapshot *sn)
{
    memset(sn, 0, sizeof *sn);
    if (rt->auth_in)
        auth_in_get_stats(rt->auth_in, &sn->ai);
    if (rt->auth_out)
        auth_out_get_stats(rt->auth_out, &sn->ao);
    if (rt->outbox)
        outbox_get_stats(rt->outbox, &sn->os);
    if (rt->reloader)
        reloader_get_stats(rt->reloader, &sn->rs);
}

static int all_tasks(runtime *rt)
{
    int n = task_count(rt->vm);
    if (rt->reloader) {
        reload_stats rs;
        reloader_get_stats(rt->reloader, &rs);
        n += rs.retired_tasks;
    }
    return n;
}

/* The admin routes (POST /-/reload, /-/broadcast, /-/clock; GET /metrics): http_server.c serves
 * them on the admin socket and the TCP admin listener only. */
static char *admin(const char *what, const char *body, size_t len, int *status, void *ud)
{
    runtime *rt = ud;
    char *s = NULL;
    reload_stats rs = {0};
    if (strcmp(what, "broadcast") == 0) {
        json_error_t jerr;
        json_t *j = json_loadb(body, len, 0, &jerr);
        json_t *id = json_object_get(j, "id");
        const char *action = json_string_value(json_object_get(j, "action"));
        char *err = NULL;
        int rc = json_is_integer(id) && action
                     ? broadcast_control(rt->broadcaster, json_integer_value(id), action, &err)
                     : (err = strdup("want {\"id\": N, \"action\": \"pause|resume|cancel\"}"),
                        BROADCAST_E_BAD_ACTION);
        json_decref(j);
        *status = rc == 0                        ? 200
                  : rc == BROADCAST_E_NOT_FOUND  ? 404
                  : rc == BROADCAST_E_FINISHED   ? 409
                  : rc == BROADCAST_E_BAD_ACTION ? 400
                                                 : 500;
        const char *code = rc == BROADCAST_E_NOT_FOUND  ? "not_found"
                           : rc == BROADCAST_E_FINISHED ? "finished"
                           : rc == BROADCAST_E_BAD_ACTION ? "bad_request"
                                                          : "no_memory";
        json_t *ans = json_pack("{s:b, s:s?, s:s?}", "ok", rc == 0, "error", err, "code",
                                rc == 0 ? NULL : code);
        s = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
        json_decref(ans);
        free(err);
        return s;
    }
    if (strcmp(what, "clock") == 0) {
        /* tests only: {"advance_s": N} moves the wall clock schedules and references see */
        json_error_t jerr;
        json_t *j = rt->cfg->test_clock ? json_loadb(body, len, 0, &jerr) : NULL;
        json_t *adv = json_object_get(j, "advance_s");
        if (!rt->cfg->test_clock || !json_is_number(adv)) {
            *status = rt->cfg->test_clock ? 400 : 404;
            json_decref(j);
            return strdup(rt->cfg->test_clock ? "{\"error\":\"want {\\\"advance_s\\\": N}\"}"
                                              : "{\"error\":\"HERALD_TEST_CLOCK is off\"}");
        }
        clock_shift_wall((int64_t)(json_number_value(adv) * 1000));
        json_decref(j);
        scheduler_poke(rt->scheduler);
        if (asprintf(&s, "{\"now_ms\":%lld}", (long long)clock_wall_ms()) < 0)
            s = NULL;
        return s;
    }
    if (strcmp(what, "reload") == 0) {
        if (rt->stopping) {   /* a new generation would only add tasks to the drain */
            *status = 503;
            return strdup("{\"reloaded\":false,\"error\":\"herald is stopping\"}");
        }
        int rc = reloader_reload(rt->reloader, "requested");
        if (rc == 0)
            scheduler_handlers_changed(rt->scheduler);
        reloader_get_stats(rt->reloader, &rs);
        *status = rc == 0 ? 200 : 422;
        json_t *j = json_pack("{s:b, s:i, s:s?}", "reloaded", rc == 0, "generation", rs.generation,
                              "error", rs.last_error);
        s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        return s;
    }
    snapshot sn;
    take_snapshot(rt, &sn);
    /* the same states, names and counts as /healthz outbox.states */
    char gauges[OUTBOX_NSTATES * 64];
    size_t gl = 0;
    for (int i = 0; i < OUTBOX_NSTATES; i++)
        gl += (size_t)snprintf(gauges + gl, sizeof gauges - gl,
                               "herald_outbox_operations{state=\"%s\"} %llu\n",
                               outbox_state_names[i], (unsigned long long)sn.os.states[i]);
    if (asprintf(&s,
                 "# TYPE herald_activities_total counter\nherald_activities_total %llu\n"
                 "# TYPE herald_handler_errors_total counter\nherald_handler_errors_total %llu\n"
                 "# TYPE herald_redelivered_total counter\nherald_redelivered_total %llu\n"
                 "# TYPE herald_rejected_total counter\nherald_rejected_total %llu\n"
                 "# TYPE herald_unauthorized_total counter\nherald_unauthorized_total %llu\n"
                 "# TYPE herald_tasks gauge\nherald_tasks %d\n"
                 "# TYPE herald_lua_memory_bytes gauge\nherald_lua_memory_bytes %zu\n"
                 "# TYPE herald_generation gauge\nherald_generation %d\n"
                 "# TYPE herald_reloads_total counter\nherald_reloads_total %d\n"
                 "# TYPE herald_reload_failures_total counter\nherald_reload_failures_total %d\n"
                 "# TYPE herald_reload_last_failed gauge\nherald_reload_last_failed %d\n"
                 "# TYPE herald_outbox_queued gauge\nherald_outbox_queued %llu\n"
                 "# TYPE herald_outbox_in_flight gauge\nherald_outbox_in_flight %llu\n"
                 "# TYPE herald_outbox_sent_total counter\nherald_outbox_sent_total %llu\n"
                 "# TYPE herald_outbox_failed_total counter\nherald_outbox_failed_total %llu\n"
                 "# TYPE herald_outbox_retries_total counter\nherald_outbox_retries_total %llu\n"
                 "# TYPE herald_outbox_throttled_total counter\nherald_outbox_throttled_total %llu\n"
                 "# TYPE herald_outbox_resends_total counter\nherald_outbox_resends_total %llu\n"
                 "# TYPE herald_outbox_commits_total counter\nherald_outbox_commits_total %lld\n"
                 "# TYPE herald_jwks_fetches_total counter\nherald_jwks_fetches_total %llu\n"
                 "# TYPE herald_store_writable gauge\nherald_store_writable %d\n"
                 "# TYPE herald_store_failures_total counter\nherald_store_failures_total %llu\n"
                 "# TYPE herald_outbox_operations gauge\n%s",
                 (unsigned long long)rt->activities, (unsigned long long)rt->handler_errors,
                 (unsigned long long)rt->redelivered, (unsigned long long)rt->rejected,
                 (unsigned long long)rt->unauthorized, all_tasks(rt), vm_memory(rt->vm),
                 sn.rs.generation, sn.rs.reloads, sn.rs.failures, sn.rs.last_error != NULL,
                 (unsigned long long)sn.os.queued, (unsigned long long)sn.os.in_flight,
                 (unsigned long long)sn.os.sent, (unsigned long long)sn.os.failed,
                 (unsigned long long)sn.os.retries, (unsigned long long)sn.os.throttled,
                 (unsigned long long)sn.os.resends, (long long)sn.os.commits,
                 (unsigned long long)sn.ai.key_fetches, store_writable(rt->store),
                 (unsigned long long)sn.os.store_failures, gauges) < 0)
        s = NULL;
    return s;
}

static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    runtime *rt = arg;
    if (reloader_reload(rt->reloader, "SIGHUP") == 0)
        scheduler_handlers_changed(rt->scheduler);
}

static void on_signal(evutil_socket_t sig, short what, void *arg);

/* Signals arrive here from the watchdog thread, one byte each: the loop never runs a signal
 * handler, and the watchdog still sees a SIGTERM while the loop is stuck. */
static void on_signal_pipe(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    unsigned char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == SIGHUP)
            on_sighup(SIGHUP, 0, arg);
        else
            on_signal(buf[i], 0, arg);
    }
}

/* `herald reload` / `herald broadcast pause|resume|cancel`: asks the running process over its
 * admin socket (or the TCP admin listener, with the bearer token from HERALD_ADMIN_TOKEN). */
static int admin_command(const config *cfg, const char *path, const char *body)
{
    char url[300], where[300];
    struct curl_slist *hdrs = NULL;
    const char *sock = cfg->admin_socket;
    if (sock) {
        struct stat st;
        if (stat(sock, &st) < 0) {
            fprintf(stderr, "herald: no herald is running here: no admin socket at %s (%s)\n", sock,
                    strerror(errno));
            return 1;
        }
        if (access(sock, R_OK | W_OK) < 0) {
            fprintf(stderr, "herald: cannot use the admin socket %s: %s (run this as the user herald "
                            "runs as)\n", sock, strerror(errno));
            return 1;
        }
        snprintf(url, sizeof url, "http://localhost%s", path);
        snprintf(where, sizeof where, "the admin socket %s", sock);
    } else {
        int v6 = strchr(cfg->admin_host, ':') != NULL;
        snprintf(url, sizeof url, "http://%s%s%s:%d%s", v6 ? "[" : "", cfg->admin_host, v6 ? "]" : "",
                 cfg->admin_port, path);
        snprintf(where, sizeof where, "%s", url);
    }
    CURL *c = curl_easy_init();
    if (!c)
        return 1;
    if (sock)
        curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock);
    if (!sock && cfg->admin_token) {
        char *h = NULL;
        if (asprintf(&h, "Authorization: Bearer %s", cfg->admin_token) >= 0) {
            hdrs = curl_slist_append(hdrs, h);   /* copies h */
            OPENSSL_cleanse(h, strlen(h));
            free(h);
        }
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        if (sock && rc == CURLE_COULDNT_CONNECT)
            fprintf(stderr, "herald: no herald is running here: nothing answers on %s (left by a "
                            "process that is gone?)\n", sock);
        else
            fprintf(stderr, "\nherald: cannot reach herald at %s: %s\n", where, curl_easy_strerror(rc));
        return 1;
    }
    fputc('\n', stdout);
    if (status == 401)
        fprintf(stderr, "herald: %s refused the request: set HERALD_ADMIN_TOKEN to its token\n", where);
    return status == 200 ? 0 : 1;
}

static const char *token_current(void *src) { return auth_out_current(src); }
static int token_wait(void *src, void (*ready)(void *, const char *, const char *), void *ud,
                      const char **error)
{
    return auth_out_wait(src, ready, ud, error);
}
static void token_unwait(void *src, void *ud) { auth_out_unwait(src, ud); }

/* Sets up inbound validation, outbound tokens and service URL trust (not in dev mode). */
static int setup_auth(runtime *rt, const config *cfg, char **err)
{
    auth_in_config ic = {.app_id = cfg->app_id, .openid_metadata_url = cfg->openid_metadata_url,
                         .issuer = cfg->token_issuer, .clock_skew_s = 300,
                         .refresh_interval_s = cfg->jwks_refresh_interval_s,
                         .refresh_floor_s = cfg->jwks_refresh_floor_s,
                         .fetch_timeout_ms = cfg->jwks_timeout_ms, .token_cache_max = 10000};
    rt->auth_in = auth_in_new(rt->base, rt->http, &ic, err);
    if (!rt->auth_in)
        return -1;
    auth_out_config oc = {.token_url = cfg->token_url, .client_id = cfg->app_id,
                          .client_secret = cfg->app_password, .cert_path = cfg->cert_path,
                          .key_path = cfg->key_path, .scope = cfg->oauth_scope,
                          .refresh_ahead_s = 300, .max_backoff_s = 60};
    rt->auth_out = auth_out_new(rt->base, rt->http, &oc, err);
    if (!rt->auth_out)
        return -1;
    connector_token_source ts = {token_current, token_wait, token_unwait, rt->auth_out};
    connector_set_token_source(rt->conn, &ts);
    /* the seal key is the app's secret (or its private key): what a database thief lacks */
    unsigned char key[8192];
    size_t key_len = 0;
    if (cfg->app_password) {
        key_len = strlen(cfg->app_password);
        if (key_len > sizeof key)
            key_len = sizeof key;
        memcpy(key, cfg->app_password, key_len);
    } else {
        FILE *f = fopen(cfg->key_path ? cfg->key_path : cfg->cert_path, "rb");
        if (f) {
            key_len = fread(key, 1, sizeof key, f);
            fclose(f);
        }
    }
    rt->trust = trust_new(cfg->proactive_url, cfg->trusted_service_urls, key, key_len);
    OPENSSL_cleanse(key, sizeof key);
    if (!rt->trust || connector_set_trust(rt->conn, rt->trust) < 0) {
        *err = strdup("out of memory");
        return -1;
    }
    auth_in_start(rt->auth_in);
    log_info("authentication on: app id %s, cloud %s, issuer %s", cfg->app_id, cfg->cloud,
             cfg->token_issuer);
    return 0;
}

/* A string as JSON ("null" for NULL), malloc'd: errors may hold any character. */
static char *json_text(const char *v)
{
    json_t *e = v ? json_string(v) : NULL;
    char *out = e ? json_dumps(e, JSON_ENCODE_ANY) : NULL;
    json_decref(e);
    return out ? out : strdup("null");
}

/* {"queued":n, "sent":n, ...}: a count per outbox state, in outbox_state_names' order (the
 * order and names `herald outbox --json` uses). Malloc'd; NULL when out of memory. */
static char *counts_json(const uint64_t *counts)
{
    json_t *o = json_object();
    for (int i = 0; o && i < OUTBOX_NSTATES; i++)
        json_object_set_new(o, outbox_state_names[i], json_integer((json_int_t)counts[i]));
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return s;
}

static char *health_json(void *ud)
{
    runtime *rt = ud;
    char *s = NULL;
    snapshot sn;
    take_snapshot(rt, &sn);
    char *last_error = sn.rs.last_error ? json_text(sn.rs.last_error) : NULL;
    /* readiness: a store that cannot be written refuses new work, so the process is degraded */
    int writable = store_writable(rt->store);
    char *store_error = json_text(store_last_error(rt->store));
    char *states = counts_json(sn.os.states), *finished = counts_json(sn.os.finished);
    if (asprintf(&s,
                 "{\"status\":\"%s\",\"script_quarantined\":%s,\"watchdog_restarts\":%d,\"uptime_ms\":%lld,\"tasks\":%d,\"lua_memory_bytes\":%zu,"
                 "\"activities\":%llu,\"handler_errors\":%llu,\"redelivered\":%llu,"
                 "\"rejected\":%llu,\"unauthorized\":%llu,\"outbound_in_flight\":%d,"
                 "\"jwks_fetches\":%llu,\"token_requests\":%llu,"
                 "\"reload\":{\"generation\":%d,\"reloads\":%d,\"failures\":%d,"
                 "\"retired\":%d,\"last_error\":%s},\"outbox\":{\"queued\":%llu,"
                 "\"in_flight\":%llu,\"states\":%s,\"finished\":%s,\"retries\":%llu,"
                 "\"throttled\":%llu,\"resends\":%llu,\"commits\":%lld},\"store\":{\"writable\":%s,"
                 "\"last_error\":%s,\"unwritable_ms\":%lld,\"kept_writes\":%zu,"
                 "\"failures\":%llu}}",
                 rt->stopping ? "stopping"
                 : sn.rs.last_error || rt->script_quarantined || !writable ? "degraded" : "ok",
                 rt->script_quarantined ? "true" : "false", watchdog_restarts(),
                 (long long)(vm_now_ms() - rt->started_ms), all_tasks(rt), vm_memory(rt->vm), (unsigned long long)rt->activities,
                 (unsigned long long)rt->handler_errors, (unsigned long long)rt->redelivered,
                 (unsigned long long)rt->rejected, (unsigned long long)rt->unauthorized,
                 http_client_pending(rt->http), (unsigned long long)sn.ai.key_fetches,
                 (unsigned long long)sn.ao.requests, sn.rs.generation, sn.rs.reloads, sn.rs.failures,
                 sn.rs.retired, last_error ? last_error : "null", (unsigned long long)sn.os.queued,
                 (unsigned long long)sn.os.in_flight, states ? states : "null",
                 finished ? finished : "null", (unsigned long long)sn.os.retries,
                 (unsigned long long)sn.os.throttled, (unsigned long long)sn.os.resends,
                 (long long)sn.os.commits,
                 writable ? "true" : "false", store_error ? store_error : "null",
                 (long long)(rt->outbox ? outbox_store_degraded_ms(rt->outbox) : -1),
                 store_kept_writes(rt->store), (unsigned long long)sn.os.store_failures) < 0)
        s = NULL;
    free(last_error);
    free(store_error);
    free(states);
    free(finished);
    return s;
}

/* Work held while the store could not be written goes on once it can. */
static void on_store_change(void *ud, int writable)
{
    runtime *rt = ud;
    if (!writable)
        return;
    inbound_store_recovered(rt);
    if (rt->scheduler)
        scheduler_poke(rt->scheduler);
    if (rt->broadcaster)
        broadcast_store_recovered(rt->broadcaster);
}

/* Shutdown is done when no task and no exchange is left; polled because tasks end in many places. */
static void shutdown_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    runtime *rt = arg;
    if (rt->pending) {
        /* the 503s are queued now; break on a later poll so evhttp can write them */
        activity_abandon_pending(rt);
        return;
    }
    outbox_stats os;
    outbox_get_stats(rt->outbox, &os);
    /* queued operations stay in the database for the next start; in-flight ones may finish */
    if (all_tasks(rt) == 0 && http_server_pending(rt->server) == 0 && os.in_flight == 0)
        event_base_loopbreak(rt->base);
}

static void shutdown_expired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    runtime *rt = arg;
    log_warn("shutdown grace of %ld ms expired: cancelling %d task(s)", rt->cfg->shutdown_grace_ms,
             all_tasks(rt));
    task_cancel_all(rt->vm, "shutdown grace expired");
    activity_abandon_pending(rt);
    event_base_loopbreak(rt->base);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    runtime *rt = arg;
    if (rt->stopping) {
        log_warn("second signal: stopping now");
        task_cancel_all(rt->vm, "stopped by a second signal");
        event_base_loopbreak(rt->base);
        return;
    }
    rt->stopping = 1;
    log_info("%s received: no new connections; finishing %d task(s) (grace %ld ms)",
             sig == SIGTERM ? "SIGTERM" : "SIGINT", task_count(rt->vm), rt->cfg->shutdown_grace_ms);
    http_server_stop_accepting(rt->server);
    struct timeval grace = {rt->cfg->shutdown_grace_ms / 1000, (rt->cfg->shutdown_grace_ms % 1000) * 1000};
    struct timeval poll = {0, 20000};
    shutdown_timer = evtimer_new(rt->base, shutdown_expired, rt);
    shutdown_poll = event_new(rt->base, -1, EV_PERSIST, shutdown_check, rt);
    (void)grace;
    (void)poll;
    clock_timer_add(shutdown_timer, rt->cfg->shutdown_grace_ms);
    clock_timer_add(shutdown_poll, 20);
    shutdown_check(-1, 0, rt);
}

static int run(config *cfg, char *const *argv)
{
    int rc = 1, lock_fd = -2;
    char *err = NULL;
    runtime rt = {0};
    struct event *sigpipe_ev = NULL;
    int sigpipe[2] = {-1, -1};
    char *qpath = NULL;
    http_admin_socket *admin_sock = NULL;
    rt.cfg = cfg;
    rt.started_ms = vm_now_ms();
    /* before any thread exists, so that every thread but the watchdog has them blocked */
    watchdog_block_signals();
    if (pipe2(sigpipe, O_CLOEXEC | O_NONBLOCK) < 0 || asprintf(&qpath, "%s.quarantine", cfg->db_path) < 0) {
        log_error("cannot set up signal handling");
        return 1;
    }

    if (cfg->dev)
        log_warn("DEV MODE: inbound activities are NOT authenticated, outbound calls carry no token "
                 "and plain-http service URLs are allowed; listening on loopback only");
    rt.base = event_base_new();
    if (!rt.base) {
        log_error("cannot create the event loop");
        return 1;
    }
    /* first, so that a script stalling at load is caught too */
    watchdog_config wc = {.grace_ms = cfg->watchdog_grace_ms, .quarantine_path = qpath,
                          .script_path = cfg->script, .argv = argv, .signal_fd = sigpipe[1],
                          .term_grace_ms = cfg->shutdown_grace_ms + 2 * cfg->task_slice_ms +
                                           cfg->watchdog_grace_ms + 5000};
    if (watchdog_start(&wc, &err) < 0) {
        log_error("%s", err);
        goto out;
    }
    /* before anything touches the database's files: a second process would take over queued
     * sends and both would deliver them (the admin socket's lock does not cover a second herald
     * given its own --admin-socket) */
    lock_fd = store_lock(cfg->db_path, &err);
    if (lock_fd == -1) {
        log_error("%s", err);
        goto out;
    }
    admin_sock = http_admin_socket_open(cfg->admin_socket, &err);
    if (!admin_sock) {
        log_error("%s", err);
        goto out;
    }
    int64_t open_ms = vm_now_ms();
    rt.store = store_open_checked(cfg->db_path, cfg->db_check_max_mb, &err);
    if (!rt.store) {
        log_error("cannot open the database %s: %s", cfg->db_path, err);
        goto out;
    }
    log_debug("database %s opened and checked in %lld ms", cfg->db_path,
              (long long)(vm_now_ms() - open_ms));
    rt.seen = redelivery_new(100000);
    if (!rt.seen) {
        log_error("cannot set up the redelivery filter (out of memory, or no SipHash in OpenSSL)");
        goto out;
    }
    rt.notify = notify_auth_new((size_t)cfg->notify_replay_max, clock_wall_ms() / 1000);
    if (!rt.notify) {
        log_error("cannot allocate the notify replay cache (HERALD_NOTIFY_REPLAY_MAX=%ld)",
                  cfg->notify_replay_max);
        goto out;
    }
    rt.notify_ops = notify_ops_new((size_t)cfg->notify_results_max, cfg->notify_results_max_bytes,
                                   (int64_t)cfg->notify_result_ttl_s * 1000);
    if (!rt.notify_ops) {
        log_error("cannot allocate the notify results");
        goto out;
    }
    http_client_config hc = {.connect_timeout_ms = 5000, .max_host_connections = 64,
                             .allow_http = 1};
    /* plain http is policed where URLs come from: config (loopback only) and trust (service URLs) */
    rt.http = http_client_new(rt.base, &hc, &err);
    if (!rt.http) {
        log_error("cannot start the HTTP client: %s", err);
        goto out;
    }
    connector_config cc = {.base = rt.base, .request_timeout_ms = cfg->connector_timeout_ms,
                           .user_agent = "herald/" HERALD_VERSION};
    rt.conn = connector_new(rt.http, &cc);
    if (!cfg->dev && setup_auth(&rt, cfg, &err) < 0) {
        log_error("cannot set up authentication: %s", err);
        goto out;
    }
    outbox_config oc = outbox_config_from(cfg);
    oc.trust = rt.trust;
    rt.outbox = outbox_new(rt.base, rt.store, rt.conn, &oc, &err);
    if (!rt.outbox) {
        log_error("cannot start the outbox: %s", err);
        goto out;
    }
    vm_config vc = vm_config_from(cfg);
    rt.vm = vm_new(rt.base, &vc, &rt, &err);
    if (!rt.vm) {
        log_error("cannot create the Lua state: %s", err);
        goto out;
    }
    lua_teams_install(rt.vm);
    if (quarantine_load(qpath) > 0)
        log_warn("%s lists work that once stalled the host; it stays quarantined until the script "
                 "changes", qpath);
    if (vm_load_script(rt.vm, cfg->script, &err) < 0) {
        if (!vm_quarantined(rt.vm)) {
            log_error("cannot load the bot script: %s", err);
            goto out;
        }
        /* serve nothing rather than stall again: activities get 503 (Teams retries them), the
         * outbox goes on, and a changed script is loaded by the reloader */
        log_error("%s; herald runs without a script until it changes (activities get 503)", err);
        free(err);
        err = NULL;
        rt.script_quarantined = 1;
    }
    if (watchdog_restarts())
        log_warn("herald was restarted by its watchdog (%d time(s) in the last 10 minutes)",
                 watchdog_restarts());
    if (cfg->unsafe_lua)
        log_warn("HERALD_UNSAFE_LUA=1: the script gets io, the whole os library and C modules");
    rt.reloader = reloader_new(&rt, cfg->reload_watch, &err);
    if (!rt.reloader) {
        log_error("cannot start the reloader: %s", err);
        goto out;
    }
    reloader_set_vm_config(rt.reloader, &vc);
    rt.scheduler = scheduler_new(&rt, &lua_schedule_script, &err);
    if (!rt.scheduler) {
        log_error("cannot start the scheduler: %s", err);
        goto out;
    }
    rt.broadcaster = broadcast_new(&rt, &err);
    if (!rt.broadcaster) {
        log_error("cannot start broadcasts: %s", err);
        goto out;
    }
    outbox_on_store_change(rt.outbox, on_store_change, &rt);
    if (cfg->test_clock)
        log_warn("HERALD_TEST_CLOCK=1: POST /-/clock can move this process's wall clock (tests only)");
    http_server_config sc = {.host = cfg->listen_host, .port = cfg->listen_port,
                             .max_body_bytes = cfg->max_body_bytes, .max_header_bytes = 131072,
                             .timeout_s = 60, .on_admin = admin, .on_notify = notify_request,
                             .on_notify_operation = notify_operation_request,
                             .admin_socket = admin_sock, .admin_host = cfg->admin_host,
                             .admin_port = cfg->admin_port, .admin_token = cfg->admin_token};
    rt.server = http_server_new(rt.base, &sc, activity_request, health_json, &rt, &err);
    if (!rt.server) {
        log_error("%s", err);
        goto out;
    }
    sigpipe_ev = event_new(rt.base, sigpipe[0], EV_READ | EV_PERSIST, on_signal_pipe, &rt);
    if (!sigpipe_ev || event_add(sigpipe_ev, NULL) < 0) {
        log_error("cannot watch the signal pipe");
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);

    const char *h = cfg->listen_host;
    int v6 = strchr(h, ':') != NULL;
    log_info("admin endpoints (/metrics, /-/…) on the unix socket %s", cfg->admin_socket);
    if (cfg->admin_host) {
        int a6 = strchr(cfg->admin_host, ':') != NULL;
        log_info("admin endpoints also on http://%s%s%s:%d (%s)", a6 ? "[" : "", cfg->admin_host,
                 a6 ? "]" : "", http_server_admin_port(rt.server),
                 cfg->admin_token ? "bearer token required" : "loopback, no token");
    }
    log_info("herald %s listening on http://%s%s%s:%d script=%s db=%s", HERALD_VERSION,
             v6 ? "[" : "", h, v6 ? "]" : "", http_server_port(rt.server), cfg->script, cfg->db_path);
    event_base_dispatch(rt.base);
    log_info("herald stopped cleanly");
    rc = 0;
out:
    free(err);
    if (shutdown_timer)
        clock_timer_free(shutdown_timer);
    if (shutdown_poll)
        clock_timer_free(shutdown_poll);
    if (rt.pending)
        activity_abandon_pending(&rt);
    scheduler_free(rt.scheduler);
    broadcast_free(rt.broadcaster);
    reloader_free(rt.reloader);     /* retired generations first: their tasks may answer exchanges */
    vm_free(rt.vm);                 /* cancels tasks, which may still answer exchanges */
    if (rt.outbox)
        outbox_commit(rt.outbox);   /* what the last handlers wrote, before their answers go */
    inbound_release_answers(&rt);
    http_server_free(rt.server);
    http_admin_socket_close(admin_sock);   /* after the server that listened on it */
    outbox_free(rt.outbox);         /* commits what the last turn wrote */
    if (rt.store && store_kept_writes(rt.store) && rc == 0)
        rc = 1;                     /* writes were lost (logged): a supervisor should know */
    connector_free(rt.conn);
    auth_out_free(rt.auth_out);
    auth_in_free(rt.auth_in);
    trust_free(rt.trust);
    http_client_free(rt.http);
    redelivery_free(rt.seen);
    /* the watchdog outlives the last Lua (cancelled tasks run their <close> handlers) */
    watchdog_stop();
    if (sigpipe_ev)
        event_free(sigpipe_ev);
    for (int i = 0; i < 2; i++)
        if (sigpipe[i] >= 0)
            close(sigpipe[i]);
    quarantine_clear();
    free(qpath);
    notify_auth_free(rt.notify);
    notify_ops_free(rt.notify_ops);
    store_close(rt.store);
    store_unlock(lock_fd, cfg->db_path);
    event_base_free(rt.base);
    return rc;
}

/* herald new NAME: a bot project pointed at this herald's test kit. */
static int new_project(int argc, char **argv)
{
    if (argc != 3 || argv[2][0] == '-') {
        fprintf(stderr, "usage: herald new NAME   writes a bot project into the new directory NAME\n");
        return argc == 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0) ? 0 : 2;
    }
    scaffold_paths paths;
    char *err = NULL;
    if (scaffold_find_paths("/proc/self/exe", &paths, &err) < 0 ||
        scaffold_new(argv[2], new_templates, &paths, &err) < 0) {
        fprintf(stderr, "herald: %s\n", err ? err : "out of memory");
        free(err);
        scaffold_paths_free(&paths);
        return 1;
    }
    printf("created %s: bot.lua, spec/bot_spec.lua, .busted, .luarc.json, env/.env.local, .gitignore\n"
           "  test kit     %s, %s\n"
           "  definitions  %s (for lua-language-server)\n"
           "next:\n"
           "  cd %s\n"
           "  busted                     # run spec/bot_spec.lua against herald's core\n"
           "  herald check --dev bot.lua # load it in the sandbox, report mistakes\n"
           "  herald run --dev bot.lua   # serve it to the Agents Playground\n",
           argv[2], paths.lua_dir, paths.so_dir, paths.defs_dir, argv[2]);
    scaffold_paths_free(&paths);
    return 0;
}

/* A misspelt HERALD_* variable would otherwise be ignored without a word. */
static void warn_setting(const char *msg)
{
    log_warn("%s", msg);
}

int main(int argc, char **argv)
{
    config cfg;
    char *err = NULL;
    if (argc >= 2 && strcmp(argv[1], "new") == 0)
        return new_project(argc, argv);
    int rc = config_load(&cfg, argc, argv, &err);
    if (rc == 1) {
        config_free(&cfg);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "herald: %s\n%s", err ? err : "bad arguments", config_usage());
        free(err);
        config_free(&cfg);
        return 2;
    }
    if (log_set_level_name(cfg.log_level) < 0) {
        fprintf(stderr, "herald: unknown log level '%s' (debug, info, warn, error)\n", cfg.log_level);
        config_free(&cfg);
        return 2;
    }
    if (strcmp(cfg.command, "run") == 0 || strcmp(cfg.command, "check") == 0)
        config_warn_unknown(environ, warn_setting);
    if (strcmp(cfg.command, "reload") == 0) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = admin_command(&cfg, "/-/reload", "");
        curl_global_cleanup();
        config_free(&cfg);
        return rc;
    }
    if (strcmp(cfg.command, "broadcast") == 0 && cfg.action && strcmp(cfg.action, "list") != 0 &&
        strcmp(cfg.action, "show") != 0) {
        char body[128];
        snprintf(body, sizeof body, "{\"id\":%lld,\"action\":\"%s\"}", cfg.broadcast_id, cfg.action);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = admin_command(&cfg, "/-/broadcast", body);
        curl_global_cleanup();
        config_free(&cfg);
        return rc;
    }
    if (strcmp(cfg.command, "outbox") == 0 || strcmp(cfg.command, "blocked") == 0 ||
        strcmp(cfg.command, "broadcast") == 0 ||
        strcmp(cfg.command, "schedules") == 0 ||
        strcmp(cfg.command, "deliveries") == 0) {
        rc = report_run(&cfg);
        config_free(&cfg);
        return rc;
    }
    if (strcmp(cfg.command, "check") == 0) {
        /* the script is checked even when the configuration is not complete yet (no app id):
         * a new bot is written before it is registered */
        rc = 0;
        if (config_validate(&cfg, &err) < 0) {
            fprintf(stderr, "herald: %s\n", err);
            free(err);
            rc = 1;
        } else {
            config_report(stdout, &cfg);
        }
        if (access(cfg.script, R_OK) == 0) {
            fflush(stdout);
            if (check_script(&cfg, stderr) != 0)
                rc = 1;
            else
                printf("  script check           %s loads in the sandbox; every teams name it uses "
                       "exists\n", cfg.script);
        }
        config_free(&cfg);
        return rc;
    }
    if (config_validate(&cfg, &err) < 0) {
        fprintf(stderr, "herald: %s\n", err);
        free(err);
        config_free(&cfg);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = run(&cfg, argv);
    curl_global_cleanup();
    config_free(&cfg);
    return rc;
}
