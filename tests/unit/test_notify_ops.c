/* test_notify_ops.c — the kept results of 202'd notify operations (notify_ops.c): lookups, the
 * count, byte and age bounds, and what is never kept. */
#include "unit.h"
#include "notify_ops.h"

#include <string.h>

static void test_running_then_done(void)
{
    notify_ops *ops = notify_ops_new(10, 1 << 20, 1000);
    CHECK(ops != NULL);
    CHECK(notify_ops_get(ops, 7, 0) == NULL);
    CHECK_INT(notify_ops_begin(ops, 7, "build"), 0);
    const notify_op *op = notify_ops_get(ops, 7, 0);
    CHECK(op != NULL);
    CHECK_STR(op->state, "running");
    CHECK_STR(op->name, "build");
    CHECK_INT(op->finished_ms, 0);
    notify_ops_finish(ops, 8, "done", "{}", NULL, 5);          /* never begun: ignored */
    CHECK(notify_ops_get(ops, 8, 5) == NULL);
    notify_ops_finish(ops, 7, "done", "{\"sent\":\"1\"}", NULL, 10);
    op = notify_ops_get(ops, 7, 10);
    CHECK(op != NULL);
    CHECK_STR(op->state, "done");
    CHECK_STR(op->result, "{\"sent\":\"1\"}");
    CHECK(op->error == NULL);
    /* running ones do not expire; finished ones do, ttl after they ended */
    CHECK_INT(notify_ops_begin(ops, 9, "build"), 0);
    CHECK(notify_ops_get(ops, 7, 1009) != NULL);
    CHECK(notify_ops_get(ops, 7, 1010) == NULL);
    CHECK(notify_ops_get(ops, 9, 1000000) != NULL);
    notify_ops_finish(ops, 9, "failed", NULL, "handler failed", 1000000);
    op = notify_ops_get(ops, 9, 1000000);
    CHECK_STR(op->state, "failed");
    CHECK_STR(op->error, "handler failed");
    notify_ops_free(ops);            /* frees what is left (ASan: no leak) */
    notify_ops_free(NULL);
}

static void test_count_bound_drops_the_oldest_finished(void)
{
    notify_ops *ops = notify_ops_new(2, 1 << 20, 1000);
    for (uint64_t id = 1; id <= 3; id++)
        CHECK_INT(notify_ops_begin(ops, id, "t"), 0);
    for (uint64_t id = 1; id <= 3; id++)
        notify_ops_finish(ops, id, "done", "1", NULL, (int64_t)id);
    CHECK_INT(notify_ops_done_count(ops), 2);
    CHECK(notify_ops_get(ops, 1, 3) == NULL);
    CHECK(notify_ops_get(ops, 2, 3) != NULL);
    CHECK(notify_ops_get(ops, 3, 3) != NULL);
    notify_ops_free(ops);
}

static void test_byte_bound(void)
{
    size_t cap = 4096;
    notify_ops *ops = notify_ops_new(100, cap, 1000);
    char big[1500];
    memset(big, '1', sizeof big - 1);
    big[sizeof big - 1] = 0;
    for (uint64_t id = 1; id <= 4; id++) {
        CHECK_INT(notify_ops_begin(ops, id, "t"), 0);
        notify_ops_finish(ops, id, "done", big, NULL, 1);
    }
    /* two such results fit in 4096 bytes with their entries, not three */
    CHECK_INT(notify_ops_done_count(ops), 2);
    CHECK(notify_ops_get(ops, 2, 1) == NULL);
    CHECK(notify_ops_get(ops, 4, 1) != NULL);
    /* a result larger than the whole bound: the state is kept, the result is not */
    char huge[5000];
    memset(huge, '2', sizeof huge - 1);
    huge[sizeof huge - 1] = 0;
    CHECK_INT(notify_ops_begin(ops, 5, "t"), 0);
    notify_ops_finish(ops, 5, "done", huge, NULL, 1);
    const notify_op *op = notify_ops_get(ops, 5, 1);
    CHECK(op != NULL);
    CHECK_STR(op->state, "done");
    CHECK(op->result == NULL);
    CHECK(op->error != NULL && strstr(op->error, "HERALD_NOTIFY_RESULTS_MAX_BYTES") != NULL);
    notify_ops_free(ops);
}

UNIT_MAIN("notify_ops", CASE(test_running_then_done), CASE(test_count_bound_drops_the_oldest_finished),
          CASE(test_byte_bound))
