/* test_notify_auth.c — the /api/notify rule: trigger names map one-to-one onto secret variables,
 * timestamped signatures inside the window are good once, the body-only form is refused, a full
 * replay cache refuses (and recovers once entries expire), bearer secrets still work. */
#include "notify_auth.h"
#include "unit.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET "s3cret-for-tests"
#define NOW 1800000000LL

/* "sha256=" + hex HMAC-SHA256(secret, msg) */
static void signature_of(const char *secret, const char *msg, size_t len, char *out)
{
    unsigned char mac[32];
    unsigned int n = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg, len, mac, &n);
    strcpy(out, "sha256=");
    for (int i = 0; i < 32; i++)
        sprintf(out + 7 + 2 * i, "%02x", mac[i]);
}

/* A signature over ts "." body. */
static void sign_ts(const char *secret, long long ts, const char *body, char *sig, char *tsbuf)
{
    char msg[512];
    sprintf(tsbuf, "%lld", ts);
    int n = snprintf(msg, sizeof msg, "%s.%s", tsbuf, body);
    signature_of(secret, msg, (size_t)n, sig);
}

static enum notify_verdict check(notify_auth *na, const char *sig, const char *ts, const char *auth,
                                 const char *body, long long now, const char **reason)
{
    long retry;
    *reason = NULL;
    return notify_auth_check(na, SECRET, sig, ts, auth, body, strlen(body), now, reason, &retry);
}

static void test_names_map_one_to_one(void)
{
    char var[128];
    const char *secret;
    CHECK_INT(notify_auth_secret("deploy-prod", &secret, var, sizeof var), 0);
    CHECK_STR(var, "HERALD_NOTIFY_SECRET_DEPLOY_PROD");
    const char *refused[] = {"deploy.prod", "deploy_prod", "Deploy-prod", "DEPLOY", "", "a b", "a/b",
                             "é", "x\n"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        CHECK_INT(notify_auth_secret(refused[i], &secret, var, sizeof var), -1);
    char longest[NOTIFY_NAME_MAX + 2];
    memset(longest, 'a', sizeof longest);
    longest[NOTIFY_NAME_MAX] = 0;
    CHECK_INT(notify_auth_secret(longest, &secret, var, sizeof var), 0);
    longest[NOTIFY_NAME_MAX] = 'a';
    longest[NOTIFY_NAME_MAX + 1] = 0;
    CHECK_INT(notify_auth_secret(longest, &secret, var, sizeof var), -1);
    /* every accepted name of up to three characters (from a wider alphabet) maps back to itself:
       the mapping is injective, so no two triggers share a variable */
    const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";
    size_t k = sizeof alphabet - 1, accepted = 0, bad = 0;
    for (size_t len = 1; len <= 3; len++) {
        size_t total = 1;
        for (size_t i = 0; i < len; i++)
            total *= k;
        for (size_t n = 0; n < total; n++) {
            char name[4] = {0}, back[4] = {0};
            for (size_t i = 0, m = n; i < len; i++, m /= k)
                name[i] = alphabet[m % k];
            if (notify_auth_secret(name, &secret, var, sizeof var) < 0)
                continue;
            accepted++;
            const char *tail = var + strlen("HERALD_NOTIFY_SECRET_");
            for (size_t i = 0; tail[i]; i++)
                back[i] = tail[i] == '_' ? '-' : (tail[i] >= 'A' && tail[i] <= 'Z') ? (char)(tail[i] + 32) : tail[i];
            bad += strcmp(back, name) != 0;
        }
    }
    CHECK_INT(accepted, 37 + 37 * 37 + 37 * 37 * 37);
    CHECK_INT(bad, 0);
}

static void test_per_trigger_secret_overrides_the_global_one(void)
{
    const char *secret;
    setenv("HERALD_NOTIFY_SECRET", "global", 1);
    setenv("HERALD_NOTIFY_SECRET_DEPLOY_PROD", "prod", 1);
    CHECK_INT(notify_auth_secret("deploy-prod", &secret, NULL, 0), 0);
    CHECK_STR(secret, "prod");
    CHECK_INT(notify_auth_secret("deploy", &secret, NULL, 0), 0);
    CHECK_STR(secret, "global");
    /* deploy.prod is not a trigger name: it cannot pick up deploy-prod's secret */
    CHECK_INT(notify_auth_secret("deploy.prod", &secret, NULL, 0), -1);
    unsetenv("HERALD_NOTIFY_SECRET");
    CHECK_INT(notify_auth_secret("deploy", &secret, NULL, 0), 0);
    CHECK(secret == NULL);
    unsetenv("HERALD_NOTIFY_SECRET_DEPLOY_PROD");
}

static void test_timestamped_signature_good_once(void)
{
    notify_auth *na = notify_auth_new(100, NOW - 1000);
    const char *body = "{\"build\":1}", *reason;
    char sig[80], ts[32];
    sign_ts(SECRET, NOW, body, sig, ts);
    CHECK_INT(check(na, sig, ts, NULL, body, NOW, &reason), NOTIFY_OK);
    CHECK_INT(check(na, sig, ts, NULL, body, NOW + 10, &reason), NOTIFY_DENIED);
    CHECK_STR(reason, "signature already used (replay)");
    /* the same body signed with another timestamp is a new request */
    sign_ts(SECRET, NOW + 1, body, sig, ts);
    CHECK_INT(check(na, sig, ts, NULL, body, NOW, &reason), NOTIFY_OK);
    /* upper-case hex is the same signature: still a replay */
    for (char *p = sig + 7; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 32);
    CHECK_INT(check(na, sig, ts, NULL, body, NOW, &reason), NOTIFY_DENIED);
    CHECK_STR(reason, "signature already used (replay)");
    /* the edges of the window are inside it */
    sign_ts(SECRET, NOW - NOTIFY_WINDOW_S, body, sig, ts);
    CHECK_INT(check(na, sig, ts, NULL, body, NOW, &reason), NOTIFY_OK);
    sign_ts(SECRET, NOW + NOTIFY_WINDOW_S, body, sig, ts);
    CHECK_INT(check(na, sig, ts, NULL, body, NOW, &reason), NOTIFY_OK);
    notify_auth_free(na);
}

static void test_refusals(void)
{
    notify_auth *na = notify_auth_new(100, NOW - 1000);
    const char *body = "{\"build\":2}", *reason;
    char sig[80], ts[32], old_sig[80];
    /* outside the window */
    sign_ts(SECRET, NOW - NOTIFY_WINDOW_S - 1, body, sig, ts);
    CHECK_INT(check(na, sig, ts, NULL, body, NOW, &reason), NOTIFY_DENIED);
    CHECK_STR(reason, "X-Herald-Timestamp is more than 300 s away from the server clock");
    sign_ts(SECRET, NOW + NOTIFY_WINDOW_S + 1, body, sig, ts);
    CHECK_INT(check(na, sig, ts, NULL, body, NOW, &reason), NOTIFY_DENIED);
    /* the body-only form: no timestamp, or a timestamp sent with it */
    signature_of(SECRET, body, strlen(body), old_sig);
    CHECK_INT(check(na, old_sig, NULL, NULL, body, NOW, &reason), NOTIFY_DENIED);
    CHECK(reason && strstr(reason, "needs X-Herald-Timestamp"));
    sprintf(ts, "%lld", NOW);
    CHECK_INT(check(na, old_sig, ts, NULL, body, NOW, &reason), NOTIFY_DENIED);
    CHECK_STR(reason, "bad signature");
    /* malformed timestamps */
    const char *bad_ts[] = {"", "-1", "+1800000000", "1800000000.5", " 1800000000", "18e8",
                            "1800000000000000", "abc"};
    sign_ts(SECRET, NOW, body, sig, ts);
    for (size_t i = 0; i < sizeof bad_ts / sizeof bad_ts[0]; i++) {
        CHECK_INT(check(na, sig, bad_ts[i], NULL, body, NOW, &reason), NOTIFY_DENIED);
        CHECK(reason && strstr(reason, "X-Herald-Timestamp"));
    }
    /* another secret, another body, a tampered or malformed signature */
    sign_ts("wrong", NOW, body, sig, ts);
    CHECK_INT(check(na, sig, ts, NULL, body, NOW, &reason), NOTIFY_DENIED);
    CHECK_STR(reason, "bad signature");
    sign_ts(SECRET, NOW, "{\"build\":3}", sig, ts);
    CHECK_INT(check(na, sig, ts, NULL, body, NOW, &reason), NOTIFY_DENIED);
    sign_ts(SECRET, NOW, body, sig, ts);
    char mangled[80];
    strcpy(mangled, sig);
    mangled[strlen(mangled) - 1] = 'g';
    CHECK_INT(check(na, mangled, ts, NULL, body, NOW, &reason), NOTIFY_DENIED);
    CHECK_STR(reason, "X-Herald-Signature must be sha256=<64 hex digits>");
    mangled[strlen(mangled) - 1] = 0;
    CHECK_INT(check(na, mangled, ts, NULL, body, NOW, &reason), NOTIFY_DENIED);
    CHECK_INT(check(na, sig + 7, ts, NULL, body, NOW, &reason), NOTIFY_DENIED);
    /* a signature header decides alone: a good bearer beside a bad signature does not help */
    CHECK_INT(check(na, mangled, ts, "Bearer " SECRET, body, NOW, &reason), NOTIFY_DENIED);
    /* a refused request remembered nothing: the good one still passes once */
    CHECK_INT(check(na, sig, ts, NULL, body, NOW, &reason), NOTIFY_OK);
    notify_auth_free(na);
}

static void test_timestamps_before_the_start_refused(void)
{
    /* the previous process may have seen them: a restart must not reopen their window */
    notify_auth *na = notify_auth_new(100, NOW);
    const char *body = "{}", *reason;
    char sig[80], ts[32];
    sign_ts(SECRET, NOW - 1, body, sig, ts);
    CHECK_INT(check(na, sig, ts, NULL, body, NOW + 10, &reason), NOTIFY_DENIED);
    CHECK(reason && strstr(reason, "from before herald started"));
    sign_ts(SECRET, NOW, body, sig, ts);
    CHECK_INT(check(na, sig, ts, NULL, body, NOW + 10, &reason), NOTIFY_OK);
    notify_auth_free(na);
}

static void test_bearer(void)
{
    const char *reason;
    CHECK_INT(check(NULL, NULL, NULL, "Bearer " SECRET, "{}", NOW, &reason), NOTIFY_OK);
    CHECK_INT(check(NULL, NULL, NULL, "Bearer " SECRET, "{}", NOW, &reason), NOTIFY_OK);
    const char *bad[] = {"Bearer wrong", "Bearer " SECRET "x", "Bearer s3cret-for-test", "Bearer ",
                         "Basic " SECRET, "bearer " SECRET, SECRET};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_INT(check(NULL, NULL, NULL, bad[i], "{}", NOW, &reason), NOTIFY_DENIED);
    CHECK_INT(check(NULL, NULL, NULL, NULL, "{}", NOW, &reason), NOTIFY_DENIED);
    CHECK_STR(reason, "no X-Herald-Signature and no Authorization: Bearer");
}

static void test_full_cache_fails_closed_then_recovers(void)
{
    notify_auth *na = notify_auth_new(3, NOW - 1000);
    const char *body = "{}", *reason;
    char sig[80], ts[32];
    long retry = 0;
    for (int i = 0; i < 3; i++) {
        sign_ts(SECRET, NOW + i, body, sig, ts);
        CHECK_INT(check(na, sig, ts, NULL, body, NOW, &reason), NOTIFY_OK);
    }
    sign_ts(SECRET, NOW + 3, body, sig, ts);
    CHECK_INT(notify_auth_check(na, SECRET, sig, ts, NULL, body, 2, NOW + 5, &reason, &retry),
              NOTIFY_FULL);
    CHECK_STR(reason, "too many signed requests within 300 s (replay cache full)");
    CHECK_INT(retry, NOTIFY_WINDOW_S - 5 + 1);   /* when the oldest entry leaves the window */
    /* a replay is still recognised while full */
    sign_ts(SECRET, NOW, body, sig, ts);
    CHECK_INT(check(na, sig, ts, NULL, body, NOW + 5, &reason), NOTIFY_DENIED);
    CHECK_STR(reason, "signature already used (replay)");
    /* once the first entry's window has passed, there is room for one more */
    long long later = NOW + NOTIFY_WINDOW_S + 1;
    sign_ts(SECRET, later, body, sig, ts);
    CHECK_INT(check(na, sig, ts, NULL, body, later, &reason), NOTIFY_OK);
    sign_ts(SECRET, later + 1, body, sig, ts);
    CHECK_INT(check(na, sig, ts, NULL, body, later, &reason), NOTIFY_FULL);
    notify_auth_free(na);
}

UNIT_MAIN("notify_auth", CASE(test_names_map_one_to_one),
          CASE(test_per_trigger_secret_overrides_the_global_one),
          CASE(test_timestamped_signature_good_once), CASE(test_refusals),
          CASE(test_timestamps_before_the_start_refused), CASE(test_bearer),
          CASE(test_full_cache_fails_closed_then_recovers))
