/* null_connector — a Bot Connector that accepts everything, as fast as libevent's evhttp allows.
 *
 *   null_connector PORT [HOST]
 *
 * POST ...      -> 201 {"id":"1"}      (send / reply / create conversation)
 * PUT ...       -> 200 {"id":"1"}      (update)
 * DELETE ...    -> 200 (empty)
 * GET /__stats  -> 200 {"post":N,"put":N,"delete":N,"other":N,"reply":N,"connections":N,"bearer":N}
 *                                                                              (not counted)
 * POST /__reset -> 200, zeroes the counters                                  (not counted)
 * anything else -> 200 {}
 * "connections" counts the TCP connections accepted (a client without keep-alive opens one per call);
 * the /__stats and /__reset callers are assumed to use one connection per call (curl) and not counted.
 * "reply" counts the POSTs whose path is .../activities/{id} (replies, as opposed to top-level sends).
 * "bearer" counts the POST/PUT/DELETE calls that carried "Authorization: Bearer <token>" (a non-empty
 * token; not checked): herald sends one outside dev mode, none in dev mode (tests/bench/auth.sh).
 * Keep-alive as evhttp does by default (HTTP/1.1 persistent connections). Single-threaded.
 * Prints "listening on http://HOST:PORT" on stdout once bound (PORT 0 picks a free one).
 * SIGTERM/SIGINT: prints the counters on stderr and exits 0.
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static unsigned long long n_post, n_put, n_delete, n_other, n_reply, n_conn, n_bearer;

static void count_bearer(struct evhttp_request *req)
{
    const char *a = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (a && strncmp(a, "Bearer ", 7) == 0 && a[7] != '\0')
        n_bearer++;
}

static void reply_id(struct evhttp_request *req, int code, const char *reason)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json; charset=utf-8");
    struct evbuffer *b = evhttp_request_get_output_buffer(req);
    evbuffer_add(b, "{\"id\":\"1\"}", 10);
    evhttp_send_reply(req, code, reason, NULL);
}

static int is_reply_path(const char *uri)
{
    /* .../activities/{id} (no query string in connector calls) */
    const char *p = strstr(uri, "/activities/");
    return p && p[12] != '\0';
}

static void on_request(struct evhttp_request *req, void *arg)
{
    (void)arg;
    const char *uri = evhttp_request_get_uri(req);
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_POST:
        if (strcmp(uri, "/__reset") == 0) {
            n_post = n_put = n_delete = n_other = n_reply = n_conn = n_bearer = 0;  /* this connection too */
            evhttp_send_reply(req, 200, "OK", NULL);
            return;
        }
        n_post++;
        count_bearer(req);
        if (is_reply_path(uri))
            n_reply++;
        reply_id(req, 201, "Created");
        return;
    case EVHTTP_REQ_PUT:
        n_put++;
        count_bearer(req);
        reply_id(req, 200, "OK");
        return;
    case EVHTTP_REQ_DELETE:
        n_delete++;
        count_bearer(req);
        evhttp_send_reply(req, 200, "OK", NULL);
        return;
    case EVHTTP_REQ_GET:
        if (strcmp(uri, "/__stats") == 0) {
            if (n_conn)
                n_conn--; /* the caller's own connection */
            struct evbuffer *b = evhttp_request_get_output_buffer(req);
            evbuffer_add_printf(b,
                                "{\"post\":%llu,\"put\":%llu,\"delete\":%llu,\"other\":%llu,"
                                "\"reply\":%llu,\"connections\":%llu,\"bearer\":%llu}\n",
                                n_post, n_put, n_delete, n_other, n_reply, n_conn, n_bearer);
            evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                              "application/json");
            evhttp_send_reply(req, 200, "OK", NULL);
            return;
        }
        /* fall through */
    default:
        n_other++;
        evbuffer_add(evhttp_request_get_output_buffer(req), "{}", 2);
        evhttp_send_reply(req, 200, "OK", NULL);
        return;
    }
}

/* evhttp asks for one bufferevent per accepted connection: the place to count connections. */
static struct bufferevent *on_new_conn(struct event_base *base, void *arg)
{
    (void)arg;
    n_conn++;
    return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    event_base_loopbreak((struct event_base *)arg);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [HOST]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    const char *host = argc > 2 ? argv[2] : "127.0.0.1";
    signal(SIGPIPE, SIG_IGN);

    struct event_base *base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    if (!base || !http) {
        fprintf(stderr, "null_connector: libevent init failed\n");
        return 1;
    }
    evhttp_set_gencb(http, on_request, NULL);
    evhttp_set_bevcb(http, on_new_conn, NULL);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                         EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_HEAD);
    evhttp_set_max_body_size(http, 4 * 1024 * 1024);
    evhttp_set_timeout(http, 120);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(http, host, (ev_uint16_t)port);
    if (!bs) {
        fprintf(stderr, "null_connector: cannot bind %s:%d\n", host, port);
        return 1;
    }
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &len);
    printf("listening on http://%s:%d\n", host, ntohs(sin.sin_port));
    fflush(stdout);

    struct event *sterm = evsignal_new(base, SIGTERM, on_signal, base);
    struct event *sint = evsignal_new(base, SIGINT, on_signal, base);
    evsignal_add(sterm, NULL);
    evsignal_add(sint, NULL);

    event_base_dispatch(base);

    fprintf(stderr, "null_connector: post=%llu (reply=%llu) put=%llu delete=%llu other=%llu connections=%llu "
            "bearer=%llu\n", n_post, n_reply, n_put, n_delete, n_other, n_conn, n_bearer);
    event_free(sterm);
    event_free(sint);
    evhttp_free(http);
    event_base_free(base);
    return 0;
}
