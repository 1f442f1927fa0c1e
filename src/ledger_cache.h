/* ledger_cache.h — the in-memory copy of the blocked/gone ledger (store_outbox.h owns the rows):
 * which conversations the outbox refuses to attempt until they are heard from again. */
#ifndef HERALD_LEDGER_CACHE_H
#define HERALD_LEDGER_CACHE_H

typedef struct ledger_cache ledger_cache;

ledger_cache *ledger_cache_new(void);
void ledger_cache_free(ledger_cache *lc);

/* Marks conversation_id "blocked" or "gone" (a mark it already had is replaced). A mark that
 * cannot be allocated is dropped: the row in the store still holds it for the next start. */
void ledger_cache_set(ledger_cache *lc, const char *conversation_id, const char *state);
/* "blocked" / "gone" / NULL; valid until the mark changes or goes. */
const char *ledger_cache_get(const ledger_cache *lc, const char *conversation_id);
/* Removes the mark: 1 with its state copied to state (8 bytes), 0 when there was none. */
int ledger_cache_remove(ledger_cache *lc, const char *conversation_id, char state[8]);

#endif
