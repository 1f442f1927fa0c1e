/* lua_inbound.h — the notify entry points that hand a trigger to the live generation
 * (lua_inbound.c; an activity comes through activity.h), and the calls for answers it holds. */
#ifndef HERALD_LUA_INBOUND_H
#define HERALD_LUA_INBOUND_H

#include <stddef.h>

struct http_exchange;

/* Handles one GET /api/notify/operations/{id} (answers x exactly once). */
void notify_operation_request(struct http_exchange *x, const char *id, void *arg);
/* Handles one POST /api/notify/{name} (answers x exactly once). */
void notify_request(struct http_exchange *x, const char *name, const char *body, size_t len,
                    void *rt);

/* Sends every answer still waiting for a commit (shutdown, before the server goes); one parked by
 * a failed commit gets 503 if the store is still degraded (its writes are lost). */
void inbound_release_answers(void *rt);
/* The store recovered (its kept writes are committed): sends the answers parked by a failed
 * commit. */
void inbound_store_recovered(void *rt);

#endif
