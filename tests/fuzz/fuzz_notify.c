/* fuzz_notify.c — libFuzzer target over notify_auth.c, the rule for POST /api/notify/{name}:
 * trigger names and their secret variables (notify_auth_secret), and a sequence of requests judged
 * by notify_auth_check against one replay cache while time moves — timestamped HMAC signatures,
 * replays, a full cache and its purge, bearer secrets. Every verdict is compared with a model
 * written here from notify_auth.h's contract (OpenSSL's HMAC, a plain list for the cache), so a
 * forged or replayed request that passes, a good one that is refused, or a wrong retry time fails.
 * (What the body then goes through is fuzz_inbound's.)
 *
 * Input: byte 0 the cache size (1-8), then "SECRET\0NAME\0" and requests separated by NUL bytes,
 * each "FLAGS DT SIGNATURE\nTIMESTAMP\nAUTHORIZATION\nBODY", FLAGS and DT written plus one (so
 * never NUL). DT moves the clock (4 s a unit) first. FLAGS help the fuzzer reach what it could never forge: bit 0 writes the right signature
 * for the timestamp and body, bit 1 upper-cases it, bit 2 writes "Bearer <secret>", bits 3-5 drop
 * the signature, timestamp, Authorization (absent), bit 6 repeats the previous request's headers
 * and body (a replay), bit 7 stamps the current time. */
#include "fuzz_util.h"
#include "notify_auth.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define START_S 1798761600LL
#define DEFAULT_SECRET "n0tify-s3cret"

/* ---- the model ---------------------------------------------------------------------------- */

typedef struct entry {
    unsigned char mac[32];
    int64_t until;
} entry;

static entry model[8];
static int nmodel;

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static enum notify_verdict expect(const char *secret, const char *sig, const char *ts,
                                  const char *auth, const char *body, size_t len, int64_t now,
                                  size_t max, long *retry)
{
    *retry = 0;
    if (!sig)
        return auth && strncmp(auth, "Bearer ", 7) == 0 && strcmp(auth + 7, secret) == 0
                   ? NOTIFY_OK : NOTIFY_DENIED;
    unsigned char given[32];
    if (strncasecmp(sig, "sha256=", 7) != 0 || strlen(sig + 7) != 64)
        return NOTIFY_DENIED;
    for (int i = 0; i < 32; i++) {
        int hi = hexval(sig[7 + 2 * i]), lo = hexval(sig[8 + 2 * i]);
        if (hi < 0 || lo < 0)
            return NOTIFY_DENIED;
        given[i] = (unsigned char)(hi << 4 | lo);
    }
    if (!ts || !*ts || strlen(ts) > 12 || strspn(ts, "0123456789") != strlen(ts))
        return NOTIFY_DENIED;
    int64_t t = strtoll(ts, NULL, 10);
    if (t < now - NOTIFY_WINDOW_S || t > now + NOTIFY_WINDOW_S || t < START_S)
        return NOTIFY_DENIED;
    unsigned char mac[32];
    unsigned int mlen = 0;
    size_t tl = strlen(ts);
    unsigned char *msg = malloc(tl + 1 + len + 1);
    memcpy(msg, ts, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, body, len);
    HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, tl + 1 + len, mac, &mlen);
    free(msg);
    if (memcmp(mac, given, 32) != 0)
        return NOTIFY_DENIED;
    for (int i = 0; i < nmodel; i++)
        if (memcmp(model[i].mac, mac, 32) == 0)
            return NOTIFY_DENIED;
    if ((size_t)nmodel >= max) {              /* full: entries whose window has passed go */
        int w = 0;
        for (int i = 0; i < nmodel; i++)
            if (model[i].until >= now)
                model[w++] = model[i];
        nmodel = w;
    }
    if ((size_t)nmodel >= max) {
        int64_t earliest = model[0].until;
        for (int i = 1; i < nmodel; i++)
            earliest = model[i].until < earliest ? model[i].until : earliest;
        *retry = (long)(earliest - now + 1 < 1 ? 1 : earliest - now + 1);
        return NOTIFY_FULL;
    }
    memcpy(model[nmodel].mac, mac, 32);
    model[nmodel++].until = t + NOTIFY_WINDOW_S;
    return NOTIFY_OK;
}

/* ---- the target ---------------------------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    setenv("HERALD_NOTIFY_SECRET", "fallback-secret", 1);
    setenv("HERALD_NOTIFY_SECRET_BUILD_DONE", "build-secret", 1);
    setenv("HERALD_NOTIFY_SECRET_EMPTY", "", 1);
    return 0;
}

static void check_name(const char *name)
{
    const char *secret = (const char *)1;
    char var[sizeof "HERALD_NOTIFY_SECRET_" + NOTIFY_NAME_MAX];
    int rc = notify_auth_secret(name, &secret, var, sizeof var);
    size_t n = strlen(name);
    int valid = n >= 1 && n <= NOTIFY_NAME_MAX && strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
    FUZZ_CHECK((rc == 0) == valid, "trigger name '%s' %s", name, rc == 0 ? "accepted" : "refused");
    if (rc < 0)
        return;
    char want[sizeof var];
    snprintf(want, sizeof want, "HERALD_NOTIFY_SECRET_%s", name);
    for (char *p = want + 21; *p; p++)
        *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    FUZZ_CHECK(strcmp(var, want) == 0, "name '%s' reads %s", name, var);
    const char *own = getenv(want);
    const char *expected = own && *own ? own : "fallback-secret";
    FUZZ_CHECK(secret && strcmp(secret, expected) == 0, "name '%s' got secret %s", name,
               secret ? secret : "(none)");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 16384)
        return 0;
    size_t max = (size_t)(data[0] % 8) + 1;
    char *head[3];                    /* secret, name, (the requests, walked as bytes below) */
    fuzz_split(data + 1, size - 1, '\0', head, 3);
    const char *secret = *head[0] ? head[0] : DEFAULT_SECRET;
    if (head[1])
        check_name(head[1]);
    notify_auth *na = notify_auth_new(max, START_S);
    FUZZ_CHECK(na, "notify_auth_new");
    nmodel = 0;
    int64_t now = START_S;
    char *prev[4] = {NULL, NULL, NULL, NULL};
    size_t prev_len = 0;
    size_t off = 1;                   /* requests start after the second NUL */
    for (int i = 0; i < 2 && off <= size; i++) {
        const uint8_t *z = memchr(data + off, 0, size - off);
        off = z ? (size_t)(z - data) + 1 : size + 1;
    }
    for (int n = 0; n < 16 && off + 2 <= size; n++) {
        const uint8_t *r = data + off, *nul = memchr(r, 0, size - off);
        size_t rlen = nul ? (size_t)(nul - r) : size - off;
        off += rlen + 1;
        if (rlen < 2)
            continue;
        /* each written plus one, so that neither byte is the NUL ending the request */
        uint8_t flags = (uint8_t)(r[0] - 1);
        now += (int64_t)(uint8_t)(r[1] - 1) * 4;
        char *part[4];
        fuzz_split(r + 2, rlen - 2, '\n', part, 4);
        char *sig = part[0], *ts = part[1], *auth = part[2], *body = part[3] ? part[3] : strdup("");
        part[3] = body;
        size_t len = strlen(body);
        if (flags & 128) {
            free(ts);
            ts = part[1] = malloc(24);
            snprintf(ts, 24, "%lld", (long long)now);
        }
        if ((flags & 1) && ts) {
            unsigned char mac[32];
            unsigned int mlen = 0;
            size_t tl = strlen(ts);
            unsigned char *msg = malloc(tl + 1 + len + 1);
            memcpy(msg, ts, tl);
            msg[tl] = '.';
            memcpy(msg + tl + 1, body, len);
            HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, tl + 1 + len, mac, &mlen);
            free(msg);
            free(sig);
            sig = part[0] = malloc(7 + 64 + 1);
            memcpy(sig, flags & 2 ? "SHA256=" : "sha256=", 7);
            for (int i = 0; i < 32; i++)
                snprintf(sig + 7 + 2 * i, 3, flags & 2 ? "%02X" : "%02x", mac[i]);
        }
        if (flags & 4) {
            free(auth);
            auth = part[2] = malloc(7 + strlen(secret) + 1);
            sprintf(auth, "Bearer %s", secret);
        }
        if ((flags & 64) && prev[3]) {              /* replay the previous request */
            for (int i = 0; i < 4; i++) {
                free(part[i]);
                part[i] = prev[i] ? strdup(prev[i]) : NULL;
            }
            sig = part[0], ts = part[1], auth = part[2], body = part[3];
            len = prev_len;
        }
        const char *s = flags & 8 ? NULL : sig, *t = flags & 16 ? NULL : ts,
                   *a = flags & 32 ? NULL : auth;
        const char *reason = NULL;
        long retry = -1, want_retry = 0;
        enum notify_verdict got = notify_auth_check(na, secret, s, t, a, body, len, now, &reason,
                                                    &retry);
        enum notify_verdict want = expect(secret, s, t, a, body, len, now, max, &want_retry);
        FUZZ_CHECK(got == want, "request %d: verdict %d, the contract says %d (%s)", n, got, want,
                   reason ? reason : "no reason");
        FUZZ_CHECK(got == NOTIFY_OK || (reason && *reason && !strpbrk(reason, "\"\\\r\n")),
                   "a refusal's reason is not JSON-safe text: %s", reason ? reason : "(null)");
        FUZZ_CHECK(retry == want_retry, "retry after %ld s, the contract says %ld", retry,
                   want_retry);
        for (int i = 0; i < 4; i++) {
            free(prev[i]);
            prev[i] = part[i];
        }
        prev_len = len;
    }
    for (int i = 0; i < 4; i++)
        free(prev[i]);
    notify_auth_free(na);
    fuzz_free_parts(head, 3);
    return 0;
}
