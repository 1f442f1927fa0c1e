/* scaffold.h — `herald new NAME`: a bot project from the templates in scripts/new (compiled into
 * the binary by scripts/embed_files.lua), pointed at this herald's test kit and editor definitions. */
#ifndef HERALD_SCAFFOLD_H
#define HERALD_SCAFFOLD_H
#include <stddef.h>

typedef struct scaffold_file {
    const char *path;             /* relative to the project: "bot.lua", "spec/bot_spec.lua", ... */
    const char *text;
    size_t len;
} scaffold_file;

/* build/gen/new_templates.c: the templates, terminated by a NULL path. Only main.c refers to it,
 * so that the library objects (the test kit, the unit tests) link without it. */
extern const scaffold_file new_templates[];

/* Where this herald's Lua kit lives, found from the running binary: the build tree (lua/ and
 * build/lua/) or an installed prefix (share/herald/lua and lib/herald/lua). Each is an absolute
 * directory (malloc'd). Returns 0, or -1 with *err when neither layout is beside exe. */
typedef struct scaffold_paths {
    char *lua_dir;                /* holds teams/testing.lua */
    char *so_dir;                 /* holds herald/testing_core.so */
    char *defs_dir;               /* holds teams/init.lua, the ---@meta definitions */
} scaffold_paths;
int scaffold_find_paths(const char *exe, scaffold_paths *p, char **err);
void scaffold_paths_free(scaffold_paths *p);

/* Writes the project into directory name (created; an existing one must be empty), each template
 * with {{NAME}} (the directory's last component), {{LUA_DIR}}, {{SO_DIR}} and {{DEFS_DIR}}
 * replaced. Returns 0, or -1 with *err (malloc'd); on an error after the first write, what was
 * written stays and *err says so. */
int scaffold_new(const char *name, const scaffold_file *files, const scaffold_paths *p, char **err);

#endif
