/* fuzz_openid.c — libFuzzer target over auth_in's key fetching: the OpenID metadata document (its
 * jwks_uri) and the JWKS it names (RSA keys from n/e, kids, endorsements), through the real
 * auth_in over http_client's fake transport on the virtual clock — the first fetch a check waits
 * for, then, past the refresh floor, the refetch an unknown kid triggers with a second JWKS.
 * After each fetch a token signed with fuzz-key-1 (fuzz_keys.h) is checked. Checked: the waiter
 * is woken exactly once per fetch; a check never stays pending once keys were fetched; a token is
 * accepted only when the metadata was a 200 naming the JWKS and the JWKS holds the kid of the key
 * that signed it, endorsed for the channel; with the real key set it is accepted.
 *
 * Input: byte 0 the metadata status (200 unless it is 1-5: 404, 500, 0 = reset, 301, 200 with the
 * body as is), then "METADATA\0JWKS\0SECOND_JWKS". A metadata part that is empty becomes a
 * real-looking document naming https://login.botframework.com/v1/.well-known/keys. */
#include "auth_in.h"
#include "clock.h"
#include "fuzz_sign.h"
#include "fuzz_util.h"
#include "http_client.h"
#include "log.h"

#include <event2/event.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define METADATA_URL "https://login.botframework.com/v1/.well-known/openidconfiguration"
#define SERVICE_URL "https://smba.trafficmanager.net/amer/"
#define DEFAULT_METADATA                                                                           \
    "{\"issuer\":\"https://api.botframework.com\",\"authorization_endpoint\":"                     \
    "\"https://invalid.botframework.com\",\"jwks_uri\":\"https://login.botframework.com/v1/"        \
    ".well-known/keys\",\"id_token_signing_alg_values_supported\":[\"RS256\"],"                    \
    "\"token_endpoint_auth_methods_supported\":[\"private_key_jwt\"]}"

static struct event_base *base;
static http_client *http;
static char *token_key1, *token_other_kid;

static struct {
    long meta_status;
    const char *meta, *jwks[2];
    int meta_requests, jwks_requests;
} ans;

static void fake(const char *method, const char *url, const char *const *headers, const char *body,
                 size_t body_len, http_fake_answer *a, void *ud)
{
    (void)method, (void)headers, (void)body, (void)body_len, (void)ud;
    if (strcmp(url, METADATA_URL) == 0) {
        ans.meta_requests++;
        a->status = ans.meta_status;
        a->reset = ans.meta_status == 0;
        a->body = strdup(ans.meta);
    } else {
        a->status = 200;
        a->body = strdup(ans.jwks[ans.jwks_requests++ ? 1 : 0]);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    log_set_level(LOG_ERROR + 1);     /* refused key sets are expected */
    base = event_base_new();
    clock_virtual(base, 1798761600000LL);
    http_client_config hc = {.connect_timeout_ms = 5000, .max_host_connections = 8};
    char *err = NULL;
    http = base ? http_client_new(base, &hc, &err) : NULL;
    if (!http)
        abort();
    http_client_set_fake(http, fake, NULL);
    EVP_PKEY *key = fuzz_signing_key();
    char payload[512];
    snprintf(payload, sizeof payload,
             "{\"serviceurl\":\"%s\",\"nbf\":%d,\"exp\":%d,\"iss\":\"%s\",\"aud\":\"%s\"}",
             SERVICE_URL, FUZZ_NOW - 5, FUZZ_NOW + 3600, FUZZ_ISSUER, FUZZ_APP_ID);
    token_key1 = fuzz_sign_token(key, "{\"alg\":\"RS256\",\"kid\":\"" FUZZ_KID "\"}", payload);
    token_other_kid = fuzz_sign_token(key, "{\"alg\":\"RS256\",\"kid\":\"rotated-key\"}", payload);
    EVP_PKEY_free(key);
    return 0;
}

static void woken(void *ud) { ++*(int *)ud; }

/* 1 when the JWKS document names kid with endorsements allowing msteams (or none). */
static int jwks_vouches(const char *jwks, const char *kid)
{
    json_t *doc = json_loads(jwks, 0, NULL), *k;
    size_t i;
    int found = 0;
    json_array_foreach(json_object_get(doc, "keys"), i, k) {
        const char *id = json_string_value(json_object_get(k, "kid"));
        if (!id || strcmp(id, kid) != 0)
            continue;
        json_t *end = json_object_get(k, "endorsements"), *e;
        size_t j;
        int ok = !json_is_array(end) || json_array_size(end) == 0;
        json_array_foreach(end, j, e)
            ok |= json_is_string(e) && strcmp(json_string_value(e), "msteams") == 0;
        found |= ok;
    }
    json_decref(doc);
    return found;
}

/* Checks token after a fetch: accepted only if one of the key sets that may be in effect (doc, or
 * the one before when the new one was unusable; NULL: none) vouches for kid; must be accepted when
 * doc is the real key set and kid its signing key. */
static void check(auth_in *a, const char *token, const char *doc, const char *prev, int metadata_ok,
                  const char *kid)
{
    const char *reason = NULL;
    enum auth_result r = auth_in_check(a, token, SERVICE_URL, "msteams", FUZZ_NOW, &reason);
    FUZZ_CHECK(r != AUTH_PENDING, "still pending after the keys were fetched");
    if (r == AUTH_OK)
        FUZZ_CHECK(metadata_ok && ((doc && jwks_vouches(doc, kid)) ||
                                   (prev && jwks_vouches(prev, kid))),
                   "a token was accepted without a key set vouching for %s", kid);
    else
        FUZZ_CHECK(reason && *reason, "refused without a reason");
    if (metadata_ok && doc && strcmp(doc, FUZZ_JWKS) == 0 && strcmp(kid, FUZZ_KID) == 0)
        FUZZ_CHECK(r == AUTH_OK, "the real key set refused its own token: %s", reason);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    static const long statuses[] = {200, 404, 500, 0, 301, 200};
    long status = data[0] <= 5 ? statuses[data[0]] : 200;
    char *part[3];
    fuzz_split(data + 1, size - 1, '\0', part, 3);
    ans.meta_status = status;
    ans.meta = part[0][0] ? part[0] : DEFAULT_METADATA;
    ans.jwks[0] = part[1] ? part[1] : FUZZ_JWKS;
    ans.jwks[1] = part[2] ? part[2] : ans.jwks[0];
    ans.meta_requests = ans.jwks_requests = 0;

    auth_in_config cfg = {.app_id = FUZZ_APP_ID, .openid_metadata_url = METADATA_URL,
                          .issuer = FUZZ_ISSUER, .clock_skew_s = 300, .refresh_floor_s = 300,
                          .refresh_interval_s = 86400, .token_cache_max = 64};
    char *err = NULL;
    auth_in *a = auth_in_new(base, http, &cfg, &err);
    FUZZ_CHECK(a, "auth_in_new: %s", err ? err : "?");
    auth_in_start(a);
    const char *reason = NULL;
    enum auth_result r = auth_in_check(a, token_key1, SERVICE_URL, "msteams", FUZZ_NOW, &reason);
    int wakes = 0;
    if (r == AUTH_PENDING)
        FUZZ_CHECK(auth_in_wait(a, woken, &wakes) == AUTH_PENDING, "cannot wait");
    clock_settle();
    FUZZ_CHECK(r != AUTH_PENDING || wakes == 1, "woken %d times", wakes);
    FUZZ_CHECK(ans.meta_requests == 1, "%d metadata requests", ans.meta_requests);
    json_t *meta = status == 200 ? json_loads(ans.meta, 0, NULL) : NULL;
    const char *uri = json_string_value(json_object_get(meta, "jwks_uri"));
    int metadata_ok = uri != NULL;
    FUZZ_CHECK(ans.jwks_requests == (metadata_ok && strncmp(uri, "https://", 8) == 0),
               "%d JWKS requests for jwks_uri %s", ans.jwks_requests, uri ? uri : "(none)");
    const char *first = ans.jwks_requests ? ans.jwks[0] : NULL;
    check(a, token_key1, first, NULL, metadata_ok, FUZZ_KID);

    /* a kid the set lacks refetches once the floor has passed; the new set then decides */
    clock_advance(301 * 1000);
    int before = ans.jwks_requests;
    r = auth_in_check(a, token_other_kid, SERVICE_URL, "msteams", FUZZ_NOW, &reason);
    if (r == AUTH_PENDING) {
        wakes = 0;
        FUZZ_CHECK(auth_in_wait(a, woken, &wakes) == AUTH_PENDING, "cannot wait");
        clock_settle();
        FUZZ_CHECK(wakes == 1, "woken %d times on the refetch", wakes);
        const char *doc = ans.jwks_requests > before ? ans.jwks[1] : NULL;
        check(a, token_other_kid, doc, first, metadata_ok, "rotated-key");
        /* the first token is judged by the set in effect now (cached verifications of removed
         * keys must not survive a refresh) */
        check(a, token_key1, doc, first, metadata_ok, FUZZ_KID);
    }
    json_decref(meta);
    auth_in_free(a);
    fuzz_free_parts(part, 3);
    return 0;
}
