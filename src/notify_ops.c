/* notify_ops.c — the results of notify operations that answered 202, for
 * GET /api/notify/operations/{id}. Two lists: running ones (as many as live notify tasks) and
 * finished ones in the order they finished, so the oldest is at the head both for the count and
 * byte bounds and for expiry. A lookup walks both: a few thousand entries at most, microseconds,
 * cheaper than keeping an index in step. Results live in memory only: a restart forgets them. */
#include "notify_ops.h"

#include <stdlib.h>
#include <string.h>

typedef struct op_list {
    notify_op *head, *tail;
    size_t n;
} op_list;

struct notify_ops {
    op_list running, done;
    size_t max_done, max_bytes, bytes;
    int64_t ttl_ms;
};

static void unlink_op(op_list *l, notify_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        l->head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        l->tail = op->prev;
    op->prev = op->next = NULL;
    l->n--;
}

static void append(op_list *l, notify_op *op)
{
    op->prev = l->tail;
    op->next = NULL;
    if (l->tail)
        l->tail->next = op;
    else
        l->head = op;
    l->tail = op;
    l->n++;
}

static size_t op_bytes(const notify_op *op)
{
    return sizeof *op + (op->result ? strlen(op->result) + 1 : 0) +
           (op->error ? strlen(op->error) + 1 : 0);
}

static void op_free(notify_op *op)
{
    free(op->result);
    free(op->error);
    free(op);
}

static void drop_oldest(notify_ops *ops)
{
    notify_op *op = ops->done.head;
    unlink_op(&ops->done, op);
    ops->bytes -= op_bytes(op);
    op_free(op);
}

static void expire(notify_ops *ops, int64_t now_ms)
{
    while (ops->done.head && now_ms - ops->done.head->finished_ms >= ops->ttl_ms)
        drop_oldest(ops);
}

notify_ops *notify_ops_new(size_t max_done, size_t max_bytes, int64_t ttl_ms)
{
    notify_ops *ops = calloc(1, sizeof *ops);
    if (ops) {
        ops->max_done = max_done;
        ops->max_bytes = max_bytes;
        ops->ttl_ms = ttl_ms;
    }
    return ops;
}

void notify_ops_free(notify_ops *ops)
{
    if (!ops)
        return;
    op_list *lists[] = {&ops->running, &ops->done};
    for (int i = 0; i < 2; i++)
        while (lists[i]->head) {
            notify_op *op = lists[i]->head;
            unlink_op(lists[i], op);
            op_free(op);
        }
    free(ops);
}

int notify_ops_begin(notify_ops *ops, uint64_t id, const char *name)
{
    notify_op *op = calloc(1, sizeof *op);
    if (!op)
        return -1;
    op->id = id;
    size_t n = strlen(name);
    if (n >= sizeof op->name)
        n = sizeof op->name - 1;
    memcpy(op->name, name, n);
    op->state = "running";
    append(&ops->running, op);
    return 0;
}

static notify_op *find(op_list *l, uint64_t id)
{
    for (notify_op *op = l->head; op; op = op->next)
        if (op->id == id)
            return op;
    return NULL;
}

void notify_ops_finish(notify_ops *ops, uint64_t id, const char *state, const char *result,
                       const char *error, int64_t now_ms)
{
    notify_op *op = find(&ops->running, id);
    if (!op)
        return;
    unlink_op(&ops->running, op);
    static const char *const states[] = {"done", "failed", "cancelled"};
    op->state = "failed";
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        if (strcmp(state, states[i]) == 0)
            op->state = states[i];
    op->finished_ms = now_ms;
    /* a result that alone exceeds the byte bound is not kept; the caller learns that it finished */
    if (result && sizeof *op + strlen(result) + 1 > ops->max_bytes)
        error = "the result was too large to keep (HERALD_NOTIFY_RESULTS_MAX_BYTES)";
    else if (result && !(op->result = strdup(result)))
        error = "out of memory keeping the result";
    if (error)
        op->error = strdup(error);    /* NULL when out of memory: the state still says enough */
    expire(ops, now_ms);
    size_t b = op_bytes(op);
    while (ops->done.head && (ops->done.n + 1 > ops->max_done || ops->bytes + b > ops->max_bytes))
        drop_oldest(ops);
    if (ops->max_done == 0 || b > ops->max_bytes) {
        op_free(op);
        return;
    }
    append(&ops->done, op);
    ops->bytes += b;
}

const notify_op *notify_ops_get(notify_ops *ops, uint64_t id, int64_t now_ms)
{
    expire(ops, now_ms);
    notify_op *op = find(&ops->running, id);
    return op ? op : find(&ops->done, id);
}

size_t notify_ops_done_count(const notify_ops *ops) { return ops->done.n; }
