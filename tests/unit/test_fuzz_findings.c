/* test_fuzz_findings.c — one regression test per bug the fuzz targets (tests/fuzz) found in the
 * parsers, named after the target and the corpus file that reproduces it there. */
#include "auth_out.h"
#include "clock.h"
#include "connector.h"
#include "http_client.h"
#include "log.h"
#include "outbox.h"
#include "schedule.h"
#include "tz.h"
#include "unit.h"

#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- fuzz_tz ---------------------------------------------------------------------------- */

/* regress-overlapping-dst-periods: a rule whose DST periods overlap the next year's (times near
 * +-167 h) has no consistent reading; it used to load and then answer offsets that disagreed with
 * tz_next_transition. */
static void test_tz_rule_with_overlapping_periods_is_refused(void)
{
    char *err = NULL;
    tz *z = tz_from_posix("X/Overlap", "AAA24BBB-24,M1.1.0/-83,M12.5.6/167", &err);
    CHECK(z == NULL);
    CHECK(err && strstr(err, "malformed POSIX TZ rule"));
    free(err);
    tz_free(z);
    /* times near the limits are fine while the years stay in order (RFC 8536's all-year DST) */
    z = tz_from_posix("X/AllYear", "EST5EDT4,0/0,J365/25", NULL);
    CHECK(z != NULL);
    tz_free(z);
}

/* Found while fixing the above: when both transitions of year y-1 fall in the first days of
 * year y (times near +167 h on Dec 31), the one in effect on Jan 2 is year y-2's. Southern-style
 * rule: DST starts J365/160 (Jan 6-7 of the next year) and ends J365/100. */
static void test_tz_rule_transition_two_years_back(void)
{
    tz *z = tz_from_posix("X/Late", "AAA5BBB,J365/160,J365/100", NULL);
    CHECK(z != NULL);
    if (!z)
        return;
    /* 2026-01-02T00:00Z: last event was the start on 2025-01-06 (year 2024's), end comes 2026-01-04 */
    int dst = -1;
    CHECK_INT(tz_offset_at(z, 1767312000, &dst), -4 * 3600);
    CHECK_INT(dst, 1);
    int64_t at;
    int after;
    CHECK(tz_next_transition(z, 1767312000, &at, &after));
    CHECK_INT(after, -5 * 3600);
    CHECK_INT(tz_offset_at(z, at - 1, NULL), -4 * 3600);
    tz_free(z);
}

/* regress-footer-disagrees-with-last-transition: a TZif whose footer rule says another offset than
 * the type its last transition sets changed offset after that transition without any transition
 * to find; RFC 8536 requires them to agree, so such a file is refused. Europe/Paris with New York's
 * rule for a footer: */
static void test_tzif_footer_must_agree_with_last_transition(void)
{
    FILE *f = fopen("/usr/share/zoneinfo/Europe/Paris", "rb");
    CHECK(f != NULL);
    if (!f)
        return;
    unsigned char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 64, f);
    fclose(f);
    const char paris[] = "\nCET-1CEST,M3.5.0,M10.5.0/3\n", ny[] = "\nEST5EDT,M3.2.0,M11.1.0\n";
    CHECK(n > sizeof paris && memcmp(buf + n - (sizeof paris - 1), paris, sizeof paris - 1) == 0);
    char *err = NULL;
    tz *z = tz_from_tzif("Europe/Paris", buf, n, &err);
    CHECK(z != NULL);
    tz_free(z);
    memcpy(buf + n - (sizeof paris - 1), ny, sizeof ny - 1);
    z = tz_from_tzif("X/Paris-NY", buf, n - (sizeof paris - 1) + (sizeof ny - 1), &err);
    CHECK(z == NULL);
    CHECK(err && strstr(err, "disagrees with the last transition"));
    free(err);
    tz_free(z);
}

/* ---- fuzz_schedule ---------------------------------------------------------------------- */

/* regress-at-past-9999-in-utc: a local or offset time late on 9999-12-31 is an instant in year
 * 10000; schedule_next returned it although it promises -1 beyond 9999. */
static void test_schedule_at_past_9999_never_fires(void)
{
    schedule_spec s;
    char *err = NULL;
    CHECK_INT(schedule_parse("at", "9999-12-31T23:59", "America/New_York", &s, &err), 0);
    CHECK_INT(schedule_next(&s, 0), -1);
    CHECK_INT(schedule_parse("at", "9999-12-31T23:59:00-05:00", NULL, &s, &err), 0);
    CHECK_INT(schedule_next(&s, 0), -1);
    CHECK_INT(schedule_parse("every", "1d@9999-12-31T23:00:00-05:00", NULL, &s, &err), 0);
    CHECK_INT(schedule_next(&s, 0), -1);
    /* the last second of 9999 in UTC still fires */
    CHECK_INT(schedule_parse("at", "9999-12-31T23:59:59Z", NULL, &s, &err), 0);
    CHECK_INT(schedule_next(&s, 0), 253402300799LL);
    free(err);
    tz_cache_clear();
}

/* ---- fuzz_headers ----------------------------------------------------------------------- */

/* retry-huge, retry-exp, retry-inf: the seconds were converted to int64 without a bound
 * (undefined behaviour past 9.2e15 ms). A wait past a day now reads as a day. */
static void test_retry_after_huge_values_are_capped(void)
{
    int64_t now = 1798761600000LL, day = OUTBOX_RETRY_AFTER_MAX_S * 1000;
    CHECK_INT(outbox_parse_retry_after("99999999999999999999", now), day);
    CHECK_INT(outbox_parse_retry_after("1e300", now), day);
    CHECK_INT(outbox_parse_retry_after("inf", now), day);
    CHECK_INT(outbox_parse_retry_after("86401", now), day);
    CHECK_INT(outbox_parse_retry_after("120", now), 120000);
    CHECK_INT(outbox_parse_retry_after("0.5", now), 500);
    CHECK_INT(outbox_parse_retry_after("nan", now), -1);
    CHECK_INT(outbox_parse_retry_after("-5", now), -1);
}

/* retry-rfc850, retry-asctime: RFC 9110 has recipients accept all three HTTP-date forms; only
 * the IMF-fixdate was read, and it was accepted with anything after it. */
static void test_retry_after_http_dates(void)
{
    int64_t now = 1798761600000LL;           /* 2027-01-01T00:00:00Z (a Friday) */
    CHECK_INT(outbox_parse_retry_after("Fri, 01 Jan 2027 00:00:30 GMT", now), 30000);
    CHECK_INT(outbox_parse_retry_after("Friday, 01-Jan-27 00:00:30 GMT", now), 30000);
    CHECK_INT(outbox_parse_retry_after("Fri Jan  1 00:00:30 2027", now), 30000);
    CHECK_INT(outbox_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), 0);
    CHECK_INT(outbox_parse_retry_after("Fri, 01 Jan 2027 00:00:30 GMT and more", now), -1);
    CHECK_INT(outbox_parse_retry_after("Sat, 01 Jan 2028 00:00:00 GMT", now),
              OUTBOX_RETRY_AFTER_MAX_S * 1000);
}

/* ---- fuzz_connector --------------------------------------------------------------------- */

static char *classify(long status, const char *body)
{
    http_response hr = {.status = status, .error = "", .body = body, .body_len = strlen(body)};
    connector_result res;
    char *owned[4];
    connector_classify(&hr, 15000, &res, owned);
    char *msg = strdup(res.message);
    for (int i = 0; i < 4; i++)
        free(owned[i]);
    return msg;
}

/* regress-control-char-in-error-code: the error code went into the message raw, so a code with
 * a newline or an escape sequence could forge log lines; the text beside it was already cleaned. */
static void test_connector_message_cleans_the_error_code(void)
{
    char *m = classify(404, "{\"error\":{\"code\":\"Not\\nFound\\u001b[31m\",\"message\":\"gone\"}}");
    CHECK_STR(m, "connector 404 Not Found [31m: gone");
    free(m);
    m = classify(404, "{\"error\":{\"code\":\"ConversationNotFound\",\"message\":\"gone\"}}");
    CHECK_STR(m, "connector 404 ConversationNotFound: gone");
    free(m);
    m = classify(400, "{\"error\":{\"code\":\"\\u0001\",\"message\":\"bad\"}}");
    CHECK_STR(m, "connector 400: bad");
    free(m);
}

/* regress-overlong-utf8-in-body: "readable" text let overlong forms, surrogates and code points
 * past U+10FFFF through, so the message was not valid UTF-8. */
static void test_connector_message_is_valid_utf8(void)
{
    char *m = classify(501, "Delete\xe0\x91\x90 x \xed\xa0\x80 y \xf4\x90\x80\x80 z \xc3\xa9");
    CHECK_STR(m, "connector 501: Delete??? x ??? y ???? z \xc3\xa9");
    free(m);
}

/* ---- fuzz_token ------------------------------------------------------------------------- */

static struct {
    const char *body;
    long status;
    int requests;
} token_answer;

static void token_fake(const char *method, const char *url, const char *const *headers,
                       const char *body, size_t body_len, http_fake_answer *a, void *ud)
{
    (void)method, (void)url, (void)headers, (void)body, (void)body_len, (void)ud;
    a->status = token_answer.requests++ ? 200 : token_answer.status;
    a->body = strdup(token_answer.requests > 1 ? "{\"access_token\":\"t2\",\"expires_in\":3600}"
                                               : token_answer.body);
}

typedef struct token_got {
    int calls;
    char token[64], error[256];
} token_got;

static void token_ready(void *ud, const char *token, const char *error)
{
    token_got *g = ud;
    g->calls++;
    snprintf(g->token, sizeof g->token, "%s", token ? token : "");
    snprintf(g->error, sizeof g->error, "%s", error ? error : "");
}

/* Runs one token request answered with status and body; returns what ready got. */
static token_got token_exchange(long status, const char *body, int *refreshed_within_a_day)
{
    struct event_base *base = event_base_new();
    clock_virtual(base, 1798761600000LL);
    http_client_config hc = {.connect_timeout_ms = 5000, .max_host_connections = 8};
    char *err = NULL;
    http_client *http = http_client_new(base, &hc, &err);
    http_client_set_fake(http, token_fake, NULL);
    token_answer.body = body;
    token_answer.status = status;
    token_answer.requests = 0;
    auth_out_config cfg = {.token_url = "https://login.microsoftonline.com/t/oauth2/v2.0/token",
                           .client_id = "app", .client_secret = "secret",
                           .scope = "https://api.botframework.com/.default", .refresh_ahead_s = 300,
                           .max_backoff_s = 60};
    auth_out *a = auth_out_new(base, http, &cfg, &err);
    token_got g = {0};
    const char *why = NULL;
    CHECK(a && auth_out_wait(a, token_ready, &g, &why) == 0);
    clock_settle();
    clock_advance(86400 * 1000LL);
    *refreshed_within_a_day = token_answer.requests >= 2;
    auth_out_free(a);
    http_client_free(http);
    clock_virtual_reset();
    event_base_free(base);
    return g;
}

/* regress-huge-expiry: (expires_in - ahead) * 1000 overflowed for an expires_in near LONG_MAX,
 * given as a number or as a string; a lifetime past a day is now read as a day. */
static void test_token_huge_expiry_is_capped(void)
{
    int refreshed;
    token_got g = token_exchange(200, "{\"access_token\":\"t\",\"expires_in\":9223372036854775807}",
                                 &refreshed);
    CHECK_INT(g.calls, 1);
    CHECK_STR(g.token, "t");
    CHECK(refreshed);
    g = token_exchange(200, "{\"access_token\":\"t\",\"expires_in\":\"99999999999999999999\"}",
                       &refreshed);
    CHECK_STR(g.token, "t");
    CHECK(refreshed);
}

/* error-with-newline: the endpoint's "error" string went raw into the error text, which is
 * logged and handed to every waiter. */
static void test_token_error_text_is_one_line(void)
{
    int refreshed;
    token_got g = token_exchange(400, "{\"error\":\"bad\\r\\nthing\\u001b[31m\"}", &refreshed);
    CHECK_INT(g.calls, 1);
    CHECK_STR(g.token, "");
    CHECK_STR(g.error, "token request failed: HTTP 400 bad??thing?[31m");
}

int main(void)
{
    log_set_level(LOG_ERROR + 1);
    static const unit_case cases[] = {
        CASE(test_tz_rule_with_overlapping_periods_is_refused),
        CASE(test_tz_rule_transition_two_years_back),
        CASE(test_tzif_footer_must_agree_with_last_transition),
        CASE(test_schedule_at_past_9999_never_fires),
        CASE(test_retry_after_huge_values_are_capped),
        CASE(test_retry_after_http_dates),
        CASE(test_connector_message_cleans_the_error_code),
        CASE(test_connector_message_is_valid_utf8),
        CASE(test_token_huge_expiry_is_capped),
        CASE(test_token_error_text_is_one_line),
    };
    return unit_run("fuzz_findings", cases, (int)(sizeof cases / sizeof cases[0]));
}
