/* config.c — the table of every setting (one row each: variables, flag, type, default, range,
 * secret, help) and what reads it: config_load (defaults, then environment, then flags; flags win),
 * `herald check`, `herald --help`, README's tables (`herald config --markdown`) and the warning
 * about unknown HERALD_* variables. Secrets are only ever stored, never printed. */
#include "config.h"
#include "err.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
           "       herald config [--markdown | --names]   the settings as README's tables, or their names\n"
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
        *err = errf("%s wants HOST:PORT (e.g. 127.0.0.1:3978), got '%s'", what, spec);
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
            *err = errf("%s needs a value", a);
            return -1;
        }
        val = argv[++*i];
    }
    if (strcmp(a, "--listen") == 0) {
        *err = errf("herald %s does not use --listen: the admin endpoints are served only on the "
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
    *err = errf("herald %s finds the running herald through the admin socket beside its database: "
                   "give --db PATH (or HERALD_DB) or the bot script, or --admin-listen HOST:PORT",
                   cfg->command);
    return -1;
}

#define AT(field) .offset = offsetof(config, field)
#define NUM(nm, lo, hi, d, u, k, field, text) \
    {.name = nm, .min = lo, .max = hi, .def = d, .unit = u, .kind = k, AT(field), \
     .type = CONFIG_T_NUMBER, .label = nm, .help = text}

/* Every setting, one row each: its variables, flag, type, default, range, whether it is secret,
 * and what it does. This table is the only place a setting, a default or a bound is written:
 * config_load applies it, `herald check` reports it, `herald --help` lists it and README's tables
 * are printed from it (`herald config --markdown`, checked by tests/integration/test_config.py).
 * The numeric rows stay together: config_limits() hands them out as one array. Every minimum is
 * at least 1: a zero here has always meant "no limit" or "no protection" (a key refetch floor of
 * 0 fetched keys in a loop). Rows print in this order. */
static const config_setting settings[] = {
    {.name = "HERALD_LISTEN", .flag = "--listen", .metavar = "HOST:PORT", .type = CONFIG_T_HOSTPORT,
     AT(listen_host), .offset2 = offsetof(config, listen_port), .dflt = "127.0.0.1:3978",
     .label = "listen",
     .help = "address to serve on; port `0` picks a free port, and the log line `listening on "
             "http://…` shows which"},
    {.name = "HERALD_DB", .flag = "--db", .metavar = "PATH", .type = CONFIG_T_PATH, AT(db_path),
     .shown = "`herald.db` beside the script", .label = "database",
     .help = "the SQLite database (WAL mode)"},
    {.name = "HERALD_ADMIN_SOCKET", .flag = "--admin-socket", .metavar = "PATH",
     .type = CONFIG_T_PATH, AT(admin_socket),
     .shown = "the database path + `.admin.sock` (`herald.db.admin.sock`)", .label = "admin socket",
     .help = "the unix socket of the [admin endpoints](#admin-endpoints), created mode `0600`; at "
             "most 107 bytes"},
    {.name = "HERALD_ADMIN_LISTEN", .flag = "--admin-listen", .metavar = "HOST:PORT",
     .type = CONFIG_T_HOSTPORT, AT(admin_host), .offset2 = offsetof(config, admin_port),
     .shown = "off", .label = "admin listen",
     .help = "also serve the admin endpoints over TCP, e.g. for a Prometheus scraper; a host that "
             "is not loopback needs `HERALD_ADMIN_TOKEN`"},
    {.name = "HERALD_ADMIN_TOKEN", .type = CONFIG_T_STRING, AT(admin_token), .flags = CONFIG_SECRET,
     .label = "admin token",
     .help = "the bearer token of the TCP admin listener: required to start when it is not on "
             "loopback, and checked on loopback too when set. Never logged; `herald check` masks it"},
    {.name = "HERALD_DEV", .flag = "--dev", .type = CONFIG_T_BOOL, AT(dev), .dflt = "off",
     .words = "1|true", .label = "mode",
     .help = "`1` or `true`: dev mode, see below"},
    {.name = "HERALD_LOG_LEVEL", .flag = "--log-level", .metavar = "LEVEL", .type = CONFIG_T_ENUM,
     AT(log_level), .dflt = "info", .words = "debug|info|warn|error", .label = "log level",
     .help = "`debug`, `info`, `warn` or `error`; logs go to stderr"},
    {.name = "CLIENT_ID", .alias = {"MicrosoftAppId"}, .type = CONFIG_T_STRING, AT(app_id),
     .label = "app id", .help = "the bot's app id"},
    {.name = "CLIENT_SECRET", .alias = {"MicrosoftAppPassword"}, .type = CONFIG_T_STRING,
     AT(app_password), .flags = CONFIG_SECRET, .label = "app secret",
     .help = "its secret; never logged"},
    {.name = "HERALD_CERTIFICATE_PATH", .type = CONFIG_T_STRING, AT(cert_path),
     .label = "certificate",
     .help = "certificate authentication: a PEM with the certificate (and its key, unless "
             "`HERALD_CERTIFICATE_KEY_PATH` gives it separately)"},
    {.name = "HERALD_CERTIFICATE_KEY_PATH", .type = CONFIG_T_STRING, AT(key_path),
     .label = "certificate key", .help = "the certificate's private key (PEM), when not in the "
                                         "certificate's file"},
    {.name = "TENANT_ID", .alias = {"MicrosoftAppTenantId"}, .type = CONFIG_T_STRING, AT(tenant_id),
     .label = "tenant id",
     .help = "the tenant of a single-tenant app; when set, tokens come from that tenant"},
    {.name = "MicrosoftAppType", .alias = {"HERALD_APP_TYPE"}, .type = CONFIG_T_ENUM, AT(app_type),
     .words = "MultiTenant|SingleTenant", .label = "app type",
     .shown = "`SingleTenant` when a tenant id is set, else `MultiTenant`",
     .help = "`MultiTenant` or `SingleTenant` (managed identity is not supported yet)"},
    {.name = "HERALD_CLOUD", .type = CONFIG_T_ENUM, AT(cloud), .dflt = "public",
     .words = "public|gcc|gcch|dod", .label = "cloud",
     .help = "`public`, `gcc`, `gcch` or `dod`; picks every endpoint below"},
    {.name = "HERALD_LOGIN_URL", .type = CONFIG_T_URL, AT(login_url), .shown = "per cloud",
     .label = "login url",
     .help = "the authority; the token endpoint is `{login}/{tenant}/oauth2/v2.0/token`. A token "
             "is renewed 5 minutes before its `expires_in` runs out, and at least daily (a longer "
             "`expires_in` counts as a day)"},
    {.name = "HERALD_OAUTH_SCOPE", .type = CONFIG_T_STRING, AT(oauth_scope), .shown = "per cloud",
     .label = "oauth scope",
     .help = "`https://api.botframework.com/.default` (`.us` for GCC High and DoD)"},
    {.name = "HERALD_OPENID_METADATA_URL", .type = CONFIG_T_URL, AT(openid_metadata_url),
     .shown = "per cloud", .label = "openid metadata",
     .help = "where the channel's signing keys are published"},
    {.name = "HERALD_TOKEN_ISSUER", .type = CONFIG_T_STRING, AT(token_issuer), .shown = "per cloud",
     .label = "token issuer", .help = "the `iss` inbound tokens must carry"},
    {.name = "HERALD_PROACTIVE_SERVICE_URL", .type = CONFIG_T_URL, AT(proactive_url),
     .shown = "per cloud", .label = "proactive service url",
     .help = "the global endpoint used when no stored conversation names a regional one"},
    {.name = "HERALD_TRUSTED_SERVICE_URLS", .type = CONFIG_T_URLS, AT(trusted_service_urls),
     .label = "trusted service urls",
     .help = "comma-separated URL prefixes that may receive the bot's token, besides the cloud's "
             "own"},
    {.name = "HERALD_RELOAD", .type = CONFIG_T_BOOL, AT(reload_watch), .dflt = "on",
     .words = "off|0", .label = "reload watch",
     .help = "`off`: no file watching (SIGHUP and `herald reload` still reload)"},
    {.name = "HERALD_DEFAULT_TZ", .type = CONFIG_T_STRING, AT(default_tz), .dflt = "UTC",
     .label = "default tz",
     .help = "the zone of `tz = \"user\"` schedules for users whose zone is not known yet"},
    {.name = "HERALD_NOTIFY_SECRET", .type = CONFIG_T_EXTERNAL, .flags = CONFIG_SECRET,
     .label = "notify secret",
     .help = "the secret of `/api/notify` triggers that have no secret of their own"},
    {.name = "HERALD_NOTIFY_SECRET_", .type = CONFIG_T_EXTERNAL,
     .flags = CONFIG_SECRET | CONFIG_PREFIX, .label = "notify secrets",
     .help = "the secret of one trigger (`<NAME>` is the trigger name upper-cased, `-` as `_`); "
             "it overrides `HERALD_NOTIFY_SECRET`"},
    {.name = "HERALD_SCRIPT_ENV", .type = CONFIG_T_STRING, AT(script_env), .label = "script env",
     .help = "comma-separated names `os.getenv` may read, besides `BOT_*`"},
    {.name = "HERALD_UNSAFE_LUA", .type = CONFIG_T_BOOL, AT(unsafe_lua), .dflt = "off", .words = "1",
     .label = "unsafe lua",
     .help = "`1` lifts the sandbox (io, the whole os library, C modules); logged at start"},
    {.name = "HERALD_GOVERNOR", .type = CONFIG_T_BOOL, AT(governor), .dflt = "on", .words = "off|0",
     .label = "outbox governor",
     .help = "`off` disables pacing, for benchmarks against a null connector only"},

    /* the numeric rows, together (config_limits) */
    NUM("HERALD_MAX_BODY_BYTES", 1024, 64L << 20, 1L << 20, "bytes", CONFIG_SIZE, max_body_bytes,
        "a larger `/api/messages` body gets `413`"),
    NUM("HERALD_RESPONSE_DEADLINE_MS", 1, 60000, 4000, "ms", CONFIG_LONG, response_deadline_ms,
        "Teams gets its `200` by then even if the handler is still running; the handler continues, "
        "so a slow handler never makes Teams time out and redeliver"),
    NUM("HERALD_REDELIVERY_WINDOW_S", 1, 86400, 300, "s", CONFIG_LONG, redelivery_window_s,
        "an activity id seen again for the same conversation within this window gets `200` and "
        "does not run again; an id counts as seen only once its activity was accepted (stored and "
        "started), so one refused with `503` runs when Teams sends it again. The ids are kept in "
        "memory under a keyed hash (SipHash, a random key per process), so crafted ids cannot be "
        "made to collide"),
    NUM("HERALD_INSTALL_WINDOW_S", 1, 86400, 600, "s", CONFIG_LONG, install_window_s,
        "install signals this close together count as one install (Teams sends both "
        "`installationUpdate` and `conversationUpdate`)"),
    NUM("HERALD_SHUTDOWN_GRACE_MS", 1, 600000, 10000, "ms", CONFIG_LONG, shutdown_grace_ms,
        "on SIGTERM/SIGINT, in-flight handlers get this long to finish, then they are cancelled"),
    NUM("HERALD_CONNECTOR_TIMEOUT_MS", 100, 600000, 15000, "ms", CONFIG_LONG, connector_timeout_ms,
        "one outbound Bot Connector call; past it the call returns `nil, msg, \"timeout\"`"),
    NUM("HERALD_LUA_MEMORY_MB", 4, 1L << 20, 256, "MB", CONFIG_MB, lua_memory_bytes,
        "memory cap for the Lua state; an allocation past it raises a memory error in the task "
        "that asked. What herald holds for the script's queued operations counts against it too, "
        "and a send that would leave the script less than a 32nd of the cap returns `queue_full` "
        "(the rest stays for the script's own allocations, so a flood of sends ends in "
        "`queue_full`, not in a memory error)"),
    NUM("HERALD_TASK_SLICE_MS", 1, 600000, 1000, "ms", CONFIG_LONG, task_slice_ms,
        "CPU time a handler may run without yielding; past it the handler is killed, and `pcall` "
        "cannot catch this"),
    /* a new generation is built on the loop: keep stalls short */
    NUM("HERALD_LOAD_DEADLINE_MS", 1, 600000, 1000, "ms", CONFIG_LONG, load_deadline_ms,
        "CPU time for the script's top level at load (a new generation is built on the event loop, "
        "so this bounds the stall a broken reload can cause)"),
    /* above a full collection of a capped heap under ASan */
    NUM("HERALD_WATCHDOG_GRACE_MS", 100, 600000, 3000, "ms", CONFIG_LONG, watchdog_grace_ms,
        "script code that has run its slice plus this much CPU without returning (stuck inside a C "
        "call such as the pattern matcher) makes the watchdog quarantine the culprit and restart "
        "herald in place; see \"The watchdog\""),
    NUM("HERALD_MAX_TASKS", 1, 10000000, 10000, "tasks", CONFIG_INT, max_tasks,
        "handlers alive at once; past it new activities get `503`"),
    NUM("HERALD_TASK_DEADLINE_MS", 100, 86400000L, 300000, "ms", CONFIG_LONG, task_deadline_ms,
        "a handler still waiting after this long (a dead connector, a forgotten sleep) is "
        "cancelled"),
    NUM("HERALD_MAX_TIMERS", 1, 10000000, 10000, "timers", CONFIG_INT, max_timers,
        "pending `teams.timer` timers per generation; past it `after`/`every` return "
        "`nil, msg, \"too_many_timers\"`"),
    NUM("HERALD_SCHEDULE_MISFIRE_S", 1, 86400, 60, "s", CONFIG_LONG, schedule_misfire_s,
        "a schedule due longer ago than this (herald was down) counts as missed"),
    NUM("HERALD_RELOAD_DEBOUNCE_MS", 1, 60000, 100, "ms", CONFIG_LONG, reload_debounce_ms,
        "reload once an editor's burst of writes has been quiet this long"),
    NUM("HERALD_RELOAD_GRACE_MS", 1, 3600000, 30000, "ms", CONFIG_LONG, reload_grace_ms,
        "the old generation's handlers get this long to finish after a reload"),
    NUM("HERALD_TENANT_RPS", 1, 100000, 50, "per s", CONFIG_LONG, tenant_rps,
        "outbound operations per second per tenant (Teams' limit per app per tenant)"),
    NUM("HERALD_OUTBOX_MAX_ATTEMPTS", 1, 1000, 8, "attempts", CONFIG_LONG, outbox_max_attempts,
        "attempts before an operation ends `failed`"),
    NUM("HERALD_OUTBOX_MAX_AGE_S", 1, 30L * 86400, 3600, "s", CONFIG_LONG, outbox_max_age_s,
        "an operation not delivered by then ends `expired`"),
    NUM("HERALD_RETRY_BASE_MS", 1, 3600000, 1000, "ms", CONFIG_LONG, retry_base_ms,
        "the first backoff between attempts; it doubles with each, with jitter"),
    NUM("HERALD_RETRY_MAX_MS", 1, 3600000, 60000, "ms", CONFIG_LONG, retry_max_ms,
        "the longest backoff between attempts"),
    NUM("HERALD_OUTBOX_MAX_IN_FLIGHT", 1, 100000, 256, "attempts", CONFIG_LONG, outbox_max_in_flight,
        "attempts out at once across all conversations; bulk sends beyond it wait in herald's "
        "queues (replies to a user never wait)"),
    NUM("HERALD_OUTBOX_RETENTION_S", 60, 3650L * 86400, 7L * 86400, "s", CONFIG_LONG,
        outbox_retention_s, "finished operations are kept this long for reports, then purged"),
    NUM("HERALD_MAX_QUEUED_PER_CONVERSATION", 1, 10000000, 1000, "operations", CONFIG_LONG,
        max_queued_per_conversation,
        "operations outstanding (queued or in flight) for one conversation; past it a send, reply, "
        "update, delete or create returns `nil, msg, \"queue_full\"` at once and writes nothing"),
    NUM("HERALD_MAX_QUEUED_PER_TENANT", 1, 10000000, 10000, "operations", CONFIG_LONG,
        max_queued_per_tenant, "the same, per tenant"),
    NUM("HERALD_MAX_QUEUED_TOTAL", 1, 10000000, 50000, "operations", CONFIG_LONG, max_queued_total,
        "the same, in total. Operations resumed after a restart and a broadcast's window (1,000 "
        "per job) count towards it, but a broadcast itself is never refused"),
    NUM("HERALD_JWKS_REFRESH_S", 60, 7L * 86400, 86400, "s", CONFIG_LONG, jwks_refresh_interval_s,
        "periodic refresh of the channel's signing keys"),
    NUM("HERALD_JWKS_REFRESH_FLOOR_S", 1, 86400, 300, "s", CONFIG_LONG, jwks_refresh_floor_s,
        "an unknown `kid` refetches the keys at most once per floor, counted from the end of the "
        "last fetch"),
    NUM("HERALD_JWKS_TIMEOUT_MS", 1000, 60000, 10000, "ms", CONFIG_LONG, jwks_timeout_ms,
        "one key fetch (OpenID metadata, then the key set); an activity waiting for keys is "
        "answered by then, `503` if they did not come"),
    NUM("HERALD_NOTIFY_REPLAY_MAX", 1, 100000, 10000, "signatures", CONFIG_LONG, notify_replay_max,
        "signed notify requests remembered within their 5-minute window; when it is full of live "
        "ones, new signed requests get `429` with `retry_after` (bearer requests are not "
        "affected)"),
    /* what GET /api/notify/operations/{id} can still answer: finished operations kept */
    NUM("HERALD_NOTIFY_RESULTS_MAX", 1, 1000000, 1000, "operations", CONFIG_LONG, notify_results_max,
        "finished notify operations (ones that answered `202`) whose result "
        "`GET /api/notify/operations/{id}` can still return; the oldest finished one goes first"),
    NUM("HERALD_NOTIFY_RESULTS_MAX_BYTES", 1024, 1L << 30, 16L << 20, "bytes", CONFIG_SIZE,
        notify_results_max_bytes,
        "bytes those results may hold together; a single result larger than this is not kept (its "
        "operation reads `done` with an `error` saying so)"),
    NUM("HERALD_NOTIFY_RESULT_TTL_S", 1, 7L * 86400, 3600, "s", CONFIG_LONG, notify_result_ttl_s,
        "how long a finished operation's result is kept after it ended"),
    /* quick_check reads every page (about 1 s per GB cached, 20 s cold): bigger files skip it */
    NUM("HERALD_DB_CHECK_MAX_MB", 1, 1L << 20, 256, "MB", CONFIG_LONG, db_check_max_mb,
        "a database file up to this size is checked with `PRAGMA quick_check` at start, and a "
        "corrupted one is refused; a larger one is not checked at start (corruption then shows "
        "when a write meets it: the store degrades); set it to 1 to skip the check for any real "
        "database"),

    /* test hooks: known, so that they do not warn; README lists them apart */
    {.name = "HERALD_TEST_CLOCK", .type = CONFIG_T_BOOL, AT(test_clock), .dflt = "off", .words = "1",
     .flags = CONFIG_TEST, .label = "test clock",
     .help = "`1`: `POST /-/clock` on the admin endpoints moves herald's wall clock (schedules and "
             "stored references see it); logged at start"},
    {.name = "HERALD_TEST_CRASH_BROADCAST", .type = CONFIG_T_EXTERNAL, .flags = CONFIG_TEST,
     .label = "test crash broadcast",
     .help = "ASan build only: `N` kills herald with SIGKILL when a broadcast's preparation is "
             "about to write its (N+1)-th recipient or to start with N written"},
    {.name = "HERALD_TEST_COMMIT_DELAY_MS", .type = CONFIG_T_EXTERNAL, .flags = CONFIG_TEST,
     .label = "test commit delay",
     .help = "ASan build only: `N` holds each outbox group commit N ms, so a test can kill herald "
             "between a handler's writes and their commit"},
    {.name = "HERALD_WATCHDOG_RESTARTS", .type = CONFIG_T_EXTERNAL, .flags = CONFIG_TEST,
     .label = "watchdog restarts",
     .help = "set by herald itself when its watchdog restarts it in place (restarts in the last 10 "
             "minutes); never set it by hand"},
};
#undef NUM
#undef AT

#define NSETTINGS (sizeof settings / sizeof settings[0])
_Static_assert(NSETTINGS <= CONFIG_SETTINGS_MAX, "raise CONFIG_SETTINGS_MAX");

/* Names the build, test and benchmark scripts read (tests/, scripts/, the fault shim loaded into
 * herald): not settings, but herald may inherit them, so they do not warn either. */
static const char *const tool_names[] = {
    "HERALD_BIN", "HERALD_PORT", "HERALD_PID", "HERALD_SCRIPT", "HERALD_RUN_DIR",
    "HERALD_SKIP_APT", "HERALD_SKIP_PLAYGROUND", "HERALD_PLAYGROUND_HOST", "HERALD_FUZZ_BOT",
    "HERALD_GOVERNOR_MAIN", "HERALD_KNOWN_BUGS", "HERALD_TEST_TIME_FACTOR", "HERALD_TEST_PENDING",
    "HERALD_FAULT_PREFIX", "HERALD_FAULT_CONTROL", "HERALD_FAULT_LOG",
};

const config_setting *config_settings(size_t *n)
{
    *n = NSETTINGS;
    return settings;
}

const config_limit *config_limits(size_t *n)
{
    size_t first = 0;
    while (first < NSETTINGS && settings[first].type != CONFIG_T_NUMBER)
        first++;
    size_t last = first;
    while (last < NSETTINGS && settings[last].type == CONFIG_T_NUMBER)
        last++;
    *n = last - first;
    return settings + first;
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

/* 1 when word is one of the '|'-separated words. */
static int word_in(const char *word, const char *words)
{
    size_t n = strlen(word);
    for (const char *w = words; w && *w;) {
        size_t k = strcspn(w, "|");
        if (k == n && strncmp(w, word, n) == 0)
            return 1;
        w += k + (w[k] == '|');
    }
    return 0;
}

#define FIELD(cfg, s, T) ((T *)((char *)(cfg) + (s)->offset))

/* Gives row s the value v (never empty), which came from source (a variable or a flag; error
 * messages name it). Returns 0, or -1 with *err set. */
static int setting_set(config *cfg, const config_setting *s, const char *v, const char *source,
                       char **err)
{
    long x;
    switch (s->type) {
    case CONFIG_T_NUMBER:
        if (parse_long(v, s->min, s->max, &x) < 0) {
            *err = errf("%s must be an integer from %ld to %ld (%s), got '%s'", s->name, s->min,
                           s->max, s->unit, v);
            return -1;
        }
        limit_store(cfg, s, x);
        return 0;
    case CONFIG_T_BOOL:
        /* a flag turns the default around; a variable does when it is one of the words */
        if (source == s->flag || word_in(v, s->words))
            *FIELD(cfg, s, int) = strcmp(s->dflt, "on") != 0;
        return 0;
    case CONFIG_T_PATH:
        free(*FIELD(cfg, s, char *));
        *FIELD(cfg, s, char *) = strdup(v);
        return 0;
    case CONFIG_T_HOSTPORT:
        return parse_hostport(source, v, FIELD(cfg, s, char *),
                              (int *)((char *)cfg + s->offset2), err);
    case CONFIG_T_STRING:
    case CONFIG_T_ENUM:
    case CONFIG_T_URL:
    case CONFIG_T_URLS:
        *FIELD(cfg, s, const char *) = v;
        return 0;
    case CONFIG_T_EXTERNAL:
        return 0;
    }
    return 0;
}

/* Every row's default, then its variables (the first one set wins). */
static int apply_settings(config *cfg, char **err)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        const config_setting *s = &settings[i];
        cfg->from[i] = CONFIG_FROM_DEFAULT;
        if (s->type == CONFIG_T_EXTERNAL)
            continue;
        if (s->type == CONFIG_T_NUMBER)
            limit_store(cfg, s, s->def);
        else if (s->type == CONFIG_T_BOOL)
            *FIELD(cfg, s, int) = strcmp(s->dflt, "on") == 0;
        else if (s->dflt && setting_set(cfg, s, s->dflt, s->name, err) < 0)
            return -1;
        const char *names[3] = {s->name, s->alias[0], s->alias[1]};
        for (int k = 0; k < 3 && names[k]; k++) {
            const char *v = getenv(names[k]);
            if (v && *v) {
                if (setting_set(cfg, s, v, names[k], err) < 0)
                    return -1;
                cfg->from[i] = (unsigned char)(CONFIG_FROM_NAME + k);
                break;
            }
        }
    }
    return 0;
}

/* The row whose flag is name, or NULL. */
static const config_setting *flag_setting(const char *name, size_t *index)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (settings[i].flag && strcmp(settings[i].flag, name) == 0) {
            *index = i;
            return &settings[i];
        }
    return NULL;
}

/* A flag's value: an empty PATH puts its default back (as an empty variable does). */
static int flag_set(config *cfg, size_t i, const char *v, char **err)
{
    const config_setting *s = &settings[i];
    cfg->from[i] = CONFIG_FROM_FLAG;
    if (s->type == CONFIG_T_PATH && !*v) {
        free(*FIELD(cfg, s, char *));
        *FIELD(cfg, s, char *) = NULL;
        cfg->from[i] = CONFIG_FROM_DEFAULT;
        return 0;
    }
    return setting_set(cfg, s, v, s->flag, err);
}

/* ---- what the rows print: herald check, --help, README --------------------------------------- */

static const char *mask(const char *secret) { return secret ? "******** (set)" : "(not set)"; }

/* "`a`, `b`" → "a, b": markdown for a terminal. */
static void put_plain(FILE *out, const char *md)
{
    for (; *md; md++)
        if (*md != '`')
            fputc(*md, out);
}

/* The variables of row s, joined by sep ("CLIENT_ID / MicrosoftAppId"), each quoted by q. */
static void put_names(FILE *out, const config_setting *s, const char *sep, const char *q)
{
    const char *names[3] = {s->name, s->alias[0], s->alias[1]};
    for (int k = 0; k < 3 && names[k]; k++)
        fprintf(out, "%s%s%s%s%s", k ? sep : "", q, names[k],
                (s->flags & CONFIG_PREFIX) && k == 0 ? "<NAME>" : "", q);
}

/* Row i's value as `herald check` shows it (buf for built strings). */
static const char *setting_value(const config *cfg, size_t i, char *buf, size_t cap)
{
    const config_setting *s = &settings[i];
    if (s->type == CONFIG_T_EXTERNAL && (s->flags & CONFIG_PREFIX)) {
        /* which triggers have a secret of their own: the names, never the values */
        size_t len = strlen(s->name), used = 0;
        buf[0] = 0;
        for (char **e = environ; e && *e; e++) {
            const char *eq = strchr(*e, '=');
            if (eq && strncmp(*e, s->name, len) == 0 && eq > *e + len && eq[1] && used < cap) {
                int w = snprintf(buf + used, cap - used, "%s%.*s", used ? ", " : "(set for ",
                                 (int)(eq - *e - (ptrdiff_t)len), *e + len);
                used += w > 0 ? (size_t)w : 0;
            }
        }
        if (!used)
            return "(not set)";
        if (used < cap)
            snprintf(buf + used, cap - used, ")");
        return buf;
    }
    if (s->type == CONFIG_T_EXTERNAL) {
        const char *v = getenv(s->name);
        v = v && *v ? v : NULL;
        return (s->flags & CONFIG_SECRET) ? mask(v) : v ? v : "(not set)";
    }
    if (s->flags & CONFIG_SECRET)
        return mask(*(const char *const *)((const char *)cfg + s->offset));
    if (s->offset == offsetof(config, dev))
        return cfg->dev ? "DEV (no authentication)" : "authenticated";
    if (s->offset == offsetof(config, app_type) && !cfg->app_type)
        return cfg->tenant_id ? "SingleTenant (tenant id set)" : "MultiTenant";
    if (s->offset == offsetof(config, admin_socket)) {
        snprintf(buf, cap, "%s (mode 0600)", cfg->admin_socket ? cfg->admin_socket : "?");
        return buf;
    }
    if (s->offset == offsetof(config, admin_host) && !cfg->admin_host)
        return "(off)";
    const char *field = (const char *)cfg + s->offset;
    switch (s->type) {
    case CONFIG_T_BOOL:
        return *(const int *)field ? "on" : "off";
    case CONFIG_T_HOSTPORT: {
        const char *host = *(char *const *)field;
        int v6 = host && strchr(host, ':');
        snprintf(buf, cap, "%s%s%s:%d%s", v6 ? "[" : "", host ? host : "?", v6 ? "]" : "",
                 *(const int *)((const char *)cfg + s->offset2),
                 s->offset != offsetof(config, admin_host) ? ""
                 : cfg->admin_token                         ? " (bearer token required)"
                                                            : " (loopback, no token)");
        return buf;
    }
    case CONFIG_T_PATH:
        return *(char *const *)field ? *(char *const *)field : "(not set)";
    case CONFIG_T_STRING:
    case CONFIG_T_ENUM:
    case CONFIG_T_URL:
    case CONFIG_T_URLS:
        return *(const char *const *)field ? *(const char *const *)field : "(not set)";
    case CONFIG_T_NUMBER:
    case CONFIG_T_EXTERNAL:
        break;
    }
    return "?";
}

void config_report(FILE *out, const config *cfg)
{
    char buf[1024];
    fprintf(out, "herald %s configuration\n", HERALD_VERSION);
    fprintf(out, "  script                 %s\n", cfg->script ? cfg->script : "(none)");
    fprintf(out, "  token endpoint         %s\n", cfg->token_url ? cfg->token_url : "?");
    for (size_t i = 0; i < NSETTINGS; i++) {
        const config_setting *s = &settings[i];
        if (s->type == CONFIG_T_NUMBER)
            continue;
        fprintf(out, "  %-22s %s  (", s->label, setting_value(cfg, i, buf, sizeof buf));
        /* where the value came from, then the setting's other names: each name once */
        const char *names[4] = {s->flag, s->name, s->alias[0], s->alias[1]};
        int from = cfg->from[i] == CONFIG_FROM_FLAG ? 0 : cfg->from[i], sep = 0;
        if (cfg->from[i] != CONFIG_FROM_DEFAULT)
            fprintf(out, "from %s", names[from]);
        else
            fputs(s->type == CONFIG_T_EXTERNAL ? "" : "default", out);
        for (int k = 0; k < 4; k++) {
            if (!names[k] || (cfg->from[i] != CONFIG_FROM_DEFAULT && k == from))
                continue;
            fputs(sep++ ? ", " : s->type == CONFIG_T_EXTERNAL && cfg->from[i] == CONFIG_FROM_DEFAULT
                                     ? "" : "; ", out);
            fprintf(out, "%s%s", names[k], (s->flags & CONFIG_PREFIX) && k == 1 ? "<NAME>" : "");
        }
        fputs(s->flags & CONFIG_TEST ? "; test only)\n" : ")\n", out);
    }
    /* the variable of a numeric row names its source: the two groups say which were set */
    for (int set = 1; set >= 0; set--) {
        int header = 0;
        size_t n, first = config_limits(&n) - settings;
        for (size_t i = first; i < first + n; i++) {
            const config_limit *l = &settings[i];
            if ((cfg->from[i] != CONFIG_FROM_DEFAULT) != set)
                continue;
            if (!header++)
                fprintf(out, "  %-22s value (range)\n", set ? "limits set" : "limits at default");
            fprintf(out, "    %-31s %ld %s (%ld..%ld)\n", l->name, config_limit_value(cfg, l),
                    l->unit, l->min, l->max);
        }
    }
}

/* The markdown default of row s. */
static void put_default(FILE *out, const config_setting *s)
{
    if (s->type == CONFIG_T_NUMBER)
        fprintf(out, "%ld", s->def);
    else if (s->shown)
        fputs(s->shown, out);
    else if (s->type == CONFIG_T_BOOL)
        fputs(s->dflt, out);
    else if (s->dflt)
        fprintf(out, "`%s`", s->dflt);
}

void config_markdown(FILE *out)
{
    static const char *const heads[] = {
        "| flag / variable | default | meaning |\n| --- | --- | --- |\n",
        ("\n**Limits.** Each is an integer checked against its range at start (`herald check` shows "
         "the ranges).\n\n| variable | default | what happens when it is reached |\n"
         "| --- | --- | --- |\n"),
        ("\n**Test hooks**, for herald's own tests; never set them in production.\n\n"
         "| variable | meaning |\n| --- | --- |\n"),
    };
    for (int table = 0; table < 3; table++) {
        fputs(heads[table], out);
        for (size_t i = 0; i < NSETTINGS; i++) {
            const config_setting *s = &settings[i];
            int t = (s->flags & CONFIG_TEST) ? 2 : s->type == CONFIG_T_NUMBER ? 1 : 0;
            if (t != table)
                continue;
            fputs("| ", out);
            if (s->flag)
                fprintf(out, "`%s%s%s`, ", s->flag, s->metavar ? " " : "",
                        s->metavar ? s->metavar : "");
            put_names(out, s, " / ", "`");
            if (table < 2) {
                fputs(" |", out);
                if (s->type == CONFIG_T_NUMBER || s->shown || s->dflt)
                    fputc(' ', out);
                put_default(out, s);
            }
            fprintf(out, " | %s |\n", s->help);
        }
    }
}

void config_help(FILE *out)
{
    fputs(config_usage(), out);
    fputs("\nSettings (flag, environment: default); `herald config` prints what each does:\n", out);
    for (size_t i = 0; i < NSETTINGS; i++) {
        const config_setting *s = &settings[i];
        if (s->flags & CONFIG_TEST)
            continue;
        fputs("  ", out);
        if (s->flag)
            fprintf(out, "%s%s%s, ", s->flag, s->metavar ? " " : "", s->metavar ? s->metavar : "");
        put_names(out, s, " / ", "");
        fputs(": ", out);
        if (s->type == CONFIG_T_NUMBER)
            fprintf(out, "%ld %s (%ld..%ld)", s->def, s->unit, s->min, s->max);
        else if (s->shown || s->dflt)
            put_plain(out, s->shown ? s->shown : s->dflt);
        else
            fputs(s->flags & CONFIG_SECRET ? "(secret, unset)" : "(unset)", out);
        if (s->type == CONFIG_T_ENUM) {
            fputs(" [", out);
            put_plain(out, s->words);
            fputs("]", out);
        }
        fputc('\n', out);
    }
}

/* ---- unknown variables ------------------------------------------------------------------- */

/* Edit distance between a[0..an) and b (at most 63 characters each are compared). */
static size_t distance(const char *a, size_t an, const char *b)
{
    size_t bn = strlen(b), row[64];
    an = an > 63 ? 63 : an;
    bn = bn > 63 ? 63 : bn;
    for (size_t j = 0; j <= bn; j++)
        row[j] = j;
    for (size_t i = 1; i <= an; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= bn; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[bn];
}

/* 1 when the variable name[0..n) is a setting (or a tool's); else *closest is the nearest setting. */
static int known_name(const char *name, size_t n, const char **closest)
{
    size_t best = (size_t)-1;
    for (size_t i = 0; i < NSETTINGS; i++) {
        const config_setting *s = &settings[i];
        const char *names[3] = {s->name, s->alias[0], s->alias[1]};
        for (int k = 0; k < 3 && names[k]; k++) {
            size_t len = strlen(names[k]);
            if (len == n && strncmp(name, names[k], n) == 0)
                return 1;
            if ((s->flags & CONFIG_PREFIX) && k == 0 && n > len && strncmp(name, names[k], len) == 0)
                return 1;
            if (strncmp(names[k], "HERALD_", 7) != 0)
                continue;
            size_t d = distance(name, n, names[k]);
            if (d < best) {
                best = d;
                *closest = names[k];
            }
        }
    }
    for (size_t i = 0; i < sizeof tool_names / sizeof tool_names[0]; i++)
        if (strlen(tool_names[i]) == n && strncmp(name, tool_names[i], n) == 0)
            return 1;
    return 0;
}

int config_warn_unknown(char *const *envp, void (*warn)(const char *msg))
{
    int count = 0;
    for (; envp && *envp; envp++) {
        const char *e = *envp, *closest = NULL;
        size_t n = strcspn(e, "=");
        if (strncmp(e, "HERALD_", 7) != 0 || known_name(e, n, &closest))
            continue;
        char *msg = errf("unknown setting %.*s (did you mean %s?)", (int)n, e, closest);
        if (msg)
            warn(msg);
        free(msg);
        count++;
    }
    return count;
}

void config_names(FILE *out)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        const config_setting *s = &settings[i];
        const char *names[3] = {s->name, s->alias[0], s->alias[1]};
        for (int k = 0; k < 3 && names[k]; k++)
            fprintf(out, "%s%s\n", names[k], (s->flags & CONFIG_PREFIX) && k == 0 ? "<NAME>" : "");
    }
    for (size_t i = 0; i < sizeof tool_names / sizeof tool_names[0]; i++)
        fprintf(out, "%s\n", tool_names[i]);
}

int config_load(config *cfg, int argc, char **argv, char **err)
{
    memset(cfg, 0, sizeof *cfg);
    if (apply_settings(cfg, err) < 0)
        return -1;

    /* flags */
    int i = 1;
    if (i < argc && (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 ||
                     strcmp(argv[i], "help") == 0)) {
        config_help(stdout);
        return 1;
    }
    if (i < argc && (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "version") == 0)) {
        printf("herald %s\n", HERALD_VERSION);
        return 1;
    }
    if (i >= argc) {
        *err = errf("no command given");
        return -1;
    }
    if (strcmp(argv[i], "config") == 0) {
        /* herald config [--markdown | --names]: README's tables, or every name herald knows */
        const char *what = i + 1 < argc ? argv[i + 1] : "--markdown";
        if (i + 2 < argc || (strcmp(what, "--markdown") != 0 && strcmp(what, "--names") != 0)) {
            *err = errf("herald config takes --markdown or --names");
            return -1;
        }
        if (strcmp(what, "--names") == 0)
            config_names(stdout);
        else
            config_markdown(stdout);
        return 1;
    }
    if (strcmp(argv[i], "broadcast") == 0) {
        /* herald broadcast list|show ID [--watch] [--csv|--json] | pause|resume|cancel ID, each with
         * --db PATH or the script; the controls also take --admin-socket / --admin-listen */
        cfg->command = argv[i++];
        cfg->format = "text";
        cfg->action = i < argc ? argv[i++] : "list";
        const char *db = cfg->db_path;    /* HERALD_DB */
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
                *err = errf("herald broadcast: unexpected '%s'", a);
                return -1;
            }
        }
        int control = strcmp(cfg->action, "pause") == 0 || strcmp(cfg->action, "resume") == 0 ||
                      strcmp(cfg->action, "cancel") == 0;
        if (!control && strcmp(cfg->action, "list") != 0 && strcmp(cfg->action, "show") != 0) {
            *err = errf("herald broadcast list|show|pause|resume|cancel, got '%s'", cfg->action);
            return -1;
        }
        if (cfg->watch && strcmp(cfg->format, "text") != 0) {
            *err = errf("herald broadcast --watch draws a bar; it takes no --%s", cfg->format);
            return -1;
        }
        if ((control || strcmp(cfg->action, "show") == 0) && cfg->broadcast_id <= 0) {
            *err = errf("herald broadcast %s needs a broadcast id", cfg->action);
            return -1;
        }
        if (control && admin_target(cfg, tcp, db, err) < 0)
            return -1;
        if (!control) {
            if (db && *db) {
                if (db != cfg->db_path) {
                    free(cfg->db_path);
                    cfg->db_path = strdup(db);
                }
            } else if (cfg->script) {
                const char *slash = strrchr(cfg->script, '/');
                if (asprintf(&cfg->db_path, "%.*s/herald.db", slash ? (int)(slash - cfg->script) : 1,
                             slash ? cfg->script : ".") < 0)
                    cfg->db_path = NULL;
            } else {
                *err = errf("herald broadcast %s needs --db PATH (or the bot script)", cfg->action);
                return -1;
            }
        }
        return apply_cloud(cfg, err);
    }
    if (strcmp(argv[i], "reload") == 0) {
        cfg->command = argv[i];
        const char *db = cfg->db_path;    /* HERALD_DB */
        int tcp = 0;
        for (i++; i < argc; i++) {
            int r = admin_cli_arg(cfg, argc, argv, &i, &db, &tcp, err);
            if (r < 0)
                return -1;
            if (r == 0) {
                *err = errf("herald reload takes --db PATH or the bot script, --admin-socket PATH "
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
        *err = errf("unknown command '%s'", argv[i]);
        return -1;
    }
    cfg->command = argv[i++];
    for (; i < argc; i++) {
        char name[32];
        const char *val = NULL, *a = flag_name(argv[i], name, &val);
        size_t row;
        const config_setting *flag = flag_setting(a, &row);
        if (flag && flag->type == CONFIG_T_BOOL && !val) {
            if (flag_set(cfg, row, "1", err) < 0)
                return -1;
        } else if (report && (strcmp(a, "--json") == 0 || strcmp(a, "--csv") == 0) && !val) {
            cfg->format = a + 2;
        } else if (report && strcmp(a, "--since") == 0) {
            if (!val) {
                if (i + 1 >= argc) {
                    *err = errf("--since needs a value (seconds ago, or an ISO 8601 time)");
                    return -1;
                }
                val = argv[++i];
            }
            cfg->since = val;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            config_help(stdout);
            return 1;
        } else if (flag && flag->type != CONFIG_T_BOOL) {
            if (!val) {
                if (i + 1 >= argc) {
                    *err = errf("%s needs a value", a);
                    return -1;
                }
                val = argv[++i];
            }
            if (flag_set(cfg, row, val, err) < 0)
                return -1;
        } else if (a[0] == '-' && a[1]) {
            *err = errf("unknown flag '%s'", argv[i]);
            return -1;
        } else if (!cfg->script) {
            cfg->script = a;
        } else {
            *err = errf("unexpected argument '%s' (one script only)", a);
            return -1;
        }
    }
    if (report && !cfg->script) {
        if (!cfg->db_path) {
            *err = errf("'%s' needs --db PATH (or the bot script, whose directory holds herald.db)",
                           cfg->command);
            return -1;
        }
        return apply_cloud(cfg, err);
    }
    if (!cfg->script) {
        *err = errf("'%s' needs a bot script, e.g. herald run bot.lua", cfg->command);
        return -1;
    }
    const char *slash = strrchr(cfg->script, '/');
    cfg->script_dir = slash ? strndup(cfg->script, (size_t)(slash - cfg->script) + (slash == cfg->script))
                            : strdup(".");
    if (apply_cloud(cfg, err) < 0)
        return -1;
    if (!cfg->db_path && asprintf(&cfg->db_path, "%s/herald.db", cfg->script_dir) < 0)
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
        *err = errf("HERALD_CLOUD must be public, gcc, gcch or dod, got '%s'", cfg->cloud);
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
        *err = errf("MicrosoftAppType must be MultiTenant or SingleTenant, got '%s' "
                       "(managed identity is not supported yet)", cfg->app_type);
        return -1;
    }
    /* New bots are single-tenant (Azure stopped creating multi-tenant ones in 2025): a configured
     * tenant id means single-tenant unless the app type says otherwise. */
    const char *authority_tenant = (cfg->tenant_id && !multi) ? cfg->tenant_id : c->default_tenant;
    if (single && !cfg->tenant_id) {
        *err = errf("MicrosoftAppType=SingleTenant needs TENANT_ID (or MicrosoftAppTenantId)");
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
        *err = errf("bot script '%s' not found: %s", cfg->script,
                       errno ? strerror(errno) : "not a regular file");
        return -1;
    }
    if (cfg->dev && !is_loopback(cfg->listen_host)) {
        *err = errf("--dev serves without authentication and binds loopback only; "
                       "'%s' is not a loopback address", cfg->listen_host);
        return -1;
    }
    if (cfg->admin_host && !is_loopback(cfg->admin_host)) {
        if (cfg->dev) {
            *err = errf("--dev binds loopback only; the admin listener '%s' is not a loopback "
                           "address", cfg->admin_host);
            return -1;
        }
        if (!cfg->admin_token) {
            *err = errf("the admin listener %s:%d is not on loopback: set HERALD_ADMIN_TOKEN (a long "
                           "random secret); every admin request must then carry "
                           "\"Authorization: Bearer <token>\"", cfg->admin_host, cfg->admin_port);
            return -1;
        }
    }
    if (!cfg->dev && !cfg->app_id) {
        *err = errf("no app id configured: set CLIENT_ID (or MicrosoftAppId) and CLIENT_SECRET "
                       "(or MicrosoftAppPassword) for a real bot, or pass --dev (HERALD_DEV=1) to run "
                       "unauthenticated against the Agents Playground");
        return -1;
    }
    if (!cfg->dev && !cfg->app_password && !cfg->cert_path) {
        *err = errf("app id %s has no credential: set CLIENT_SECRET (or MicrosoftAppPassword), "
                       "or HERALD_CERTIFICATE_PATH for certificate authentication", cfg->app_id);
        return -1;
    }
    for (size_t i = 0; i < NSETTINGS; i++) {
        const config_setting *s = &settings[i];
        const char *v = s->type == CONFIG_T_URL || s->type == CONFIG_T_URLS
                            ? *(const char *const *)((const char *)cfg + s->offset) : NULL;
        if (v && s->type == CONFIG_T_URL && !config_url_allowed(v)) {
            *err = errf("%s must be https (plain http only on a loopback host), got '%s'",
                           s->name, v);
            return -1;
        }
        if (!v || s->type != CONFIG_T_URLS)
            continue;
        char *list = strdup(v), *save = NULL;
        for (char *u = strtok_r(list, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
            while (*u == ' ') u++;
            if (*u && !config_url_allowed(u)) {
                *err = errf("%s entries must be https (plain http only on a loopback host), "
                               "got '%s'", s->name, u);
                free(list);
                return -1;
            }
        }
        free(list);
    }
    return 0;
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
