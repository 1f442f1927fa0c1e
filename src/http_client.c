/* http_client.c — outbound HTTP on the event loop: libcurl's multi socket API driven by libevent.
 * Owns easy handles, one libevent watcher per curl socket, the curl timer and response buffers. */
#include "http_client.h"
#include "err.h"
#include "clock.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/event_struct.h> /* struct event embedded in sock_watch: one allocation per socket */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A Bot Connector answer is a few hundred bytes; 8 MiB only bounds memory against a broken or
 * hostile server. Reaching it fails the request with CURLE_WRITE_ERROR and a readable error. */
#define HTTP_CLIENT_MAX_BODY ((size_t)8 * 1024 * 1024)
#define HTTP_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS 5000L
#define HTTP_CLIENT_DEFAULT_MAX_HOST_CONNECTIONS 64L
/* Used when a caller passes timeout_ms <= 0: an unbounded exchange would pin a task forever. */
#define HTTP_CLIENT_DEFAULT_TIMEOUT_MS 30000L

/* A request lives in exactly one place: the client's active list (its easy handle is in the multi),
 * the done list (finished, easy handle already gone, callback not yet run), or nowhere while its
 * callback runs. Finished requests are queued before any callback runs so that a callback which
 * cancels a request finished in the same batch simply unlinks it from the done list. */
enum req_state { REQ_ACTIVE, REQ_DONE, REQ_CALLING };

struct req_list {
    http_request *head, *tail;
    int count;
};

struct http_request {
    http_client *c;
    enum req_state state;
    http_request *prev, *next;
    CURL *easy;
    struct curl_slist *headers;
    char *req_body;
    char *buf;                   /* response body, NUL-terminated once anything arrived */
    size_t len, cap;
    int too_large, out_of_memory;
    char *retry_after, *correlation_id, *ms_cv;
    long status;
    CURLcode result;
    char errbuf[CURL_ERROR_SIZE];
    http_done_fn on_done;
    void *ud;
    struct event *fake_ev;       /* fake transport: delivers the canned answer */
    int fake_error, fake_timed_out;
    int sends;                   /* times the request went out (CURLOPT_PREREQFUNCTION calls) */
};

/* One per socket libcurl tells us about; freed on CURL_POLL_REMOVE or with the client. */
struct sock_watch {
    struct event ev;
    http_client *c;
    struct sock_watch *prev, *next;
};

struct http_client {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;         /* the single timeout libcurl asks for */
    long connect_timeout_ms;
    int allow_http;
    struct req_list active, done;
    struct sock_watch *watches;
    int dispatching;             /* callbacks are running: http_client_free must defer the free */
    int closing;
    http_fake_fn fake;           /* when set, no socket is opened: fake answers every request */
    void *fake_ud;
};

static void list_append(struct req_list *l, http_request *r)
{
    r->prev = l->tail;
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->count++;
}

static void list_remove(struct req_list *l, http_request *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->count--;
}

/* Frees everything the request owns; its easy handle must already be out of the multi. */
static void request_free(http_request *r)
{
    if (r->fake_ev)
        clock_timer_free(r->fake_ev);
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->req_body);
    free(r->buf);
    free(r->retry_after);
    free(r->correlation_id);
    free(r->ms_cv);
    free(r);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    http_request *r = ud;
    size_t n = size * nmemb;
    if (n > HTTP_CLIENT_MAX_BODY - r->len) {
        r->too_large = 1;
        return 0; /* any short count makes libcurl abort with CURLE_WRITE_ERROR */
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 1024;
        while (cap < r->len + n + 1)
            cap *= 2;
        if (cap > HTTP_CLIENT_MAX_BODY + 1)
            cap = HTTP_CLIENT_MAX_BODY + 1;
        char *p = realloc(r->buf, cap);
        if (!p) {
            r->out_of_memory = 1;
            return 0;
        }
        r->buf = p;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, data, n);
    r->len += n;
    r->buf[r->len] = '\0';
    return n;
}

static int header_is(const char *line, size_t name_len, const char *name)
{
    return strlen(name) == name_len && strncasecmp(line, name, name_len) == 0;
}

static void replace(char **slot, const char *value, size_t len)
{
    free(*slot);
    *slot = strndup(value, len);
}

int http_header_split(const char *line, size_t n, size_t *name_len, const char **value,
                      size_t *value_len)
{
    const char *colon = memchr(line, ':', n);
    if (!colon)
        return -1;
    const char *v = colon + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *name_len = (size_t)(colon - line);
    *value = v;
    *value_len = (size_t)(end - v);
    return 0;
}

/* Called once per header line of every response, including interim ones: a new status line
 * resets what we captured so only the final response's headers are reported. */
static size_t on_header(char *line, size_t size, size_t nmemb, void *ud)
{
    http_request *r = ud;
    size_t n = size * nmemb;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        free(r->retry_after);
        free(r->correlation_id);
        free(r->ms_cv);
        r->retry_after = r->correlation_id = r->ms_cv = NULL;
        return n;
    }
    size_t name_len, vlen;
    const char *v;
    if (http_header_split(line, n, &name_len, &v, &vlen) < 0)
        return n;
    if (header_is(line, name_len, "Retry-After"))
        replace(&r->retry_after, v, vlen);
    else if (header_is(line, name_len, "X-Correlating-OperationId"))
        replace(&r->correlation_id, v, vlen);
    else if (header_is(line, name_len, "MS-CV"))
        replace(&r->ms_cv, v, vlen);
    return n;
}

/* CURLOPT_PREREQFUNCTION: libcurl calls it each time it is about to send the request, on a new or
 * a reused connection, after connecting. More than one call for one transfer is libcurl's own
 * re-send (lib/transfer.c Curl_retry_request: a reused connection that died before any byte of the
 * answer; lib/multi.c sends the transfer back to CONNECT and then to DO, which calls this again).
 * Counting calls is structural: it needs neither a debug callback nor the wording of curl's
 * "Connection died, retrying a fresh connect" message. */
static int on_prereq(void *ud, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    (void)primary_ip;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    http_request *r = ud;
    r->sends++;
    return CURL_PREREQFUNC_OK;
}

static void client_destroy(http_client *c);

/* Moves every finished transfer out of libcurl into the done list, then runs callbacks unless an
 * outer frame is already running them. Called after every curl_multi_socket_action, so no
 * callback ever runs inside libcurl. Callbacks may start, cancel or free anything: the loop pops
 * the list head each time instead of holding an iterator. */
static void drain(http_client *c)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *easy = m->easy_handle; /* m is invalid once the handle is removed */
        CURLcode result = m->data.result;
        char *priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        http_request *r = (http_request *)priv;
        long status = 0, os_errno = 0;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
        curl_multi_remove_handle(c->multi, easy);
        curl_easy_cleanup(easy);
        r->easy = NULL;
        r->result = result;
        r->status = result == CURLE_OK ? status : 0;
        if (r->too_large)
            snprintf(r->errbuf, sizeof r->errbuf, "response body exceeds the %zu MiB limit",
                     HTTP_CLIENT_MAX_BODY / (1024 * 1024));
        else if (r->out_of_memory)
            snprintf(r->errbuf, sizeof r->errbuf, "out of memory reading the response body");
        else if (result != CURLE_OK && r->errbuf[0] == '\0')
            snprintf(r->errbuf, sizeof r->errbuf, "%s", curl_easy_strerror(result));
        else if (result == CURLE_OK)
            r->errbuf[0] = '\0';
        /* curl 7.88 says "Couldn't connect to server" where the cause ("Connection refused") is
         * what an operator needs; add the socket error when the text lacks it. */
        if (result != CURLE_OK && os_errno != 0 && !strstr(r->errbuf, strerror((int)os_errno))) {
            size_t used = strlen(r->errbuf);
            snprintf(r->errbuf + used, sizeof r->errbuf - used, " (%s)", strerror((int)os_errno));
        }
        list_remove(&c->active, r);
        r->state = REQ_DONE;
        list_append(&c->done, r);
    }
    if (c->dispatching)
        return;
    c->dispatching = 1;
    http_request *r;
    while (!c->closing && (r = c->done.head)) {
        list_remove(&c->done, r);
        r->state = REQ_CALLING;
        http_response res = {
            .status = r->status,
            .transport_error = (int)r->result,
            .timed_out = r->result == CURLE_OPERATION_TIMEDOUT,
            .error = r->errbuf,
            .body = r->buf ? r->buf : "",
            .body_len = r->len,
            .retry_after = r->retry_after,
            .correlation_id = r->correlation_id ? r->correlation_id : r->ms_cv,
            .resends = r->sends > 1 ? r->sends - 1 : 0,
        };
        r->on_done(&res, r->ud);
        request_free(r);
    }
    c->dispatching = 0;
    if (c->closing)
        client_destroy(c);
}

static void on_socket_event(evutil_socket_t fd, short kind, void *arg)
{
    struct sock_watch *w = arg;
    http_client *c = w->c; /* w may be freed by the socket callback inside socket_action */
    int flags = ((kind & EV_READ) ? CURL_CSELECT_IN : 0) | ((kind & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running = 0;
    curl_multi_socket_action(c->multi, fd, flags, &running);
    if (running <= 0 && evtimer_pending(c->timer, NULL))
        evtimer_del(c->timer);
    drain(c);
}

static void on_timer(evutil_socket_t fd, short kind, void *arg)
{
    http_client *c = arg;
    int running = 0;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    drain(c);
}

/* CURLMOPT_TIMERFUNCTION: only (re)arms the evtimer. Calling libcurl from here is forbidden, so a
 * 0 ms timeout becomes a timer that fires on the next loop iteration. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    http_client *c = userp;
    if (timeout_ms < 0) {
        evtimer_del(c->timer);
        return 0;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
    return 0;
}

/* CURLMOPT_SOCKETFUNCTION: keeps one persistent libevent event per socket in step with what
 * libcurl wants to wait for. */
static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    http_client *c = userp;
    struct sock_watch *w = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (w) {
            event_del(&w->ev);
            if (w->prev)
                w->prev->next = w->next;
            else
                c->watches = w->next;
            if (w->next)
                w->next->prev = w->prev;
            free(w);
        }
        return 0;
    }
    if (!w) {
        w = calloc(1, sizeof *w);
        if (!w)
            return -1;
        w->c = c;
        w->next = c->watches;
        if (c->watches)
            c->watches->prev = w;
        c->watches = w;
        curl_multi_assign(c->multi, s, w);
    } else {
        event_del(&w->ev);
    }
    short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    event_assign(&w->ev, c->base, s, kind, on_socket_event, w);
    event_add(&w->ev, NULL);
    return 0;
}

http_client *http_client_new(struct event_base *base, const http_client_config *cfg, char **err)
{
    http_client *c = calloc(1, sizeof *c);
    if (!c) {
        set_err(err, "http client: out of memory");
        return NULL;
    }
    c->base = base;
    c->connect_timeout_ms = cfg && cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms
                                                               : HTTP_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
    long max_host = cfg && cfg->max_host_connections > 0 ? cfg->max_host_connections
                                                         : HTTP_CLIENT_DEFAULT_MAX_HOST_CONNECTIONS;
    c->allow_http = cfg ? cfg->allow_http : 0;
    c->multi = curl_multi_init();
    c->timer = evtimer_new(base, on_timer, c);
    if (!c->multi || !c->timer) {
        set_err(err, "http client: cannot create the curl multi handle or its timer");
        goto fail;
    }
    if (curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_host) != CURLM_OK ||
        /* without a fixed cache size curl keeps 4x the transfers in flight and closes
         * connections whenever load dips, paying a new handshake every few requests */
        curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, max_host * 4) != CURLM_OK) {
        set_err(err, "http client: cannot configure the curl multi handle");
        goto fail;
    }
    return c;
fail:
    if (c->multi)
        curl_multi_cleanup(c->multi);
    if (c->timer)
        event_free(c->timer);
    free(c);
    return NULL;
}

static void client_destroy(http_client *c)
{
    /* Closing cached connections may still call the socket callback, so the watches and the timer
     * outlive the multi handle. */
    curl_multi_cleanup(c->multi);
    while (c->watches) {
        struct sock_watch *w = c->watches;
        c->watches = w->next;
        event_del(&w->ev);
        free(w);
    }
    event_free(c->timer);
    free(c);
}

void http_request_cancel(http_request *r)
{
    if (!r || r->state == REQ_CALLING)
        return; /* its callback is running; the request is freed when it returns */
    http_client *c = r->c;
    if (r->state == REQ_ACTIVE) {
        list_remove(&c->active, r);
        if (r->easy)
            curl_multi_remove_handle(c->multi, r->easy);
    } else {
        list_remove(&c->done, r);
    }
    request_free(r);
}

void http_client_free(http_client *c)
{
    if (!c || c->closing)
        return;
    c->closing = 1;
    while (c->active.head)
        http_request_cancel(c->active.head);
    while (c->done.head)
        http_request_cancel(c->done.head);
    if (!c->dispatching)
        client_destroy(c); /* else drain() destroys it when the running callback returns */
}

int http_client_pending(const http_client *c)
{
    return c ? c->active.count + c->done.count : 0;
}

/* ---- fake transport (teams.testing) ------------------------------------------------------ */

static void fake_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    http_request *r = arg;
    http_client *c = r->c;
    list_remove(&c->active, r);
    r->state = REQ_CALLING;
    http_response res = {
        .status = r->fake_error ? 0 : r->status,
        .transport_error = r->fake_error,
        .timed_out = r->fake_timed_out,
        .error = r->fake_error ? (r->fake_timed_out ? "Operation timed out (fake)"
                                                    : "Connection reset by peer (fake)") : "",
        .body = r->buf ? r->buf : "",
        .body_len = r->buf ? r->len : 0,
        .retry_after = r->retry_after,
        .correlation_id = r->correlation_id,
        .resends = r->sends,
    };
    r->on_done(&res, r->ud);
    request_free(r);
}

static http_request *fake_request(http_client *c, const char *method, const char *url,
                                  const char *const *headers, const char *body, size_t body_len,
                                  long timeout_ms, http_done_fn on_done, void *ud, char **err)
{
    http_request *r = calloc(1, sizeof *r);
    if (!r || !(r->fake_ev = evtimer_new(c->base, fake_fire, r))) {
        free(r);
        set_err(err, "http client: out of memory");
        return NULL;
    }
    r->c = c;
    r->on_done = on_done;
    r->ud = ud;
    http_fake_answer a = {0};
    c->fake(method, url, headers, body, body_len, &a, c->fake_ud);
    r->status = a.status;
    r->buf = a.body;
    r->len = a.body ? strlen(a.body) : 0;
    r->retry_after = a.retry_after;
    r->correlation_id = a.correlation_id;
    r->sends = a.resends;         /* the fake has no connections: it says what to report */
    r->fake_error = a.reset || a.timeout ? CURLE_RECV_ERROR : 0;
    if (a.timeout) {
        r->fake_error = CURLE_OPERATION_TIMEDOUT;
        r->fake_timed_out = 1;
        a.delay_ms = timeout_ms;
    }
    r->state = REQ_ACTIVE;
    list_append(&c->active, r);
    /* like the real transport, the answer comes on a later loop turn, never inside this call */
    clock_timer_add(r->fake_ev, a.delay_ms > 0 ? a.delay_ms : 0);
    return r;
}

void http_client_set_fake(http_client *c, http_fake_fn fn, void *ud)
{
    c->fake = fn;
    c->fake_ud = ud;
}

/* Accepts only URLs whose scheme the client may use, before libcurl sees them, so a forbidden
 * scheme fails at start with a clear message rather than later as CURLE_UNSUPPORTED_PROTOCOL. */
static int scheme_allowed(const http_client *c, const char *url)
{
    if (strncasecmp(url, "https://", 8) == 0)
        return 1;
    return c->allow_http && strncasecmp(url, "http://", 7) == 0;
}

http_request *http_client_request(http_client *c, const char *method, const char *url,
                                  const char *const *headers, const char *body, size_t body_len,
                                  long timeout_ms, http_done_fn on_done, void *ud, char **err)
{
    if (!c || !method || !url || !on_done) {
        set_err(err, "http client: missing client, method, url or callback");
        return NULL;
    }
    if (c->closing) {
        set_err(err, "http client: closing");
        return NULL;
    }
    if (!scheme_allowed(c, url)) {
        set_err(err, "http client: refusing %s: only %s URLs are allowed", url,
                c->allow_http ? "http:// and https://" : "https://");
        return NULL;
    }
    int is_get = strcmp(method, "GET") == 0, is_post = strcmp(method, "POST") == 0;
    int is_put = strcmp(method, "PUT") == 0, is_delete = strcmp(method, "DELETE") == 0;
    if (!is_get && !is_post && !is_put && !is_delete) {
        set_err(err, "http client: unsupported method %s", method);
        return NULL;
    }
    if (is_get && body && body_len) {
        set_err(err, "http client: a GET request takes no body");
        return NULL;
    }
    if (timeout_ms <= 0)
        timeout_ms = HTTP_CLIENT_DEFAULT_TIMEOUT_MS;
    if (c->fake)
        return fake_request(c, method, url, headers, body, body_len, timeout_ms, on_done, ud, err);

    http_request *r = calloc(1, sizeof *r);
    if (!r) {
        set_err(err, "http client: out of memory");
        return NULL;
    }
    r->c = c;
    r->on_done = on_done;
    r->ud = ud;
    r->easy = curl_easy_init();
    if (!r->easy)
        goto oom;
    for (const char *const *h = headers; h && *h; h++) {
        struct curl_slist *l = curl_slist_append(r->headers, *h);
        if (!l)
            goto oom;
        r->headers = l;
    }
    /* An empty Expect suppresses "Expect: 100-continue", which costs a round trip on large bodies. */
    struct curl_slist *l = curl_slist_append(r->headers, "Expect:");
    if (!l)
        goto oom;
    r->headers = l;
    if (body || !is_get) {
        r->req_body = malloc(body_len ? body_len : 1);
        if (!r->req_body)
            goto oom;
        if (body_len)
            memcpy(r->req_body, body, body_len);
    }

    CURL *e = r->easy;
    CURLcode rc = CURLE_OK;
#define SETOPT(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); } while (0)
    SETOPT(CURLOPT_URL, url);
    SETOPT(CURLOPT_PRIVATE, (void *)r);
    SETOPT(CURLOPT_ERRORBUFFER, r->errbuf);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_PROTOCOLS_STR, c->allow_http ? "http,https" : "https");
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(CURLOPT_TIMEOUT_MS, timeout_ms);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    SETOPT(CURLOPT_HTTPHEADER, r->headers);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, (void *)r);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, (void *)r);
    SETOPT(CURLOPT_PREREQFUNCTION, on_prereq);
    SETOPT(CURLOPT_PREREQDATA, (void *)r);
    if (is_get) {
        SETOPT(CURLOPT_HTTPGET, 1L);
    } else if (is_delete && !body_len) {
        SETOPT(CURLOPT_CUSTOMREQUEST, "DELETE");
    } else {
        /* POST semantics carry the body; CUSTOMREQUEST only renames the method. */
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        SETOPT(CURLOPT_POSTFIELDS, r->req_body);
        if (!is_post)
            SETOPT(CURLOPT_CUSTOMREQUEST, method);
    }
#undef SETOPT
    if (rc != CURLE_OK) {
        set_err(err, "http client: cannot configure request: %s", curl_easy_strerror(rc));
        request_free(r);
        return NULL;
    }
    /* Adding only arms the timer (0 ms): the transfer starts on the next loop iteration, so on_done
     * never runs before this function returns. */
    CURLMcode mc = curl_multi_add_handle(c->multi, e);
    if (mc != CURLM_OK) {
        set_err(err, "http client: cannot start request: %s", curl_multi_strerror(mc));
        request_free(r);
        return NULL;
    }
    r->state = REQ_ACTIVE;
    list_append(&c->active, r);
    return r;
oom:
    set_err(err, "http client: out of memory");
    request_free(r);
    return NULL;
}
