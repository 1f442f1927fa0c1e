/* store_outbox.h — the outbox's tables in SQLite: operations and their attempts, message keys,
 * and the blocked/gone ledger. Prepared statements only; writes join the store's batch. */
#ifndef HERALD_STORE_OUTBOX_H
#define HERALD_STORE_OUTBOX_H

#include <stdint.h>

typedef struct store store;
typedef struct store_outbox store_outbox;

typedef struct store_op {
    int64_t id;                   /* set by insert */
    const char *kind;             /* send | reply | update | delete | create */
    const char *queue;            /* ordering key */
    const char *conversation_id;
    const char *service_url;
    const char *service_url_seal; /* trust_seal of (conversation_id or queue, service_url), or NULL */
    const char *tenant_id;
    const char *target_id;
    const char *msg_key;
    const char *body;
    const char *category;         /* opt-out / frequency-cap category, or NULL */
    int flags;
    int attempts;
    int64_t next_attempt_at, created_at, expires_at;   /* unix ms */
} store_op;

store_outbox *store_outbox_open(store *s, char **err);
void store_outbox_close(store_outbox *o);

/* Each returns 0, or -1 with *err (malloc'd). */
int store_outbox_insert(store_outbox *o, store_op *op, char **err);
/* Records a failed attempt and when the next one is due. */
int store_outbox_retry(store_outbox *o, int64_t op_id, int attempts, int64_t at, int status,
                       const char *code, const char *error, int64_t next_attempt_at, char **err);
/* Records an attempt that changes nothing else (status 0: no answer), such as a copy libcurl
 * re-sent by itself (code "resent"). */
int store_outbox_note_attempt(store_outbox *o, int64_t op_id, int64_t at, const char *code,
                              const char *error, char **err);
/* Records the final attempt (status may be 0 for no attempt) and the final state. */
int store_outbox_finish(store_outbox *o, int64_t op_id, const char *state, int attempts,
                        int64_t at, int status, const char *code, const char *error,
                        const char *result_id, const char *result_extra, char **err);
/* Calls fn for every queued op in id order (restart); stops when fn returns non-zero. */
int store_outbox_load(store_outbox *o, int (*fn)(const store_op *op, void *ud), void *ud,
                      char **err);

/* Message keys: 1 found (*activity_id malloc'd), 0 not found, -1 error. */
int store_key_get(store_outbox *o, const char *conversation_id, const char *key,
                  char **activity_id, char **err);
int store_key_put(store_outbox *o, const char *conversation_id, const char *key,
                  const char *activity_id, int64_t now, char **err);

/* Ledger: a conversation marked blocked or gone, with who and when; cleared when heard from. */
int store_ledger_mark(store_outbox *o, const char *conversation_id, const char *state,
                      const char *code, const char *message, int64_t at, char **err);
int store_ledger_clear(store_outbox *o, const char *conversation_id, int64_t at, char **err);
/* Calls fn for every active (uncleared) ledger entry. */
int store_ledger_load(store_outbox *o, int (*fn)(const char *conversation_id, const char *state,
                                                 void *ud), void *ud, char **err);

/* One entry of the ledger as the reports show it: an uncleared blocked/gone mark, or an
 * uninstalled conversation with no such mark. Strings may be NULL and live until the callback
 * returns. */
typedef struct store_ledger_entry {
    const char *conversation_id, *state, *code, *message;
    const char *user_id, *user_aad_id, *user_name, *tenant_id;
    int64_t since;                /* unix ms: when marked or uninstalled */
} store_ledger_entry;

/* Calls fn for up to limit entries whose conversation id sorts after after (NULL: from the start),
 * in conversation-id order, matching state, tenant_id (NULL: any) and since >= since_ms (0: any).
 * Both tables are read by their primary keys from `after` on, so a page costs its own rows, not
 * the whole ledger. Returns the number of entries, or -1 with *err. */
int store_ledger_list(store_outbox *o, const char *state, const char *tenant_id, int64_t since_ms,
                      const char *after, int limit,
                      int (*fn)(const store_ledger_entry *e, void *ud), void *ud, char **err);

/* Operations to conversation in category created since `since` that did not fail (frequency
 * caps); the oldest one's creation time in *oldest. Returns the count or -1. */
int store_outbox_count_category(store_outbox *o, const char *conversation_id, const char *category,
                                int64_t since, int64_t *oldest, char **err);

/* Counts finished operations per state, fn(state, n, ud) for each: all of them (before
 * INT64_MAX, limit -1), or those the same purge call would delete. Returns 0 or -1 with *err. */
int store_outbox_count_finished(store_outbox *o, int64_t before, int limit,
                                void (*fn)(const char *state, int64_t n, void *ud), void *ud,
                                char **err);

/* Deletes up to limit finished operations (and their attempts) finished before `before`.
 * Returns the number of rows deleted, or -1 with *err. */
int store_outbox_purge(store_outbox *o, int64_t before, int limit, char **err);

#endif
