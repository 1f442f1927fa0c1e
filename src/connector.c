/* connector.c — Bot Connector REST calls over http_client: the service URL trust check where the
 * token is attached, URLs, headers, and turning each answer (ids, error bodies, transport failures)
 * into a connector_result with a stable code; retries and pacing belong to outbox and governor. */
#include "connector.h"
#include "err.h"
#include "clock.h"

#include <event2/event.h>

#include "http_client.h"
#include "log.h"
#include "trust.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef HERALD_VERSION
#define HERALD_VERSION "dev"
#endif

#define CONNECTOR_DEFAULT_TIMEOUT_MS 15000L
/* A result message is meant for a log line or a Lua error value, not for the whole error page. */
#define CONNECTOR_MESSAGE_MAX 300
/* How much of an error text is cleaned up before the message is cut to CONNECTOR_MESSAGE_MAX. */
#define CONNECTOR_TEXT_SCAN_MAX 1024

enum call_op { OP_SEND, OP_REPLY, OP_UPDATE, OP_DELETE, OP_CREATE, OP_GET };

struct connector {
    http_client *http;
    long timeout_ms;
    char *user_agent_header;     /* "User-Agent: ..." */
    char *auth_header;           /* "Authorization: Bearer ..." or NULL; never logged */
    connector_token_source ts;   /* when set, tokens come from here per call */
    const trust *trust;          /* when set, every call's service URL must pass it */
    struct event_base *base;
    connector_call *calls;       /* in flight, so connector_free can cancel them */
};

struct connector_call {
    connector *c;
    http_request *req;
    enum call_op op;
    int calling;                 /* on_done is running: connector_cancel must not free the call */
    char *activity_id;           /* the id an update targeted: the answer when the body is empty */
    /* while waiting for a token: what to send once it arrives */
    const char *method;
    char *url, *json;
    size_t json_len;
    int waiting_token;
    const char *fail_code;       /* set when the call cannot go out; delivered by fail_ev */
    char *fail_message;
    struct event *fail_ev;
    connector_done_fn on_done;
    void *ud;
    connector_call *prev, *next;
};

static int has_control_char(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

/* ---- encoding and URLs ---- */

char *connector_encode_id(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    if (!s)
        return NULL;
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1), *o = out;
    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char ch = *p;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            *o++ = (char)ch;
        } else {
            *o++ = '%';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    *o = '\0';
    return out;
}

/* rtrim(service_url, '/') + "/v3/conversations" [+ "/{conv}/activities" [+ "/{id}"]]. */
static char *build_url(const char *service_url, const char *conversation_id, const char *activity_id,
                       char **err)
{
    size_t base = strlen(service_url);
    while (base > 0 && service_url[base - 1] == '/')
        base--;
    if (base == 0) {
        set_err(err, "connector: empty service URL");
        return NULL;
    }
    if (!conversation_id) {
        char *url = errf("%.*s/v3/conversations", (int)base, service_url);
        if (!url)
            set_err(err, "connector: out of memory");
        return url;
    }
    char *conv = connector_encode_id(conversation_id);
    char *id = activity_id ? connector_encode_id(activity_id) : NULL;
    char *url = NULL;
    if (conv && (id || !activity_id))
        url = errf("%.*s/v3/conversations/%s/activities%s%s", (int)base, service_url, conv,
                        id ? "/" : "", id ? id : "");
    if (!url)
        set_err(err, "connector: out of memory");
    free(conv);
    free(id);
    return url;
}

/* ---- readable messages ---- */

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    size_t len;
    if (p[0] < 0x80)
        return 1;
    else if (p[0] >= 0xC2 && p[0] <= 0xDF)
        len = 2;
    else if (p[0] >= 0xE0 && p[0] <= 0xEF)
        len = 3;
    else if (p[0] >= 0xF0 && p[0] <= 0xF4)
        len = 4;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    /* RFC 3629's second-byte limits: no overlong forms, no surrogates, nothing past U+10FFFF */
    if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] > 0x9F) ||
        (p[0] == 0xF0 && p[1] < 0x90) || (p[0] == 0xF4 && p[1] > 0x8F))
        return 0;
    return len;
}

/* A one-line, printable version of s[0..n): HTML tags dropped when it looks like a page (Express
 * error pages), control characters and whitespace runs folded to one space, invalid UTF-8 shown
 * as '?'. Stops after CONNECTOR_TEXT_SCAN_MAX output bytes. Returns malloc'd text or NULL. */
static char *readable(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    int html = p < end && *p == '<';
    char *out = malloc(CONNECTOR_TEXT_SCAN_MAX + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    int in_tag = 0, space = 0;
    while (p < end && o < CONNECTOR_TEXT_SCAN_MAX - 4) {
        unsigned char ch = *p;
        if (html && (in_tag || ch == '<')) {
            in_tag = ch != '>';
            space = 1; /* a tag separates words: "<title>Error</title><pre>x" -> "Error x" */
            p++;
            continue;
        }
        if (ch < 0x20 || ch == 0x7f || ch == ' ') {
            space = 1;
            p++;
            continue;
        }
        if (space && o > 0)
            out[o++] = ' ';
        space = 0;
        size_t len = utf8_seq(p, (size_t)(end - p));
        if (len == 0) {
            out[o++] = '?';
            p++;
        } else {
            memcpy(out + o, p, len);
            o += len;
            p += len;
        }
    }
    out[o] = '\0';
    return out;
}

/* Cuts s to at most CONNECTOR_MESSAGE_MAX bytes on a UTF-8 boundary, marking the cut with "...". */
static void truncate_message(char *s)
{
    if (!s || strlen(s) <= CONNECTOR_MESSAGE_MAX)
        return;
    size_t cut = CONNECTOR_MESSAGE_MAX - 3;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
        cut--;
    memcpy(s + cut, "...", 4);
}

/* ---- error bodies ---- */

static char *dup_string(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    const char *s = json_string_value(v);
    return s && *s ? strdup(s) : NULL;
}

/* Reads what the connector said went wrong. Shapes seen:
 *   {"error":{"code":"ConversationNotFound","message":"Conversation not found"}}   (ErrorResponse)
 *   {"errorCode":209,"message":"{\r\n \"subCode\": \"MessageWritesBlocked\", \"details\": ...}"}
 *   an empty body, an HTML page, or anything else.
 * A message that is itself a JSON object is parsed for subCode / code / details. Each out string
 * is malloc'd or NULL; *text is the human part, already made readable. */
static void parse_error_body(const char *body, size_t len, char **code, char **sub, char **text)
{
    *code = *sub = *text = NULL;
    if (!body || len == 0)
        return;
    json_t *root = json_loadb(body, len, 0, NULL);
    if (json_is_object(root)) {
        json_t *e = json_object_get(root, "error");
        json_t *src = json_is_object(e) ? e : root;
        *code = dup_string(src, "code");
        *sub = dup_string(src, "subCode");
        const char *m = json_string_value(json_object_get(src, "message"));
        const char *t = m;
        while (t && (*t == ' ' || *t == '\t' || *t == '\r' || *t == '\n'))
            t++;
        json_t *nested = t && *t == '{' ? json_loads(t, 0, NULL) : NULL;
        if (json_is_object(nested)) {
            if (!*sub)
                *sub = dup_string(nested, "subCode");
            if (!*code)
                *code = dup_string(nested, "code");
            const char *d = json_string_value(json_object_get(nested, "details"));
            if (!d || !*d)
                d = json_string_value(json_object_get(nested, "message"));
            if (d && *d)
                *text = readable(d, strlen(d));
        }
        json_decref(nested);
        if (!*text && m && *m)
            *text = readable(m, strlen(m));
    }
    json_decref(root);
    if (!*code && !*sub && !*text) {
        /* Not an error shape we know: show the start of the body itself. */
        char *t = readable(body, len);
        if (t && *t)
            *text = t;
        else
            free(t);
    }
}

static int is_blocked(const char *code, const char *sub)
{
    if (sub && strcasecmp(sub, "MessageWritesBlocked") == 0)
        return 1;
    return code && (strcasecmp(code, "MessageWritesBlocked") == 0 ||
                    strcasecmp(code, "ConversationBlockedByUser") == 0 ||
                    strcasecmp(code, "BotNotInConversationRoster") == 0 ||
                    strcasecmp(code, "BotDisabledByAdmin") == 0);
}

static const char *code_for_status(long status, const char *code, const char *sub)
{
    switch (status) {
    case 401: return CONNECTOR_UNAUTHORIZED;
    case 403: return is_blocked(code, sub) ? CONNECTOR_BLOCKED : CONNECTOR_FORBIDDEN;
    case 404: return CONNECTOR_NOT_FOUND;
    case 413: return CONNECTOR_TOO_LARGE;
    case 429: return CONNECTOR_THROTTLED;
    case 501: return CONNECTOR_REJECTED; /* e.g. DeleteActivityAPINotImplemented: retrying won't help */
    default:
        if (status >= 500 && status <= 599)
            return CONNECTOR_UNAVAILABLE;
        /* Other 4xx, and the 1xx/3xx a connector should never send (redirects are not followed):
         * the request as made will not succeed by repeating it. */
        return CONNECTOR_REJECTED;
    }
}

void connector_classify(const struct http_response *hr, long timeout_ms, connector_result *res,
                        char **owned)
{
    for (int i = 0; i < 4; i++)
        owned[i] = NULL;
    res->ok = 0;
    res->status = hr->status;
    res->code = res->message = res->error_code = res->error_sub_code = NULL;
    if (hr->transport_error) {
        res->status = 0;
        if (hr->timed_out) {
            res->code = CONNECTOR_TIMEOUT;
            owned[0] = errf("connector timeout after %ld ms", timeout_ms);
        } else {
            res->code = CONNECTOR_NETWORK;
            const char *e = hr->error ? hr->error : "";
            char *t = readable(e, strlen(e));
            owned[0] = errf("connector network error: %s", t && *t ? t : "unknown");
            free(t);
        }
    } else if (hr->status >= 200 && hr->status <= 299) {
        res->ok = 1;
        return;
    } else {
        char *code, *sub, *text;
        parse_error_body(hr->body, hr->body ? hr->body_len : 0, &code, &sub, &text);
        res->code = code_for_status(hr->status, code, sub);
        /* the code is the connector's text too: shown readable, as the message is for a log line */
        char *label = sub || code ? readable(sub ? sub : code, strlen(sub ? sub : code)) : NULL;
        if (label && !*label) {
            free(label);
            label = NULL;
        }
        if (label && text)
            owned[0] = errf("connector %ld %s: %s", hr->status, label, text);
        else if (label)
            owned[0] = errf("connector %ld %s", hr->status, label);
        else if (text)
            owned[0] = errf("connector %ld: %s", hr->status, text);
        else
            owned[0] = errf("connector %ld (empty body)", hr->status);
        free(label);
        free(text);
        owned[1] = code;
        owned[2] = sub;
        res->error_code = code;
        res->error_sub_code = sub;
    }
    truncate_message(owned[0]);
    res->message = owned[0] ? owned[0] : "connector error (out of memory)";
}

/* ---- calls ---- */

static void call_unlink(connector_call *call)
{
    connector *c = call->c;
    if (call->prev)
        call->prev->next = call->next;
    else if (c->calls == call)
        c->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    call->prev = call->next = NULL;
}

static void call_free(connector_call *call)
{
    free(call->activity_id);
    free(call->url);
    free(call->json);
    free(call->fail_message);
    if (call->fail_ev)
        clock_timer_free(call->fail_ev);
    free(call);
}

/* Reads what a 2xx carries for this call. A send or reply answered 2xx without an id (no body,
 * not JSON, no "id": the Agents Playground answers a text-plus-card message 202 with an empty
 * body) was accepted all the same: resending would duplicate it, so it succeeds with no activity
 * id and the outbox records it sent (and warns that it cannot be updated). Only a create needs
 * what it lacks: without the conversation id there is nothing to use, so that is bad_response.
 * The strings it sets belong to *doc (or to the call), which the caller frees after on_done. */
static void read_success(connector_call *call, const http_response *hr, connector_result *res,
                         json_t **doc, char **owned)
{
    *doc = hr->body_len ? json_loadb(hr->body, hr->body_len, 0, NULL) : NULL;
    json_t *obj = json_is_object(*doc) ? *doc : NULL;
    const char *id = json_string_value(json_object_get(obj, "id"));
    if (id && !*id)
        id = NULL;
    switch (call->op) {
    case OP_SEND:
    case OP_REPLY:
        res->activity_id = id;
        return;
    case OP_UPDATE:
        res->activity_id = id ? id : call->activity_id;
        return;
    case OP_DELETE:
        return;
    case OP_GET:
        return;                   /* the caller reads res->body */
    case OP_CREATE:
        res->conversation_id = id;
        res->activity_id = json_string_value(json_object_get(obj, "activityId"));
        res->service_url = json_string_value(json_object_get(obj, "serviceUrl"));
        break;
    }
    if (!id) {
        res->ok = 0;
        res->code = CONNECTOR_BAD_RESPONSE;
        owned[0] = errf("connector %ld: response has no \"id\"", hr->status);
        res->message = owned[0] ? owned[0] : "connector response has no id";
    }
}

static void on_http_done(const http_response *hr, void *ud)
{
    connector_call *call = ud;
    connector *c = call->c;
    call_unlink(call);
    call->calling = 1;
    call->req = NULL; /* http_client frees it when this returns */

    connector_result res = {0};
    char *owned[4];
    json_t *doc = NULL;
    connector_classify(hr, c->timeout_ms, &res, owned);
    res.retry_after = hr->retry_after;
    res.correlation_id = hr->correlation_id;
    res.body = hr->body ? hr->body : "";
    res.resends = hr->resends;
    if (res.ok)
        read_success(call, hr, &res, &doc, owned);
    if (res.ok)
        log_debug("connector call done status=%ld correlation_id=%s", res.status,
                  res.correlation_id ? res.correlation_id : "-");
    else
        log_debug("connector call failed code=%s status=%ld correlation_id=%s message=\"%s\"",
                  res.code, res.status, res.correlation_id ? res.correlation_id : "-", res.message);
    /* Nothing of c is touched after on_done: it may free the connector. */
    call->on_done(&res, call->ud);
    for (int i = 0; i < 4; i++)
        free(owned[i]);
    json_decref(doc);
    call_free(call);
}

/* Starts the HTTP exchange of call with the given Authorization header (NULL: none).
 * Returns 0, or -1 with *err set (the call is not freed). */
static int send_http(connector_call *call, const char *auth_header, char **err)
{
    connector *c = call->c;
    const char *headers[6];
    int n = 0;
    if (call->json)
        headers[n++] = "Content-Type: application/json; charset=utf-8";
    headers[n++] = "Accept: application/json";
    headers[n++] = c->user_agent_header;
    if (auth_header)
        headers[n++] = auth_header;
    headers[n] = NULL;
    call->req = http_client_request(c->http, call->method, call->url, headers, call->json,
                                    call->json_len, c->timeout_ms, on_http_done, call, err);
    if (!call->req)
        return -1;
    log_debug("connector call start method=%s url=%s", call->method, call->url);
    return 0;
}

/* Ends a call that never reached the network (no token, an untrusted URL): on_done with its
 * code, on a later turn, as every other outcome. */
static void deliver_failure(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    connector_call *call = arg;
    call_unlink(call);
    call->calling = 1;
    connector_result res = {0};
    res.code = call->fail_code;
    res.message = call->fail_message ? call->fail_message : call->fail_code;
    res.body = "";
    call->on_done(&res, call->ud);
    call_free(call);
}

/* message is taken (may be NULL). */
static void fail_later(connector_call *call, const char *code, char *message)
{
    call->fail_code = code;
    free(call->fail_message);
    call->fail_message = message;
    if (!call->fail_ev)
        call->fail_ev = evtimer_new(call->c->base, deliver_failure, call);
    clock_timer_add(call->fail_ev, 0);
}

static void fail_auth_later(connector_call *call, const char *error)
{
    fail_later(call, CONNECTOR_AUTH, errf("outbound auth: %s", error ? error : "no token"));
}

static void on_token_ready(void *ud, const char *token, const char *error)
{
    connector_call *call = ud;
    call->waiting_token = 0;
    if (!token) {
        fail_auth_later(call, error);
        return;
    }
    char *auth = has_control_char(token) ? NULL : errf("Authorization: Bearer %s", token);
    char *err = NULL;
    int rc = auth ? send_http(call, auth, &err) : -1;
    if (auth) {
        explicit_bzero(auth, strlen(auth));
        free(auth);
    }
    if (rc < 0) {
        fail_auth_later(call, err ? err : "unusable token");
        free(err);
    }
}

static connector_call *start_call(connector *c, const connector_dest *to, enum call_op op,
                                  const char *method, char *url, const char *json, size_t json_len,
                                  const char *updated_id, connector_done_fn on_done, void *ud,
                                  char **err)
{
    connector_call *call = calloc(1, sizeof *call);
    if (!call || (updated_id && !(call->activity_id = strdup(updated_id))) ||
        (json && !(call->json = malloc(json_len ? json_len : 1)))) {
        set_err(err, "connector: out of memory");
        if (call)
            call_free(call);
        free(url);
        return NULL;
    }
    if (json)
        memcpy(call->json, json, json_len);
    call->json_len = json_len;
    call->url = url;
    call->method = method;
    call->c = c;
    call->op = op;
    call->on_done = on_done;
    call->ud = ud;
    if (c->trust && !trust_allows(c->trust, to->service_url, to->seal_id, to->seal)) {
        /* the one check every token-bearing request passes, at the moment of the request: rows
         * loaded from the database included */
        log_warn("refused to send the bot's token to an untrusted service URL url=%s conversation=%s",
                 to->service_url, to->seal_id ? to->seal_id : "-");
        fail_later(call, CONNECTOR_UNTRUSTED,
                   errf("service URL %s is not trusted: it came from no validated activity, "
                             "carries no valid seal and is not the cloud's endpoint (see "
                             "HERALD_TRUSTED_SERVICE_URLS)", to->service_url));
    } else if (c->ts.current) {
        const char *token = c->ts.current(c->ts.src);
        if (token) {
            char *auth = has_control_char(token) ? NULL : errf("Authorization: Bearer %s", token);
            int rc = auth ? send_http(call, auth, err) : -1;
            if (auth) {
                explicit_bzero(auth, strlen(auth));
                free(auth);
            }
            if (rc < 0) {
                if (!*err)
                    set_err(err, "connector: unusable token");
                call_free(call);
                return NULL;
            }
        } else {
            const char *why = NULL;
            if (c->ts.wait(c->ts.src, on_token_ready, call, &why) == 0)
                call->waiting_token = 1;
            else
                fail_auth_later(call, why);
        }
    } else if (send_http(call, c->auth_header, err) < 0) {
        call_free(call);
        return NULL;
    }
    call->next = c->calls;
    if (c->calls)
        c->calls->prev = call;
    c->calls = call;
    return call;
}

static int check_args(connector *c, const connector_dest *to, connector_done_fn on_done, char **err)
{
    if (!c || !to || !to->service_url || !on_done) {
        set_err(err, "connector: missing connector, service URL or callback");
        return -1;
    }
    return 0;
}

connector_call *connector_send(connector *c, const connector_dest *to, const char *conversation_id,
                               const char *reply_to_id, const char *json, size_t json_len,
                               connector_done_fn on_done, void *ud, char **err)
{
    if (check_args(c, to, on_done, err) < 0)
        return NULL;
    if (!conversation_id || !*conversation_id || !json) {
        set_err(err, "connector: send needs a conversation id and an activity");
        return NULL;
    }
    if (reply_to_id && !*reply_to_id)
        reply_to_id = NULL;
    char *url = build_url(to->service_url, conversation_id, reply_to_id, err);
    if (!url)
        return NULL;
    return start_call(c, to, reply_to_id ? OP_REPLY : OP_SEND, "POST", url, json, json_len, NULL,
                      on_done, ud, err);
}

connector_call *connector_update(connector *c, const connector_dest *to, const char *conversation_id,
                                 const char *activity_id, const char *json, size_t json_len,
                                 connector_done_fn on_done, void *ud, char **err)
{
    if (check_args(c, to, on_done, err) < 0)
        return NULL;
    if (!conversation_id || !*conversation_id || !activity_id || !*activity_id || !json) {
        set_err(err, "connector: update needs a conversation id, an activity id and an activity");
        return NULL;
    }
    char *url = build_url(to->service_url, conversation_id, activity_id, err);
    if (!url)
        return NULL;
    return start_call(c, to, OP_UPDATE, "PUT", url, json, json_len, activity_id, on_done, ud, err);
}

connector_call *connector_delete(connector *c, const connector_dest *to, const char *conversation_id,
                                 const char *activity_id, connector_done_fn on_done, void *ud,
                                 char **err)
{
    if (check_args(c, to, on_done, err) < 0)
        return NULL;
    if (!conversation_id || !*conversation_id || !activity_id || !*activity_id) {
        set_err(err, "connector: delete needs a conversation id and an activity id");
        return NULL;
    }
    char *url = build_url(to->service_url, conversation_id, activity_id, err);
    if (!url)
        return NULL;
    return start_call(c, to, OP_DELETE, "DELETE", url, NULL, 0, NULL, on_done, ud, err);
}

connector_call *connector_create_conversation(connector *c, const connector_dest *to,
                                              const char *json, size_t json_len,
                                              connector_done_fn on_done, void *ud, char **err)
{
    if (check_args(c, to, on_done, err) < 0)
        return NULL;
    if (!json) {
        set_err(err, "connector: create_conversation needs conversation parameters");
        return NULL;
    }
    char *url = build_url(to->service_url, NULL, NULL, err);
    if (!url)
        return NULL;
    return start_call(c, to, OP_CREATE, "POST", url, json, json_len, NULL, on_done, ud, err);
}

void connector_cancel(connector_call *call)
{
    if (!call || call->calling)
        return; /* its on_done is running; the call is freed when it returns */
    call_unlink(call);
    if (call->waiting_token)
        call->c->ts.unwait(call->c->ts.src, call);
    if (call->req)
        http_request_cancel(call->req);
    call_free(call);
}

/* ---- lifetime ---- */

connector *connector_new(http_client *http, const connector_config *cfg)
{
    if (!http)
        return NULL;
    connector *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->http = http;
    c->base = cfg ? cfg->base : NULL;
    c->timeout_ms = cfg && cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms
                                                       : CONNECTOR_DEFAULT_TIMEOUT_MS;
    const char *ua = cfg && cfg->user_agent && *cfg->user_agent && !has_control_char(cfg->user_agent)
                         ? cfg->user_agent
                         : "herald/" HERALD_VERSION;
    c->user_agent_header = errf("User-Agent: %s", ua);
    if (!c->user_agent_header) {
        free(c);
        return NULL;
    }
    return c;
}

void connector_free(connector *c)
{
    if (!c)
        return;
    while (c->calls)
        connector_cancel(c->calls);
    free(c->user_agent_header);
    free(c->auth_header);
    free(c);
}

void connector_set_token(connector *c, const char *token)
{
    if (!c)
        return;
    free(c->auth_header);
    c->auth_header = NULL;
    if (!token || !*token)
        return;
    if (has_control_char(token)) {
        /* A CR/LF would split the header; the token itself is never logged. */
        log_warn("connector bearer token contains control characters; calls go without one");
        return;
    }
    c->auth_header = errf("Authorization: Bearer %s", token);
    if (!c->auth_header)
        log_error("connector out of memory storing the bearer token");
}

int connector_set_trust(connector *c, const trust *t)
{
    if (!c || (t && !c->base))
        return -1;                /* a refusal is delivered on the loop: without one, refuse to run */
    c->trust = t;
    return 0;
}

void connector_set_token_source(connector *c, const connector_token_source *ts)
{
    if (!c)
        return;
    if (ts && ts->current && ts->wait && ts->unwait && c->base)
        c->ts = *ts;
    else
        memset(&c->ts, 0, sizeof c->ts);
}

connector_call *connector_get(connector *c, const connector_dest *to, const char *path,
                              connector_done_fn on_done, void *ud, char **err)
{
    if (check_args(c, to, on_done, err) < 0)
        return NULL;
    if (!path || path[0] != '/') {
        /* anything else could move the authority: "https://host" + "@evil/..." */
        set_err(err, "connector: a read path must start with '/'");
        return NULL;
    }
    size_t base = strlen(to->service_url);
    while (base > 0 && to->service_url[base - 1] == '/')
        base--;
    char *url = errf("%.*s%s", (int)base, to->service_url, path);
    if (!url) {
        set_err(err, "connector: out of memory");
        return NULL;
    }
    return start_call(c, to, OP_GET, "GET", url, NULL, 0, NULL, on_done, ud, err);
}
