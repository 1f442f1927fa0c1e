/* lua_check.c — the Lua half of `herald check`: runs teams.check (lua/teams/check.lua) in the loaded
 * generation over the text of every file the script loaded, for teams names the module lacks. */
#include "lua_check.h"
#include "vm.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>

/* The file's text as a Lua string on the stack, or nil. Net stack effect: +1. */
static void push_file(lua_State *L, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        lua_pushnil(L);
        return;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        luaL_addlstring(&b, chunk, n);
    fclose(f);
    luaL_pushresult(&b);
}

int lua_check_names(vm *v, FILE *out)
{
    lua_State *L = vm_state(v);
    int found = 0;
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);        /* [loaded] */
    lua_getfield(L, -1, "teams");                                 /* [loaded teams] */
    lua_remove(L, -2);                                            /* [teams] */
    if (!lua_istable(L, -1)) {                                    /* the script never required it */
        lua_pop(L, 1);
        return 0;
    }
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);    /* [teams preload] */
    lua_getfield(L, -1, "teams.check");                           /* [teams preload loader] */
    lua_remove(L, -2);                                            /* [teams loader] */
    char *err = NULL;
    lua_pushliteral(L, "teams.check");
    if (vm_pcall(v, 1, 1, &err) < 0) {                            /* [teams checker] */
        fprintf(out, "herald check: %s\n", err);
        free(err);
        lua_pop(L, 1);
        return 1;
    }
    for (int i = 0; vm_file(v, i); i++) {
        lua_pushvalue(L, -1);                                     /* [teams checker checker] */
        push_file(L, vm_file(v, i));                              /* [... checker src] */
        lua_pushstring(L, vm_file(v, i));
        lua_pushvalue(L, -5);                                     /* [... checker src file teams] */
        if (vm_pcall(v, 3, 1, &err) < 0) {                        /* [teams checker list] */
            fprintf(out, "herald check: reading %s: %s\n", vm_file(v, i), err);
            free(err);
            err = NULL;
            found++;
            continue;
        }
        for (lua_Integer k = 1; lua_rawgeti(L, -1, k) == LUA_TSTRING; k++) {
            fprintf(out, "%s\n", lua_tostring(L, -1));
            lua_pop(L, 1);
            found++;
        }
        lua_pop(L, 2);                                            /* [teams checker] */
    }
    lua_pop(L, 2);
    return found;
}
