/* fuzz_schedule.c — libFuzzer target over schedule.c: "at" date-times, "every" intervals with
 * anchors, five-field cron and its macros, in real zones (DST gaps and overlaps included), then
 * schedule_next from several instants, each answer checked against schedule.h's promises: after
 * the asked instant, within year 9999, itself a fire time, and — for cron — a wall time matching
 * the fields (or the transition that skipped one), with no matching wall time missed before it.
 *
 * Input: byte 0 picks the kind (at, every, cron, or the text's own first word as the kind), byte 1
 * the zone (none, "", or a real zone; or the text after a '|' as the zone name), then the
 * expression up to a NUL; after it, 8-byte query instants. */
#include "fuzz_util.h"
#include "schedule.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MIN_S (-62135596800LL)        /* 0001-01-01T00:00:00Z */
#define MAX_S 253402300799LL          /* 9999-12-31T23:59:59Z */

static const char *const zones[] = {
    NULL, "", "UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu",
    "Pacific/Apia", "Africa/Casablanca", "Europe/Dublin", "America/Nuuk", "Asia/Jerusalem",
    "America/Santiago", "Pacific/Chatham", "Antarctica/Troll", "America/St_Johns",
};
#define NZONES (sizeof zones / sizeof zones[0])

static int64_t floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int wall_matches(const schedule_cron *c, const struct civil *w, int64_t days)
{
    int wd = tz_weekday(days);
    int dom = (c->days >> w->day) & 1, dow = (c->weekdays >> wd) & 1;
    int day_ok = (c->flags & (SCHEDULE_DOM_STAR | SCHEDULE_DOW_STAR)) ? dom && dow : dom || dow;
    return ((c->minutes >> w->minute) & 1) && ((c->hours >> w->hour) & 1) &&
           ((c->months >> w->month) & 1) && day_ok;
}

/* 1 when wall time w (whole minutes) matches the spec's fields. */
static int wall_is_match(const schedule_spec *s, int64_t wall_s)
{
    struct civil w;
    tz_seconds_to_civil(wall_s, &w);
    return w.second == 0 && wall_matches(&s->cron, &w, floordiv(wall_s, 86400));
}

static void check_cron(const schedule_spec *s, int64_t after, int64_t n)
{
    const tz *z = s->zone;
    struct civil w;
    int off = tz_utc_to_local(z, n, &w);
    int gap = tz_offset_at(z, n - 1, NULL) < off;
    if (!wall_is_match(s, n + off)) {
        /* allowed only at a forward transition that skipped a matching wall time */
        int ob = tz_offset_at(z, n - 1, NULL), skipped = 0;
        for (int64_t l = floordiv(n + ob + 59, 60) * 60; gap && l < n + off && !skipped; l += 60)
            skipped = wall_is_match(s, l);
        FUZZ_CHECK(skipped, "cron fired at %lld, a wall time its fields do not match",
                   (long long)n);
    }
    if (n - after > 3 * 86400)
        return;                       /* the walk below is for short spans */
    /* no matching wall time was missed in (after, n) */
    for (int64_t m = (floordiv(after, 60) + 1) * 60; m < n; m += 60) {
        int o = tz_offset_at(z, m, NULL);
        if (!wall_is_match(s, m + o))
            continue;
        struct civil lw;
        tz_seconds_to_civil(m + o, &lw);
        int64_t first;
        int r = tz_local_to_utc(z, &lw, &first, TZ_EARLIER);
        int second_copy = r == TZ_LOCAL_OVERLAP && first < m;
        FUZZ_CHECK(second_copy && !(s->cron.flags & SCHEDULE_HOUR_STAR),
                   "cron skipped the matching instant %lld (next said %lld after %lld)",
                   (long long)m, (long long)n, (long long)after);
    }
    /* a wall time skipped by a forward transition in (after, n) must fire at the transition */
    int64_t t = after, at;
    int oa;
    while (tz_next_transition(z, t, &at, &oa) && at < n) {
        int ob = tz_offset_at(z, at - 1, NULL);
        for (int64_t l = floordiv(at + ob + 59, 60) * 60; ob < oa && l < at + oa; l += 60)
            FUZZ_CHECK(!wall_is_match(s, l),
                       "cron missed the gap at %lld holding wall time %lld", (long long)at,
                       (long long)l);
        t = at;
    }
}

static void check_next(const schedule_spec *s, int64_t after)
{
    int64_t n = schedule_next(s, after);
    if (n == -1)
        return;
    FUZZ_CHECK(n > after, "next %lld is not after %lld", (long long)n, (long long)after);
    FUZZ_CHECK(n <= MAX_S, "next %lld is past year 9999", (long long)n);
    FUZZ_CHECK(schedule_next(s, n - 1) == n, "next %lld after %lld is not itself a fire time",
               (long long)n, (long long)after);
    int64_t n2 = schedule_next(s, n);
    FUZZ_CHECK(n2 == -1 || n2 > n, "fire times go backwards: %lld then %lld", (long long)n,
               (long long)n2);
    switch (s->kind) {
    case SCHEDULE_AT:
        FUZZ_CHECK(n == s->at, "an at fired at %lld, not at %lld", (long long)n, (long long)s->at);
        break;
    case SCHEDULE_EVERY:
        FUZZ_CHECK((n - s->anchor) % s->interval == 0, "every fired off its grid");
        FUZZ_CHECK(n == s->anchor || n - s->interval <= after || n - s->interval < MIN_S,
                   "every skipped a grid point");
        break;
    case SCHEDULE_CRON:
        check_cron(s, after, n);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 4096)
        return 0;
    const uint8_t *nul = memchr(data + 2, 0, size - 2);
    size_t tlen = nul ? (size_t)(nul - data - 2) : size - 2;
    char *text = fuzz_strndup(data + 2, tlen);
    static const char *const kinds[] = {"at", "every", "cron"};
    const char *kind = data[0] % 4 < 3 ? kinds[data[0] % 4] : NULL;
    const char *zone = zones[data[1] % NZONES];
    char *expr = text, *own_kind = NULL, *own_zone = NULL;
    if (!kind) {                      /* "<kind> <expr>" */
        char *sp = strchr(text, ' ');
        own_kind = strndup(text, sp ? (size_t)(sp - text) : strlen(text));
        kind = own_kind;
        expr = sp ? sp + 1 : text + strlen(text);
    }
    if (data[1] >= 0xf0) {            /* "<expr>|<zone name>" */
        char *bar = strrchr(expr, '|');
        if (bar) {
            own_zone = strdup(bar + 1);
            *bar = 0;
            zone = own_zone;
        }
    }
    schedule_spec spec;
    char *err = NULL;
    if (schedule_parse(kind, expr, zone, &spec, &err) < 0) {
        FUZZ_CHECK(err && *err, "a refused spec gives no reason");
    } else {
        FUZZ_CHECK(!err, "an accepted spec set *err");
        FUZZ_CHECK(strcmp(kind, spec.kind == SCHEDULE_AT ? "at" : spec.kind == SCHEDULE_EVERY
                                                                     ? "every" : "cron") == 0,
                   "kind %s parsed as %d", kind, spec.kind);
        if (spec.kind == SCHEDULE_EVERY)
            FUZZ_CHECK(spec.interval >= 1 && spec.interval <= SCHEDULE_EVERY_MAX,
                       "interval %lld", (long long)spec.interval);
        if (spec.kind == SCHEDULE_CRON)
            FUZZ_CHECK(spec.zone, "cron without a zone");
        static const int64_t fixed[] = {1798761600, 1774745940, 1792886340, 0, MIN_S - 5,
                                        MAX_S - 60, 1711846800};
        for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
            check_next(&spec, fixed[i]);
        fuzz_bytes q = {nul ? nul + 1 : data + size, nul ? size - (size_t)(nul + 1 - data) : 0};
        for (int i = 0; i < 8 && q.n >= 8; i++) {
            int64_t v = (int64_t)fuzz_take(&q, 8);
            check_next(&spec, v % (MAX_S - MIN_S + 200) + (v < 0 ? -1 : 1) * 100);
        }
    }
    free(err);
    free(own_kind);
    free(own_zone);
    free(text);
    return 0;
}
