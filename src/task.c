/* task.c — coroutine tasks of one generation: spawn, yield with a pending op, wake through a
 * ready list on the next loop turn, resume (the second door into Lua), finish, cancel. */
#include "task.h"
#include "clock.h"
#include "log.h"
#include "vm.h"

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

enum task_state { TASK_RUNNING, TASK_SUSPENDED, TASK_READY, TASK_DEAD };

struct task {
    vm *v;
    lua_State *T;
    int ref;                      /* registry ref anchoring T; released in finish() */
    const char *label;            /* static string */
    enum task_state state;
    task_done_fn done;
    void *ud;
    void *op;                     /* pending operation while SUSPENDED */
    task_cancel_fn cancel;
    task_push_fn push;            /* results to push while READY */
    void *push_op;
    int resuming;                 /* set only while task_resume runs T */
    int killed;                   /* the CPU slice ended it: hooks are off on T (vm_slice_leave) */
    struct event *deadline;       /* armed at the first yield: a task never waits forever */
    int64_t started_ms;
    char *culprit;                /* "kind\tkey": what the watchdog names if this task stalls */
    task *prev, *next;            /* all live tasks */
    task *rprev, *rnext;          /* ready list */
};

typedef struct task_list {
    vm *v;
    task *head;
    int count;
    task *ready_head, *ready_tail;
    struct event *ready_ev;
    char *blame;                  /* culprit for the next task_spawn (task_blame) */
} task_list;

static void ready_cb(evutil_socket_t fd, short what, void *arg);

static task_list *list_new(vm *v)
{
    task_list *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->v = v;
    l->ready_ev = event_new(vm_base(v), -1, 0, ready_cb, l);
    if (!l->ready_ev) {
        free(l);
        return NULL;
    }
    return l;
}

/* vm_free closes the extension slots in order, tasks first: every task ends (its done callback
 * runs) while the timers and charges it may touch are still there, and before the state closes. */
static void list_close(void *ext)
{
    task_list *l = ext;
    task_cancel_all(l->v, "the Lua generation is closing");
    clock_timer_free(l->ready_ev);
    free(l->blame);
    free(l);
}

/* The generation's task bookkeeping, one of its extension slots (vm.c knows nothing of tasks),
 * made on first use. NULL when it cannot be made. */
static task_list *list_of(vm *v)
{
    task_list *l = vm_ext(v, VM_EXT_TASKS);
    if (!l && (l = list_new(v)))
        vm_set_ext(v, VM_EXT_TASKS, l, list_close);
    return l;
}

/* The loop's current turn, as libevent's cached time names it: the cache changes only when the
 * loop polls its sockets, so while it stays the same, callbacks are running back to back. */
static struct timeval turn_tv;
static int64_t turn_start_ms;

int task_turn_spent(vm *v)
{
    struct timeval tv;
    event_base_gettimeofday_cached(vm_base(v), &tv);
    if (tv.tv_sec != turn_tv.tv_sec || tv.tv_usec != turn_tv.tv_usec) {
        turn_tv = tv;
        turn_start_ms = clock_mono_ms();
        return 0;
    }
    return clock_mono_ms() - turn_start_ms >= vm_cfg(v)->slice_ms;
}

task *task_of(lua_State *L) { return vm_thread_task(L); }
lua_State *task_thread(task *t) { return t->T; }
const char *task_label(const task *t) { return t->label; }
void task_set_ud(task *t, void *ud) { t->ud = ud; }
int task_count(const vm *v)
{
    task_list *l = vm_ext((vm *)v, VM_EXT_TASKS);
    return l ? l->count : 0;
}

task *task_check(lua_State *L, const char *what)
{
    task *t = task_of(L);
    if (!t || t->T != L || !lua_isyieldable(L)) {
        /* level 2: the script's line, past the teams.* wrapper that called into C */
        luaL_where(L, 2);
        lua_pushfstring(L, "%s must be called from a handler (a task), not at load time or inside "
                           "a coroutine the script created", what);
        lua_concat(L, 2);
        lua_error(L);
    }
    return t;
}

static void ready_remove(task_list *l, task *t)
{
    if (t->rprev) t->rprev->rnext = t->rnext; else l->ready_head = t->rnext;
    if (t->rnext) t->rnext->rprev = t->rprev; else l->ready_tail = t->rprev;
    t->rprev = t->rnext = NULL;
}

/* Ends t: the owner's done runs while the results are still on T, then T is released. */
static void finish(task *t, enum task_status status, int nres, const char *message)
{
    task_list *l = vm_ext(t->v, VM_EXT_TASKS);
    t->state = TASK_DEAD;
    if (t->done)
        t->done(t, status, nres, message, t->ud);
    if (status != TASK_OK && t->killed) {
        /* killed inside Lua's hook, which left hooks off on T: its <close> handlers would run
         * there with no slice to stop them */
        log_warn("the <close> handlers of task=%s are not run: the CPU slice killed it", t->label);
    } else if (status != TASK_OK) {
        /* A handler's <close> variables are closed however it ends: Lua leaves them pending when
         * a coroutine errors or is abandoned. They are script code, so under a slice like any
         * other. After an error the reset returns that error again, already logged by the owner.
         * Once this turn of the loop has run a slice of script code they get none (a reload
         * closing a thousand tasks whose handlers loop held the loop for a thousand slices). */
        vm_slice saved;
        vm_slice_enter(t->v, t->T, task_turn_spent(t->v) ? 0 : vm_cfg(t->v)->slice_ms, t->culprit,
                       &saved);
        if (lua_resetthread(t->T) != LUA_OK && status == TASK_CANCELLED)
            log_warn("a <close> handler of cancelled task=%s failed: %s", t->label,
                     lua_type(t->T, -1) == LUA_TSTRING ? lua_tostring(t->T, -1) : "(not a string)");
        vm_slice_leave(t->v, &saved);
    }
    if (t->deadline)
        clock_timer_free(t->deadline);
    vm_set_thread_task(t->T, NULL);
    if (t->prev) t->prev->next = t->next; else l->head = t->next;
    if (t->next) t->next->prev = t->prev;
    l->count--;
    vm_unref(t->v, t->ref);
    free(t->culprit);
    free(t);
}

/* Runs T with nargs values on its stack until it yields or ends. Returns 1 when t ended (and
 * has been freed), 0 when it is waiting. */
static int resume(task *t, int nargs)
{
    vm *v = t->v;
    lua_State *L = vm_state(v);
    int nres = 0;
    t->state = TASK_RUNNING;
    t->resuming = 1;
    vm_slice saved;
    vm_slice_enter(v, t->T, vm_cfg(v)->slice_ms, t->culprit, &saved);
    int rc = lua_resume(t->T, L, nargs, &nres);
    t->killed = vm_slice_leave(v, &saved) && rc != LUA_OK && rc != LUA_YIELD;
    t->resuming = 0;
    if (rc == LUA_YIELD) {
        if (t->op || t->state == TASK_READY) {
            if (t->state == TASK_RUNNING)
                t->state = TASK_SUSPENDED;
            return 0;
        }
        /* coroutine.yield() at the handler's own level: nothing will ever wake it */
        lua_pop(t->T, nres);
        lua_pushliteral(t->T, "a handler yielded outside a teams call (coroutine.yield at the "
                              "top level of a task is not allowed)");
        rc = LUA_ERRRUN;
    }
    if (rc == LUA_OK) {
        finish(t, TASK_OK, nres, NULL);
        return 1;
    }
    const char *msg = lua_tostring(t->T, -1);
    if (!msg)
        msg = lua_pushfstring(t->T, "(error object is a %s value)", luaL_typename(t->T, -1));
    vm_push_traceback(L, t->T, msg, 0);       /* main: [traceback] */
    finish(t, TASK_ERROR, 0, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 1;
}

void task_blame(vm *v, const char *kind, const char *key)
{
    task_list *l = list_of(v);
    if (!l)
        return;
    free(l->blame);
    if (asprintf(&l->blame, "%s\t%s", kind, key ? key : "") < 0)
        l->blame = NULL;
}

task *task_spawn(vm *v, const char *label, int nargs, task_done_fn done, void *ud, int *started,
                 char **err)
{
    task_list *l = list_of(v);
    lua_State *L = vm_state(v);
    *started = 0;
    if (!l) {
        lua_pop(L, nargs + 1);
        *err = strdup("out of memory");
        return NULL;
    }
    char *blame = l->blame;
    l->blame = NULL;
    if (l->count >= vm_cfg(v)->max_tasks) {
        free(blame);
        lua_pop(L, nargs + 1);
        if (asprintf(err, "too many tasks (%d alive, limit HERALD_MAX_TASKS)", l->count) < 0)
            *err = NULL;
        return NULL;
    }
    task *t = calloc(1, sizeof *t);
    if (!t) {
        free(blame);
        lua_pop(L, nargs + 1);
        *err = strdup("out of memory");
        return NULL;
    }
    if (!blame && asprintf(&blame, "task\t%s", label) < 0)
        blame = NULL;
    t->culprit = blame;
    lua_State *T = lua_newthread(L);          /* main: [fn args... T] */
    /* a new thread has room for LUA_MINSTACK values, and lua_xmove does not check: a timer with
     * hundreds of arguments wrote past the thread's stack (liblua is not instrumented by ASan) */
    if (!lua_checkstack(T, nargs + 1 + LUA_MINSTACK)) {
        free(blame);
        free(t);
        lua_pop(L, nargs + 2);
        *err = strdup("too many arguments for a new task");
        return NULL;
    }
    t->ref = vm_ref(v, L);                    /* main: [fn args...] */
    lua_xmove(L, T, nargs + 1);               /* main: [], T: [fn args...] */
    vm_set_thread_task(T, t);
    t->v = v;
    t->T = T;
    t->started_ms = clock_mono_ms();
    t->label = label;
    t->done = done;
    t->ud = ud;
    t->next = l->head;
    if (l->head)
        l->head->prev = t;
    l->head = t;
    l->count++;
    *started = 1;
    return resume(t, nargs) ? NULL : t;
}

/* Continuation of every yielding binding. The sandbox's coroutine.resume refuses a handler's
 * coroutine; should a resume that did not come from task.c get here anyway, it yields straight back
 * and the handler stays parked on its operation. (Raising an error instead let a pcall in the
 * handler catch it and run on under the script's resume, where its next teams call replaced the
 * pending operation, and the first one later woke a freed task.) */
static int yield_done(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    task *t = task_of(L);
    if (!t || !t->resuming) {
        lua_settop(L, (int)ctx);              /* drop what the script passed to its resume */
        return lua_yieldk(L, 0, ctx, yield_done);
    }
    return lua_gettop(L) - (int)ctx;
}

static void on_task_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    task *t = arg;
    if (task_turn_spent(t->v)) {              /* a storm of deadlines: one slice of <close> a turn */
        clock_timer_add(t->deadline, 0);
        return;
    }
    char reason[128];
    snprintf(reason, sizeof reason, "the task ran past its deadline of %ld ms (HERALD_TASK_DEADLINE_MS)",
             vm_cfg(t->v)->task_deadline_ms);
    log_warn("%s task=%s", reason, t->label);
    task_cancel(t, reason);
}

int task_yield(lua_State *L, void *op, task_cancel_fn cancel)
{
    task *t = task_of(L);
    long limit = vm_cfg(t->v)->task_deadline_ms;
    if (!t->deadline && limit > 0 && (t->deadline = evtimer_new(vm_base(t->v), on_task_deadline, t))) {
        long left = limit - (long)(clock_mono_ms() - t->started_ms);
        if (left < 0)
            left = 0;
        clock_timer_add(t->deadline, left);
    }
    t->op = op;
    t->cancel = cancel;
    return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), yield_done);
}

void task_wake(task *t, task_push_fn push, void *op)
{
    task_list *l = vm_ext(t->v, VM_EXT_TASKS);
    t->op = NULL;
    t->cancel = NULL;
    t->push = push;
    t->push_op = op;
    t->state = TASK_READY;
    t->rprev = l->ready_tail;
    t->rnext = NULL;
    if (l->ready_tail) l->ready_tail->rnext = t; else l->ready_head = t;
    l->ready_tail = t;
    event_active(l->ready_ev, 0, 0);
}

/* Resumes what was ready when the callback started; tasks woken meanwhile wait for the next
 * turn, so a task that wakes itself in a loop cannot starve inbound requests. Once this turn has
 * run a slice of script code the rest wait for a later turn too (a timer, so the loop polls its
 * sockets first): each may run a whole slice, and a hundred woken at once held the loop for a
 * hundred slices. */
static void ready_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    task_list *l = arg;
    task *last = l->ready_tail;
    while (l->ready_head) {
        if (task_turn_spent(l->v)) {
            clock_timer_add(l->ready_ev, 0);
            return;
        }
        task *t = l->ready_head;
        int was_last = (t == last);
        ready_remove(l, t);
        task_push_fn push = t->push;
        void *op = t->push_op;
        t->push = NULL;
        t->push_op = NULL;
        int n = push(t->T, op);
        resume(t, n);
        if (was_last)
            break;
    }
    if (l->ready_head)
        event_active(l->ready_ev, 0, 0);
}

void task_cancel(task *t, const char *reason)
{
    task_list *l = vm_ext(t->v, VM_EXT_TASKS);
    if (t->state == TASK_RUNNING || t->state == TASK_DEAD)
        return;                               /* a task cannot be cancelled from inside itself */
    if (t->state == TASK_SUSPENDED && t->op && t->cancel) {
        t->cancel(t->op);
        t->op = NULL;
    } else if (t->state == TASK_READY) {
        ready_remove(l, t);
        if (t->push)
            t->push(NULL, t->push_op);        /* frees the op */
        t->push = NULL;
        t->push_op = NULL;
    }
    finish(t, TASK_CANCELLED, 0, reason);
}

void task_cancel_all(vm *v, const char *reason)
{
    /* a done callback may end other tasks, so rescan from the head after each cancel */
    task_list *l = vm_ext(v, VM_EXT_TASKS);
    if (!l)
        return;
    for (;;) {
        task *t = l->head;
        while (t && t->state == TASK_RUNNING)
            t = t->next;
        if (!t)
            return;
        task_cancel(t, reason);
    }
}
