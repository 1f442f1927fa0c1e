/* connector.h — Bot Connector REST calls (create conversation, send, reply, update, delete, reads)
 * as C functions over http_client, each checked against the service URL trust where the token is
 * attached; parses results and the connector's error body into a stable code. */
#ifndef HERALD_CONNECTOR_H
#define HERALD_CONNECTOR_H

#include <stddef.h>

typedef struct connector connector;
typedef struct connector_call connector_call;
typedef struct http_client http_client;
typedef struct trust trust;

/* Outcome of one call. All strings are owned by the result and freed after on_done returns. */
typedef struct connector_result {
    int ok;                      /* 1 on a 2xx */
    long status;                 /* HTTP status, 0 on transport failure */
    const char *code;            /* herald's stable code on failure (see connector_code_*), NULL on ok */
    const char *message;         /* readable failure: "connector 404 ConversationNotFound: Conversation not found" */
    const char *error_code;      /* connector error.code (e.g. "ConversationNotFound"), or NULL */
    const char *error_sub_code;  /* subCode from a nested JSON message (e.g. "MessageWritesBlocked") */
    const char *activity_id;     /* "id" of a ResourceResponse / "activityId" of a create; NULL when
                                  * a 2xx to a send or reply carried none (accepted, not updatable) */
    const char *conversation_id; /* "id" of a ConversationResourceResponse */
    const char *service_url;     /* "serviceUrl" of a ConversationResourceResponse, if any */
    const char *retry_after;     /* Retry-After header, if any */
    const char *correlation_id;  /* X-Correlating-OperationId, if any */
    const char *body;            /* raw response body ("" when none) */
    int resends;                 /* copies libcurl sent again by itself (http_response.resends) */
} connector_result;

typedef void (*connector_done_fn)(const connector_result *res, void *ud);

/* Stable codes (third value returned to Lua). */
#define CONNECTOR_BLOCKED      "blocked"      /* 403 MessageWritesBlocked / ConversationBlockedByUser / BotNotInConversationRoster / BotDisabledByAdmin */
#define CONNECTOR_FORBIDDEN    "forbidden"    /* other 403 */
#define CONNECTOR_NOT_FOUND    "not_found"    /* 404 */
#define CONNECTOR_THROTTLED    "throttled"    /* 429 */
#define CONNECTOR_TOO_LARGE    "too_large"    /* 413 */
#define CONNECTOR_UNAUTHORIZED "unauthorized" /* 401 */
#define CONNECTOR_REJECTED     "rejected"     /* other 4xx, and 501 */
#define CONNECTOR_UNAVAILABLE  "unavailable"  /* 5xx other than 501 */
#define CONNECTOR_TIMEOUT      "timeout"      /* no answer within the request timeout */
#define CONNECTOR_NETWORK      "network"      /* connection refused/reset, DNS, TLS */
#define CONNECTOR_BAD_RESPONSE "bad_response" /* a create answered 2xx without the conversation id */
#define CONNECTOR_NO_ACTIVITY_ID "no_activity_id" /* update/delete of a message sent without an id */
#define CONNECTOR_AUTH         "auth"         /* no outbound token could be had */
#define CONNECTOR_UNTRUSTED    "untrusted_service_url" /* the service URL may not receive the token */

struct event_base;

typedef struct connector_config {
    struct event_base *base;     /* needed with a token source (failures are delivered later) */
    long request_timeout_ms;     /* default 15000 */
    const char *user_agent;      /* default "herald/<version>" */
} connector_config;

connector *connector_new(http_client *http, const connector_config *cfg);
/* Cancels every call in flight (no on_done) and frees; call it before http_client_free. */
void connector_free(connector *c);

/* Sets the bearer token attached to every call (NULL: none, dev mode). Copied. */
void connector_set_token(connector *c, const char *token);

/* Where bearer tokens come from when they expire (auth_out): current() gives a valid token or
 * NULL; wait() registers ready to run when a token request ends (returns -1 with *error when it
 * cannot, e.g. during backoff); unwait() forgets a waiter. A call that cannot get a token fails
 * with code "auth". */
typedef struct connector_token_source {
    const char *(*current)(void *src);
    int (*wait)(void *src, void (*ready)(void *ud, const char *token, const char *error), void *ud,
                const char **error);
    void (*unwait)(void *src, void *ud);
    void *src;
} connector_token_source;
void connector_set_token_source(connector *c, const connector_token_source *ts);

/* Outside dev mode every call is checked here, at the moment the bearer token would be attached,
 * whoever made it and wherever its URL came from (a live send, an outbox row of a previous run, a
 * broadcast): trust_allows(t, dest's service_url, seal_id, seal). A refused call never reaches
 * the network or the token source; the URL (never the token) is logged and on_done runs later
 * with code "untrusted_service_url". NULL: no check (dev mode). Returns 0, or -1 when the
 * connector has no cfg->base to deliver refusals on. */
int connector_set_trust(connector *c, const trust *t);

/* Where a call goes. service_url is the conversation's base URL
 * ("https://smba.trafficmanager.net/amer/"); seal (or NULL) is a stored trust_seal of
 * (seal_id, service_url) that vouches for it beyond what this process has seen. */
typedef struct connector_dest {
    const char *service_url;
    const char *seal_id;
    const char *seal;
} connector_dest;

/* Each call returns a handle valid until on_done runs, or NULL with *err set (on_done not run).
 * The path is appended to to->service_url after trimming trailing '/'s; ids are percent-encoded
 * (RFC 3986 unreserved). json is the request body (an Activity or ConversationParameters), copied. */
connector_call *connector_send(connector *c, const connector_dest *to, const char *conversation_id,
                               const char *reply_to_id, const char *json, size_t json_len,
                               connector_done_fn on_done, void *ud, char **err);
connector_call *connector_update(connector *c, const connector_dest *to, const char *conversation_id,
                                 const char *activity_id, const char *json, size_t json_len,
                                 connector_done_fn on_done, void *ud, char **err);
connector_call *connector_delete(connector *c, const connector_dest *to, const char *conversation_id,
                                 const char *activity_id, connector_done_fn on_done, void *ud,
                                 char **err);
connector_call *connector_create_conversation(connector *c, const connector_dest *to,
                                              const char *json, size_t json_len,
                                              connector_done_fn on_done, void *ud, char **err);

/* GET {service_url}{path} (path already encoded, starting with "/v3/..."); res->body holds the
 * answer. For rosters, channels and team details. */
connector_call *connector_get(connector *c, const connector_dest *to, const char *path,
                              connector_done_fn on_done, void *ud, char **err);

/* Aborts a call; on_done is never run. */
void connector_cancel(connector_call *call);

/* Percent-encodes s with the RFC 3986 unreserved set into a malloc'd string. */
char *connector_encode_id(const char *s);

/* Classifies a finished exchange (exposed for unit tests): sets ok, status, code, message,
 * error_code and error_sub_code of *res from the response's transport outcome, status and body;
 * a 2xx gives ok = 1 and code NULL (the caller checks what the call needs from the body).
 * timeout_ms is the request timeout named in a "timeout" message. Strings it sets are malloc'd
 * into owned[0..3], each NULL when unused, which the caller frees. Never fails on any body. */
struct http_response;
void connector_classify(const struct http_response *hr, long timeout_ms, connector_result *res,
                        char **owned);

#endif
