/* fuzz_headers.c — libFuzzer target over the response headers herald reads: the header line split
 * libcurl's header callback uses (http_header_split, for Retry-After, X-Correlating-OperationId and
 * MS-CV), and the Retry-After value the outbox turns into a wait (outbox_parse_retry_after), in
 * delay-seconds and all three HTTP-date forms.
 *
 * Input: 8 bytes of "now" (wall ms), then header lines separated by '\n' as a server sends them
 * ("Retry-After: 120\r\n"); a line without a colon is used as a bare Retry-After value. Canonical
 * forms (1-9 digits, IMF-fixdate) are checked against an independent reading. */
#include "fuzz_util.h"
#include "http_client.h"
#include "outbox.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CAP_MS (OUTBOX_RETRY_AFTER_MAX_S * 1000)

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

/* The wait an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") asks for, or -2 when v is not one
 * written exactly in the canonical form. */
static int64_t fixdate_wait(const char *v, int64_t now)
{
    static const char *const wd[] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};
    static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char w[4], m[4];
    int d, y, hh, mm, ss, n = 0;
    if (strlen(v) != 29 || sscanf(v, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d GMT%n", w, &d, m, &y,
                                  &hh, &mm, &ss, &n) != 7 || n != 29)
        return -2;
    static const int digit_at[] = {5, 6, 12, 13, 14, 15, 17, 18, 20, 21, 23, 24};
    for (size_t i = 0; i < sizeof digit_at / sizeof digit_at[0]; i++)
        if (v[digit_at[i]] < '0' || v[digit_at[i]] > '9')
            return -2;
    int mi = -1;
    for (int i = 0; i < 12; i++)
        if (strcmp(m, mon[i]) == 0)
            mi = i;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mi < 0 || d < 1 || d > mdays[mi] || hh > 23 || mm > 59 || ss > 59 || y < 1900)
        return -2;
    int leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    if (mi == 1 && d == 29 && !leap)
        return -2;
    int64_t days = days_from_civil(y, mi + 1, d);
    if (strcmp(w, wd[((days % 7) + 7) % 7]) != 0)
        return -2;
    char canon[40];
    snprintf(canon, sizeof canon, "%s, %02d %s %04d %02d:%02d:%02d GMT", w, d, m, y, hh, mm, ss);
    if (strcmp(canon, v) != 0)
        return -2;
    int64_t at = (days * 86400 + hh * 3600 + mm * 60 + ss) * 1000;
    int64_t wait = at > now ? at - now : 0;
    return wait > CAP_MS ? CAP_MS : wait;
}

static void check_retry_after(const char *v, int64_t now)
{
    int64_t ms = outbox_parse_retry_after(v, now);
    FUZZ_CHECK(ms >= -1 && ms <= CAP_MS, "Retry-After '%s' gave %lld ms", v, (long long)ms);
    size_t n = strlen(v);
    if (n >= 1 && n <= 9 && strspn(v, "0123456789") == n) {
        int64_t want = atoll(v) * 1000;
        FUZZ_CHECK(ms == (want > CAP_MS ? CAP_MS : want), "Retry-After '%s' gave %lld ms", v,
                   (long long)ms);
    }
    int64_t fd = fixdate_wait(v, now);
    if (fd != -2)
        FUZZ_CHECK(ms == fd, "Retry-After '%s' (now %lld) gave %lld ms, not %lld", v,
                   (long long)now, (long long)ms, (long long)fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8 || size > 8192)
        return 0;
    fuzz_bytes b = {data, size};
    /* now: 1970 .. about 3085, in ms */
    int64_t now = (int64_t)(fuzz_take(&b, 8) % 35000000000000ULL);
    const uint8_t *p = b.p, *end = b.p + b.n;
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);   /* curl passes the '\n' */
        /* an exact-size copy, so ASan sees any read past the line */
        char *line = malloc(n ? n : 1);
        if (!line)
            abort();
        memcpy(line, p, n);
        size_t name_len, vlen;
        const char *v;
        if (http_header_split(line, n, &name_len, &v, &vlen) == 0) {
            FUZZ_CHECK(name_len < n && line[name_len] == ':' && !memchr(line, ':', name_len),
                       "name is not the part before the first colon");
            FUZZ_CHECK(v > line + name_len && v + vlen <= line + n, "value outside the line");
            FUZZ_CHECK(vlen == 0 || (v[0] != ' ' && v[0] != '\t' && v[vlen - 1] != ' ' &&
                                     v[vlen - 1] != '\t' && v[vlen - 1] != '\r' && v[vlen - 1] != '\n'),
                       "value keeps surrounding blanks or the line end");
            if (name_len == 11 && strncasecmp(line, "Retry-After", 11) == 0) {
                char *value = strndup(v, vlen);
                check_retry_after(value, now);
                free(value);
            }
        } else {
            FUZZ_CHECK(!memchr(line, ':', n), "a line with a colon was refused");
            char *value = fuzz_strndup((const uint8_t *)line, n && line[n - 1] == '\n' ? n - 1 : n);
            check_retry_after(value, now);
            free(value);
        }
        free(line);
        p += n;
    }
    return 0;
}
