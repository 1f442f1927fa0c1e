/* schedule.h — durable-schedule specs ("at", "every", 5-field "cron" in an IANA zone) parsed from
 * strings, and the next fire instant after a given one. Pure computation on top of tz.h: storage,
 * missed-run policy and firing belong to the host. All instants are seconds since the Unix epoch.
 *
 * Wall-clock semantics (cron, and "at" given as a local time):
 *  - A wall time that does not exist (spring-forward gap) fires once, at the first valid instant after
 *    the gap, i.e. the transition instant: "30 2 * * *" in Europe/Paris on the last Sunday of March
 *    fires at 03:00 CEST (01:00 UTC). Several gap times ("*" minutes in the skipped hour) collapse into
 *    that one firing.
 *  - A wall time that happens twice (fall-back overlap) fires once, at its first occurrence: "30 2 * * *"
 *    in Paris on the last Sunday of October fires at 02:30 CEST (00:30 UTC) and not at 02:30 CET.
 *  - Exception, as in Vixie cron's treatment of "wildcard" jobs: when the hour field starts with '*'
 *    ("*", or a step over "*") the job follows real time, so a matching wall time in the repeated hour
 *    fires at both occurrences: "0 * * * *" fires at 02:00 CEST and again at 02:00 CET. A job pinned
 *    to hours ("0,30 2 * * *", "0-59/5 2 * * *") fires in the first occurrence only.
 *  - Day-of-month and day-of-week follow Vixie cron: when both fields are restricted (neither starts
 *    with '*') a day matches if EITHER matches ("0 9 13 * 5" = every 13th and every Friday);
 *    otherwise both must. A step over "*" in day-of-month counts as unrestricted, as in Vixie: with
 *    "0 9 <star-slash-2> * 1" only odd days that are Mondays fire, while "0 9 1-31/2 * 1" fires on odd
 *    days and on Mondays.
 *  - "at" given as a local time is resolved to an instant once, at parse time (tzdata updates after
 *    that are not followed; the host re-parses the stored strings on start). */
#ifndef HERALD_SCHEDULE_H
#define HERALD_SCHEDULE_H

#include "tz.h"

#include <stdint.h>

typedef enum schedule_kind {
    SCHEDULE_AT = 1,              /* one instant */
    SCHEDULE_EVERY,               /* anchor + k * interval, k >= 0 */
    SCHEDULE_CRON                 /* wall-clock times matching five fields, in a zone */
} schedule_kind;

#define SCHEDULE_DOM_STAR  0x01   /* day-of-month field starts with '*' (Vixie's DOM_STAR) */
#define SCHEDULE_DOW_STAR  0x02   /* day-of-week field starts with '*' */
#define SCHEDULE_HOUR_STAR 0x04   /* hour field starts with '*': fires in both copies of a repeated hour */

/* Bit i set = value i allowed. */
typedef struct schedule_cron {
    uint64_t minutes;             /* 0-59 */
    uint32_t hours;               /* 0-23 */
    uint32_t days;                /* 1-31 */
    uint16_t months;              /* 1-12 */
    uint8_t weekdays;             /* 0-6, 0 = Sunday (7 in the text folds to 0) */
    uint8_t flags;                /* SCHEDULE_*_STAR */
} schedule_cron;

/* A parsed spec: plain data, copyable, no destructor. zone points into the tz_get cache (shared by
 * every spec in that zone) and stays valid until tz_cache_clear. */
typedef struct schedule_spec {
    schedule_kind kind;
    const tz *zone;               /* cron: the zone (UTC when none was given); at: the zone a local
                                   * time was read in, else NULL; every: zone of a local anchor or NULL */
    int64_t at;                   /* SCHEDULE_AT: the instant */
    int64_t interval;             /* SCHEDULE_EVERY: seconds, 1..SCHEDULE_EVERY_MAX */
    int64_t anchor;               /* SCHEDULE_EVERY: the grid's first instant (0 = the Unix epoch) */
    int has_anchor;               /* 0: none was given; the host may set anchor (e.g. creation time) */
    schedule_cron cron;
} schedule_spec;

/* The longest "every" interval: 100 years of seconds. */
#define SCHEDULE_EVERY_MAX (100LL * 366 * 86400)

/* Parses a spec.
 *  kind "at":    RFC 3339 with offset ("2026-11-22T09:00:00+01:00", "...Z"; 'T', 't' or ' ' between
 *                date and time; fractional seconds round up), or a local "YYYY-MM-DDTHH:MM[:SS]"
 *                read in zone (required then; resolved with the gap/overlap rules above).
 *  kind "every": "<n>[s|m|h|d][@<date-time>]": an interval of n seconds/minutes/hours/days, optionally
 *                anchored at a date-time written as for "at" (a local one is read in zone). Without an
 *                anchor the grid starts at the Unix epoch ("every 3600" fires on UTC hours) and
 *                has_anchor is 0.
 *  kind "cron":  five fields "minute hour day-of-month month day-of-week" with '*', lists, ranges,
 *                '/' steps, JAN-DEC and SUN-SAT (any case), 0 or 7 = Sunday; or @yearly, @annually,
 *                @monthly, @weekly, @daily, @midnight, @hourly. zone NULL or "" means UTC.
 *                A spec that can never fire ("0 0 30 2 *") is refused.
 * Returns 0, or -1 with *err (malloc'd, caller frees; err may be NULL) naming the bad part. */
int schedule_parse(const char *kind, const char *expr, const char *zone, schedule_spec *out,
                   char **err);

/* The first fire instant strictly after after_utc_s, or -1 when there is none (an "at" at or before
 * after_utc_s; or beyond the year 9999). Cost: a few binary searches and a field-skipping walk — no
 * minute-by-minute scan; cron in a DST zone typically takes well under a microsecond. */
int64_t schedule_next(const schedule_spec *spec, int64_t after_utc_s);

/* Parses an RFC 3339 date-time with offset, or a local date-time read in zone (NULL: an offset is then
 * required). Returns 0 with *utc_s, or -1 with *err set as for schedule_parse. */
int schedule_parse_time(const char *text, const tz *zone, int64_t *utc_s, char **err);

#endif
