/* fuzz_jwt.c — libFuzzer target over auth_in_verify_with_jwks(): the JWT parser (Bearer scheme,
 * compact JWS split, base64url, header and payload JSON) and every claim check (alg, kid, issuer,
 * signature, exp/nbf, audience, serviceurl, endorsements) against a fixed JWKS (fuzz_keys.h).
 *
 * Input, first byte picks the mode (tests/fuzz/make_corpus.py writes seeds of both):
 *   even: raw    — "AUTHORIZATION\nSERVICE_URL\nCHANNEL_ID"; the bytes are the header as sent.
 *   odd:  signed — "HEADER_JSON\0PAYLOAD_JSON\0SERVICE_URL\0CHANNEL_ID"; the harness encodes and
 *                  signs (RS256, key fuzz-key-1), so the checks behind the signature are reached
 *                  with fuzzed claims. A result of AUTH_OK is cross-checked against the claims.
 * Build and run: make fuzz FUZZ_TARGETS=jwt (60 s), or a short run from tests/run_all.sh. */
#include "auth_in.h"
#include "log.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_sign.h"
#include "fuzz_util.h"

static EVP_PKEY *signing_key;
static const auth_in_config cfg = {.app_id = FUZZ_APP_ID, .openid_metadata_url = "https://unused.invalid/",
                                   .issuer = FUZZ_ISSUER, .clock_skew_s = 300};

static char *sign_token(const char *header, const char *payload)
{
    return fuzz_sign_token(signing_key, header, payload);
}

static enum auth_result check(const char *auth, const char *su, const char *ch, const char **reason)
{
    *reason = NULL;
    enum auth_result r = auth_in_verify_with_jwks(FUZZ_JWKS, &cfg, auth, su, ch, FUZZ_NOW, reason);
    if (r != AUTH_OK && r != AUTH_DENIED)
        abort();                                   /* the pure check never pends */
    if (r == AUTH_DENIED && (!*reason || !**reason))
        abort();                                   /* a denial always says why */
    return r;
}

/* An independent reading of what an accepted token must say: alg RS256, iss, aud (or one of an
 * array), a non-empty serviceurl, a numeric exp not past FUZZ_NOW + skew. */
static int claims_say_ok(const char *header, const char *payload)
{
    json_error_t e;
    json_t *h = json_loads(header, 0, &e), *p = json_loads(payload, 0, &e);
    int ok = json_is_object(h) && json_is_object(p);
    if (ok) {
        const char *alg = json_string_value(json_object_get(h, "alg"));
        const char *iss = json_string_value(json_object_get(p, "iss"));
        const char *su = json_string_value(json_object_get(p, "serviceurl"));
        json_t *aud = json_object_get(p, "aud"), *exp = json_object_get(p, "exp");
        int aud_ok = json_is_string(aud) && strcmp(json_string_value(aud), FUZZ_APP_ID) == 0;
        size_t i;
        json_t *v;
        if (json_is_array(aud))
            json_array_foreach(aud, i, v)
                aud_ok |= json_is_string(v) && strcmp(json_string_value(v), FUZZ_APP_ID) == 0;
        ok = alg && strcmp(alg, "RS256") == 0 && iss && strcmp(iss, FUZZ_ISSUER) == 0 && su && *su &&
             aud_ok && json_is_number(exp) && json_number_value(exp) + 300 >= FUZZ_NOW;
    }
    json_decref(h);
    json_decref(p);
    return ok;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR);
    signing_key = fuzz_signing_key();
    /* self-test: the harness is only meaningful if a good token passes and a bad one does not */
    char payload[512];
    snprintf(payload, sizeof payload,
             "{\"serviceurl\":\"https://smba.trafficmanager.net/amer/\",\"nbf\":%d,\"exp\":%d,"
             "\"iss\":\"%s\",\"aud\":\"%s\"}", FUZZ_NOW - 5, FUZZ_NOW + 3600, FUZZ_ISSUER, FUZZ_APP_ID);
    char *auth = sign_token("{\"alg\":\"RS256\",\"kid\":\"" FUZZ_KID "\"}", payload);
    const char *reason;
    if (check(auth, "https://smba.trafficmanager.net/amer", "msteams", &reason) != AUTH_OK) {
        fprintf(stderr, "fuzz_jwt: self-test token refused: %s\n", reason);
        abort();
    }
    if (check(auth, "https://evil.example/", "msteams", &reason) != AUTH_DENIED ||
        check(auth, "https://smba.trafficmanager.net/amer/", "skype", &reason) != AUTH_DENIED) {
        fprintf(stderr, "fuzz_jwt: self-test: a mismatching activity passed\n");
        abort();
    }
    auth[strlen(auth) - 2] ^= 1;                  /* flip a signature bit */
    if (check(auth, "https://smba.trafficmanager.net/amer/", "msteams", &reason) != AUTH_DENIED) {
        fprintf(stderr, "fuzz_jwt: self-test: a bad signature passed\n");
        abort();
    }
    free(auth);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 70000)
        return 0;
    const char *reason;
    char *parts[4];
    if ((data[0] & 1) == 0) {
        fuzz_split(data + 1, size - 1, '\n', parts, 3);
        check(parts[0], parts[1] ? parts[1] : "https://smba.trafficmanager.net/amer/",
              parts[2] ? parts[2] : "msteams", &reason);
        for (int i = 0; i < 3; i++)
            free(parts[i]);
        return 0;
    }
    fuzz_split(data + 1, size - 1, '\0', parts, 4);
    if (parts[1]) {
        char *auth = sign_token(parts[0], parts[1]);
        const char *su = parts[2] ? parts[2] : "https://smba.trafficmanager.net/amer/";
        const char *ch = parts[3] ? parts[3] : "msteams";
        if (check(auth, su, ch, &reason) == AUTH_OK && !claims_say_ok(parts[0], parts[1])) {
            fprintf(stderr, "fuzz_jwt: accepted a token whose header/claims do not pass\n");
            abort();
        }
        free(auth);
    }
    for (int i = 0; i < 4; i++)
        free(parts[i]);
    return 0;
}
