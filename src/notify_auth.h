/* notify_auth.h — who may run POST /api/notify/{name}: trigger names and the variables holding
 * their secrets, timestamped HMAC signatures with a replay cache, and bearer secrets. It judges
 * one request; answering it and running the handler are lua_inbound.c's. */
#ifndef HERALD_NOTIFY_AUTH_H
#define HERALD_NOTIFY_AUTH_H

#include <stddef.h>
#include <stdint.h>

/* A signed request's X-Herald-Timestamp may differ from the server's clock by this much. */
#define NOTIFY_WINDOW_S 300

/* Longest trigger name. */
#define NOTIFY_NAME_MAX 64

typedef struct notify_auth notify_auth;

/* A replay cache that remembers up to max_seen signatures (each for the window around its
 * timestamp), made at wall time now_s. The cache lives in memory, so a signed request whose
 * timestamp is older than now_s is refused: the process before a restart may have seen it. NULL
 * when out of memory. */
notify_auth *notify_auth_new(size_t max_seen, int64_t now_s);
void notify_auth_free(notify_auth *na);

/* The secret of trigger name: HERALD_NOTIFY_SECRET_<NAME>, else HERALD_NOTIFY_SECRET; *secret is
 * NULL when neither is set. <NAME> is name upper-cased with '-' written '_'. A trigger name is 1 to
 * NOTIFY_NAME_MAX characters of a-z, 0-9 and '-', so that mapping is one-to-one and no two triggers
 * share a variable. Returns 0, or -1 when name is not a trigger name. var (may be NULL) receives
 * the per-trigger variable's name; it needs sizeof "HERALD_NOTIFY_SECRET_" + NOTIFY_NAME_MAX. */
int notify_auth_secret(const char *name, const char **secret, char *var, size_t var_size);

enum notify_verdict {
    NOTIFY_OK,
    NOTIFY_DENIED,   /* 401; *reason says why */
    NOTIFY_FULL,     /* 429: the replay cache holds max_seen live signatures; retry after *retry_s */
};

/* Judges a request to a trigger whose secret is secret, at wall time now_s. signature,
 * timestamp and authorization are the X-Herald-Signature, X-Herald-Timestamp and Authorization
 * header values (NULL when absent). With a signature, only the signature counts: it must be
 * "sha256=" and the hex HMAC-SHA256(secret, timestamp "." body), with a timestamp of unix seconds
 * within NOTIFY_WINDOW_S of now_s and not before the cache was made, not seen before. Without one, "Bearer <secret>" is accepted.
 * Comparisons take constant time. *reason is a static string safe to put in JSON as is. A good
 * signature is remembered before NOTIFY_OK is returned; when the cache is full of live ones the
 * request is refused (fail closed) with NOTIFY_FULL. */
enum notify_verdict notify_auth_check(notify_auth *na, const char *secret, const char *signature,
                                      const char *timestamp, const char *authorization,
                                      const char *body, size_t len, int64_t now_s,
                                      const char **reason, long *retry_s);

#endif
