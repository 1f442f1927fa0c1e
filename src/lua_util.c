/* lua_util.c — helpers every lua_* binding shares: reading the script's tables, registering a module
 * loader; no state of its own, no knowledge of teams. */
#include "lua_util.h"

#include <lauxlib.h>
#include <lua.h>

/* Raw and strings only: the string must stay alive in the table after the pop. A value an __index
 * returned, or a number converted on the stack, is held by nothing once popped, and the next
 * allocation may free it while the caller still reads it. */
const char *lua_field_string(lua_State *L, int t, const char *k)
{
    t = lua_absindex(L, t);
    lua_pushstring(L, k);
    const char *s = lua_rawget(L, t) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    return s;
}

void lua_util_preload(lua_State *L, const char *name, lua_CFunction open)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, open);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}
