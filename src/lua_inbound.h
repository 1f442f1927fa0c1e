/* lua_inbound.h — the HTTP entry points that hand an activity or a notify trigger to the live
 * generation (lua_inbound.c), and the shutdown/recovery calls for answers it holds. */
#ifndef HERALD_LUA_INBOUND_H
#define HERALD_LUA_INBOUND_H

#include <stddef.h>

struct http_exchange;

/* Handles one POST /api/messages body (answers x exactly once). rt: the runtime. */
void inbound_activity(struct http_exchange *x, const char *body, size_t len, void *rt);

/* Handles one GET /api/notify/operations/{id} (answers x exactly once). */
void notify_operation_request(struct http_exchange *x, const char *id, void *arg);
/* Handles one POST /api/notify/{name} (answers x exactly once). */
void notify_request(struct http_exchange *x, const char *name, const char *body, size_t len,
                    void *rt);

/* Answers every activity still waiting for signing keys with 503 (shutdown). */
void inbound_abandon_pending(void *rt);

/* Sends every answer still waiting for a commit (shutdown, before the server goes); one parked by
 * a failed commit gets 503 if the store is still degraded (its writes are lost). */
void inbound_release_answers(void *rt);
/* The store recovered (its kept writes are committed): sends the answers parked by a failed
 * commit. */
void inbound_store_recovered(void *rt);

#endif
