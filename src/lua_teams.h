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

/* Reads the filter table at idx ({tenant, scope, team, user, include_uninstalled}) as
 * teams.conversations does; the strings stay owned by that table. */
struct store_filter;
void lua_teams_read_filter(struct lua_State *L, int idx, struct store_filter *f);

/* store_list_references' callback: appends the reference to the list on top of the stack (ud is
 * the lua_State). */
int lua_teams_append_reference(const struct store_reference *r, void *ud);

#endif
