/* notify_auth.c — the rule for POST /api/notify/{name}: which variable holds a trigger's secret,
 * what a valid signature or bearer secret is, and the replay cache that makes a signature good
 * once. One function judges every request (notify_auth_check); lua_inbound.c only answers.
 *
 * Why the timestamp: a signature over the body alone stays valid forever, so anyone who saw one
 * request (a proxy log, a CI transcript) could run the trigger again at will. Signing
 * timestamp "." body bounds a captured request to the window, and the cache makes it good once
 * inside the window. The cache is memory only, so it also refuses timestamps from before it was
 * made: a restart must not reopen the window of requests the previous process saw (a caller whose
 * clock lags gets refused for that long after a start, and signs again). The cache keys on the
 * signature itself: it is a MAC under the trigger's
 * secret, so only a holder of a secret can add entries, and the same signed request sent to
 * another trigger with the same secret is a replay too. When the cache is full of signatures still
 * inside the window it refuses new ones (429) rather than forget one that could then be replayed
 * or grow without bound. */
#include "notify_auth.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAC_LEN 32
#define STR_(x) #x
#define STR(x) STR_(x)
#define WINDOW STR(NOTIFY_WINDOW_S)

typedef struct seen {
    unsigned char mac[MAC_LEN];
    int64_t until_s;              /* its timestamp + window; 0: empty slot */
} seen;

struct notify_auth {
    EVP_MAC *hmac;
    seen *slots;                  /* open addressing, linear probing; at most half full */
    size_t cap, used, max;
    int64_t earliest_until;       /* no entry expires before it: purge only after it */
    int64_t born_s;               /* timestamps before it may have been seen by an earlier process */
};

notify_auth *notify_auth_new(size_t max_seen, int64_t now_s)
{
    notify_auth *na = calloc(1, sizeof *na);
    if (!na)
        return NULL;
    na->born_s = now_s;
    na->max = max_seen ? max_seen : 1;
    na->cap = 16;
    while (na->cap < 2 * na->max)
        na->cap <<= 1;
    na->slots = calloc(na->cap, sizeof *na->slots);
    na->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!na->slots || !na->hmac) {
        notify_auth_free(na);
        return NULL;
    }
    return na;
}

void notify_auth_free(notify_auth *na)
{
    if (!na)
        return;
    EVP_MAC_free(na->hmac);
    free(na->slots);
    free(na);
}

int notify_auth_secret(const char *name, const char **secret, char *var, size_t var_size)
{
    static const char prefix[] = "HERALD_NOTIFY_SECRET_";
    char buf[sizeof prefix + NOTIFY_NAME_MAX];
    size_t n = strlen(name);
    if (n == 0 || n > NOTIFY_NAME_MAX)
        return -1;
    memcpy(buf, prefix, sizeof prefix - 1);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        else if (c == '-')
            c = '_';
        else if (!(c >= '0' && c <= '9'))
            return -1;            /* upper case, '_' and '.' would share a variable with another name */
        buf[sizeof prefix - 1 + i] = c;
    }
    buf[sizeof prefix - 1 + n] = 0;
    if (var && var_size) {
        strncpy(var, buf, var_size - 1);
        var[var_size - 1] = 0;
    }
    const char *v = getenv(buf);
    if (!v || !*v)
        v = getenv("HERALD_NOTIFY_SECRET");
    *secret = v && *v ? v : NULL;
    return 0;
}

/* ---- the replay cache --------------------------------------------------------------------- */

static size_t slot_of(const notify_auth *na, const unsigned char *mac)
{
    uint64_t h;
    memcpy(&h, mac, sizeof h);    /* a MAC is uniform to anyone without the secret */
    return (size_t)h & (na->cap - 1);
}

static seen *find(notify_auth *na, const unsigned char *mac)
{
    for (size_t i = slot_of(na, mac);; i = (i + 1) & (na->cap - 1)) {
        if (!na->slots[i].until_s)
            return NULL;
        if (memcmp(na->slots[i].mac, mac, MAC_LEN) == 0)
            return &na->slots[i];
    }
}

static void put(notify_auth *na, const unsigned char *mac, int64_t until_s)
{
    size_t i = slot_of(na, mac);
    while (na->slots[i].until_s)
        i = (i + 1) & (na->cap - 1);
    memcpy(na->slots[i].mac, mac, MAC_LEN);
    na->slots[i].until_s = until_s;
    na->used++;
    if (na->used == 1 || until_s < na->earliest_until)
        na->earliest_until = until_s;
}

/* Drops the entries whose window has passed (rebuilding the table, since linear probing cannot
 * just empty a slot). Runs only when the table is full and something has expired. */
static void purge(notify_auth *na, int64_t now_s)
{
    if (now_s <= na->earliest_until)
        return;
    seen *old = na->slots;
    seen *fresh = calloc(na->cap, sizeof *fresh);
    if (!fresh)
        return;                   /* stays full: refusing is the safe side */
    na->slots = fresh;
    na->used = 0;
    for (size_t i = 0; i < na->cap; i++)
        if (old[i].until_s && old[i].until_s >= now_s)
            put(na, old[i].mac, old[i].until_s);
    free(old);
}

/* ---- the checks ---------------------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* HMAC-SHA256(secret, timestamp "." body) into mac. 0, or -1 on an OpenSSL failure. */
static int sign(notify_auth *na, const char *secret, const char *timestamp, const char *body,
                size_t len, unsigned char *mac)
{
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(na->hmac);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t out = 0;
    int ok = ctx && EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)timestamp, strlen(timestamp)) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)".", 1) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)body, len) == 1 &&
             EVP_MAC_final(ctx, mac, &out, MAC_LEN) == 1 && out == MAC_LEN;
    EVP_MAC_CTX_free(ctx);
    return ok ? 0 : -1;
}

static enum notify_verdict deny(const char **reason, const char *why)
{
    *reason = why;
    return NOTIFY_DENIED;
}

static enum notify_verdict check_signature(notify_auth *na, const char *secret, const char *signature,
                                           const char *timestamp, const char *body, size_t len,
                                           int64_t now_s, const char **reason, long *retry_s)
{
    unsigned char given[MAC_LEN], mac[MAC_LEN];
    if (strncasecmp(signature, "sha256=", 7) != 0 || strlen(signature + 7) != 2 * MAC_LEN)
        return deny(reason, "X-Herald-Signature must be sha256=<64 hex digits>");
    for (int i = 0; i < MAC_LEN; i++) {
        int hi = hexval(signature[7 + 2 * i]), lo = hexval(signature[8 + 2 * i]);
        if (hi < 0 || lo < 0)
            return deny(reason, "X-Herald-Signature must be sha256=<64 hex digits>");
        given[i] = (unsigned char)(hi << 4 | lo);
    }
    if (!timestamp || !*timestamp)
        return deny(reason, "X-Herald-Signature needs X-Herald-Timestamp: sign <unix seconds>.<body> "
                            "(a signature of the body alone is replayable and no longer accepted)");
    size_t tl = strlen(timestamp);
    if (tl > 12 || strspn(timestamp, "0123456789") != tl)
        return deny(reason, "X-Herald-Timestamp must be unix seconds (digits only)");
    int64_t ts = strtoll(timestamp, NULL, 10);
    if (ts < now_s - NOTIFY_WINDOW_S || ts > now_s + NOTIFY_WINDOW_S)
        return deny(reason, "X-Herald-Timestamp is more than " WINDOW " s away from the server clock");
    if (!na)
        return deny(reason, "signatures cannot be checked for replay");
    if (ts < na->born_s)
        return deny(reason, "X-Herald-Timestamp is from before herald started: sign again with the "
                            "current time");
    if (sign(na, secret, timestamp, body, len, mac) < 0)
        return deny(reason, "cannot compute the signature");
    if (CRYPTO_memcmp(mac, given, MAC_LEN) != 0)
        return deny(reason, "bad signature");
    if (find(na, mac))
        return deny(reason, "signature already used (replay)");
    if (na->used >= na->max)
        purge(na, now_s);
    if (na->used >= na->max) {
        *reason = "too many signed requests within " WINDOW " s (replay cache full)";
        *retry_s = (long)(na->earliest_until - now_s + 1);
        if (*retry_s < 1)
            *retry_s = 1;
        return NOTIFY_FULL;
    }
    put(na, mac, ts + NOTIFY_WINDOW_S);
    return NOTIFY_OK;
}

enum notify_verdict notify_auth_check(notify_auth *na, const char *secret, const char *signature,
                                      const char *timestamp, const char *authorization,
                                      const char *body, size_t len, int64_t now_s,
                                      const char **reason, long *retry_s)
{
    *retry_s = 0;
    if (signature)
        return check_signature(na, secret, signature, timestamp, body, len, now_s, reason, retry_s);
    if (!authorization || strncmp(authorization, "Bearer ", 7) != 0)
        return deny(reason, "no X-Herald-Signature and no Authorization: Bearer");
    /* digests have one length whatever was sent, so the comparison's time says nothing */
    unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)authorization + 7, strlen(authorization + 7), a);
    SHA256((const unsigned char *)secret, strlen(secret), b);
    if (CRYPTO_memcmp(a, b, sizeof a) != 0)
        return deny(reason, "bad bearer secret");
    return NOTIFY_OK;
}
