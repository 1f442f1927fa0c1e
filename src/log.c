/* log.c — levelled log lines on stderr with a UTC timestamp.
 * Writes each line with one fwrite so concurrent children (tests) never interleave a line. */
#include "log.h"
#include "clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static enum log_level min_level = LOG_INFO;
static void (*sink)(const char *line, size_t len, void *ud);
static void *sink_ud;

void log_set_sink(void (*fn)(const char *line, size_t len, void *ud), void *ud)
{
    sink = fn;
    sink_ud = ud;
}
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level) { min_level = level; }

int log_set_level_name(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, level_names[i]) == 0) {
            min_level = (enum log_level)i;
            return 0;
        }
    return -1;
}

int log_enabled(enum log_level level) { return level >= min_level; }

void log_at(enum log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char line[16384];
    struct timeval tv;
    struct tm tm;
    int64_t now = clock_wall_ms();  /* the virtual clock under teams.testing */
    tv.tv_sec = (time_t)(now / 1000);
    tv.tv_usec = (suseconds_t)(now % 1000) * 1000;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), level_names[level]);
    char msg[8192];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t mlen = m < 0 ? 0 : ((size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1);
    /* Values in a line can come from the network (a conversation id, a script's error): a newline
     * continues the entry indented and other control bytes become '?', so no input can forge a
     * line that looks like one of ours. */
    size_t len = (size_t)n;
    for (size_t i = 0; i < mlen && len < sizeof line - 6; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c == '\n') {
            if (i + 1 == mlen)
                break;
            memcpy(line + len, "\n    ", 5);
            len += 5;
        } else if (c < 0x20 && c != '\t') {
            line[len++] = '?';
        } else if (c == 0x7f) {
            line[len++] = '?';
        } else {
            line[len++] = (char)c;
        }
    }
    line[len++] = '\n';
    if (sink)
        sink(line, len, sink_ud);
    else
        fwrite(line, 1, len, stderr);
}
