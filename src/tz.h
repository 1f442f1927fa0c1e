/* tz.h — IANA time zones read from the system database (TZif files, RFC 8536, versions 1-3, plus the
 * POSIX TZ rule in the footer for instants after the last transition), and civil-date arithmetic.
 * Pure computation: no process-wide TZ, no tzset/localtime, no I/O except reading zoneinfo files.
 * What a schedule means in a zone is schedule.c's business; this unit only answers "what is the
 * offset at this instant" and "which instant is this wall-clock time". Not thread-safe (the cache). */
#ifndef HERALD_TZ_H
#define HERALD_TZ_H

#include <stddef.h>
#include <stdint.h>

/* A proleptic Gregorian wall-clock time. month 1-12, day 1-31, hour 0-23, minute 0-59, second 0-59. */
struct civil {
    int64_t year;
    int month, day, hour, minute, second;
};

typedef struct tz tz;

/* Longest zone name accepted ("America/Argentina/ComodRivadavia" is 32). */
#define TZ_NAME_MAX 64
/* Distinct zones tz_get keeps; there are about 600 names in tzdata, so real traffic never fills it,
 * while a stream of made-up names cannot grow memory (failed loads are not cached). */
#define TZ_CACHE_MAX 1024

/* ---- civil arithmetic (Howard Hinnant's algorithms, valid for any int64 day count in range) ---- */

/* Days since 1970-01-01 of y-m-d (m 1-12, d 1-31; no range check). */
int64_t tz_days_from_civil(int64_t y, int m, int d);
/* The y-m-d of a day count since 1970-01-01. */
void tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d);
/* Day of the week of a day count since 1970-01-01: 0 = Sunday .. 6 = Saturday. */
int tz_weekday(int64_t days);
/* 1 when y is a Gregorian leap year, else 0. */
int tz_is_leap(int64_t y);
/* Days in month m (1-12) of year y. */
int tz_month_days(int64_t y, int m);
/* Seconds since the epoch of a civil time read as UTC (no validation). */
int64_t tz_civil_to_seconds(const struct civil *c);
/* The civil time of seconds since the epoch, read as UTC. */
void tz_seconds_to_civil(int64_t s, struct civil *out);
/* 1 when every field of c is in range (day within its month), else 0. */
int tz_civil_valid(const struct civil *c);

/* ---- zones ---- */

/* 1 when name is an acceptable zone name: 1..TZ_NAME_MAX-1 chars of [A-Za-z0-9_+-/], not starting
 * with '/', no empty, "." or ".." component. Says nothing about whether the zone exists. */
int tz_name_valid(const char *name);

/* Directory holding the TZif files (default /usr/share/zoneinfo). The string is copied; tests and
 * the config may point elsewhere. Zones already cached are not reloaded. */
void tz_set_dir(const char *dir);

/* Loads a zone by IANA name ("Europe/Paris"). "UTC" and "Etc/UTC" always work, even without tzdata.
 * Returns a new zone for tz_free, or NULL with *err (malloc'd, caller frees; err may be NULL). */
tz *tz_load(const char *name, char **err);

/* Builds a zone from a POSIX TZ rule alone ("CET-1CEST,M3.5.0,M10.5.0/3"), named name.
 * Returns a new zone for tz_free, or NULL with *err set as for tz_load. */
tz *tz_from_posix(const char *name, const char *rule, char **err);

/* Builds a zone from the bytes of a TZif file (what tz_load reads from the zoneinfo directory),
 * named name. Returns a new zone for tz_free, or NULL with *err set as for tz_load. */
tz *tz_from_tzif(const char *name, const unsigned char *data, size_t len, char **err);

/* Frees a zone from tz_load, tz_from_tzif or tz_from_posix; NULL is ignored. Never call it on a tz_get zone. */
void tz_free(tz *z);

/* The shared, cached zone for name, loaded on first use and kept until tz_cache_clear.
 * Returns the zone (do not free), or NULL with *err set as for tz_load (also when the cache is full). */
const tz *tz_get(const char *name, char **err);

/* Frees every cached zone; pointers from tz_get become invalid. For shutdown and tests. */
void tz_cache_clear(void);

/* Number of zones in the cache. */
int tz_cache_size(void);

/* The zone's name as given to tz_load. */
const char *tz_name(const tz *z);

/* The UTC offset in seconds east of Greenwich at instant utc_s; *is_dst (may be NULL) gets 1 during
 * daylight saving time. Instants before the first transition use the zone's first local time type;
 * instants after the last one follow the footer's POSIX rule (or the last type when there is none). */
int tz_offset_at(const tz *z, int64_t utc_s, int *is_dst);

/* The abbreviation in effect at utc_s ("CET", "+0545"); a pointer into z, valid while z lives. */
const char *tz_abbr_at(const tz *z, int64_t utc_s);

/* The wall-clock time at instant utc_s. Returns the UTC offset used, in seconds. */
int tz_utc_to_local(const tz *z, int64_t utc_s, struct civil *out);

/* How tz_local_to_utc resolves a wall time that occurs twice (a fall-back overlap). */
#define TZ_EARLIER 0             /* the first occurrence: the earlier instant (what schedules use) */
#define TZ_LATER   1             /* the second occurrence */

/* What tz_local_to_utc found. */
#define TZ_LOCAL_UNIQUE  0       /* the wall time happens exactly once */
#define TZ_LOCAL_GAP     1       /* it never happens (spring forward): the transition instant was
                                  * returned, i.e. the first valid instant after the gap */
#define TZ_LOCAL_OVERLAP 2       /* it happens twice (fall back): policy picked the occurrence */

/* The instant of wall time *local in z. Gap: the instant the clock jumps (02:30 in a 02:00->03:00
 * gap gives 03:00 new time); overlap: per policy. Returns TZ_LOCAL_UNIQUE, _GAP or _OVERLAP, or -1
 * when *local is not a valid civil time. */
int tz_local_to_utc(const tz *z, const struct civil *local, int64_t *utc_s, int policy);

/* The first transition strictly after utc_s (an instant where the offset, DST flag or abbreviation
 * may change): returns 1 with *at and *offset_after set, or 0 when there is none. */
int tz_next_transition(const tz *z, int64_t utc_s, int64_t *at, int *offset_after);

#endif
