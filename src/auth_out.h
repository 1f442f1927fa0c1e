/* auth_out.h — the bot's outbound token: OAuth2 client credentials (secret or certificate
 * assertion) against the cloud's authority; cached, single-flight, refreshed ahead of expiry. */
#ifndef HERALD_AUTH_OUT_H
#define HERALD_AUTH_OUT_H

#include <stdint.h>

struct event_base;
typedef struct http_client http_client;
typedef struct auth_out auth_out;

typedef struct auth_out_config {
    const char *token_url;        /* {login}/{tenant}/oauth2/v2.0/token */
    const char *client_id;
    const char *client_secret;    /* secret, or NULL with cert_path */
    const char *cert_path;        /* PEM with the certificate (and the key unless key_path) */
    const char *key_path;         /* PEM private key, when not in cert_path */
    const char *scope;            /* https://api.botframework.com/.default */
    long refresh_ahead_s;         /* default 300 */
    long max_backoff_s;           /* default 60 */
} auth_out_config;

/* A token is kept at most this long, whatever the endpoint's expires_in says (Entra ID's last
 * about an hour), so a wild value cannot postpone the refresh indefinitely. */
#define AUTH_OUT_MAX_LIFETIME_S 86400

/* ready(ud, token, error): token on success; NULL and a readable error otherwise. */
typedef void (*auth_out_ready_fn)(void *ud, const char *token, const char *error);

/* Loads the certificate at once so a bad path fails at start. NULL with *err set on failure. */
auth_out *auth_out_new(struct event_base *base, http_client *http, const auth_out_config *cfg,
                       char **err);
void auth_out_free(auth_out *a);

/* The cached token while it is valid, else NULL. */
const char *auth_out_current(auth_out *a);

/* Registers ready to run once a token request ends (one request is shared by all waiters).
 * Returns 0, or -1 when the token service failed recently and the backoff has not passed:
 * *error then says so and ready is not registered. */
int auth_out_wait(auth_out *a, auth_out_ready_fn ready, void *ud, const char **error);
void auth_out_unwait(auth_out *a, void *ud);

typedef struct auth_out_stats {
    uint64_t requests, failures;
} auth_out_stats;
void auth_out_get_stats(const auth_out *a, auth_out_stats *out);

#endif
