/* auth_in.c — validates inbound Bot Framework tokens: RS256 signatures against the channel's JWKS
 * (fetched through http_client, refreshed periodically and on unknown kids with a floor), the
 * claims Teams puts in them, and a cache of verified tokens so RSA runs once per token. */
#include "auth_in.h"
#include "clock.h"
#include "http_client.h"
#include "log.h"

#include <event2/event.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_TOKEN_BYTES 16384      /* real channel tokens are ~1.5 KB; more is an attack or a bug */
#define MIN_RSA_BITS 2048

typedef struct jwk {
    char *kid;
    EVP_PKEY *pkey;
    char **endorsements;          /* NULL-terminated; NULL when the key publishes none */
} jwk;

typedef struct keyset {
    jwk *keys;
    size_t n;
} keyset;

typedef struct cached_token {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    int64_t exp;                  /* 0: empty slot */
    char *service_url;
    char *kid;
} cached_token;

typedef struct waiter {
    void (*wake)(void *ud);
    void *ud;
    struct waiter *next;
} waiter;

struct auth_in {
    struct event_base *base;
    http_client *http;
    auth_in_config cfg;
    char *app_id, *metadata_url, *issuer;
    keyset ks;
    int have_keys;
    http_request *req;            /* metadata or JWKS fetch in flight */
    int64_t fetch_started_ms;     /* monotonic: start of the fetch in flight (its budget) */
    int64_t last_done_ms;         /* monotonic: when the last fetch ended; 0 never */
    long retry_step_ms;           /* backoff of the background retry; 0 after a success */
    struct event *refresh_timer;  /* periodic refresh */
    struct event *retry_timer;    /* background retry after a failed fetch */
    waiter *waiters;
    int waking;                   /* inside wake_all: rechecks never wait again */
    cached_token *cache;
    size_t cache_slots;           /* power of two */
    auth_in_stats stats;
};

static int64_t mono_ms(void) { return clock_mono_ms(); }

/* ---- base64url ------------------------------------------------------------------------- */

unsigned char *auth_b64url_decode(const char *s, size_t len, size_t *out_len)
{
    if (len % 4 == 1)
        return NULL;
    size_t padded = (len + 3) / 4 * 4;
    char *tmp = malloc(padded + 1);
    unsigned char *out = malloc(padded / 4 * 3 + 1);
    if (!tmp || !out)
        goto bad;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '-') c = '+';
        else if (c == '_') c = '/';
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            goto bad;             /* '+', '/', '=' and anything else are not base64url */
        tmp[i] = c;
    }
    for (size_t i = len; i < padded; i++)
        tmp[i] = '=';
    tmp[padded] = 0;
    int n = padded ? EVP_DecodeBlock(out, (unsigned char *)tmp, (int)padded) : 0;
    if (n < 0)
        goto bad;
    *out_len = (size_t)n - (padded - len);   /* EVP_DecodeBlock counts padding as zero bytes */
    free(tmp);
    return out;
bad:
    free(tmp);
    free(out);
    return NULL;
}

char *auth_b64url_encode(const unsigned char *p, size_t len)
{
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    int n = EVP_EncodeBlock((unsigned char *)out, p, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = 0;
    for (char *c = out; *c; c++)
        if (*c == '+') *c = '-';
        else if (*c == '/') *c = '_';
    return out;
}

/* ---- keys -------------------------------------------------------------------------------- */

static void keyset_clear(keyset *ks)
{
    for (size_t i = 0; i < ks->n; i++) {
        free(ks->keys[i].kid);
        EVP_PKEY_free(ks->keys[i].pkey);
        if (ks->keys[i].endorsements) {
            for (char **e = ks->keys[i].endorsements; *e; e++)
                free(*e);
            free(ks->keys[i].endorsements);
        }
    }
    free(ks->keys);
    ks->keys = NULL;
    ks->n = 0;
}

static EVP_PKEY *rsa_from_jwk(const char *n64, const char *e64)
{
    size_t nl, el;
    unsigned char *nb = auth_b64url_decode(n64, strlen(n64), &nl);
    unsigned char *eb = auth_b64url_decode(e64, strlen(e64), &el);
    BIGNUM *n = nb ? BN_bin2bn(nb, (int)nl, NULL) : NULL;
    BIGNUM *e = eb ? BN_bin2bn(eb, (int)el, NULL) : NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    if (!n || !e || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
        !(params = OSSL_PARAM_BLD_to_param(bld)) ||
        !(ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    if (pkey && EVP_PKEY_get_bits(pkey) < MIN_RSA_BITS) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    free(nb);
    free(eb);
    return pkey;
}

/* Parses a JWKS document; keys that are not usable RSA keys are skipped. 0, or -1 when the
 * document itself is not a JWKS. */
static int keyset_parse(const char *json, size_t len, keyset *out)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    json_t *keys = root ? json_object_get(root, "keys") : NULL;
    if (!json_is_array(keys)) {
        json_decref(root);
        return -1;
    }
    size_t n = json_array_size(keys);
    out->keys = calloc(n ? n : 1, sizeof *out->keys);
    out->n = 0;
    if (!out->keys) {
        json_decref(root);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *k = json_array_get(keys, i);
        const char *kid = json_string_value(json_object_get(k, "kid"));
        const char *kty = json_string_value(json_object_get(k, "kty"));
        const char *nn = json_string_value(json_object_get(k, "n"));
        const char *ee = json_string_value(json_object_get(k, "e"));
        if (!kid || !nn || !ee || (kty && strcmp(kty, "RSA") != 0))
            continue;
        EVP_PKEY *pkey = rsa_from_jwk(nn, ee);
        if (!pkey)
            continue;
        jwk *j = &out->keys[out->n++];
        j->kid = strdup(kid);
        j->pkey = pkey;
        json_t *end = json_object_get(k, "endorsements");
        if (json_is_array(end) && json_array_size(end) > 0) {
            size_t m = json_array_size(end), w = 0;
            j->endorsements = calloc(m + 1, sizeof *j->endorsements);
            for (size_t x = 0; j->endorsements && x < m; x++)
                if (json_is_string(json_array_get(end, x)))
                    j->endorsements[w++] = strdup(json_string_value(json_array_get(end, x)));
        }
    }
    json_decref(root);
    return 0;
}

static const jwk *keyset_find(const keyset *ks, const char *kid)
{
    for (size_t i = 0; i < ks->n; i++)
        if (strcmp(ks->keys[i].kid, kid) == 0)
            return &ks->keys[i];
    return NULL;
}

/* ---- claims ------------------------------------------------------------------------------ */

/* Compares service URLs the way Teams SDK v2 does: case-insensitive, one trailing '/' ignored. */
static int same_service_url(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la && a[la - 1] == '/') la--;
    if (lb && b[lb - 1] == '/') lb--;
    return la == lb && strncasecmp(a, b, la) == 0;
}

static int endorsed(const jwk *k, const char *channel_id)
{
    if (!k->endorsements || !channel_id || !*channel_id)
        return 1;
    for (char **e = k->endorsements; *e; e++)
        if (strcmp(*e, channel_id) == 0)
            return 1;
    return 0;
}

static int aud_matches(json_t *aud, const char *app_id)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), app_id) == 0;
    if (json_is_array(aud)) {
        size_t i;
        json_t *v;
        json_array_foreach(aud, i, v)
            if (json_is_string(v) && strcmp(json_string_value(v), app_id) == 0)
                return 1;
    }
    return 0;
}

typedef struct verified {
    int64_t exp;
    char *service_url;            /* malloc'd */
    const jwk *key;
} verified;

/* Full validation of a compact JWS. On AUTH_OK fills *v. *unknown_kid is set when the only
 * problem is a kid the key set does not have. */
static enum auth_result verify_token(const keyset *ks, const auth_in_config *cfg, const char *token,
                                     size_t tlen, int64_t now_s, const char **reason,
                                     int *unknown_kid, verified *v)
{
    enum auth_result r = AUTH_DENIED;
    unsigned char *hdr = NULL, *pl = NULL, *sig = NULL;
    json_t *h = NULL, *p = NULL;
    EVP_MD_CTX *md = NULL;
    size_t hl, pll, sl;
    *unknown_kid = 0;
    const char *d1 = memchr(token, '.', tlen);
    const char *d2 = d1 ? memchr(d1 + 1, '.', tlen - (size_t)(d1 + 1 - token)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', tlen - (size_t)(d2 + 1 - token))) {
        *reason = "token is not a compact JWS (three dot-separated parts)";
        goto out;
    }
    if (!(hdr = auth_b64url_decode(token, (size_t)(d1 - token), &hl)) ||
        !(pl = auth_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &pll)) ||
        !(sig = auth_b64url_decode(d2 + 1, tlen - (size_t)(d2 + 1 - token), &sl))) {
        *reason = "token part is not base64url";
        goto out;
    }
    json_error_t jerr;
    if (!(h = json_loadb((char *)hdr, hl, 0, &jerr)) || !json_is_object(h)) {
        *reason = "token header is not a JSON object";
        goto out;
    }
    const char *alg = json_string_value(json_object_get(h, "alg"));
    if (!alg || strcmp(alg, "RS256") != 0) {
        *reason = "token algorithm is not RS256";
        goto out;
    }
    const char *kid = json_string_value(json_object_get(h, "kid"));
    if (!kid) {
        *reason = "token header has no kid";
        goto out;
    }
    if (!(p = json_loadb((char *)pl, pll, 0, &jerr)) || !json_is_object(p)) {
        *reason = "token payload is not a JSON object";
        goto out;
    }
    const char *iss = json_string_value(json_object_get(p, "iss"));
    if (!iss || strcmp(iss, cfg->issuer) != 0) {
        *reason = "wrong issuer";
        goto out;
    }
    const jwk *key = keyset_find(ks, kid);
    if (!key) {
        *reason = "unknown signing key (kid)";
        *unknown_kid = 1;
        goto out;
    }
    if (!(md = EVP_MD_CTX_new()) ||
        EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key->pkey) != 1 ||
        EVP_DigestVerify(md, sig, sl, (const unsigned char *)token, (size_t)(d2 - token)) != 1) {
        *reason = "bad signature";
        goto out;
    }
    json_t *exp = json_object_get(p, "exp"), *nbf = json_object_get(p, "nbf");
    if (!json_is_number(exp)) {
        *reason = "token has no exp";
        goto out;
    }
    if ((double)now_s > json_number_value(exp) + (double)cfg->clock_skew_s) {
        *reason = "token expired";
        goto out;
    }
    if (nbf && (!json_is_number(nbf) || (double)now_s < json_number_value(nbf) - (double)cfg->clock_skew_s)) {
        *reason = "token not yet valid (nbf)";
        goto out;
    }
    if (!aud_matches(json_object_get(p, "aud"), cfg->app_id)) {
        *reason = "wrong audience";
        goto out;
    }
    const char *surl = json_string_value(json_object_get(p, "serviceurl"));
    if (!surl || !*surl) {
        *reason = "token has no serviceurl claim";
        goto out;
    }
    /* clamp before converting: a signed token may carry any double, and casting one past
     * INT64_MAX is undefined behaviour */
    double e = json_number_value(exp);
    v->exp = e > 4e15 ? (int64_t)4e15 : (int64_t)e;
    v->service_url = strdup(surl);
    v->key = key;
    r = v->service_url ? AUTH_OK : AUTH_DENIED;
out:
    EVP_MD_CTX_free(md);
    json_decref(h);
    json_decref(p);
    free(hdr);
    free(pl);
    free(sig);
    return r;
}

/* The activity-dependent checks, shared by fresh and cached verifications. */
static enum auth_result check_activity(const char *token_service_url, const jwk *key,
                                       const char *service_url, const char *channel_id,
                                       const char **reason)
{
    if (!service_url || !same_service_url(token_service_url, service_url)) {
        *reason = "serviceurl claim differs from the activity's serviceUrl";
        return AUTH_DENIED;
    }
    if (!endorsed(key, channel_id)) {
        *reason = "signing key is not endorsed for the activity's channelId";
        return AUTH_DENIED;
    }
    return AUTH_OK;
}

/* "Bearer <token>" → token, or NULL with *reason. */
static const char *bearer_token(const char *authorization, size_t *len, const char **reason)
{
    if (!authorization || !*authorization) {
        *reason = "no Authorization header";
        return NULL;
    }
    if (strncmp(authorization, "Bearer ", 7) != 0) {
        *reason = "Authorization is not a Bearer token";
        return NULL;
    }
    const char *t = authorization + 7;
    *len = strlen(t);
    if (*len == 0 || strchr(t, ' ')) {
        *reason = "malformed Bearer token";
        return NULL;
    }
    if (*len > MAX_TOKEN_BYTES) {
        *reason = "token too large";
        return NULL;
    }
    return t;
}

enum auth_result auth_in_verify_with_jwks(const char *jwks_json, const auth_in_config *cfg,
                                          const char *authorization, const char *service_url,
                                          const char *channel_id, int64_t now_s,
                                          const char **reason)
{
    keyset ks = {0};
    if (keyset_parse(jwks_json, strlen(jwks_json), &ks) < 0) {
        *reason = "bad JWKS";
        return AUTH_DENIED;
    }
    size_t tlen;
    const char *token = bearer_token(authorization, &tlen, reason);
    enum auth_result r = AUTH_DENIED;
    if (token) {
        int unknown;
        verified v = {0};
        r = verify_token(&ks, cfg, token, tlen, now_s, reason, &unknown, &v);
        if (r == AUTH_OK)
            r = check_activity(v.service_url, v.key, service_url, channel_id, reason);
        free(v.service_url);
    }
    keyset_clear(&ks);
    return r;
}

/* ---- fetching ----------------------------------------------------------------------------

   One fetch (metadata, then the JWKS it names) is in flight at most, and it ends within
   cfg.fetch_timeout_ms, success or not. A check may wait only for that fetch, or start one when
   the floor has passed since the last fetch *ended*, so an unknown kid costs at most one fetch per
   floor however slow the key service is; and the rechecks run when a fetch ends (inside wake_all)
   never wait again, so a request waits for one fetch at most. Counting the floor from the start of
   the last fetch, as before, let a fetch slower than the floor, or a floor of 0, refetch forever
   for one request. A failed fetch is retried in the background with exponential backoff and
   jitter (at start and at refresh alike), so recovery waits neither for a request nor for the
   floor; a successful fetch resets the backoff. */

static int fetch_keys(auth_in *a);

static void wake_all(auth_in *a)
{
    waiter *w = a->waiters;
    a->waiters = NULL;
    a->waking++;
    while (w) {
        waiter *next = w->next;
        w->wake(w->ud);
        free(w);
        w = next;
    }
    a->waking--;
}

/* The next background retry: base, 2×base, 4×base … up to max, each stretched by a random part of
 * up to half, so the steps still grow and many herald processes do not retry in step. */
static int64_t next_retry_ms(auth_in *a)
{
    long d = a->retry_step_ms ? a->retry_step_ms * 2 : a->cfg.retry_base_ms;
    if (d > a->cfg.retry_max_ms)
        d = a->cfg.retry_max_ms;
    a->retry_step_ms = d;
    uint32_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        r = 0;
    return (int64_t)d + (int64_t)(r % (uint32_t)(d / 2 + 1));
}

static void fetch_failed(auth_in *a, const char *why)
{
    a->req = NULL;
    a->last_done_ms = mono_ms();
    a->stats.key_fetch_failures++;
    int64_t retry = next_retry_ms(a);
    clock_timer_add(a->retry_timer, retry);
    log_error("cannot refresh the channel's signing keys: %s (keeping %zu known key(s)); "
              "retrying in %lld ms", why, a->ks.n, (long long)retry);
    wake_all(a);
}

/* What is left of the fetch's budget for its next request; at least 1 ms. */
static long budget_left_ms(const auth_in *a)
{
    int64_t left = a->fetch_started_ms + a->cfg.fetch_timeout_ms - mono_ms();
    return left < 1 ? 1 : (long)left;
}

static void on_jwks(const http_response *res, void *ud)
{
    auth_in *a = ud;
    keyset ks = {0};
    if (res->status != 200 || keyset_parse(res->body, res->body_len, &ks) < 0 || ks.n == 0) {
        keyset_clear(&ks);
        fetch_failed(a, res->status ? "JWKS answer is not a usable key set" : res->error);
        return;
    }
    a->req = NULL;
    a->last_done_ms = mono_ms();
    a->retry_step_ms = 0;
    clock_timer_del(a->retry_timer);
    keyset_clear(&a->ks);
    a->ks = ks;
    a->have_keys = 1;
    a->stats.key_fetches++;
    a->stats.keys = (int)ks.n;
    /* a key that left the set must not keep validating cached tokens */
    for (size_t i = 0; i < a->cache_slots; i++) {
        free(a->cache[i].service_url);
        free(a->cache[i].kid);
    }
    memset(a->cache, 0, a->cache_slots * sizeof *a->cache);
    log_info("channel signing keys refreshed keys=%zu", ks.n);
    wake_all(a);
}

static void on_metadata(const http_response *res, void *ud)
{
    auth_in *a = ud;
    json_error_t jerr;
    json_t *root = res->status == 200 ? json_loadb(res->body, res->body_len, 0, &jerr) : NULL;
    const char *uri = json_string_value(json_object_get(root, "jwks_uri"));
    if (!uri) {
        json_decref(root);
        fetch_failed(a, res->status ? "OpenID metadata has no jwks_uri" : res->error);
        return;
    }
    char *err = NULL;
    a->req = http_client_request(a->http, "GET", uri, NULL, NULL, 0, budget_left_ms(a), on_jwks, a,
                                 &err);
    json_decref(root);
    if (!a->req) {
        fetch_failed(a, err ? err : "cannot start the JWKS request");
        free(err);
    }
}

/* Starts a fetch unless one is in flight. 0, or -1 when it could not even start (then it counts
 * as a failed fetch: the background retry is armed and waiters are woken). */
static int fetch_keys(auth_in *a)
{
    if (a->req)
        return 0;
    a->fetch_started_ms = mono_ms();
    char *err = NULL;
    a->req = http_client_request(a->http, "GET", a->metadata_url, NULL, NULL, 0,
                                 a->cfg.fetch_timeout_ms, on_metadata, a, &err);
    if (!a->req) {
        fetch_failed(a, err ? err : "cannot start the metadata request");
        free(err);
        return -1;
    }
    return 0;
}

/* 1 when a check may wait for keys: a fetch is in flight, or none ended within the floor. Never
 * while fetch results are being handed out (see above). */
static int may_wait(const auth_in *a)
{
    if (a->waking)
        return 0;
    if (a->req)
        return 1;
    return !a->last_done_ms || mono_ms() - a->last_done_ms >= (int64_t)a->cfg.refresh_floor_s * 1000;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fetch_keys(arg);
}

auth_in *auth_in_new(struct event_base *base, http_client *http, const auth_in_config *cfg,
                     char **err)
{
    if (!cfg->app_id || !cfg->openid_metadata_url || !cfg->issuer) {
        *err = strdup("auth_in needs an app id, an OpenID metadata URL and an issuer");
        return NULL;
    }
    auth_in *a = calloc(1, sizeof *a);
    if (!a) {
        *err = strdup("out of memory");
        return NULL;
    }
    a->base = base;
    a->http = http;
    a->cfg = *cfg;
    a->cfg.app_id = a->app_id = strdup(cfg->app_id);
    a->cfg.openid_metadata_url = a->metadata_url = strdup(cfg->openid_metadata_url);
    a->cfg.issuer = a->issuer = strdup(cfg->issuer);
    /* 0 (or less) means the default everywhere: a floor of 0 is never honoured */
    if (a->cfg.clock_skew_s <= 0) a->cfg.clock_skew_s = 300;
    if (a->cfg.refresh_interval_s <= 0) a->cfg.refresh_interval_s = 86400;
    if (a->cfg.refresh_floor_s <= 0) a->cfg.refresh_floor_s = 300;
    if (a->cfg.fetch_timeout_ms <= 0) a->cfg.fetch_timeout_ms = 10000;
    if (a->cfg.retry_base_ms <= 0) a->cfg.retry_base_ms = 500;
    if (a->cfg.retry_max_ms < a->cfg.retry_base_ms)
        a->cfg.retry_max_ms = a->cfg.retry_base_ms > 60000 ? a->cfg.retry_base_ms : 60000;
    size_t want = cfg->token_cache_max ? cfg->token_cache_max : 10000;
    a->cache_slots = 64;
    while (a->cache_slots < want)
        a->cache_slots <<= 1;
    a->cache = calloc(a->cache_slots, sizeof *a->cache);
    a->refresh_timer = event_new(base, -1, EV_PERSIST, on_timer, a);
    a->retry_timer = evtimer_new(base, on_timer, a);
    if (!a->cache || !a->refresh_timer || !a->retry_timer || !a->app_id || !a->metadata_url ||
        !a->issuer) {
        auth_in_free(a);
        *err = strdup("out of memory");
        return NULL;
    }
    clock_timer_add(a->refresh_timer, (int64_t)a->cfg.refresh_interval_s * 1000);
    return a;
}

void auth_in_free(auth_in *a)
{
    if (!a)
        return;
    if (a->req)
        http_request_cancel(a->req);
    if (a->refresh_timer)
        clock_timer_free(a->refresh_timer);
    if (a->retry_timer)
        clock_timer_free(a->retry_timer);
    while (a->waiters) {
        waiter *n = a->waiters->next;
        free(a->waiters);
        a->waiters = n;
    }
    for (size_t i = 0; a->cache && i < a->cache_slots; i++) {
        free(a->cache[i].service_url);
        free(a->cache[i].kid);
    }
    free(a->cache);
    keyset_clear(&a->ks);
    free(a->app_id);
    free(a->metadata_url);
    free(a->issuer);
    free(a);
}

void auth_in_start(auth_in *a) { fetch_keys(a); }

void auth_in_get_stats(const auth_in *a, auth_in_stats *out) { *out = a->stats; }

void auth_in_forget(auth_in *a, void *ud)
{
    for (waiter **pp = &a->waiters; *pp;) {
        if ((*pp)->ud == ud) {
            waiter *w = *pp;
            *pp = w->next;
            free(w);
        } else {
            pp = &(*pp)->next;
        }
    }
}

enum auth_result auth_in_wait(auth_in *a, void (*wake)(void *ud), void *ud)
{
    /* start the fetch before registering, so a fetch that fails at once wakes nobody who is
       still being set up */
    if (fetch_keys(a) < 0)
        return AUTH_UNAVAILABLE;
    waiter *w = malloc(sizeof *w);
    if (!w)
        return AUTH_UNAVAILABLE;
    w->wake = wake;
    w->ud = ud;
    w->next = a->waiters;
    a->waiters = w;
    return AUTH_PENDING;
}

enum auth_result auth_in_check(auth_in *a, const char *authorization, const char *service_url,
                               const char *channel_id, int64_t now_s, const char **reason)
{
    size_t tlen;
    const char *token = bearer_token(authorization, &tlen, reason);
    if (!token) {
        a->stats.denied++;
        return AUTH_DENIED;
    }
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)token, tlen, digest);
    size_t slot;
    memcpy(&slot, digest, sizeof slot);
    cached_token *c = &a->cache[slot & (a->cache_slots - 1)];
    if (c->exp && memcmp(c->digest, digest, sizeof digest) == 0) {
        const jwk *key = keyset_find(&a->ks, c->kid);
        if (key && now_s <= c->exp + a->cfg.clock_skew_s) {
            a->stats.cache_hits++;
            enum auth_result r = check_activity(c->service_url, key, service_url, channel_id, reason);
            if (r != AUTH_OK)
                a->stats.denied++;
            return r;
        }
    }
    if (!a->have_keys) {
        if (may_wait(a))
            return AUTH_PENDING;
        *reason = "the channel's signing keys are unavailable";
        return AUTH_UNAVAILABLE;
    }
    int unknown_kid;
    verified v = {0};
    enum auth_result r = verify_token(&a->ks, &a->cfg, token, tlen, now_s, reason, &unknown_kid, &v);
    if (r != AUTH_OK) {
        if (unknown_kid && may_wait(a))
            return AUTH_PENDING;
        a->stats.denied++;
        return r;
    }
    a->stats.verified++;
    r = check_activity(v.service_url, v.key, service_url, channel_id, reason);
    if (r != AUTH_OK) {
        a->stats.denied++;
        free(v.service_url);
        return r;
    }
    free(c->service_url);
    free(c->kid);
    memcpy(c->digest, digest, sizeof digest);
    c->exp = v.exp;
    c->service_url = v.service_url;
    c->kid = strdup(v.key->kid);
    return AUTH_OK;
}
