/* http_server.c — evhttp on the shared event loop: routes, methods, size limits, and the
 * exchange object that lets a reply be sent later, after the task that answers it yields. */
#include "http_server.h"
#include "log.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct http_server {
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    http_server_config cfg;
    http_activity_fn on_activity;
    http_health_fn on_health;
    void *ud;
    int port;
    int pending;
    char *body_buf;               /* reused copy of the body, NUL-terminated */
    size_t body_cap;
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
    http_exchange *x = malloc(sizeof *x);
    if (!x) {
        reply_error(req, 503, "Service Unavailable", "out of memory");
        return;
    }
    x->s = s;
    x->req = req;
    x->on_reply = NULL;
    x->reply_ud = NULL;
    s->pending++;
    s->on_activity(x, s->body_buf, len, s->ud);
}

static int peer_is_loopback(struct evhttp_request *req)
{
    struct evhttp_connection *c = evhttp_request_get_connection(req);
    const struct sockaddr *sa = c ? evhttp_connection_get_addr(c) : NULL;
    if (!sa)
        return 0;
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) ||
               (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
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
    http_exchange *x = malloc(sizeof *x);
    if (!x) {
        reply_error(req, 503, "Service Unavailable", "out of memory");
        return;
    }
    x->s = s;
    x->req = req;
    x->on_reply = NULL;
    x->reply_ud = NULL;
    s->pending++;
    s->cfg.on_notify(x, buf, s->body_buf, len, s->ud);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    http_server *s = arg;
    const char *uri = evhttp_request_get_uri(req);
    const char *path_end = strpbrk(uri, "?#");
    size_t plen = path_end ? (size_t)(path_end - uri) : strlen(uri);
    if (plen == 13 && memcmp(uri, "/api/messages", 13) == 0) {
        on_messages(req, s);
    } else if (plen > 12 && memcmp(uri, "/api/notify/", 12) == 0) {
        on_notify(req, s, uri + 12, plen - 12);
    } else if (plen == 8 && memcmp(uri, "/healthz", 8) == 0) {
        enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
        if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
            reply_error(req, 405, "Method Not Allowed", "use GET for /healthz");
            return;
        }
        char *body = s->on_health ? s->on_health(s->ud) : NULL;
        reply_json(req, 200, "OK", body ? body : "{\"status\":\"ok\"}");
        free(body);
    } else if ((plen == 9 && memcmp(uri, "/-/reload", 9) == 0) ||
               (plen == 8 && memcmp(uri, "/-/clock", 8) == 0) ||
               (plen == 12 && memcmp(uri, "/-/broadcast", 12) == 0) ||
               (plen == 8 && memcmp(uri, "/metrics", 8) == 0)) {
        int reload = uri[1] == '-';
        const char *what = uri[3] == 'r' ? "reload" : uri[3] == 'c' ? "clock"
                           : uri[3] == 'b' ? "broadcast" : "metrics";
        if (!s->cfg.on_admin || !peer_is_loopback(req)) {
            reply_error(req, 403, "Forbidden", "admin endpoints answer loopback clients only");
            return;
        }
        enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
        if (cmd != (reload ? EVHTTP_REQ_POST : EVHTTP_REQ_GET)) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", reload ? "POST" : "GET");
            reply_error(req, 405, "Method Not Allowed", reload ? "use POST" : "use GET");
            return;
        }
        int status = 200;
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t blen = evbuffer_get_length(in);
        char *reqbody = malloc(blen + 1);
        if (reqbody) {
            evbuffer_copyout(in, reqbody, blen);
            reqbody[blen] = 0;
        }
        char *body = s->cfg.on_admin(what, reqbody ? reqbody : "", reqbody ? blen : 0, &status,
                                     s->ud);
        free(reqbody);
        if (reload) {
            reply_json(req, status, NULL, body ? body : "{}");
        } else {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                              "text/plain; version=0.0.4");
            if (body)
                evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
            evhttp_send_reply(req, 200, "OK", NULL);
        }
        free(body);
    } else {
        reply_error(req, 404, "Not Found", "no such endpoint");
    }
}

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
    s->on_activity = on_activity;
    s->on_health = on_health;
    s->ud = ud;
    s->http = evhttp_new(base);
    if (!s->http) {
        *err = strdup("cannot create the HTTP server");
        goto fail;
    }
    evhttp_set_max_body_size(s->http, (ev_ssize_t)cfg->max_body_bytes);
    evhttp_set_max_headers_size(s->http, (ev_ssize_t)(cfg->max_header_bytes ? cfg->max_header_bytes : 65536));
    evhttp_set_timeout(s->http, cfg->timeout_s ? cfg->timeout_s : 60);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                            EVHTTP_REQ_PATCH);
    evhttp_set_gencb(s->http, on_request, s);
    s->sock = evhttp_bind_socket_with_handle(s->http, cfg->host, (ev_uint16_t)cfg->port);
    if (!s->sock) {
        if (asprintf(err, "cannot listen on %s:%d (port in use, or address not available)",
                     cfg->host, cfg->port) < 0)
            *err = NULL;
        goto fail;
    }
    evutil_socket_t fd = evhttp_bound_socket_get_fd(s->sock);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    return s;
fail:
    http_server_free(s);
    return NULL;
}

int http_server_port(const http_server *s) { return s->port; }
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
    free(s->body_buf);
    free(s);
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
