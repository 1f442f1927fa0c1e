/* check.c — `herald check SCRIPT`: the configuration `run` would use, then the script loaded in the
 * same sandbox as `run` (an in-memory database, a connector that never reaches the network), and
 * its text read for teams names the module does not have (lua/teams/check.lua). */
#include "check.h"

#include "broadcast.h"
#include "config.h"
#include "connector.h"
#include "http_client.h"
#include "log.h"
#include "lua_check.h"
#include "lua_schedule.h"
#include "lua_teams.h"
#include "outbox.h"
#include "runtime.h"
#include "scheduler.h"
#include "store.h"
#include "vm.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Nothing a loading script does may leave the machine: every request is answered here. */
static void no_network(const char *method, const char *url, const char *const *headers,
                       const char *body, size_t body_len, http_fake_answer *a, void *ud)
{
    (void)method, (void)url, (void)headers, (void)body, (void)body_len, (void)ud;
    a->status = 503;
    a->body = strdup("{\"error\":{\"code\":\"ServiceUnavailable\",\"message\":\"herald check: no network\"}}");
}

int check_script(const config *cfg, FILE *out)
{
    runtime rt = {0};
    char *err = NULL;
    int rc = 1;
    rt.cfg = cfg;
    rt.base = event_base_new();
    rt.store = rt.base ? store_open(":memory:", &err) : NULL;
    http_client_config hc = {.connect_timeout_ms = 5000, .max_host_connections = 1, .allow_http = 1};
    rt.http = rt.store ? http_client_new(rt.base, &hc, &err) : NULL;
    if (rt.http)
        http_client_set_fake(rt.http, no_network, NULL);
    connector_config cc = {.base = rt.base, .request_timeout_ms = cfg->connector_timeout_ms};
    rt.conn = rt.http ? connector_new(rt.http, &cc) : NULL;
    outbox_config oc = outbox_config_from(cfg);
    rt.outbox = rt.conn ? outbox_new(rt.base, rt.store, rt.conn, &oc, &err) : NULL;
    vm_config vc = vm_config_from(cfg);
    rt.vm = rt.outbox ? vm_new(rt.base, &vc, &rt, &err) : NULL;
    if (rt.vm) {
        lua_teams_install(rt.vm);
        rt.scheduler = scheduler_new(&rt, &lua_schedule_script, &err);
        rt.broadcaster = rt.scheduler ? broadcast_new(&rt, &err) : NULL;
    }
    if (!rt.broadcaster) {
        fprintf(out, "herald check: cannot set up the sandbox: %s\n", err ? err : "out of memory");
        goto done;
    }
    if (vm_load_script(rt.vm, cfg->script, &err) < 0) {
        /* the message names file:line (a syntax error, an error at top level, a misspelt name);
         * the traceback below it would only show herald's side */
        char *tb = err ? strstr(err, "\nstack traceback:") : NULL;
        if (tb)
            *tb = 0;
        fprintf(out, "%s\n", err ? err : "the script failed to load");
        goto done;
    }
    rc = lua_check_names(rt.vm, out) > 0;
    if (vm_hook_count(rt.vm) == 0)
        fprintf(out, "warning: %s registers no hook: nothing would run, and a reload to it would be "
                     "refused\n", cfg->script);
done:
    free(err);
    scheduler_free(rt.scheduler);
    broadcast_free(rt.broadcaster);
    vm_free(rt.vm);
    outbox_free(rt.outbox);
    connector_free(rt.conn);
    http_client_free(rt.http);
    store_close(rt.store);
    if (rt.base)
        event_base_free(rt.base);
    return rc;
}
