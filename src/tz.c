/* tz.c — TZif reader (RFC 8536), POSIX TZ rule evaluator, wall-time resolution and the zone cache.
 * A zone is an immutable table of transitions plus an optional footer rule; every query is a binary
 * search or a few lines of calendar arithmetic, so schedule.c can afford several per computation. */
#include "tz.h"
#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TZ_FILE_MAX (1 << 20)     /* real TZif files are under 4 KB; anything this big is not one */
#define TZ_ABBR_MAX 16

/* One date of a POSIX rule: Jn (1-365, Feb 29 never counted), n (0-365), or Mm.w.d. */
typedef struct tz_rule_date {
    char kind;                    /* 'J', 'n' or 'M' */
    int n, m, w, d;
    int32_t time;                 /* seconds after local midnight, -167h..167h */
} tz_rule_date;

typedef struct tz_rule {
    int32_t std_off, dst_off;     /* seconds east of UTC (POSIX writes them west, negated here) */
    int has_dst;
    char std_abbr[TZ_ABBR_MAX], dst_abbr[TZ_ABBR_MAX];
    tz_rule_date start, end;      /* start: std -> dst (in std time); end: dst -> std (in dst time) */
} tz_rule;

typedef struct tz_type {
    int32_t utoff;
    uint8_t isdst;
    uint8_t abbr;                 /* index into abbrs */
} tz_type;

struct tz {
    char name[TZ_NAME_MAX];
    int64_t *trans;               /* ascending transition instants */
    uint8_t *idx;                 /* type index in effect from trans[i] */
    int ntrans;
    tz_type *types;
    int ntypes;
    char *abbrs;                  /* NUL-terminated strings, indexed by tz_type.abbr */
    int nabbrs;
    int has_rule;                 /* footer rule governs instants after the last transition */
    tz_rule rule;
};

/* ---- civil arithmetic ---------------------------------------------------------------------- */

/* Floor division for the negative years and days the algorithms meet before 1970 and year 0. */
static int64_t floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

int64_t tz_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floordiv(y, 400);
    int64_t yoe = y - era * 400;                                   /* [0, 399] */
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;  /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

void tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d)
{
    days += 719468;
    int64_t era = floordiv(days, 146097);
    int64_t doe = days - era * 146097;                                    /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                     /* [0, 11] */
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

int tz_weekday(int64_t days)
{
    int64_t w = (days + 4) % 7;                                           /* 1970-01-01: Thursday */
    return (int)(w < 0 ? w + 7 : w);
}

int tz_is_leap(int64_t y)
{
    return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
}

int tz_month_days(int64_t y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 ? 28 + tz_is_leap(y) : days[m - 1];
}

int64_t tz_civil_to_seconds(const struct civil *c)
{
    return tz_days_from_civil(c->year, c->month, c->day) * 86400 + c->hour * 3600 + c->minute * 60 +
           c->second;
}

void tz_seconds_to_civil(int64_t s, struct civil *out)
{
    int64_t days = floordiv(s, 86400);
    int64_t rem = s - days * 86400;
    tz_civil_from_days(days, &out->year, &out->month, &out->day);
    out->hour = (int)(rem / 3600);
    out->minute = (int)(rem / 60 % 60);
    out->second = (int)(rem % 60);
}

int tz_civil_valid(const struct civil *c)
{
    /* The year bound keeps every seconds value far from int64 overflow. */
    return c->year >= -1000000 && c->year <= 1000000 && c->month >= 1 && c->month <= 12 &&
           c->day >= 1 && c->day <= tz_month_days(c->year, c->month) && c->hour >= 0 &&
           c->hour <= 23 && c->minute >= 0 && c->minute <= 59 && c->second >= 0 && c->second <= 59;
}

/* ---- POSIX TZ rules ------------------------------------------------------------------------ */

/* An abbreviation: three or more letters, or <...> of letters, digits, '+' and '-'. */
static int parse_abbr(const char **p, char *out)
{
    const char *s = *p;
    size_t n = 0;
    if (*s == '<') {
        s++;
        while ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
               *s == '+' || *s == '-') {
            if (n + 1 >= TZ_ABBR_MAX)
                return -1;
            out[n++] = *s++;
        }
        if (*s++ != '>')
            return -1;
    } else {
        while ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')) {
            if (n + 1 >= TZ_ABBR_MAX)
                return -1;
            out[n++] = *s++;
        }
    }
    if (n < 3)
        return -1;
    out[n] = '\0';
    *p = s;
    return 0;
}

/* [+-]h[h][:mm[:ss]] with hours up to max_h; the value in seconds, sign applied. */
static int parse_hms(const char **p, int max_h, int32_t *out)
{
    const char *s = *p;
    int sign = 1;
    if (*s == '+' || *s == '-')
        sign = *s++ == '-' ? -1 : 1;
    if (*s < '0' || *s > '9')
        return -1;
    int h = 0, digits = 0;
    while (*s >= '0' && *s <= '9' && digits < 3) {
        h = h * 10 + (*s++ - '0');
        digits++;
    }
    if (h > max_h || (*s >= '0' && *s <= '9'))
        return -1;
    int32_t v = h * 3600;
    for (int part = 0; part < 2 && *s == ':'; part++) {
        s++;
        if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
            return -1;
        int x = (s[0] - '0') * 10 + (s[1] - '0');
        if (x > 59)
            return -1;
        v += part == 0 ? x * 60 : x;
        s += 2;
    }
    *out = sign * v;
    *p = s;
    return 0;
}

static int parse_uint(const char **p, int lo, int hi, int *out)
{
    const char *s = *p;
    int v = 0, digits = 0;
    while (*s >= '0' && *s <= '9' && digits < 4) {
        v = v * 10 + (*s++ - '0');
        digits++;
    }
    if (!digits || v < lo || v > hi)
        return -1;
    *out = v;
    *p = s;
    return 0;
}

static int parse_rule_date(const char **p, tz_rule_date *r)
{
    const char *s = *p;
    memset(r, 0, sizeof *r);
    if (*s == 'J') {
        s++;
        r->kind = 'J';
        if (parse_uint(&s, 1, 365, &r->n) < 0)
            return -1;
    } else if (*s == 'M') {
        s++;
        r->kind = 'M';
        if (parse_uint(&s, 1, 12, &r->m) < 0 || *s++ != '.' || parse_uint(&s, 1, 5, &r->w) < 0 ||
            *s++ != '.' || parse_uint(&s, 0, 6, &r->d) < 0)
            return -1;
    } else {
        r->kind = 'n';
        if (parse_uint(&s, 0, 365, &r->n) < 0)
            return -1;
    }
    r->time = 7200;                                      /* POSIX default: 02:00:00 */
    if (*s == '/' && (s++, parse_hms(&s, 167, &r->time) < 0))  /* RFC 8536 extends to +-167h */
        return -1;
    *p = s;
    return 0;
}

static void rule_year(const tz_rule *r, int64_t y, int64_t *s, int64_t *e);

/* 1 when every transition of year y comes at or before every transition of year y+1. Times up to
 * +-167 h can write a rule whose DST periods overlap the next year's ("M1.1.0/-83,M12.5.6/167");
 * such a rule has no consistent reading, so it is refused. 28 years cover every weekday and
 * leap-year alignment of M and J dates. */
static int rule_in_year_order(const tz_rule *r)
{
    for (int64_t y = 2000; y < 2028; y++) {
        int64_t s0, e0, s1, e1;
        rule_year(r, y, &s0, &e0);
        rule_year(r, y + 1, &s1, &e1);
        if ((s0 > e0 ? s0 : e0) > (s1 < e1 ? s1 : e1))
            return 0;
    }
    return 1;
}

static int parse_posix(const char *text, tz_rule *r)
{
    const char *s = text;
    int32_t off;
    memset(r, 0, sizeof *r);
    if (parse_abbr(&s, r->std_abbr) < 0 || parse_hms(&s, 24, &off) < 0)
        return -1;
    r->std_off = -off;
    if (!*s)
        return 0;
    if (parse_abbr(&s, r->dst_abbr) < 0)
        return -1;
    r->has_dst = 1;
    r->dst_off = r->std_off + 3600;
    if (*s && *s != ',') {
        if (parse_hms(&s, 24, &off) < 0)
            return -1;
        r->dst_off = -off;
    }
    const char *dates = ",M3.2.0,M11.1.0";               /* glibc's default when none are given */
    if (*s == ',')
        dates = s;
    else if (*s)
        return -1;
    if (*dates++ != ',' || parse_rule_date(&dates, &r->start) < 0 || *dates++ != ',' ||
        parse_rule_date(&dates, &r->end) < 0 || *dates)
        return -1;
    return rule_in_year_order(r) ? 0 : -1;
}

/* The local day (days since epoch) a rule date falls on in year y. */
static int64_t rule_day(const tz_rule_date *r, int64_t y)
{
    int64_t jan1 = tz_days_from_civil(y, 1, 1);
    if (r->kind == 'J')
        return jan1 + r->n - 1 + (tz_is_leap(y) && r->n >= 60);
    if (r->kind == 'n')
        return jan1 + r->n;
    int64_t first = tz_days_from_civil(y, r->m, 1);
    int day = 1 + (r->d - tz_weekday(first) + 7) % 7 + (r->w - 1) * 7;
    int mdays = tz_month_days(y, r->m);
    while (day > mdays)
        day -= 7;
    return first + day - 1;
}

/* The instants DST starts (s) and ends (e) in year y of the rule. */
static void rule_year(const tz_rule *r, int64_t y, int64_t *s, int64_t *e)
{
    *s = rule_day(&r->start, y) * 86400 + r->start.time - r->std_off;
    *e = rule_day(&r->end, y) * 86400 + r->end.time - r->dst_off;
}

static int rule_year_of(const tz_rule *r, int64_t t)
{
    struct civil c;
    tz_seconds_to_civil(t + r->std_off, &c);
    return (int)c.year;
}

/* 1 when DST is in effect at t under the rule. A start that coincides with an end wins the tie
 * (all-year DST is written as "start Jan 1 00:00, end Dec 31 25:00"). */
static int rule_dst_at(const tz_rule *r, int64_t t)
{
    if (!r->has_dst)
        return 0;
    int64_t y = rule_year_of(r, t), best = INT64_MIN;
    int dst = 0;
    /* both events of year y-1 may fall after t (times near +167 h in late December): then the
     * latest event at or before t is one of year y-2 */
    for (int64_t yy = y - 2; yy <= y + 1; yy++) {
        int64_t s, e;
        rule_year(r, yy, &s, &e);
        if (e <= t && e > best) {
            best = e;
            dst = 0;
        }
        if (s <= t && s >= best) {
            best = s;
            dst = 1;
        }
    }
    return dst;
}

static int rule_next(const tz_rule *r, int64_t t, int64_t *at, int *offset_after)
{
    if (!r->has_dst)
        return 0;
    int64_t y = rule_year_of(r, t), best = INT64_MAX;
    int off = r->std_off;
    for (int64_t yy = y - 1; yy <= y + 2; yy++) {
        int64_t s, e;
        rule_year(r, yy, &s, &e);
        if (e > t && e < best) {
            best = e;
            off = r->std_off;
        }
        if (s > t && s <= best) {
            best = s;
            off = r->dst_off;
        }
    }
    *at = best;
    *offset_after = off;
    return 1;
}

/* ---- zone queries -------------------------------------------------------------------------- */

const char *tz_name(const tz *z)
{
    return z->name;
}

/* Index of the type in effect at t from the table, or -1 when the footer rule governs t. */
static int type_at(const tz *z, int64_t t)
{
    if (z->ntrans == 0)
        return z->has_rule ? -1 : 0;
    if (t < z->trans[0])
        return 0;
    if (t > z->trans[z->ntrans - 1] && z->has_rule)
        return -1;
    int lo = 0, hi = z->ntrans - 1;                      /* last i with trans[i] <= t */
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (z->trans[mid] <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    return z->idx[lo];
}

int tz_offset_at(const tz *z, int64_t utc_s, int *is_dst)
{
    int i = type_at(z, utc_s);
    if (i >= 0) {
        if (is_dst)
            *is_dst = z->types[i].isdst;
        return z->types[i].utoff;
    }
    int dst = rule_dst_at(&z->rule, utc_s);
    if (is_dst)
        *is_dst = dst;
    return dst ? z->rule.dst_off : z->rule.std_off;
}

const char *tz_abbr_at(const tz *z, int64_t utc_s)
{
    int i = type_at(z, utc_s);
    if (i >= 0)
        return z->abbrs + z->types[i].abbr;
    return rule_dst_at(&z->rule, utc_s) ? z->rule.dst_abbr : z->rule.std_abbr;
}

int tz_utc_to_local(const tz *z, int64_t utc_s, struct civil *out)
{
    int off = tz_offset_at(z, utc_s, NULL);
    tz_seconds_to_civil(utc_s + off, out);
    return off;
}

int tz_next_transition(const tz *z, int64_t utc_s, int64_t *at, int *offset_after)
{
    if (z->ntrans > 0 && utc_s < z->trans[z->ntrans - 1]) {
        int lo = 0, hi = z->ntrans - 1;                  /* first i with trans[i] > utc_s */
        while (lo < hi) {
            int mid = lo + (hi - lo) / 2;
            if (z->trans[mid] > utc_s)
                hi = mid;
            else
                lo = mid + 1;
        }
        *at = z->trans[lo];
        *offset_after = z->types[z->idx[lo]].utoff;
        return 1;
    }
    return z->has_rule ? rule_next(&z->rule, utc_s, at, offset_after) : 0;
}

/* Offsets are within +-26 h (RFC 8536 bounds), so every instant of a wall time L lies in
 * [L - 2 days, L + 2 days]: collect the offsets in effect there, keep those that map back to L. */
int tz_local_to_utc(const tz *z, const struct civil *local, int64_t *utc_s, int policy)
{
    if (!tz_civil_valid(local))
        return -1;
    int64_t L = tz_civil_to_seconds(local);
    int64_t lo = L - 2 * 86400, hi = L + 2 * 86400;
    enum { MAXT = 16 };
    int offs[MAXT + 1], noffs = 0;
    int64_t tat[MAXT];
    int tbefore[MAXT], tafter[MAXT], ntr = 0;

    int o = tz_offset_at(z, lo, NULL);
    offs[noffs++] = o;
    int64_t cur = lo, T;
    int oa;
    while (ntr < MAXT && tz_next_transition(z, cur, &T, &oa) && T <= hi) {
        tat[ntr] = T;
        tbefore[ntr] = o;
        tafter[ntr++] = oa;
        int seen = 0;
        for (int i = 0; i < noffs; i++)
            seen |= offs[i] == oa;
        if (!seen)
            offs[noffs++] = oa;
        o = oa;
        cur = T;
    }

    int found = 0;
    int64_t best = 0;
    for (int i = 0; i < noffs; i++) {
        int64_t t = L - offs[i];
        if (tz_offset_at(z, t, NULL) != offs[i])
            continue;
        if (!found || (policy == TZ_LATER ? t > best : t < best))
            best = t;
        found++;
    }
    if (found) {
        *utc_s = best;
        return found > 1 ? TZ_LOCAL_OVERLAP : TZ_LOCAL_UNIQUE;
    }
    for (int i = 0; i < ntr; i++) {
        if (tafter[i] > tbefore[i] && tat[i] + tbefore[i] <= L && L < tat[i] + tafter[i]) {
            *utc_s = tat[i];
            return TZ_LOCAL_GAP;
        }
    }
    return -1;                                           /* unreachable for well-formed zones */
}

/* ---- loading ------------------------------------------------------------------------------- */

static char tz_dir[512] = "/usr/share/zoneinfo";

void tz_set_dir(const char *dir)
{
    snprintf(tz_dir, sizeof tz_dir, "%s", dir);
}

int tz_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= TZ_NAME_MAX || name[0] == '/')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '+' || c == '-' || c == '/'))
            return 0;
    }
    /* Components: none empty, none "." or ".." (only '.' could spell them, and '.' is refused
     * above, but say it here so a future relaxation of the charset cannot open a traversal). */
    for (const char *p = name; *p;) {
        const char *q = strchr(p, '/');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        if (!q)
            break;
        p = q + 1;
        if (!*p)
            return 0;                                    /* trailing '/' */
    }
    return 1;
}

static tz *tz_new(const char *name)
{
    tz *z = calloc(1, sizeof *z);
    if (z)
        snprintf(z->name, sizeof z->name, "%s", name);
    return z;
}

void tz_free(tz *z)
{
    if (!z)
        return;
    free(z->trans);
    free(z->idx);
    free(z->types);
    free(z->abbrs);
    free(z);
}

tz *tz_from_posix(const char *name, const char *rule, char **err)
{
    tz *z = tz_new(name);
    if (!z) {
        set_err(err, "out of memory");
        return NULL;
    }
    if (parse_posix(rule, &z->rule) < 0) {
        set_err(err, "time zone %s: malformed POSIX TZ rule '%s'", name, rule);
        tz_free(z);
        return NULL;
    }
    z->has_rule = 1;
    return z;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

typedef struct tzif_counts {
    uint32_t isut, isstd, leap, time, type, chr;
} tzif_counts;

static int tzif_header(const unsigned char *p, size_t len, tzif_counts *c, int *version)
{
    if (len < 44 || memcmp(p, "TZif", 4) != 0)
        return -1;
    *version = p[4] == 0 ? 1 : p[4] - '0';
    c->isut = be32(p + 20);
    c->isstd = be32(p + 24);
    c->leap = be32(p + 28);
    c->time = be32(p + 32);
    c->type = be32(p + 36);
    c->chr = be32(p + 40);
    return 0;
}

static size_t tzif_block_size(const tzif_counts *c, int tsize)
{
    return (size_t)c->time * tsize + c->time + (size_t)c->type * 6 + c->chr +
           (size_t)c->leap * (tsize + 4) + c->isstd + c->isut;
}

/* Parses a whole TZif file into z. Returns 0, or -1 with a reason in *why (static text). */
static int tzif_parse(tz *z, const unsigned char *buf, size_t len, const char **why)
{
    tzif_counts c;
    int version;
    *why = "not a TZif file";
    if (tzif_header(buf, len, &c, &version) < 0 || version < 1 || version > 9)
        return -1;
    *why = "truncated or inconsistent TZif data";
    /* Each count is bounded before any multiplication so the sizes cannot overflow. */
    if (c.time > 100000 || c.type > 256 || c.chr > 4096 || c.leap > 100000 || c.isstd > 256 ||
        c.isut > 256)
        return -1;
    const unsigned char *p = buf + 44;
    size_t left = len - 44;
    int tsize = 4;
    if (version >= 2) {
        size_t skip = tzif_block_size(&c, 4);
        if (left < skip)
            return -1;
        p += skip;
        left -= skip;
        if (tzif_header(p, left, &c, &version) < 0)
            return -1;
        if (c.time > 100000 || c.type > 256 || c.chr > 4096 || c.leap > 100000 || c.isstd > 256 ||
            c.isut > 256)
            return -1;
        p += 44;
        left -= 44;
        tsize = 8;
    }
    *why = "truncated or inconsistent TZif data";
    if (left < tzif_block_size(&c, tsize) || c.type == 0 || c.chr == 0 ||
        (c.isstd && c.isstd != c.type) || (c.isut && c.isut != c.type))
        return -1;
    if (c.leap) {
        *why = "leap-second (\"right/\") zones are not supported";
        return -1;
    }
    z->ntrans = (int)c.time;
    z->ntypes = (int)c.type;
    z->nabbrs = (int)c.chr;
    z->trans = malloc(sizeof *z->trans * (c.time ? c.time : 1));
    z->idx = malloc(c.time ? c.time : 1);
    z->types = malloc(sizeof *z->types * c.type);
    z->abbrs = malloc(c.chr + 1);
    if (!z->trans || !z->idx || !z->types || !z->abbrs) {
        *why = "out of memory";
        return -1;
    }
    for (uint32_t i = 0; i < c.time; i++) {
        z->trans[i] = tsize == 8 ? be64(p) : (int64_t)(int32_t)be32(p);
        p += tsize;
        if (i > 0 && z->trans[i] <= z->trans[i - 1])
            return -1;
    }
    for (uint32_t i = 0; i < c.time; i++) {
        z->idx[i] = *p++;
        if (z->idx[i] >= c.type)
            return -1;
    }
    for (uint32_t i = 0; i < c.type; i++) {
        z->types[i].utoff = (int32_t)be32(p);
        z->types[i].isdst = p[4];
        z->types[i].abbr = p[5];
        p += 6;
        if (z->types[i].utoff < -89999 || z->types[i].utoff > 93599 || z->types[i].isdst > 1 ||
            z->types[i].abbr >= c.chr)
            return -1;
    }
    memcpy(z->abbrs, p, c.chr);
    z->abbrs[c.chr] = '\0';
    p += c.chr + c.isstd + c.isut;                       /* leap is 0; std/ut flags unused */
    left = len - (size_t)(p - buf);

    if (version >= 2) {
        /* The footer: '\n' rule '\n', the rule possibly empty (then the last type lasts forever). */
        const unsigned char *nl = left >= 2 && p[0] == '\n' ? memchr(p + 1, '\n', left - 1) : NULL;
        size_t flen = nl ? (size_t)(nl - p - 1) : 0;
        char rule[128];
        *why = "malformed POSIX TZ footer";
        if (!nl || flen >= sizeof rule)
            return -1;
        if (flen > 0) {
            memcpy(rule, p + 1, flen);
            rule[flen] = '\0';
            if (parse_posix(rule, &z->rule) < 0)
                return -1;
            z->has_rule = 1;
            /* RFC 8536 3.3: the rule must agree with the type the last transition sets, or the
             * offset would change after it without a transition anyone can find */
            const tz_type *last = z->ntrans ? &z->types[z->idx[z->ntrans - 1]] : NULL;
            int64_t at = z->ntrans ? z->trans[z->ntrans - 1] : 0;
            int dst = last ? rule_dst_at(&z->rule, at) : 0;
            *why = "POSIX TZ footer disagrees with the last transition";
            if (last && (last->utoff != (dst ? z->rule.dst_off : z->rule.std_off) ||
                         last->isdst != dst))
                return -1;
        }
    }
    return 0;
}

tz *tz_from_tzif(const char *name, const unsigned char *data, size_t len, char **err)
{
    tz *z = tz_new(name);
    const char *why = "out of memory";
    if (!z || tzif_parse(z, data, len, &why) < 0) {
        set_err(err, "time zone '%s': %s", name, why);
        tz_free(z);
        return NULL;
    }
    return z;
}

static int read_file(const char *path, unsigned char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    unsigned char *buf = NULL;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > TZ_FILE_MAX) {
        close(fd);
        errno = ENOENT;
        return -1;
    }
    buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    *out = buf;
    *len = got;
    return 0;
}

tz *tz_load(const char *name, char **err)
{
    if (!tz_name_valid(name)) {
        set_err(err, "invalid time zone name '%s' (expected an IANA name like Europe/Paris)",
                name ? name : "(null)");
        return NULL;
    }
    if (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0)
        return tz_from_posix(name, "UTC0", err);

    char path[sizeof tz_dir + TZ_NAME_MAX + 2];
    snprintf(path, sizeof path, "%s/%s", tz_dir, name);
    unsigned char *buf;
    size_t len;
    if (read_file(path, &buf, &len) < 0) {
        set_err(err, "unknown time zone '%s' (not in %s)", name, tz_dir);
        return NULL;
    }
    tz *z = tz_from_tzif(name, buf, len, err);
    free(buf);
    return z;
}

/* ---- cache --------------------------------------------------------------------------------- */

/* Open addressing over twice the cap, so a probe always ends at an empty slot. */
#define TZ_CACHE_SLOTS (2 * TZ_CACHE_MAX)
static tz *tz_cache[TZ_CACHE_SLOTS];
static int tz_cached;

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

const tz *tz_get(const char *name, char **err)
{
    if (!tz_name_valid(name))
        return tz_load(name, err);                       /* for the error message */
    uint32_t i = name_hash(name) % TZ_CACHE_SLOTS;
    while (tz_cache[i]) {
        if (strcmp(tz_cache[i]->name, name) == 0)
            return tz_cache[i];
        i = (i + 1) % TZ_CACHE_SLOTS;
    }
    if (tz_cached >= TZ_CACHE_MAX) {
        set_err(err, "time zone cache full (%d zones); '%s' not loaded", TZ_CACHE_MAX, name);
        return NULL;
    }
    tz *z = tz_load(name, err);
    if (!z)
        return NULL;
    tz_cache[i] = z;
    tz_cached++;
    return z;
}

void tz_cache_clear(void)
{
    for (int i = 0; i < TZ_CACHE_SLOTS; i++) {
        tz_free(tz_cache[i]);
        tz_cache[i] = NULL;
    }
    tz_cached = 0;
}

int tz_cache_size(void)
{
    return tz_cached;
}
