/* err.h — the one way C code hands back an error: a message formatted onto the heap, owned (and
 * freed) by the caller, through a `char **err` out-parameter beside a 0 / -1 result. */
#ifndef HERALD_ERR_H
#define HERALD_ERR_H

/* The formatted text in a new heap string, NULL when memory runs out (callers print "?"): an
 * error's message, or any short string the caller frees (connector.c builds URLs and headers). */
char *errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* *err = errf(fmt, ...); nothing when err is NULL (the caller does not want the message). */
void set_err(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
