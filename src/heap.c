/* heap.c — the (deadline, sequence) min-heap behind heap.h: sift up and down over an array of node
 * pointers, each node's slot kept in the node itself. */
#include "heap.h"

#include <stdlib.h>

static int before(const heap_node *a, const heap_node *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void place(heap *h, int i, heap_node *n)
{
    h->nodes[i] = n;
    n->idx = i;
}

static void sift_up(heap *h, int i)
{
    heap_node *n = h->nodes[i];
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!before(n, h->nodes[p]))
            break;
        place(h, i, h->nodes[p]);
        i = p;
    }
    place(h, i, n);
}

static void sift_down(heap *h, int i)
{
    heap_node *n = h->nodes[i];
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = l;
        if (l >= h->len)
            break;
        if (r < h->len && before(h->nodes[r], h->nodes[l]))
            m = r;
        if (!before(h->nodes[m], n))
            break;
        place(h, i, h->nodes[m]);
        i = m;
    }
    place(h, i, n);
}

int heap_set(heap *h, heap_node *n, int64_t deadline)
{
    n->deadline = deadline;
    n->seq = h->seq++;
    if (n->idx >= 0) {
        sift_down(h, n->idx);
        sift_up(h, n->idx);
        return 0;
    }
    if (h->len == h->cap) {
        int cap = h->cap ? h->cap * 2 : 16;
        heap_node **a = realloc(h->nodes, (size_t)cap * sizeof *a);
        if (!a)
            return -1;
        h->nodes = a;
        h->cap = cap;
    }
    place(h, h->len++, n);
    sift_up(h, n->idx);
    return 0;
}

void heap_remove(heap *h, heap_node *n)
{
    int i = n->idx;
    if (i < 0)
        return;
    n->idx = -1;
    h->len--;
    if (i == h->len)
        return;
    heap_node *last = h->nodes[h->len];
    place(h, i, last);
    sift_down(h, i);
    sift_up(h, last->idx);
}

heap_node *heap_pop(heap *h)
{
    heap_node *n = heap_top(h);
    if (n)
        heap_remove(h, n);
    return n;
}

void heap_free(heap *h)
{
    free(h->nodes);
    *h = (heap)HEAP_INIT;
}
