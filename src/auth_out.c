/* auth_out.c — client-credentials tokens for the Bot Connector: one request in flight shared by
 * every waiter, the token kept until refresh_ahead_s before expiry and renewed in the background,
 * failures backed off exponentially. Certificates sign an RS256 assertion with x5t. */
#include "auth_out.h"
#include "clock.h"
#include "auth_in.h"
#include "http_client.h"
#include "log.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct waiter {
    auth_out_ready_fn ready;
    void *ud;
    struct waiter *next;
} waiter;

struct auth_out {
    struct event_base *base;
    http_client *http;
    char *token_url, *client_id, *client_secret, *scope;
    long refresh_ahead_s, max_backoff_s;
    EVP_PKEY *key;                /* certificate mode */
    char *x5t;                    /* base64url SHA-1 of the certificate */
    char *token;                  /* never logged */
    int64_t expires_ms;           /* monotonic; token valid before it */
    int64_t retry_after_ms;       /* monotonic; no new request before it after a failure */
    long backoff_s;
    char last_error[256];
    http_request *req;
    waiter *waiters;
    struct event *refresh;
    auth_out_stats stats;
};

static int64_t mono_ms(void) { return clock_mono_ms(); }

static char *dup_nullable(const char *s) { return s ? strdup(s) : NULL; }

static int load_certificate(auth_out *a, const char *cert_path, const char *key_path, char **err)
{
    FILE *f = fopen(cert_path, "r");
    if (!f) {
        if (asprintf(err, "cannot open the certificate %s", cert_path) < 0) *err = NULL;
        return -1;
    }
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    f = fopen(key_path ? key_path : cert_path, "r");
    if (f) {
        a->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (!cert || !a->key) {
        X509_free(cert);
        if (asprintf(err, "%s must hold a PEM certificate and its private key%s",
                     cert_path, key_path ? " (key from the key path)" : "") < 0)
            *err = NULL;
        return -1;
    }
    unsigned char der_sha1[SHA_DIGEST_LENGTH];
    unsigned int n = 0;
    X509_digest(cert, EVP_sha1(), der_sha1, &n);
    X509_free(cert);
    a->x5t = auth_b64url_encode(der_sha1, n);
    return a->x5t ? 0 : -1;
}

/* A signed client assertion: aud = token endpoint, iss = sub = client id, 10-minute life. */
static char *client_assertion(auth_out *a)
{
    unsigned char rnd[16];
    char jti[33];
    RAND_bytes(rnd, sizeof rnd);
    for (int i = 0; i < 16; i++)
        snprintf(jti + 2 * i, 3, "%02x", rnd[i]);
    long now = (long)time(NULL);
    json_t *h = json_pack("{s:s, s:s, s:s}", "alg", "RS256", "typ", "JWT", "x5t", a->x5t);
    json_t *p = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "aud", a->token_url, "iss",
                          a->client_id, "sub", a->client_id, "jti", jti, "nbf", (json_int_t)now,
                          "iat", (json_int_t)now, "exp", (json_int_t)(now + 600));
    char *hs = json_dumps(h, JSON_COMPACT), *ps = json_dumps(p, JSON_COMPACT);
    json_decref(h);
    json_decref(p);
    char *h64 = hs ? auth_b64url_encode((unsigned char *)hs, strlen(hs)) : NULL;
    char *p64 = ps ? auth_b64url_encode((unsigned char *)ps, strlen(ps)) : NULL;
    free(hs);
    free(ps);
    char *signing = NULL, *out = NULL, *s64 = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (h64 && p64 && asprintf(&signing, "%s.%s", h64, p64) > 0 && md &&
        EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, a->key) == 1 &&
        EVP_DigestSign(md, NULL, &siglen, (unsigned char *)signing, strlen(signing)) == 1 &&
        (sig = malloc(siglen)) &&
        EVP_DigestSign(md, sig, &siglen, (unsigned char *)signing, strlen(signing)) == 1 &&
        (s64 = auth_b64url_encode(sig, siglen))) {
        if (asprintf(&out, "%s.%s", signing, s64) < 0)
            out = NULL;
    }
    EVP_MD_CTX_free(md);
    free(h64);
    free(p64);
    free(signing);
    free(sig);
    free(s64);
    return out;
}

static void finish_waiters(auth_out *a, const char *token, const char *error)
{
    waiter *w = a->waiters;
    a->waiters = NULL;
    while (w) {
        waiter *next = w->next;
        w->ready(w->ud, token, error);
        free(w);
        w = next;
    }
}

static void start_request(auth_out *a);

static void on_refresh(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_request(arg);
}

static void arm_refresh(auth_out *a, int64_t in_ms)
{
    clock_timer_add(a->refresh, in_ms);
}

static void fail(auth_out *a, const char *why)
{
    a->stats.failures++;
    snprintf(a->last_error, sizeof a->last_error, "token request failed: %s", why);
    a->backoff_s = a->backoff_s ? a->backoff_s * 2 : 1;
    if (a->backoff_s > a->max_backoff_s)
        a->backoff_s = a->max_backoff_s;
    a->retry_after_ms = mono_ms() + a->backoff_s * 1000;
    log_error("outbound token: %s; retrying in %ld s", a->last_error, a->backoff_s);
    /* keep trying in the background, so the bot recovers without waiting for a send */
    arm_refresh(a, a->backoff_s * 1000);
    finish_waiters(a, NULL, a->last_error);
}

static void on_token(const http_response *res, void *ud)
{
    auth_out *a = ud;
    a->req = NULL;
    json_error_t jerr;
    json_t *root = res->body_len ? json_loadb(res->body, res->body_len, 0, &jerr) : NULL;
    const char *tok = json_string_value(json_object_get(root, "access_token"));
    json_t *exp = json_object_get(root, "expires_in");
    long long expires_in = json_is_integer(exp) ? (long long)json_integer_value(exp)
                           : json_is_string(exp) ? strtoll(json_string_value(exp), NULL, 10) : 3600;
    if (res->status != 200 || !tok || !*tok) {
        char why[200];
        const char *e = json_string_value(json_object_get(root, "error"));
        if (res->status)
            snprintf(why, sizeof why, "HTTP %ld%s%s", res->status, e ? " " : "", e ? e : "");
        else
            snprintf(why, sizeof why, "%s", res->error);
        for (char *p = why; *p; p++)           /* the endpoint's text goes into one log line */
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
        json_decref(root);
        fail(a, why);
        return;
    }
    free(a->token);
    a->token = strdup(tok);
    json_decref(root);
    if (expires_in < 2)
        expires_in = 2;
    if (expires_in > AUTH_OUT_MAX_LIFETIME_S)  /* also keeps the milliseconds below from overflowing */
        expires_in = AUTH_OUT_MAX_LIFETIME_S;
    int64_t now = mono_ms();
    /* refresh ahead of expiry, but never before half the lifetime has passed */
    long long ahead = a->refresh_ahead_s < expires_in / 2 ? a->refresh_ahead_s : expires_in / 2;
    a->expires_ms = now + (int64_t)(expires_in - ahead) * 1000;
    a->backoff_s = 0;
    a->retry_after_ms = 0;
    a->last_error[0] = 0;
    log_info("outbound token acquired expires_in=%lld s (refresh in %lld s)", expires_in,
             expires_in - ahead);
    arm_refresh(a, a->expires_ms - now);
    finish_waiters(a, a->token, NULL);
}

static void start_request(auth_out *a)
{
    if (a->req)
        return;
    a->stats.requests++;
    char *id = curl_easy_escape(NULL, a->client_id, 0);
    char *scope = curl_easy_escape(NULL, a->scope, 0);
    char *secret = NULL, *assertion = NULL, *body = NULL;
    int n;
    if (a->key) {
        assertion = client_assertion(a);
        char *enc = assertion ? curl_easy_escape(NULL, assertion, 0) : NULL;
        n = enc ? asprintf(&body, "grant_type=client_credentials&client_id=%s&scope=%s"
                           "&client_assertion_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Aclient-assertion-type%%3Ajwt-bearer"
                           "&client_assertion=%s", id, scope, enc) : -1;
        curl_free(enc);
    } else {
        secret = curl_easy_escape(NULL, a->client_secret, 0);
        n = asprintf(&body, "grant_type=client_credentials&client_id=%s&client_secret=%s&scope=%s",
                     id, secret, scope);
    }
    curl_free(id);
    curl_free(scope);
    curl_free(secret);
    free(assertion);
    if (n < 0) {
        fail(a, "cannot build the request");
        return;
    }
    static const char *const headers[] = {"Content-Type: application/x-www-form-urlencoded",
                                          "Accept: application/json", NULL};
    char *err = NULL;
    a->req = http_client_request(a->http, "POST", a->token_url, headers, body, strlen(body), 15000,
                                 on_token, a, &err);
    explicit_bzero(body, strlen(body));
    free(body);
    if (!a->req) {
        fail(a, err ? err : "cannot start the request");
        free(err);
    }
}

auth_out *auth_out_new(struct event_base *base, http_client *http, const auth_out_config *cfg,
                       char **err)
{
    if (!cfg->token_url || !cfg->client_id || !cfg->scope ||
        (!cfg->client_secret && !cfg->cert_path)) {
        *err = strdup("outbound auth needs a token URL, a client id, a scope and a secret or a "
                      "certificate");
        return NULL;
    }
    auth_out *a = calloc(1, sizeof *a);
    if (!a) {
        *err = strdup("out of memory");
        return NULL;
    }
    a->base = base;
    a->http = http;
    a->token_url = strdup(cfg->token_url);
    a->client_id = strdup(cfg->client_id);
    a->client_secret = dup_nullable(cfg->client_secret);
    a->scope = strdup(cfg->scope);
    a->refresh_ahead_s = cfg->refresh_ahead_s > 0 ? cfg->refresh_ahead_s : 300;
    a->max_backoff_s = cfg->max_backoff_s > 0 ? cfg->max_backoff_s : 60;
    a->refresh = evtimer_new(base, on_refresh, a);
    if (!a->refresh || (cfg->cert_path && load_certificate(a, cfg->cert_path, cfg->key_path, err) < 0)) {
        if (!*err)
            *err = strdup("cannot set up outbound auth");
        auth_out_free(a);
        return NULL;
    }
    return a;
}

void auth_out_free(auth_out *a)
{
    if (!a)
        return;
    if (a->req)
        http_request_cancel(a->req);
    if (a->refresh)
        clock_timer_free(a->refresh);
    while (a->waiters) {
        waiter *n = a->waiters->next;
        free(a->waiters);
        a->waiters = n;
    }
    if (a->token)
        explicit_bzero(a->token, strlen(a->token));
    if (a->client_secret)
        explicit_bzero(a->client_secret, strlen(a->client_secret));
    free(a->token);
    free(a->token_url);
    free(a->client_id);
    free(a->client_secret);
    free(a->scope);
    free(a->x5t);
    EVP_PKEY_free(a->key);
    free(a);
}

const char *auth_out_current(auth_out *a)
{
    if (a->token && mono_ms() < a->expires_ms)
        return a->token;
    return NULL;
}

int auth_out_wait(auth_out *a, auth_out_ready_fn ready, void *ud, const char **error)
{
    if (!a->req && a->retry_after_ms && mono_ms() < a->retry_after_ms) {
        *error = a->last_error[0] ? a->last_error : "token service unavailable";
        return -1;
    }
    waiter *w = malloc(sizeof *w);
    if (!w) {
        *error = "out of memory";
        return -1;
    }
    w->ready = ready;
    w->ud = ud;
    w->next = a->waiters;
    a->waiters = w;
    start_request(a);
    return 0;
}

void auth_out_unwait(auth_out *a, void *ud)
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

void auth_out_get_stats(const auth_out *a, auth_out_stats *out) { *out = a->stats; }
