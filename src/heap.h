/* heap.h — one intrusive binary min-heap on (deadline, sequence), shared by the outbox's queues,
 * the script's timers and the virtual clock. An element embeds a heap_node; the heap owns only its
 * array of node pointers, never the elements. */
#ifndef HERALD_HEAP_H
#define HERALD_HEAP_H

#include <stddef.h>
#include <stdint.h>

/* Each node knows its slot, so removing or moving one is O(log n) with no search. */
typedef struct heap_node {
    int64_t deadline;
    uint64_t seq;                 /* breaks deadline ties: the node (re)armed first comes first */
    int idx;                      /* slot in the heap, -1 while not in one */
} heap_node;

typedef struct heap {
    heap_node **nodes;
    int len, cap;
    uint64_t seq;                 /* the sequence number the next heap_set hands out */
} heap;

#define HEAP_INIT {NULL, 0, 0, 0}
#define heap_entry(node, type, member) ((type *)(void *)((char *)(node) - offsetof(type, member)))

/* A node must be initialised (out of any heap) before its first heap_set. */
static inline void heap_node_init(heap_node *n) { n->idx = -1; }
static inline int heap_linked(const heap_node *n) { return n->idx >= 0; }
static inline heap_node *heap_top(const heap *h) { return h->len ? h->nodes[0] : NULL; }
static inline int heap_len(const heap *h) { return h->len; }

/* Puts n at deadline behind every node already due then (a fresh sequence number), moving it if it
 * is in h already (a move always succeeds). 0, or -1 when the array cannot grow: n, not in h
 * before, is still not. */
int heap_set(heap *h, heap_node *n, int64_t deadline);
/* Takes n out of h; nothing if it is not in h. */
void heap_remove(heap *h, heap_node *n);
/* Takes the earliest node out of h and returns it; NULL when h is empty. */
heap_node *heap_pop(heap *h);
/* Frees the array without touching a node (their owners may have freed them already). */
void heap_free(heap *h);

#endif
