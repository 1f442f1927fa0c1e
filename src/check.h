/* check.h — `herald check SCRIPT`: loads the script as `run` would, without network or database
 * writes, and reports what would fail (syntax, load-time errors, teams names that do not exist). */
#ifndef HERALD_CHECK_H
#define HERALD_CHECK_H
#include <stdio.h>

struct config;
/* Prints each problem as "file:line: message" to out. Returns 0 when the script loads and names
 * only what the teams module has, 1 otherwise. */
int check_script(const struct config *cfg, FILE *out);
#endif
