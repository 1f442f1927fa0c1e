/* lua_teams.h — the `herald.core` binding (lua_teams.c) that the teams module is built on: its
 * install into a generation, and the reference table it shares with the test kit. */
#ifndef HERALD_LUA_TEAMS_H
#define HERALD_LUA_TEAMS_H

typedef struct vm vm;
struct lua_State;
struct store_reference;

/* Registers the `herald.core` preload (and the timer and schedule bindings it relies on) in the
 * generation's state. */
void lua_teams_install(vm *v);

/* Pushes a stored reference as the table teams.conversation returns. */
void lua_teams_push_reference(struct lua_State *L, const struct store_reference *r);

#endif
