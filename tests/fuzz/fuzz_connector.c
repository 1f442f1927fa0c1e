/* fuzz_connector.c — libFuzzer target over what connector.c makes of a Bot Connector answer: the
 * error body (ErrorResponse JSON, a JSON message nested in a string, HTML pages, anything), the
 * success body each call needs an id from, the status and transport outcome, and the ids it puts
 * in URLs. The real connector runs over http_client's fake transport (no network), on the
 * virtual clock, exactly as teams.testing drives it. Each result is checked against connector.h:
 * on_done runs once; a 2xx is ok unless the id a call needs is missing; otherwise the code follows
 * the status, and the message is one printable UTF-8 line of at most 300 bytes.
 *
 * Input: byte 0 picks the call (send, reply, update, delete, create, get) and the transport
 * outcome (answer, reset, timeout); bytes 1-2 the status (0-599); then
 * "CONVERSATION_ID\0ACTIVITY_ID\0RETRY_AFTER\0BODY". */
#include "clock.h"
#include "connector.h"
#include "fuzz_util.h"
#include "http_client.h"
#include "log.h"

#include <event2/event.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SERVICE_URL "https://smba.trafficmanager.net/amer/"

static struct event_base *base;
static http_client *http;

typedef struct answer {
    long status;
    const char *body, *retry_after;
    int reset, timeout;
    int requests;
    char *url;
} answer;

static answer ans;

static void fake(const char *method, const char *url, const char *const *headers, const char *body,
                 size_t body_len, http_fake_answer *a, void *ud)
{
    (void)method, (void)headers, (void)body, (void)body_len, (void)ud;
    ans.requests++;
    free(ans.url);
    ans.url = strdup(url);
    a->status = ans.status;
    a->body = strdup(ans.body);
    a->retry_after = ans.retry_after ? strdup(ans.retry_after) : NULL;
    a->correlation_id = strdup("corr-1");
    a->reset = ans.reset;
    a->timeout = ans.timeout;
}

typedef struct outcome {
    int calls;
    int ok;
    long status;
    char *code, *message, *activity_id, *conversation_id, *retry_after, *error_code;
} outcome;

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void on_done(const connector_result *res, void *ud)
{
    outcome *o = ud;
    o->calls++;
    o->ok = res->ok;
    o->status = res->status;
    o->code = dup_or_null(res->code);
    o->message = dup_or_null(res->message);
    o->activity_id = dup_or_null(res->activity_id);
    o->conversation_id = dup_or_null(res->conversation_id);
    o->retry_after = dup_or_null(res->retry_after);
    o->error_code = dup_or_null(res->error_code);
    FUZZ_CHECK(res->body, "result without a body");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    log_set_level(LOG_ERROR);
    base = event_base_new();
    clock_virtual(base, 1798761600000LL);
    http_client_config hc = {.connect_timeout_ms = 5000, .max_host_connections = 8};
    char *err = NULL;
    http = base ? http_client_new(base, &hc, &err) : NULL;
    if (!http)
        abort();
    http_client_set_fake(http, fake, NULL);
    return 0;
}

/* The stable code connector.h promises for a status that is not 2xx. */
static const char *code_for(long status, const char *code)
{
    switch (status) {
    case 401: return CONNECTOR_UNAUTHORIZED;
    case 403: return code && strcmp(code, CONNECTOR_BLOCKED) == 0 ? CONNECTOR_BLOCKED
                                                                   : CONNECTOR_FORBIDDEN;
    case 404: return CONNECTOR_NOT_FOUND;
    case 413: return CONNECTOR_TOO_LARGE;
    case 429: return CONNECTOR_THROTTLED;
    case 501: return CONNECTOR_REJECTED;
    default: return status >= 500 && status <= 599 ? CONNECTOR_UNAVAILABLE : CONNECTOR_REJECTED;
    }
}

/* Every byte of the path after the service URL is unreserved, '/' or a %XX escape. */
static void check_url(const char *url)
{
    FUZZ_CHECK(strncmp(url, "https://smba.trafficmanager.net/amer/v3/conversations", 53) == 0,
               "url %s", url);
    for (const char *p = url + 53; *p; p++) {
        if (*p == '%') {
            FUZZ_CHECK(strchr("0123456789ABCDEF", p[1]) && p[1] && strchr("0123456789ABCDEF", p[2]) &&
                       p[2], "bad escape in %s", url);
            p += 2;
            continue;
        }
        FUZZ_CHECK((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                   strchr("-._~/", *p), "unencoded byte 0x%02x in %s", (unsigned char)*p, url);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3 || size > 65536)
        return 0;
    int op = data[0] % 6, transport = data[0] / 6 % 8;
    long status = (long)((data[1] << 8 | data[2]) % 600);
    char *part[4];
    fuzz_split(data + 3, size - 3, '\0', part, 4);
    const char *conv = part[0], *activity = part[1] ? part[1] : "1",
               *retry_after = part[2] && *part[2] ? part[2] : NULL, *body = part[3] ? part[3] : "";
    ans = (answer){.status = status, .body = body, .retry_after = retry_after,
                   .reset = transport == 1, .timeout = transport == 2};

    connector_config cc = {.base = base, .request_timeout_ms = 15000};
    connector *c = connector_new(http, &cc);
    connector_set_token(c, "fuzz-token");
    outcome o = {0};
    char *err = NULL;
    connector_call *call = NULL;
    static const char activity_json[] = "{\"type\":\"message\",\"text\":\"hi\"}";
    const connector_dest to = {.service_url = SERVICE_URL};     /* no trust set: dev mode */
    switch (op) {
    case 0: call = connector_send(c, &to, conv, NULL, activity_json, sizeof activity_json - 1,
                                  on_done, &o, &err); break;
    case 1: call = connector_send(c, &to, conv, activity, activity_json,
                                  sizeof activity_json - 1, on_done, &o, &err); break;
    case 2: call = connector_update(c, &to, conv, activity, activity_json,
                                    sizeof activity_json - 1, on_done, &o, &err); break;
    case 3: call = connector_delete(c, &to, conv, activity, on_done, &o, &err); break;
    case 4: call = connector_create_conversation(c, &to, "{\"isGroup\":false}", 17, on_done,
                                                 &o, &err); break;
    case 5: call = connector_get(c, &to, "/v3/conversations/x/members", on_done, &o, &err);
            break;
    }
    if (!call) {
        FUZZ_CHECK(err && *err, "a refused call gives no reason");
        FUZZ_CHECK(!*conv || ((op == 1 || op == 2 || op == 3) && !*activity),
                   "call refused: %s", err);
        free(err);
        goto out;
    }
    FUZZ_CHECK(o.calls == 0, "on_done ran inside the call");
    clock_advance(20000);
    FUZZ_CHECK(o.calls == 1, "on_done ran %d times", o.calls);
    FUZZ_CHECK(ans.requests == 1, "%d requests for one call", ans.requests);
    if (op != 5)
        check_url(ans.url);

    FUZZ_CHECK(o.message == NULL || (strlen(o.message) <= 300 && fuzz_utf8_valid(o.message,
               strlen(o.message)) && fuzz_printable(o.message)),
               "message is not one printable UTF-8 line of at most 300 bytes: '%s'", o.message);
    if (transport == 1 || transport == 2) {
        FUZZ_CHECK(!o.ok && o.status == 0 &&
                   strcmp(o.code, transport == 2 ? CONNECTOR_TIMEOUT : CONNECTOR_NETWORK) == 0,
                   "transport failure read as %s", o.code ? o.code : "ok");
        goto out;
    }
    FUZZ_CHECK(o.status == status, "status %ld reported as %ld", status, o.status);
    FUZZ_CHECK((o.retry_after == NULL) == (retry_after == NULL) &&
               (!retry_after || strcmp(o.retry_after, retry_after) == 0), "Retry-After lost");
    if (status >= 200 && status <= 299) {
        json_t *doc = json_loads(body, 0, NULL);
        const char *id = json_string_value(json_object_get(doc, "id"));
        int has_id = id && *id;
        if (o.ok) {
            FUZZ_CHECK(!o.code, "ok with a code");
            if ((op == 0 || op == 1) && has_id)
                FUZZ_CHECK(o.activity_id && strcmp(o.activity_id, id) == 0, "activity id lost");
            if (op == 4)
                FUZZ_CHECK(o.conversation_id && has_id && strcmp(o.conversation_id, id) == 0,
                           "conversation id lost");
            if (op == 2)
                FUZZ_CHECK(o.activity_id, "an update lost its activity id");
        } else {
            FUZZ_CHECK(o.code && strcmp(o.code, CONNECTOR_BAD_RESPONSE) == 0 && !has_id && op == 4,
                       "2xx refused: %s", o.code ? o.code : "?");
        }
        json_decref(doc);
    } else {
        FUZZ_CHECK(!o.ok && o.code && o.message, "a %ld passed", status);
        FUZZ_CHECK(strcmp(o.code, code_for(status, o.code)) == 0, "status %ld gave code %s",
                   status, o.code);
    }
out:
    free(o.code);
    free(o.message);
    free(o.activity_id);
    free(o.conversation_id);
    free(o.retry_after);
    free(o.error_code);
    free(ans.url);
    ans.url = NULL;
    connector_free(c);
    fuzz_free_parts(part, 4);
    return 0;
}
