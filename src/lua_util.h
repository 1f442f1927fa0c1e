/* lua_util.h — helpers every lua_* binding shares (reading the script's tables, registering a module
 * loader); only lua_*.c include it. */
#ifndef HERALD_LUA_UTIL_H
#define HERALD_LUA_UTIL_H

#include <lua.h>

/* t[k] as a string or NULL (a raw read: no metamethod, no number conversion). The pointer stays
 * valid while the table at index t holds the value. Net stack effect: 0. */
const char *lua_field_string(struct lua_State *L, int t, const char *k);

/* Registers open as the loader of module name in package.preload, where the sandbox's require
 * finds herald's own modules. Net stack effect: 0. */
void lua_util_preload(struct lua_State *L, const char *name, lua_CFunction open);

#endif
