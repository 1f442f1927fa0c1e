/* test_connector.c — connector: id encoding, error classification for every code path, and calls
 * end to end against an in-process fake Bot Connector (evhttp on 127.0.0.1, same event_base). */
#include "connector.h"
#include "http_client.h"
#include "trust.h"
#include "unit.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- classification ---- */

typedef struct classified {
    int ok;
    long status;
    char code[64], message[512], error_code[128], sub_code[128];
    int has_error_code, has_sub_code;
} classified;

static classified classify_full(const http_response *hr, long timeout_ms)
{
    connector_result res;
    char *owned[4];
    memset(&res, 0xAB, sizeof res); /* classify must set every field it owns */
    connector_classify(hr, timeout_ms, &res, owned);
    classified out = {.ok = res.ok, .status = res.status};
    snprintf(out.code, sizeof out.code, "%s", res.code ? res.code : "(null)");
    snprintf(out.message, sizeof out.message, "%s", res.message ? res.message : "(null)");
    out.has_error_code = res.error_code != NULL;
    out.has_sub_code = res.error_sub_code != NULL;
    snprintf(out.error_code, sizeof out.error_code, "%s", res.error_code ? res.error_code : "");
    snprintf(out.sub_code, sizeof out.sub_code, "%s", res.error_sub_code ? res.error_sub_code : "");
    for (int i = 0; i < 4; i++)
        free(owned[i]);
    return out;
}

static classified classify_len(long status, const char *body, size_t len)
{
    http_response hr = {.status = status, .error = "", .body = body, .body_len = len};
    return classify_full(&hr, 15000);
}

static classified classify(long status, const char *body)
{
    return classify_len(status, body, strlen(body));
}

static void test_encode_id(void)
{
    char *s = connector_encode_id("a:1 b/c@d;e=f,g~._-");
    CHECK_STR(s, "a%3A1%20b%2Fc%40d%3Be%3Df%2Cg~._-");
    free(s);
    s = connector_encode_id("19:abc@thread.tacv2;messageid=1700000000000");
    CHECK_STR(s, "19%3Aabc%40thread.tacv2%3Bmessageid%3D1700000000000");
    free(s);
    s = connector_encode_id("ABCxyz0189");
    CHECK_STR(s, "ABCxyz0189");
    free(s);
    s = connector_encode_id("caf\xc3\xa9?#%+&\x01\x7f\xff");
    CHECK_STR(s, "caf%C3%A9%3F%23%25%2B%26%01%7F%FF");
    free(s);
    s = connector_encode_id("");
    CHECK_STR(s, "");
    free(s);
    CHECK(connector_encode_id(NULL) == NULL);
}

static void test_classify_not_found(void)
{
    classified c = classify(404, "{\"error\":{\"code\":\"ConversationNotFound\",\"message\":\"Conversation not found\"}}");
    CHECK_INT(c.ok, 0);
    CHECK_INT(c.status, 404);
    CHECK_STR(c.code, CONNECTOR_NOT_FOUND);
    CHECK_STR(c.error_code, "ConversationNotFound");
    CHECK_INT(c.has_sub_code, 0);
    CHECK_STR(c.message, "connector 404 ConversationNotFound: Conversation not found");
}

static void test_classify_message_writes_blocked(void)
{
    classified c = classify(403,
        "{\"errorCode\":209,\"message\":\"{\\r\\n  \\\"subCode\\\": \\\"MessageWritesBlocked\\\",\\r\\n"
        "  \\\"details\\\": \\\"Thread is blocked from message writes.\\\",\\r\\n  \\\"errorCode\\\": null,\\r\\n"
        "  \\\"errorSubCode\\\": null\\r\\n}\"}");
    CHECK_STR(c.code, CONNECTOR_BLOCKED);
    CHECK_STR(c.sub_code, "MessageWritesBlocked");
    CHECK_INT(c.has_error_code, 0);
    CHECK_STR(c.message, "connector 403 MessageWritesBlocked: Thread is blocked from message writes.");
}

static void test_classify_blocked_codes(void)
{
    static const char *const codes[] = {"ConversationBlockedByUser", "BotNotInConversationRoster",
                                        "BotDisabledByAdmin"};
    for (int i = 0; i < 3; i++) {
        char body[256], want[256];
        snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"nope\"}}", codes[i]);
        classified c = classify(403, body);
        CHECK_STR(c.code, CONNECTOR_BLOCKED);
        CHECK_STR(c.error_code, codes[i]);
        snprintf(want, sizeof want, "connector 403 %s: nope", codes[i]);
        CHECK_STR(c.message, want);
        /* The same codes under another status are not "blocked". */
        c = classify(400, body);
        CHECK_STR(c.code, CONNECTOR_REJECTED);
    }
}

static void test_classify_forbidden(void)
{
    classified c = classify(403, "{\"error\":{\"code\":\"ForbiddenOperationException\","
                                 "\"message\":\"Bot isn't installed in user's personal scope\"}}");
    CHECK_STR(c.code, CONNECTOR_FORBIDDEN);
    CHECK_STR(c.message, "connector 403 ForbiddenOperationException: Bot isn't installed in user's personal scope");
    c = classify(403, "{\"error\":{\"code\":\"BadArgument\",\"message\":\"(BadArgument) Bot is not installed in user's personal scope\"}}");
    CHECK_STR(c.code, CONNECTOR_FORBIDDEN);
    c = classify(403, "");
    CHECK_STR(c.code, CONNECTOR_FORBIDDEN);
    CHECK_STR(c.message, "connector 403 (empty body)");
    CHECK_INT(c.has_error_code, 0);
    CHECK_INT(c.has_sub_code, 0);
    c = classify(403, " \r\n");
    CHECK_STR(c.code, CONNECTOR_FORBIDDEN);
    CHECK_STR(c.message, "connector 403 (empty body)");
    http_response null_body = {.status = 403, .error = ""};
    c = classify_full(&null_body, 1);
    CHECK_STR(c.code, CONNECTOR_FORBIDDEN);
    /* A nested message that is not a block is still just forbidden. */
    c = classify(403, "{\"errorCode\":209,\"message\":\"{\\\"subCode\\\":\\\"Other\\\",\\\"details\\\":\\\"d\\\"}\"}");
    CHECK_STR(c.code, CONNECTOR_FORBIDDEN);
    CHECK_STR(c.message, "connector 403 Other: d");
}

static void test_classify_statuses(void)
{
    static const struct { long status; const char *code; } cases[] = {
        {400, CONNECTOR_REJECTED},     {401, CONNECTOR_UNAUTHORIZED}, {404, CONNECTOR_NOT_FOUND},
        {405, CONNECTOR_REJECTED},     {412, CONNECTOR_REJECTED},     {413, CONNECTOR_TOO_LARGE},
        {429, CONNECTOR_THROTTLED},    {500, CONNECTOR_UNAVAILABLE},  {501, CONNECTOR_REJECTED},
        {502, CONNECTOR_UNAVAILABLE},  {503, CONNECTOR_UNAVAILABLE},  {504, CONNECTOR_UNAVAILABLE},
        {302, CONNECTOR_REJECTED},     {100, CONNECTOR_REJECTED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        classified c = classify(cases[i].status, "");
        CHECK_STR(c.code, cases[i].code);
        CHECK_INT(c.status, cases[i].status);
        CHECK_INT(c.ok, 0);
    }
    classified c = classify(413, "{\"error\":{\"code\":\"MessageSizeTooBig\",\"message\":\"Message size too large.\"}}");
    CHECK_STR(c.message, "connector 413 MessageSizeTooBig: Message size too large.");
    c = classify(429, "{\"error\":{\"code\":\"Throttled\",\"message\":\"Too many requests.\"}}");
    CHECK_STR(c.code, CONNECTOR_THROTTLED);
    c = classify(401, "{\"message\":\"Authorization has been denied for this request.\"}");
    CHECK_STR(c.code, CONNECTOR_UNAUTHORIZED);
    CHECK_STR(c.message, "connector 401: Authorization has been denied for this request.");
    c = classify(501, "{\"error\":{\"code\":\"DeleteActivityAPINotImplemented\",\"message\":\"Delete is not implemented\"}}");
    CHECK_STR(c.code, CONNECTOR_REJECTED);
    CHECK_STR(c.error_code, "DeleteActivityAPINotImplemented");
    CHECK_STR(c.message, "connector 501 DeleteActivityAPINotImplemented: Delete is not implemented");
    c = classify(500, "{\"error\":{\"code\":\"ServiceError\"}}");
    CHECK_STR(c.code, CONNECTOR_UNAVAILABLE);
    CHECK_STR(c.message, "connector 500 ServiceError");
    for (long s = 200; s <= 204; s++) {
        c = classify(s, "{\"id\":\"x\"}");
        CHECK_INT(c.ok, 1);
        CHECK_STR(c.code, "(null)");
    }
}

static void test_classify_html_and_garbage(void)
{
    classified c = classify(404,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>\n"
        "</head>\n<body>\n<pre>Cannot POST /v3/conversations/x/activities</pre>\n</body>\n</html>\n");
    CHECK_STR(c.code, CONNECTOR_NOT_FOUND);
    CHECK_STR(c.message, "connector 404: Error Cannot POST /v3/conversations/x/activities");
    c = classify(502, "<html><body><h1>502 Bad Gateway</h1></body></html>");
    CHECK_STR(c.code, CONNECTOR_UNAVAILABLE);
    CHECK_STR(c.message, "connector 502: 502 Bad Gateway");
    c = classify(400, "{\"error\":{\"code\":\"Conversa");
    CHECK_STR(c.code, CONNECTOR_REJECTED);
    CHECK_STR(c.message, "connector 400: {\"error\":{\"code\":\"Conversa");
    CHECK_INT(c.has_error_code, 0);
    c = classify(400, "[1,2]");
    CHECK_STR(c.message, "connector 400: [1,2]");
    c = classify(400, "null");
    CHECK_STR(c.message, "connector 400: null");
    c = classify(400, "{\"error\":\"boom\"}");
    CHECK_STR(c.message, "connector 400: {\"error\":\"boom\"}");
    c = classify(400, "{\"error\":{\"code\":42,\"message\":[\"x\"]}}");
    CHECK_STR(c.code, CONNECTOR_REJECTED);
    CHECK_INT(c.has_error_code, 0);
    c = classify(403, "{\"errorCode\":209,\"message\":\"{not json at all\"}");
    CHECK_STR(c.code, CONNECTOR_FORBIDDEN);
    CHECK_STR(c.message, "connector 403: {not json at all");
    c = classify(403, "{\"errorCode\":209,\"message\":\"{\\\"subCode\\\": 5}\"}");
    CHECK_STR(c.code, CONNECTOR_FORBIDDEN);
    c = classify(400, "{\"error\":{\"code\":\"Bad\",\"message\":\"line1\\r\\nline2\\ttab\"}}");
    CHECK_STR(c.message, "connector 400 Bad: line1 line2 tab");
    /* Binary garbage with NULs and invalid UTF-8 stays one printable line. */
    static const char bin[] = "\x00\xff\xfe{\x01garbage\xc3\x28\n\x80z";
    c = classify_len(500, bin, sizeof bin - 1);
    CHECK_STR(c.code, CONNECTOR_UNAVAILABLE);
    CHECK_STR(c.message, "connector 500: ??{ garbage?( ?z");
}

static void test_classify_long_message_truncated(void)
{
    char body[4096];
    int n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"BadArgument\",\"message\":\"");
    for (int i = 0; i < 1000; i++)
        body[n++] = (char)('a' + i % 26);
    snprintf(body + n, sizeof body - (size_t)n, "\"}}");
    classified c = classify(400, body);
    CHECK(strlen(c.message) <= 300);
    CHECK(strncmp(c.message, "connector 400 BadArgument: abcdef", 33) == 0);
    CHECK(strcmp(c.message + strlen(c.message) - 3, "...") == 0);
    /* Cut on a character boundary: 2-byte characters never end up split. */
    n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"X\",\"message\":\"");
    for (int i = 0; i < 500; i++) {
        body[n++] = '\xc3';
        body[n++] = '\xa9';
    }
    snprintf(body + n, sizeof body - (size_t)n, "\"}}");
    c = classify(400, body);
    size_t len = strlen(c.message);
    CHECK(len <= 300);
    CHECK(strcmp(c.message + len - 3, "...") == 0);
    CHECK((unsigned char)c.message[len - 4] == 0xa9);
    /* A huge HTML page is fine too. */
    char *page = malloc(1 << 20);
    memset(page, 'p', 1 << 20);
    memcpy(page, "<html>", 6);
    c = classify_len(503, page, 1 << 20);
    CHECK_STR(c.code, CONNECTOR_UNAVAILABLE);
    CHECK(strlen(c.message) <= 300);
    free(page);
}

static void test_classify_transport(void)
{
    http_response hr = {.transport_error = CURLE_OPERATION_TIMEDOUT, .timed_out = 1,
                        .error = "Operation timed out after 15001 milliseconds with 0 bytes received",
                        .body = ""};
    classified c = classify_full(&hr, 15000);
    CHECK_STR(c.code, CONNECTOR_TIMEOUT);
    CHECK_STR(c.message, "connector timeout after 15000 ms");
    CHECK_INT(c.status, 0);
    CHECK_INT(c.ok, 0);
    http_response net = {.transport_error = CURLE_COULDNT_CONNECT,
                         .error = "Failed to connect to 127.0.0.1 port 9: Connection refused", .body = ""};
    c = classify_full(&net, 15000);
    CHECK_STR(c.code, CONNECTOR_NETWORK);
    CHECK_STR(c.message, "connector network error: Failed to connect to 127.0.0.1 port 9: Connection refused");
    CHECK_INT(c.has_error_code, 0);
    http_response empty = {.transport_error = CURLE_RECV_ERROR, .error = "", .body = ""};
    c = classify_full(&empty, 15000);
    CHECK_STR(c.code, CONNECTOR_NETWORK);
    CHECK_STR(c.message, "connector network error: unknown");
}

/* ---- the fake connector ---- */

static struct event_base *base;
static struct evhttp *server;
static int port;
static http_client *http;
static connector *conn;

/* What the last request carried. */
static struct {
    int count;
    char method[16], uri[512], body[4096];
    char content_type[128], accept[128], user_agent[128], authorization[256];
    int has_authorization, has_content_type;
} seen;

/* What the next answer is. */
static int next_status;
static const char *next_body;
static const char *next_headers[4]; /* "Name", "value" pairs */

#define MAX_HUNG 4
static struct evhttp_request *hung[MAX_HUNG];
static int n_hung;

static void copy_header(struct evkeyvalq *h, const char *name, char *dst, size_t n, int *present)
{
    const char *v = evhttp_find_header(h, name);
    snprintf(dst, n, "%s", v ? v : "");
    if (present)
        *present = v != NULL;
}

static void handle(struct evhttp_request *req, void *arg)
{
    seen.count++;
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET: snprintf(seen.method, sizeof seen.method, "GET"); break;
    case EVHTTP_REQ_POST: snprintf(seen.method, sizeof seen.method, "POST"); break;
    case EVHTTP_REQ_PUT: snprintf(seen.method, sizeof seen.method, "PUT"); break;
    case EVHTTP_REQ_DELETE: snprintf(seen.method, sizeof seen.method, "DELETE"); break;
    default: snprintf(seen.method, sizeof seen.method, "OTHER"); break;
    }
    snprintf(seen.uri, sizeof seen.uri, "%s", evhttp_request_get_uri(req));
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    copy_header(in, "Content-Type", seen.content_type, sizeof seen.content_type, &seen.has_content_type);
    copy_header(in, "Accept", seen.accept, sizeof seen.accept, NULL);
    copy_header(in, "User-Agent", seen.user_agent, sizeof seen.user_agent, NULL);
    copy_header(in, "Authorization", seen.authorization, sizeof seen.authorization, &seen.has_authorization);
    struct evbuffer *ib = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(ib);
    if (n >= sizeof seen.body)
        n = sizeof seen.body - 1;
    evbuffer_copyout(ib, seen.body, n);
    seen.body[n] = '\0';
    if (strncmp(seen.uri, "/hang/", 6) == 0) {
        if (n_hung < MAX_HUNG)
            hung[n_hung++] = req;
        return;
    }
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    for (int i = 0; i + 1 < 4 && next_headers[i]; i += 2)
        evhttp_add_header(out, next_headers[i], next_headers[i + 1]);
    struct evbuffer *b = evbuffer_new();
    if (next_body)
        evbuffer_add(b, next_body, strlen(next_body));
    evhttp_send_reply(req, next_status, "X", b);
    evbuffer_free(b);
}

static void respond(int status, const char *body)
{
    next_status = status;
    next_body = body;
    memset(next_headers, 0, sizeof next_headers);
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
    http_client_config hcfg = {.allow_http = 1};
    http = http_client_new(base, &hcfg, NULL);
    connector_config ccfg = {.request_timeout_ms = 5000, .user_agent = "herald-test/1"};
    conn = connector_new(http, &ccfg);
    memset(&seen, 0, sizeof seen);
    n_hung = 0;
    respond(200, "");
}

static void teardown(void)
{
    connector_free(conn);
    http_client_free(http);
    for (int i = 0; i < n_hung; i++)
        evhttp_send_reply(hung[i], 200, "late", NULL);
    evhttp_free(server);
    event_base_free(base);
}

static void on_guard(evutil_socket_t fd, short what, void *arg) { *(int *)arg = 1; }

/* Runs the loop until *counter reaches target or unit_tf_ms(ms) pass. */
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

typedef struct got {
    int calls, ok;
    long status;
    char *code, *message, *error_code, *sub_code, *activity_id, *conversation_id, *service_url;
    char *retry_after, *correlation_id, *body;
} got;

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void got_clear(got *g)
{
    free(g->code);
    free(g->message);
    free(g->error_code);
    free(g->sub_code);
    free(g->activity_id);
    free(g->conversation_id);
    free(g->service_url);
    free(g->retry_after);
    free(g->correlation_id);
    free(g->body);
    memset(g, 0, sizeof *g);
}

static void on_got(const connector_result *r, void *ud)
{
    got *g = ud;
    int calls = g->calls;
    got_clear(g);
    g->calls = calls + 1;
    g->ok = r->ok;
    g->status = r->status;
    g->code = dup_or_null(r->code);
    g->message = dup_or_null(r->message);
    g->error_code = dup_or_null(r->error_code);
    g->sub_code = dup_or_null(r->error_sub_code);
    g->activity_id = dup_or_null(r->activity_id);
    g->conversation_id = dup_or_null(r->conversation_id);
    g->service_url = dup_or_null(r->service_url);
    g->retry_after = dup_or_null(r->retry_after);
    g->correlation_id = dup_or_null(r->correlation_id);
    g->body = dup_or_null(r->body);
}

static const char *service_url(const char *path)
{
    static char buf[4][256];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, 256, "http://127.0.0.1:%d%s", port, path);
    return b;
}

/* A destination with no seal. */
#define TO(url) (&(connector_dest){.service_url = (url)})

#define ACTIVITY "{\"type\":\"message\",\"text\":\"hi\"}"

static void test_send(void)
{
    setup();
    got g = {0};
    respond(201, "{\"id\":\"1700000000001\"}");
    next_headers[0] = "X-Correlating-OperationId";
    next_headers[1] = "op-42";
    char *err = NULL;
    connector_call *call = connector_send(conn, TO(service_url("/amer/")), "a:1 b/c@d;e=f,g~._-", NULL,
                                          ACTIVITY, strlen(ACTIVITY), on_got, &g, &err);
    CHECK(call != NULL);
    CHECK(err == NULL);
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_STR(seen.method, "POST");
    CHECK_STR(seen.uri, "/amer/v3/conversations/a%3A1%20b%2Fc%40d%3Be%3Df%2Cg~._-/activities");
    CHECK_STR(seen.content_type, "application/json; charset=utf-8");
    CHECK_STR(seen.accept, "application/json");
    CHECK_STR(seen.user_agent, "herald-test/1");
    CHECK_INT(seen.has_authorization, 0);
    CHECK_STR(seen.body, ACTIVITY);
    CHECK_INT(g.ok, 1);
    CHECK_INT(g.status, 201);
    CHECK(g.code == NULL);
    CHECK(g.message == NULL);
    CHECK_STR(g.activity_id, "1700000000001");
    CHECK(g.conversation_id == NULL);
    CHECK_STR(g.correlation_id, "op-42");
    CHECK_STR(g.body, "{\"id\":\"1700000000001\"}");
    got_clear(&g);

    /* With a token, and a service URL without the trailing slash and with several. */
    connector_set_token(conn, "tok-abc.def");
    respond(200, "{\"id\":\"2\"}");
    CHECK(connector_send(conn, TO(service_url("/amer")), "19:x@thread.tacv2", NULL, ACTIVITY,
                         strlen(ACTIVITY), on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_STR(seen.uri, "/amer/v3/conversations/19%3Ax%40thread.tacv2/activities");
    CHECK_INT(seen.has_authorization, 1);
    CHECK_STR(seen.authorization, "Bearer tok-abc.def");
    CHECK_STR(g.activity_id, "2");
    got_clear(&g);
    connector_set_token(conn, NULL);
    CHECK(connector_send(conn, TO(service_url("/amer///")), "c", "", ACTIVITY, strlen(ACTIVITY), on_got,
                         &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_STR(seen.uri, "/amer/v3/conversations/c/activities"); /* "" reply_to_id: a plain send */
    CHECK_INT(seen.has_authorization, 0);
    got_clear(&g);
    teardown();
}

static void test_default_user_agent(void)
{
    setup();
    connector *c2 = connector_new(http, NULL);
    got g = {0};
    respond(200, "{\"id\":\"1\"}");
    CHECK(connector_send(c2, TO(service_url("/")), "c", NULL, "{}", 2, on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_STR(seen.uri, "/v3/conversations/c/activities");
    CHECK(strncmp(seen.user_agent, "herald/", 7) == 0);
    got_clear(&g);
    connector_free(c2);
    /* A token with a CR/LF would inject a header: it is dropped, not sent. */
    connector_set_token(conn, "tok\r\nX-Evil: 1");
    CHECK(connector_send(conn, TO(service_url("/")), "c", NULL, "{}", 2, on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_INT(seen.has_authorization, 0);
    got_clear(&g);
    teardown();
}

static void test_reply_update_delete(void)
{
    setup();
    got g = {0};
    respond(201, "{\"id\":\"r1\"}");
    CHECK(connector_send(conn, TO(service_url("/emea/")), "a:conv", "1699:x y", ACTIVITY, strlen(ACTIVITY),
                         on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_STR(seen.method, "POST");
    CHECK_STR(seen.uri, "/emea/v3/conversations/a%3Aconv/activities/1699%3Ax%20y");
    CHECK_STR(g.activity_id, "r1");
    got_clear(&g);

    respond(200, "{\"id\":\"u1\"}");
    CHECK(connector_update(conn, TO(service_url("/emea/")), "a:conv", "act/1", ACTIVITY, strlen(ACTIVITY),
                           on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_STR(seen.method, "PUT");
    CHECK_STR(seen.uri, "/emea/v3/conversations/a%3Aconv/activities/act%2F1");
    CHECK_STR(seen.content_type, "application/json; charset=utf-8");
    CHECK_STR(seen.body, ACTIVITY);
    CHECK_INT(g.ok, 1);
    CHECK_STR(g.activity_id, "u1");
    got_clear(&g);

    respond(200, ""); /* update answered with no body: the id we sent */
    CHECK(connector_update(conn, TO(service_url("/emea/")), "a:conv", "act/1", ACTIVITY, strlen(ACTIVITY),
                           on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_INT(g.ok, 1);
    CHECK_STR(g.activity_id, "act/1");
    got_clear(&g);

    respond(200, "");
    CHECK(connector_delete(conn, TO(service_url("/emea/")), "a:conv", "act:2", on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_STR(seen.method, "DELETE");
    CHECK_STR(seen.uri, "/emea/v3/conversations/a%3Aconv/activities/act%3A2");
    CHECK_INT(seen.has_content_type, 0);
    CHECK_STR(seen.accept, "application/json");
    CHECK_STR(seen.body, "");
    CHECK_INT(g.ok, 1);
    CHECK(g.code == NULL);
    CHECK_STR(g.body, "");
    got_clear(&g);

    respond(204, NULL);
    CHECK(connector_delete(conn, TO(service_url("/emea/")), "a:conv", "act:3", on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_INT(g.ok, 1);
    CHECK_INT(g.status, 204);
    got_clear(&g);

    respond(501, "{\"error\":{\"code\":\"DeleteActivityAPINotImplemented\",\"message\":\"Not implemented\"}}");
    CHECK(connector_delete(conn, TO(service_url("/emea/")), "a:conv", "act:4", on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_INT(g.ok, 0);
    CHECK_STR(g.code, CONNECTOR_REJECTED);
    CHECK_STR(g.error_code, "DeleteActivityAPINotImplemented");
    got_clear(&g);
    teardown();
}

static void test_create_conversation(void)
{
    setup();
    got g = {0};
    const char *params = "{\"isGroup\":true,\"channelData\":{\"channel\":{\"id\":\"19:abc@thread.tacv2\"}},"
                         "\"activity\":{\"type\":\"message\",\"text\":\"Hello channel\"}}";
    respond(201, "{\"id\":\"19:abc@thread.tacv2;messageid=1700000000000\",\"activityId\":\"1700000000000\","
                 "\"serviceUrl\":\"https://smba.trafficmanager.net/emea/\"}");
    CHECK(connector_create_conversation(conn, TO(service_url("/amer/")), params, strlen(params), on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_STR(seen.method, "POST");
    CHECK_STR(seen.uri, "/amer/v3/conversations");
    CHECK_STR(seen.body, params);
    CHECK_STR(seen.content_type, "application/json; charset=utf-8");
    CHECK_INT(g.ok, 1);
    CHECK_STR(g.conversation_id, "19:abc@thread.tacv2;messageid=1700000000000");
    CHECK_STR(g.activity_id, "1700000000000");
    CHECK_STR(g.service_url, "https://smba.trafficmanager.net/emea/");
    got_clear(&g);

    respond(201, "{\"id\":\"a:1qhNL\"}");
    CHECK(connector_create_conversation(conn, TO(service_url("/amer/")), "{}", 2, on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_INT(g.ok, 1);
    CHECK_STR(g.conversation_id, "a:1qhNL");
    CHECK(g.activity_id == NULL);
    CHECK(g.service_url == NULL);
    got_clear(&g);
    teardown();
}

static void test_bad_response(void)
{
    setup();
    got g = {0};
    static const char *const bodies[] = {"", "{}", "{\"id\":\"\"}", "{\"id\":7}", "<html>ok</html>", "[\"id\"]"};
    /* a send answered 2xx without an id was accepted (resending would duplicate it): ok, no id */
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        respond(i % 2 ? 200 : 202, bodies[i]);
        CHECK(connector_send(conn, TO(service_url("/")), "c", i % 3 ? NULL : "r", "{}", 2, on_got,
                             &g, NULL));
        CHECK(run_until(&g.calls, 1, 3000));
        CHECK_INT(g.ok, 1);
        CHECK_INT(g.status, i % 2 ? 200 : 202);
        CHECK(g.code == NULL);
        CHECK(g.activity_id == NULL);
        got_clear(&g);
    }
    /* a create without the conversation id has nothing to use */
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        respond(201, bodies[i]);
        CHECK(connector_create_conversation(conn, TO(service_url("/")), "{}", 2, on_got, &g, NULL));
        CHECK(run_until(&g.calls, 1, 3000));
        CHECK_INT(g.ok, 0);
        CHECK_INT(g.status, 201);
        CHECK_STR(g.code, CONNECTOR_BAD_RESPONSE);
        CHECK_STR(g.message, "connector 201: response has no \"id\"");
        got_clear(&g);
    }
    respond(200, "{\"activityId\":\"1\"}");
    CHECK(connector_create_conversation(conn, TO(service_url("/")), "{}", 2, on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_INT(g.ok, 0);
    CHECK_STR(g.code, CONNECTOR_BAD_RESPONSE);
    got_clear(&g);
    teardown();
}

static void test_errors_end_to_end(void)
{
    setup();
    got g = {0};
    respond(404, "{\"error\":{\"code\":\"ConversationNotFound\",\"message\":\"Conversation not found\"}}");
    next_headers[0] = "X-Correlating-OperationId";
    next_headers[1] = "corr-404";
    CHECK(connector_send(conn, TO(service_url("/amer/")), "a:gone", NULL, "{}", 2, on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_INT(g.ok, 0);
    CHECK_INT(g.status, 404);
    CHECK_STR(g.code, CONNECTOR_NOT_FOUND);
    CHECK_STR(g.error_code, "ConversationNotFound");
    CHECK(g.sub_code == NULL);
    CHECK_STR(g.message, "connector 404 ConversationNotFound: Conversation not found");
    CHECK_STR(g.correlation_id, "corr-404");
    CHECK(g.activity_id == NULL);
    got_clear(&g);

    respond(429, "{\"error\":{\"code\":\"Throttled\",\"message\":\"Too many requests.\"}}");
    next_headers[0] = "Retry-After";
    next_headers[1] = "2";
    CHECK(connector_send(conn, TO(service_url("/amer/")), "a:busy", NULL, "{}", 2, on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_STR(g.code, CONNECTOR_THROTTLED);
    CHECK_STR(g.retry_after, "2");
    got_clear(&g);

    respond(403, "{\"errorCode\":209,\"message\":\"{\\r\\n  \\\"subCode\\\": \\\"MessageWritesBlocked\\\",\\r\\n"
                 "  \\\"details\\\": \\\"Thread is blocked from message writes.\\\"\\r\\n}\"}");
    CHECK(connector_send(conn, TO(service_url("/amer/")), "a:blocked", NULL, "{}", 2, on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_STR(g.code, CONNECTOR_BLOCKED);
    CHECK_STR(g.sub_code, "MessageWritesBlocked");
    CHECK_STR(g.message, "connector 403 MessageWritesBlocked: Thread is blocked from message writes.");
    got_clear(&g);
    teardown();
}

static void test_transport_failures(void)
{
    setup();
    got g = {0};
    /* The fake holds /hang/... requests without answering. */
    connector_config cfg = {.request_timeout_ms = 200};
    connector *fast = connector_new(http, &cfg);
    CHECK(connector_send(fast, TO(service_url("/hang/")), "c", NULL, "{}", 2, on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_INT(g.ok, 0);
    CHECK_INT(g.status, 0);
    CHECK_STR(g.code, CONNECTOR_TIMEOUT);
    CHECK_STR(g.message, "connector timeout after 200 ms");
    got_clear(&g);
    connector_free(fast);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0);
    socklen_t len = sizeof sin;
    getsockname(fd, (struct sockaddr *)&sin, &len);
    char u[64], want[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/", ntohs(sin.sin_port));
    CHECK(connector_delete(conn, TO(u), "c", "a", on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_STR(g.code, CONNECTOR_NETWORK);
    snprintf(want, sizeof want, "connector network error: Failed to connect to 127.0.0.1 port %d",
             ntohs(sin.sin_port));
    CHECK(g.message && strncmp(g.message, want, strlen(want)) == 0);
    CHECK(g.message && strstr(g.message, "Connection refused") != NULL);
    got_clear(&g);
    close(fd);
    teardown();
}

static void test_cancel_and_free(void)
{
    setup();
    got a = {0}, b = {0}, d = {0};
    connector_call *ca = connector_send(conn, TO(service_url("/")), "c", NULL, "{}", 2, on_got, &a, NULL);
    CHECK(ca != NULL);
    connector_cancel(ca);
    connector_call *cb = connector_send(conn, TO(service_url("/hang/")), "c", NULL, "{}", 2, on_got, &b, NULL);
    CHECK(cb != NULL);
    CHECK(run_until(&n_hung, 1, 3000));
    connector_cancel(cb);
    CHECK_INT(http_client_pending(http), 0);
    respond(200, "{\"id\":\"1\"}");
    CHECK(connector_send(conn, TO(service_url("/")), "c", NULL, "{}", 2, on_got, &d, NULL));
    CHECK(run_until(&d.calls, 1, 3000));
    CHECK_INT(a.calls, 0);
    CHECK_INT(b.calls, 0);
    got_clear(&d);
    /* Freed with calls in flight: no callback, nothing leaked. */
    connector *c2 = connector_new(http, NULL);
    CHECK(connector_send(c2, TO(service_url("/hang/")), "c", NULL, "{}", 2, on_got, &a, NULL));
    CHECK(connector_update(c2, TO(service_url("/")), "c", "1", "{}", 2, on_got, &a, NULL));
    CHECK_INT(http_client_pending(http), 2);
    connector_free(c2);
    CHECK_INT(http_client_pending(http), 0);
    respond(200, "{\"id\":\"2\"}");
    CHECK(connector_send(conn, TO(service_url("/")), "c", NULL, "{}", 2, on_got, &d, NULL));
    CHECK(run_until(&d.calls, 1, 3000));
    got_clear(&d);
    CHECK_INT(a.calls, 0);
    teardown();
}

static void test_argument_errors(void)
{
    setup();
    got g = {0};
    char *err = NULL;
    CHECK(connector_send(conn, TO(service_url("/")), NULL, NULL, "{}", 2, on_got, &g, &err) == NULL);
    CHECK(err != NULL);
    free(err);
    err = NULL;
    CHECK(connector_send(conn, TO(service_url("/")), "", NULL, "{}", 2, on_got, &g, &err) == NULL);
    free(err);
    err = NULL;
    CHECK(connector_update(conn, TO(service_url("/")), "c", NULL, "{}", 2, on_got, &g, &err) == NULL);
    free(err);
    err = NULL;
    CHECK(connector_delete(conn, TO(service_url("/")), "c", "", on_got, &g, &err) == NULL);
    free(err);
    err = NULL;
    CHECK(connector_create_conversation(conn, TO("///"), "{}", 2, on_got, &g, &err) == NULL);
    CHECK(err && strstr(err, "service URL") != NULL);
    free(err);
    err = NULL;
    CHECK(connector_send(conn, TO("ftp://x/"), "c", NULL, "{}", 2, on_got, &g, &err) == NULL);
    CHECK(err != NULL);
    free(err);
    /* A production client (https only) refuses a plain-http service URL at start. */
    http_client *strict = http_client_new(base, NULL, NULL);
    connector *sc = connector_new(strict, NULL);
    err = NULL;
    CHECK(connector_send(sc, TO(service_url("/")), "c", NULL, "{}", 2, on_got, &g, &err) == NULL);
    CHECK(err && strstr(err, "https") != NULL);
    free(err);
    connector_free(sc);
    http_client_free(strict);
    CHECK_INT(g.calls, 0);
    CHECK_INT(seen.count, 0);
    teardown();
}

/* With a trust set, every call is checked where the token is attached: the loopback fake is not
 * the cloud's host, so only a valid seal lets a call through; refusals never reach the network. */
static void test_trust_checked_at_the_call(void)
{
    setup();
    connector *tc = connector_new(http, &(connector_config){.base = base, .request_timeout_ms = 5000});
    trust *t = trust_new("https://smba.trafficmanager.net/teams/", NULL, (const unsigned char *)"k", 1);
    CHECK_INT(connector_set_trust(conn, t), -1);   /* no base to deliver a refusal on */
    CHECK_INT(connector_set_trust(tc, t), 0);
    const char *url = service_url("/amer/");
    char seal[65], other[65];
    CHECK_INT(trust_seal(t, "a:c", url, seal), 0);
    CHECK_INT(trust_seal(t, "a:c", service_url("/emea/"), other), 0);
    const connector_dest refused[] = {
        {url, NULL, NULL}, {url, "a:c", NULL}, {url, "a:c", other}, {url, "a:d", seal},
        {url, "a:c", "0000000000000000000000000000000000000000000000000000000000000000"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        got g = {0};
        char *err = NULL;
        CHECK(connector_send(tc, &refused[i], "a:c", NULL, "{}", 2, on_got, &g, &err) != NULL);
        CHECK(err == NULL);
        CHECK_INT(g.calls, 0);                       /* delivered on a later turn */
        CHECK(run_until(&g.calls, 1, 3000));
        CHECK_STR(g.code, CONNECTOR_UNTRUSTED);
        CHECK_INT(g.status, 0);
        CHECK(g.message && strstr(g.message, "is not trusted") != NULL);
        got_clear(&g);
    }
    got g = {0};
    CHECK(connector_get(tc, &(connector_dest){url, "a:c", NULL}, "/v3/x", on_got, &g, NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_STR(g.code, CONNECTOR_UNTRUSTED);
    got_clear(&g);
    /* a refused call can be cancelled before its refusal is delivered */
    connector_cancel(connector_delete(tc, TO(url), "a:c", "1", on_got, &g, NULL));
    CHECK_INT(seen.count, 0);
    respond(201, "{\"id\":\"9\"}");
    CHECK(connector_send(tc, &(connector_dest){url, "a:c", seal}, "a:c", NULL, "{}", 2, on_got, &g,
                         NULL));
    CHECK(run_until(&g.calls, 1, 3000));
    CHECK_INT(g.ok, 1);
    CHECK_INT(seen.count, 1);
    got_clear(&g);
    /* a read path cannot move the authority */
    char *err = NULL;
    CHECK(connector_get(conn, TO(url), "@127.0.0.2/v3", on_got, &g, &err) == NULL);
    CHECK(err != NULL);
    free(err);
    connector_free(tc);
    trust_free(t);
    teardown();
}

UNIT_MAIN("connector",
          CASE(test_encode_id),
          CASE(test_classify_not_found),
          CASE(test_classify_message_writes_blocked),
          CASE(test_classify_blocked_codes),
          CASE(test_classify_forbidden),
          CASE(test_classify_statuses),
          CASE(test_classify_html_and_garbage),
          CASE(test_classify_long_message_truncated),
          CASE(test_classify_transport),
          CASE(test_send),
          CASE(test_default_user_agent),
          CASE(test_reply_update_delete),
          CASE(test_create_conversation),
          CASE(test_bad_response),
          CASE(test_errors_end_to_end),
          CASE(test_transport_failures),
          CASE(test_cancel_and_free),
          CASE(test_argument_errors),
          CASE(test_trust_checked_at_the_call))
