/* notify_ops.h — the notify operations that answered 202 and what they ended with, kept for
 * GET /api/notify/operations/{id}: bounded in count, bytes and age. Authenticating the GET and
 * answering it are lua_inbound.c's. */
#ifndef HERALD_NOTIFY_OPS_H
#define HERALD_NOTIFY_OPS_H

#include <stddef.h>
#include <stdint.h>

typedef struct notify_ops notify_ops;

typedef struct notify_op {
    uint64_t id;
    char name[65];                /* the trigger */
    const char *state;            /* "running" | "done" | "failed" | "cancelled" */
    char *result;                 /* done: the handler's result as JSON; else NULL */
    char *error;                  /* failed / cancelled, or a result too large to keep; else NULL */
    int64_t finished_ms;          /* wall ms; 0 while running */
    struct notify_op *prev, *next;
} notify_op;

/* Keeps at most max_done finished operations holding at most max_bytes of results, each for
 * ttl_ms after it finished. Running ones are not counted (there are at most as many as tasks).
 * NULL when out of memory. */
notify_ops *notify_ops_new(size_t max_done, size_t max_bytes, int64_t ttl_ms);
void notify_ops_free(notify_ops *ops);

/* Operation id of trigger name answered 202 and runs on. 0, or -1 when out of memory. */
int notify_ops_begin(notify_ops *ops, uint64_t id, const char *name);

/* Operation id (begun, else ignored) finished at now_ms in state ("done", "failed",
 * "cancelled") with result (JSON, done) or error. The oldest finished ones beyond the bounds go. */
void notify_ops_finish(notify_ops *ops, uint64_t id, const char *state, const char *result,
                       const char *error, int64_t now_ms);

/* The operation id at now_ms, or NULL when unknown or expired (expired ones are dropped first).
 * Valid until the next call on ops. */
const notify_op *notify_ops_get(notify_ops *ops, uint64_t id, int64_t now_ms);

/* Finished operations held (tests, /healthz). */
size_t notify_ops_done_count(const notify_ops *ops);

#endif
