/* test_heap.c — src/heap.c: ties leave in the order they were (re)armed, removal from the middle,
 * moving a node, freeing a heap whose elements are gone, and thousands of random operations
 * checked against a brute-force reference. */
#include "heap.h"
#include "unit.h"

#include <stdint.h>
#include <stdlib.h>

typedef struct item {
    int id;
    heap_node node;
    int64_t deadline;             /* the reference's copy */
    uint64_t order;               /* the reference's own count of heap_set calls */
} item;

static item *of(heap_node *n) { return n ? heap_entry(n, item, node) : NULL; }

/* Every slot knows its index and no child comes before its parent. */
static int valid(const heap *h)
{
    for (int i = 0; i < h->len; i++) {
        const heap_node *n = h->nodes[i];
        if (n->idx != i)
            return 0;
        if (i) {
            const heap_node *p = h->nodes[(i - 1) / 2];
            if (n->deadline < p->deadline || (n->deadline == p->deadline && n->seq < p->seq))
                return 0;
        }
    }
    return 1;
}

static void test_ties_leave_in_arming_order(void)
{
    heap h = HEAP_INIT;
    item it[5];
    for (int i = 0; i < 5; i++) {
        it[i].id = i;
        heap_node_init(&it[i].node);
        CHECK_INT(heap_set(&h, &it[i].node, 100), 0);
    }
    CHECK_INT(heap_set(&h, &it[1].node, 100), 0);      /* re-armed: now behind the others */
    CHECK_INT(heap_set(&h, &it[3].node, 50), 0);       /* earlier: first whatever its sequence */
    int want[] = {3, 0, 2, 4, 1};
    for (int i = 0; i < 5; i++) {
        item *x = of(heap_pop(&h));
        CHECK(x && x->id == want[i]);
        CHECK(x && !heap_linked(&x->node));
    }
    CHECK(heap_pop(&h) == NULL);
    CHECK(heap_top(&h) == NULL);
    heap_free(&h);
}

static void test_remove_from_the_middle(void)
{
    heap h = HEAP_INIT;
    item it[64];
    for (int i = 0; i < 64; i++) {
        it[i].id = i;
        heap_node_init(&it[i].node);
        heap_set(&h, &it[i].node, (i * 37) % 64);
    }
    for (int i = 0; i < 64; i += 3)
        heap_remove(&h, &it[i].node);
    heap_remove(&h, &it[0].node);                       /* twice: nothing */
    CHECK(valid(&h));
    CHECK_INT(heap_len(&h), 64 - 22);
    int64_t last = -1;
    int n = 0;
    for (item *x; (x = of(heap_pop(&h))); n++) {
        CHECK(x->id % 3 != 0);
        CHECK(x->node.deadline >= last);
        last = x->node.deadline;
    }
    CHECK_INT(n, 64 - 22);
    heap_free(&h);
}

/* Owners free their elements first (the outbox frees its queues, then the heap): heap_free must
 * not reach into them. ASan reports it if it does. */
static void test_free_touches_no_node(void)
{
    heap h = HEAP_INIT;
    item *a = malloc(sizeof *a);
    heap_node_init(&a->node);
    heap_set(&h, &a->node, 1);
    free(a);
    heap_free(&h);
    CHECK(h.nodes == NULL && h.len == 0 && h.cap == 0);
}

/* The earliest linked item by (deadline, order of heap_set), found by a scan. */
static item *reference_min(item *it, int n)
{
    item *m = NULL;
    for (int i = 0; i < n; i++)
        if (heap_linked(&it[i].node) &&
            (!m || it[i].deadline < m->deadline ||
             (it[i].deadline == m->deadline && it[i].order < m->order)))
            m = &it[i];
    return m;
}

static void test_random_operations_match_a_reference(void)
{
    enum { N = 300 };
    static item it[N];
    heap h = HEAP_INIT;
    uint64_t order = 0;
    int linked = 0, failed_before = unit_failed_checks;
    for (int i = 0; i < N; i++) {
        it[i].id = i;
        heap_node_init(&it[i].node);
    }
    srand(13);
    for (int step = 0; step < 60000; step++) {
        item *x = &it[rand() % N];
        int op = rand() % 10;
        if (op < 5) {                                     /* arm or move; few deadlines: many ties */
            int was = heap_linked(&x->node);
            x->deadline = rand() % 40;
            x->order = order++;
            CHECK_INT(heap_set(&h, &x->node, x->deadline), 0);
            linked += !was;
        } else if (op < 8) {
            linked -= heap_linked(&x->node);
            heap_remove(&h, &x->node);
        } else {
            item *want = reference_min(it, N);
            CHECK(of(heap_top(&h)) == want);
            item *got = of(heap_pop(&h));
            CHECK(got == want);
            linked -= got != NULL;
        }
        CHECK_INT(heap_len(&h), linked);
        if (step % 97 == 0)
            CHECK(valid(&h));
        if (unit_failed_checks != failed_before)
            break;            /* one report, not thousands */
    }
    for (item *prev = NULL, *x; (x = of(heap_pop(&h))); prev = x)
        CHECK(!prev || prev->deadline < x->deadline ||
              (prev->deadline == x->deadline && prev->order < x->order));
    heap_free(&h);
}

UNIT_MAIN("heap",
          CASE(test_ties_leave_in_arming_order),
          CASE(test_remove_from_the_middle),
          CASE(test_free_touches_no_node),
          CASE(test_random_operations_match_a_reference))
