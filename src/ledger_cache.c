/* ledger_cache.c — the blocked/gone marks kept in memory, so that every attempt checks the
 * ledger without a database read. A hash of conversation ids; the outbox keeps it in step. */
#include "ledger_cache.h"
#include "strhash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEDGER_BUCKETS 65536

typedef struct ledger_entry {
    char *conversation_id;
    char state[8];
    struct ledger_entry *next;
} ledger_entry;

struct ledger_cache {
    ledger_entry **b;
};

ledger_cache *ledger_cache_new(void)
{
    ledger_cache *lc = calloc(1, sizeof *lc);
    if (lc && !(lc->b = calloc(LEDGER_BUCKETS, sizeof *lc->b))) {
        free(lc);
        return NULL;
    }
    return lc;
}

void ledger_cache_free(ledger_cache *lc)
{
    if (!lc)
        return;
    for (int i = 0; i < LEDGER_BUCKETS; i++) {
        ledger_entry *e = lc->b[i];
        while (e) {
            ledger_entry *n = e->next;
            free(e->conversation_id);
            free(e);
            e = n;
        }
    }
    free(lc->b);
    free(lc);
}

static ledger_entry *find(const ledger_cache *lc, const char *conv)
{
    for (ledger_entry *e = lc->b[strhash(conv, LEDGER_BUCKETS - 1)]; e; e = e->next)
        if (strcmp(e->conversation_id, conv) == 0)
            return e;
    return NULL;
}

void ledger_cache_set(ledger_cache *lc, const char *conv, const char *state)
{
    ledger_entry *e = find(lc, conv);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e || !(e->conversation_id = strdup(conv))) {
            free(e);
            return;
        }
        unsigned b = strhash(conv, LEDGER_BUCKETS - 1);
        e->next = lc->b[b];
        lc->b[b] = e;
    }
    snprintf(e->state, sizeof e->state, "%s", state);
}

const char *ledger_cache_get(const ledger_cache *lc, const char *conv)
{
    ledger_entry *e = conv ? find(lc, conv) : NULL;
    return e ? e->state : NULL;
}

int ledger_cache_remove(ledger_cache *lc, const char *conv, char state[8])
{
    for (ledger_entry **pp = &lc->b[strhash(conv, LEDGER_BUCKETS - 1)]; *pp; pp = &(*pp)->next) {
        ledger_entry *e = *pp;
        if (strcmp(e->conversation_id, conv) != 0)
            continue;
        *pp = e->next;
        memcpy(state, e->state, sizeof e->state);
        free(e->conversation_id);
        free(e);
        return 1;
    }
    return 0;
}
