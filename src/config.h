/* config.h — herald's configuration: defaults, environment, flags (flags win), validation.
 * Owns every named limit; other files read them from here and never parse the environment. */
#ifndef HERALD_CONFIG_H
#define HERALD_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#define CONFIG_SETTINGS_MAX 96      /* rows in config_settings(); a unit test keeps it enough */

typedef struct config {
    const char *command;          /* "run", "check", "outbox", "blocked", "deliveries" */
    const char *format;           /* reports: "text" (default), "json", "csv" */
    const char *since;            /* deliveries: seconds ago or an ISO 8601 time */
    const char *action;           /* broadcast: list | show | pause | resume | cancel */
    long long broadcast_id;
    int watch;                    /* broadcast show --watch */
    const char *script;           /* bot script path */
    char *script_dir;             /* directory of the script (owned) */
    char *db_path;                /* owned; default "<script_dir>/herald.db" */
    char *listen_host;            /* owned */
    int listen_port;
    /* admin endpoints (/metrics, /-/…): never on the public listener */
    char *admin_socket;           /* owned: --admin-socket / HERALD_ADMIN_SOCKET; default "<db>.admin.sock" */
    char *admin_host;             /* owned: --admin-listen / HERALD_ADMIN_LISTEN; NULL: no TCP admin listener */
    int admin_port;
    const char *admin_token;      /* HERALD_ADMIN_TOKEN (secret): bearer token of the TCP admin listener */
    int dev;                      /* --dev / HERALD_DEV=1 */
    const char *log_level;

    const char *app_id;           /* CLIENT_ID / MicrosoftAppId */
    const char *app_password;     /* CLIENT_SECRET / MicrosoftAppPassword (secret) */
    const char *tenant_id;        /* TENANT_ID / MicrosoftAppTenantId */
    const char *app_type;         /* MicrosoftAppType: MultiTenant | SingleTenant */
    const char *cert_path;        /* HERALD_CERTIFICATE_PATH: PEM certificate (+ key) */
    const char *key_path;         /* HERALD_CERTIFICATE_KEY_PATH */

    /* cloud endpoints: HERALD_CLOUD picks the defaults, each is overridable */
    const char *cloud;            /* public | gcc | gcch | dod */
    const char *login_url;        /* HERALD_LOGIN_URL: the authority */
    const char *oauth_scope;      /* HERALD_OAUTH_SCOPE */
    const char *openid_metadata_url; /* HERALD_OPENID_METADATA_URL */
    const char *token_issuer;     /* HERALD_TOKEN_ISSUER */
    const char *proactive_url;    /* HERALD_PROACTIVE_SERVICE_URL: global endpoint of the cloud */
    const char *trusted_service_urls; /* HERALD_TRUSTED_SERVICE_URLS: comma-separated prefixes */
    char *token_url;              /* owned: {login}/{tenant}/oauth2/v2.0/token */
    long jwks_refresh_floor_s;    /* HERALD_JWKS_REFRESH_FLOOR_S: unknown kids refetch at most this often */
    long jwks_refresh_interval_s; /* HERALD_JWKS_REFRESH_S */
    long jwks_timeout_ms;         /* HERALD_JWKS_TIMEOUT_MS: one metadata + JWKS fetch, waiters included */

    /* named limits */
    size_t max_body_bytes;        /* HERALD_MAX_BODY_BYTES: /api/messages body cap → 413 */
    long response_deadline_ms;    /* HERALD_RESPONSE_DEADLINE_MS: answer Teams by then even if the task goes on */
    long redelivery_window_s;     /* HERALD_REDELIVERY_WINDOW_S: an activity id seen within it is not run twice */
    long install_window_s;        /* HERALD_INSTALL_WINDOW_S: install signals this close are one install */
    long shutdown_grace_ms;       /* HERALD_SHUTDOWN_GRACE_MS: in-flight work allowed to finish on SIGTERM */
    long connector_timeout_ms;    /* HERALD_CONNECTOR_TIMEOUT_MS: one outbound call */
    size_t lua_memory_bytes;      /* HERALD_LUA_MEMORY_MB: cap for one Lua generation */
    long task_slice_ms;           /* HERALD_TASK_SLICE_MS: CPU time one task may run between yields */
    long load_deadline_ms;        /* HERALD_LOAD_DEADLINE_MS: top-level script load */
    long watchdog_grace_ms;       /* HERALD_WATCHDOG_GRACE_MS: CPU past a slice before the watchdog restarts herald */
    int max_tasks;                /* HERALD_MAX_TASKS: tasks alive at once in a generation */
    long task_deadline_ms;        /* HERALD_TASK_DEADLINE_MS: a task waiting longer is cancelled */
    int max_timers;               /* HERALD_MAX_TIMERS: pending in-memory timers per generation */
    const char *default_tz;       /* HERALD_DEFAULT_TZ: tz = "user" when the user's zone is unknown */
    long schedule_misfire_s;      /* HERALD_SCHEDULE_MISFIRE_S: later than this counts as missed */
    int test_clock;               /* HERALD_TEST_CLOCK=1: POST /-/clock moves the wall clock (tests) */
    int reload_watch;             /* HERALD_RELOAD=off: no file watching (SIGHUP still reloads) */
    long reload_debounce_ms;      /* HERALD_RELOAD_DEBOUNCE_MS */
    long reload_grace_ms;         /* HERALD_RELOAD_GRACE_MS: old generation's tasks finish by then */
    int unsafe_lua;               /* HERALD_UNSAFE_LUA=1: io, full os, package.loadlib */
    const char *script_env;       /* HERALD_SCRIPT_ENV: names os.getenv may read besides BOT_* */
    long notify_replay_max;       /* HERALD_NOTIFY_REPLAY_MAX: notify signatures remembered at once */
    long notify_results_max;      /* HERALD_NOTIFY_RESULTS_MAX: finished 202 operations kept */
    size_t notify_results_max_bytes;   /* HERALD_NOTIFY_RESULTS_MAX_BYTES: their results' bytes */
    long notify_result_ttl_s;     /* HERALD_NOTIFY_RESULT_TTL_S: each kept this long after it ends */

    /* outbox and governor */
    int governor;                 /* HERALD_GOVERNOR=off disables pacing (null-connector benchmarks) */
    long tenant_rps;              /* HERALD_TENANT_RPS: per app per tenant, default 50 */
    long outbox_max_attempts;     /* HERALD_OUTBOX_MAX_ATTEMPTS, default 8 */
    long outbox_max_age_s;        /* HERALD_OUTBOX_MAX_AGE_S, default 3600 */
    long retry_base_ms;           /* HERALD_RETRY_BASE_MS, default 1000 */
    long retry_max_ms;            /* HERALD_RETRY_MAX_MS, default 60000 */
    long outbox_max_in_flight;    /* HERALD_OUTBOX_MAX_IN_FLIGHT: attempts out at once, default 256 */
    long outbox_retention_s;      /* HERALD_OUTBOX_RETENTION_S: finished operations kept, default 7 days */
    long max_queued_per_conversation; /* HERALD_MAX_QUEUED_PER_CONVERSATION: outstanding ops, 1000 */
    long max_queued_per_tenant;   /* HERALD_MAX_QUEUED_PER_TENANT, default 10000 */
    long max_queued_total;        /* HERALD_MAX_QUEUED_TOTAL, default 50000 */
    long db_check_max_mb;         /* HERALD_DB_CHECK_MAX_MB: quick_check at start up to this size */
    unsigned char from[CONFIG_SETTINGS_MAX]; /* CONFIG_FROM_* per row of config_settings() */
} config;

/* The table of settings (src/config.c), in the manner of Redis's static_configs[]: one row per
 * setting, read by config_load (defaults, then the environment, then flags), by `herald check`
 * (config_report), by `herald --help` and by `herald config --markdown`, which prints the README's
 * configuration tables. A test fails when README and the rows disagree. */
typedef enum config_kind {        /* how a CONFIG_T_NUMBER row's field holds its value */
    CONFIG_LONG,                  /* long */
    CONFIG_INT,                   /* int */
    CONFIG_SIZE,                  /* size_t */
    CONFIG_MB,                    /* size_t holding bytes; the setting is in MiB */
} config_kind;

typedef enum config_type {
    CONFIG_T_NUMBER,              /* an integer within [min, max], stored by kind */
    CONFIG_T_STRING,              /* const char *, pointing into the environment or argv */
    CONFIG_T_ENUM,                /* a string, one of words ("a|b"); checked where it is used */
    CONFIG_T_URL,                 /* a string; https, or http to loopback (config_validate) */
    CONFIG_T_URLS,                /* comma-separated URLs, each checked like CONFIG_T_URL */
    CONFIG_T_PATH,                /* char *, an owned copy */
    CONFIG_T_HOSTPORT,            /* HOST:PORT into char *host (owned) and int port at offset2 */
    CONFIG_T_BOOL,                /* int; the values in words turn the default around */
    CONFIG_T_EXTERNAL,            /* read where it is used (getenv); a row so that it is known */
} config_type;

enum {
    CONFIG_SECRET = 1,            /* never printed: `herald check` shows "(set)" */
    CONFIG_TEST = 2,              /* a test hook: its own README table, never for production */
    CONFIG_PREFIX = 4,            /* name is a prefix: a family of variables (NAME_<X>) */
};

typedef struct config_setting {
    const char *name;             /* the environment variable, looked up first */
    long min, max, def;           /* CONFIG_T_NUMBER: range and default (in unit) */
    const char *unit;
    config_kind kind;
    size_t offset;                /* the config field it fills */
    config_type type;
    const char *alias[2];         /* further environment names, looked up after name in order */
    const char *flag;             /* command-line flag (run, check and the reports), or NULL */
    const char *metavar;          /* the flag's value, as --help and README show it */
    const char *dflt;             /* the default of a non-numeric row, as config_load applies it */
    const char *shown;            /* the default as README shows it (markdown); NULL: from dflt */
    const char *words;            /* ENUM: the choices; BOOL: the values that flip the default */
    unsigned flags;               /* CONFIG_SECRET | CONFIG_TEST | CONFIG_PREFIX */
    size_t offset2;               /* CONFIG_T_HOSTPORT: the port */
    const char *label;            /* `herald check`'s name for it */
    const char *help;             /* what it does (markdown: README's meaning column) */
} config_setting;

/* A numeric row (the name predates the table of every setting). */
typedef config_setting config_limit;

/* Every row (*n of them). */
const config_setting *config_settings(size_t *n);

/* The numeric rows (*n), a contiguous part of config_settings(), for tests and `herald check`. */
const config_limit *config_limits(size_t *n);

/* The value row l holds in cfg, in the setting's unit. */
long config_limit_value(const config *cfg, const config_limit *l);

/* Where each setting's value came from, indexed like config_settings(). */
enum { CONFIG_FROM_DEFAULT = 0, CONFIG_FROM_NAME = 1, /* 2, 3: alias[0], alias[1] */ CONFIG_FROM_FLAG = 4 };

/* Fills cfg from defaults, the environment and argv. Returns 0 to run, 1 when the command was
 * fully handled (help, version: exit 0), -1 on a usage error with *err set (malloc'd). */
int config_load(config *cfg, int argc, char **argv, char **err);

/* Checks the loaded configuration as a whole (dev mode vs app id, loopback binding, script exists).
 * Returns 0, or -1 with *err set. */
int config_validate(const config *cfg, char **err);

void config_free(config *cfg);

/* Writes the effective configuration for `herald check`: every row once, with its value (or
 * default) and the variable or flag it came from; secrets show only "(set)". */
void config_report(FILE *out, const config *cfg);

/* Warns (through warn, one message each) about every HERALD_* variable in envp that names no
 * setting, naming the closest known one: "unknown setting HERALD_TASK_SLICE (did you mean
 * HERALD_TASK_SLICE_MS?)". Returns how many it warned about. */
int config_warn_unknown(char *const *envp, void (*warn)(const char *msg));

/* Writes README's configuration tables (`herald config --markdown`). */
void config_markdown(FILE *out);

/* Writes every environment name herald knows, one a line (`herald config --names`). */
void config_names(FILE *out);

/* Writes `herald --help`: the usage, then every setting with its default. */
void config_help(FILE *out);

/* 1 when url is https, or plain http to a loopback host. */
int config_url_allowed(const char *url);
const char *config_usage(void);

#endif
