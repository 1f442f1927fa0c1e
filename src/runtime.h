/* runtime.h — the process-wide objects the Lua bindings reach through vm_host(): config, store,
 * HTTP client and server, connector, the current Lua generation. Wired up by main.c. */
#ifndef HERALD_RUNTIME_H
#define HERALD_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct config;
typedef struct store store;
typedef struct http_client http_client;
typedef struct http_server http_server;
typedef struct connector connector;
typedef struct redelivery redelivery;
typedef struct vm vm;
typedef struct auth_in auth_in;
typedef struct auth_out auth_out;
typedef struct trust trust;
typedef struct outbox outbox;
typedef struct reloader reloader;
typedef struct scheduler scheduler;
typedef struct broadcaster broadcaster;
typedef struct pending_auth pending_auth;
typedef struct notify_auth notify_auth;

typedef struct runtime {
    struct event_base *base;
    const struct config *cfg;
    store *store;
    http_client *http;
    http_server *server;
    connector *conn;
    redelivery *seen;
    vm *vm;
    outbox *outbox;               /* every outbound operation goes through it */
    reloader *reloader;
    scheduler *scheduler;
    broadcaster *broadcaster;
    auth_in *auth_in;             /* NULL in dev mode */
    auth_out *auth_out;           /* NULL in dev mode */
    trust *trust;                 /* NULL in dev mode: every service URL is allowed */
    pending_auth *pending;        /* activities waiting for signing keys */
    struct held_answer *held;     /* answers waiting for the commit of what their handler wrote */
    notify_auth *notify;          /* /api/notify signatures seen (replay cache); NULL: none taken */
    struct notify_ops *notify_ops;   /* results of 202'd notify operations; NULL: none kept */
    int stopping;                 /* SIGTERM received: new activities get 503 */
    int script_quarantined;       /* the script's top level stalled the host: serve nothing (503) */
    int64_t started_ms;
    /* (conversation, zone) pairs whose unknown time zone was logged, as hashes: each is logged
     * once, in bounded memory (lua_inbound.c) */
    uint64_t zone_warned[256];
    /* counters for /healthz */
    uint64_t activities, handler_errors, redelivered, rejected, unauthorized;
} runtime;

/* lua_inbound.c: handles one POST /api/messages body (answers x exactly once). */
struct http_exchange;
void inbound_activity(struct http_exchange *x, const char *body, size_t len, void *rt);

/* lua_inbound.c: handles one GET /api/notify/operations/{id} (answers x exactly once). */
void notify_operation_request(struct http_exchange *x, const char *id, void *arg);
/* lua_inbound.c: handles one POST /api/notify/{name} (answers x exactly once). */
void notify_request(struct http_exchange *x, const char *name, const char *body, size_t len,
                    void *rt);

/* lua_inbound.c: answers every activity still waiting for signing keys with 503 (shutdown). */
void inbound_abandon_pending(void *rt);

/* lua_inbound.c: sends every answer still waiting for a commit (shutdown, before the server goes);
 * one parked by a failed commit gets 503 if the store is still degraded (its writes are lost). */
void inbound_release_answers(void *rt);
/* lua_inbound.c: the store recovered (its kept writes are committed): sends the answers parked
 * by a failed commit. */
void inbound_store_recovered(void *rt);

/* lua_teams.c: registers the `herald.core` preload in the generation's state. */
void lua_teams_install(vm *v);

/* lua_teams.c: t[k] as a string or NULL (numbers converted). The pointer stays valid while the
 * table at index t holds the value. Net stack effect: 0. */
struct lua_State;
const char *lua_field_string(struct lua_State *L, int t, const char *k);

/* lua_teams.c: pushes a stored reference as the table teams.conversation returns. */
struct store_reference;
void lua_teams_push_reference(struct lua_State *L, const struct store_reference *r);

/* lua_timer.c: registers `herald.timer`; cancels a generation's timers (reload). */
void lua_timer_install(vm *v);
void lua_timer_cancel_all(vm *v);

/* Wall-clock unix milliseconds (references, schedules); monotonic time is vm_now_ms. A test
 * build moves it with runtime_shift_clock (HERALD_TEST_CLOCK=1 and POST /-/clock). */
int64_t runtime_wall_ms(void);
void runtime_shift_clock(int64_t delta_ms);

#endif
