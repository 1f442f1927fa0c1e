/* outbox.c — the durable lifecycle of outbound operations: enqueue, commit, attempt, retry with
 * backoff and Retry-After, finish, purge and restart; one FIFO queue per conversation (order kept,
 * one attempt in flight each) and a min-heap of queues by the time they may next go. When they may
 * go is the governor's (governor.h); rows are written in the store's batch, attempts follow commit. */
#include "outbox.h"
#include "clock.h"
#include "config.h"
#include "connector.h"
#include "governor.h"
#include "heap.h"
#include "ledger_cache.h"
#include "log.h"
#include "store.h"
#include "store_outbox.h"
#include "strhash.h"
#include "trust.h"

#include <event2/event.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef struct ob_queue ob_queue;

typedef struct ob_op {
    int64_t id;
    enum outbox_kind kind;
    char *conversation_id, *service_url, *target_id, *msg_key, *body;
    char *seal;                   /* the row's seal of service_url, or NULL (see seal_url) */
    size_t body_len;
    int flags;
    int attempts;
    int64_t due_mono;             /* not before this (retry backoff) */
    int64_t expires_wall;
    int committed;                /* its row is durable: it may be attempted */
    int counted;                  /* in its queue's and tenant's outstanding counts */
    void (*release)(void *ud, size_t bytes);
    void *release_ud;
    size_t charged;
    outbox_done_fn done;
    void *ud;
    connector_call *call;
    ob_queue *q;
    struct ob_op *next;           /* queue FIFO */
    struct ob_op *unext;          /* uncommitted list */
} ob_op;

struct ob_queue {
    char *key;
    outbox *o;
    ob_op *head, *tail;
    int in_flight;
    int64_t outstanding;          /* operations in it (outbox_admit) */
    heap_node hn;                 /* in o->ready: keyed by the time it may go (monotonic) */
    ob_queue *due_next;           /* on_heap_timer's list of queues it popped */
    int deferred;                 /* in the outbox's reschedule list */
    ob_queue *dnext;
    int held;                     /* ready, but the store cannot record an attempt's outcome */
    ob_queue *held_next;
    gov_conv gc;                  /* its pacing (governor.h), joined to its tenant */
    ob_queue *hnext;              /* hash chain */
};

static ob_queue *conv_queue(gov_conv *c)
{
    return (ob_queue *)(void *)((char *)c - offsetof(ob_queue, gc));
}

#define NBUCKETS 65536

struct outbox {
    struct event_base *base;
    store *st;
    store_outbox *so;
    connector *conn;
    outbox_config cfg;
    ob_queue **queues;            /* hash by key */
    governor *gov;                /* pacing: tenants, windows, attempt slots */
    ledger_cache *ledger;         /* blocked/gone marks */
    heap ready;                   /* queues waiting for their time, by (ready time, sequence) */
    struct event *heap_timer, *commit_ev;
    ob_op *uncommitted, *uncommitted_tail;
    ob_queue *resched;            /* queues to schedule on the next turn */
    struct event *resched_ev;
    struct event *purge_timer;
    struct event *store_timer;    /* probes the store while it is degraded */
    int64_t store_backoff_ms;
    int64_t degraded_since;       /* monotonic ms of the failure, 0 while the store is writable */
    ob_queue *held_head, *held_tail;  /* queues waiting for the store, FIFO */
    void (*store_fn)(void *ud, int writable);
    void *store_ud;
    outbox_stats stats;
    outbox_hook_fn hook;
    void *hook_ud;
};

void outbox_set_hook(outbox *o, outbox_hook_fn fn, void *ud)
{
    o->hook = fn;
    o->hook_ud = ud;
}

int outbox_count_category(outbox *o, const char *conversation_id, const char *category,
                          int64_t window_ms, int64_t *oldest_ms)
{
    char *err = NULL;
    int n = store_outbox_count_category(o->so, conversation_id, category,
                                        clock_wall_ms() - window_ms, oldest_ms, &err);
    if (n < 0) {
        log_error("outbox: %s", err);
        free(err);
    }
    return n;
}

static int64_t mono_ms(void) { return clock_mono_ms(); }
static int64_t wall_ms(void) { return clock_wall_ms(); }

static unsigned hash_str(const char *s) { return strhash(s, NBUCKETS - 1); }

static const char *const kind_names[] = {"send", "reply", "update", "delete", "create"};

/* ---- heap of queues by the time they may go (heap.h) -------------------------------------- */

static ob_queue *heap_queue(heap_node *n) { return n ? heap_entry(n, ob_queue, hn) : NULL; }

static void arm_heap_timer(outbox *o)
{
    heap_node *top = heap_top(&o->ready);
    if (!top) {
        clock_timer_del(o->heap_timer);
        return;
    }
    clock_timer_add(o->heap_timer, top->deadline - mono_ms());
}

/* ---- queues and the ledger ---------------------------------------------------------------- */

static ob_queue *queue_find(outbox *o, const char *key)
{
    for (ob_queue *q = o->queues[hash_str(key)]; q; q = q->hnext)
        if (strcmp(q->key, key) == 0)
            return q;
    return NULL;
}

static ob_queue *queue_get(outbox *o, const char *key, const char *tenant)
{
    ob_queue *q = queue_find(o, key);
    if (q)
        return q;
    unsigned b = hash_str(key);
    q = calloc(1, sizeof *q);
    if (!q || !(q->key = strdup(key))) {
        free(q);
        return NULL;
    }
    heap_node_init(&q->hn);
    q->o = o;
    if (gov_conv_init(o->gov, &q->gc, tenant) < 0) {
        free(q->key);
        free(q);
        return NULL;
    }
    q->hnext = o->queues[b];
    o->queues[b] = q;
    return q;
}

/* An idle, empty queue whose windows have all passed holds nothing worth its memory. */
static void queue_maybe_drop(outbox *o, ob_queue *q)
{
    if (q->head || q->in_flight || q->deferred || q->held || heap_linked(&q->hn) ||
        !gov_conv_idle(&q->gc, mono_ms()))
        return;
    unsigned b = hash_str(q->key);
    for (ob_queue **pp = &o->queues[b]; *pp; pp = &(*pp)->hnext)
        if (*pp == q) {
            *pp = q->hnext;
            break;
        }
    gov_conv_free(&q->gc);
    free(q->key);
    free(q);
}

static int load_ledger_entry(const char *conv, const char *state, void *ud)
{
    ledger_cache_set(ud, conv, state);
    return 0;
}

const char *outbox_ledger_state(outbox *o, const char *conversation_id)
{
    return ledger_cache_get(o->ledger, conversation_id);
}

/* ---- batch and store health --------------------------------------------------------------- */

/* A failed commit is never taken for a commit: the batch's operations stay uncommitted (not
 * attempted), the store keeps their rows for replay, no new attempt starts (its outcome could
 * not be recorded), and a timer probes the store with backoff until a write succeeds. */
#define STORE_PROBE_FIRST_MS 100
#define STORE_PROBE_MAX_MS 2000

static void schedule(outbox *o, ob_queue *q);
static void defer_schedule(outbox *o, ob_queue *q);

void outbox_on_store_change(outbox *o, void (*fn)(void *ud, int writable), void *ud)
{
    o->store_fn = fn;
    o->store_ud = ud;
}

int64_t outbox_store_degraded_ms(const outbox *o)
{
    return o->degraded_since ? mono_ms() - o->degraded_since : -1;
}

static void store_failed(outbox *o, const char *err)
{
    if (!o->degraded_since) {
        o->degraded_since = mono_ms();
        if (!o->degraded_since)
            o->degraded_since = 1;
        o->stats.store_failures++;
        o->store_backoff_ms = STORE_PROBE_FIRST_MS;
        log_error("store: writes are failing (%s); new work is refused (activities get 503, sends "
                  "return \"store\") and no attempt starts until a write succeeds again",
                  err ? err : "?");
        if (o->store_fn)
            o->store_fn(o->store_ud, 0);
    }
    if (!clock_timer_pending(o->store_timer))
        clock_timer_add(o->store_timer, o->store_backoff_ms);
}

/* The open batch (or the replayed one) is durable: its operations may go. */
static void start_committed(outbox *o)
{
    ob_op *op = o->uncommitted;
    o->uncommitted = o->uncommitted_tail = NULL;
    while (op) {
        ob_op *next = op->unext;
        op->unext = NULL;
        op->committed = 1;
        if (op->q->head == op)
            schedule(o, op->q);
        op = next;
    }
}

static void store_recovered(outbox *o, size_t kept, size_t anomalies)
{
    log_info("store: writable again after %lld ms; %zu kept write(s) committed",
             (long long)(mono_ms() - o->degraded_since), kept);
    if (anomalies)
        log_warn("store: %zu kept write(s) no longer applied on replay and were dropped", anomalies);
    o->degraded_since = 0;
    o->stats.commits++;
    start_committed(o);
    while (o->held_head) {
        ob_queue *q = o->held_head;
        o->held_head = q->held_next;
        q->held_next = NULL;
        q->held = 0;
        defer_schedule(o, q);
    }
    o->held_tail = NULL;
    if (o->store_fn)
        o->store_fn(o->store_ud, 1);
}

static void on_store_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    outbox *o = arg;
    size_t kept = store_kept_writes(o->st), anomalies = 0;
    char *err = NULL;
    if (store_probe(o->st, &anomalies, &err) == 0) {
        store_recovered(o, kept, anomalies);
        return;
    }
    log_debug("store: still not writable: %s", err ? err : "?");
    free(err);
    o->store_backoff_ms *= 2;
    if (o->store_backoff_ms > STORE_PROBE_MAX_MS)
        o->store_backoff_ms = STORE_PROBE_MAX_MS;
    clock_timer_add(o->store_timer, o->store_backoff_ms);
}

void outbox_touch_batch(outbox *o)
{
    /* degraded: writes are refused or kept for replay, and the probe timer is running */
    if (store_in_batch(o->st) || !store_writable(o->st))
        return;
    char *err = NULL;
    if (store_batch_begin(o->st, &err) < 0) {
        store_failed(o, err);
        free(err);
        return;
    }
#ifdef HERALD_TEST_HOOKS
    /* Tests only (the ASan build): HERALD_TEST_COMMIT_DELAY_MS=N holds each group commit N ms,
     * so a test can kill herald between a handler's writes and their commit. */
    static long delay = -1;
    if (delay < 0) {
        const char *d = getenv("HERALD_TEST_COMMIT_DELAY_MS");
        delay = d ? atol(d) : 0;
    }
    if (delay > 0) {
        struct timeval tv = {delay / 1000, (delay % 1000) * 1000};
        event_add(o->commit_ev, &tv);
        return;
    }
#endif
    event_active(o->commit_ev, 0, 0);
}

void outbox_commit(outbox *o)
{
    int in_batch = store_in_batch(o->st);
    char *err = NULL;
    if (store_batch_commit(o->st, &err) < 0) {
        store_failed(o, err);
        free(err);
        return;
    }
    if (in_batch)
        o->stats.commits++;
    start_committed(o);
}

static void on_commit(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    outbox_commit(arg);
}

/* ---- finishing ----------------------------------------------------------------------------- */

/* Every way an operation leaves memory comes here: its counts and its script's charge go with it. */
static void op_free(ob_op *op)
{
    if (op->counted) {
        op->q->outstanding--;
        op->q->gc.tenant->outstanding--;
    }
    if (op->release)
        op->release(op->release_ud, op->charged);
    free(op->conversation_id);
    free(op->service_url);
    free(op->seal);
    free(op->target_id);
    free(op->msg_key);
    free(op->body);
    free(op);
}

/* Finishing an op schedules the next one of its queue on the next loop turn, not on this stack:
 * 10,000 sends to a blocked conversation then fail one by one without recursing. */
static void defer_schedule(outbox *o, ob_queue *q)
{
    if (q->deferred)
        return;
    q->deferred = 1;
    q->dnext = o->resched;
    o->resched = q;
    event_active(o->resched_ev, 0, 0);
}

static void on_resched(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    outbox *o = arg;
    ob_queue *list = o->resched;
    o->resched = NULL;
    while (list) {
        ob_queue *q = list;
        list = q->dnext;
        q->dnext = NULL;
        q->deferred = 0;
        schedule(o, q);
        queue_maybe_drop(o, q);
    }
}

/* Removes the queue head, records its final state, tells its waiter, schedules the next. */
static void finish(outbox *o, ob_op *op, const char *state, long status, const char *code,
                   const char *message, const connector_result *cr)
{
    ob_queue *q = op->q;
    int64_t now = wall_ms();
    char *err = NULL;
    char extra[512] = "";
    const char *result_id = cr ? (op->kind == OUTBOX_CREATE ? cr->conversation_id : cr->activity_id)
                               : NULL;
    if (cr && op->kind == OUTBOX_CREATE) {
        json_t *x = json_pack("{s:s?, s:s?}", "activityId", cr->activity_id, "serviceUrl",
                              cr->service_url);
        char *s = x ? json_dumps(x, JSON_COMPACT) : NULL;
        if (s)
            snprintf(extra, sizeof extra, "%s", s);
        free(s);
        json_decref(x);
    }
    outbox_touch_batch(o);
    if (store_outbox_finish(o->so, op->id, state, op->attempts, now, (int)status, code, message,
                            result_id, extra[0] ? extra : NULL, &err) < 0) {
        log_error("outbox: cannot record the final state of op %lld: %s", (long long)op->id, err);
        free(err);
        err = NULL;
    }
    int si = outbox_state_index(state);
    if (si >= 0) {
        o->stats.states[si]++;
        o->stats.finished[si]++;
    }
    if (strcmp(state, "sent") == 0) {
        o->stats.sent++;
        /* a key sent without an id is recorded as "": an update or delete by that key then ends
         * no_activity_id (the message exists, so it is neither unknown nor missing) */
        if (op->msg_key && op->conversation_id && cr &&
            (op->kind == OUTBOX_SEND || op->kind == OUTBOX_REPLY || op->kind == OUTBOX_UPDATE) &&
            store_key_put(o->so, op->conversation_id, op->msg_key,
                          cr->activity_id ? cr->activity_id : "", now, &err) < 0) {
            log_error("outbox: cannot record message key: %s", err);
            free(err);
            err = NULL;
        }
    } else if (si == OUTBOX_FAILED) {
        o->stats.failed++;
    }
    if (op->done || o->hook) {
        outbox_result r = {0};
        r.op_id = op->id;
        r.state = state;
        r.code = code;
        r.message = message;
        r.status = status;
        r.attempts = op->attempts;
        if (cr) {
            r.activity_id = cr->activity_id;
            if (op->kind == OUTBOX_CREATE) {
                r.conversation_id = cr->conversation_id;
                r.service_url = cr->service_url;
            }
        }
        if (!r.activity_id && op->kind == OUTBOX_UPDATE && strcmp(state, "sent") == 0)
            r.activity_id = op->target_id;
        if (o->hook)
            o->hook(op->kind, &r, o->hook_ud);
        if (op->done)
            op->done(&r, op->ud);
    }
    q->head = op->next;
    if (!q->head)
        q->tail = NULL;
    o->stats.queued--;
    op_free(op);
    defer_schedule(o, q);
}

/* ---- attempts ---------------------------------------------------------------------------- */

static void on_connector_done(const connector_result *res, void *ud);

static int64_t backoff(const outbox *o, int attempts)
{
    int64_t d = o->cfg.backoff_base_ms;
    for (int i = 1; i < attempts && d < o->cfg.backoff_max_ms; i++)
        d *= 2;
    if (d > o->cfg.backoff_max_ms)
        d = o->cfg.backoff_max_ms;
    /* full jitter over the upper half, so a burst of failures does not retry in lockstep */
    return d / 2 + (int64_t)(random() % (d / 2 + 1));
}

static void retry(outbox *o, ob_op *op, long status, const char *code, const char *message,
                  int64_t delay)
{
    int64_t now = wall_ms();
    if (op->attempts >= o->cfg.max_attempts) {
        char why[400];
        snprintf(why, sizeof why, "gave up after %d attempts: %s", op->attempts,
                 message ? message : code);
        finish(o, op, "failed", status, code, why, NULL);
        return;
    }
    if (now + delay > op->expires_wall) {
        finish(o, op, "expired", status, code, "expired before another attempt was due", NULL);
        return;
    }
    op->due_mono = mono_ms() + delay;
    o->stats.retries++;
    char *err = NULL;
    outbox_touch_batch(o);
    if (store_outbox_retry(o->so, op->id, op->attempts, now, (int)status, code, message,
                           now + delay, &err) < 0) {
        log_error("outbox: cannot record an attempt: %s", err);
        free(err);
    }
    log_debug("outbox: op %lld %s, retry %d in %lld ms", (long long)op->id, code, op->attempts,
              (long long)delay);
    schedule(o, op->q);
}

static void attempt(outbox *o, ob_queue *q)
{
    ob_op *op = q->head;
    if (!store_writable(o->st)) {
        /* the outcome could not be recorded, and a crash would send it again: wait for the store */
        q->held = 1;
        q->held_next = NULL;
        if (o->held_tail) o->held_tail->held_next = q; else o->held_head = q;
        o->held_tail = q;
        return;
    }
    /* a reply answers someone waiting in the chat: it never queues behind bulk sends */
    if (op->kind != OUTBOX_REPLY && gov_slot_wait(o->gov, &q->gc))
        return;
    int64_t now_mono = mono_ms();
    if (wall_ms() > op->expires_wall) {
        finish(o, op, "expired", 0, "expired", "expired before it could be attempted", NULL);
        return;
    }
    /* an update or delete named by key resolves when its turn comes, after the send it names */
    if (op->msg_key && !op->target_id &&
        (op->kind == OUTBOX_UPDATE || op->kind == OUTBOX_DELETE)) {
        char *id = NULL, *err = NULL;
        int found = store_key_get(o->so, op->conversation_id, op->msg_key, &id, &err);
        if (found == 1 && !*id) {
            free(id);
            finish(o, op, "rejected", 0, CONNECTOR_NO_ACTIVITY_ID, "the message with this key was "
                   "accepted without an activity id, so it cannot be updated or deleted", NULL);
            return;
        } else if (found == 1) {
            op->target_id = id;
        } else if (found == 0 && op->kind == OUTBOX_UPDATE && (op->flags & OUTBOX_SEND_IF_MISSING)) {
            op->kind = OUTBOX_SEND;
        } else {
            char why[300];
            snprintf(why, sizeof why, "no message was sent with key '%s'%s", op->msg_key,
                     found < 0 ? " (store error)" : "");
            free(err);
            finish(o, op, "rejected", 0, "unknown_key", why, NULL);
            return;
        }
    }
    const char *ledger = outbox_ledger_state(o, op->conversation_id);
    if (ledger && op->kind != OUTBOX_CREATE) {
        int blocked = strcmp(ledger, "blocked") == 0;
        finish(o, op, blocked ? "blocked" : "not_found", 0, blocked ? "blocked" : "not_found",
               blocked ? "the conversation is blocked (ledger): the user has not been heard from since"
                       : "the conversation is gone (ledger): not found on a previous send",
               NULL);
        return;
    }
    op->attempts++;
    gov_note_sent(o->gov, &q->gc, now_mono);
    char *err = NULL;
    /* the URL came from the database: the connector checks it (and this seal) before the token
     * is attached, and a refusal ends the operation "rejected" / untrusted_service_url */
    connector_dest to = {op->service_url, op->conversation_id ? op->conversation_id : q->key,
                         op->seal};
    switch (op->kind) {
    case OUTBOX_SEND:
    case OUTBOX_REPLY:
        op->call = connector_send(o->conn, &to, op->conversation_id,
                                  op->kind == OUTBOX_REPLY ? op->target_id : NULL, op->body,
                                  op->body_len, on_connector_done, op, &err);
        break;
    case OUTBOX_UPDATE:
        op->call = connector_update(o->conn, &to, op->conversation_id, op->target_id,
                                    op->body, op->body_len, on_connector_done, op, &err);
        break;
    case OUTBOX_DELETE:
        op->call = connector_delete(o->conn, &to, op->conversation_id, op->target_id,
                                    on_connector_done, op, &err);
        break;
    case OUTBOX_CREATE:
        op->call = connector_create_conversation(o->conn, &to, op->body, op->body_len,
                                                 on_connector_done, op, &err);
        break;
    }
    if (!op->call) {
        /* a call that cannot even start (bad URL) will not start next time either */
        char why[300];
        snprintf(why, sizeof why, "cannot start the call: %s", err ? err : "?");
        free(err);
        finish(o, op, "rejected", 0, "rejected", why, NULL);
        return;
    }
    q->in_flight = 1;
    gov_slot_taken(o->gov);
}

/* A queue that waited in its tenant's list may go. */
static void on_gov_go(gov_conv *c, void *ud)
{
    ob_queue *q = conv_queue(c);
    if (q->head && !q->in_flight)
        attempt(ud, q);
}

/* A freed attempt slot: the queue goes through the reschedule list, re-checking its windows
 * without recursing here. */
static void on_gov_slot(gov_conv *c, void *ud)
{
    defer_schedule(ud, conv_queue(c));
}

/* q's head is ready by its own limits: go now if the tenant allows, else queue behind it. */
static void dispatch(outbox *o, ob_queue *q)
{
    if (gov_tenant_go(o->gov, &q->gc, mono_ms()))
        attempt(o, q);
}

/* Decides when q's head may go: now, or later through the heap. */
static void schedule(outbox *o, ob_queue *q)
{
    if (!q->head || q->in_flight || gov_conv_waiting(&q->gc) || q->held || !q->head->committed)
        return;
    int64_t now = mono_ms();
    int64_t ready = q->head->due_mono;
    int64_t g = gov_conv_ready(o->gov, &q->gc, now);
    if (g > ready)
        ready = g;
    if (ready <= now) {
        heap_remove(&o->ready, &q->hn);
        dispatch(o, q);
        return;
    }
    if (heap_set(&o->ready, &q->hn, ready) < 0) {
        log_error("outbox: out of memory scheduling a queue");
        return;
    }
    if (heap_top(&o->ready) == &q->hn)
        arm_heap_timer(o);
}

/* Expired timers move everything due before any attempt runs, like libuv's timer phase. */
static void on_heap_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    outbox *o = arg;
    int64_t now = mono_ms();
    ob_queue *due = NULL;
    while (heap_top(&o->ready) && heap_top(&o->ready)->deadline <= now) {
        ob_queue *q = heap_queue(heap_pop(&o->ready));
        q->due_next = due;
        due = q;
    }
    while (due) {
        ob_queue *q = due;
        due = q->due_next;
        q->due_next = NULL;
        schedule(o, q);
    }
    arm_heap_timer(o);
}

/* libcurl sent the request again on a fresh connection (http_client.h): each copy is an attempt
 * Teams may have acted on, so it is counted, recorded in outbox_attempts as "resent" (herald
 * deliveries shows it) and paced, like any attempt herald makes itself. */
static void count_resends(outbox *o, ob_op *op, int n)
{
    op->attempts += n;
    o->stats.resends += (uint64_t)n;
    for (int i = 0; i < n; i++)
        gov_note_sent(o->gov, &op->q->gc, mono_ms());
    log_warn("outbox: op %lld to conversation=%s went out %d more time(s): libcurl re-sent it on a "
             "fresh connection after the reused one closed without answering; Teams may have it "
             "twice", (long long)op->id, op->conversation_id ? op->conversation_id : "-", n);
    outbox_touch_batch(o);
    for (int i = 0; i < n; i++) {
        char *err = NULL;
        if (store_outbox_note_attempt(o->so, op->id, wall_ms(), "resent",
                                      "the reused connection closed without an answer; libcurl "
                                      "sent the request again", &err) < 0) {
            log_error("outbox: cannot record a re-sent attempt: %s", err);
            free(err);
            break;
        }
    }
}

static void on_connector_done(const connector_result *res, void *ud)
{
    ob_op *op = ud;
    ob_queue *q = op->q;
    outbox *o = q->o;
    op->call = NULL;
    q->in_flight = 0;
    gov_slot_release(o->gov);
    if (res->resends > 0)
        count_resends(o, op, res->resends);
    if (res->ok) {
        if (!res->activity_id && (op->kind == OUTBOX_SEND || op->kind == OUTBOX_REPLY))
            log_warn("outbox: op %lld accepted (%ld) without an activity id: recorded sent, never "
                     "resent; it cannot be updated or deleted conversation=%s", (long long)op->id,
                     res->status, op->conversation_id ? op->conversation_id : "-");
        finish(o, op, "sent", res->status, NULL, NULL, res);
        return;
    }
    const char *code = res->code ? res->code : "rejected";
    long st = res->status;
    if (strcmp(code, CONNECTOR_THROTTLED) == 0) {
        o->stats.throttled++;
        int64_t ra = outbox_parse_retry_after(res->retry_after, wall_ms());
        int64_t delay = backoff(o, op->attempts);
        if (ra > delay)
            delay = ra;
        double factor = gov_note_429(o->gov, &q->gc, mono_ms());
        log_warn("outbox: 429 from the connector conversation=%s retry_in=%lld ms; slowing tenant "
                 "%s to %.0f%%", op->conversation_id ? op->conversation_id : "-", (long long)delay,
                 q->gc.tenant->id, factor * 100);
        retry(o, op, st, code, res->message, delay);
        return;
    }
    int transient = strcmp(code, CONNECTOR_TIMEOUT) == 0 || strcmp(code, CONNECTOR_NETWORK) == 0 ||
                    strcmp(code, CONNECTOR_AUTH) == 0 || st == 412 || st == 500 || st == 502 ||
                    st == 503 || st == 504;
    if (transient) {
        retry(o, op, st, code, res->message, backoff(o, op->attempts));
        return;
    }
    if (strcmp(code, CONNECTOR_BLOCKED) == 0) {
        if (op->conversation_id) {
            char *err = NULL;
            outbox_touch_batch(o);
            if (store_ledger_mark(o->so, op->conversation_id, "blocked", res->error_sub_code
                                  ? res->error_sub_code : res->error_code, res->message,
                                  wall_ms(), &err) < 0) {
                log_error("outbox: cannot mark the ledger: %s", err);
                free(err);
            }
            ledger_cache_set(o->ledger, op->conversation_id, "blocked");
            log_info("conversation blocked conversation=%s reason=%s", op->conversation_id,
                     res->message);
        }
        finish(o, op, "blocked", st, code, res->message, NULL);
        return;
    }
    if (strcmp(code, CONNECTOR_NOT_FOUND) == 0) {
        int gone = op->conversation_id &&
                   (op->kind == OUTBOX_SEND || op->kind == OUTBOX_REPLY ||
                    (res->error_code && strcasecmp(res->error_code, "ConversationNotFound") == 0));
        if (gone) {
            char *err = NULL;
            outbox_touch_batch(o);
            if (store_ledger_mark(o->so, op->conversation_id, "gone", res->error_code, res->message,
                                  wall_ms(), &err) < 0) {
                log_error("outbox: cannot mark the ledger: %s", err);
                free(err);
            }
            ledger_cache_set(o->ledger, op->conversation_id, "gone");
        }
        finish(o, op, "not_found", st, code, res->message, NULL);
        return;
    }
    finish(o, op, "rejected", st, code, res->message, NULL);
}

const char *const outbox_state_names[OUTBOX_NSTATES] = {
    [OUTBOX_QUEUED] = "queued",       [OUTBOX_SENT] = "sent",         [OUTBOX_BLOCKED] = "blocked",
    [OUTBOX_NOT_FOUND] = "not_found", [OUTBOX_REJECTED] = "rejected", [OUTBOX_EXPIRED] = "expired",
    [OUTBOX_FAILED] = "failed",
};

int outbox_state_index(const char *name)
{
    for (int i = 0; name && i < OUTBOX_NSTATES; i++)
        if (strcmp(name, outbox_state_names[i]) == 0)
            return i;
    return -1;
}

/* Counts rows of the database per state (sign +1: found at start, -1: about to be purged). */
typedef struct state_tally {
    outbox *o;
    int sign;
} state_tally;

static void tally_state(const char *state, int64_t n, void *ud)
{
    state_tally *t = ud;
    int i = outbox_state_index(state);
    if (i < 0 || i == OUTBOX_QUEUED)   /* queued ones are counted as they load */
        return;
    uint64_t *c = &t->o->stats.states[i];
    *c = t->sign > 0 ? *c + (uint64_t)n : *c > (uint64_t)n ? *c - (uint64_t)n : 0;
}

/* Old finished rows go in bounded chunks, so a purge never holds the loop for long. */
static void on_purge(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    outbox *o = arg;
    if (!store_writable(o->st))
        return;                   /* the next round purges; nothing is urgent about it */
    int64_t before = wall_ms() - o->cfg.retention_ms;
    for (int round = 0; round < 10; round++) {
        char *err = NULL;
        outbox_touch_batch(o);
        state_tally t = {o, -1};
        if (store_outbox_count_finished(o->so, before, 2000, tally_state, &t, &err) < 0) {
            log_error("outbox: purge failed: %s", err);
            free(err);
            return;
        }
        int n = store_outbox_purge(o->so, before, 2000, &err);
        if (n < 0) {
            log_error("outbox: purge failed: %s", err);
            free(err);
            return;
        }
        outbox_commit(o);
        if (n < 2000)
            return;
    }
}

/* ---- public ------------------------------------------------------------------------------ */

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static ob_op *op_new(outbox *o, int64_t id, enum outbox_kind kind, const char *queue,
                     const char *tenant, const char *conv, const char *service_url,
                     const char *seal, const char *target, const char *key, const char *body,
                     size_t body_len, int flags)
{
    ob_op *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->id = id;
    op->kind = kind;
    op->conversation_id = dup_or_null(conv);
    op->service_url = dup_or_null(service_url);
    op->seal = dup_or_null(seal);
    op->target_id = dup_or_null(target);
    op->msg_key = dup_or_null(key);
    op->flags = flags;
    if (body) {
        op->body = malloc(body_len + 1);
        if (op->body) {
            memcpy(op->body, body, body_len);
            op->body[body_len] = 0;
        }
        op->body_len = body_len;
    }
    op->q = queue_get(o, queue, tenant);
    if (!op->q || !op->service_url || (body && !op->body) || (conv && !op->conversation_id) ||
        (seal && !op->seal)) {
        op_free(op);
        return NULL;
    }
    if (op->q->tail) op->q->tail->next = op; else op->q->head = op;
    op->q->tail = op;
    o->stats.queued++;
    op->counted = 1;
    op->q->outstanding++;
    op->q->gc.tenant->outstanding++;
    return op;
}

static int load_op(const store_op *s, void *ud)
{
    outbox *o = ud;
    enum outbox_kind kind = OUTBOX_SEND;
    for (int i = 0; i < 5; i++)
        if (strcmp(s->kind, kind_names[i]) == 0)
            kind = (enum outbox_kind)i;
    ob_op *op = op_new(o, s->id, kind, s->queue, s->tenant_id, s->conversation_id, s->service_url,
                       s->service_url_seal, s->target_id, s->msg_key, s->body,
                       s->body ? strlen(s->body) : 0, s->flags);
    if (!op) {
        log_error("outbox: cannot load op %lld", (long long)s->id);
        return 0;
    }
    op->attempts = s->attempts;
    op->expires_wall = s->expires_at;
    int64_t wait = s->next_attempt_at - wall_ms();
    op->due_mono = mono_ms() + (wait > 0 ? wait : 0);
    op->committed = 1;
    return 0;
}

outbox *outbox_new(struct event_base *base, store *st, connector *conn, const outbox_config *cfg,
                   char **err)
{
    outbox *o = calloc(1, sizeof *o);
    if (!o) {
        *err = strdup("out of memory");
        return NULL;
    }
    o->base = base;
    o->st = st;
    o->conn = conn;
    o->cfg = *cfg;
    if (o->cfg.tenant_rps <= 0) o->cfg.tenant_rps = 50;
    if (o->cfg.max_attempts <= 0) o->cfg.max_attempts = 8;
    if (o->cfg.max_age_ms <= 0) o->cfg.max_age_ms = 3600 * 1000;
    if (o->cfg.backoff_base_ms <= 0) o->cfg.backoff_base_ms = 1000;
    if (o->cfg.backoff_max_ms <= 0) o->cfg.backoff_max_ms = 60000;
    if (o->cfg.retention_ms <= 0) o->cfg.retention_ms = 7LL * 86400 * 1000;
    if (o->cfg.max_in_flight <= 0) o->cfg.max_in_flight = 256;
    if (o->cfg.max_queued_per_conversation <= 0) o->cfg.max_queued_per_conversation = 1000;
    if (o->cfg.max_queued_per_tenant <= 0) o->cfg.max_queued_per_tenant = 10000;
    if (o->cfg.max_queued_total <= 0) o->cfg.max_queued_total = 50000;
    o->queues = calloc(NBUCKETS, sizeof *o->queues);
    gov_config gc = {o->cfg.governor, o->cfg.tenant_rps, o->cfg.max_in_flight};
    o->gov = governor_new(base, &gc, on_gov_go, on_gov_slot, o);
    o->ledger = ledger_cache_new();
    o->heap_timer = evtimer_new(base, on_heap_timer, o);
    o->commit_ev = event_new(base, -1, 0, on_commit, o);
    o->resched_ev = event_new(base, -1, 0, on_resched, o);
    o->purge_timer = event_new(base, -1, EV_PERSIST, on_purge, o);
    o->store_timer = evtimer_new(base, on_store_timer, o);
    if (!o->purge_timer || !o->store_timer || !o->resched_ev || !o->queues || !o->gov || !o->ledger || !o->heap_timer || !o->commit_ev ||
        !(o->so = store_outbox_open(st, err))) {
        if (!*err)
            *err = strdup("out of memory");
        outbox_free(o);
        return NULL;
    }
    /* jitter is random in production, repeatable under the test clock */
    srandom(clock_is_virtual() ? 1u : (unsigned)(wall_ms() ^ (int64_t)getpid()));
    state_tally t = {o, 1};
    if (store_ledger_load(o->so, load_ledger_entry, o->ledger, err) < 0 ||
        store_outbox_count_finished(o->so, INT64_MAX, -1, tally_state, &t, err) < 0 ||
        store_outbox_load(o->so, load_op, o, err) < 0) {
        outbox_free(o);
        return NULL;
    }
    clock_timer_add(o->purge_timer, 60000);
    if (o->stats.queued)
        log_info("outbox: resuming %llu queued operation(s) from the database",
                 (unsigned long long)o->stats.queued);
    for (int b = 0; b < NBUCKETS; b++)
        for (ob_queue *q = o->queues[b]; q; q = q->hnext)
            schedule(o, q);
    return o;
}

void outbox_free(outbox *o)
{
    if (!o)
        return;
    for (int b = 0; o->queues && b < NBUCKETS; b++) {
        ob_queue *q = o->queues[b];
        while (q) {
            ob_queue *n = q->hnext;
            ob_op *op = q->head;
            while (op) {
                ob_op *next = op->next;
                if (op->call)
                    connector_cancel(op->call);
                op_free(op);
                op = next;
            }
            gov_conv_free(&q->gc);
            free(q->key);
            free(q);
            q = n;
        }
    }
    governor_free(o->gov);
    ledger_cache_free(o->ledger);
    if (o->st && store_in_batch(o->st)) {
        char *err = NULL;
        if (store_batch_commit(o->st, &err) < 0)
            free(err);
    }
    if (o->st && !store_writable(o->st)) {
        /* a last try: what is lost here is bookkeeping of sends that went out (they may go again
         * after the restart) and operations never attempted (their tasks were told nothing) */
        size_t kept = store_kept_writes(o->st);
        char *err = NULL;
        if (store_probe(o->st, NULL, &err) < 0 && kept)
            log_error("store: stopping with %zu write(s) that could not be committed: %s", kept,
                      err ? err : "?");
        free(err);
    }
    if (o->store_timer)
        clock_timer_free(o->store_timer);
    store_outbox_close(o->so);
    if (o->heap_timer)
        clock_timer_free(o->heap_timer);
    if (o->commit_ev)
        event_free(o->commit_ev);
    if (o->resched_ev)
        event_free(o->resched_ev);
    if (o->purge_timer)
        clock_timer_free(o->purge_timer);
    heap_free(&o->ready);
    free(o->queues);
    free(o);
}

/* A new row's service URL is sealed when it is trusted right now: by what this process knows
 * (the cloud's host, configured prefixes, validated activities) or by the seal of the stored
 * conversation it belongs to. The seal lets a later process attempt the row without trusting the
 * database; a row without one is attempted only to a URL that process trusts by itself. */
static int seal_url(outbox *o, const outbox_spec *spec, const char *seal_id, char out[65])
{
    const trust *t = o->cfg.trust;
    if (!t)
        return 0;
    int ok = trust_allows(t, spec->service_url, NULL, NULL);
    if (!ok && spec->conversation_id) {
        store_reference ref;
        char *err = NULL;
        if (store_get_reference(o->st, spec->conversation_id, &ref, &err) == 1) {
            ok = strcmp(ref.service_url, spec->service_url) == 0 &&
                 trust_allows(t, ref.service_url, ref.id, ref.service_url_seal);
            store_reference_clear(&ref);
        }
        free(err);
    }
    return ok && trust_seal(t, seal_id, spec->service_url, out) == 0;
}

int64_t outbox_enqueue(outbox *o, const outbox_spec *spec, outbox_done_fn done, void *ud,
                       outbox_watch **watch, char **err)
{
    const char *queue = spec->queue ? spec->queue : spec->conversation_id;
    if (!queue || !spec->service_url) {
        *err = strdup("outbox: an operation needs a conversation (or queue) and a service URL");
        return -1;
    }
    int64_t now = wall_ms();
    store_op row = {0};
    row.kind = kind_names[spec->kind];
    row.queue = queue;
    row.conversation_id = spec->conversation_id;
    row.service_url = spec->service_url;
    row.tenant_id = spec->tenant_id;
    row.target_id = spec->target_id;
    row.msg_key = spec->msg_key;
    row.body = spec->body;
    row.flags = spec->flags;
    row.category = spec->category;
    row.next_attempt_at = spec->not_before_ms > now ? spec->not_before_ms : now;
    row.created_at = now;
    row.expires_at = row.next_attempt_at + o->cfg.max_age_ms;
    char seal[65];
    row.service_url_seal = seal_url(o, spec, spec->conversation_id ? spec->conversation_id : queue,
                                    seal) ? seal : NULL;
    outbox_touch_batch(o);
    if (store_outbox_insert(o->so, &row, err) < 0)
        return -1;
    ob_op *op = op_new(o, row.id, spec->kind, queue, spec->tenant_id, spec->conversation_id,
                       spec->service_url, row.service_url_seal, spec->target_id, spec->msg_key,
                       spec->body, spec->body_len, spec->flags);
    if (!op) {
        *err = strdup("outbox: out of memory");
        return -1;
    }
    op->expires_wall = row.expires_at;
    op->due_mono = mono_ms() + (row.next_attempt_at - now);
    op->done = done;
    op->ud = ud;
    op->release = spec->release;
    op->release_ud = spec->release_ud;
    op->charged = outbox_spec_bytes(spec);
    if (watch)
        *watch = (outbox_watch *)op;
    if (o->uncommitted_tail) o->uncommitted_tail->unext = op; else o->uncommitted = op;
    o->uncommitted_tail = op;
    return row.id;
}

int outbox_admit(outbox *o, const outbox_spec *spec, char **why)
{
    const char *key = spec->queue ? spec->queue : spec->conversation_id;
    ob_queue *q = key ? queue_find(o, key) : NULL;
    gov_tenant *t = gov_tenant_find(o->gov, spec->tenant_id);
    int64_t n;
    const char *where, *setting;
    if ((n = (int64_t)o->stats.queued) >= o->cfg.max_queued_total)
        where = "in total", setting = "TOTAL";
    else if (t && (n = t->outstanding) >= o->cfg.max_queued_per_tenant)
        where = "for this tenant", setting = "PER_TENANT";
    else if (q && (n = q->outstanding) >= o->cfg.max_queued_per_conversation)
        where = "for this conversation", setting = "PER_CONVERSATION";
    else
        return 1;
    if (asprintf(why, "queue full: %lld operations are already outstanding %s "
                      "(HERALD_MAX_QUEUED_%s); try again once some have finished",
                 (long long)n, where, setting) < 0)
        *why = NULL;
    return 0;
}

size_t outbox_spec_bytes(const outbox_spec *spec)
{
    /* what op_new copies, each block with an allocator header's worth on top */
    enum { BLOCK = 16 };
    size_t n = sizeof(ob_op) + BLOCK + 65 + BLOCK;   /* the op and its seal */
    const char *strs[] = {spec->conversation_id, spec->service_url, spec->target_id, spec->msg_key};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (strs[i])
            n += strlen(strs[i]) + 1 + BLOCK;
    if (spec->body)
        n += spec->body_len + 1 + BLOCK;
    return n;
}

void outbox_unwatch(outbox_watch *w)
{
    ob_op *op = (ob_op *)w;
    op->done = NULL;
    op->ud = NULL;
}

struct store_outbox *outbox_tables(outbox *o) { return o->so; }

void outbox_heard_from(outbox *o, const char *conversation_id)
{
    char state[8];
    if (ledger_cache_remove(o->ledger, conversation_id, state)) {
        char *err = NULL;
        outbox_touch_batch(o);
        if (store_ledger_clear(o->so, conversation_id, wall_ms(), &err) < 0) {
            log_error("outbox: cannot clear the ledger: %s", err);
            free(err);
        }
        log_info("conversation heard from again; %s mark cleared conversation=%s", state,
                 conversation_id);
    }
}

void outbox_get_stats(const outbox *o, outbox_stats *out)
{
    *out = o->stats;
    out->in_flight = (uint64_t)gov_in_flight(o->gov);
    out->states[OUTBOX_QUEUED] = o->stats.queued;
}

int64_t outbox_parse_retry_after(const char *v, int64_t now_wall_ms)
{
    if (!v || !*v)
        return -1;
    char *end;
    double secs = strtod(v, &end);
    while (*end == ' ')
        end++;
    /* capped before the conversion: "1e300" or "inf" must not overflow int64 */
    if (end != v && !*end && secs >= 0)
        return secs < OUTBOX_RETRY_AFTER_MAX_S ? (int64_t)(secs * 1000)
                                               : OUTBOX_RETRY_AFTER_MAX_S * 1000;
    /* an HTTP-date in any of the three forms RFC 9110 has recipients accept */
    static const char *const forms[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                        "%a %b %e %H:%M:%S %Y"};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        struct tm tm = {0};
        const char *p = strptime(v, forms[i], &tm);
        if (!p || *p)
            continue;
        int64_t at = (int64_t)timegm(&tm) * 1000;
        if (at - now_wall_ms > OUTBOX_RETRY_AFTER_MAX_S * 1000)
            return OUTBOX_RETRY_AFTER_MAX_S * 1000;
        return at > now_wall_ms ? at - now_wall_ms : 0;
    }
    return -1;
}

outbox_config outbox_config_from(const config *c)
{
    return (outbox_config){.governor = c->governor, .tenant_rps = (int)c->tenant_rps,
                           .max_attempts = (int)c->outbox_max_attempts,
                           .max_age_ms = (int64_t)c->outbox_max_age_s * 1000,
                           .backoff_base_ms = c->retry_base_ms, .backoff_max_ms = c->retry_max_ms,
                           .retention_ms = (int64_t)c->outbox_retention_s * 1000,
                           .max_in_flight = c->outbox_max_in_flight,
                           .max_queued_per_conversation = c->max_queued_per_conversation,
                           .max_queued_per_tenant = c->max_queued_per_tenant,
                           .max_queued_total = c->max_queued_total};
}
