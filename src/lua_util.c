/* lua_util.c — helpers every lua_* binding shares for reading the script's tables; no state of its
 * own, no knowledge of teams. */
#include "lua_util.h"

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
