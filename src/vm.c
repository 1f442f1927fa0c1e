/* vm.c — one Lua generation: capped allocator, sandboxed libraries, embedded teams modules,
 * text-only script loading, the CPU-slice hook and vm_pcall. Tasks live in task.c. */
#include "vm.h"
#include "clock.h"
#include "lua_embedded.h"
#include "log.h"
#include "task.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lua-cjson.h>

/* Instructions between deadline checks: cheap enough (a coarse clock read) to be invisible in
 * profiles, short enough that a runaway loop is caught within a millisecond of its deadline. */
#define VM_HOOK_COUNT 1000

struct vm {
    lua_State *L;
    struct event_base *base;
    vm_config cfg;
    char *script_dir;
    char *env_allow;
    void *host;
    size_t mem_used;
    int64_t deadline;             /* 0 when no slice is armed */
    int enforce;                  /* script code is running: the memory cap applies */
    long slice_ms;
    int tripped;
    int refs;
    struct task_list *tasks;
    void *ext[VM_EXT_COUNT];
    void (*ext_free[VM_EXT_COUNT])(void *);
    char **files;                 /* loaded files, for the reload watcher */
    int nfiles;
};

static void note_file(vm *v, const char *path)
{
    char **n = realloc(v->files, (size_t)(v->nfiles + 1) * sizeof *n);
    if (!n)
        return;
    v->files = n;
    if ((v->files[v->nfiles] = strdup(path)))
        v->nfiles++;
}

void *vm_ext(vm *v, enum vm_ext_slot slot) { return v->ext[slot]; }

void vm_set_ext(vm *v, enum vm_ext_slot slot, void *ext, void (*free_fn)(void *ext))
{
    v->ext[slot] = ext;
    v->ext_free[slot] = free_fn;
}

const char *vm_file(const vm *v, int i) { return i >= 0 && i < v->nfiles ? v->files[i] : NULL; }

int vm_hook_count(vm *v)
{
    lua_State *L = v->L;
    int n = 0;
    if (lua_getfield(L, LUA_REGISTRYINDEX, "herald.hooks") == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            n++;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return n;
}

int64_t vm_now_ms(void) { return clock_mono_ms(); }

static int64_t coarse_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Frees and shrinks always succeed; growth past the cap fails, which Lua turns into a memory
 * error in whatever code asked, so a memory bomb kills its own task and not the host. */
static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    vm *v = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        v->mem_used -= old;
        return NULL;
    }
    /* only script code meets the cap: the host's own work on the state (a traceback, a new task's
     * thread, a registry ref) must never fail because the script used everything up */
    if (nsize > old && v->enforce && v->mem_used - old + nsize > v->cfg.memory_limit)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p)
        v->mem_used = v->mem_used - old + nsize;
    return p;
}

vm *vm_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

/* Once the deadline passes the hook fires on every instruction, so an error caught by pcall is
 * raised again at the handler's next step: a runaway task cannot keep itself alive. */
static void slice_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    vm *v = vm_of(L);
    if (!v->deadline)
        return;
    if (!v->tripped) {
        if (coarse_now_ms() <= v->deadline)
            return;
        v->tripped = 1;
    }
    lua_sethook(L, slice_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "CPU slice exceeded: ran for more than %d ms without yielding", (int)v->slice_ms);
}

void vm_arm_slice(vm *v, long ms)
{
    v->enforce = 1;
    v->slice_ms = ms;
    v->deadline = coarse_now_ms() + ms;
    v->tripped = 0;
}

void vm_disarm_slice(vm *v)
{
    v->enforce = 0;
    if (v->tripped)
        lua_sethook(v->L, slice_hook, LUA_MASKCOUNT, VM_HOOK_COUNT);
    v->deadline = 0;
    v->tripped = 0;
}

int vm_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int vm_pcall(vm *v, int nargs, int nres, char **err)
{
    lua_State *L = v->L;
    int base = lua_gettop(L) - nargs;          /* index of the function */
    lua_pushcfunction(L, vm_traceback);
    lua_insert(L, base);
    vm_arm_slice(v, v->cfg.slice_ms);
    int rc = lua_pcall(L, nargs, nres, base);
    vm_disarm_slice(v);
    lua_remove(L, base);
    if (rc != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        *err = strdup(m ? m : "(no message)");
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

int vm_ref(vm *v, lua_State *L)
{
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (ref != LUA_NOREF && ref != LUA_REFNIL)
        v->refs++;
    return ref;
}

void vm_unref(vm *v, int ref)
{
    if (ref == LUA_NOREF || ref == LUA_REFNIL)
        return;
    luaL_unref(v->L, LUA_REGISTRYINDEX, ref);
    v->refs--;
}

int vm_ref_count(const vm *v) { return v->refs; }
size_t vm_memory(const vm *v) { return v->mem_used; }
lua_State *vm_state(vm *v) { return v->L; }
void *vm_host(vm *v) { return v->host; }
struct event_base *vm_base(vm *v) { return v->base; }
const vm_config *vm_cfg(vm *v) { return &v->cfg; }
struct task_list *vm_tasks(vm *v) { return v->tasks; }

/* package.preload loader for one embedded module; upvalue 1 is its index. */
static int load_embedded(lua_State *L)
{
    const lua_embedded_file *f = &lua_embedded_files[lua_tointeger(L, lua_upvalueindex(1))];
    if (luaL_loadbufferx(L, f->source, f->len, f->chunkname, "t") != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, f->module);
    lua_call(L, 1, 1);
    return 1;
}

/* loadtext(path) → chunk | nil, message: the only way files become code (never bytecode). */
static int load_text_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    note_file(vm_of(L), path);
    if (luaL_loadfilex(L, path, "t") != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return 1;
}

/* Runs with (loadtext, script_dir, unsafe, env_allow). Why Lua: the policy reads as a list, and
 * it runs once per generation, so speed does not matter. */
static const char sandbox_prelude[] =
    "local loadtext, dir, unsafe, env_allow = ...\n"
    "local _load, select, error, searchpath = load, select, error, package.searchpath\n"
    "local type, find = type, string.find\n"
    "dofile, loadfile = nil, nil\n"
    "load = function(chunk, name, mode, ...)\n"
    "  if select('#', ...) > 0 then return _load(chunk, name, 't', ...) end\n"
    "  return _load(chunk, name, 't')\n"
    "end\n"
    "local path = dir .. '/?.lua;' .. dir .. '/?/init.lua'\n"
    "if unsafe then package.path = path .. ';' .. package.path return end\n"
    "os = { time = os.time, date = os.date, clock = os.clock, difftime = os.difftime,\n"
    "       getenv = os.getenv }\n"
    "local getenv, allowed = os.getenv, {}\n"
    "for name in (env_allow or ''):gmatch('[^,%s]+') do allowed[name] = true end\n"
    "os.getenv = function(name)\n"
    "  if type(name) ~= 'string' then return nil end\n"
    "  if allowed[name] or find(name, '^BOT_') then return getenv(name) end\n"
    "  return nil\n"
    "end\n"
    "package.cpath, package.loadlib = '', nil\n"
    "package.path = path\n"
    "package.searchers = { package.searchers[1], function(name)\n"
    "  if not find(name, '^[%w_][%w_%.%-]*$') or find(name, '%.%.') then\n"
    "    return '\\n\\tmodule name ' .. name .. ' is not allowed (letters, digits, _ - and .)'\n"
    "  end\n"
    /* the captured path, not package.path: a script must not point require elsewhere */
    "  local file, why = searchpath(name, path)\n"
    "  if not file then return '\\n\\t' .. why end\n"
    "  local chunk, err = loadtext(file)\n"
    "  if not chunk then error(err, 0) end\n"
    "  return chunk, file\n"
    "end }\n";

static int open_sandbox(vm *v, char **err)
{
    lua_State *L = v->L;
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},      {LUA_LOADLIBNAME, luaopen_package},
        {LUA_COLIBNAME, luaopen_coroutine}, {LUA_TABLIBNAME, luaopen_table},
        {LUA_STRLIBNAME, luaopen_string}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8}, {LUA_OSLIBNAME, luaopen_os},
        {NULL, NULL},
    };
    if (v->cfg.unsafe) {
        luaL_requiref(L, LUA_IOLIBNAME, luaopen_io, 1);
        lua_pop(L, 1);
    }
    for (const luaL_Reg *lib = libs; lib->func; lib++) {
        luaL_requiref(L, lib->name, lib->func, 1);
        lua_pop(L, 1);
    }
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);   /* [preload] */
    lua_pushcfunction(L, luaopen_cjson);
    lua_setfield(L, -2, "cjson");
    for (int i = 0; lua_embedded_files[i].module; i++) {
        lua_pushinteger(L, i);
        lua_pushcclosure(L, load_embedded, 1);
        lua_setfield(L, -2, lua_embedded_files[i].module);
    }
    lua_pop(L, 1);                                               /* [] */
    if (luaL_loadbufferx(L, sandbox_prelude, sizeof sandbox_prelude - 1, "=sandbox", "t") != LUA_OK) {
        *err = strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    lua_pushcfunction(L, load_text_file);
    lua_pushstring(L, v->script_dir);
    lua_pushboolean(L, v->cfg.unsafe);
    if (v->env_allow)
        lua_pushstring(L, v->env_allow);
    else
        lua_pushnil(L);
    return vm_pcall(v, 4, 0, err);
}

/* An error outside any protected call is a host bug, not a script's: say so before aborting. */
static int on_panic(lua_State *L)
{
    const char *m = lua_tostring(L, -1);
    log_error("Lua panic (unprotected error in the host): %s", m ? m : "?");
    return 0;                     /* Lua aborts after this */
}

vm *vm_new(struct event_base *base, const vm_config *cfg, void *host, char **err)
{
    vm *v = calloc(1, sizeof *v);
    if (!v) {
        *err = strdup("out of memory");
        return NULL;
    }
    v->base = base;
    v->cfg = *cfg;
    v->script_dir = strdup(cfg->script_dir ? cfg->script_dir : ".");
    v->cfg.script_dir = v->script_dir;
    v->env_allow = cfg->env_allow ? strdup(cfg->env_allow) : NULL;
    v->cfg.env_allow = v->env_allow;
    v->host = host;
    v->L = lua_newstate(vm_alloc, v);
    if (!v->L) {
        *err = strdup("cannot create a Lua state");
        goto fail;
    }
    lua_sethook(v->L, slice_hook, LUA_MASKCOUNT, VM_HOOK_COUNT);
    /* threads copy the main thread's extra space: it must say "no task" */
    *(void **)lua_getextraspace(v->L) = NULL;
    lua_atpanic(v->L, on_panic);
    v->tasks = task_list_new(v, err);
    if (!v->tasks)
        goto fail;
    if (open_sandbox(v, err) < 0)
        goto fail;
    return v;
fail:
    vm_free(v);
    return NULL;
}

void vm_free(vm *v)
{
    if (!v)
        return;
    if (v->tasks) {
        task_cancel_all(v, "the Lua generation is closing");
        task_list_free(v->tasks);
    }
    for (int i = 0; i < VM_EXT_COUNT; i++)
        if (v->ext[i] && v->ext_free[i]) {
            v->ext_free[i](v->ext[i]);
            v->ext[i] = NULL;
        }
    if (v->refs)
        log_warn("lua generation closing with %d registry refs still held", v->refs);
    if (v->L)
        lua_close(v->L);
    free(v->script_dir);
    free(v->env_allow);
    for (int i = 0; i < v->nfiles; i++)
        free(v->files[i]);
    free(v->files);
    free(v);
}

int vm_load_script(vm *v, const char *path, char **err)
{
    lua_State *L = v->L;
    note_file(v, path);
    char *chunkname = NULL;
    if (asprintf(&chunkname, "@%s", path) < 0) {
        *err = strdup("out of memory");
        return -1;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (asprintf(err, "cannot open %s: %s", path, strerror(errno)) < 0)
            *err = NULL;
        free(chunkname);
        return -1;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        luaL_addlstring(&b, chunk, n);
    fclose(f);
    luaL_pushresult(&b);                                    /* [src] */
    size_t len;
    const char *src = lua_tolstring(L, -1, &len);
    int rc = luaL_loadbufferx(L, src, len, chunkname, "t"); /* [src chunk|msg] */
    free(chunkname);
    lua_remove(L, -2);                                      /* [chunk|msg] */
    if (rc != LUA_OK) {
        *err = strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    long slice = v->cfg.slice_ms;
    v->cfg.slice_ms = v->cfg.load_deadline_ms;
    rc = vm_pcall(v, 0, 0, err);
    v->cfg.slice_ms = slice;
    return rc;
}
