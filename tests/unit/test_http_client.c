/* test_http_client.c — http_client against an in-process evhttp server on 127.0.0.1 sharing the
 * client's event_base: methods, headers, concurrency, keep-alive, limits, timeouts, cancel, free. */
#include "http_client.h"
#include "unit.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BIG ((size_t)8 * 1024 * 1024) /* http_client's body limit */

static struct event_base *base;
static struct evhttp *server;
static int port;
static int requests_seen;
static int drops_left;            /* /drop requests still to drop unanswered */

/* Requests the /hang handler never answered; replied to (or freed, when the client went away)
 * at teardown, before evhttp_free. */
#define MAX_HUNG 16
static struct evhttp_request *hung[MAX_HUNG];
static int n_hung;

/* Distinct client ports seen: one per TCP connection the client opened. */
#define MAX_PEERS 256
static unsigned peer_ports[MAX_PEERS];
static int n_peers;

static void note_peer(struct evhttp_request *req)
{
    char *addr = NULL;
    ev_uint16_t p = 0;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &addr, &p);
    for (int i = 0; i < n_peers; i++)
        if (peer_ports[i] == p)
            return;
    if (n_peers < MAX_PEERS)
        peer_ports[n_peers++] = p;
}

static const char *method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    default: return "OTHER";
    }
}

static void add_filler(struct evbuffer *b, size_t n)
{
    static char chunk[65536];
    memset(chunk, 'x', sizeof chunk);
    while (n > 0) {
        size_t k = n < sizeof chunk ? n : sizeof chunk;
        evbuffer_add(b, chunk, k);
        n -= k;
    }
}

static void handle(struct evhttp_request *req, void *arg)
{
    requests_seen++;
    note_peer(req);
    const char *uri = evhttp_request_get_uri(req);
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    if (strncmp(uri, "/drop", 5) == 0 && drops_left > 0) {
        /* read in full, then the connection closes without a byte of answer: evhttp sees the
         * EOF and frees the connection with this request */
        drops_left--;
        struct bufferevent *bev = evhttp_connection_get_bufferevent(evhttp_request_get_connection(req));
        shutdown(bufferevent_getfd(bev), SHUT_RDWR);
        return;
    }
    if (strncmp(uri, "/hang", 5) == 0) {
        if (n_hung < MAX_HUNG)
            hung[n_hung++] = req;
        return;
    }
    struct evbuffer *b = evbuffer_new();
    int status = 200;
    if (strncmp(uri, "/echo", 5) == 0) {
        /* "<METHOD> <uri>\nX-Test: <v>\nExpect: <v>\n\n<body>" */
        const char *t = evhttp_find_header(in, "X-Test"), *e = evhttp_find_header(in, "Expect");
        evbuffer_add_printf(b, "%s %s\nX-Test: %s\nExpect: %s\n\n",
                            method_name(evhttp_request_get_command(req)), uri, t ? t : "-",
                            e ? e : "-");
        evbuffer_add_buffer(b, evhttp_request_get_input_buffer(req));
    } else if (strcmp(uri, "/headers") == 0) {
        status = 429;
        evhttp_add_header(out, "Retry-After", "7");
        evhttp_add_header(out, "X-Correlating-OperationId", "op-123");
        evbuffer_add_printf(b, "slow down");
    } else if (strcmp(uri, "/headers-lower") == 0) {
        evhttp_add_header(out, "retry-after", "3");
        evhttp_add_header(out, "ms-cv", "cv-9");
    } else if (strcmp(uri, "/headers-both") == 0) {
        evhttp_add_header(out, "MS-CV", "cv-1");
        evhttp_add_header(out, "x-correlating-operationid", "op-2");
    } else if (strcmp(uri, "/big") == 0) {
        add_filler(b, BIG + 1);
    } else if (strcmp(uri, "/exact") == 0) {
        add_filler(b, BIG);
    } else if (strncmp(uri, "/status/", 8) == 0) {
        status = atoi(uri + 8);
        evbuffer_add_printf(b, "status %d", status);
    } else {
        status = 404;
    }
    evhttp_send_reply(req, status, "X", b);
    evbuffer_free(b);
}

static void setup(void)
{
    static int curl_ready;
    if (!curl_ready) {
        curl_global_init(CURL_GLOBAL_DEFAULT); /* main's job in herald */
        atexit(curl_global_cleanup);
        curl_ready = 1;
    }
    base = event_base_new();
    server = evhttp_new(base);
    evhttp_set_gencb(server, handle, NULL);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(server, "127.0.0.1", 0);
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &len);
    port = ntohs(sin.sin_port);
    requests_seen = n_hung = n_peers = drops_left = 0;
}

static void teardown(void)
{
    for (int i = 0; i < n_hung; i++)
        evhttp_send_reply(hung[i], 200, "late", NULL);
    n_hung = 0;
    evhttp_free(server);
    event_base_free(base);
}

static const char *url(const char *path)
{
    static char bufs[8][256];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, 256, "http://127.0.0.1:%d%s", port, path);
    return b;
}

static void on_guard(evutil_socket_t fd, short what, void *arg) { *(int *)arg = 1; }

/* Runs the loop until *counter reaches target or unit_tf_ms(ms) pass; returns whether it got
 * there. */
static int run_until(const int *counter, int target, int ms)
{
    int expired = 0;
    struct event *guard = evtimer_new(base, on_guard, &expired);
    ms = unit_tf_ms(ms);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(guard, &tv);
    while (*counter < target && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(guard);
    return *counter >= target;
}

static void run_for(int ms)
{
    int never = 0;
    run_until(&never, 1, ms);
}

typedef struct got {
    int calls, resends;
    long status;
    int transport_error, timed_out;
    char *error, *body, *retry_after, *corr;
    size_t body_len;
} got;

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void on_got(const http_response *res, void *ud)
{
    got *g = ud;
    g->calls++;
    g->status = res->status;
    g->transport_error = res->transport_error;
    g->timed_out = res->timed_out;
    g->resends = res->resends;
    free(g->error);
    free(g->body);
    free(g->retry_after);
    free(g->corr);
    g->error = dup_or_null(res->error);
    g->body = dup_or_null(res->body);
    g->body_len = res->body_len;
    g->retry_after = dup_or_null(res->retry_after);
    g->corr = dup_or_null(res->correlation_id);
}

static void got_clear(got *g)
{
    free(g->error);
    free(g->body);
    free(g->retry_after);
    free(g->corr);
    memset(g, 0, sizeof *g);
}

static http_client *new_client(int allow_http)
{
    http_client_config cfg = {.connect_timeout_ms = 2000, .allow_http = allow_http};
    char *err = NULL;
    http_client *c = http_client_new(base, &cfg, &err);
    CHECK(c != NULL);
    free(err);
    return c;
}

static http_request *start(http_client *c, const char *method, const char *path,
                           const char *const *headers, const char *body, long timeout_ms, got *g)
{
    char *err = NULL;
    http_request *r = http_client_request(c, method, url(path), headers, body, body ? strlen(body) : 0,
                                          timeout_ms, on_got, g, &err);
    if (!r)
        fprintf(stderr, "    request failed to start: %s\n", err ? err : "?");
    free(err);
    return r;
}

static void test_methods(void)
{
    setup();
    http_client *c = new_client(1);
    const char *hdrs[] = {"X-Test: one", NULL};
    got g[4] = {{0}};
    CHECK(start(c, "GET", "/echo/get", hdrs, NULL, 2000, &g[0]));
    CHECK(start(c, "POST", "/echo/post", NULL, "hello", 2000, &g[1]));
    CHECK(start(c, "PUT", "/echo/put", hdrs, "{\"a\":1}", 2000, &g[2]));
    CHECK(start(c, "DELETE", "/echo/del", NULL, NULL, 2000, &g[3]));
    CHECK_INT(http_client_pending(c), 4);
    int done = 0;
    while (done < 4 && run_until(&g[done].calls, 1, 3000))
        done++;
    CHECK_INT(done, 4);
    CHECK_INT(g[0].status, 200);
    CHECK_STR(g[0].body, "GET /echo/get\nX-Test: one\nExpect: -\n\n");
    CHECK_STR(g[1].body, "POST /echo/post\nX-Test: -\nExpect: -\n\nhello");
    CHECK_STR(g[2].body, "PUT /echo/put\nX-Test: one\nExpect: -\n\n{\"a\":1}");
    CHECK_STR(g[3].body, "DELETE /echo/del\nX-Test: -\nExpect: -\n\n");
    for (int i = 0; i < 4; i++) {
        CHECK_INT(g[i].calls, 1);
        CHECK_INT(g[i].transport_error, 0);
        CHECK_STR(g[i].error, "");
        CHECK_INT(g[i].body_len, strlen(g[i].body));
        got_clear(&g[i]);
    }
    CHECK_INT(http_client_pending(c), 0);
    http_client_free(c);
    teardown();
}

static void test_large_body_has_no_expect(void)
{
    setup();
    http_client *c = new_client(1);
    size_t n = 2 * 1024 * 1024;
    char *body = malloc(n + 1);
    memset(body, 'b', n);
    body[n] = '\0';
    got g = {0};
    CHECK(start(c, "POST", "/echo", NULL, body, 5000, &g));
    CHECK(run_until(&g.calls, 1, 5000));
    const char *head = "POST /echo\nX-Test: -\nExpect: -\n\n";
    CHECK(g.body && strncmp(g.body, head, strlen(head)) == 0);
    CHECK_INT(g.body_len, strlen(head) + n);
    free(body);
    got_clear(&g);
    http_client_free(c);
    teardown();
}

static void test_status_and_body_passthrough(void)
{
    setup();
    http_client *c = new_client(1);
    got g = {0};
    CHECK(start(c, "GET", "/status/503", NULL, NULL, 2000, &g));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_INT(g.status, 503);
    CHECK_INT(g.transport_error, 0);
    CHECK_STR(g.body, "status 503");
    CHECK(g.retry_after == NULL);
    CHECK(g.corr == NULL);
    got_clear(&g);
    /* No redirect is followed: the 302 itself is the answer. */
    CHECK(start(c, "GET", "/status/302", NULL, NULL, 2000, &g));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_INT(g.status, 302);
    got_clear(&g);
    http_client_free(c);
    teardown();
}

#define N_CONCURRENT 100
static void test_hundred_concurrent(void)
{
    setup();
    http_client *c = new_client(1);
    static got g[N_CONCURRENT];
    static char bodies[N_CONCURRENT][32];
    for (int i = 0; i < N_CONCURRENT; i++) {
        snprintf(bodies[i], sizeof bodies[i], "req-%d", i);
        CHECK(start(c, "POST", "/echo", NULL, bodies[i], 10000, &g[i]));
    }
    CHECK_INT(http_client_pending(c), N_CONCURRENT);
    int all = 0;
    for (int i = 0; i < N_CONCURRENT; i++)
        all += run_until(&g[i].calls, 1, 10000);
    CHECK_INT(all, N_CONCURRENT);
    run_for(20); /* a duplicate callback would show up here */
    for (int i = 0; i < N_CONCURRENT; i++) {
        CHECK_INT(g[i].calls, 1);
        CHECK_INT(g[i].status, 200);
        size_t bl = strlen(bodies[i]);
        CHECK(g[i].body && g[i].body_len >= bl &&
              strcmp(g[i].body + g[i].body_len - bl, bodies[i]) == 0);
        got_clear(&g[i]);
    }
    CHECK_INT(requests_seen, N_CONCURRENT);
    CHECK(n_peers <= 64); /* max_host_connections default */
    CHECK_INT(http_client_pending(c), 0);
    http_client_free(c);
    teardown();
}

/* Each completion starts the next request from inside on_done. */
typedef struct chain {
    http_client *c;
    int left, done;
    long last_status;
    int failed_start;
} chain;

static void on_chain(const http_response *res, void *ud)
{
    chain *ch = ud;
    ch->done++;
    ch->last_status = res->status;
    if (--ch->left > 0) {
        char *err = NULL;
        if (!http_client_request(ch->c, "GET", url("/echo/next"), NULL, NULL, 0, 2000, on_chain, ch, &err))
            ch->failed_start = 1;
        free(err);
    }
}

static void test_on_done_starts_request(void)
{
    setup();
    http_client *c = new_client(1);
    chain ch = {.c = c, .left = 3};
    CHECK(http_client_request(c, "GET", url("/echo/first"), NULL, NULL, 0, 2000, on_chain, &ch, NULL));
    CHECK(run_until(&ch.done, 3, 5000));
    CHECK_INT(ch.failed_start, 0);
    CHECK_INT(ch.last_status, 200);
    CHECK_INT(http_client_pending(c), 0);
    http_client_free(c);
    teardown();
}

static void test_keepalive_reuses_connection(void)
{
    setup();
    http_client *c = new_client(1);
    chain ch = {.c = c, .left = 5};
    CHECK(http_client_request(c, "GET", url("/echo/ka"), NULL, NULL, 0, 2000, on_chain, &ch, NULL));
    CHECK(run_until(&ch.done, 5, 5000));
    CHECK_INT(requests_seen, 5);
    CHECK_INT(n_peers, 1);
    http_client_free(c);
    teardown();
}

/* A request on a reused connection that dies unanswered goes out again by libcurl's own choice;
 * http_response.resends says so. On a fresh connection the same death is an error, not a resend. */
static void test_resend_on_a_dead_reused_connection_is_counted(void)
{
    setup();
    http_client *c = new_client(1);
    got g = {0};
    CHECK(start(c, "POST", "/echo/warm", NULL, "one", 2000, &g));
    CHECK(run_until(&g.calls, 1, 5000));
    CHECK_INT(g.resends, 0);
    drops_left = 1;
    CHECK(start(c, "POST", "/drop/echo", NULL, "two", 2000, &g));
    CHECK(run_until(&g.calls, 2, 5000));
    CHECK_INT(g.transport_error, 0);
    CHECK_INT(g.status, 404);     /* the second copy reached the handler's fallthrough */
    CHECK_INT(g.resends, 1);
    CHECK_INT(requests_seen, 3);
    CHECK_INT(n_peers, 2);
    got_clear(&g);
    http_client_free(c);
    teardown();

    setup();
    c = new_client(1);
    drops_left = 1;
    CHECK(start(c, "POST", "/drop/first", NULL, "x", 2000, &g));
    CHECK(run_until(&g.calls, 1, 5000));
    CHECK(g.transport_error != 0);
    CHECK_INT(g.resends, 0);
    CHECK_INT(requests_seen, 1);
    got_clear(&g);
    http_client_free(c);
    teardown();
}

static void test_headers_captured(void)
{
    setup();
    http_client *c = new_client(1);
    got g = {0};
    CHECK(start(c, "POST", "/headers", NULL, "{}", 2000, &g));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_INT(g.status, 429);
    CHECK_STR(g.retry_after, "7");
    CHECK_STR(g.corr, "op-123");
    CHECK_STR(g.body, "slow down");
    got_clear(&g);
    CHECK(start(c, "GET", "/headers-lower", NULL, NULL, 2000, &g));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_STR(g.retry_after, "3");
    CHECK_STR(g.corr, "cv-9"); /* MS-CV when there is no X-Correlating-OperationId */
    got_clear(&g);
    CHECK(start(c, "GET", "/headers-both", NULL, NULL, 2000, &g));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_STR(g.corr, "op-2");
    CHECK(g.retry_after == NULL);
    got_clear(&g);
    http_client_free(c);
    teardown();
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void test_timeout(void)
{
    setup();
    http_client *c = new_client(1);
    got g = {0};
    long t0 = now_ms();
    CHECK(start(c, "GET", "/hang", NULL, NULL, 200, &g));
    CHECK(run_until(&g.calls, 1, 3000));
    long took = now_ms() - t0;
    CHECK_INT(g.timed_out, 1);
    CHECK_INT(g.transport_error, CURLE_OPERATION_TIMEDOUT);
    CHECK_INT(g.status, 0);
    CHECK(g.error && strstr(g.error, "timed out") != NULL);
    CHECK(took >= 190 && took < unit_tf_ms(2000));
    CHECK_INT(n_hung, 1);
    got_clear(&g);
    http_client_free(c);
    teardown();
}

static void test_connection_refused(void)
{
    setup();
    /* Bound but not listening: connecting is refused, and the port cannot be reused meanwhile. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0);
    socklen_t len = sizeof sin;
    getsockname(fd, (struct sockaddr *)&sin, &len);
    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/", ntohs(sin.sin_port));
    http_client *c = new_client(1);
    got g = {0};
    CHECK(http_client_request(c, "GET", u, NULL, NULL, 0, 2000, on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_INT(g.transport_error, CURLE_COULDNT_CONNECT);
    CHECK_INT(g.timed_out, 0);
    CHECK_INT(g.status, 0);
    CHECK(g.error && strstr(g.error, "Connection refused") != NULL);
    CHECK_STR(g.body, "");
    got_clear(&g);
    close(fd);
    http_client_free(c);
    teardown();
}

static void test_scheme_refused_at_start(void)
{
    setup();
    http_client *c = new_client(0);
    got g = {0};
    char *err = NULL;
    CHECK(http_client_request(c, "GET", url("/echo"), NULL, NULL, 0, 2000, on_got, &g, &err) == NULL);
    CHECK(err && strstr(err, "only https:// URLs") != NULL);
    free(err);
    err = NULL;
    CHECK(http_client_request(c, "GET", "ftp://127.0.0.1/x", NULL, NULL, 0, 2000, on_got, &g, &err) == NULL);
    free(err);
    err = NULL;
    CHECK(http_client_request(c, "GET", "127.0.0.1/x", NULL, NULL, 0, 2000, on_got, &g, &err) == NULL);
    free(err);
    err = NULL;
    CHECK(http_client_request(c, "PATCH", "https://127.0.0.1/x", NULL, NULL, 0, 2000, on_got, &g, &err) == NULL);
    CHECK(err && strstr(err, "PATCH") != NULL);
    free(err);
    CHECK_INT(http_client_pending(c), 0);
    /* https is accepted and really speaks TLS: the plain-HTTP server makes the handshake fail. */
    char u[64];
    snprintf(u, sizeof u, "https://127.0.0.1:%d/echo", port);
    CHECK(http_client_request(c, "GET", u, NULL, NULL, 0, 2000, on_got, &g, NULL) != NULL);
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK(g.transport_error != 0);
    CHECK_INT(g.status, 0);
    got_clear(&g);
    http_client_free(c);
    teardown();
}

static void test_cancel(void)
{
    setup();
    http_client *c = new_client(1);
    got a = {0}, b = {0}, d = {0};
    http_request *ra = start(c, "GET", "/echo/a", NULL, NULL, 2000, &a);
    http_request *rb = start(c, "GET", "/hang", NULL, NULL, 5000, &b);
    CHECK(ra && rb);
    http_request_cancel(ra); /* before it ever touched the network */
    CHECK(run_until(&n_hung, 1, 3000));
    http_request_cancel(rb); /* mid-exchange */
    CHECK_INT(http_client_pending(c), 0);
    CHECK(start(c, "GET", "/echo/d", NULL, NULL, 2000, &d));
    CHECK(run_until(&d.calls, 1, 3000));
    run_for(30);
    CHECK_INT(a.calls, 0);
    CHECK_INT(b.calls, 0);
    CHECK_INT(d.calls, 1);
    got_clear(&d);
    http_client_free(c);
    teardown();
}

static void test_free_in_flight(void)
{
    setup();
    http_client *c = new_client(1);
    got g[3] = {{0}};
    CHECK(start(c, "GET", "/hang", NULL, NULL, 5000, &g[0]));
    CHECK(start(c, "POST", "/hang", NULL, "x", 5000, &g[1]));
    CHECK(run_until(&n_hung, 2, 3000));
    CHECK(start(c, "GET", "/echo", NULL, NULL, 5000, &g[2])); /* not even connected yet */
    CHECK_INT(http_client_pending(c), 3);
    http_client_free(c);
    run_for(30);
    for (int i = 0; i < 3; i++)
        CHECK_INT(g[i].calls, 0);
    teardown();
}

/* Two requests that time out together: whichever completes first cancels the other, which may
 * already be finished in the same batch. Exactly one callback must run. */
typedef struct pair {
    http_request *r[2];
    int calls[2];
} pair;

static pair the_pair;

static void on_pair(const http_response *res, void *ud)
{
    int i = (int)(ud == &the_pair.calls[1]);
    the_pair.calls[i]++;
    http_request_cancel(the_pair.r[1 - i]);
    http_request_cancel(the_pair.r[i]); /* no-op on itself while its callback runs */
}

static void test_cancel_other_in_same_batch(void)
{
    setup();
    http_client *c = new_client(1);
    memset(&the_pair, 0, sizeof the_pair);
    for (int i = 0; i < 2; i++)
        the_pair.r[i] = http_client_request(c, "GET", url("/hang"), NULL, NULL, 0, 100, on_pair,
                                            &the_pair.calls[i], NULL);
    CHECK(the_pair.r[0] && the_pair.r[1]);
    int total = 0;
    int expired = 0;
    struct event *guard = evtimer_new(base, on_guard, &expired);
    struct timeval tv = {2, 0};
    evtimer_add(guard, &tv);
    while (http_client_pending(c) > 0 && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(guard);
    run_for(30);
    total = the_pair.calls[0] + the_pair.calls[1];
    CHECK_INT(total, 1);
    CHECK_INT(http_client_pending(c), 0);
    http_client_free(c);
    teardown();
}

/* on_done frees the whole client while another request is in flight. */
typedef struct freer {
    http_client *c;
    int calls;
} freer;

static void on_free_client(const http_response *res, void *ud)
{
    freer *f = ud;
    f->calls++;
    http_client_free(f->c);
    f->c = NULL;
}

static void test_free_from_callback(void)
{
    setup();
    http_client *c = new_client(1);
    freer f = {.c = c};
    got other = {0};
    CHECK(http_client_request(c, "GET", url("/echo/x"), NULL, NULL, 0, 2000, on_free_client, &f, NULL));
    CHECK(start(c, "GET", "/hang", NULL, NULL, 5000, &other));
    CHECK(run_until(&f.calls, 1, 3000));
    run_for(30);
    CHECK_INT(f.calls, 1);
    CHECK_INT(other.calls, 0);
    teardown();
}

static void test_body_limit(void)
{
    setup();
    http_client *c = new_client(1);
    got g = {0};
    CHECK(start(c, "GET", "/big", NULL, NULL, 10000, &g));
    CHECK(run_until(&g.calls, 1, 10000));
    CHECK_INT(g.transport_error, CURLE_WRITE_ERROR);
    CHECK_INT(g.status, 0);
    CHECK(g.error && strstr(g.error, "8 MiB") != NULL);
    got_clear(&g);
    CHECK(start(c, "GET", "/exact", NULL, NULL, 10000, &g));
    CHECK(run_until(&g.calls, 1, 10000));
    CHECK_INT(g.transport_error, 0);
    CHECK_INT(g.status, 200);
    CHECK_INT(g.body_len, BIG);
    got_clear(&g);
    http_client_free(c);
    teardown();
}

UNIT_MAIN("http_client",
          CASE(test_methods),
          CASE(test_large_body_has_no_expect),
          CASE(test_status_and_body_passthrough),
          CASE(test_hundred_concurrent),
          CASE(test_on_done_starts_request),
          CASE(test_keepalive_reuses_connection),
          CASE(test_resend_on_a_dead_reused_connection_is_counted),
          CASE(test_headers_captured),
          CASE(test_timeout),
          CASE(test_connection_refused),
          CASE(test_scheme_refused_at_start),
          CASE(test_cancel),
          CASE(test_free_in_flight),
          CASE(test_cancel_other_in_same_batch),
          CASE(test_free_from_callback),
          CASE(test_body_limit))
