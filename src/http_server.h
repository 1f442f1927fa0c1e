/* http_server.h — inbound HTTP (libevent evhttp): /api/messages, /healthz, 404/405, body limits.
 * Owns requests until they are answered; hands activity bodies to the runtime. */
#ifndef HERALD_HTTP_SERVER_H
#define HERALD_HTTP_SERVER_H

#include <stddef.h>

struct event_base;
typedef struct http_server http_server;
typedef struct http_exchange http_exchange;

/* An activity body arrived at POST /api/messages; the callee must answer x exactly once with
 * http_exchange_reply (now or later). */
typedef void (*http_activity_fn)(http_exchange *x, const char *body, size_t len, void *ud);
/* A body arrived at POST /api/notify/{name}; answer x exactly once. */
typedef void (*http_notify_fn)(http_exchange *x, const char *name, const char *body, size_t len,
                               void *ud);
/* Fills the /healthz JSON body; returns a malloc'd string. */
typedef char *(*http_health_fn)(void *ud);
/* Admin routes (loopback peers only): "reload" (POST /-/reload) returns a malloc'd JSON answer
 * and sets *status; "metrics" (GET /metrics) returns Prometheus text. */
typedef char *(*http_admin_fn)(const char *what, const char *body, size_t len, int *status, void *ud);

typedef struct http_server_config {
    const char *host;
    int port;                    /* 0: any free port */
    size_t max_body_bytes;       /* larger bodies → 413 */
    size_t max_header_bytes;     /* larger header blocks → 400/431 */
    int timeout_s;               /* idle connection timeout */
    http_admin_fn on_admin;
    http_notify_fn on_notify;
} http_server_config;

http_server *http_server_new(struct event_base *base, const http_server_config *cfg,
                             http_activity_fn on_activity, http_health_fn on_health, void *ud,
                             char **err);
/* The bound port (useful with port 0). */
int http_server_port(const http_server *s);
/* Stops accepting new connections; requests already read are still answered. */
void http_server_stop_accepting(http_server *s);
void http_server_free(http_server *s);
/* Exchanges waiting for an answer. */
int http_server_pending(const http_server *s);

/* Answers and frees x. body may be NULL (empty). Safe after the client went away. */
void http_exchange_reply(http_exchange *x, int status, const char *content_type, const char *body,
                         size_t len);
/* An exchange with no connection (teams.testing): the reply goes to on_reply. */
typedef void (*http_virtual_reply_fn)(int status, const char *body, size_t len, void *ud);
http_exchange *http_exchange_virtual(http_virtual_reply_fn on_reply, void *ud);

/* Request header value or NULL. */
const char *http_exchange_header(http_exchange *x, const char *name);

#endif
