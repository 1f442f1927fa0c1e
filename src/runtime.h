/* runtime.h — the process-wide objects the Lua bindings reach through vm_host(): config, store,
 * HTTP client and server, connector, the current Lua generation. Wired up by main.c; declares
 * nothing else (each lua_*.c has its own header). */
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
    pending_auth *pending;        /* activities waiting for signing keys (activity.c) */
    struct held_answer *held;     /* answers waiting for the commit of what their handler wrote */
    notify_auth *notify;          /* /api/notify signatures seen (replay cache); NULL: none taken */
    struct notify_ops *notify_ops;   /* results of 202'd notify operations; NULL: none kept */
    int stopping;                 /* SIGTERM received: new activities get 503 */
    int script_quarantined;       /* the script's top level stalled the host: serve nothing (503) */
    int64_t started_ms;
    /* (conversation, zone) pairs whose unknown time zone was logged, as hashes: each is logged
     * once, in bounded memory (activity.c) */
    uint64_t zone_warned[256];
    /* counters for /healthz */
    uint64_t activities, handler_errors, redelivered, rejected, unauthorized;
} runtime;

#endif
