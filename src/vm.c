/* vm.c — one Lua generation: capped allocator, sandboxed libraries, embedded teams modules,
 * text-only script loading, the CPU-slice hook and vm_pcall. Tasks live in task.c. */
#include "vm.h"
#include "clock.h"
#include "config.h"
#include "lua_embedded.h"
#include "log.h"
#include "quarantine.h"
#include "watchdog.h"

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

/* Registry key of the host environment the embedded teams modules run in. */
#define VM_HOSTENV "herald.hostenv"

struct vm {
    lua_State *L;
    struct event_base *base;
    vm_config cfg;
    char *script_dir;
    char *env_allow;
    void *host;
    size_t mem_used;
    size_t gc_debt;               /* bytes allocated since the collector last stepped */
    int64_t deadline;             /* coarse wall ms; 0 when no slice is armed */
    int64_t cpu_start;            /* thread CPU ms when the slice began */
    lua_State *thread;            /* the thread the slice runs (a task's, or the main one) */
    int enforce;                  /* script code is running: the memory cap applies */
    long slice_ms;
    int tripped;
    int refs;
    vm_entries entries;
    void *ext[VM_EXT_COUNT];
    void (*ext_free[VM_EXT_COUNT])(void *);
    char *culprit;                /* "load\t<script>" while the top level runs */
    char script_hash[65];         /* hex SHA-256 of the script this generation loaded */
    int quarantined;              /* vm_load_script refused the script (quarantine.h) */
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
    if (vm_entry_push(L, v->entries.hooks) == LUA_TTABLE) {
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
    if (p) {
        v->mem_used = v->mem_used - old + nsize;
        if (nsize > old)
            v->gc_debt += nsize - old;
    }
    return p;
}

/* The collector is stopped for good (vm_new) and stepped by hand, only inside slices, where the
 * watchdog looks: its atomic phase is one C call whose cost a script controls (converging a chain
 * of weak-keyed tables is quadratic in its length), and Lua would otherwise run it in whatever
 * host code allocates. One basic step per VM_GC_STEP_BYTES allocated keeps pace with allocation;
 * stopping and restarting the collector around every slice instead reset its debt each time and
 * cost a quarter of an inbound turn. An allocation past the memory cap still forces a full
 * collection, stopped or not. */
#define VM_GC_STEP_BYTES (32 * 1024)
static void gc_pace(vm *v, lua_State *L)
{
    while (v->gc_debt >= VM_GC_STEP_BYTES) {
        v->gc_debt -= VM_GC_STEP_BYTES;
        if (lua_gc(L, LUA_GCSTEP, 0))
            v->gc_debt = 0;       /* a cycle ended: start counting afresh */
    }
}

vm *vm_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

static int64_t thread_cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Once the slice is spent the hook fires on every instruction, so an error caught by pcall is
 * raised again at the handler's next step: a runaway task cannot keep itself alive. The slice is
 * CPU time: the cheap coarse wall clock is read every VM_HOOK_COUNT instructions, and only when its
 * deadline passes is the thread's CPU clock asked, so a task that was merely descheduled (a busy
 * machine) gets the rest of its slice instead of being killed early. */
static void slice_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    vm *v = vm_of(L);
    if (!v->deadline)
        return;
    gc_pace(v, L);
    if (!v->tripped) {
        int64_t now = coarse_now_ms();
        if (now <= v->deadline)
            return;
        int64_t used = thread_cpu_ms() - v->cpu_start;
        if (used < v->slice_ms) {
            v->deadline = now + (v->slice_ms - used);
            return;
        }
        v->tripped = 1;
    }
    lua_sethook(L, slice_hook, LUA_MASKCOUNT, 1);
    /* a coroutine the script made has its own hook; the thread that resumed it must not get the
     * usual VM_HOOK_COUNT instructions after catching the error */
    if (v->thread && v->thread != L)
        lua_sethook(v->thread, slice_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "CPU slice exceeded: ran for more than %d ms without yielding", (int)v->slice_ms);
}

void vm_slice_enter(vm *v, lua_State *thread, long ms, const char *culprit, vm_slice *saved)
{
    saved->thread = v->thread;
    saved->deadline = v->deadline;
    saved->cpu_start = v->cpu_start;
    saved->slice_ms = v->slice_ms;
    saved->enforce = v->enforce;
    saved->tripped = v->tripped;
    v->thread = thread;
    v->enforce = 1;
    v->slice_ms = ms;
    v->cpu_start = thread_cpu_ms();
    v->deadline = coarse_now_ms() + ms;
    v->tripped = 0;
    watchdog_enter(culprit, v->script_hash, v->cpu_start, ms);
    gc_pace(v, v->L);             /* what the host allocated between slices, collected here */
}

/* Restores the enclosing slice (none, for the outermost), so host code that runs Lua from inside a
 * binding cannot leave the caller's script running without a deadline. */
int vm_slice_leave(vm *v, const vm_slice *saved)
{
    int tripped = v->tripped;
    watchdog_leave();
    if (v->tripped) {
        lua_sethook(v->L, slice_hook, LUA_MASKCOUNT, VM_HOOK_COUNT);
        if (v->thread)
            lua_sethook(v->thread, slice_hook, LUA_MASKCOUNT, VM_HOOK_COUNT);
    }
    v->thread = saved->thread;
    v->enforce = saved->enforce;
    v->slice_ms = saved->slice_ms;
    v->cpu_start = saved->cpu_start;
    v->deadline = saved->deadline;
    v->tripped = saved->tripped;
    return tripped;
}

/* luaL_traceback names a frame's function by searching every table in package.loaded (the script's
 * _G and string among them), for each frame: a script with a million globals made every traceback
 * cost seconds, and a failed task's traceback is built outside any slice. With the registry's
 * loaded table swapped for an empty one it costs the frames alone; names come from the call site. */
void vm_push_traceback(lua_State *L, lua_State *of, const char *msg, int level)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);      /* [loaded] */
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    luaL_traceback(L, of, msg, level);                         /* [loaded tb] */
    lua_insert(L, -2);                                         /* [tb loaded] */
    lua_setfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);      /* [tb] */
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
    vm_push_traceback(L, L, msg, 1);
    return 1;
}

int vm_pcall(vm *v, int nargs, int nres, char **err)
{
    lua_State *L = v->L;
    int base = lua_gettop(L) - nargs;          /* index of the function */
    lua_pushcfunction(L, vm_traceback);
    lua_insert(L, base);
    vm_slice saved;
    vm_slice_enter(v, L, v->cfg.slice_ms, v->culprit ? v->culprit : "host\tvm_pcall", &saved);
    int rc = lua_pcall(L, nargs, nres, base);
    vm_slice_leave(v, &saved);
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

vm_entries *vm_entries_of(vm *v) { return &v->entries; }

void vm_entry_set(vm *v, lua_State *L, int *slot)
{
    int old = *slot;
    *slot = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_unref(v->L, LUA_REGISTRYINDEX, old);     /* LUA_NOREF / LUA_REFNIL: nothing to release */
}

int vm_entry_push(lua_State *L, int ref)
{
    if (ref == LUA_NOREF || ref == LUA_REFNIL) {
        lua_pushnil(L);
        return LUA_TNIL;
    }
    return lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
}

static void release_entries(vm *v)
{
    int *all[] = {&v->entries.dispatch, &v->entries.hooks, &v->entries.notify_dispatch,
                  &v->entries.notify_handlers, &v->entries.schedule_dispatch,
                  &v->entries.schedule_handlers, &v->entries.decode, &v->entries.gated_dispatch};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        luaL_unref(v->L, LUA_REGISTRYINDEX, *all[i]);
        *all[i] = LUA_NOREF;
    }
}
const char *vm_script_hash(const vm *v) { return v->script_hash; }
int vm_quarantined(const vm *v) { return v->quarantined; }
size_t vm_memory(const vm *v) { return v->mem_used; }
lua_State *vm_state(vm *v) { return v->L; }
void *vm_host(vm *v) { return v->host; }
struct event_base *vm_base(vm *v) { return v->base; }
const vm_config *vm_cfg(vm *v) { return &v->cfg; }
void *vm_thread_task(lua_State *L) { return *(void **)lua_getextraspace(L); }
void vm_set_thread_task(lua_State *L, void *task) { *(void **)lua_getextraspace(L) = task; }

/* package.preload loader for one embedded module; upvalue 1 is its index. The chunk's _ENV is the
 * host environment, never the script's globals: a script cannot change what the teams module sees. */
static int load_embedded(lua_State *L)
{
    const lua_embedded_file *f = &lua_embedded_files[lua_tointeger(L, lua_upvalueindex(1))];
    if (luaL_loadbufferx(L, f->source, f->len, f->chunkname, "t") != LUA_OK)
        return lua_error(L);
    if (lua_getfield(L, LUA_REGISTRYINDEX, VM_HOSTENV) == LUA_TTABLE) {   /* [chunk env] */
        if (!lua_setupvalue(L, -2, 1))
            lua_pop(L, 1);
    } else {
        lua_pop(L, 1);
    }
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

/* string.rep that returns at once when nothing would be copied: Lua's own loops n times even for
 * an empty string, in C, where the CPU-slice hook never fires (string.rep("", 2^62) spins for
 * ever). Upvalue 1 is the original. */
static int guard_rep(lua_State *L)
{
    size_t l, lsep;
    luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    if (n > 0 && l == 0 && lsep == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* table.move over more elements than any table under the memory cap can hold is refused: moving
 * nils into an empty table allocates nothing, so Lua's loop would run 2^63 times in C. */
#define VM_MOVE_MAX ((lua_Integer)1 << 26)
static int guard_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    if (e >= f && (f <= 0 ? e >= VM_MOVE_MAX + f : e - f >= VM_MOVE_MAX))
        return luaL_argerror(L, 3, "too many elements to move (herald allows 2^26)");
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* coroutine.resume and coroutine.close refuse the threads herald runs itself: a handler's own
 * coroutine (another handler could capture it) and the main thread (a script's top level sees it as
 * coroutine.running()). Resumed by a script, the main thread ran script code as a coroutine and was
 * left yielded under the host's feet; closed, its stack was reset while the host used it. Upvalue 1
 * is the original. */
static int guard_thread_op(lua_State *L, const char *what)
{
    lua_State *co = lua_tothread(L, 1);
    /* a coroutine the slice killed died inside the hook, and Lua left its hooks off: its <close>
     * handlers would run unbounded */
    if (co && what[0] == 'c' && vm_of(L)->tripped)
        return luaL_error(L, "CPU slice exceeded: not closing a coroutine after it");
    if (co) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
        int main = lua_tothread(L, -1) == co;
        lua_pop(L, 1);
        if (main || vm_thread_task(co)) {
            lua_pushboolean(L, 0);
            if (main)
                lua_pushfstring(L, "the main thread belongs to herald; a script may not %s it", what);
            else
                lua_pushfstring(L, "a handler's coroutine was %sd by the script; only herald may %s it",
                                what, what);
            return 2;
        }
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static int guard_resume(lua_State *L) { return guard_thread_op(L, "resume"); }
static int guard_close(lua_State *L) { return guard_thread_op(L, "close"); }

/* print writes to herald's log (info), never to stdout: a bot's output belongs with its logs, and
 * a full stdout pipe must not block the loop. */
static int vm_print(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        luaL_tolstring(L, i, NULL);       /* may run a __tostring: script code, under the slice */
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    log_info("script: %s", lua_tostring(L, -1));
    return 0;
}

/* tripped() → whether the running slice is spent (the sandbox's xpcall asks). */
static int slice_tripped(lua_State *L)
{
    lua_pushboolean(L, vm_of(L)->tripped);
    return 1;
}

/* Replaces lib[name] with guard(original). Net stack effect: 0. */
static void install_guard(lua_State *L, const char *lib, const char *name, lua_CFunction guard)
{
    lua_getglobal(L, lib);                      /* [lib] */
    lua_getfield(L, -1, name);                  /* [lib orig] */
    lua_pushcclosure(L, guard, 1);              /* [lib guard] */
    lua_setfield(L, -2, name);                  /* [lib] */
    lua_pop(L, 1);
}

/* Runs with (loadtext, script_dir, unsafe, env_allow, tripped) after the standard libraries are open, and
 * returns the host environment. Why Lua: the policy reads as a list, and it runs once per
 * generation, so speed does not matter.
 *
 * A sandbox is judged by every name that reaches a library, not by the globals, so the script
 * gets its own require, package, package.loaded and package.preload: Lua's require reads the
 * registry's _LOADED, which holds the full os, io and package, and the teams module's internals.
 * The teams module itself runs in the host environment: copies of the libraries taken before any
 * script code ran, unreachable from the script, so tampering with globals, with the string table or
 * with cjson breaks only the script's own code. */
static const char sandbox_prelude[] =
    "local loadtext, dir, unsafe, env_allow, tripped = ...\n"
    "local _load, select, error, type, pairs, rawget = load, select, error, type, pairs, rawget\n"
    "local setmetatable, getmetatable, tostring = setmetatable, getmetatable, tostring\n"
    "local find, concat, searchpath, hrequire = string.find, table.concat, package.searchpath, require\n"
    "local function copy(t) local c = {} for k, v in pairs(t) do c[k] = v end return c end\n"
    "local host = copy(_G)\n"
    "for _, lib in pairs { 'string', 'table', 'math', 'utf8', 'coroutine', 'os' } do\n"
    "  host[lib] = copy(_G[lib])\n"
    "end\n"
    "host._G = host\n"
    /* string methods come from the host's copy; the shared metatable cannot be read or changed */
    "local smt = getmetatable('')\n"
    "smt.__index = host.string\n"
    "smt.__metatable = false\n"
    "local path = dir .. '/?.lua;' .. dir .. '/?/init.lua'\n"
    /* text-only loading and no finalizers hold even with HERALD_UNSAFE_LUA: they keep the host
     * alive, which is not what the switch is about */
    "dofile, loadfile = nil, nil\n"
    "load = function(chunk, name, mode, ...)\n"
    "  if select('#', ...) > 0 then return _load(chunk, name, 't', ...) end\n"
    "  return _load(chunk, name, 't')\n"
    "end\n"
    /* Lua marks an object for finalization only if its metatable has __gc when it is set, and
     * finalizers run with hooks off, where the CPU slice cannot stop them */
    "local rawsetmt = setmetatable\n"
    "_G.setmetatable = function(t, mt)\n"
    "  if type(mt) == 'table' and rawget(mt, '__gc') ~= nil then\n"
    "    error('setmetatable: __gc finalizers are not allowed in herald scripts (a finalizer runs '\n"
    "       .. 'where the CPU slice cannot stop it; use a <close> variable)', 2)\n"
    "  end\n"
    "  local setmetatable = rawsetmt\n"
    "  local r = setmetatable(t, mt)\n"
    "  return r\n"
    "end\n"
    /* the teams module too: it hands scripts objects whose metatables it sets */
    "host.setmetatable = _G.setmetatable\n"
    /* the collector's pace is the host's: with pause 0 and a huge step every allocation runs a full
     * collection, most of them the host's own, outside any slice */
    "local gc = collectgarbage\n"
    "collectgarbage = function(opt, ...)\n"
    /* herald steps the stopped collector itself (gc_pace): to the script it is running */
    "  if opt == 'isrunning' then return true end\n"
    "  if opt == nil or opt == 'collect' or opt == 'count' or opt == 'step' then\n"
    "    return gc(opt, ...)\n"
    "  end\n"
    "  error(\"collectgarbage: '\" .. tostring(opt) .. \"' is not allowed in herald scripts (the \"\n"
    "        .. 'collector settings are the host\\'s)', 2)\n"
    "end\n"
    /* a message handler runs where the error was raised; when the CPU slice raised it that is inside
     * the hook, where Lua has turned hooks off, so the script's handler would run unbounded */
    /* Lua's wrap closes a coroutine that failed from C, with the hooks the failure left: off, if
     * the CPU slice killed it. This one closes through the guarded coroutine.close. */
    "local create, resume, close, status = coroutine.create, coroutine.resume, coroutine.close, coroutine.status\n"
    "local function wrapped(co, ok, ...)\n"
    "  if ok then return ... end\n"
    "  local err = ...\n"
    "  if status(co) == 'dead' then\n"
    "    local closed, cerr = close(co)\n"
    "    if not closed then err = cerr end\n"
    "  end\n"
    "  error(err, type(err) == 'string' and 2 or 0)\n"
    "end\n"
    "coroutine.wrap = function(f)\n"
    "  local co = create(f)\n"
    "  return function(...) return wrapped(co, resume(co, ...)) end\n"
    "end\n"
    "local _xpcall = xpcall\n"
    "xpcall = function(f, msgh, ...)\n"
    "  if type(msgh) ~= 'function' then return _xpcall(f, msgh, ...) end\n"
    "  return _xpcall(f, function(m) if tripped() then return m end return msgh(m) end, ...)\n"
    "end\n"
    "if unsafe then package.path = path .. ';' .. package.path return host end\n"
    "local getenv, allowed = os.getenv, {}\n"
    "for name in (env_allow or ''):gmatch('[^,%s]+') do allowed[name] = true end\n"
    "os = { time = os.time, date = os.date, clock = os.clock, difftime = os.difftime,\n"
    "       getenv = function(name)\n"
    "         if type(name) ~= 'string' then return nil end\n"
    "         if allowed[name] or find(name, '^BOT_') then return getenv(name) end\n"
    "         return nil\n"
    "       end }\n"
    "local function allowed_name(name)\n"
    "  return type(name) == 'string' and find(name, '^[%w_][%w_%.%-]*$') and not find(name, '%.%.')\n"
    "end\n"
    "local loaded, preload = {}, {}\n"
    "local pkg = { path = path, cpath = '', config = package.config, loaded = loaded,\n"
    "              preload = preload }\n"
    /* only the script's directory: any other path made it an oracle for files anywhere */
    "pkg.searchpath = function(name)\n"
    "  if not allowed_name(name) then return nil, 'module name not allowed' end\n"
    "  return searchpath(name, path)\n"
    "end\n"
    "for _, name in pairs { 'string', 'table', 'math', 'utf8', 'coroutine' } do\n"
    "  loaded[name] = _G[name]\n"
    "end\n"
    "loaded._G, loaded.os, loaded.package = _G, os, pkg\n"
    /* the shared modules: the script's cjson is an instance of its own, so changing its functions
     * or options cannot change how herald encodes */
    "preload.teams = function() return hrequire 'teams' end\n"
    /* a copy: the teams module calls through its own table */
    "preload['teams.message'] = function() return copy(hrequire 'teams.message') end\n"
    /* cjson recurses on the C stack once per level, and a sparse array without limits writes a
     * null per missing index into memory outside the Lua cap */
    "local function within(n, lo, hi) return n == nil or (type(n) == 'number' and n >= lo and n <= hi) end\n"
    "local function script_cjson()\n"
    "  local c = hrequire('cjson').new()\n"
    "  for _, name in pairs { 'encode_max_depth', 'decode_max_depth' } do\n"
    "    local set = c[name]\n"
    "    c[name] = function(n)\n"
    "      if not within(n, 1, 1000) then error('cjson.' .. name .. ': herald allows 1 to 1000', 2) end\n"
    "      return set(n)\n"
    "    end\n"
    "  end\n"
    "  local sparse = c.encode_sparse_array\n"
    "  c.encode_sparse_array = function(convert, ratio, safe)\n"
    "    if not (within(ratio, 1, 10) and within(safe, 0, 65536)) then\n"
    "      error('cjson.encode_sparse_array: herald allows a ratio of 1 to 10 and a safe index up to 65536', 2)\n"
    "    end\n"
    "    return sparse(convert, ratio, safe)\n"
    "  end\n"
    "  c.new = script_cjson\n"
    "  return c\n"
    "end\n"
    "preload.cjson = script_cjson\n"
    "pkg.searchers = {\n"
    "  function(name)\n"
    "    local f = rawget(pkg.preload, name)\n"
    "    if f == nil then return '\\n\\tno field package.preload[\\'' .. name .. '\\']' end\n"
    "    return f, ':preload:'\n"
    "  end,\n"
    "  function(name)\n"
    "    if not allowed_name(name) then\n"
    "      return '\\n\\tmodule name ' .. name .. ' is not allowed (letters, digits, _ - and .)'\n"
    "    end\n"
    /* the captured path, not package.path: a script must not point require elsewhere */
    "    local file, why = searchpath(name, path)\n"
    "    if not file then return '\\n\\t' .. why end\n"
    "    local chunk, err = loadtext(file)\n"
    "    if not chunk then error(err, 0) end\n"
    "    return chunk, file\n"
    "  end,\n"
    "}\n"
    "package = pkg\n"
    "require = function(name)\n"
    "  if type(name) == 'number' then name = tostring(name) end\n"
    "  if type(name) ~= 'string' then\n"
    "    error(\"bad argument #1 to 'require' (string expected, got \" .. type(name) .. ')', 2)\n"
    "  end\n"
    "  local m = rawget(loaded, name)\n"
    "  if m then return m end\n"
    "  local searchers, why = pkg.searchers, {}\n"
    "  if type(searchers) ~= 'table' then error(\"'package.searchers' must be a table\", 2) end\n"
    "  for i = 1, #searchers do\n"
    "    local loader, extra = searchers[i](name)\n"
    "    if type(loader) == 'function' then\n"
    "      local r = loader(name, extra)\n"
    "      if r ~= nil then loaded[name] = r elseif rawget(loaded, name) == nil then loaded[name] = true end\n"
    "      return rawget(loaded, name), extra\n"
    "    elseif type(loader) == 'string' then\n"
    "      why[#why + 1] = loader\n"
    "    end\n"
    "  end\n"
    "  error(\"module '\" .. name .. \"' not found:\" .. concat(why), 2)\n"
    "end\n"
    "return host\n";

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
    install_guard(L, LUA_STRLIBNAME, "rep", guard_rep);
    install_guard(L, LUA_TABLIBNAME, "move", guard_move);
    install_guard(L, LUA_COLIBNAME, "resume", guard_resume);
    install_guard(L, LUA_COLIBNAME, "close", guard_close);
    lua_register(L, "print", vm_print);
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
    lua_pushcfunction(L, slice_tripped);
    if (vm_pcall(v, 5, 1, err) < 0)
        return -1;
    lua_setfield(L, LUA_REGISTRYINDEX, VM_HOSTENV);               /* [] */
    return 0;
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
    v->entries = (vm_entries){LUA_NOREF, LUA_NOREF, LUA_NOREF, LUA_NOREF, LUA_NOREF, LUA_NOREF,
                              LUA_NOREF, LUA_NOREF};
    v->L = lua_newstate(vm_alloc, v);
    if (!v->L) {
        *err = strdup("cannot create a Lua state");
        goto fail;
    }
    lua_sethook(v->L, slice_hook, LUA_MASKCOUNT, VM_HOOK_COUNT);
    /* The collector runs in whatever code allocates, and its atomic phase is one C call whose cost
     * the script controls (converging a chain of weak-keyed tables is quadratic in its length). It
     * runs only inside slices, where the watchdog looks: stopped here, restarted by the outermost
     * vm_slice_enter. Host allocations between slices still count toward the memory in use; a
     * script allocation past the cap forces a full collection even while it is stopped. */
    lua_gc(v->L, LUA_GCSTOP);
    /* threads copy the main thread's extra space: it must say "no task" */
    vm_set_thread_task(v->L, NULL);
    lua_atpanic(v->L, on_panic);
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
    for (int i = 0; i < VM_EXT_COUNT; i++)
        if (v->ext[i] && v->ext_free[i]) {
            v->ext_free[i](v->ext[i]);
            v->ext[i] = NULL;
        }
    if (v->refs)
        log_warn("lua generation closing with %d registry refs still held", v->refs);
    if (v->L) {
        release_entries(v);
        lua_close(v->L);
    }
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
    /* the identity quarantines are kept under: exactly the bytes loaded */
    if (quarantine_hash(src, len, v->script_hash) < 0)
        v->script_hash[0] = 0;
    long long since = quarantine_since(v->script_hash, "load", path);
    if (since) {
        lua_pop(L, 1);
        free(chunkname);
        v->quarantined = 1;
        if (asprintf(err, "%s is quarantined: its top level stalled the host (watchdog, at unix ms "
                     "%lld); any change to the script lifts the quarantine", path, since) < 0)
            *err = NULL;
        return -1;
    }
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
    if (asprintf(&v->culprit, "load\t%s", path) < 0)
        v->culprit = NULL;
    rc = vm_pcall(v, 0, 0, err);
    free(v->culprit);
    v->culprit = NULL;
    v->cfg.slice_ms = slice;
    return rc;
}

/* Charges stop a 32nd of the cap short of it: the script keeps room for its own next allocations,
 * so a flood of sends ends in queue_full. Charged to the brim, whichever asked for the last bytes
 * failed, and a few KB more or less of the script's code decided between queue_full and a memory
 * error in the script's own next table. */
#define VM_CHARGE_RESERVE(limit) ((limit) / 32)

int vm_charge(vm *v, ptrdiff_t bytes)
{
    if (bytes >= 0) {
        size_t room = v->cfg.memory_limit - VM_CHARGE_RESERVE(v->cfg.memory_limit);
        if ((size_t)bytes > room || v->mem_used > room - (size_t)bytes)
            return -1;
        v->mem_used += (size_t)bytes;
    } else {
        size_t b = (size_t)-bytes;
        v->mem_used = b > v->mem_used ? 0 : v->mem_used - b;
    }
    return 0;
}

vm_config vm_config_from(const config *c)
{
    return (vm_config){.memory_limit = c->lua_memory_bytes, .slice_ms = c->task_slice_ms,
                       .load_deadline_ms = c->load_deadline_ms, .max_tasks = c->max_tasks,
                       .max_timers = c->max_timers, .script_dir = c->script_dir,
                       .task_deadline_ms = c->task_deadline_ms, .unsafe = c->unsafe_lua,
                       .env_allow = c->script_env};
}
