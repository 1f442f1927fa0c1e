/* config.c — parses defaults, then environment, then flags into a config, and validates the whole.
 * Secrets are only ever stored, never printed; every limit has a name and a default here. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *fmt_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

const char *config_usage(void)
{
    return "usage: herald run [--dev] [--listen HOST:PORT] [--db PATH] [--log-level LEVEL] SCRIPT.lua\n"
           "       herald check [flags] SCRIPT.lua   print the configuration that run would use, load\n"
           "                             the script in the sandbox and report its mistakes (exit 1)\n"
           "       herald new NAME       write a bot project (bot.lua, a spec, .busted, .luarc.json)\n"
           "       herald reload (--db PATH | SCRIPT.lua)   reload the running bot's script now\n"
           "       herald broadcast list|show ID [--watch] [--csv|--json] (--db PATH | SCRIPT.lua)\n"
           "       herald broadcast pause|resume|cancel ID (--db PATH | SCRIPT.lua)\n"
           "       herald outbox     [--csv|--json] (--db PATH | SCRIPT.lua)   counts per state, pacing per tenant\n"
           "       herald blocked    [--csv|--json] (--db PATH | SCRIPT.lua)   who blocked or uninstalled\n"
           "       herald deliveries [--since S|ISO8601] [--csv|--json] (--db PATH | SCRIPT.lua)\n"
           "       herald schedules  [--csv|--json] (--db PATH | SCRIPT.lua)   next fire (UTC and local)\n"
           "       herald --help | --version\n"
           "\n"
           "  run SCRIPT.lua        serve Bot Framework activities at POST /api/messages and run the bot\n"
           "  --dev                 no JWT check, no outbound token, plain-http service URLs allowed,\n"
           "                        loopback only (also HERALD_DEV=1); for the Agents Playground\n"
           "  --listen HOST:PORT    address to serve on (default 127.0.0.1:3978; port 0 picks one)\n"
           "  --db PATH             SQLite database (default herald.db beside the script)\n"
           "  --log-level LEVEL     debug, info, warn or error (default info)\n"
           "  --admin-socket PATH   unix socket of /metrics and /-/… (default DB.admin.sock, mode 0600);\n"
           "                        herald reload and broadcast pause|resume|cancel talk to it\n"
           "  --admin-listen HOST:PORT  also serve them over TCP; off loopback HERALD_ADMIN_TOKEN is\n"
           "                        required and every request carries Authorization: Bearer TOKEN\n"
           "\n"
           "Credentials come from the environment: CLIENT_ID / MicrosoftAppId, CLIENT_SECRET /\n"
           "MicrosoftAppPassword, TENANT_ID / MicrosoftAppTenantId. Limits are HERALD_* variables,\n"
           "each checked against its range at start; `herald check` lists them (see README).\n";
}

static const char *env_first(const char *a, const char *b)
{
    const char *v = getenv(a);
    if ((!v || !*v) && b)
        v = getenv(b);
    return (v && *v) ? v : NULL;
}

/* Parses a positive integer within [min, max]; -1 on anything else. */
static int is_loopback(const char *host);
static int apply_cloud(config *cfg, char **err);

static int parse_long(const char *s, long min, long max, long *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* HOST:PORT (or [V6]:PORT) into *host (owned, replaced) and *port; what names the setting. */
static int parse_hostport(const char *what, const char *spec, char **host, int *port, char **err)
{
    const char *colon = strrchr(spec, ':');
    long p;
    if (!colon || colon == spec || parse_long(colon + 1, 0, 65535, &p) < 0) {
        *err = fmt_err("%s wants HOST:PORT (e.g. 127.0.0.1:3978), got '%s'", what, spec);
        return -1;
    }
    size_t hlen = (size_t)(colon - spec);
    if (spec[0] == '[' && hlen >= 2 && spec[hlen - 1] == ']') { /* [::1]:3978 */
        spec++;
        hlen -= 2;
    }
    free(*host);
    *host = strndup(spec, hlen);
    *port = (int)p;
    return 0;
}

static int set_listen(config *cfg, const char *spec, char **err)
{
    return parse_hostport("--listen", spec, &cfg->listen_host, &cfg->listen_port, err);
}

/* --admin-socket PATH or --admin-listen HOST:PORT (name = val): 1 applied, 0 not one of them, -1 on
 * an error. */
static int set_admin(config *cfg, const char *name, const char *val, char **err)
{
    if (strcmp(name, "--admin-socket") == 0) {
        free(cfg->admin_socket);
        cfg->admin_socket = strdup(val);
        return 1;
    }
    if (strcmp(name, "--admin-listen") == 0)
        return parse_hostport(name, val, &cfg->admin_host, &cfg->admin_port, err) < 0 ? -1 : 1;
    return 0;
}

/* "--flag=value" → "--flag" (copied into name[32]) with *val at the value; any other word is
 * returned as it is, *val untouched. */
static const char *flag_name(const char *a, char name[32], const char **val)
{
    const char *eq = strchr(a, '=');
    if (a[0] != '-' || a[1] != '-' || !eq || (size_t)(eq - a) >= 32)
        return a;
    memcpy(name, a, (size_t)(eq - a));
    name[eq - a] = 0;
    *val = eq + 1;
    return name;
}

/* One argument of herald reload / broadcast pause|resume|cancel: --db PATH, --admin-socket PATH,
 * --admin-listen HOST:PORT (each also as --flag=value) or the bot script. Returns 1 when argv[*i]
 * was one of them (*i then indexes its last word), 0 when not, -1 on an error. */
static int admin_cli_arg(config *cfg, int argc, char **argv, int *i, const char **db, int *tcp,
                         char **err)
{
    char name[32];
    const char *val = NULL, *a = flag_name(argv[*i], name, &val);
    if (strcmp(a, "--db") != 0 && strcmp(a, "--admin-socket") != 0 &&
        strcmp(a, "--admin-listen") != 0 && strcmp(a, "--listen") != 0) {
        if (a[0] != '-' && strstr(a, ".lua")) {
            cfg->script = a;
            return 1;
        }
        return 0;
    }
    if (!val) {
        if (*i + 1 >= argc) {
            *err = fmt_err("%s needs a value", a);
            return -1;
        }
        val = argv[++*i];
    }
    if (strcmp(a, "--listen") == 0) {
        *err = fmt_err("herald %s does not use --listen: the admin endpoints are served only on the "
                       "admin socket beside the database (give --db PATH or the bot script) or on "
                       "--admin-listen HOST:PORT", cfg->command);
        return -1;
    }
    if (strcmp(a, "--db") == 0) {
        *db = val;
        return 1;
    }
    *tcp |= strcmp(a, "--admin-listen") == 0;
    return set_admin(cfg, a, val, err);
}

/* herald reload / broadcast pause|resume|cancel: which admin listener to ask. --admin-listen wins;
 * then the socket: --admin-socket, HERALD_ADMIN_SOCKET, or the one beside the database named by
 * --db, HERALD_DB or the script (as `run` finds it); then HERALD_ADMIN_LISTEN. */
static int admin_target(config *cfg, int tcp, const char *db, char **err)
{
    if (tcp) {
        free(cfg->admin_socket);
        cfg->admin_socket = NULL;
        return 0;
    }
    if (!cfg->admin_socket && ((db && *db) || cfg->script)) {
        const char *slash = cfg->script ? strrchr(cfg->script, '/') : NULL;
        int rc = db && *db ? asprintf(&cfg->admin_socket, "%s.admin.sock", db)
                           : asprintf(&cfg->admin_socket, "%.*s/herald.db.admin.sock",
                                      slash ? (int)(slash - cfg->script) : 1, slash ? cfg->script : ".");
        if (rc < 0)
            cfg->admin_socket = NULL;
    }
    if (cfg->admin_socket) {
        free(cfg->admin_host);
        cfg->admin_host = NULL;
        return 0;
    }
    if (cfg->admin_host)
        return 0;
    *err = fmt_err("herald %s finds the running herald through the admin socket beside its database: "
                   "give --db PATH (or HERALD_DB) or the bot script, or --admin-listen HOST:PORT",
                   cfg->command);
    return -1;
}

#define ROW(name, min, max, def, unit, kind, field) \
    {name, min, max, def, unit, kind, offsetof(config, field)}

/* Every numeric setting, one row each: its variable, range, default, unit and the field it fills.
 * This table is the only place a bound is written; config_load applies it before anything else,
 * and tests/unit/test_config.c walks it. Every minimum is at least 1: a zero here has always
 * meant "no limit" or "no protection" (a key refetch floor of 0 fetched keys in a loop). The
 * restructure issue grows this into the table of all settings, so keep it one row per setting. */
static const config_limit limits[] = {
    ROW("HERALD_MAX_BODY_BYTES", 1024, 64L << 20, 1L << 20, "bytes", CONFIG_SIZE, max_body_bytes),
    ROW("HERALD_RESPONSE_DEADLINE_MS", 1, 60000, 4000, "ms", CONFIG_LONG, response_deadline_ms),
    ROW("HERALD_REDELIVERY_WINDOW_S", 1, 86400, 300, "s", CONFIG_LONG, redelivery_window_s),
    ROW("HERALD_INSTALL_WINDOW_S", 1, 86400, 600, "s", CONFIG_LONG, install_window_s),
    ROW("HERALD_SHUTDOWN_GRACE_MS", 1, 600000, 10000, "ms", CONFIG_LONG, shutdown_grace_ms),
    ROW("HERALD_CONNECTOR_TIMEOUT_MS", 100, 600000, 15000, "ms", CONFIG_LONG, connector_timeout_ms),
    ROW("HERALD_LUA_MEMORY_MB", 4, 1L << 20, 256, "MB", CONFIG_MB, lua_memory_bytes),
    ROW("HERALD_TASK_SLICE_MS", 1, 600000, 1000, "ms", CONFIG_LONG, task_slice_ms),
    /* a new generation is built on the loop: keep stalls short */
    ROW("HERALD_LOAD_DEADLINE_MS", 1, 600000, 1000, "ms", CONFIG_LONG, load_deadline_ms),
    /* above a full collection of a capped heap under ASan */
    ROW("HERALD_WATCHDOG_GRACE_MS", 100, 600000, 3000, "ms", CONFIG_LONG, watchdog_grace_ms),
    ROW("HERALD_MAX_TASKS", 1, 10000000, 10000, "tasks", CONFIG_INT, max_tasks),
    ROW("HERALD_TASK_DEADLINE_MS", 100, 86400000L, 300000, "ms", CONFIG_LONG, task_deadline_ms),
    ROW("HERALD_MAX_TIMERS", 1, 10000000, 10000, "timers", CONFIG_INT, max_timers),
    ROW("HERALD_SCHEDULE_MISFIRE_S", 1, 86400, 60, "s", CONFIG_LONG, schedule_misfire_s),
    ROW("HERALD_RELOAD_DEBOUNCE_MS", 1, 60000, 100, "ms", CONFIG_LONG, reload_debounce_ms),
    ROW("HERALD_RELOAD_GRACE_MS", 1, 3600000, 30000, "ms", CONFIG_LONG, reload_grace_ms),
    ROW("HERALD_TENANT_RPS", 1, 100000, 50, "per s", CONFIG_LONG, tenant_rps),
    ROW("HERALD_OUTBOX_MAX_ATTEMPTS", 1, 1000, 8, "attempts", CONFIG_LONG, outbox_max_attempts),
    ROW("HERALD_OUTBOX_MAX_AGE_S", 1, 30L * 86400, 3600, "s", CONFIG_LONG, outbox_max_age_s),
    ROW("HERALD_RETRY_BASE_MS", 1, 3600000, 1000, "ms", CONFIG_LONG, retry_base_ms),
    ROW("HERALD_RETRY_MAX_MS", 1, 3600000, 60000, "ms", CONFIG_LONG, retry_max_ms),
    ROW("HERALD_OUTBOX_MAX_IN_FLIGHT", 1, 100000, 256, "attempts", CONFIG_LONG, outbox_max_in_flight),
    ROW("HERALD_OUTBOX_RETENTION_S", 60, 3650L * 86400, 7L * 86400, "s", CONFIG_LONG, outbox_retention_s),
    ROW("HERALD_MAX_QUEUED_PER_CONVERSATION", 1, 10000000, 1000, "operations", CONFIG_LONG,
        max_queued_per_conversation),
    ROW("HERALD_MAX_QUEUED_PER_TENANT", 1, 10000000, 10000, "operations", CONFIG_LONG,
        max_queued_per_tenant),
    ROW("HERALD_MAX_QUEUED_TOTAL", 1, 10000000, 50000, "operations", CONFIG_LONG, max_queued_total),
    ROW("HERALD_JWKS_REFRESH_S", 60, 7L * 86400, 86400, "s", CONFIG_LONG, jwks_refresh_interval_s),
    ROW("HERALD_JWKS_REFRESH_FLOOR_S", 1, 86400, 300, "s", CONFIG_LONG, jwks_refresh_floor_s),
    ROW("HERALD_JWKS_TIMEOUT_MS", 1000, 60000, 10000, "ms", CONFIG_LONG, jwks_timeout_ms),
    ROW("HERALD_NOTIFY_REPLAY_MAX", 1, 100000, 10000, "signatures", CONFIG_LONG, notify_replay_max),
    /* what GET /api/notify/operations/{id} can still answer: finished operations kept */
    ROW("HERALD_NOTIFY_RESULTS_MAX", 1, 1000000, 1000, "operations", CONFIG_LONG, notify_results_max),
    ROW("HERALD_NOTIFY_RESULTS_MAX_BYTES", 1024, 1L << 30, 16L << 20, "bytes", CONFIG_SIZE,
        notify_results_max_bytes),
    ROW("HERALD_NOTIFY_RESULT_TTL_S", 1, 7L * 86400, 3600, "s", CONFIG_LONG, notify_result_ttl_s),
    /* quick_check reads every page (about 1 s per GB cached, 20 s cold): bigger files skip it */
    ROW("HERALD_DB_CHECK_MAX_MB", 1, 1L << 20, 256, "MB", CONFIG_LONG, db_check_max_mb),
};
#undef ROW

const config_limit *config_limits(size_t *n)
{
    *n = sizeof limits / sizeof limits[0];
    return limits;
}

static void limit_store(config *cfg, const config_limit *l, long v)
{
    char *field = (char *)cfg + l->offset;
    switch (l->kind) {
    case CONFIG_LONG: *(long *)field = v; break;
    case CONFIG_INT: *(int *)field = (int)v; break;
    case CONFIG_SIZE: *(size_t *)field = (size_t)v; break;
    case CONFIG_MB: *(size_t *)field = (size_t)v << 20; break;
    }
}

long config_limit_value(const config *cfg, const config_limit *l)
{
    const char *field = (const char *)cfg + l->offset;
    switch (l->kind) {
    case CONFIG_LONG: return *(const long *)field;
    case CONFIG_INT: return *(const int *)field;
    case CONFIG_SIZE: return (long)*(const size_t *)field;
    case CONFIG_MB: return (long)(*(const size_t *)field >> 20);
    }
    return 0;
}

/* Fills every row's field: its default, or its variable when set and within range. */
static int apply_limits(config *cfg, char **err)
{
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        const config_limit *l = &limits[i];
        const char *v = getenv(l->name);
        long x = l->def;
        if (v && *v && parse_long(v, l->min, l->max, &x) < 0) {
            *err = fmt_err("%s must be an integer from %ld to %ld (%s), got '%s'", l->name, l->min,
                           l->max, l->unit, v);
            return -1;
        }
        limit_store(cfg, l, x);
    }
    return 0;
}

int config_load(config *cfg, int argc, char **argv, char **err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen_host = strdup("127.0.0.1");
    cfg->listen_port = 3978;
    cfg->log_level = "info";
    cfg->default_tz = "UTC";
    cfg->reload_watch = 1;
    cfg->governor = 1;
    if (apply_limits(cfg, err) < 0)
        return -1;

    /* environment */
    const char *dev = getenv("HERALD_DEV");
    cfg->dev = dev && (strcmp(dev, "1") == 0 || strcmp(dev, "true") == 0);
    cfg->app_id = env_first("CLIENT_ID", "MicrosoftAppId");
    cfg->app_password = env_first("CLIENT_SECRET", "MicrosoftAppPassword");
    cfg->tenant_id = env_first("TENANT_ID", "MicrosoftAppTenantId");
    cfg->app_type = env_first("MicrosoftAppType", "HERALD_APP_TYPE");
    cfg->cert_path = env_first("HERALD_CERTIFICATE_PATH", NULL);
    cfg->key_path = env_first("HERALD_CERTIFICATE_KEY_PATH", NULL);
    cfg->cloud = env_first("HERALD_CLOUD", NULL);
    if (!cfg->cloud)
        cfg->cloud = "public";
    cfg->login_url = env_first("HERALD_LOGIN_URL", NULL);
    cfg->oauth_scope = env_first("HERALD_OAUTH_SCOPE", NULL);
    cfg->openid_metadata_url = env_first("HERALD_OPENID_METADATA_URL", NULL);
    cfg->token_issuer = env_first("HERALD_TOKEN_ISSUER", NULL);
    cfg->proactive_url = env_first("HERALD_PROACTIVE_SERVICE_URL", NULL);
    cfg->trusted_service_urls = env_first("HERALD_TRUSTED_SERVICE_URLS", NULL);
    if (getenv("HERALD_LOG_LEVEL") && *getenv("HERALD_LOG_LEVEL"))
        cfg->log_level = getenv("HERALD_LOG_LEVEL");
    const char *db_env = getenv("HERALD_DB");
    const char *listen_env = getenv("HERALD_LISTEN");
    if (listen_env && *listen_env && set_listen(cfg, listen_env, err) < 0)
        return -1;
    if (env_first("HERALD_ADMIN_SOCKET", NULL))
        cfg->admin_socket = strdup(env_first("HERALD_ADMIN_SOCKET", NULL));
    const char *admin_listen = env_first("HERALD_ADMIN_LISTEN", NULL);
    if (admin_listen && parse_hostport("HERALD_ADMIN_LISTEN", admin_listen, &cfg->admin_host,
                                       &cfg->admin_port, err) < 0)
        return -1;
    cfg->admin_token = env_first("HERALD_ADMIN_TOKEN", NULL);

    if (env_first("HERALD_DEFAULT_TZ", NULL))
        cfg->default_tz = env_first("HERALD_DEFAULT_TZ", NULL);
    const char *tc = getenv("HERALD_TEST_CLOCK");
    cfg->test_clock = tc && strcmp(tc, "1") == 0;
    const char *rw = getenv("HERALD_RELOAD");
    if (rw && (strcmp(rw, "off") == 0 || strcmp(rw, "0") == 0))
        cfg->reload_watch = 0;
    const char *unsafe = getenv("HERALD_UNSAFE_LUA");
    cfg->unsafe_lua = unsafe && strcmp(unsafe, "1") == 0;
    cfg->script_env = env_first("HERALD_SCRIPT_ENV", NULL);
    const char *gov = getenv("HERALD_GOVERNOR");
    if (gov && (strcmp(gov, "off") == 0 || strcmp(gov, "0") == 0))
        cfg->governor = 0;

    /* flags */
    int i = 1;
    if (i < argc && (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 ||
                     strcmp(argv[i], "help") == 0)) {
        fputs(config_usage(), stdout);
        return 1;
    }
    if (i < argc && (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "version") == 0)) {
        printf("herald %s\n", HERALD_VERSION);
        return 1;
    }
    if (i >= argc) {
        *err = fmt_err("no command given");
        return -1;
    }
    if (strcmp(argv[i], "broadcast") == 0) {
        /* herald broadcast list|show ID [--watch] [--csv|--json] | pause|resume|cancel ID, each with
         * --db PATH or the script; the controls also take --admin-socket / --admin-listen */
        cfg->command = argv[i++];
        cfg->format = "text";
        cfg->action = i < argc ? argv[i++] : "list";
        const char *db = getenv("HERALD_DB");
        int tcp = 0;
        for (; i < argc; i++) {
            const char *a = argv[i];
            int r = admin_cli_arg(cfg, argc, argv, &i, &db, &tcp, err);
            if (r < 0)
                return -1;
            if (r > 0) continue;
            if (strcmp(a, "--json") == 0) cfg->format = "json";
            else if (strcmp(a, "--csv") == 0) cfg->format = "csv";
            else if (strcmp(a, "--watch") == 0) cfg->watch = 1;
            else if (a[0] >= '0' && a[0] <= '9') cfg->broadcast_id = atoll(a);
            else {
                *err = fmt_err("herald broadcast: unexpected '%s'", a);
                return -1;
            }
        }
        int control = strcmp(cfg->action, "pause") == 0 || strcmp(cfg->action, "resume") == 0 ||
                      strcmp(cfg->action, "cancel") == 0;
        if (!control && strcmp(cfg->action, "list") != 0 && strcmp(cfg->action, "show") != 0) {
            *err = fmt_err("herald broadcast list|show|pause|resume|cancel, got '%s'", cfg->action);
            return -1;
        }
        if (cfg->watch && strcmp(cfg->format, "text") != 0) {
            *err = fmt_err("herald broadcast --watch draws a bar; it takes no --%s", cfg->format);
            return -1;
        }
        if ((control || strcmp(cfg->action, "show") == 0) && cfg->broadcast_id <= 0) {
            *err = fmt_err("herald broadcast %s needs a broadcast id", cfg->action);
            return -1;
        }
        if (control && admin_target(cfg, tcp, db, err) < 0)
            return -1;
        if (!control) {
            if (db && *db)
                cfg->db_path = strdup(db);
            else if (cfg->script) {
                const char *slash = strrchr(cfg->script, '/');
                if (asprintf(&cfg->db_path, "%.*s/herald.db", slash ? (int)(slash - cfg->script) : 1,
                             slash ? cfg->script : ".") < 0)
                    cfg->db_path = NULL;
            } else {
                *err = fmt_err("herald broadcast %s needs --db PATH (or the bot script)", cfg->action);
                return -1;
            }
        }
        return apply_cloud(cfg, err);
    }
    if (strcmp(argv[i], "reload") == 0) {
        cfg->command = argv[i];
        const char *db = getenv("HERALD_DB");
        int tcp = 0;
        for (i++; i < argc; i++) {
            int r = admin_cli_arg(cfg, argc, argv, &i, &db, &tcp, err);
            if (r < 0)
                return -1;
            if (r == 0) {
                *err = fmt_err("herald reload takes --db PATH or the bot script, --admin-socket PATH "
                               "or --admin-listen HOST:PORT; got '%s'", argv[i]);
                return -1;
            }
        }
        if (admin_target(cfg, tcp, db, err) < 0)
            return -1;
        return apply_cloud(cfg, err);
    }
    int report = strcmp(argv[i], "outbox") == 0 || strcmp(argv[i], "blocked") == 0 ||
                 strcmp(argv[i], "schedules") == 0 ||
                 strcmp(argv[i], "deliveries") == 0;
    cfg->format = "text";
    if (strcmp(argv[i], "run") != 0 && strcmp(argv[i], "check") != 0 && !report) {
        *err = fmt_err("unknown command '%s'", argv[i]);
        return -1;
    }
    cfg->command = argv[i++];
    for (; i < argc; i++) {
        char name[32];
        const char *val = NULL, *a = flag_name(argv[i], name, &val);
        if (strcmp(a, "--dev") == 0 && !val) {
            cfg->dev = 1;
        } else if (report && (strcmp(a, "--json") == 0 || strcmp(a, "--csv") == 0) && !val) {
            cfg->format = a + 2;
        } else if (report && strcmp(a, "--since") == 0) {
            if (!val) {
                if (i + 1 >= argc) {
                    *err = fmt_err("--since needs a value (seconds ago, or an ISO 8601 time)");
                    return -1;
                }
                val = argv[++i];
            }
            cfg->since = val;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(config_usage(), stdout);
            return 1;
        } else if (strcmp(a, "--listen") == 0 || strcmp(a, "--db") == 0 ||
                   strcmp(a, "--log-level") == 0 || strcmp(a, "--admin-socket") == 0 ||
                   strcmp(a, "--admin-listen") == 0) {
            if (!val) {
                if (i + 1 >= argc) {
                    *err = fmt_err("%s needs a value", a);
                    return -1;
                }
                val = argv[++i];
            }
            int r = set_admin(cfg, a, val, err);
            if (r < 0)
                return -1;
            if (r > 0) {
                /* applied */
            } else if (strcmp(a, "--listen") == 0) {
                if (set_listen(cfg, val, err) < 0)
                    return -1;
            } else if (strcmp(a, "--db") == 0) {
                db_env = val;
            } else {
                cfg->log_level = val;
            }
        } else if (a[0] == '-' && a[1]) {
            *err = fmt_err("unknown flag '%s'", argv[i]);
            return -1;
        } else if (!cfg->script) {
            cfg->script = a;
        } else {
            *err = fmt_err("unexpected argument '%s' (one script only)", a);
            return -1;
        }
    }
    if (report && !cfg->script) {
        if (!db_env || !*db_env) {
            *err = fmt_err("'%s' needs --db PATH (or the bot script, whose directory holds herald.db)",
                           cfg->command);
            return -1;
        }
        cfg->db_path = strdup(db_env);
        return apply_cloud(cfg, err);
    }
    if (!cfg->script) {
        *err = fmt_err("'%s' needs a bot script, e.g. herald run bot.lua", cfg->command);
        return -1;
    }
    const char *slash = strrchr(cfg->script, '/');
    cfg->script_dir = slash ? strndup(cfg->script, (size_t)(slash - cfg->script) + (slash == cfg->script))
                            : strdup(".");
    if (apply_cloud(cfg, err) < 0)
        return -1;
    if (db_env && *db_env)
        cfg->db_path = strdup(db_env);
    else if (asprintf(&cfg->db_path, "%s/herald.db", cfg->script_dir) < 0)
        cfg->db_path = NULL;
    if (!cfg->admin_socket && cfg->db_path &&
        asprintf(&cfg->admin_socket, "%s.admin.sock", cfg->db_path) < 0)
        cfg->admin_socket = NULL;
    return 0;
}

typedef struct cloud_values {
    const char *name, *login, *default_tenant, *scope, *metadata, *issuer, *proactive;
} cloud_values;

/* PROTOCOL.md §1.2, §2.3, §7: GCC authenticates like the public cloud; GCC High and DoD share the
 * US Government values and differ in their Teams service URL. */
static const cloud_values clouds[] = {
    {"public", "https://login.microsoftonline.com", "botframework.com",
     "https://api.botframework.com/.default",
     "https://login.botframework.com/v1/.well-known/openidconfiguration",
     "https://api.botframework.com", "https://smba.trafficmanager.net/teams/"},
    {"gcc", "https://login.microsoftonline.com", "botframework.com",
     "https://api.botframework.com/.default",
     "https://login.botframework.com/v1/.well-known/openidconfiguration",
     "https://api.botframework.com", "https://smba.infra.gcc.teams.microsoft.com/teams"},
    {"gcch", "https://login.microsoftonline.us", "MicrosoftServices.onmicrosoft.us",
     "https://api.botframework.us/.default",
     "https://login.botframework.azure.us/v1/.well-known/openidconfiguration",
     "https://api.botframework.us", "https://smba.infra.gov.teams.microsoft.us/teams"},
    {"dod", "https://login.microsoftonline.us", "MicrosoftServices.onmicrosoft.us",
     "https://api.botframework.us/.default",
     "https://login.botframework.azure.us/v1/.well-known/openidconfiguration",
     "https://api.botframework.us", "https://smba.infra.dod.teams.microsoft.us/teams"},
};

static int apply_cloud(config *cfg, char **err)
{
    const cloud_values *c = NULL;
    for (size_t i = 0; i < sizeof clouds / sizeof clouds[0]; i++)
        if (strcasecmp(cfg->cloud, clouds[i].name) == 0)
            c = &clouds[i];
    if (!c) {
        *err = fmt_err("HERALD_CLOUD must be public, gcc, gcch or dod, got '%s'", cfg->cloud);
        return -1;
    }
    cfg->cloud = c->name;
    if (!cfg->login_url) cfg->login_url = c->login;
    if (!cfg->oauth_scope) cfg->oauth_scope = c->scope;
    if (!cfg->openid_metadata_url) cfg->openid_metadata_url = c->metadata;
    if (!cfg->token_issuer) cfg->token_issuer = c->issuer;
    if (!cfg->proactive_url) cfg->proactive_url = c->proactive;
    int single = cfg->app_type && strcasecmp(cfg->app_type, "SingleTenant") == 0;
    int multi = cfg->app_type && strcasecmp(cfg->app_type, "MultiTenant") == 0;
    if (cfg->app_type && !single && !multi) {
        *err = fmt_err("MicrosoftAppType must be MultiTenant or SingleTenant, got '%s' "
                       "(managed identity is not supported yet)", cfg->app_type);
        return -1;
    }
    /* New bots are single-tenant (Azure stopped creating multi-tenant ones in 2025): a configured
     * tenant id means single-tenant unless the app type says otherwise. */
    const char *authority_tenant = (cfg->tenant_id && !multi) ? cfg->tenant_id : c->default_tenant;
    if (single && !cfg->tenant_id) {
        *err = fmt_err("MicrosoftAppType=SingleTenant needs TENANT_ID (or MicrosoftAppTenantId)");
        return -1;
    }
    size_t ll = strlen(cfg->login_url);
    while (ll && cfg->login_url[ll - 1] == '/')
        ll--;
    free(cfg->token_url);
    if (asprintf(&cfg->token_url, "%.*s/%s/oauth2/v2.0/token", (int)ll, cfg->login_url,
                 authority_tenant) < 0)
        cfg->token_url = NULL;
    return 0;
}

int config_url_allowed(const char *url)
{
    if (strncasecmp(url, "https://", 8) == 0)
        return 1;
    if (strncasecmp(url, "http://", 7) != 0)
        return 0;
    const char *h = url + 7, *end = h;
    char host[256];
    if (*h == '[') {
        end = strchr(h, ']');
        if (!end) return 0;
        h++;
    } else {
        while (*end && *end != ':' && *end != '/')
            end++;
    }
    size_t n = (size_t)(end - h);
    if (n == 0 || n >= sizeof host) return 0;
    size_t authority = strcspn(url + 7, "/?#");
    if (memchr(url + 7, '@', authority))
        return 0;                 /* userinfo: "http://127.0.0.1:80@evil.example/" is not loopback */
    memcpy(host, h, n);
    host[n] = 0;
    return is_loopback(host);
}

static int is_loopback(const char *host)
{
    if (strcmp(host, "localhost") == 0)
        return 1;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

int config_validate(const config *cfg, char **err)
{
    struct stat st;
    if (stat(cfg->script, &st) < 0 || !S_ISREG(st.st_mode)) {
        *err = fmt_err("bot script '%s' not found: %s", cfg->script,
                       errno ? strerror(errno) : "not a regular file");
        return -1;
    }
    if (cfg->dev && !is_loopback(cfg->listen_host)) {
        *err = fmt_err("--dev serves without authentication and binds loopback only; "
                       "'%s' is not a loopback address", cfg->listen_host);
        return -1;
    }
    if (cfg->admin_host && !is_loopback(cfg->admin_host)) {
        if (cfg->dev) {
            *err = fmt_err("--dev binds loopback only; the admin listener '%s' is not a loopback "
                           "address", cfg->admin_host);
            return -1;
        }
        if (!cfg->admin_token) {
            *err = fmt_err("the admin listener %s:%d is not on loopback: set HERALD_ADMIN_TOKEN (a long "
                           "random secret); every admin request must then carry "
                           "\"Authorization: Bearer <token>\"", cfg->admin_host, cfg->admin_port);
            return -1;
        }
    }
    if (!cfg->dev && !cfg->app_id) {
        *err = fmt_err("no app id configured: set CLIENT_ID (or MicrosoftAppId) and CLIENT_SECRET "
                       "(or MicrosoftAppPassword) for a real bot, or pass --dev (HERALD_DEV=1) to run "
                       "unauthenticated against the Agents Playground");
        return -1;
    }
    if (!cfg->dev && !cfg->app_password && !cfg->cert_path) {
        *err = fmt_err("app id %s has no credential: set CLIENT_SECRET (or MicrosoftAppPassword), "
                       "or HERALD_CERTIFICATE_PATH for certificate authentication", cfg->app_id);
        return -1;
    }
    const char *urls[][2] = {{"HERALD_LOGIN_URL", cfg->login_url},
                             {"HERALD_OPENID_METADATA_URL", cfg->openid_metadata_url},
                             {"HERALD_PROACTIVE_SERVICE_URL", cfg->proactive_url}};
    for (size_t i = 0; i < 3; i++)
        if (!config_url_allowed(urls[i][1])) {
            *err = fmt_err("%s must be https (plain http only on a loopback host), got '%s'",
                           urls[i][0], urls[i][1]);
            return -1;
        }
    if (cfg->trusted_service_urls) {
        char *list = strdup(cfg->trusted_service_urls), *save = NULL;
        for (char *u = strtok_r(list, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
            while (*u == ' ') u++;
            if (*u && !config_url_allowed(u)) {
                *err = fmt_err("HERALD_TRUSTED_SERVICE_URLS entries must be https (plain http only "
                               "on a loopback host), got '%s'", u);
                free(list);
                return -1;
            }
        }
        free(list);
    }
    return 0;
}

static const char *mask(const char *secret) { return secret ? "******** (set)" : "(not set)"; }

void config_print(const config *cfg, FILE *out)
{
    fprintf(out, "herald %s configuration\n", HERALD_VERSION);
    fprintf(out, "  script                 %s\n", cfg->script);
    fprintf(out, "  database               %s\n", cfg->db_path);
    fprintf(out, "  listen                 %s:%d\n", cfg->listen_host, cfg->listen_port);
    fprintf(out, "  admin socket           %s (mode 0600)\n", cfg->admin_socket ? cfg->admin_socket : "?");
    if (cfg->admin_host)
        fprintf(out, "  admin listen           %s:%d (%s)\n", cfg->admin_host, cfg->admin_port,
                cfg->admin_token ? "bearer token required" : "loopback, no token");
    else
        fprintf(out, "  admin listen           (off)\n");
    fprintf(out, "  admin token            %s\n", mask(cfg->admin_token));
    fprintf(out, "  mode                   %s\n", cfg->dev ? "DEV (no authentication)" : "authenticated");
    fprintf(out, "  app id                 %s\n", cfg->app_id ? cfg->app_id : "(not set)");
    fprintf(out, "  app secret             %s\n", mask(cfg->app_password));
    fprintf(out, "  certificate            %s\n", cfg->cert_path ? cfg->cert_path : "(not set)");
    fprintf(out, "  tenant id              %s\n", cfg->tenant_id ? cfg->tenant_id : "(not set)");
    fprintf(out, "  app type               %s\n", cfg->app_type ? cfg->app_type
                                                   : cfg->tenant_id ? "SingleTenant (tenant id set)"
                                                                    : "MultiTenant");
    fprintf(out, "  cloud                  %s\n", cfg->cloud);
    fprintf(out, "  token endpoint         %s\n", cfg->token_url ? cfg->token_url : "?");
    fprintf(out, "  oauth scope            %s\n", cfg->oauth_scope);
    fprintf(out, "  openid metadata        %s\n", cfg->openid_metadata_url);
    fprintf(out, "  token issuer           %s\n", cfg->token_issuer);
    fprintf(out, "  proactive service url  %s\n", cfg->proactive_url);
    fprintf(out, "  trusted service urls   %s\n", cfg->trusted_service_urls ? cfg->trusted_service_urls : "(cloud defaults only)");
    fprintf(out, "  limits                 value (range)\n");
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++)
        fprintf(out, "    %-31s %ld %s (%ld..%ld)\n", limits[i].name, config_limit_value(cfg, &limits[i]),
                limits[i].unit, limits[i].min, limits[i].max);
    fprintf(out, "  reload                 %s; sandbox %s\n",
            cfg->reload_watch ? "watching files" : "SIGHUP only",
            cfg->unsafe_lua ? "OFF (HERALD_UNSAFE_LUA)" : "on");
    fprintf(out, "  outbox governor        %s\n", cfg->governor ? "on" : "OFF");
}

void config_free(config *cfg)
{
    free(cfg->token_url);
    free(cfg->listen_host);
    free(cfg->admin_socket);
    free(cfg->admin_host);
    free(cfg->script_dir);
    free(cfg->db_path);
    memset(cfg, 0, sizeof *cfg);
}
