/* lua_embedded.h — the Lua sources of lua/teams compiled into the binary (build/gen/lua_embedded.c).
 * vm.c registers each as a package.preload loader. */
#ifndef HERALD_LUA_EMBEDDED_H
#define HERALD_LUA_EMBEDDED_H
#include <stddef.h>
typedef struct lua_embedded_file {
    const char *module;     /* "teams", "teams.message", ... */
    const char *chunkname;  /* "@lua/teams/init.lua" */
    const char *source;
    size_t len;
} lua_embedded_file;
extern const lua_embedded_file lua_embedded_files[];  /* terminated by a NULL module */
#endif
