/* fuzz_token.c — libFuzzer target over auth_out's reading of a token endpoint answer (OAuth2
 * client credentials: access_token, expires_in as a number or a string, error), through the real
 * auth_out over http_client's fake transport on the virtual clock: the first request, the
 * waiters' callback, the cached token, and the background refresh it schedules (a day later on
 * the virtual clock, with the second answer). Checked: ready runs once per wait with a token
 * exactly when the answer was a 200 with a non-empty access_token string, and the error then says
 * why in one printable line; auth_out_current gives that token; the refresh (or the retry after a
 * failure) comes within a day, and no later than expires_in says.
 *
 * Input: bytes 0-1 the status (0-599; 0 = connection reset), then "BODY\0SECOND_BODY" (the
 * answer to the refresh, always a 200). */
#include "auth_out.h"
#include "clock.h"
#include "fuzz_util.h"
#include "http_client.h"
#include "log.h"

#include <event2/event.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static struct event_base *base;
static http_client *http;

static struct {
    long status;
    const char *body, *second;
    int requests;
    int64_t second_at;            /* when the refresh (or retry) was asked */
} ans;

static void fake(const char *method, const char *url, const char *const *headers, const char *body,
                 size_t body_len, http_fake_answer *a, void *ud)
{
    (void)method, (void)url, (void)headers, (void)body, (void)body_len, (void)ud;
    int first = ans.requests++ == 0;
    if (ans.requests == 2)
        ans.second_at = clock_mono_ms();
    a->status = first ? ans.status : 200;
    a->reset = first && ans.status == 0;
    a->body = strdup(first ? ans.body : ans.second);
}

typedef struct got {
    int calls;
    char *token, *error;
} got;

static void ready(void *ud, const char *token, const char *error)
{
    got *g = ud;
    g->calls++;
    g->token = token ? strdup(token) : NULL;
    g->error = error ? strdup(error) : NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    log_set_level(LOG_ERROR + 1);     /* the failures are expected: keep the output readable */
    base = event_base_new();
    clock_virtual(base, 1798761600000LL);
    http_client_config hc = {.connect_timeout_ms = 5000, .max_host_connections = 8};
    char *err = NULL;
    http = base ? http_client_new(base, &hc, &err) : NULL;
    if (!http)
        abort();
    http_client_set_fake(http, fake, NULL);
    return 0;
}

/* The token a 200 answer carries, or NULL. */
static const char *want_token(json_t *doc, long status)
{
    const char *tok = json_string_value(json_object_get(doc, "access_token"));
    return status == 200 && tok && *tok ? tok : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 65536)
        return 0;
    long status = (long)((data[0] << 8 | data[1]) % 600);
    char *part[2];
    fuzz_split(data + 2, size - 2, '\0', part, 2);
    ans.status = status;
    ans.body = part[0];
    ans.second = part[1] ? part[1] : "{\"access_token\":\"second\",\"expires_in\":86400}";
    ans.requests = 0;

    auth_out_config cfg = {.token_url = "https://login.microsoftonline.com/t/oauth2/v2.0/token",
                           .client_id = "fuzz-app", .client_secret = "fuzz-secret",
                           .scope = "https://api.botframework.com/.default", .refresh_ahead_s = 300,
                           .max_backoff_s = 60};
    char *err = NULL;
    auth_out *a = auth_out_new(base, http, &cfg, &err);
    FUZZ_CHECK(a, "auth_out_new: %s", err ? err : "?");
    FUZZ_CHECK(!auth_out_current(a), "a token before any request");
    got g = {0};
    const char *why = NULL;
    FUZZ_CHECK(auth_out_wait(a, ready, &g, &why) == 0, "the first wait refused: %s", why);
    clock_settle();
    FUZZ_CHECK(g.calls == 1 && ans.requests == 1, "ready ran %d times for %d requests", g.calls,
               ans.requests);
    json_t *doc = json_loads(part[0], 0, NULL);
    const char *tok = want_token(doc, status);
    if (tok) {
        FUZZ_CHECK(g.token && strcmp(g.token, tok) == 0 && !g.error, "token lost");
        FUZZ_CHECK(auth_out_current(a) && strcmp(auth_out_current(a), tok) == 0, "token not kept");
    } else {
        FUZZ_CHECK(!g.token && g.error && *g.error, "a %ld answer without a token gave %s", status,
                   g.token ? "a token" : "no reason");
        FUZZ_CHECK(fuzz_printable(g.error), "error is not one printable line: %s", g.error);
        FUZZ_CHECK(!auth_out_current(a), "a token after a failure");
    }
    /* the background refresh (or the retry after a failure) comes within a day of virtual time,
     * or no later than the lifetime the answer gave */
    int64_t started = clock_mono_ms();
    for (int64_t t = 0; t < 86400 * 1000LL && ans.requests < 2; t += 60000)
        clock_advance(60000);
    FUZZ_CHECK(ans.requests >= 2, "no refresh within a day");
    json_t *exp = json_object_get(doc, "expires_in");
    if (tok && json_is_integer(exp) && json_integer_value(exp) >= 2)
        FUZZ_CHECK((ans.second_at - started) / 1000 <= json_integer_value(exp),
                   "refreshed %lld ms after a token living %lld s", (long long)(ans.second_at - started),
                   (long long)json_integer_value(exp));
    json_decref(doc);
    free(g.token);
    free(g.error);
    auth_out_free(a);
    fuzz_free_parts(part, 2);
    return 0;
}
