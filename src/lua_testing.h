/* lua_testing.h — teams.testing's C core (lua_testing.c), built as the loadable module
 * build/lua/herald/testing_core.so. */
#ifndef HERALD_LUA_TESTING_H
#define HERALD_LUA_TESTING_H

struct lua_State;

/* require("herald.testing_core") */
int luaopen_herald_testing_core(struct lua_State *L);

#endif
