/* lua_timer.c — teams.timer.after / every: in-memory timers of one generation, each firing in a
 * task of its own. A min-heap on (deadline, sequence) keeps equal deadlines FIFO; due timers move
 * to a ready list before any runs, so a 0-second re-arm cannot starve the loop. Durable work
 * belongs in schedules: a reload cancels the old generation's timers. */
#include "lua_timer.h"
#include "lua_util.h"
#include "log.h"
#include "clock.h"
#include "heap.h"
#include "task.h"
#include "vm.h"
#include "quarantine.h"

#include <stdio.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TIMER_MT "herald.timer"

typedef struct timer_handle timer_handle;

typedef struct ltimer {
    heap_node hn;                 /* deadline: monotonic ms */
    int64_t interval;             /* 0: once */
    int ref;                      /* {fn, args...} in the registry; released in timer_free */
    int nargs;
    timer_handle *handle;         /* the script's handle, while it lives */
    char where[160];              /* "file:line" of the callback: the watchdog's culprit key */
} ltimer;

struct timer_handle {
    ltimer *t;                    /* NULL once the timer fired (once) or was cancelled */
};

typedef struct timers {
    vm *v;
    heap pending;                 /* by (deadline, sequence): equal deadlines stay FIFO */
    struct event *ev;
} timers;

static int64_t mono_ms(void) { return clock_mono_ms(); }

static ltimer *of(heap_node *n) { return n ? heap_entry(n, ltimer, hn) : NULL; }

static void arm(timers *ts)
{
    heap_node *top = heap_top(&ts->pending);
    if (!top) {
        clock_timer_del(ts->ev);
        return;
    }
    clock_timer_add(ts->ev, top->deadline - mono_ms());
}

static void timer_free(timers *ts, ltimer *t)
{
    if (t->handle)
        t->handle->t = NULL;
    vm_unref(ts->v, t->ref);
    free(t);
}

static void on_timer_task_done(task *t, enum task_status status, int nres, const char *message,
                               void *ud)
{
    (void)t;
    (void)nres;
    (void)ud;
    if (status == TASK_ERROR)
        log_error("timer handler failed error=%s", message);
}

/* Starts the task of one firing: fn(args...) from the timer's registry table. A timer that fires
 * once is freed before its callback runs (its handle then says it is no longer pending), so a
 * callback that cancels it, or any other timer, frees nothing the caller still holds. */
static void fire(timers *ts, ltimer *t, int once)
{
    lua_State *L = vm_state(ts->v);
    if (!lua_checkstack(L, t->nargs + 2)) {       /* fn and its arguments, unpacked below */
        log_error("timer could not start its task: no stack for %d arguments", t->nargs);
        if (once)
            timer_free(ts, t);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);    /* [spec] */
    int spec = lua_gettop(L);
    int nargs = t->nargs;
    for (int i = 1; i <= nargs + 1; i++)
        lua_rawgeti(L, spec, i);                   /* [spec fn args...] */
    lua_remove(L, spec);                           /* [fn args...] */
    task_blame(ts->v, "timer", t->where);
    if (once)
        timer_free(ts, t);
    int started;
    char *err = NULL;
    task_spawn(ts->v, "timer", nargs, on_timer_task_done, NULL, &started, &err);
    if (!started) {
        log_error("timer could not start its task: %s", err ? err : "?");
        free(err);
    }
}

/* Fires the timers that were due when the callback began, in (deadline, sequence) order, taking
 * each from the heap just before it runs: a callback may cancel any timer, itself included, so
 * nothing is held across a firing (a list of due timers collected up front held freed ones). Timers
 * made or re-armed meanwhile wait for the next turn, and so does the rest once this turn has run a
 * slice of script code (task_turn_spent). */
static void on_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    timers *ts = arg;
    int64_t now = mono_ms();
    uint64_t seq_end = ts->pending.seq;
    heap_node *top;
    while ((top = heap_top(&ts->pending)) && top->deadline <= now && top->seq < seq_end) {
        if (task_turn_spent(ts->v)) {
            clock_timer_add(ts->ev, 0);
            return;
        }
        ltimer *t = of(top);
        int once = !t->interval;
        if (once)
            heap_remove(&ts->pending, &t->hn);
        else
            heap_set(&ts->pending, &t->hn, now + t->interval);   /* a move: it cannot fail */
        fire(ts, t, once);
    }
    arm(ts);
}

static void timers_free(void *p)
{
    timers *ts = p;
    for (heap_node *n; (n = heap_pop(&ts->pending));)
        timer_free(ts, of(n));
    heap_free(&ts->pending);
    if (ts->ev)
        clock_timer_free(ts->ev);
    free(ts);
}

static timers *timers_of(lua_State *L)
{
    vm *v = vm_of(L);
    timers *ts = vm_ext(v, VM_EXT_TIMERS);
    if (!ts) {
        ts = calloc(1, sizeof *ts);
        if (!ts || !(ts->ev = evtimer_new(vm_base(v), on_due, ts))) {
            free(ts);
            luaL_error(L, "out of memory");
        }
        ts->v = v;
        vm_set_ext(v, VM_EXT_TIMERS, ts, timers_free);
    }
    return ts;
}

/* after/every(seconds, fn, ...) → handle | nil, message, "too_many_timers" */
static int start_timer(lua_State *L, int repeat)
{
    lua_Number secs = luaL_checknumber(L, 1);
    luaL_argcheck(L, !isnan(secs) && secs >= 0 && secs <= 86400.0 * 365, 1,
                  "seconds must be between 0 and one year");
    luaL_argcheck(L, !repeat || secs >= 0.001, 1, "an interval must be at least 0.001 s");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    timers *ts = timers_of(L);
    vm *v = ts->v;
    if (heap_len(&ts->pending) >= vm_cfg(v)->max_timers) {
        lua_pushnil(L);
        lua_pushfstring(L, "too many pending timers (%d, limit HERALD_MAX_TIMERS)",
                        heap_len(&ts->pending));
        lua_pushliteral(L, "too_many_timers");
        return 3;
    }
    char where[160];
    lua_Debug ar;
    lua_pushvalue(L, 2);
    if (lua_getinfo(L, ">S", &ar))
        snprintf(where, sizeof where, "%s:%d", ar.short_src, ar.linedefined);
    else
        snprintf(where, sizeof where, "?");
    long long since = quarantine_since(vm_script_hash(v), "timer", where);
    if (since) {
        lua_pushnil(L);
        lua_pushfstring(L, "the timer callback at %s stalled the host before and is quarantined "
                           "until the script changes", where);
        lua_pushliteral(L, "quarantined");
        return 3;
    }
    /* The handle comes first and closed (h->t NULL), with its metatable, as liolib's newprefile
     * makes a file: everything that can raise at the memory cap (the handle, the table of the
     * callback and its arguments, the registry slot) is done before the timer's C memory exists,
     * and a closed handle that is collected or used owns nothing. */
    int nargs = lua_gettop(L) - 2;
    timer_handle *h = lua_newuserdatauv(L, sizeof *h, 0);   /* [secs fn args... h] */
    h->t = NULL;
    luaL_setmetatable(L, TIMER_MT);
    lua_createtable(L, nargs + 1, 0);              /* [secs fn args... h spec] */
    for (int i = 0; i <= nargs; i++) {
        lua_pushvalue(L, 2 + i);
        lua_rawseti(L, -2, i + 1);
    }
    int ref = vm_ref(v, L);                        /* [secs fn args... h] */
    /* from here nothing raises until the timer is in the heap and the handle owns it */
    ltimer *t = calloc(1, sizeof *t);
    if (!t) {
        vm_unref(v, ref);
        return luaL_error(L, "out of memory");
    }
    t->ref = ref;
    t->nargs = nargs;
    memcpy(t->where, where, sizeof where);
    t->interval = repeat ? (int64_t)(secs * 1000.0 + 0.5) : 0;
    if (repeat && t->interval < 1)
        t->interval = 1;
    heap_node_init(&t->hn);
    if (heap_set(&ts->pending, &t->hn, mono_ms() + (int64_t)(secs * 1000.0 + 0.5)) < 0) {
        vm_unref(v, t->ref);
        free(t);
        return luaL_error(L, "out of memory");
    }
    if (heap_top(&ts->pending) == &t->hn)
        arm(ts);
    h->t = t;
    t->handle = h;
    return 1;
}

static int timer_after(lua_State *L) { return start_timer(L, 0); }
static int timer_every(lua_State *L) { return start_timer(L, 1); }

/* handle:cancel() → true if it was pending; idempotent */
static int timer_cancel(lua_State *L)
{
    timer_handle *h = luaL_checkudata(L, 1, TIMER_MT);
    if (!h->t) {
        lua_pushboolean(L, 0);
        return 1;
    }
    timers *ts = vm_ext(vm_of(L), VM_EXT_TIMERS);
    ltimer *t = h->t;
    heap_remove(&ts->pending, &t->hn);
    timer_free(ts, t);
    arm(ts);
    lua_pushboolean(L, 1);
    return 1;
}

static int timer_pending(lua_State *L)
{
    timer_handle *h = luaL_checkudata(L, 1, TIMER_MT);
    lua_pushboolean(L, h->t != NULL);
    return 1;
}

/* A dropped handle does not stop its timer: fire-and-forget timers are common. A closed handle
 * (its timer done, cancelled, or never given one) has nothing to let go. */
static int timer_gc(lua_State *L)
{
    timer_handle *h = luaL_checkudata(L, 1, TIMER_MT);
    if (h->t)
        h->t->handle = NULL;
    return 0;
}

static int timer_count(lua_State *L)
{
    timers *ts = vm_ext(vm_of(L), VM_EXT_TIMERS);
    lua_pushinteger(L, ts ? heap_len(&ts->pending) : 0);
    return 1;
}

static const luaL_Reg timer_methods[] = {
    {"cancel", timer_cancel},
    {"pending", timer_pending},
    {NULL, NULL},
};

static const luaL_Reg timer_funcs[] = {
    {"after", timer_after},
    {"count", timer_count},
    {"every", timer_every},
    {NULL, NULL},
};

static int luaopen_herald_timer(lua_State *L)
{
    if (luaL_newmetatable(L, TIMER_MT)) {
        luaL_newlib(L, timer_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, timer_gc);
        lua_setfield(L, -2, "__gc");
        /* locked: a script that could reach this table could give it a Lua __gc, and finalizers
         * run where the CPU slice cannot stop them */
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    luaL_newlib(L, timer_funcs);
    return 1;
}

void lua_timer_install(vm *v)
{
    lua_util_preload(vm_state(v), "herald.timer", luaopen_herald_timer);
}

void lua_timer_cancel_all(vm *v)
{
    timers *ts = vm_ext(v, VM_EXT_TIMERS);
    if (!ts)
        return;
    int n = heap_len(&ts->pending);
    for (heap_node *hn; (hn = heap_pop(&ts->pending));)
        timer_free(ts, of(hn));
    clock_timer_del(ts->ev);
    if (n)
        log_info("cancelled %d in-memory timer(s) of the old generation", n);
}
