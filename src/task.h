/* task.h — coroutine tasks: spawn, yield bookkeeping, wake-ups through a ready list, cancel.
 * task_resume is the second door into Lua; library callbacks only call task_wake. */
#ifndef HERALD_TASK_H
#define HERALD_TASK_H

typedef struct lua_State lua_State;
typedef struct vm vm;
typedef struct task task;

enum task_status { TASK_OK, TASK_ERROR, TASK_CANCELLED };

/* Runs once when the task ends. On TASK_OK the function's results are on t's thread (task_thread)
 * and nres says how many; on TASK_ERROR message is the error with traceback; on TASK_CANCELLED the
 * reason. Must not run Lua on the task's thread other than reading the results. */
typedef void (*task_done_fn)(task *t, enum task_status status, int nres, const char *message,
                             void *ud);
/* Aborts a pending operation; the op is then owned and freed by the canceller. */
typedef void (*task_cancel_fn)(void *op);
/* Pushes the operation's results onto the woken task's thread, frees the op, returns the count. */
typedef int (*task_push_fn)(lua_State *L, void *op);

/* Starts a task: expects a function and nargs arguments on the vm's main stack (popped). label
 * names the task in logs ("message", "install", ...). Runs it at once until it yields or ends.
 * Returns the task while it is alive (NULL when it already finished: done has run), or NULL with
 * *err set when it could not start (too many tasks; done is not run then; *err malloc'd). */
task *task_spawn(vm *v, const char *label, int nargs, task_done_fn done, void *ud, int *started,
                 char **err);

/* Names the work the next task_spawn runs for (kind and key as in quarantine.h: "activity",
 * "<conversation> <activity id>"), for the watchdog to blame should it stall the host. */
void task_blame(vm *v, const char *kind, const char *key);

/* The running task whose thread is L, or NULL (main thread, or a coroutine the script made). */
task *task_of(lua_State *L);

/* For a yielding binding: records op and its canceller on the current task and yields. Use as
 * `return task_yield(L, op, cancel);`. The caller must have checked task_of(L) != NULL. */
int task_yield(lua_State *L, void *op, task_cancel_fn cancel);

/* Raises a Lua error unless L is a task thread that may yield; what names the calling function. */
task *task_check(lua_State *L, const char *what);

/* Marks t ready to resume with push's results; it resumes on the next loop turn, never inside the
 * caller. Safe from any event-loop callback. The op's canceller is forgotten (the op completed). */
void task_wake(task *t, task_push_fn push, void *op);

/* 1 when script code has already run a slice's worth of time in this turn of the loop (since it
 * last polled its sockets). Whoever starts script code from a timer or a queue defers it then, to a
 * 0 ms timer, which fires after the next poll: each run may take a whole slice, and runs back to
 * back must not hold inbound requests for the sum. The first call of a turn starts its count. */
int task_turn_spent(vm *v);

/* Cancels one task: aborts its pending op and ends it with TASK_CANCELLED and reason. */
void task_cancel(task *t, const char *reason);

/* Cancels every task of v (shutdown, generation close). */
void task_cancel_all(vm *v, const char *reason);

/* Number of tasks alive in v. */
int task_count(const vm *v);

lua_State *task_thread(task *t);
const char *task_label(const task *t);

/* Attaches a value the owner wants back in done (e.g. the inbound request); plain pointer. */
void task_set_ud(task *t, void *ud);

#endif
