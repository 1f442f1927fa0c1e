/* http_client.h — outbound HTTP on the event loop: libcurl's multi socket API driven by libevent.
 * Owns curl handles, connection reuse and timeouts; calls on_done from the loop, never Lua. */
#ifndef HERALD_HTTP_CLIENT_H
#define HERALD_HTTP_CLIENT_H

#include <stddef.h>

struct event_base;
typedef struct http_client http_client;
typedef struct http_request http_request;

typedef struct http_response {
    long status;                 /* HTTP status; 0 when no response arrived */
    int transport_error;         /* 0, or a CURLcode when the exchange failed (status is then 0) */
    int timed_out;               /* 1 when transport_error is a timeout */
    const char *error;           /* readable transport error, "" when none */
    const char *body;            /* NUL-terminated response body ("" when empty) */
    size_t body_len;
    const char *retry_after;     /* Retry-After header value, or NULL */
    const char *correlation_id;  /* X-Correlating-OperationId (or MS-CV), or NULL */
    int resends;                 /* times libcurl sent the request again by itself (see below) */
} http_response;

/* libcurl sends a request again, once per failure and up to 5 times, when it went out on a reused
 * connection and not one byte of answer came back (the connection was closed or reset): it cannot
 * tell "the server closed an idle connection as we wrote" from "the server took the request and
 * died", and no option turns it off. For a POST the server may have acted on, that is a duplicate;
 * resends counts them so the caller can account for every copy it may have caused. */

/* Called once per started request, from the event loop (not from inside libcurl). The response
 * and the request are freed when it returns. */
typedef void (*http_done_fn)(const http_response *res, void *ud);

typedef struct http_client_config {
    long connect_timeout_ms;     /* default 5000 */
    long max_host_connections;   /* per host, default 64 */
    int allow_http;              /* 0: only https URLs may be requested */
} http_client_config;

/* Returns NULL and sets *err (malloc'd) on failure. */
http_client *http_client_new(struct event_base *base, const http_client_config *cfg, char **err);

/* Cancels every in-flight request (their on_done is NOT called) and frees the client. It may be
 * called from inside an on_done: the free then completes when that callback returns. */
void http_client_free(http_client *c);

/* Starts a request. method is "GET", "POST", "PUT" or "DELETE"; body may be NULL; the body is
 * copied. headers is a NULL-terminated array of "Name: value" strings (copied), or NULL.
 * timeout_ms bounds the whole exchange (<= 0: 30 s). Returns the request (valid until on_done runs
 * or it is cancelled), or NULL with *err set when the request cannot start (then on_done never runs):
 * a URL whose scheme is not https:// (or http:// when allow_http) is refused here, at start, never
 * reported later through on_done. on_done never runs before this function returns. No redirect is
 * followed; a body over 8 MiB fails the request (transport_error CURLE_WRITE_ERROR). */
http_request *http_client_request(http_client *c, const char *method, const char *url,
                                  const char *const *headers, const char *body, size_t body_len,
                                  long timeout_ms, http_done_fn on_done, void *ud, char **err);

/* Aborts a request; its on_done is never called. A no-op on the request whose on_done is running. */
void http_request_cancel(http_request *r);

/* Fake transport (teams.testing): fn answers each request instead of the network. It fills
 * *answer; body, retry_after and correlation_id are malloc'd and then owned by the client. The
 * answer is delivered after delay_ms on the clock (clock.h), never inside http_client_request. */
typedef struct http_fake_answer {
    long status;
    char *body, *retry_after, *correlation_id;
    long delay_ms;
    int reset;                   /* no answer: connection reset */
    int timeout;                 /* no answer within the request's timeout */
    int resends;                 /* reported as http_response.resends */
} http_fake_answer;
typedef void (*http_fake_fn)(const char *method, const char *url, const char *const *headers,
                             const char *body, size_t body_len, http_fake_answer *answer, void *ud);
void http_client_set_fake(http_client *c, http_fake_fn fn, void *ud);

/* One response header line as libcurl hands it over ("Name: value\r\n"): the name's length, and
 * the value without the blanks around it and the line end (a pointer into line). Returns 0, or -1
 * when the line has no ':' (a status line, the blank line ending the headers). */
int http_header_split(const char *line, size_t n, size_t *name_len, const char **value,
                      size_t *value_len);

/* Number of requests in flight. */
int http_client_pending(const http_client *c);

#endif
