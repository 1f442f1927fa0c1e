/* err.c — formats the error messages that err.h's out-parameters carry; nothing else (log lines
 * belong to log.c). */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

static char *verrf(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;                 /* its contents are undefined after a failure */
    return s;
}

char *errf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = verrf(fmt, ap);
    va_end(ap);
    return s;
}

void set_err(char **err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    *err = verrf(fmt, ap);
    va_end(ap);
}
