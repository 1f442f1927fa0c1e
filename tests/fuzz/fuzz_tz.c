/* fuzz_tz.c — libFuzzer target over tz.c: the TZif reader (tz_from_tzif, what tz_load runs on a
 * zoneinfo file), the POSIX TZ rule parser (tz_from_posix, and the TZif footer) and the queries a
 * schedule makes of a zone, each checked against what tz.h promises.
 *
 * Input: a TZif file as is (it starts with "TZif"; real zoneinfo files are the seeds), or
 * "POSIX-RULE\n" followed by query bytes. Query instants come from the input's tail (8 bytes each),
 * from a few fixed instants, and from the zone's own transitions and their neighbours. */
#include "fuzz_util.h"
#include "tz.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Instants checked: years about -1e6..1e6, the span tz_civil_valid accepts for wall times. */
#define SPAN_S 31500000000000LL
#define MAX_OFF 93599                 /* RFC 8536: offsets within -89999..93599 */

static void check_instant(const tz *z, int64_t t)
{
    int dst = -1;
    int off = tz_offset_at(z, t, &dst);
    FUZZ_CHECK(off >= -89999 && off <= MAX_OFF, "offset %d at %lld out of range", off, (long long)t);
    FUZZ_CHECK(dst == 0 || dst == 1, "is_dst %d", dst);
    const char *abbr = tz_abbr_at(z, t);
    FUZZ_CHECK(abbr != NULL, "no abbreviation at %lld", (long long)t);
    (void)strlen(abbr);

    int64_t at;
    int after;
    if (tz_next_transition(z, t, &at, &after)) {
        FUZZ_CHECK(at > t, "next transition %lld not after %lld", (long long)at, (long long)t);
        FUZZ_CHECK(tz_offset_at(z, at, NULL) == after,
                   "next transition at %lld says offset %d, the zone says %d there", (long long)at,
                   after, tz_offset_at(z, at, NULL));
        int64_t mid = t + (at - t) / 2;
        FUZZ_CHECK(tz_offset_at(z, mid, NULL) == off,
                   "offset changes between %lld and its next transition %lld", (long long)t,
                   (long long)at);
    }

    /* the wall time of t maps back to t (once, or as one of the occurrences of an overlap) */
    struct civil c;
    int o2 = tz_utc_to_local(z, t, &c);
    FUZZ_CHECK(o2 == off, "tz_utc_to_local offset %d != %d", o2, off);
    if (!tz_civil_valid(&c))
        return;
    int64_t early = 0, late = 0;
    int r = tz_local_to_utc(z, &c, &early, TZ_EARLIER);
    int r2 = tz_local_to_utc(z, &c, &late, TZ_LATER);
    FUZZ_CHECK(r == r2, "policies disagree on the kind of wall time (%d, %d)", r, r2);
    FUZZ_CHECK(r == TZ_LOCAL_UNIQUE || r == TZ_LOCAL_OVERLAP,
               "the wall time of %lld does not exist (%d)", (long long)t, r);
    FUZZ_CHECK(early <= t && t <= late, "wall time of %lld maps to [%lld, %lld]", (long long)t,
               (long long)early, (long long)late);
    FUZZ_CHECK(r != TZ_LOCAL_UNIQUE || early == t, "unique wall time of %lld maps to %lld",
               (long long)t, (long long)early);
}

/* A wall time read from 8 input bytes: whatever tz_local_to_utc answers must be consistent. */
static void check_wall(const tz *z, const uint8_t *p)
{
    struct civil c = {.year = 1900 + p[0] % 250 + (p[1] & 1 ? 0 : 100), .month = 1 + p[2] % 12,
                      .day = 1 + p[3] % 31, .hour = p[4] % 24, .minute = p[5] % 60,
                      .second = p[6] % 60};
    int64_t u;
    int r = tz_local_to_utc(z, &c, &u, p[7] & 1 ? TZ_LATER : TZ_EARLIER);
    if (!tz_civil_valid(&c)) {
        FUZZ_CHECK(r == -1, "an invalid wall time was resolved");
        return;
    }
    FUZZ_CHECK(r == TZ_LOCAL_UNIQUE || r == TZ_LOCAL_OVERLAP || r == TZ_LOCAL_GAP,
               "wall time not resolved (%d)", r);
    struct civil back;
    tz_utc_to_local(z, u, &back);
    if (r != TZ_LOCAL_GAP) {
        FUZZ_CHECK(tz_civil_to_seconds(&back) == tz_civil_to_seconds(&c),
                   "wall time resolved to an instant showing another wall time");
    } else {
        /* the first valid instant after the gap: a forward transition, after the asked time */
        FUZZ_CHECK(tz_offset_at(z, u - 1, NULL) < tz_offset_at(z, u, NULL),
                   "gap answer %lld is not a forward transition", (long long)u);
        FUZZ_CHECK(tz_civil_to_seconds(&back) > tz_civil_to_seconds(&c),
                   "gap answer shows a wall time before the asked one");
    }
}

static int64_t instant_from(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return (int64_t)(v % (2 * (uint64_t)SPAN_S)) - SPAN_S;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    char *err = NULL;
    tz *z;
    const uint8_t *tail = NULL;
    size_t tail_len = 0;
    if (size >= 4 && memcmp(data, "TZif", 4) == 0) {
        z = tz_from_tzif("Fuzz/Zone", data, size, &err);
    } else {
        const uint8_t *nl = memchr(data, '\n', size);
        size_t n = nl ? (size_t)(nl - data) : size;
        char *rule = fuzz_strndup(data, n);
        z = tz_from_posix("Fuzz/Posix", rule, &err);
        free(rule);
        if (nl) {
            tail = nl + 1;
            tail_len = size - n - 1;
        }
    }
    if (!z) {
        FUZZ_CHECK(err && *err, "a refused zone gives no reason");
        free(err);
        return 0;
    }
    FUZZ_CHECK(!err, "an accepted zone set *err");
    FUZZ_CHECK(strcmp(tz_name(z), "Fuzz/Zone") == 0 || strcmp(tz_name(z), "Fuzz/Posix") == 0,
               "zone name lost");

    static const int64_t fixed[] = {0, -1, 1774746000, 1774746000 - 1, 1792890000, 1798761600,
                                    -2208988800LL, 253402300799LL, -62135596800LL, SPAN_S,
                                    -SPAN_S};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_instant(z, fixed[i]);
    for (size_t i = 0; i + 8 <= tail_len && i < 64 * 8; i += 8) {
        check_instant(z, instant_from(tail + i));
        check_wall(z, tail + i);
    }
    /* walk the transitions from 1900 for a while: each, and the second before it */
    int64_t t = -2208988800LL, at;
    int after;
    for (int i = 0; i < 64 && tz_next_transition(z, t, &at, &after) && at < SPAN_S; i++) {
        check_instant(z, at - 1);
        check_instant(z, at);
        t = at;
    }
    tz_free(z);
    return 0;
}
