/* test_tz.c — unit tests for tz.c: civil arithmetic, zone-name validation, TZif loading from the
 * system tzdata, offsets around DST transitions (Paris, New York, Lord Howe, Kathmandu, Kolkata), the
 * POSIX footer for far-future instants, LMT before the first transition, wall-time gap and overlap
 * resolution, POSIX rule parsing, broken files, and the zone cache. Fixed instants only. */
#include "tz.h"
#include "unit.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers ---- */

/* Instant of a UTC civil time. */
static int64_t U(int64_t y, int mo, int d, int h, int mi, int s)
{
    struct civil c = {y, mo, d, h, mi, s};
    return tz_civil_to_seconds(&c);
}

/* "YYYY-MM-DDTHH:MM:SS+hh:mm" of instant t in z (one of four rotating buffers). */
static const char *local_str(const tz *z, int64_t t)
{
    static char buf[4][48];
    static int n;
    char *b = buf[n++ % 4];
    struct civil c;
    int off = tz_utc_to_local(z, t, &c);
    int a = off < 0 ? -off : off;
    snprintf(b, 48, "%04lld-%02d-%02dT%02d:%02d:%02d%c%02d:%02d", (long long)c.year, c.month, c.day,
             c.hour, c.minute, c.second, off < 0 ? '-' : '+', a / 3600, a / 60 % 60);
    return b;
}

static tz *load(const char *name)
{
    char *err = NULL;
    tz *z = tz_load(name, &err);
    if (!z)
        fprintf(stderr, "    cannot load %s: %s\n", name, err ? err : "?");
    free(err);
    return z;
}

/* Resolves wall time y-m-d h:mi in z; returns the kind, the instant in *t. */
static int resolve(const tz *z, int64_t y, int mo, int d, int h, int mi, int policy, int64_t *t)
{
    struct civil c = {y, mo, d, h, mi, 0};
    return tz_local_to_utc(z, &c, t, policy);
}

/* The error tz_load gives for name ("" when it loaded). */
static char errbuf[512];
static const char *load_err(const char *name)
{
    char *err = NULL;
    tz *z = tz_load(name, &err);
    snprintf(errbuf, sizeof errbuf, "%s", z ? "" : err ? err : "(no message)");
    tz_free(z);
    free(err);
    return errbuf;
}

/* ---- civil arithmetic ---- */

static void civil_known_days(void)
{
    CHECK_INT(tz_days_from_civil(1970, 1, 1), 0);
    CHECK_INT(tz_days_from_civil(2000, 3, 1), 11017);
    CHECK_INT(tz_days_from_civil(1969, 12, 31), -1);
    CHECK_INT(tz_days_from_civil(1, 1, 1), -719162);
    CHECK_INT(tz_days_from_civil(2400, 2, 29) - tz_days_from_civil(2400, 2, 28), 1);
    CHECK_INT(tz_weekday(0), 4);                            /* Thursday */
    CHECK_INT(tz_weekday(-1), 3);
    CHECK_INT(tz_weekday(tz_days_from_civil(2026, 11, 22)), 0);  /* a Sunday */
    CHECK_INT(tz_is_leap(2000), 1);
    CHECK_INT(tz_is_leap(2100), 0);
    CHECK_INT(tz_is_leap(2028), 1);
    CHECK_INT(tz_month_days(2028, 2), 29);
    CHECK_INT(tz_month_days(2027, 2), 28);
    CHECK_INT(U(2026, 11, 22, 8, 0, 0), 1795334400);
}

static void civil_round_trip(void)
{
    int bad = 0;
    int64_t prev = tz_days_from_civil(-2001, 1, 1) - 1;
    for (int64_t days = prev + 1; days < 1200000; days += 37) {
        int64_t y;
        int m, d;
        tz_civil_from_days(days, &y, &m, &d);
        if (tz_days_from_civil(y, m, d) != days || m < 1 || m > 12 || d < 1 || d > tz_month_days(y, m))
            bad++;
    }
    CHECK_INT(bad, 0);
    struct civil c;
    tz_seconds_to_civil(-1, &c);
    CHECK(c.year == 1969 && c.month == 12 && c.day == 31 && c.hour == 23 && c.minute == 59 &&
          c.second == 59);
    struct civil bad_day = {2026, 2, 29, 0, 0, 0}, bad_hour = {2026, 1, 1, 24, 0, 0};
    CHECK(!tz_civil_valid(&bad_day));
    CHECK(!tz_civil_valid(&bad_hour));
}

/* ---- names and loading ---- */

static void names_rejected(void)
{
    CHECK(strstr(load_err("../etc/passwd"), "invalid time zone name '../etc/passwd'"));
    CHECK(strstr(load_err("/etc/passwd"), "invalid time zone name"));
    CHECK(strstr(load_err("Europe/../../etc/passwd"), "invalid time zone name"));
    CHECK(strstr(load_err("Europe//Paris"), "invalid time zone name"));
    CHECK(strstr(load_err("Europe/Paris/"), "invalid time zone name"));
    CHECK(strstr(load_err("Europe/Paris "), "invalid time zone name"));
    CHECK(strstr(load_err("Europe\\Paris"), "invalid time zone name"));
    CHECK(strstr(load_err(""), "invalid time zone name"));
    CHECK(strstr(load_err(NULL), "invalid time zone name"));
    CHECK(strstr(load_err("A/very/long/name/that/goes/on/and/on/beyond/sixty/four/characters"),
                 "invalid time zone name"));
    CHECK_STR(load_err("Nope/Zone"), "unknown time zone 'Nope/Zone' (not in /usr/share/zoneinfo)");
    CHECK(strstr(load_err("Europe"), "unknown time zone 'Europe'"));  /* a directory */
    CHECK(tz_name_valid("America/Argentina/Buenos_Aires"));
    CHECK(tz_name_valid("Etc/GMT+5"));
    CHECK(tz_name_valid("Etc/GMT-14"));
    CHECK(!tz_name_valid("."));
    CHECK_STR(load_err("Europe/Paris"), "");
    CHECK(load_err("Europe/Paris") != NULL);
    char *err = NULL;
    CHECK(tz_load("Nope/Zone", NULL) == NULL);              /* err may be NULL */
    CHECK(tz_load("Nope/Zone", &err) == NULL && err);
    free(err);
}

static void utc_always_available(void)
{
    tz_set_dir("/nonexistent-zoneinfo");
    tz *u = load("UTC"), *e = load("Etc/UTC");
    CHECK(u && e);
    if (u && e) {
        int dst = -1;
        CHECK_INT(tz_offset_at(u, U(2026, 7, 1, 0, 0, 0), &dst), 0);
        CHECK_INT(dst, 0);
        CHECK_STR(tz_abbr_at(e, 0), "UTC");
        CHECK_STR(tz_name(e), "Etc/UTC");
    }
    CHECK(strstr(load_err("Europe/Paris"), "unknown time zone 'Europe/Paris'"));
    tz_free(u);
    tz_free(e);
    tz_set_dir("/usr/share/zoneinfo");
}

static void broken_files_rejected(void)
{
    char dir[] = "/tmp/herald-tz-XXXXXX", path[128];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/Garbage", dir);
    FILE *f = fopen(path, "w");
    fputs("this is not a zone file at all, just text long enough to pass 44 bytes", f);
    fclose(f);

    /* A real file cut short: the header promises more than follows. */
    FILE *src = fopen("/usr/share/zoneinfo/Europe/Paris", "rb");
    unsigned char buf[4096];
    size_t n = src ? fread(buf, 1, sizeof buf, src) : 0;
    if (src)
        fclose(src);
    CHECK(n > 600);
    snprintf(path, sizeof path, "%s/Truncated", dir);
    f = fopen(path, "wb");
    fwrite(buf, 1, 600, f);
    fclose(f);

    /* A real file whose footer rule is corrupted. */
    snprintf(path, sizeof path, "%s/BadFooter", dir);
    f = fopen(path, "wb");
    fwrite(buf, 1, n - 27, f);                              /* drop "CET-1CEST,M3.5.0,M10.5.0/3\n" */
    fputs("CET-1CEST,M13.5.0,M10.5.0/3\n", f);
    fclose(f);

    /* The same without any footer, as if cut right after the data block. */
    snprintf(path, sizeof path, "%s/NoFooter", dir);
    f = fopen(path, "wb");
    fwrite(buf, 1, n - 28, f);
    fclose(f);

    tz_set_dir(dir);
    CHECK_STR(load_err("Garbage"), "time zone 'Garbage': not a TZif file");
    CHECK_STR(load_err("Truncated"), "time zone 'Truncated': truncated or inconsistent TZif data");
    CHECK_STR(load_err("BadFooter"), "time zone 'BadFooter': malformed POSIX TZ footer");
    CHECK_STR(load_err("NoFooter"), "time zone 'NoFooter': malformed POSIX TZ footer");
    tz_set_dir("/usr/share/zoneinfo");
    if (access("/usr/share/zoneinfo/right/UTC", R_OK) == 0)
        CHECK(strstr(load_err("right/UTC"), "leap-second"));

    snprintf(path, sizeof path, "%s/Garbage", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/Truncated", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/BadFooter", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/NoFooter", dir);
    unlink(path);
    rmdir(dir);
}

/* ---- offsets ---- */

static void paris_offsets(void)
{
    tz *z = load("Europe/Paris");
    if (!z)
        return;
    int dst = -1;
    /* Spring forward: 2026-03-29 01:00 UTC, 02:00 CET -> 03:00 CEST. */
    CHECK_INT(tz_offset_at(z, U(2026, 3, 29, 0, 59, 59), &dst), 3600);
    CHECK_INT(dst, 0);
    CHECK_STR(tz_abbr_at(z, U(2026, 3, 29, 0, 59, 59)), "CET");
    CHECK_INT(tz_offset_at(z, U(2026, 3, 29, 1, 0, 0), &dst), 7200);
    CHECK_INT(dst, 1);
    CHECK_STR(tz_abbr_at(z, U(2026, 3, 29, 1, 0, 0)), "CEST");
    /* Fall back: 2026-10-25 01:00 UTC, 03:00 CEST -> 02:00 CET. */
    CHECK_INT(tz_offset_at(z, U(2026, 10, 25, 0, 59, 59), NULL), 7200);
    CHECK_INT(tz_offset_at(z, U(2026, 10, 25, 1, 0, 0), &dst), 3600);
    CHECK_INT(dst, 0);
    CHECK_STR(local_str(z, U(2026, 10, 25, 0, 30, 0)), "2026-10-25T02:30:00+02:00");
    CHECK_STR(local_str(z, U(2026, 10, 25, 1, 30, 0)), "2026-10-25T02:30:00+01:00");

    int64_t at;
    int off;
    CHECK(tz_next_transition(z, U(2026, 1, 1, 0, 0, 0), &at, &off));
    CHECK_INT(at, U(2026, 3, 29, 1, 0, 0));
    CHECK_INT(off, 7200);
    CHECK(tz_next_transition(z, at, &at, &off));
    CHECK_INT(at, U(2026, 10, 25, 1, 0, 0));
    CHECK_INT(off, 3600);
    tz_free(z);
}

static void new_york_offsets(void)
{
    tz *z = load("America/New_York");
    if (!z)
        return;
    /* 2026-03-08 07:00 UTC: 02:00 EST -> 03:00 EDT; 2026-11-01 06:00 UTC: 02:00 EDT -> 01:00 EST. */
    CHECK_INT(tz_offset_at(z, U(2026, 3, 8, 6, 59, 59), NULL), -18000);
    CHECK_INT(tz_offset_at(z, U(2026, 3, 8, 7, 0, 0), NULL), -14400);
    CHECK_INT(tz_offset_at(z, U(2026, 11, 1, 5, 59, 59), NULL), -14400);
    CHECK_INT(tz_offset_at(z, U(2026, 11, 1, 6, 0, 0), NULL), -18000);
    CHECK_STR(tz_abbr_at(z, U(2026, 7, 4, 12, 0, 0)), "EDT");
    CHECK_STR(local_str(z, U(2026, 11, 1, 5, 30, 0)), "2026-11-01T01:30:00-04:00");
    CHECK_STR(local_str(z, U(2026, 11, 1, 6, 30, 0)), "2026-11-01T01:30:00-05:00");
    tz_free(z);
}

static void lord_howe_half_hour_dst(void)
{
    tz *z = load("Australia/Lord_Howe");
    if (!z)
        return;
    int dst = -1;
    /* October: 02:00 +1030 -> 02:30 +11 at 2026-10-03 15:30 UTC. */
    CHECK_INT(tz_offset_at(z, U(2026, 10, 3, 15, 29, 59), &dst), 37800);
    CHECK_INT(dst, 0);
    CHECK_STR(tz_abbr_at(z, U(2026, 10, 3, 15, 29, 59)), "+1030");
    CHECK_INT(tz_offset_at(z, U(2026, 10, 3, 15, 30, 0), &dst), 39600);
    CHECK_INT(dst, 1);
    CHECK_STR(tz_abbr_at(z, U(2026, 10, 3, 15, 30, 0)), "+11");
    CHECK_STR(local_str(z, U(2026, 10, 3, 15, 29, 59)), "2026-10-04T01:59:59+10:30");
    CHECK_STR(local_str(z, U(2026, 10, 3, 15, 30, 0)), "2026-10-04T02:30:00+11:00");
    /* April: 02:00 +11 -> 01:30 +1030 at 2026-04-04 15:00 UTC. */
    CHECK_STR(local_str(z, U(2026, 4, 4, 14, 59, 59)), "2026-04-05T01:59:59+11:00");
    CHECK_STR(local_str(z, U(2026, 4, 4, 15, 0, 0)), "2026-04-05T01:30:00+10:30");
    tz_free(z);
}

static void kathmandu_and_kolkata(void)
{
    tz *k = load("Asia/Kathmandu"), *i = load("Asia/Kolkata");
    if (!k || !i) {
        tz_free(k);
        tz_free(i);
        return;
    }
    CHECK_INT(tz_offset_at(k, U(2026, 6, 1, 0, 0, 0), NULL), 5 * 3600 + 45 * 60);
    CHECK_STR(tz_abbr_at(k, U(2026, 6, 1, 0, 0, 0)), "+0545");
    CHECK_INT(tz_offset_at(k, U(1985, 6, 1, 0, 0, 0), NULL), 5 * 3600 + 30 * 60);  /* before 1986 */
    CHECK_STR(local_str(k, U(2026, 6, 1, 3, 15, 0)), "2026-06-01T09:00:00+05:45");
    CHECK_INT(tz_offset_at(k, U(2100, 6, 1, 0, 0, 0), NULL), 20700);               /* footer */
    CHECK_INT(tz_offset_at(i, U(2026, 11, 22, 0, 0, 0), NULL), 19800);
    CHECK_STR(tz_abbr_at(i, U(2026, 11, 22, 0, 0, 0)), "IST");
    int64_t t;
    CHECK_INT(resolve(i, 2026, 11, 22, 9, 0, TZ_EARLIER, &t), TZ_LOCAL_UNIQUE);
    CHECK_INT(t, U(2026, 11, 22, 3, 30, 0));
    CHECK_INT(resolve(k, 2026, 11, 22, 9, 0, TZ_EARLIER, &t), TZ_LOCAL_UNIQUE);
    CHECK_INT(t, U(2026, 11, 22, 3, 15, 0));
    tz_free(k);
    tz_free(i);
}

/* 2100 lies past the last transition in the file: the footer rule decides. */
static void far_future_uses_footer(void)
{
    tz *p = load("Europe/Paris"), *n = load("America/New_York"), *l = load("Australia/Lord_Howe");
    if (p && n && l) {
        CHECK_INT(tz_offset_at(p, U(2100, 3, 28, 0, 59, 59), NULL), 3600);
        CHECK_INT(tz_offset_at(p, U(2100, 3, 28, 1, 0, 0), NULL), 7200);
        CHECK_INT(tz_offset_at(p, U(2100, 10, 31, 0, 59, 59), NULL), 7200);
        CHECK_INT(tz_offset_at(p, U(2100, 10, 31, 1, 0, 0), NULL), 3600);
        CHECK_STR(tz_abbr_at(p, U(2100, 7, 1, 0, 0, 0)), "CEST");
        CHECK_INT(tz_offset_at(n, U(2100, 3, 14, 6, 59, 59), NULL), -18000);
        CHECK_INT(tz_offset_at(n, U(2100, 3, 14, 7, 0, 0), NULL), -14400);
        CHECK_INT(tz_offset_at(n, U(2100, 11, 7, 6, 0, 0), NULL), -18000);
        CHECK_INT(tz_offset_at(l, U(2100, 1, 1, 0, 0, 0), NULL), 39600);
        CHECK_INT(tz_offset_at(l, U(2100, 6, 1, 0, 0, 0), NULL), 37800);
        int64_t t, at;
        int off;
        CHECK_INT(resolve(p, 2100, 3, 28, 2, 30, TZ_EARLIER, &t), TZ_LOCAL_GAP);
        CHECK_INT(t, U(2100, 3, 28, 1, 0, 0));
        CHECK_INT(resolve(p, 2100, 10, 31, 2, 30, TZ_LATER, &t), TZ_LOCAL_OVERLAP);
        CHECK_INT(t, U(2100, 10, 31, 1, 30, 0));
        CHECK(tz_next_transition(p, U(2100, 4, 1, 0, 0, 0), &at, &off));
        CHECK_INT(at, U(2100, 10, 31, 1, 0, 0));
        CHECK_INT(off, 3600);
        /* Far beyond: year 9000 still follows the rule. */
        CHECK_INT(tz_offset_at(p, U(9000, 7, 1, 0, 0, 0), NULL), 7200);
    }
    tz_free(p);
    tz_free(n);
    tz_free(l);
}

/* Before the first transition the zone's first type applies: local mean time. */
static void before_first_transition(void)
{
    tz *p = load("Europe/Paris"), *n = load("America/New_York");
    if (p && n) {
        CHECK_INT(tz_offset_at(p, U(1800, 1, 1, 0, 0, 0), NULL), 561);      /* +00:09:21 */
        CHECK_STR(tz_abbr_at(p, U(1800, 1, 1, 0, 0, 0)), "LMT");
        CHECK_INT(tz_offset_at(n, U(1800, 1, 1, 0, 0, 0), NULL), -17762);   /* -04:56:02 */
        CHECK_INT(tz_offset_at(n, U(1883, 11, 18, 17, 0, 0), NULL), -18000); /* railway time */
        int64_t t;
        CHECK_INT(resolve(p, 1850, 6, 1, 12, 0, TZ_EARLIER, &t), TZ_LOCAL_UNIQUE);
        CHECK_INT(t, U(1850, 6, 1, 11, 50, 39));
        CHECK_INT(tz_offset_at(p, INT64_MIN / 2, NULL), 561);
    }
    tz_free(p);
    tz_free(n);
}

/* ---- wall time -> instant ---- */

static void paris_gap_and_overlap(void)
{
    tz *z = load("Europe/Paris");
    if (!z)
        return;
    int64_t t;
    CHECK_INT(resolve(z, 2026, 3, 29, 2, 30, TZ_EARLIER, &t), TZ_LOCAL_GAP);
    CHECK_INT(t, U(2026, 3, 29, 1, 0, 0));                  /* = 03:00 CEST */
    CHECK_STR(local_str(z, t), "2026-03-29T03:00:00+02:00");
    CHECK_INT(resolve(z, 2026, 3, 29, 2, 0, TZ_LATER, &t), TZ_LOCAL_GAP);
    CHECK_INT(t, U(2026, 3, 29, 1, 0, 0));
    CHECK_INT(resolve(z, 2026, 3, 29, 1, 59, TZ_EARLIER, &t), TZ_LOCAL_UNIQUE);
    CHECK_INT(t, U(2026, 3, 29, 0, 59, 0));
    CHECK_INT(resolve(z, 2026, 3, 29, 3, 0, TZ_EARLIER, &t), TZ_LOCAL_UNIQUE);
    CHECK_INT(t, U(2026, 3, 29, 1, 0, 0));

    CHECK_INT(resolve(z, 2026, 10, 25, 2, 30, TZ_EARLIER, &t), TZ_LOCAL_OVERLAP);
    CHECK_INT(t, U(2026, 10, 25, 0, 30, 0));                /* 02:30 CEST, the first */
    CHECK_INT(resolve(z, 2026, 10, 25, 2, 30, TZ_LATER, &t), TZ_LOCAL_OVERLAP);
    CHECK_INT(t, U(2026, 10, 25, 1, 30, 0));                /* 02:30 CET */
    CHECK_INT(resolve(z, 2026, 10, 25, 2, 0, TZ_EARLIER, &t), TZ_LOCAL_OVERLAP);
    CHECK_INT(t, U(2026, 10, 25, 0, 0, 0));
    CHECK_INT(resolve(z, 2026, 10, 25, 3, 0, TZ_EARLIER, &t), TZ_LOCAL_UNIQUE);
    CHECK_INT(t, U(2026, 10, 25, 2, 0, 0));
    CHECK_INT(resolve(z, 2026, 10, 25, 1, 59, TZ_LATER, &t), TZ_LOCAL_UNIQUE);
    CHECK_INT(t, U(2026, 10, 24, 23, 59, 0));

    struct civil bad = {2026, 2, 30, 9, 0, 0};
    CHECK_INT(tz_local_to_utc(z, &bad, &t, TZ_EARLIER), -1);
    tz_free(z);
}

static void new_york_gap_and_overlap(void)
{
    tz *z = load("America/New_York");
    if (!z)
        return;
    int64_t t;
    CHECK_INT(resolve(z, 2026, 3, 8, 2, 30, TZ_EARLIER, &t), TZ_LOCAL_GAP);
    CHECK_INT(t, U(2026, 3, 8, 7, 0, 0));                   /* 03:00 EDT */
    CHECK_INT(resolve(z, 2026, 11, 1, 1, 30, TZ_EARLIER, &t), TZ_LOCAL_OVERLAP);
    CHECK_INT(t, U(2026, 11, 1, 5, 30, 0));                 /* 01:30 EDT */
    CHECK_INT(resolve(z, 2026, 11, 1, 1, 30, TZ_LATER, &t), TZ_LOCAL_OVERLAP);
    CHECK_INT(t, U(2026, 11, 1, 6, 30, 0));                 /* 01:30 EST */
    CHECK_INT(resolve(z, 2026, 11, 22, 9, 0, TZ_EARLIER, &t), TZ_LOCAL_UNIQUE);
    CHECK_INT(t, U(2026, 11, 22, 14, 0, 0));
    tz_free(z);
}

static void lord_howe_gap_and_overlap(void)
{
    tz *z = load("Australia/Lord_Howe");
    if (!z)
        return;
    int64_t t;
    /* October: 02:00..02:29 do not exist; they resolve to 02:30 +11. */
    CHECK_INT(resolve(z, 2026, 10, 4, 2, 0, TZ_EARLIER, &t), TZ_LOCAL_GAP);
    CHECK_INT(t, U(2026, 10, 3, 15, 30, 0));
    CHECK_INT(resolve(z, 2026, 10, 4, 2, 15, TZ_EARLIER, &t), TZ_LOCAL_GAP);
    CHECK_INT(t, U(2026, 10, 3, 15, 30, 0));
    CHECK_INT(resolve(z, 2026, 10, 4, 2, 30, TZ_EARLIER, &t), TZ_LOCAL_UNIQUE);
    CHECK_INT(t, U(2026, 10, 3, 15, 30, 0));
    /* April: 01:30..01:59 happen twice, 30 minutes apart. */
    CHECK_INT(resolve(z, 2026, 4, 5, 1, 45, TZ_EARLIER, &t), TZ_LOCAL_OVERLAP);
    CHECK_INT(t, U(2026, 4, 4, 14, 45, 0));
    CHECK_INT(resolve(z, 2026, 4, 5, 1, 45, TZ_LATER, &t), TZ_LOCAL_OVERLAP);
    CHECK_INT(t, U(2026, 4, 4, 15, 15, 0));
    CHECK_INT(resolve(z, 2026, 4, 5, 1, 29, TZ_LATER, &t), TZ_LOCAL_UNIQUE);
    CHECK_INT(t, U(2026, 4, 4, 14, 29, 0));
    CHECK_INT(resolve(z, 2026, 4, 5, 2, 0, TZ_EARLIER, &t), TZ_LOCAL_UNIQUE);
    CHECK_INT(t, U(2026, 4, 4, 15, 30, 0));
    tz_free(z);
}

/* Every instant over two years maps to a wall time that maps back (one of its occurrences). */
static void round_trip_every_quarter_hour(void)
{
    const char *names[] = {"Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"};
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        tz *z = load(names[i]);
        if (!z) {
            bad++;
            continue;
        }
        for (int64_t t = U(2026, 1, 1, 0, 0, 0); t < U(2028, 1, 1, 0, 0, 0); t += 900) {
            struct civil c;
            tz_utc_to_local(z, t, &c);
            int64_t e, l;
            int k = tz_local_to_utc(z, &c, &e, TZ_EARLIER);
            tz_local_to_utc(z, &c, &l, TZ_LATER);
            if (k == TZ_LOCAL_GAP || (e != t && l != t) || (k == TZ_LOCAL_UNIQUE && e != l))
                bad++;
        }
        tz_free(z);
    }
    CHECK_INT(bad, 0);
}

/* ---- POSIX rules ---- */

static tz *posix(const char *rule)
{
    char *err = NULL;
    tz *z = tz_from_posix(rule, rule, &err);
    if (!z)
        fprintf(stderr, "    %s\n", err ? err : "?");
    free(err);
    return z;
}

static void posix_rules(void)
{
    tz *cet = posix("CET-1CEST,M3.5.0,M10.5.0/3");
    tz *lh = posix("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0");
    tz *us = posix("EST5EDT,M3.2.0,M11.1.0");
    tz *np = posix("<+0545>-5:45");
    tz *j = posix("AAA3BBB,J60/2,J300/2");                  /* J60 is March 1, leap year or not */
    tz *n0 = posix("AAA-3BBB,59/2,300/2");                  /* day 59 is Feb 29 in leap years */
    tz *neg = posix("<-03>3<-02>,M3.5.0/-2,M10.5.0/-1");    /* negative transition times */
    tz *hour = posix("<-03>+3");
    if (cet && lh && us && np && j && n0 && neg && hour) {
        CHECK_INT(tz_offset_at(cet, U(2026, 3, 29, 0, 59, 59), NULL), 3600);
        CHECK_INT(tz_offset_at(cet, U(2026, 3, 29, 1, 0, 0), NULL), 7200);
        CHECK_INT(tz_offset_at(cet, U(2026, 10, 25, 1, 0, 0), NULL), 3600);
        CHECK_STR(tz_abbr_at(cet, U(2026, 7, 1, 0, 0, 0)), "CEST");
        CHECK_INT(tz_offset_at(lh, U(2026, 10, 3, 15, 30, 0), NULL), 39600);
        CHECK_INT(tz_offset_at(lh, U(2026, 4, 4, 14, 59, 59), NULL), 39600);
        CHECK_INT(tz_offset_at(lh, U(2026, 4, 4, 15, 0, 0), NULL), 37800);
        CHECK_STR(tz_abbr_at(lh, U(2026, 6, 1, 0, 0, 0)), "+1030");
        CHECK_INT(tz_offset_at(us, U(2026, 3, 8, 7, 0, 0), NULL), -14400);
        CHECK_INT(tz_offset_at(us, U(2026, 11, 1, 6, 0, 0), NULL), -18000);
        CHECK_INT(tz_offset_at(np, U(2026, 1, 1, 0, 0, 0), NULL), 20700);
        /* J60/2 local = 05:00 UTC on March 1 in both 2027 and 2028. */
        CHECK_INT(tz_offset_at(j, U(2027, 3, 1, 4, 59, 59), NULL), -10800);
        CHECK_INT(tz_offset_at(j, U(2027, 3, 1, 5, 0, 0), NULL), -7200);
        CHECK_INT(tz_offset_at(j, U(2028, 3, 1, 5, 0, 0), NULL), -7200);
        CHECK_INT(tz_offset_at(j, U(2028, 2, 29, 5, 0, 0), NULL), -10800);
        /* Day 59 (zero-based) 02:00 at +3 = 23:00 UTC the day before: Mar 1 2027, Feb 29 2028. */
        CHECK_INT(tz_offset_at(n0, U(2027, 2, 28, 23, 0, 0), NULL), 14400);
        CHECK_INT(tz_offset_at(n0, U(2027, 2, 28, 22, 59, 59), NULL), 10800);
        CHECK_INT(tz_offset_at(n0, U(2028, 2, 28, 23, 0, 0), NULL), 14400);
        CHECK_INT(tz_offset_at(n0, U(2028, 2, 27, 23, 0, 0), NULL), 10800);
        /* M3.5.0/-2: last Sunday of March 2026 (the 29th) at -02:00 = Saturday 22:00 local. */
        CHECK_INT(tz_offset_at(neg, U(2026, 3, 29, 0, 59, 59), NULL), -10800);
        CHECK_INT(tz_offset_at(neg, U(2026, 3, 29, 1, 0, 0), NULL), -7200);
        CHECK_INT(tz_offset_at(hour, 0, NULL), -10800);
    }
    tz_free(cet);
    tz_free(lh);
    tz_free(us);
    tz_free(np);
    tz_free(j);
    tz_free(n0);
    tz_free(neg);
    tz_free(hour);

    const char *bad[] = {"CET", "CE-1", "CET-1CEST,M13.1.0,M10.5.0", "CET-1CEST,M3.5.0",
                         "CET-25", "<+05", "<+05>", "CET-1CEST,M3.5.0,M10.5.0/3x", "CET-1:60",
                         "CET-1CEST,J0,J365", "CET-1CEST,M3.6.0,M10.5.0", "CET-1CEST,M3.5.7,M10.5.0",
                         "CET-1CEST,M3.5.0/168,M10.5.0", "", "CETTTTTTTTTTTTTTTTTTTTTT-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *err = NULL;
        tz *z = tz_from_posix("X", bad[i], &err);
        CHECK(z == NULL);
        if (z)
            fprintf(stderr, "    accepted '%s'\n", bad[i]);
        CHECK(err && strstr(err, "malformed POSIX TZ rule"));
        free(err);
        tz_free(z);
    }
}

/* ---- the cache ---- */

static void cache_shares_zones(void)
{
    tz_cache_clear();
    char *err = NULL;
    const tz *a = tz_get("Europe/Paris", &err), *b = tz_get("Europe/Paris", &err);
    CHECK(a != NULL && a == b);
    CHECK_INT(tz_cache_size(), 1);
    CHECK(tz_get("Asia/Kathmandu", &err) != NULL);
    CHECK(tz_get("UTC", &err) != NULL);
    CHECK_INT(tz_cache_size(), 3);
    CHECK(tz_get("Nope/Zone", &err) == NULL);
    CHECK_STR(err, "unknown time zone 'Nope/Zone' (not in /usr/share/zoneinfo)");
    free(err);
    err = NULL;
    CHECK(tz_get("../etc/passwd", &err) == NULL);
    CHECK(err && strstr(err, "invalid time zone name"));
    free(err);
    CHECK_INT(tz_cache_size(), 3);                          /* failures are not cached */
    CHECK_STR(tz_name(a), "Europe/Paris");
    tz_cache_clear();
    CHECK_INT(tz_cache_size(), 0);
}

UNIT_MAIN("tz",
          CASE(civil_known_days),
          CASE(civil_round_trip),
          CASE(names_rejected),
          CASE(utc_always_available),
          CASE(broken_files_rejected),
          CASE(paris_offsets),
          CASE(new_york_offsets),
          CASE(lord_howe_half_hour_dst),
          CASE(kathmandu_and_kolkata),
          CASE(far_future_uses_footer),
          CASE(before_first_transition),
          CASE(paris_gap_and_overlap),
          CASE(new_york_gap_and_overlap),
          CASE(lord_howe_gap_and_overlap),
          CASE(round_trip_every_quarter_hour),
          CASE(posix_rules),
          CASE(cache_shares_zones))
