/* lua_schedule.h — teams.schedule's C side (lua_schedule.c): the `herald.schedule` binding and the
 * scheduler_script that runs due schedules in the live generation. */
#ifndef HERALD_LUA_SCHEDULE_H
#define HERALD_LUA_SCHEDULE_H

#include "scheduler.h"

typedef struct vm vm;
struct lua_State;

/* Registers the `herald.schedule` preload in the generation's state. */
void lua_schedule_install(vm *v);

/* Handlers looked up in, and tasks spawned on, the runtime's live generation (rt->vm). */
extern const scheduler_script lua_schedule_script;

/* Push one schedule as a table (or nil) / an array of up to limit schedules, as teams.schedule.get
 * and .list give them. May raise (the memory cap), and then only once the read is ended. */
int lua_schedule_push_get(struct lua_State *L, scheduler *s, const char *id);
int lua_schedule_push_list(struct lua_State *L, scheduler *s, const char *handler, const char *conv,
                           const char *after, int limit);

#endif
