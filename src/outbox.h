/* outbox.h — the only way out: every create/send/reply/update/delete is a durable row before its
 * first attempt, then paced by the governor, attempted, retried and finished in a final state. */
#ifndef HERALD_OUTBOX_H
#define HERALD_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct trust;
typedef struct store store;
typedef struct connector connector;
typedef struct outbox outbox;

enum outbox_kind { OUTBOX_SEND, OUTBOX_REPLY, OUTBOX_UPDATE, OUTBOX_DELETE, OUTBOX_CREATE };

/* flags */
#define OUTBOX_SEND_IF_MISSING 1  /* update of an unknown key sends a new message instead */

typedef struct outbox_config {
    int governor;                 /* 0: no pacing (benchmarks against a null connector) */
    int tenant_rps;               /* per app per tenant, default 50 */
    int max_attempts;             /* default 8 */
    int64_t max_age_ms;           /* an operation older than this expires, default 1 h */
    int64_t backoff_base_ms;      /* first retry delay, default 1000 */
    int64_t backoff_max_ms;       /* default 60000 */
    int64_t retention_ms;         /* finished operations are kept this long, default 7 days */
    int64_t max_in_flight;        /* attempts out at once across all conversations, default 256 */
    const struct trust *trust;    /* seals new rows' service URLs; NULL in dev mode */
    /* outstanding (queued or in flight) operations outbox_admit allows: per queue (conversation),
     * per tenant and in total; defaults 1000, 10000, 50000 */
    int64_t max_queued_per_conversation, max_queued_per_tenant, max_queued_total;
} outbox_config;

struct config;
/* The outbox settings of a loaded configuration (every caller that builds a runtime maps them
 * here, so the kit, check and run cannot drift); trust is the caller's to set. */
outbox_config outbox_config_from(const struct config *c);

typedef struct outbox_spec {
    enum outbox_kind kind;
    const char *conversation_id;  /* NULL for create */
    const char *service_url;
    const char *tenant_id;
    const char *target_id;        /* reply-to / updated / deleted activity id */
    const char *msg_key;          /* send: record under this key; update/delete: resolve it */
    const char *queue;            /* ordering key; defaults to conversation_id */
    const char *body;             /* JSON */
    size_t body_len;
    int flags;
    const char *category;         /* recorded for frequency caps and reports */
    int64_t not_before_ms;        /* wall ms: first attempt no earlier (a deferred message), 0 now */
    /* When outbox_enqueue succeeds, release(release_ud, outbox_spec_bytes(spec)) runs once when
     * the operation's memory is freed (final state or outbox_free): a script is charged for it. */
    void (*release)(void *ud, size_t bytes);
    void *release_ud;
} outbox_spec;

typedef struct outbox_result {
    int64_t op_id;
    const char *state;            /* sent | blocked | not_found | rejected | expired | failed */
    const char *code;             /* NULL when sent; else a stable code (blocked, not_found, ...) */
    const char *message;
    long status;                  /* last HTTP status, 0 if none */
    const char *activity_id;      /* sent message / created thread's first message */
    const char *conversation_id;  /* create */
    const char *service_url;      /* create, when the connector named one */
    int attempts;                 /* requests sent, libcurl's own re-sends included */
} outbox_result;

typedef void (*outbox_done_fn)(const outbox_result *res, void *ud);

/* Runs for every operation that reaches a final state, waited on or not, this run or a previous
 * one's (broadcast jobs follow their recipients this way). kind is the operation's. */
typedef void (*outbox_hook_fn)(enum outbox_kind kind, const outbox_result *res, void *ud);
void outbox_set_hook(outbox *o, outbox_hook_fn fn, void *ud);

/* Frequency caps: operations to conversation in category within the last window_ms that did not
 * fail; *oldest_ms (wall) is the first of them. -1 on a store error. */
int outbox_count_category(outbox *o, const char *conversation_id, const char *category,
                          int64_t window_ms, int64_t *oldest_ms);

/* Loads queued operations left by a previous run and schedules them. NULL with *err on failure. */
outbox *outbox_new(struct event_base *base, store *st, connector *conn, const outbox_config *cfg,
                   char **err);
void outbox_free(outbox *o);

/* The waited-on operation, valid until its done runs. */
typedef struct outbox_watch outbox_watch;

/* Persists the operation (in the current batch) and schedules it once the batch commits. done
 * (optional) runs once with the final result; *watch (when watch is non-NULL) is the handle to
 * stop waiting. Returns the operation id, or -1 with *err set. */
int64_t outbox_enqueue(outbox *o, const outbox_spec *spec, outbox_done_fn done, void *ud,
                       outbox_watch **watch, char **err);

/* The bounds on what is outstanding, asked before a script's operation is queued (a broadcast's
 * are bounded by its window): 1 when spec may be queued now, else 0 with *why (malloc'd) naming
 * the bound that is full. Operations resumed after a restart count too. */
int outbox_admit(outbox *o, const outbox_spec *spec, char **why);

/* The memory an operation like spec holds in herald until it is final. */
size_t outbox_spec_bytes(const outbox_spec *spec);

/* Stops waiting (its task went away) before done ran; the operation itself goes on. */
void outbox_unwatch(outbox_watch *w);

/* Commits the open batch and starts what it made durable. Called at the end of a loop turn. A
 * failed commit leaves the batch's operations unattempted until the store recovers (see
 * store.h, Durability): the outbox then probes the store with backoff (100 ms doubling to 2 s),
 * starts no attempt meanwhile, and on success starts them all. */
void outbox_commit(outbox *o);
/* Opens (if needed) the batch and schedules its commit for the end of this loop turn. */
void outbox_touch_batch(outbox *o);

/* fn(ud, 0) when the store stops taking writes, fn(ud, 1) when it takes them again (work held
 * meanwhile, such as due schedules and broadcast recipients, can go on). */
void outbox_on_store_change(outbox *o, void (*fn)(void *ud, int writable), void *ud);
/* How long the store has not been writable, in ms; -1 while it is. */
int64_t outbox_store_degraded_ms(const outbox *o);

/* A conversation was heard from: clears its blocked/gone mark. */
void outbox_heard_from(outbox *o, const char *conversation_id);
/* Returns "blocked" / "gone" / NULL. */
const char *outbox_ledger_state(outbox *o, const char *conversation_id);
/* The outbox's tables, for reads such as store_ledger_list (teams.ledger). */
struct store_outbox *outbox_tables(outbox *o);

/* The states an operation is in, in report order. This is the one definition /healthz, /metrics
 * and `herald outbox` count by (README "Outbox states"); queued includes operations in flight. */
enum outbox_state {
    OUTBOX_QUEUED, OUTBOX_SENT, OUTBOX_BLOCKED, OUTBOX_NOT_FOUND, OUTBOX_REJECTED, OUTBOX_EXPIRED,
    OUTBOX_FAILED, OUTBOX_NSTATES
};
extern const char *const outbox_state_names[OUTBOX_NSTATES];
/* The index of the state called name, or -1. */
int outbox_state_index(const char *name);

typedef struct outbox_stats {
    /* operations in the database in each state: counted at start, then kept by enqueue, final
     * states and the retention purge; what herald wrote or keeps for replay (store.h) */
    uint64_t states[OUTBOX_NSTATES];
    uint64_t finished[OUTBOX_NSTATES];   /* this run's operations that reached each final state */
    uint64_t queued, in_flight, sent, failed, retries, throttled;   /* sent, failed: this run's */
    uint64_t resends;             /* copies libcurl sent again by itself: possible duplicates */
    int64_t commits;
    uint64_t store_failures;      /* times the store stopped taking writes */
} outbox_stats;
void outbox_get_stats(const outbox *o, outbox_stats *out);

/* Milliseconds to wait for a Retry-After value (delta seconds or an HTTP date in any RFC 9110
 * form); -1 if unusable. A wait past OUTBOX_RETRY_AFTER_MAX_S is read as that long. */
#define OUTBOX_RETRY_AFTER_MAX_S 86400LL
int64_t outbox_parse_retry_after(const char *v, int64_t now_wall_ms);

#endif
