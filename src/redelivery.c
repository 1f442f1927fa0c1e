/* redelivery.c — a chained hash of recently seen (conversation, activity id) keys with a FIFO in
 * arrival order, so expiry pops from the front in O(1) and lookups stay O(1). */
#include "redelivery.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry {
    uint64_t hash;
    int64_t at;
    struct entry *chain;          /* bucket chain */
    struct entry *newer;          /* FIFO, oldest first */
    size_t key_len;
    char key[];                   /* conversation "\n" activity id */
} entry;

struct redelivery {
    entry **buckets;
    size_t nbuckets;              /* power of two */
    size_t count, max;
    entry *oldest, *newest;
};

static uint64_t fnv1a(const char *a, const char *b)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)a; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    h = (h ^ '\n') * 1099511628211ULL;
    for (const unsigned char *p = (const unsigned char *)b; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

redelivery *redelivery_new(size_t max_entries)
{
    redelivery *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->max = max_entries ? max_entries : 1;
    r->nbuckets = 1024;
    while (r->nbuckets < r->max)
        r->nbuckets <<= 1;
    r->buckets = calloc(r->nbuckets, sizeof *r->buckets);
    if (!r->buckets) {
        free(r);
        return NULL;
    }
    return r;
}

void redelivery_free(redelivery *r)
{
    if (!r)
        return;
    for (entry *e = r->oldest, *n; e; e = n) {
        n = e->newer;
        free(e);
    }
    free(r->buckets);
    free(r);
}

size_t redelivery_size(const redelivery *r) { return r->count; }

static void drop_oldest(redelivery *r)
{
    entry *e = r->oldest;
    entry **pp = &r->buckets[e->hash & (r->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    r->oldest = e->newer;
    if (!r->oldest)
        r->newest = NULL;
    r->count--;
    free(e);
}

int redelivery_check(redelivery *r, const char *conversation_id, const char *activity_id,
                     int64_t now_ms, int64_t window_ms)
{
    while (r->oldest && r->oldest->at <= now_ms - window_ms)
        drop_oldest(r);
    uint64_t h = fnv1a(conversation_id, activity_id);
    size_t clen = strlen(conversation_id), alen = strlen(activity_id);
    for (entry *e = r->buckets[h & (r->nbuckets - 1)]; e; e = e->chain)
        if (e->hash == h && e->key_len == clen + 1 + alen &&
            memcmp(e->key, conversation_id, clen) == 0 && e->key[clen] == '\n' &&
            memcmp(e->key + clen + 1, activity_id, alen) == 0)
            return 1;
    if (r->count >= r->max)
        drop_oldest(r);
    entry *e = malloc(sizeof *e + clen + 1 + alen + 1);
    if (!e)
        return 0;                 /* forgetting is the safe failure: the handler runs */
    e->hash = h;
    e->at = now_ms;
    e->key_len = clen + 1 + alen;
    memcpy(e->key, conversation_id, clen);
    e->key[clen] = '\n';
    memcpy(e->key + clen + 1, activity_id, alen + 1);
    size_t b = h & (r->nbuckets - 1);
    e->chain = r->buckets[b];
    r->buckets[b] = e;
    e->newer = NULL;
    if (r->newest) r->newest->newer = e; else r->oldest = e;
    r->newest = e;
    r->count++;
    return 0;
}
