/* lua_check.h — the Lua half of `herald check` (lua_check.c): teams names a loaded script uses that
 * the teams module does not have. */
#ifndef HERALD_LUA_CHECK_H
#define HERALD_LUA_CHECK_H

#include <stdio.h>

typedef struct vm vm;

/* Runs teams.check over every file the script loaded into v; prints each finding to out. Returns
 * how many (0 when the script never required "teams"). */
int lua_check_names(vm *v, FILE *out);

#endif
