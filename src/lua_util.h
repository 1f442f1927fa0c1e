/* lua_util.h — helpers every lua_* binding shares for reading the script's tables; only lua_*.c
 * include it. */
#ifndef HERALD_LUA_UTIL_H
#define HERALD_LUA_UTIL_H

struct lua_State;

/* t[k] as a string or NULL (a raw read: no metamethod, no number conversion). The pointer stays
 * valid while the table at index t holds the value. Net stack effect: 0. */
const char *lua_field_string(struct lua_State *L, int t, const char *k);

#endif
