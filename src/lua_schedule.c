/* lua_schedule.c — teams.schedule's C side (`herald.schedule`): put/cancel/get/list over the
 * scheduler's rows, and the scheduler_script that runs a due schedule's handler in a task. */
#include "lua_schedule.h"
#include "log.h"
#include "lua_util.h"
#include "quarantine.h"
#include "runtime.h"
#include "scheduler.h"
#include "task.h"
#include "vm.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static scheduler *sched_of(lua_State *L) { return ((runtime *)vm_host(vm_of(L)))->scheduler; }

static int push_string(lua_State *L)
{
    lua_pushstring(L, lua_touserdata(L, 1));
    return 1;
}

/* Pushes s (or fallback when s is NULL) and frees s. Pushing a new string can raise at the memory
 * cap, so it runs in a protected call and the error is raised again only once s is freed. */
static void push_owned(lua_State *L, char *s, const char *fallback)
{
    lua_pushcfunction(L, push_string);            /* [... f]; a light C function: no allocation */
    lua_pushlightuserdata(L, s ? s : (char *)fallback);   /* [... f s] */
    int status = lua_pcall(L, 1, 1, 0);           /* [... string | error] */
    free(s);
    if (status != LUA_OK)
        lua_error(L);
}

/* put{id, handler, kind, expr, tz, conversation, payload (JSON), missed} → next (unix s) |
 * nil, message, "bad_schedule" | nil, message, "store" (the database cannot be written) */
static int sched_put(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    scheduler_entry e = {0};
    e.id = lua_field_string(L, 1, "id");
    e.handler = lua_field_string(L, 1, "handler");
    e.kind = lua_field_string(L, 1, "kind");
    e.expr = lua_field_string(L, 1, "expr");
    e.tz = lua_field_string(L, 1, "tz");
    e.conversation_id = lua_field_string(L, 1, "conversation");
    e.payload = lua_field_string(L, 1, "payload");
    e.missed = lua_field_string(L, 1, "missed");
    luaL_argcheck(L, e.id && *e.id && strlen(e.id) <= 200, 1, "schedule needs an 'id' (1-200 bytes)");
    luaL_argcheck(L, e.handler && *e.handler, 1, "schedule needs a 'handler' name");
    luaL_argcheck(L, e.kind && e.expr, 1, "schedule needs one of 'at', 'every', 'cron'");
    luaL_argcheck(L, !e.missed || strcmp(e.missed, "once") == 0 || strcmp(e.missed, "skip") == 0,
                  1, "'missed' is \"once\" or \"skip\"");
    char *err = NULL;
    int64_t next = scheduler_put(sched_of(L), &e, &err);
    if (next < 0) {
        int store = err && strncmp(err, "store:", 6) == 0;
        lua_pushnil(L);
        push_owned(L, err, "bad schedule");
        if (store)
            lua_pushliteral(L, "store");
        else
            lua_pushliteral(L, "bad_schedule");
        return 3;
    }
    lua_pushinteger(L, next);
    return 1;
}

static int sched_cancel(lua_State *L)
{
    int n = scheduler_cancel(sched_of(L), luaL_checkstring(L, 1));
    if (n < 0)
        return luaL_error(L, "store error cancelling a schedule");
    lua_pushboolean(L, n > 0);
    return 1;
}

static void push_row(lua_State *L, const scheduler_row *r)
{
    const char *const text[] = {r->id, r->handler, r->kind, r->expr, r->tz, r->conversation_id,
                                r->payload, r->missed};
    static const char *const names[] = {"id", "handler", "kind", "expr", "tz", "conversation",
                                        "payload", "missed"};
    lua_createtable(L, 0, 14);
    for (int i = 0; i < 8; i++)
        if (text[i]) {
            lua_pushstring(L, text[i]);
            lua_setfield(L, -2, names[i]);
        }
    if (r->has_next_fire) {
        lua_pushinteger(L, r->next_fire);
        lua_setfield(L, -2, "next_fire");
    }
    if (r->has_last_fire) {
        lua_pushinteger(L, r->last_fire);
        lua_setfield(L, -2, "last_fire");
    }
    if (r->last_result) {
        lua_pushstring(L, r->last_result);
        lua_setfield(L, -2, "last_result");
    }
    lua_pushinteger(L, r->runs);
    lua_setfield(L, -2, "runs");
    lua_pushboolean(L, r->waiting_for_handler);
    lua_setfield(L, -2, "waiting_for_handler");
    if (r->paused) {
        lua_pushstring(L, r->paused);
        lua_setfield(L, -2, "paused");
    }
}

static int push_one(lua_State *L)
{
    scheduler_row r;
    if (scheduler_query_next(lua_touserdata(L, 1), &r))
        push_row(L, &r);
    else
        lua_pushnil(L);
    return 1;
}

static int push_all(lua_State *L)
{
    scheduler_query *q = lua_touserdata(L, 1);
    scheduler_row r;
    lua_newtable(L);
    int n = 0;
    while (scheduler_query_next(q, &r)) {
        push_row(L, &r);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

/* Pushes what fn makes of the query q. A push can raise at the memory cap, and a query left
 * stepping holds its read snapshot and hands its remaining rows to the next call; so fn runs in a
 * protected call, and the error is raised again once q is ended. */
static int push_query(lua_State *L, scheduler_query *q, lua_CFunction fn)
{
    lua_pushcfunction(L, fn);                     /* [... fn]; a light C function: no allocation */
    lua_pushlightuserdata(L, q);                  /* [... fn q] */
    int status = lua_pcall(L, 1, 1, 0);           /* [... result | error] */
    scheduler_query_end(q);
    if (status != LUA_OK)
        lua_error(L);
    return 1;
}

int lua_schedule_push_get(lua_State *L, scheduler *s, const char *id)
{
    return push_query(L, scheduler_get(s, id), push_one);
}

int lua_schedule_push_list(lua_State *L, scheduler *s, const char *handler, const char *conv,
                           const char *after, int limit)
{
    return push_query(L, scheduler_list(s, handler, conv, after, limit), push_all);
}

static int sched_get(lua_State *L)
{
    return lua_schedule_push_get(L, sched_of(L), luaL_checkstring(L, 1));
}

static int sched_list(lua_State *L)
{
    return lua_schedule_push_list(L, sched_of(L), luaL_optstring(L, 1, NULL),
                                  luaL_optstring(L, 2, NULL), luaL_optstring(L, 3, NULL),
                                  (int)luaL_optinteger(L, 4, 200));
}

static int sched_set_dispatch(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    vm_entry_set(vm_of(L), L, &vm_entries_of(vm_of(L))->schedule_dispatch);
    return 0;
}

static int sched_set_handlers(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    vm_entry_set(vm_of(L), L, &vm_entries_of(vm_of(L))->schedule_handlers);
    return 0;
}

static const luaL_Reg sched_funcs[] = {
    {"cancel", sched_cancel},
    {"get", sched_get},
    {"list", sched_list},
    {"put", sched_put},
    {"set_dispatch", sched_set_dispatch},
    {"set_handlers", sched_set_handlers},
    {NULL, NULL},
};

static int luaopen_herald_schedule(lua_State *L)
{
    luaL_newlib(L, sched_funcs);
    return 1;
}

void lua_schedule_install(vm *v)
{
    lua_util_preload(vm_state(v), "herald.schedule", luaopen_herald_schedule);
}

/* ---- the scheduler's script side --------------------------------------------------------- */

typedef struct fire_ctx {
    scheduler *s;
    char id[256];
} fire_ctx;

static void on_fire_done(task *t, enum task_status status, int nres, const char *message, void *ud)
{
    (void)t;
    (void)nres;
    fire_ctx *f = ud;
    if (f && status != TASK_OK)
        scheduler_fire_failed(f->s, f->id, message);
    free(f);
}

/* 1 when the live generation has a handler registered under name. */
static int has_handler(runtime *rt, const char *name)
{
    lua_State *L = vm_state(rt->vm);
    int found = 0;
    if (vm_entry_push(L, vm_entries_of(rt->vm)->schedule_handlers) == LUA_TTABLE)
        found = lua_getfield(L, -1, name) == LUA_TFUNCTION, lua_pop(L, 1);
    lua_pop(L, 1);
    return found;
}

static int turn_spent(runtime *rt) { return task_turn_spent(rt->vm); }

static int quarantined(runtime *rt, const char *id)
{
    return quarantine_has(vm_script_hash(rt->vm), "schedule", id);
}

/* Runs the dispatcher as a task: dispatch(handler, id, payload_json, conversation, due, now). */
static void fire(runtime *rt, scheduler *s, const scheduler_firing *fg)
{
    vm *v = rt->vm;
    lua_State *L = vm_state(v);
    if (vm_entry_push(L, vm_entries_of(v)->schedule_dispatch) != LUA_TFUNCTION) {
        lua_pop(L, 1);
        return;
    }
    lua_pushstring(L, fg->handler);
    lua_pushstring(L, fg->id);
    if (fg->payload) lua_pushstring(L, fg->payload); else lua_pushnil(L);
    if (fg->conversation_id) lua_pushstring(L, fg->conversation_id); else lua_pushnil(L);
    lua_pushinteger(L, fg->due);
    lua_pushinteger(L, fg->now);
    fire_ctx *f = calloc(1, sizeof *f);
    if (f) {
        f->s = s;
        snprintf(f->id, sizeof f->id, "%s", fg->id);
    }
    int started;
    char *err = NULL;
    task_blame(v, "schedule", fg->id);
    task_spawn(v, "schedule", 6, on_fire_done, f, &started, &err);
    if (!started) {
        log_error("schedule %s could not start its task: %s", fg->id, err ? err : "?");
        free(err);
        free(f);
    }
}

const scheduler_script lua_schedule_script = {
    .has_handler = has_handler,
    .turn_spent = turn_spent,
    .quarantined = quarantined,
    .fire = fire,
};
