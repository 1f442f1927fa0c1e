/* lua_timer.h — teams.timer (lua_timer.c): in-memory timers of one generation. */
#ifndef HERALD_LUA_TIMER_H
#define HERALD_LUA_TIMER_H

typedef struct vm vm;

/* Registers the `herald.timer` preload in the generation's state. */
void lua_timer_install(vm *v);
/* Cancels every pending timer of a generation (reload). */
void lua_timer_cancel_all(vm *v);

#endif
