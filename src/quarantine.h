/* quarantine.h — what stalled the host, remembered across the restart the watchdog makes: one JSON
 * line per culprit in a file beside the database, consulted by whoever would run it again. */
#ifndef HERALD_QUARANTINE_H
#define HERALD_QUARANTINE_H

#include <stddef.h>

/* Culprit kinds: the work a task was running for when it stalled the loop. Keys:
 *   activity  "<conversation id> <activity id>"   (a redelivery is answered without running)
 *   notify    "<trigger> <sha256 of the body>"    (the same call is refused with 422)
 *   schedule  "<schedule id>"                     (its firings are skipped)
 *   timer     "<file>:<line> of the callback"     (teams.timer refuses that callback)
 *   load      "<script path>"                     (the generation is not built) */
#define QUARANTINE_KEY_MAX 320

/* Reads path (missing is fine); entries are only ever added by the watchdog, which then restarts
 * the process, so one read at start is current. Replaces what was loaded before. Returns the number
 * of entries, -1 on an unreadable file (logged). */
int quarantine_load(const char *path);

/* When (kind, key) was quarantined for the script whose hex SHA-256 is script_hash (unix ms), 0 if
 * it is not: a quarantine lasts until the script changes. */
long long quarantine_since(const char *script_hash, const char *kind, const char *key);
int quarantine_has(const char *script_hash, const char *kind, const char *key);

/* Appends one entry and fsyncs. Safe to call from the watchdog thread (no shared state but the
 * file). Returns 0 or -1 (errno kept). */
int quarantine_append(const char *path, const char *script_hash, const char *kind, const char *key,
                      long long at_ms, long cpu_ms, const char *script_path);

/* Frees what quarantine_load kept. */
void quarantine_clear(void);

/* Hex SHA-256 of len bytes into out[65]. Returns 0 or -1. */
int quarantine_hash(const void *buf, size_t len, char out[65]);

#endif
