/* http_server.c — evhttp on the shared event loop: routes, methods, size limits, and the
 * exchange object that lets a reply be sent later, after the task that answers it yields.
 * Administrative routes live on separate evhttp instances bound to the admin unix socket and the
 * optional TCP admin listener, never on the public one: a reverse proxy on the same host makes
 * every public request come from loopback, so "the peer is loopback" proves nothing. */
#include "http_server.h"
#include "log.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct http_server {
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    struct evhttp *admin_unix;    /* the admin socket: its file mode is the access check */
    struct evhttp *admin_tcp;     /* --admin-listen: the bearer token is the access check */
    http_server_config cfg;
    http_activity_fn on_activity;
    http_health_fn on_health;
    void *ud;
    int port;
    int admin_port;
    int has_token;
    unsigned char token_digest[SHA256_DIGEST_LENGTH];
    int pending;
    char *body_buf;               /* reused copy of the body, NUL-terminated */
    size_t body_cap;
};

struct http_admin_socket {
    char *path;
    char *lock_path;
    int fd;                       /* listening; the evhttp listener borrows it */
    int lock_fd;
    int bound;                    /* the socket file is ours to remove */
};

struct http_exchange {
    http_server *s;
    struct evhttp_request *req;  /* NULL for a virtual exchange */
    http_virtual_reply_fn on_reply;
    void *reply_ud;
};

http_exchange *http_exchange_virtual(http_virtual_reply_fn on_reply, void *ud)
{
    http_exchange *x = calloc(1, sizeof *x);
    if (x) {
        x->on_reply = on_reply;
        x->reply_ud = ud;
    }
    return x;
}

static void reply_json(struct evhttp_request *req, int status, const char *reason, const char *json)
{
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json; charset=utf-8");
    /* a HEAD answer carries no body (the Playground probes the bot with HEAD) */
    if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
        evbuffer_add(out, json, strlen(json));
    evhttp_send_reply(req, status, reason, NULL);
}

static void reply_error(struct evhttp_request *req, int status, const char *reason, const char *msg)
{
    char body[256];
    snprintf(body, sizeof body, "{\"error\":\"%s\"}", msg);
    reply_json(req, status, reason, body);
}

/* The exchange a handler answers through (http_server_reply), counted as pending until it is;
 * NULL once the request has been answered 503 for want of memory. */
static http_exchange *exchange_new(http_server *s, struct evhttp_request *req)
{
    http_exchange *x = malloc(sizeof *x);
    if (!x) {
        reply_error(req, 503, "Service Unavailable", "out of memory");
        return NULL;
    }
    x->s = s;
    x->req = req;
    x->on_reply = NULL;
    x->reply_ud = NULL;
    s->pending++;
    return x;
}

static void on_messages(struct evhttp_request *req, http_server *s)
{
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        reply_error(req, 405, "Method Not Allowed", "use POST for /api/messages");
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len > s->cfg.max_body_bytes) {   /* evhttp enforces this too; keep the check honest */
        reply_error(req, 413, "Payload Too Large", "body exceeds HERALD_MAX_BODY_BYTES");
        return;
    }
    if (len + 1 > s->body_cap) {
        size_t cap = s->body_cap ? s->body_cap : 4096;
        while (cap < len + 1)
            cap *= 2;
        char *nb = realloc(s->body_buf, cap);
        if (!nb) {
            reply_error(req, 503, "Service Unavailable", "out of memory");
            return;
        }
        s->body_buf = nb;
        s->body_cap = cap;
    }
    evbuffer_copyout(in, s->body_buf, len);
    s->body_buf[len] = 0;
    http_exchange *x = exchange_new(s, req);
    if (!x)
        return;
    s->on_activity(x, s->body_buf, len, s->ud);
}

/* Copies the body into the reusable buffer; 0, or -1 after answering. */
static int take_body(struct evhttp_request *req, http_server *s, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    *len = evbuffer_get_length(in);
    if (*len > s->cfg.max_body_bytes) {
        reply_error(req, 413, "Payload Too Large", "body exceeds HERALD_MAX_BODY_BYTES");
        return -1;
    }
    if (*len + 1 > s->body_cap) {
        size_t cap = s->body_cap ? s->body_cap : 4096;
        while (cap < *len + 1)
            cap *= 2;
        char *nb = realloc(s->body_buf, cap);
        if (!nb) {
            reply_error(req, 503, "Service Unavailable", "out of memory");
            return -1;
        }
        s->body_buf = nb;
        s->body_cap = cap;
    }
    evbuffer_copyout(in, s->body_buf, *len);
    s->body_buf[*len] = 0;
    return 0;
}

static void on_notify(struct evhttp_request *req, http_server *s, const char *name, size_t nlen)
{
    char buf[65];
    int ok = nlen > 0 && nlen < sizeof buf && s->cfg.on_notify;
    for (size_t i = 0; ok && i < nlen; i++)
        ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
             (name[i] >= '0' && name[i] <= '9') || name[i] == '_' || name[i] == '-' || name[i] == '.';
    if (!ok) {
        reply_error(req, 404, "Not Found", "no such trigger");
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        reply_error(req, 405, "Method Not Allowed", "use POST for /api/notify/{name}");
        return;
    }
    memcpy(buf, name, nlen);
    buf[nlen] = 0;
    size_t len;
    if (take_body(req, s, &len) < 0)
        return;
    http_exchange *x = exchange_new(s, req);
    if (!x)
        return;
    s->cfg.on_notify(x, buf, s->body_buf, len, s->ud);
}

/* GET /api/notify/operations/{id}: the result of a notify operation that answered 202. */
static void on_notify_operation(struct evhttp_request *req, http_server *s, const char *id,
                                size_t len)
{
    char buf[24];
    int ok = len > 0 && len < 21 && s->cfg.on_notify_operation;
    for (size_t i = 0; ok && i < len; i++)
        ok = id[i] >= '0' && id[i] <= '9';
    if (!ok) {
        reply_error(req, 404, "Not Found", "no such operation");
        return;
    }
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
        reply_error(req, 405, "Method Not Allowed", "use GET for /api/notify/operations/{id}");
        return;
    }
    memcpy(buf, id, len);
    buf[len] = 0;
    http_exchange *x = exchange_new(s, req);
    if (!x)
        return;
    s->cfg.on_notify_operation(x, buf, s->ud);
}

static void on_health(struct evhttp_request *req, http_server *s)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
        reply_error(req, 405, "Method Not Allowed", "use GET for /healthz");
        return;
    }
    char *body = s->on_health ? s->on_health(s->ud) : NULL;
    reply_json(req, 200, "OK", body ? body : "{\"status\":\"ok\"}");
    free(body);
}

/* The public listener: what Teams, notifiers and load balancers reach. Nothing administrative is
 * routed here, whatever the path looks like. */
static void on_request(struct evhttp_request *req, void *arg)
{
    http_server *s = arg;
    const char *uri = evhttp_request_get_uri(req);
    const char *path_end = strpbrk(uri, "?#");
    size_t plen = path_end ? (size_t)(path_end - uri) : strlen(uri);
    if (plen == 13 && memcmp(uri, "/api/messages", 13) == 0)
        on_messages(req, s);
    else if (plen >= 23 && memcmp(uri, "/api/notify/operations/", 23) == 0)
        on_notify_operation(req, s, uri + 23, plen - 23);
    else if (plen > 12 && memcmp(uri, "/api/notify/", 12) == 0)
        on_notify(req, s, uri + 12, plen - 12);
    else if (plen == 8 && memcmp(uri, "/healthz", 8) == 0)
        on_health(req, s);
    else
        reply_error(req, 404, "Not Found", "no such endpoint");
}

static const struct admin_route {
    const char *path, *what;
    int post;                     /* 1: POST only; 0: GET (and HEAD) */
} admin_routes[] = {
    {"/metrics", "metrics", 0},
    {"/-/reload", "reload", 1},
    {"/-/broadcast", "broadcast", 1},
    {"/-/clock", "clock", 1},
};

static void serve_admin(struct evhttp_request *req, http_server *s, const char *via)
{
    const char *uri = evhttp_request_get_uri(req);
    const char *path_end = strpbrk(uri, "?#");
    size_t plen = path_end ? (size_t)(path_end - uri) : strlen(uri);
    if (plen == 8 && memcmp(uri, "/healthz", 8) == 0) {
        on_health(req, s);
        return;
    }
    const struct admin_route *r = NULL;
    for (size_t i = 0; i < sizeof admin_routes / sizeof admin_routes[0]; i++)
        if (strlen(admin_routes[i].path) == plen && memcmp(uri, admin_routes[i].path, plen) == 0)
            r = &admin_routes[i];
    if (!r || !s->cfg.on_admin) {
        reply_error(req, 404, "Not Found", "no such endpoint");
        return;
    }
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (r->post ? cmd != EVHTTP_REQ_POST : (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", r->post ? "POST" : "GET");
        reply_error(req, 405, "Method Not Allowed", r->post ? "use POST" : "use GET");
        return;
    }
    size_t blen;
    if (take_body(req, s, &blen) < 0)
        return;
    if (r->post)
        log_info("admin: POST %s on the %s", r->path, via);
    int status = 200;
    char *body = s->cfg.on_admin(r->what, s->body_buf ? s->body_buf : "", blen, &status, s->ud);
    if (r->post) {
        reply_json(req, status, NULL, body ? body : "{}");
    } else {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "text/plain; version=0.0.4");
        if (body && cmd != EVHTTP_REQ_HEAD)
            evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
        evhttp_send_reply(req, 200, "OK", NULL);
    }
    free(body);
}

/* The admin socket: only the owner of the file (mode 0600) can connect. */
static void on_admin_unix(struct evhttp_request *req, void *arg)
{
    serve_admin(req, arg, "admin socket");
}

/* 1 when the request carries the configured bearer token (or none is configured). Digests are
 * compared, in constant time, so neither the token's bytes nor its length leak through timing. */
static int token_ok(const http_server *s, struct evhttp_request *req)
{
    if (!s->has_token)
        return 1;
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    const char *t = h + 7;
    while (*t == ' ')
        t++;
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)t, strlen(t), d);
    return CRYPTO_memcmp(d, s->token_digest, sizeof d) == 0;
}

static void on_admin_tcp(struct evhttp_request *req, void *arg)
{
    http_server *s = arg;
    if (!token_ok(s, req)) {
        log_debug("admin: 401 on the TCP admin listener (missing or wrong bearer token)");
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Bearer realm=\"herald admin\"");
        reply_error(req, 401, "Unauthorized", "missing or wrong admin token");
        return;
    }
    serve_admin(req, s, "TCP admin listener");
}

static struct evhttp *new_evhttp(struct event_base *base, size_t max_body, size_t max_headers,
                                 int timeout_s, void (*cb)(struct evhttp_request *, void *), void *arg)
{
    struct evhttp *h = evhttp_new(base);
    if (!h)
        return NULL;
    evhttp_set_max_body_size(h, (ev_ssize_t)max_body);
    evhttp_set_max_headers_size(h, (ev_ssize_t)max_headers);
    evhttp_set_timeout(h, timeout_s);
    evhttp_set_allowed_methods(h, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                      EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                      EVHTTP_REQ_PATCH);
    evhttp_set_gencb(h, cb, arg);
    return h;
}

static int bound_port(struct evhttp_bound_socket *b)
{
    evutil_socket_t fd = evhttp_bound_socket_get_fd(b);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return 0;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

/* Admin requests are small JSON documents; a tight cap keeps a stray client from costing much. */
#define ADMIN_MAX_BODY (64 * 1024)

http_server *http_server_new(struct event_base *base, const http_server_config *cfg,
                             http_activity_fn on_activity, http_health_fn on_health, void *ud,
                             char **err)
{
    http_server *s = calloc(1, sizeof *s);
    if (!s) {
        *err = strdup("out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    s->cfg.admin_token = NULL;    /* the digest is all that is kept */
    s->on_activity = on_activity;
    s->on_health = on_health;
    s->ud = ud;
    int timeout_s = cfg->timeout_s ? cfg->timeout_s : 60;
    s->http = new_evhttp(base, cfg->max_body_bytes,
                         cfg->max_header_bytes ? cfg->max_header_bytes : 65536, timeout_s,
                         on_request, s);
    if (!s->http) {
        *err = strdup("cannot create the HTTP server");
        goto fail;
    }
    s->sock = evhttp_bind_socket_with_handle(s->http, cfg->host, (ev_uint16_t)cfg->port);
    if (!s->sock) {
        if (asprintf(err, "cannot listen on %s:%d (port in use, or address not available)",
                     cfg->host, cfg->port) < 0)
            *err = NULL;
        goto fail;
    }
    s->port = bound_port(s->sock);
    if (cfg->admin_socket) {
        s->admin_unix = new_evhttp(base, ADMIN_MAX_BODY, 16384, timeout_s, on_admin_unix, s);
        /* the socket stays open across evconnlistener_free: the http_admin_socket owns it */
        struct evconnlistener *l = s->admin_unix
            ? evconnlistener_new(base, NULL, NULL, LEV_OPT_CLOSE_ON_EXEC, 0, cfg->admin_socket->fd)
            : NULL;
        if (l && !evhttp_bind_listener(s->admin_unix, l)) {
            evconnlistener_free(l);
            l = NULL;
        }
        if (!l) {
            if (asprintf(err, "cannot serve the admin socket %s", cfg->admin_socket->path) < 0)
                *err = NULL;
            goto fail;
        }
    }
    if (cfg->admin_host) {
        if (cfg->admin_token) {
            SHA256((const unsigned char *)cfg->admin_token, strlen(cfg->admin_token), s->token_digest);
            s->has_token = 1;
        }
        s->admin_tcp = new_evhttp(base, ADMIN_MAX_BODY, 16384, timeout_s, on_admin_tcp, s);
        struct evhttp_bound_socket *b = s->admin_tcp
            ? evhttp_bind_socket_with_handle(s->admin_tcp, cfg->admin_host, (ev_uint16_t)cfg->admin_port)
            : NULL;
        if (!b) {
            if (asprintf(err, "cannot listen on %s:%d for the admin endpoints (port in use, or "
                              "address not available)", cfg->admin_host, cfg->admin_port) < 0)
                *err = NULL;
            goto fail;
        }
        s->admin_port = bound_port(b);
    }
    return s;
fail:
    http_server_free(s);
    return NULL;
}

int http_server_port(const http_server *s) { return s->port; }
int http_server_admin_port(const http_server *s) { return s->admin_port; }
int http_server_pending(const http_server *s) { return s->pending; }

void http_server_stop_accepting(http_server *s)
{
    if (s->sock) {
        evhttp_del_accept_socket(s->http, s->sock);
        s->sock = NULL;
    }
}

void http_server_free(http_server *s)
{
    if (!s)
        return;
    if (s->http)
        evhttp_free(s->http);
    if (s->admin_unix)
        evhttp_free(s->admin_unix);
    if (s->admin_tcp)
        evhttp_free(s->admin_tcp);
    OPENSSL_cleanse(s->token_digest, sizeof s->token_digest);
    free(s->body_buf);
    free(s);
}

/* 1 when something accepts connections at path (a live server), 0 when nothing does. */
static int socket_is_live(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return 0;
    int rc = connect(fd, (struct sockaddr *)&sun, sizeof sun);
    int live = rc == 0 || errno == EAGAIN || errno == EINPROGRESS;   /* EAGAIN: backlog full */
    close(fd);
    return live;
}

http_admin_socket *http_admin_socket_open(const char *path, char **err)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof sun.sun_path) {
        if (asprintf(err, "admin socket path '%s' is %zu bytes; a unix socket path must be 1..%zu: "
                          "set --admin-socket (HERALD_ADMIN_SOCKET) to a shorter one",
                     path, n, sizeof sun.sun_path - 1) < 0)
            *err = NULL;
        return NULL;
    }
    memcpy(sun.sun_path, path, n + 1);
    http_admin_socket *a = calloc(1, sizeof *a);
    if (!a) {
        *err = strdup("out of memory");
        return NULL;
    }
    a->fd = a->lock_fd = -1;
    if (!(a->path = strdup(path)) || asprintf(&a->lock_path, "%s.lock", path) < 0) {
        a->lock_path = NULL;
        *err = strdup("out of memory");
        goto fail;
    }
    a->lock_fd = open(a->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (a->lock_fd < 0) {
        if (asprintf(err, "cannot create the admin socket's lock file %s: %s", a->lock_path,
                     strerror(errno)) < 0)
            *err = NULL;
        goto fail;
    }
    if (flock(a->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(a->lock_fd);
        a->lock_fd = -1;        /* not ours: leave the file to the process that holds it */
        int rc = e == EWOULDBLOCK
                     ? asprintf(err, "another herald is already running with the admin socket %s (it "
                                     "holds %s): stop it first, or give this one its own --db",
                                path, a->lock_path)
                     : asprintf(err, "cannot lock %s for the admin socket %s: %s", a->lock_path, path,
                                strerror(e));
        if (rc < 0)
            *err = NULL;
        goto fail;
    }
    /* With the lock held, a socket file at path was left by a herald that died. Anything else there
     * (a regular file, or a socket some other program serves) is not ours to remove. */
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            if (asprintf(err, "%s exists and is not a socket; refusing to replace it", path) < 0)
                *err = NULL;
            goto fail;
        }
        if (socket_is_live(path)) {
            if (asprintf(err, "another process serves the socket %s; refusing to replace it", path) < 0)
                *err = NULL;
            goto fail;
        }
        if (unlink(path) < 0 && errno != ENOENT) {
            if (asprintf(err, "cannot remove the stale admin socket %s: %s", path, strerror(errno)) < 0)
                *err = NULL;
            goto fail;
        }
        log_info("replaced the admin socket %s left by a process that is gone", path);
    }
    a->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (a->fd < 0) {
        if (asprintf(err, "cannot create the admin socket: %s", strerror(errno)) < 0)
            *err = NULL;
        goto fail;
    }
    /* created 0600 from the start (the umask), not chmod'ed after a window where others could
     * connect; the process is single-threaded here */
    mode_t old = umask(0177);
    int rc = bind(a->fd, (struct sockaddr *)&sun, sizeof sun);
    int e = errno;
    umask(old);
    if (rc < 0) {
        if (asprintf(err, "cannot create the admin socket %s: %s", path, strerror(e)) < 0)
            *err = NULL;
        goto fail;
    }
    a->bound = 1;
    if (chmod(path, 0600) < 0 || listen(a->fd, 64) < 0) {
        if (asprintf(err, "cannot set up the admin socket %s: %s", path, strerror(errno)) < 0)
            *err = NULL;
        goto fail;
    }
    return a;
fail:
    http_admin_socket_close(a);
    return NULL;
}

const char *http_admin_socket_path(const http_admin_socket *a) { return a->path; }

void http_admin_socket_close(http_admin_socket *a)
{
    if (!a)
        return;
    if (a->fd >= 0)
        close(a->fd);
    if (a->bound)
        unlink(a->path);   /* before the lock goes: the next owner must not find our socket */
    if (a->lock_fd >= 0) {
        /* removed while still locked: a herald starting now either fails on this lock or makes a
         * fresh file, and finds no socket in the way */
        unlink(a->lock_path);
        close(a->lock_fd);
    }
    free(a->lock_path);
    free(a->path);
    free(a);
}

void http_exchange_reply(http_exchange *x, int status, const char *content_type, const char *body,
                         size_t len)
{
    if (!x->req) {
        if (x->on_reply)
            x->on_reply(status, body ? body : "", body ? len : 0, x->reply_ud);
        free(x);
        return;
    }
    struct evhttp_request *req = x->req;
    if (content_type)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", content_type);
    if (body && len)
        evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
    /* If the client went away evhttp has detached req from its connection; evhttp_send_reply then
     * frees it, so answering late is always safe. */
    evhttp_send_reply(req, status, status == 200 ? "OK" : NULL, NULL);
    x->s->pending--;
    free(x);
}

const char *http_exchange_header(http_exchange *x, const char *name)
{
    if (!x->req)
        return NULL;
    return evhttp_find_header(evhttp_request_get_input_headers(x->req), name);
}
