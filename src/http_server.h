/* http_server.h — inbound HTTP (libevent evhttp): the public listener (/api/messages, /api/notify,
 * /healthz) and the admin listeners (unix socket, optional TCP with a bearer token) that alone serve
 * /metrics and /-/…. Owns requests until they are answered; hands bodies to the runtime. */
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
/* GET /api/notify/operations/{id} (id: 1 to 20 digits); answer x exactly once. */
typedef void (*http_notify_op_fn)(http_exchange *x, const char *id, void *ud);
/* Fills the /healthz JSON body; returns a malloc'd string. */
typedef char *(*http_health_fn)(void *ud);
/* Admin routes, served only on the admin listeners: "reload", "broadcast", "clock" (POST /-/…)
 * return a malloc'd JSON answer and set *status; "metrics" (GET /metrics) returns Prometheus text. */
typedef char *(*http_admin_fn)(const char *what, const char *body, size_t len, int *status, void *ud);

/* The admin unix socket: a listening socket at a path, created mode 0600, plus a lock file
 * (path + ".lock") held with flock for the life of the process, so a second herald on the same
 * path is refused and a socket left by a dead one is replaced. */
typedef struct http_admin_socket http_admin_socket;

typedef struct http_server_config {
    const char *host;
    int port;                    /* 0: any free port */
    size_t max_body_bytes;       /* larger bodies → 413 */
    size_t max_header_bytes;     /* larger header blocks → 400/431 */
    int timeout_s;               /* idle connection timeout */
    http_admin_fn on_admin;
    http_notify_fn on_notify;
    http_notify_op_fn on_notify_operation;
    /* admin listeners; the public one never serves admin routes */
    const http_admin_socket *admin_socket; /* NULL: none; must outlive the server */
    const char *admin_host;      /* optional TCP admin listener (NULL: none) */
    int admin_port;              /* 0: any free port */
    const char *admin_token;     /* when set, every request on the TCP admin listener must carry
                                  * "Authorization: Bearer <token>"; only its digest is kept */
} http_server_config;

/* Claims path: takes its lock (refuses when a live process holds it), replaces a socket left
 * there by a dead process (refuses to replace anything else), binds and listens with mode 0600.
 * Returns NULL with *err set (malloc'd) on failure. */
http_admin_socket *http_admin_socket_open(const char *path, char **err);
const char *http_admin_socket_path(const http_admin_socket *a);
/* Closes the socket and removes its file and lock file. Free the server using it first. */
void http_admin_socket_close(http_admin_socket *a);

http_server *http_server_new(struct event_base *base, const http_server_config *cfg,
                             http_activity_fn on_activity, http_health_fn on_health, void *ud,
                             char **err);
/* The bound port (useful with port 0). */
int http_server_port(const http_server *s);
/* The TCP admin listener's bound port, or 0 when there is none. */
int http_server_admin_port(const http_server *s);
/* Stops accepting new connections on the public listener; requests already read are still
 * answered. The admin listeners stay open (metrics during the drain). */
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
