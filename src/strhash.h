/* strhash.h — the one string hash (FNV-1a) behind herald's in-memory hash tables: the outbox's
 * queues, the governor's tenants and the ledger cache. */
#ifndef HERALD_STRHASH_H
#define HERALD_STRHASH_H

/* The bucket of s in a table of mask + 1 buckets (a power of two). */
static inline unsigned strhash(const char *s, unsigned mask)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h & mask;
}

#endif
