/* auth_in.h — inbound Bot Framework JWT validation: OpenID metadata and JWKS (fetched, cached,
 * refreshed on a period and on an unknown kid with a floor), claims, serviceUrl and endorsements. */
#ifndef HERALD_AUTH_IN_H
#define HERALD_AUTH_IN_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
typedef struct http_client http_client;
typedef struct auth_in auth_in;

typedef struct auth_in_config {
    const char *app_id;               /* expected aud */
    const char *openid_metadata_url;  /* its jwks_uri holds the keys */
    const char *issuer;               /* expected iss */
    long clock_skew_s;                /* exp/nbf tolerance, default 300 */
    long refresh_interval_s;          /* periodic JWKS refresh, default 86400 */
    long refresh_floor_s;             /* an unknown kid refetches at most once per floor after the
                                         last fetch ended, default 300 */
    long fetch_timeout_ms;            /* one fetch (metadata + JWKS) ends within it, default 10000 */
    long retry_base_ms, retry_max_ms; /* background retry after a failed fetch, default 500, 60000 */
    size_t token_cache_max;           /* verified tokens remembered until exp, default 10000 */
} auth_in_config;

enum auth_result {
    AUTH_OK,
    AUTH_DENIED,       /* 401; *reason says why (never the token) */
    AUTH_PENDING,      /* signing keys must be fetched first: auth_in_wait, then check again */
    AUTH_UNAVAILABLE,  /* no signing keys could be had: 503 so the channel retries */
};

auth_in *auth_in_new(struct event_base *base, http_client *http, const auth_in_config *cfg,
                     char **err);
void auth_in_free(auth_in *a);

/* Starts the first metadata + JWKS fetch (checks wait for it). A failed fetch, then or later, is
 * retried in the background (retry_base_ms doubling up to retry_max_ms, with jitter). */
void auth_in_start(auth_in *a);

/* Validates authorization (the whole header value) for an activity with this serviceUrl and
 * channelId at wall time now_s. reason is a static string. No side effects beyond the caches.
 * AUTH_PENDING (no keys yet, or an unknown kid) only while a fetch is in flight or when the floor
 * has passed since the last fetch ended; otherwise the answer is AUTH_UNAVAILABLE or AUTH_DENIED. */
enum auth_result auth_in_check(auth_in *a, const char *authorization, const char *service_url,
                               const char *channel_id, int64_t now_s, const char **reason);

/* After AUTH_PENDING: starts the key fetch (shared by all waiters) and runs wake(ud) once when it
 * ends, within fetch_timeout_ms; wake should check again right there: a check made inside wake
 * never returns AUTH_PENDING, so a request waits for one fetch at most. Returns AUTH_PENDING, or
 * AUTH_UNAVAILABLE when the fetch cannot start or memory runs out (wake will not run). */
enum auth_result auth_in_wait(auth_in *a, void (*wake)(void *ud), void *ud);

/* Forgets a waiter registered by auth_in_wait (its request went away). */
void auth_in_forget(auth_in *a, void *ud);

/* Counters for /healthz and tests. */
typedef struct auth_in_stats {
    uint64_t key_fetches, key_fetch_failures, cache_hits, verified, denied;
    int keys;
} auth_in_stats;
void auth_in_get_stats(const auth_in *a, auth_in_stats *out);

/* The pure part, exposed for unit tests and the fuzzer: parses and checks token against key
 * material in a JWKS document (JSON text) without any I/O. Returns AUTH_OK or AUTH_DENIED. */
enum auth_result auth_in_verify_with_jwks(const char *jwks_json, const auth_in_config *cfg,
                                          const char *authorization, const char *service_url,
                                          const char *channel_id, int64_t now_s,
                                          const char **reason);

/* base64url (no padding needed) → bytes; returns malloc'd buffer and length, NULL if invalid. */
unsigned char *auth_b64url_decode(const char *s, size_t len, size_t *out_len);
/* bytes → base64url without padding, malloc'd. */
char *auth_b64url_encode(const unsigned char *p, size_t len);

#endif
