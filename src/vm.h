/* vm.h — one Lua generation: a capped allocator, the sandboxed environment, the script load, the
 * CPU-slice hook, and vm_pcall, one of the two doors into Lua (task_resume is the other). */
#ifndef HERALD_VM_H
#define HERALD_VM_H

#include <stddef.h>
#include <stdint.h>

typedef struct lua_State lua_State;
typedef struct vm vm;
struct event_base;

typedef struct vm_config {
    size_t memory_limit;         /* bytes; allocation beyond it fails → "not enough memory" in Lua */
    long slice_ms;               /* CPU time one resume (or vm_pcall) may run */
    long load_deadline_ms;       /* CPU time for the script's top level */
    int max_tasks;               /* tasks alive at once */
    int max_timers;              /* pending in-memory timers */
    const char *script_dir;      /* require() resolves here (text chunks only) */
    long task_deadline_ms;       /* wall time a task may live (waiting included) before it is cancelled */
    int unsafe;                  /* HERALD_UNSAFE_LUA: io, full os and package.loadlib exposed */
    const char *env_allow;       /* comma-separated names os.getenv may read (besides BOT_*) */
} vm_config;

struct config;
/* The Lua generation's settings of a loaded configuration (one mapping for run, check, reload
 * and the kit). */
vm_config vm_config_from(const struct config *c);

/* Opens libraries into a fresh state and installs the sandbox. The generation keeps host (what the
 * lua_* bindings reach through vm_host) and base (for timers). NULL with *err set on failure. */
vm *vm_new(struct event_base *base, const vm_config *cfg, void *host, char **err);

/* Cancels every task of the generation (their done callbacks run with TASK_CANCELLED), closes the
 * state and logs any leaked registry refs. */
void vm_free(vm *v);

lua_State *vm_state(vm *v);
void *vm_host(vm *v);
struct event_base *vm_base(vm *v);
const vm_config *vm_cfg(vm *v);

/* The vm that owns L (any thread of the generation). */
vm *vm_of(lua_State *L);

/* Loads path as a text chunk and runs its top level under the load deadline.
 * Returns 0, or -1 with *err set to "file:line: message" (malloc'd). */
int vm_load_script(vm *v, const char *path, char **err);

/* Calls the function below nargs arguments on the main stack with a traceback handler and the
 * CPU-slice hook armed. Leaves nres results on success; on error pops everything and sets *err
 * (message + traceback, malloc'd). Returns 0 or -1. */
int vm_pcall(vm *v, int nargs, int nres, char **err);

/* The CPU slice around one run of script code (task resume, vm_pcall, closing a cancelled task's
 * <close> variables) on thread: enter arms ms of CPU time and the memory cap, saving the enclosing
 * slice in *saved; leave restores it. culprit ("kind\tkey", see quarantine.h) is what the watchdog
 * names and quarantines should the run stall inside C. Every host path that can run script code goes through a pair. */
typedef struct vm_slice {
    lua_State *thread;
    int64_t deadline, cpu_start;
    long slice_ms;
    int enforce, tripped;
} vm_slice;
void vm_slice_enter(vm *v, lua_State *thread, long ms, const char *culprit, vm_slice *saved);
/* Returns 1 when the slice was spent, i.e. the CPU slice killed the run: Lua raised that error
 * inside its hook, which leaves hooks off on the thread it killed. */
int vm_slice_leave(vm *v, const vm_slice *saved);

/* The script-side entry points the host calls into: registry refs owned by the generation, set
 * by the bindings when the teams module hands them over, released by vm_free (they are not in
 * vm_ref_count, which counts what the host holds on a task's or an operation's behalf). LUA_NOREF
 * until set. */
typedef struct vm_entries {
    int dispatch;                 /* activity dispatcher (lua_teams.c core.set_dispatcher) */
    int hooks;                    /* table of the lifecycle hooks the script registered */
    int notify_dispatch;          /* notify dispatcher (core.set_notify) */
    int notify_handlers;          /* table: trigger name -> function */
    int schedule_dispatch;        /* schedule dispatcher (herald.schedule.set_dispatch) */
    int schedule_handlers;        /* table: handler name -> function */
    int decode;                   /* a private cjson.decode for inbound bodies (lua_teams_install) */
    int gated_dispatch;           /* lua_inbound.c's task body, made once per generation */
} vm_entries;
vm_entries *vm_entries_of(vm *v);
/* Pops the value on top of L into *slot (a field of vm_entries_of(v)), releasing what it held. */
void vm_entry_set(vm *v, lua_State *L, int *slot);
/* Pushes an entry's value (nil when unset) and returns its Lua type. */
int vm_entry_push(lua_State *L, int ref);

/* Registry refs made through vm_ref are counted so a closing generation can report leaks. */
int vm_ref(vm *v, lua_State *L);          /* pops the value, returns its ref */
void vm_unref(vm *v, int ref);            /* LUA_NOREF / LUA_REFNIL are ignored */
int vm_ref_count(const vm *v);

/* Hex SHA-256 of the script the generation loaded ("" before vm_load_script). */
const char *vm_script_hash(const vm *v);

/* 1 when vm_load_script refused the script because its top level once stalled the host. */
int vm_quarantined(const vm *v);

/* Lua memory in use by the generation, bytes. */
size_t vm_memory(const vm *v);

int64_t vm_now_ms(void);                  /* monotonic milliseconds */

/* A thread's extra space (LUA_EXTRASPACE) is task.c's: the task running on the thread, NULL on the
 * main thread and on coroutines the script made (vm_new starts it NULL; threads copy it). */
void *vm_thread_task(lua_State *L);
void vm_set_thread_task(lua_State *L, void *task);

/* The files this generation loaded (the script, then each required module), for the watcher. */
const char *vm_file(const vm *v, int i);   /* NULL past the end */

/* One extension slot per family (tasks, timers, charges), each made by its owner on first use:
 * freed by vm_free in slot order (the tasks first, so every task has ended before the others go)
 * and before the state closes. */
enum vm_ext_slot { VM_EXT_TASKS, VM_EXT_TIMERS, VM_EXT_CHARGES, VM_EXT_COUNT };
void *vm_ext(vm *v, enum vm_ext_slot slot);
void vm_set_ext(vm *v, enum vm_ext_slot slot, void *ext, void (*free_fn)(void *ext));

/* Hooks the script registered (0 means the script serves nothing: a failed reload). */
int vm_hook_count(vm *v);

/* Pushes a traceback-adding message handler (used by both doors). */
int vm_traceback(lua_State *L);

/* Memory the host holds on the script's behalf (its queued operations) counts against the cap:
 * a charge that would leave the script less than a 32nd of the cap fails (-1, nothing charged);
 * a release (bytes < 0) always succeeds. */
int vm_charge(vm *v, ptrdiff_t bytes);

/* luaL_traceback(L, of, msg, level) at a cost that does not grow with the script's globals. */
void vm_push_traceback(lua_State *L, lua_State *of, const char *msg, int level);

#endif
