/* schedule.c — parsing "at" / "every" / "cron" specs and computing the next fire instant.
 * Cron is matched in local wall time, one constant-offset stretch of the zone at a time, so DST
 * gaps and overlaps are decided where they happen (see schedule.h for the rules). */
#include "schedule.h"
#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Instants handled: years 0001..9999, the range RFC 3339 can write. */
#define SCHEDULE_MIN_S (-62135596800LL)
#define SCHEDULE_MAX_S 253402300799LL

/* ---- date-times ---------------------------------------------------------------------------- */

/* Exactly n digits at *p; their value. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/* schedule_parse_time, also saying whether the text carried its own offset (*local = 0) or was read
 * in zone (*local = 1). */
static int parse_time(const char *text, const tz *zone, int64_t *utc_s, int *local, char **err)
{
    const char *p = text;
    *local = 0;
    struct civil c = {0};
    int y, frac = 0;
    if (digits(&p, 4, &y) < 0 || *p++ != '-' || digits(&p, 2, &c.month) < 0 || *p++ != '-' ||
        digits(&p, 2, &c.day) < 0 || (*p != 'T' && *p != 't' && *p != ' ') || (p++, 0) ||
        digits(&p, 2, &c.hour) < 0 || *p++ != ':' || digits(&p, 2, &c.minute) < 0)
        goto malformed;
    c.year = y;
    if (*p == ':') {
        p++;
        if (digits(&p, 2, &c.second) < 0)
            goto malformed;
        if (*p == '.') {
            p++;
            if (*p < '0' || *p > '9')
                goto malformed;
            while (*p >= '0' && *p <= '9')
                frac |= *p++ != '0';
        }
    }
    if (c.second == 60) {
        set_err(err, "'%s': leap seconds are not supported", text);
        return -1;
    }
    if (y == 0 || !tz_civil_valid(&c)) {
        set_err(err, "'%s' is not a valid date and time", text);
        return -1;
    }
    int64_t t;
    if (*p == 'Z' || *p == 'z') {
        p++;
        t = tz_civil_to_seconds(&c);
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh) < 0 || *p++ != ':' || digits(&p, 2, &om) < 0 || oh > 23 || om > 59)
            goto malformed;
        t = tz_civil_to_seconds(&c) - sign * (oh * 3600 + om * 60);
    } else if (*p == '\0') {
        if (!zone) {
            set_err(err, "'%s' has no UTC offset: give one (\"Z\", \"+01:00\") or a time zone", text);
            return -1;
        }
        if (tz_local_to_utc(zone, &c, &t, TZ_EARLIER) < 0)
            goto malformed;
        *local = 1;
    } else {
        goto malformed;
    }
    if (*p)
        goto malformed;
    *utc_s = t + (frac ? 1 : 0);                         /* never fire before the written instant */
    return 0;
malformed:
    set_err(err, "'%s' is not an RFC 3339 date-time (like 2026-11-22T09:00:00+01:00) "
            "or a local YYYY-MM-DDTHH:MM[:SS]", text);
    return -1;
}

int schedule_parse_time(const char *text, const tz *zone, int64_t *utc_s, char **err)
{
    int local;
    return parse_time(text, zone, utc_s, &local, err);
}

/* ---- cron parsing -------------------------------------------------------------------------- */

typedef struct cron_field {
    const char *what;             /* for messages */
    int lo, hi;
    const char *const *names;     /* three-letter names for lo.., or NULL */
} cron_field;

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                          "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const cron_field cron_fields[5] = {
    {"minute", 0, 59, NULL},
    {"hour", 0, 23, NULL},
    {"day-of-month", 1, 31, NULL},
    {"month", 1, 12, month_names},
    {"day-of-week", 0, 7, day_names},
};

/* A number or a name at *p; -1 when neither. */
static int cron_value(const char **p, const cron_field *f, int *out)
{
    const char *s = *p;
    if (*s >= '0' && *s <= '9') {
        int v = 0, n = 0;
        while (*s >= '0' && *s <= '9' && n < 4) {
            v = v * 10 + (*s++ - '0');
            n++;
        }
        if (*s >= '0' && *s <= '9')
            return -1;
        *out = v;
        *p = s;
        return 0;
    }
    for (int i = 0; f->names && f->names[i]; i++) {
        if (strncasecmp(s, f->names[i], 3) == 0) {
            *out = f->lo + i;
            *p = s + 3;
            return 0;
        }
    }
    return -1;
}

/* Parses one field (text of length len) into *mask. Returns 0, or -1 with *err set. */
static int cron_parse_field(const char *expr, const char *text, size_t len, const cron_field *f,
                            uint64_t *mask, char **err)
{
    char buf[128];
    if (len >= sizeof buf) {
        set_err(err, "cron '%s': %s field is too long", expr, f->what);
        return -1;
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    *mask = 0;
    const char *p = buf;
    for (;;) {
        const char *item = p;
        int a, b, step = 1;
        if (*p == '*') {
            p++;
            a = f->lo;
            b = f->hi;
        } else {
            if (cron_value(&p, f, &a) < 0)
                goto bad;
            b = a;
            if (*p == '-') {
                p++;
                if (cron_value(&p, f, &b) < 0)
                    goto bad;
            }
            if (a < f->lo || a > f->hi || b < f->lo || b > f->hi) {
                set_err(err, "cron '%s': %s %d out of range %d-%d", expr, f->what,
                        a < f->lo || a > f->hi ? a : b, f->lo, f->hi);
                return -1;
            }
            if (a > b) {
                set_err(err, "cron '%s': %s range %d-%d runs backwards", expr, f->what, a, b);
                return -1;
            }
        }
        if (*p == '/') {
            p++;
            if (*p < '0' || *p > '9' || cron_value(&p, f, &step) < 0)
                goto bad;
            if (step < 1) {
                set_err(err, "cron '%s': %s step must be at least 1", expr, f->what);
                return -1;
            }
            if (*item != '*' && a == b)
                b = f->hi;                               /* "5/15" = "5-59/15", as cronie reads it */
        }
        for (int v = a; v <= b; v += step)
            *mask |= 1ull << v;
        if (*p == '\0')
            break;
        if (*p++ != ',' || *p == '\0')
            goto bad;
    }
    return 0;
bad:
    set_err(err, "cron '%s': malformed %s field '%s'", expr, f->what, buf);
    return -1;
}

static const struct {
    const char *name, *fields;
} cron_macros[] = {
    {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"},  {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

static int cron_parse(const char *expr, schedule_cron *c, char **err)
{
    const char *text = expr;
    if (*text == '@') {
        size_t i, n = sizeof cron_macros / sizeof cron_macros[0];
        for (i = 0; i < n && strcasecmp(text, cron_macros[i].name) != 0; i++)
            ;
        if (i == n) {
            set_err(err, "cron '%s': unknown macro (use @yearly, @monthly, @weekly, @daily or "
                    "@hourly)", expr);
            return -1;
        }
        text = cron_macros[i].fields;
    }
    const char *start[6];
    size_t len[6];
    int n = 0;
    for (const char *p = text; *p;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        const char *s = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if (n < 6) {
            start[n] = s;
            len[n] = (size_t)(p - s);
        }
        n++;
    }
    if (n != 5) {
        set_err(err, "cron '%s': expected 5 fields (minute hour day-of-month month day-of-week), "
                "got %d", expr, n);
        return -1;
    }
    uint64_t m[5];
    for (int i = 0; i < 5; i++)
        if (cron_parse_field(expr, start[i], len[i], &cron_fields[i], &m[i], err) < 0)
            return -1;
    memset(c, 0, sizeof *c);
    c->minutes = m[0];
    c->hours = (uint32_t)m[1];
    c->days = (uint32_t)m[2];
    c->months = (uint16_t)m[3];
    c->weekdays = (uint8_t)((m[4] | m[4] >> 7) & 0x7f);  /* 7 is Sunday */
    c->flags = (start[2][0] == '*' ? SCHEDULE_DOM_STAR : 0) |
               (start[4][0] == '*' ? SCHEDULE_DOW_STAR : 0) |
               (start[1][0] == '*' ? SCHEDULE_HOUR_STAR : 0);
    /* Only a day-of-month list that decides alone can be impossible ("30 2"): with both fields
     * restricted either may match, and a field starting with '*' always includes day 1. */
    if (!(c->flags & SCHEDULE_DOM_STAR) && (c->flags & SCHEDULE_DOW_STAR)) {
        int possible = 0;
        for (int mo = 1; mo <= 12 && !possible; mo++)
            if (c->months & (1u << mo))
                possible = (c->days & ((2u << tz_month_days(2000, mo)) - 2)) != 0;
        if (!possible) {
            set_err(err, "cron '%s' never fires: no listed month has the listed day of the month",
                    expr);
            return -1;
        }
    }
    return 0;
}

/* ---- cron matching ------------------------------------------------------------------------- */

static int64_t floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int day_matches(const schedule_cron *c, int d, int wd)
{
    int dom = (c->days >> d) & 1, dow = (c->weekdays >> wd) & 1;
    if (c->flags & (SCHEDULE_DOM_STAR | SCHEDULE_DOW_STAR))
        return dom && dow;
    return dom || dow;
}

/* Lowest set bit at or above from in mask, or -1. */
static int next_bit(uint64_t mask, int from)
{
    if (from > 63)
        return -1;
    mask >>= from;
    return mask ? from + __builtin_ctzll(mask) : -1;
}

#define CRON_NONE INT64_MIN      /* no match: wall times before 1970 are negative */

/* The first matching wall time (local seconds, a whole minute) in [from, limit], or CRON_NONE. Walks
 * months, then days, then hours, then minutes, skipping whatever the fields rule out. */
static int64_t cron_next_local(const schedule_cron *c, int64_t from, int64_t limit)
{
    from = floordiv(from + 59, 60) * 60;
    int64_t days = floordiv(from, 86400), y;
    int rem = (int)(from - days * 86400), m, d;
    int h = rem / 3600, mi = rem / 60 % 60;
    tz_civil_from_days(days, &y, &m, &d);
    for (;;) {
        if (days * 86400 + h * 3600 + mi * 60 > limit)
            return CRON_NONE;
        if (!(c->months & (1u << m))) {
            int nm = next_bit(c->months, m + 1);
            if (nm < 0) {
                y++;
                nm = next_bit(c->months, 1);
            }
            m = nm;
            d = 1;
            h = mi = 0;
            days = tz_days_from_civil(y, m, d);
            continue;
        }
        if (!day_matches(c, d, tz_weekday(days))) {
            days++;
            h = mi = 0;
            tz_civil_from_days(days, &y, &m, &d);
            continue;
        }
        int nh = next_bit(c->hours, h);
        if (nh < 0) {
            days++;
            h = mi = 0;
            tz_civil_from_days(days, &y, &m, &d);
            continue;
        }
        if (nh != h) {
            h = nh;
            mi = 0;
        }
        int nmi = next_bit(c->minutes, mi);
        if (nmi < 0) {
            mi = 0;
            if (++h == 24) {
                h = 0;
                days++;
                tz_civil_from_days(days, &y, &m, &d);
            }
            continue;
        }
        int64_t L = days * 86400 + h * 3600 + nmi * 60;
        return L <= limit ? L : CRON_NONE;
    }
}

/* 1 when wall time L, found at instant s, also happened at an earlier instant (s is its second
 * occurrence in a fall-back overlap). Cheap unless a transition lies within two days before s. */
static int repeated(const tz *z, int64_t L, int64_t s)
{
    int64_t T, first;
    int off;
    if (!tz_next_transition(z, s - 2 * 86400, &T, &off) || T > s)
        return 0;
    struct civil c;
    tz_seconds_to_civil(L, &c);
    return tz_local_to_utc(z, &c, &first, TZ_EARLIER) == TZ_LOCAL_OVERLAP && first < s;
}

/* Walks the zone's constant-offset stretches from t on: in each, the first matching wall time that
 * is not a second occurrence (unless the hour field is a wildcard); at each forward transition,
 * whether any matching wall time fell in the gap it opens (then the transition itself fires). */
static int64_t cron_next(const schedule_spec *spec, int64_t t)
{
    const schedule_cron *c = &spec->cron;
    const tz *z = spec->zone;
    int64_t start = t, T, end;
    int off = tz_offset_at(z, start, NULL), off_next;
    int prev = off;
    if (tz_next_transition(z, start - 1, &T, &off_next) && T == start)
        prev = tz_offset_at(z, start - 1, NULL);         /* t is itself a transition */
    for (int guard = 0; guard < 100000 && start <= SCHEDULE_MAX_S; guard++) {
        if (prev < off && cron_next_local(c, start + prev, start + off - 1) != CRON_NONE)
            return start;                                /* a matching time was skipped */
        int has_end = tz_next_transition(z, start, &end, &off_next);
        int64_t limit = (has_end ? end - 1 : SCHEDULE_MAX_S) + off;
        int64_t L = cron_next_local(c, start + off, limit);
        while (L != CRON_NONE) {
            int64_t s = L - off;
            if ((c->flags & SCHEDULE_HOUR_STAR) || !repeated(z, L, s))
                return s <= SCHEDULE_MAX_S ? s : -1;
            L = cron_next_local(c, L + 60, limit);
        }
        if (!has_end)
            return -1;
        start = end;
        prev = off;
        off = off_next;
    }
    return -1;
}

/* ---- public -------------------------------------------------------------------------------- */

static int parse_every(const char *expr, const tz *zone, schedule_spec *out, char **err)
{
    const char *p = expr;
    int64_t n = 0;
    int nd = 0;
    while (*p >= '0' && *p <= '9' && nd < 12) {
        n = n * 10 + (*p++ - '0');
        nd++;
    }
    int64_t unit = 1;
    if (*p == 's' || *p == 'm' || *p == 'h' || *p == 'd')
        unit = *p == 's' ? 1 : *p == 'm' ? 60 : *p == 'h' ? 3600 : 86400, p++;
    if (!nd || (*p && *p != '@')) {
        set_err(err, "every '%s': expected <n>[s|m|h|d][@<date-time>], like 3600 or 1d@2026-01-01T09:00",
                expr);
        return -1;
    }
    if (n < 1 || n > SCHEDULE_EVERY_MAX / unit) {
        set_err(err, "every '%s': the interval must be 1 second to 100 years", expr);
        return -1;
    }
    out->interval = n * unit;
    if (*p == '@') {
        if (schedule_parse_time(p + 1, zone, &out->anchor, err) < 0)
            return -1;
        out->has_anchor = 1;
    }
    return 0;
}

int schedule_parse(const char *kind, const char *expr, const char *zone, schedule_spec *out,
                   char **err)
{
    memset(out, 0, sizeof *out);
    if (!kind || !expr) {
        set_err(err, "schedule: kind and expression are required");
        return -1;
    }
    const tz *z = NULL;
    if (zone && *zone && !(z = tz_get(zone, err)))
        return -1;
    if (strcmp(kind, "at") == 0) {
        int local;
        out->kind = SCHEDULE_AT;
        if (parse_time(expr, z, &out->at, &local, err) < 0)
            return -1;
        out->zone = local ? z : NULL;
        return 0;
    }
    if (strcmp(kind, "every") == 0) {
        out->kind = SCHEDULE_EVERY;
        if (parse_every(expr, z, out, err) < 0)
            return -1;
        out->zone = z;
        return 0;
    }
    if (strcmp(kind, "cron") == 0) {
        out->kind = SCHEDULE_CRON;
        if (!z && !(z = tz_get("UTC", err)))
            return -1;
        out->zone = z;
        return cron_parse(expr, &out->cron, err);
    }
    set_err(err, "schedule kind '%s' is not one of at, every, cron", kind);
    return -1;
}

int64_t schedule_next(const schedule_spec *spec, int64_t after_utc_s)
{
    if (after_utc_s >= SCHEDULE_MAX_S)
        return -1;
    if (after_utc_s < SCHEDULE_MIN_S - 1)
        after_utc_s = SCHEDULE_MIN_S - 1;
    switch (spec->kind) {
    case SCHEDULE_AT:
        /* a local or offset time in 9999 may fall in year 10000 in UTC */
        return spec->at > after_utc_s && spec->at <= SCHEDULE_MAX_S ? spec->at : -1;
    case SCHEDULE_EVERY: {
        if (spec->interval < 1)
            return -1;
        if (after_utc_s < spec->anchor)
            return spec->anchor <= SCHEDULE_MAX_S ? spec->anchor : -1;
        int64_t k = (after_utc_s - spec->anchor) / spec->interval + 1;
        int64_t next = spec->anchor + k * spec->interval;
        return next <= SCHEDULE_MAX_S ? next : -1;
    }
    case SCHEDULE_CRON:
        return spec->zone ? cron_next(spec, after_utc_s + 1) : -1;
    }
    return -1;
}
