/* log.h — levelled, structured log lines on stderr.
 * Owns formatting and the level filter; callers own what they say (never a secret). */
#ifndef HERALD_LOG_H
#define HERALD_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the minimum level printed; returns -1 for an unknown name. */
int log_set_level_name(const char *name);
void log_set_level(enum log_level level);
int log_enabled(enum log_level level);

/* One line: "2026-11-21T05:02:03.123Z level=info msg=..." followed by key=value pairs in fmt. */
void log_at(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Routes finished lines (newline included) to fn instead of stderr; NULL restores stderr. */
void log_set_sink(void (*fn)(const char *line, size_t len, void *ud), void *ud);

#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_at(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...)  log_at(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_at(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)

#endif
