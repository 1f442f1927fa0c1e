/* config.h — herald's configuration: defaults, environment, flags (flags win), validation.
 * Owns every named limit; other files read them from here and never parse the environment. */
#ifndef HERALD_CONFIG_H
#define HERALD_CONFIG_H

#include <stddef.h>

typedef struct config {
    const char *command;          /* "run", "check" */
    const char *script;           /* bot script path */
    char *script_dir;             /* directory of the script (owned) */
    char *db_path;                /* owned; default "<script_dir>/herald.db" */
    char *listen_host;            /* owned */
    int listen_port;
    int dev;                      /* --dev / HERALD_DEV=1 */
    const char *log_level;

    const char *app_id;           /* CLIENT_ID / MicrosoftAppId */
    const char *app_password;     /* CLIENT_SECRET / MicrosoftAppPassword (secret) */
    const char *tenant_id;        /* TENANT_ID / MicrosoftAppTenantId */

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
    int max_tasks;                /* HERALD_MAX_TASKS: tasks alive at once in a generation */
} config;

/* Fills cfg from defaults, the environment and argv. Returns 0 to run, 1 when the command was
 * fully handled (help, version: exit 0), -1 on a usage error with *err set (malloc'd). */
int config_load(config *cfg, int argc, char **argv, char **err);

/* Checks the loaded configuration as a whole (dev mode vs app id, loopback binding, script exists).
 * Returns 0, or -1 with *err set. */
int config_validate(const config *cfg, char **err);

void config_free(config *cfg);
const char *config_usage(void);

#endif
