/* test_schedule.c — unit tests for schedule.c: "at" (with offset, and local time in a zone, DST gaps
 * and overlaps), "every" with and without anchors, cron parsing and its error messages, the Vixie
 * DOM/DOW rule, Feb 29, cron across the DST transitions of Paris, New York and Lord Howe, 45- and
 * 30-minute zones, far-future and pre-1900 instants, and whole-year counts. Fixed instants only. */
#include "schedule.h"
#include "unit.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static int64_t U(int64_t y, int mo, int d, int h, int mi, int s)
{
    struct civil c = {y, mo, d, h, mi, s};
    return tz_civil_to_seconds(&c);
}

/* "YYYY-MM-DDTHH:MM:SSZ" of t, or "none" for -1 (rotating buffers). */
static const char *iso(int64_t t)
{
    static char buf[8][32];
    static int n;
    char *b = buf[n++ % 8];
    if (t == -1)
        return "none";
    struct civil c;
    tz_seconds_to_civil(t, &c);
    snprintf(b, 32, "%04lld-%02d-%02dT%02d:%02d:%02dZ", (long long)c.year, c.month, c.day, c.hour,
             c.minute, c.second);
    return b;
}

/* Parses a spec that must be valid. */
static schedule_spec S(const char *kind, const char *expr, const char *zone)
{
    schedule_spec s;
    char *err = NULL;
    if (schedule_parse(kind, expr, zone, &s, &err) < 0) {
        fprintf(stderr, "    cannot parse %s '%s' in %s: %s\n", kind, expr, zone ? zone : "-",
                err ? err : "?");
        memset(&s, 0, sizeof s);
    }
    free(err);
    return s;
}

/* The next fire after t, as text. */
static const char *N(const schedule_spec *s, int64_t t)
{
    return iso(schedule_next(s, t));
}

/* The error schedule_parse gives ("" when it parsed). */
static char errbuf[512];
static const char *perr(const char *kind, const char *expr, const char *zone)
{
    schedule_spec s;
    char *err = NULL;
    int rc = schedule_parse(kind, expr, zone, &s, &err);
    snprintf(errbuf, sizeof errbuf, "%s", rc == 0 ? "" : err ? err : "(no message)");
    free(err);
    return errbuf;
}

/* ---- at ---- */

static void at_with_offset(void)
{
    schedule_spec s = S("at", "2026-11-22T09:00:00+01:00", NULL);
    CHECK_INT(s.kind, SCHEDULE_AT);
    CHECK(s.zone == NULL);
    CHECK_STR(N(&s, U(2026, 11, 1, 0, 0, 0)), "2026-11-22T08:00:00Z");
    CHECK_STR(N(&s, U(2026, 11, 22, 7, 59, 59)), "2026-11-22T08:00:00Z");
    CHECK_STR(N(&s, U(2026, 11, 22, 8, 0, 0)), "none");      /* strictly after */
    s = S("at", "2026-11-22T09:00:00Z", NULL);
    CHECK_STR(iso(s.at), "2026-11-22T09:00:00Z");
    s = S("at", "2026-11-22t09:00:00z", "Europe/Paris");     /* the offset wins over the zone */
    CHECK_STR(iso(s.at), "2026-11-22T09:00:00Z");
    CHECK(s.zone == NULL);
    s = S("at", "2026-11-22 09:00:00-05:30", NULL);
    CHECK_STR(iso(s.at), "2026-11-22T14:30:00Z");
    s = S("at", "2026-11-22T09:00:00.250+01:00", NULL);     /* fractions round up */
    CHECK_STR(iso(s.at), "2026-11-22T08:00:01Z");
    s = S("at", "2026-11-22T09:00:00.000Z", NULL);
    CHECK_STR(iso(s.at), "2026-11-22T09:00:00Z");
    s = S("at", "2026-11-22T09:00+05:45", NULL);            /* seconds optional */
    CHECK_STR(iso(s.at), "2026-11-22T03:15:00Z");
}

static void at_local_in_zone(void)
{
    schedule_spec s = S("at", "2026-11-22T09:00", "Europe/Paris");
    CHECK_STR(iso(s.at), "2026-11-22T08:00:00Z");
    CHECK(s.zone != NULL && strcmp(tz_name(s.zone), "Europe/Paris") == 0);
    s = S("at", "2026-11-22T09:00:30", "America/New_York");
    CHECK_STR(iso(s.at), "2026-11-22T14:00:30Z");
    s = S("at", "2026-11-22T09:00", "Asia/Kathmandu");
    CHECK_STR(iso(s.at), "2026-11-22T03:15:00Z");
    s = S("at", "2026-11-22T09:00", "Asia/Kolkata");
    CHECK_STR(iso(s.at), "2026-11-22T03:30:00Z");
    /* Gaps: the first valid instant after; overlaps: the first occurrence. */
    s = S("at", "2026-03-29T02:30", "Europe/Paris");
    CHECK_STR(iso(s.at), "2026-03-29T01:00:00Z");           /* 03:00 CEST */
    s = S("at", "2026-10-25T02:30", "Europe/Paris");
    CHECK_STR(iso(s.at), "2026-10-25T00:30:00Z");           /* 02:30 CEST */
    s = S("at", "2026-03-08T02:30", "America/New_York");
    CHECK_STR(iso(s.at), "2026-03-08T07:00:00Z");           /* 03:00 EDT */
    s = S("at", "2026-11-01T01:30", "America/New_York");
    CHECK_STR(iso(s.at), "2026-11-01T05:30:00Z");           /* 01:30 EDT */
    s = S("at", "2026-10-04T02:15", "Australia/Lord_Howe");
    CHECK_STR(iso(s.at), "2026-10-03T15:30:00Z");           /* 02:30 +11 */
    s = S("at", "2026-04-05T01:45", "Australia/Lord_Howe");
    CHECK_STR(iso(s.at), "2026-04-04T14:45:00Z");           /* 01:45 +11 */
}

static void at_in_the_past(void)
{
    schedule_spec s = S("at", "2020-01-01T00:00:00Z", NULL);
    CHECK_INT(schedule_next(&s, U(2026, 11, 21, 5, 44, 18)), -1);
    s = S("at", "2026-11-22T09:00", "Europe/Paris");
    CHECK_INT(schedule_next(&s, U(2027, 1, 1, 0, 0, 0)), -1);
}

static void at_errors(void)
{
    CHECK_STR(perr("at", "2026-11-22T09:00", NULL),
              "'2026-11-22T09:00' has no UTC offset: give one (\"Z\", \"+01:00\") or a time zone");
    CHECK_STR(perr("at", "2026-02-30T09:00:00Z", NULL),
              "'2026-02-30T09:00:00Z' is not a valid date and time");
    CHECK_STR(perr("at", "2026-11-22T24:00:00Z", NULL),
              "'2026-11-22T24:00:00Z' is not a valid date and time");
    CHECK_STR(perr("at", "0000-01-01T00:00:00Z", NULL),
              "'0000-01-01T00:00:00Z' is not a valid date and time");
    CHECK_STR(perr("at", "2026-11-22T23:59:60Z", NULL),
              "'2026-11-22T23:59:60Z': leap seconds are not supported");
    CHECK_STR(perr("at", "2026-11-22T9:00Z", NULL),
              "'2026-11-22T9:00Z' is not an RFC 3339 date-time (like 2026-11-22T09:00:00+01:00) "
              "or a local YYYY-MM-DDTHH:MM[:SS]");
    CHECK(strstr(perr("at", "2026-11-22T09:00:00+24:00", NULL), "is not an RFC 3339 date-time"));
    CHECK(strstr(perr("at", "2026-11-22T09:00:00+01:00x", NULL), "is not an RFC 3339 date-time"));
    CHECK(strstr(perr("at", "2026-11-22T09:00:00+0100", NULL), "is not an RFC 3339 date-time"));
    CHECK(strstr(perr("at", "2026-11-22T09:00:00.", NULL), "is not an RFC 3339 date-time"));
    CHECK(strstr(perr("at", "", NULL), "is not an RFC 3339 date-time"));
    CHECK(strstr(perr("at", "tomorrow", NULL), "is not an RFC 3339 date-time"));
    CHECK(strstr(perr("at", "2026-11-22T09:00", "../etc/passwd"), "invalid time zone name"));
    CHECK_STR(perr("at", "2026-11-22T09:00", "Nope/Zone"),
              "unknown time zone 'Nope/Zone' (not in /usr/share/zoneinfo)");
    CHECK_STR(perr("hourly", "0", NULL), "schedule kind 'hourly' is not one of at, every, cron");
    CHECK_STR(perr(NULL, "0", NULL), "schedule: kind and expression are required");
}

/* ---- every ---- */

static void every_without_anchor(void)
{
    schedule_spec s = S("every", "3600", NULL);
    CHECK_INT(s.kind, SCHEDULE_EVERY);
    CHECK_INT(s.interval, 3600);
    CHECK_INT(s.has_anchor, 0);
    CHECK_STR(N(&s, U(2026, 11, 21, 5, 44, 18)), "2026-11-21T06:00:00Z");  /* epoch grid */
    CHECK_STR(N(&s, U(2026, 11, 21, 6, 0, 0)), "2026-11-21T07:00:00Z");
    s = S("every", "90", NULL);
    CHECK_INT(schedule_next(&s, 100), 180);
    CHECK_INT(schedule_next(&s, -1), 0);
    CHECK_INT(S("every", "2h", NULL).interval, 7200);
    CHECK_INT(S("every", "1d", NULL).interval, 86400);
    CHECK_INT(S("every", "15m", NULL).interval, 900);
    CHECK_INT(S("every", "1s", NULL).interval, 1);
    /* The host may anchor an unanchored spec itself, e.g. at creation time. */
    s = S("every", "1h", NULL);
    s.anchor = U(2026, 11, 21, 5, 44, 18);
    CHECK_STR(N(&s, U(2026, 11, 21, 6, 0, 0)), "2026-11-21T06:44:18Z");
}

static void every_with_anchor(void)
{
    schedule_spec s = S("every", "15m@2026-01-01T00:07:00Z", NULL);
    CHECK_INT(s.has_anchor, 1);
    CHECK_STR(N(&s, U(2026, 11, 21, 5, 44, 18)), "2026-11-21T05:52:00Z");
    CHECK_STR(N(&s, U(2026, 11, 21, 5, 52, 0)), "2026-11-21T06:07:00Z");
    CHECK_STR(N(&s, U(2025, 12, 1, 0, 0, 0)), "2026-01-01T00:07:00Z");   /* nothing before it */
    CHECK_STR(N(&s, U(2026, 1, 1, 0, 6, 59)), "2026-01-01T00:07:00Z");
    CHECK_STR(N(&s, U(2026, 1, 1, 0, 7, 0)), "2026-01-01T00:22:00Z");
    /* A local anchor is read in the zone; the interval is exact seconds, so after the switch to
     * summer time a daily 09:00 CET grid lands at 10:00 CEST (cron is for wall-clock times). */
    s = S("every", "1d@2026-03-01T09:00", "Europe/Paris");
    CHECK_STR(iso(s.anchor), "2026-03-01T08:00:00Z");
    CHECK_STR(N(&s, U(2026, 4, 1, 0, 0, 0)), "2026-04-01T08:00:00Z");
    s = S("every", "7@1970-01-01T00:00:01+00:00", NULL);
    CHECK_INT(schedule_next(&s, 1), 8);
}

static void every_errors(void)
{
    const char *usage = "expected <n>[s|m|h|d][@<date-time>], like 3600 or 1d@2026-01-01T09:00";
    char want[256];
    snprintf(want, sizeof want, "every 'abc': %s", usage);
    CHECK_STR(perr("every", "abc", NULL), want);
    snprintf(want, sizeof want, "every '5x': %s", usage);
    CHECK_STR(perr("every", "5x", NULL), want);
    snprintf(want, sizeof want, "every '': %s", usage);
    CHECK_STR(perr("every", "", NULL), want);
    CHECK(strstr(perr("every", "-5", NULL), usage));
    CHECK_STR(perr("every", "0", NULL), "every '0': the interval must be 1 second to 100 years");
    CHECK_STR(perr("every", "36601d", NULL), "every '36601d': the interval must be 1 second to 100 years");
    CHECK_STR(perr("every", "36600d", NULL), "");
    CHECK(strstr(perr("every", "99999999999999", NULL), usage));
    CHECK(strstr(perr("every", "10@garbage", NULL), "'garbage' is not an RFC 3339 date-time"));
    CHECK(strstr(perr("every", "10@2026-01-01T09:00", NULL), "has no UTC offset"));
}

/* ---- cron parsing ---- */

static void cron_fields_parsed(void)
{
    schedule_spec s = S("cron", "*/15 9-17/2 1,15 JAN-MAR mon-fri", "Europe/Paris");
    CHECK_INT(s.kind, SCHEDULE_CRON);
    CHECK(s.cron.minutes == ((1ull << 0) | (1ull << 15) | (1ull << 30) | (1ull << 45)));
    CHECK_INT(s.cron.hours, (1 << 9) | (1 << 11) | (1 << 13) | (1 << 15) | (1 << 17));
    CHECK_INT(s.cron.days, (1 << 1) | (1 << 15));
    CHECK_INT(s.cron.months, (1 << 1) | (1 << 2) | (1 << 3));
    CHECK_INT(s.cron.weekdays, 0x3e);
    CHECK_INT(s.cron.flags, 0);
    CHECK_STR(tz_name(s.zone), "Europe/Paris");
    CHECK_INT(S("cron", "0 0 * * 7", NULL).cron.weekdays, 0x01);           /* 7 = Sunday */
    CHECK_INT(S("cron", "0 0 * * 5-7", NULL).cron.weekdays, 0x61);
    CHECK_INT(S("cron", "0 0 * * SUN,sat", NULL).cron.weekdays, 0x41);
    CHECK(S("cron", "5/15 * * * *", NULL).cron.minutes ==
          ((1ull << 5) | (1ull << 20) | (1ull << 35) | (1ull << 50)));
    CHECK(S("cron", "*/25 * * * *", NULL).cron.minutes == ((1ull << 0) | (1ull << 25) | (1ull << 50)));
    CHECK_INT(S("cron", "0 0 * Dec *", NULL).cron.months, 1 << 12);
    s = S("cron", "* * * * *", NULL);
    CHECK_INT(s.cron.flags, SCHEDULE_DOM_STAR | SCHEDULE_DOW_STAR | SCHEDULE_HOUR_STAR);
    CHECK_STR(tz_name(s.zone), "UTC");                    /* no zone: UTC */
    CHECK_INT(S("cron", "0 */2 1 * *", "").cron.flags, SCHEDULE_HOUR_STAR | SCHEDULE_DOW_STAR);
    schedule_spec a = S("cron", "@weekly", NULL), b = S("cron", "0 0 * * 0", NULL);
    CHECK(memcmp(&a.cron, &b.cron, sizeof a.cron) == 0);
    a = S("cron", "@DAILY", NULL);
    b = S("cron", "  0\t0  * * *  ", NULL);
    CHECK(memcmp(&a.cron, &b.cron, sizeof a.cron) == 0);
    CHECK_STR(perr("cron", "0 0 30 2 1", NULL), "");     /* both restricted: Mondays of February */
}

static void cron_errors(void)
{
    CHECK_STR(perr("cron", "60 * * * *", NULL), "cron '60 * * * *': minute 60 out of range 0-59");
    CHECK_STR(perr("cron", "* * *", NULL),
              "cron '* * *': expected 5 fields (minute hour day-of-month month day-of-week), got 3");
    CHECK_STR(perr("cron", "* * * * * *", NULL),
              "cron '* * * * * *': expected 5 fields (minute hour day-of-month month day-of-week), got 6");
    CHECK_STR(perr("cron", "", NULL),
              "cron '': expected 5 fields (minute hour day-of-month month day-of-week), got 0");
    CHECK_STR(perr("cron", "*/0 * * * *", NULL), "cron '*/0 * * * *': minute step must be at least 1");
    CHECK_STR(perr("cron", "* 24 * * *", NULL), "cron '* 24 * * *': hour 24 out of range 0-23");
    CHECK_STR(perr("cron", "* * 0 * *", NULL), "cron '* * 0 * *': day-of-month 0 out of range 1-31");
    CHECK_STR(perr("cron", "* * 32 * *", NULL), "cron '* * 32 * *': day-of-month 32 out of range 1-31");
    CHECK_STR(perr("cron", "* * * 13 *", NULL), "cron '* * * 13 *': month 13 out of range 1-12");
    CHECK_STR(perr("cron", "* * * * 8", NULL), "cron '* * * * 8': day-of-week 8 out of range 0-7");
    CHECK_STR(perr("cron", "5-3 * * * *", NULL), "cron '5-3 * * * *': minute range 5-3 runs backwards");
    CHECK_STR(perr("cron", "a * * * *", NULL), "cron 'a * * * *': malformed minute field 'a'");
    CHECK_STR(perr("cron", "1,,2 * * * *", NULL), "cron '1,,2 * * * *': malformed minute field '1,,2'");
    CHECK_STR(perr("cron", "1, * * * *", NULL), "cron '1, * * * *': malformed minute field '1,'");
    CHECK_STR(perr("cron", "*/x * * * *", NULL), "cron '*/x * * * *': malformed minute field '*/x'");
    CHECK_STR(perr("cron", "*/5/2 * * * *", NULL), "cron '*/5/2 * * * *': malformed minute field '*/5/2'");
    CHECK_STR(perr("cron", "1- * * * *", NULL), "cron '1- * * * *': malformed minute field '1-'");
    CHECK_STR(perr("cron", "-1 * * * *", NULL), "cron '-1 * * * *': malformed minute field '-1'");
    CHECK_STR(perr("cron", "JAN * * * *", NULL), "cron 'JAN * * * *': malformed minute field 'JAN'");
    CHECK_STR(perr("cron", "* * * FOO *", NULL), "cron '* * * FOO *': malformed month field 'FOO'");
    CHECK_STR(perr("cron", "* * * * MONDAY", NULL),
              "cron '* * * * MONDAY': malformed day-of-week field 'MONDAY'");
    CHECK_STR(perr("cron", "00000 * * * *", NULL), "cron '00000 * * * *': malformed minute field '00000'");
    CHECK_STR(perr("cron", "0 0 30 2 *", NULL),
              "cron '0 0 30 2 *' never fires: no listed month has the listed day of the month");
    CHECK(strstr(perr("cron", "0 0 31 4,6,9,11 *", NULL), "never fires"));
    CHECK_STR(perr("cron", "@reboot", NULL),
              "cron '@reboot': unknown macro (use @yearly, @monthly, @weekly, @daily or @hourly)");
    CHECK(strstr(perr("cron", "0 9 * * *", "../etc/passwd"), "invalid time zone name '../etc/passwd'"));
    CHECK_STR(perr("cron", "0 9 * * *", "Nope/Zone"),
              "unknown time zone 'Nope/Zone' (not in /usr/share/zoneinfo)");
}

/* ---- cron matching ---- */

static void cron_vixie_dom_dow(void)
{
    /* Both restricted: the 13th OR any Friday. Nov 2026 starts on a Sunday. */
    schedule_spec s = S("cron", "0 9 13 * 5", NULL);
    int64_t t = U(2026, 11, 1, 0, 0, 0);
    const char *want[] = {"2026-11-06T09:00:00Z", "2026-11-13T09:00:00Z", "2026-11-20T09:00:00Z",
                          "2026-11-27T09:00:00Z", "2026-12-04T09:00:00Z", "2026-12-11T09:00:00Z",
                          "2026-12-13T09:00:00Z", "2026-12-18T09:00:00Z"};
    for (int i = 0; i < 8; i++) {
        t = schedule_next(&s, t);
        CHECK_STR(iso(t), want[i]);
    }
    /* A field starting with '*' counts as unrestricted (Vixie): odd days AND Mondays. */
    s = S("cron", "0 9 */2 * 1", NULL);
    CHECK_STR(N(&s, U(2026, 11, 1, 0, 0, 0)), "2026-11-09T09:00:00Z");
    CHECK_STR(N(&s, U(2026, 11, 9, 9, 0, 0)), "2026-11-23T09:00:00Z");
    CHECK_STR(N(&s, U(2026, 11, 23, 9, 0, 0)), "2026-12-07T09:00:00Z");
    s = S("cron", "0 9 1-31/2 * 1", NULL);                 /* the same days written as a range: OR */
    CHECK_STR(N(&s, U(2026, 11, 1, 9, 0, 0)), "2026-11-02T09:00:00Z");   /* Monday, even */
    CHECK_STR(N(&s, U(2026, 11, 2, 9, 0, 0)), "2026-11-03T09:00:00Z");   /* odd */
    CHECK_INT(s.cron.flags & (SCHEDULE_DOM_STAR | SCHEDULE_DOW_STAR), 0);
    s = S("cron", "0 9 1,15 * MON", NULL);
    CHECK_STR(N(&s, U(2026, 10, 31, 0, 0, 0)), "2026-11-01T09:00:00Z");  /* a Sunday, but the 1st */
    CHECK_STR(N(&s, U(2026, 11, 1, 9, 0, 0)), "2026-11-02T09:00:00Z");   /* a Monday */
    s = S("cron", "0 9 * * MON-FRI", NULL);
    CHECK_STR(N(&s, U(2026, 11, 20, 9, 0, 0)), "2026-11-23T09:00:00Z");  /* Fri -> Mon */
    s = S("cron", "0 0 30 2 1", NULL);                      /* never the 30th: Mondays of Feb */
    CHECK_STR(N(&s, U(2026, 11, 1, 0, 0, 0)), "2027-02-01T00:00:00Z");
}

static void cron_feb_29(void)
{
    schedule_spec s = S("cron", "0 9 29 2 *", NULL);
    CHECK_STR(N(&s, U(2026, 1, 1, 0, 0, 0)), "2028-02-29T09:00:00Z");
    CHECK_STR(N(&s, U(2028, 2, 29, 9, 0, 0)), "2032-02-29T09:00:00Z");
    CHECK_STR(N(&s, U(2096, 2, 29, 9, 0, 0)), "2104-02-29T09:00:00Z");  /* 2100 is not leap */
    s = S("cron", "0 9 29 2 *", "Europe/Paris");
    CHECK_STR(N(&s, U(2026, 1, 1, 0, 0, 0)), "2028-02-29T08:00:00Z");
    CHECK_STR(N(&s, U(2096, 2, 29, 9, 0, 0)), "2104-02-29T08:00:00Z");
    s = S("cron", "59 23 31 12 *", "Pacific/Kiritimati");   /* +14: the day before in UTC */
    CHECK_STR(N(&s, U(2026, 11, 1, 0, 0, 0)), "2026-12-31T09:59:00Z");
}

static void cron_paris_spring_forward(void)
{
    /* 2026-03-29: 02:00 CET -> 03:00 CEST at 01:00 UTC. */
    schedule_spec s = S("cron", "30 2 * * *", "Europe/Paris");
    CHECK_STR(N(&s, U(2026, 3, 27, 12, 0, 0)), "2026-03-28T01:30:00Z");  /* 02:30 CET */
    CHECK_STR(N(&s, U(2026, 3, 28, 12, 0, 0)), "2026-03-29T01:00:00Z");  /* gap: 03:00 CEST */
    CHECK_STR(N(&s, U(2026, 3, 29, 0, 59, 59)), "2026-03-29T01:00:00Z");
    CHECK_STR(N(&s, U(2026, 3, 29, 1, 0, 0)), "2026-03-30T00:30:00Z");   /* once: 02:30 CEST */
    s = S("cron", "0 3 * * *", "Europe/Paris");
    CHECK_STR(N(&s, U(2026, 3, 28, 12, 0, 0)), "2026-03-29T01:00:00Z");
    s = S("cron", "*/10 2 * * *", "Europe/Paris");          /* six gap times, one firing */
    CHECK_STR(N(&s, U(2026, 3, 28, 12, 0, 0)), "2026-03-29T01:00:00Z");
    CHECK_STR(N(&s, U(2026, 3, 29, 1, 0, 0)), "2026-03-30T00:00:00Z");
    s = S("cron", "0 * * * *", "Europe/Paris");
    CHECK_STR(N(&s, U(2026, 3, 28, 23, 30, 0)), "2026-03-29T00:00:00Z"); /* 01:00 CET */
    CHECK_STR(N(&s, U(2026, 3, 29, 0, 0, 0)), "2026-03-29T01:00:00Z");   /* 03:00 CEST */
    CHECK_STR(N(&s, U(2026, 3, 29, 1, 0, 0)), "2026-03-29T02:00:00Z");
}

static void cron_paris_fall_back(void)
{
    /* 2026-10-25: 03:00 CEST -> 02:00 CET at 01:00 UTC; 02:00-02:59 happens twice. */
    schedule_spec s = S("cron", "30 2 * * *", "Europe/Paris");
    CHECK_STR(N(&s, U(2026, 10, 24, 12, 0, 0)), "2026-10-25T00:30:00Z"); /* 02:30 CEST */
    CHECK_STR(N(&s, U(2026, 10, 25, 0, 30, 0)), "2026-10-26T01:30:00Z"); /* not 02:30 CET */
    CHECK_STR(N(&s, U(2026, 10, 25, 1, 10, 0)), "2026-10-26T01:30:00Z"); /* inside the repeat */
    /* Hour field '*': follows real time, both 02:00s fire. */
    s = S("cron", "0 * * * *", "Europe/Paris");
    CHECK_STR(N(&s, U(2026, 10, 24, 23, 30, 0)), "2026-10-25T00:00:00Z"); /* 02:00 CEST */
    CHECK_STR(N(&s, U(2026, 10, 25, 0, 0, 0)), "2026-10-25T01:00:00Z");   /* 02:00 CET */
    CHECK_STR(N(&s, U(2026, 10, 25, 1, 0, 0)), "2026-10-25T02:00:00Z");   /* 03:00 CET */
    s = S("cron", "*/20 * * * *", "Europe/Paris");
    CHECK_STR(N(&s, U(2026, 10, 25, 0, 40, 0)), "2026-10-25T01:00:00Z");
    /* Hour pinned: the repeated hour fires in its first occurrence only. */
    s = S("cron", "*/30 2 * * *", "Europe/Paris");
    CHECK_STR(N(&s, U(2026, 10, 24, 23, 50, 0)), "2026-10-25T00:00:00Z");
    CHECK_STR(N(&s, U(2026, 10, 25, 0, 0, 0)), "2026-10-25T00:30:00Z");
    CHECK_STR(N(&s, U(2026, 10, 25, 0, 30, 0)), "2026-10-26T01:00:00Z");
}

static void cron_new_york(void)
{
    schedule_spec s = S("cron", "30 2 * * *", "America/New_York");
    CHECK_STR(N(&s, U(2026, 3, 7, 12, 0, 0)), "2026-03-08T07:00:00Z");   /* gap: 03:00 EDT */
    CHECK_STR(N(&s, U(2026, 3, 8, 7, 0, 0)), "2026-03-09T06:30:00Z");    /* 02:30 EDT */
    s = S("cron", "30 1 * * *", "America/New_York");
    CHECK_STR(N(&s, U(2026, 10, 31, 12, 0, 0)), "2026-11-01T05:30:00Z"); /* 01:30 EDT */
    CHECK_STR(N(&s, U(2026, 11, 1, 5, 30, 0)), "2026-11-02T06:30:00Z");  /* not 01:30 EST */
    s = S("cron", "0 * * * *", "America/New_York");
    CHECK_STR(N(&s, U(2026, 11, 1, 4, 30, 0)), "2026-11-01T05:00:00Z");  /* 01:00 EDT */
    CHECK_STR(N(&s, U(2026, 11, 1, 5, 0, 0)), "2026-11-01T06:00:00Z");   /* 01:00 EST */
    CHECK_STR(N(&s, U(2026, 11, 1, 6, 0, 0)), "2026-11-01T07:00:00Z");
    s = S("cron", "0 9 * * *", "America/New_York");
    CHECK_STR(N(&s, U(2026, 3, 7, 15, 0, 0)), "2026-03-08T13:00:00Z");   /* 09:00 EDT */
    CHECK_STR(N(&s, U(2026, 10, 31, 14, 0, 0)), "2026-11-01T14:00:00Z"); /* 09:00 EST */
}

static void cron_lord_howe(void)
{
    /* October: 02:00 +1030 -> 02:30 +11 at 2026-10-03 15:30 UTC. */
    schedule_spec s = S("cron", "15 2 * * *", "Australia/Lord_Howe");
    CHECK_STR(N(&s, U(2026, 10, 3, 0, 0, 0)), "2026-10-03T15:30:00Z");   /* gap: 02:30 +11 */
    CHECK_STR(N(&s, U(2026, 10, 3, 15, 30, 0)), "2026-10-04T15:15:00Z");
    s = S("cron", "*/15 * * * *", "Australia/Lord_Howe");
    CHECK_STR(N(&s, U(2026, 10, 3, 15, 0, 0)), "2026-10-03T15:15:00Z");  /* 01:45 +1030 */
    CHECK_STR(N(&s, U(2026, 10, 3, 15, 15, 0)), "2026-10-03T15:30:00Z"); /* 02:00, 02:15, 02:30 */
    CHECK_STR(N(&s, U(2026, 10, 3, 15, 30, 0)), "2026-10-03T15:45:00Z");
    /* April: 02:00 +11 -> 01:30 +1030 at 2026-04-04 15:00 UTC; 01:30-01:59 twice. */
    s = S("cron", "45 1 * * *", "Australia/Lord_Howe");
    CHECK_STR(N(&s, U(2026, 4, 4, 0, 0, 0)), "2026-04-04T14:45:00Z");    /* 01:45 +11 */
    CHECK_STR(N(&s, U(2026, 4, 4, 14, 45, 0)), "2026-04-05T15:15:00Z");  /* next day, +1030 */
    s = S("cron", "*/30 * * * *", "Australia/Lord_Howe");
    CHECK_STR(N(&s, U(2026, 4, 4, 13, 50, 0)), "2026-04-04T14:00:00Z");  /* 01:00 +11 */
    CHECK_STR(N(&s, U(2026, 4, 4, 14, 0, 0)), "2026-04-04T14:30:00Z");   /* 01:30 +11 */
    CHECK_STR(N(&s, U(2026, 4, 4, 14, 30, 0)), "2026-04-04T15:00:00Z");  /* 01:30 +1030 */
    CHECK_STR(N(&s, U(2026, 4, 4, 15, 0, 0)), "2026-04-04T15:30:00Z");   /* 02:00 +1030 */
    s = S("cron", "*/30 1 * * *", "Australia/Lord_Howe");
    CHECK_STR(N(&s, U(2026, 4, 4, 14, 0, 0)), "2026-04-04T14:30:00Z");
    CHECK_STR(N(&s, U(2026, 4, 4, 14, 30, 0)), "2026-04-05T14:30:00Z");  /* repeat skipped */
}

static void cron_odd_offsets(void)
{
    schedule_spec s = S("cron", "0 9 * * *", "Asia/Kathmandu");
    CHECK_STR(N(&s, U(2026, 6, 1, 0, 0, 0)), "2026-06-01T03:15:00Z");
    CHECK_STR(N(&s, U(2026, 6, 1, 3, 15, 0)), "2026-06-02T03:15:00Z");
    s = S("cron", "0 9 * * *", "Asia/Kolkata");
    CHECK_STR(N(&s, U(2026, 6, 1, 0, 0, 0)), "2026-06-01T03:30:00Z");
    s = S("cron", "30 * * * *", "Asia/Kathmandu");          /* :30 local is :45 UTC */
    CHECK_STR(N(&s, U(2026, 6, 1, 0, 0, 0)), "2026-06-01T00:45:00Z");
}

static void cron_far_future_and_past(void)
{
    /* 2100 is past the file's transitions: the POSIX footer rule decides. */
    schedule_spec s = S("cron", "30 2 * * *", "Europe/Paris");
    CHECK_STR(N(&s, U(2100, 3, 27, 12, 0, 0)), "2100-03-28T01:00:00Z");
    CHECK_STR(N(&s, U(2100, 10, 30, 12, 0, 0)), "2100-10-31T00:30:00Z");
    CHECK_STR(N(&s, U(2100, 10, 31, 0, 30, 0)), "2100-11-01T01:30:00Z");
    s = S("cron", "30 1 * * *", "America/New_York");
    CHECK_STR(N(&s, U(2100, 11, 6, 12, 0, 0)), "2100-11-07T05:30:00Z");
    /* Before the first transition: Paris local mean time, +00:09:21. */
    s = S("cron", "0 12 * * *", "Europe/Paris");
    CHECK_STR(N(&s, U(1850, 6, 1, 0, 0, 0)), "1850-06-01T11:50:39Z");
    /* The ends of the supported range (years 1-9999). */
    s = S("cron", "0 0 1 1 *", NULL);
    CHECK_STR(N(&s, INT64_MIN), "0001-01-01T00:00:00Z");
    CHECK_STR(N(&s, U(9998, 6, 1, 0, 0, 0)), "9999-01-01T00:00:00Z");
    CHECK_INT(schedule_next(&s, U(9999, 6, 1, 0, 0, 0)), -1);
    CHECK_INT(schedule_next(&s, INT64_MAX), -1);
    schedule_spec e = S("every", "60", NULL);
    CHECK_INT(schedule_next(&e, INT64_MAX), -1);
}

/* A whole year, fire by fire: a daily 02:30 fires 365 times (the gap day at 03:00, the overlap day
 * once); hourly fires on each of the year's 8760 real hours; daily 09:00 is always 09:00 local. */
static void cron_whole_year_counts(void)
{
    schedule_spec daily = S("cron", "30 2 * * *", "Europe/Paris");
    schedule_spec hourly = S("cron", "0 * * * *", "Europe/Paris");
    schedule_spec nine = S("cron", "0 9 * * *", "America/New_York");
    schedule_spec lh = S("cron", "*/30 * * * *", "Australia/Lord_Howe");
    /* [2026-01-01 00:00 CET, 2027-01-01 00:00 CET): start is one second before the first instant. */
    int64_t start = U(2026, 1, 1, 0, 0, 0) - 3600 - 1, end = U(2027, 1, 1, 0, 0, 0) - 3600;
    int n = 0, bad = 0;
    for (int64_t t = schedule_next(&daily, start); t < end && t > 0; t = schedule_next(&daily, t))
        n++;
    CHECK_INT(n, 365);
    n = 0;
    for (int64_t t = schedule_next(&hourly, start); t < end && t > 0; t = schedule_next(&hourly, t)) {
        if (t % 3600 != 0)
            bad++;
        n++;
    }
    CHECK_INT(n, 8760);
    CHECK_INT(bad, 0);
    n = bad = 0;
    for (int64_t t = schedule_next(&nine, start); t < end && t > 0; t = schedule_next(&nine, t)) {
        struct civil c;
        tz_utc_to_local(nine.zone, t, &c);
        if (c.hour != 9 || c.minute != 0 || c.second != 0)
            bad++;
        n++;
    }
    CHECK_INT(n, 365);
    CHECK_INT(bad, 0);
    /* Lord Howe: every real half hour is a :00 or :30 wall time, so 17520 firings. */
    n = 0;
    for (int64_t t = schedule_next(&lh, start); t < end && t > 0; t = schedule_next(&lh, t))
        n++;
    CHECK_INT(n, 17520);
}

/* For many afters: next is strictly later, stable (asking again just before it gives it), and
 * nothing fires in between (asking from any earlier point in between gives the same). */
static void cron_next_is_consistent(void)
{
    const char *exprs[] = {"0 9 * * 1-5", "*/7 */3 * * *", "15 2 * * SUN", "0 0 1,15 * 3"};
    const char *zones[] = {"Europe/Paris", "America/New_York", "Australia/Lord_Howe",
                           "Asia/Kathmandu"};
    uint64_t seed = 12345;
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 4; j++) {
            schedule_spec s = S("cron", exprs[i], zones[j]);
            for (int k = 0; k < 500; k++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                int64_t after = U(2026, 1, 1, 0, 0, 0) + (int64_t)(seed >> 33) % (3 * 366 * 86400);
                int64_t next = schedule_next(&s, after);
                int64_t mid = after + (next - after) / 2;
                if (next <= after || schedule_next(&s, next - 1) != next ||
                    schedule_next(&s, mid) != next)
                    bad++;
            }
        }
    }
    CHECK_INT(bad, 0);
}

UNIT_MAIN("schedule",
          CASE(at_with_offset),
          CASE(at_local_in_zone),
          CASE(at_in_the_past),
          CASE(at_errors),
          CASE(every_without_anchor),
          CASE(every_with_anchor),
          CASE(every_errors),
          CASE(cron_fields_parsed),
          CASE(cron_errors),
          CASE(cron_vixie_dom_dow),
          CASE(cron_feb_29),
          CASE(cron_paris_spring_forward),
          CASE(cron_paris_fall_back),
          CASE(cron_new_york),
          CASE(cron_lord_howe),
          CASE(cron_odd_offsets),
          CASE(cron_far_future_and_past),
          CASE(cron_whole_year_counts),
          CASE(cron_next_is_consistent))
