/* store_outbox.c — prepared statements over the outbox, attempts, message keys and ledger tables
 * (schema in store.c's migration 3). Writes run inside the store's group-commit batch when one is
 * open, so a burst of sends costs one commit. A new operation is refused while the store is
 * degraded; what happens to operations already under way (attempts, final states, keys, ledger)
 * is kept for replay instead, so a send that went out is never forgotten. */
#include "store_outbox.h"
#include "err.h"
#include "store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct store_outbox {
    store *s;
    sqlite3 *db;
    sqlite3_stmt *insert, *retry, *finish, *attempt, *load, *key_get, *key_put, *ledger_mark,
        *ledger_clear, *ledger_load, *ledger_list, *purge_ops, *purge_attempts, *count_category,
        *count_finished;
};

static const store_statement statements[] = {
    {offsetof(store_outbox, insert),
     "INSERT INTO outbox (kind, queue, conversation_id, service_url, tenant_id, target_id, msg_key,"
     " body, flags, state, attempts, next_attempt_at, created_at, expires_at, category,"
     " service_url_seal)"
     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'queued', 0, ?10, ?11, ?12, ?13, ?14)"},
    {offsetof(store_outbox, count_category),
     "SELECT count(*), min(created_at) FROM outbox WHERE conversation_id = ?1 AND category = ?2"
     " AND created_at >= ?3 AND state IN ('queued', 'sent')"},
    {offsetof(store_outbox, retry),
     "UPDATE outbox SET attempts = ?2, next_attempt_at = ?3, last_status = ?4, last_code = ?5,"
     " last_error = ?6 WHERE id = ?1"},
    {offsetof(store_outbox, finish),
     "UPDATE outbox SET state = ?2, attempts = ?3, finished_at = ?4, last_status = ?5,"
     " last_code = ?6, last_error = ?7, result_id = ?8, result_extra = ?9, body = NULL"
     " WHERE id = ?1"},
    {offsetof(store_outbox, attempt),
     "INSERT INTO outbox_attempts (op_id, at, status, code, error) VALUES (?1, ?2, ?3, ?4, ?5)"},
    {offsetof(store_outbox, load),
     "SELECT id, kind, queue, conversation_id, service_url, tenant_id, target_id, msg_key, body,"
     " flags, attempts, next_attempt_at, created_at, expires_at, service_url_seal"
     " FROM outbox WHERE state = 'queued' ORDER BY id"},
    {offsetof(store_outbox, key_get),
     "SELECT activity_id FROM message_keys WHERE conversation_id = ?1 AND key = ?2"},
    {offsetof(store_outbox, key_put),
     "INSERT INTO message_keys (conversation_id, key, activity_id, updated_at)"
     " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(conversation_id, key) DO UPDATE SET"
     " activity_id = excluded.activity_id, updated_at = excluded.updated_at"},
    /* who blocked: the identity comes from the stored reference at the time of marking */
    {offsetof(store_outbox, ledger_mark),
     "INSERT INTO ledger (conversation_id, state, code, message, tenant_id, user_id, user_aad_id,"
     " user_name, at, cleared_at)"
     " SELECT ?1, ?2, ?3, ?4, c.tenant_id, c.user_id, c.user_aad_id, c.user_name, ?5, NULL"
     " FROM (SELECT 1) LEFT JOIN conversations c ON c.id = ?1 WHERE true"
     " ON CONFLICT(conversation_id) DO UPDATE SET state = excluded.state, code = excluded.code,"
     " message = excluded.message, tenant_id = excluded.tenant_id, user_id = excluded.user_id,"
     " user_aad_id = excluded.user_aad_id, user_name = excluded.user_name, at = excluded.at,"
     " cleared_at = NULL"},
    {offsetof(store_outbox, ledger_clear),
     "UPDATE ledger SET cleared_at = ?2 WHERE conversation_id = ?1 AND cleared_at IS NULL"},
    /* the same rows as purge_ops (same order and limit), counted before it deletes them */
    {offsetof(store_outbox, count_finished),
     "SELECT state, count(*) FROM (SELECT state FROM outbox WHERE finished_at < ?1"
     " AND state <> 'queued' ORDER BY finished_at, id LIMIT ?2) GROUP BY state"},
    {offsetof(store_outbox, purge_ops),
     "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE finished_at < ?1"
     " AND state <> 'queued' ORDER BY finished_at, id LIMIT ?2)"},
    {offsetof(store_outbox, purge_attempts),
     "DELETE FROM outbox_attempts WHERE rowid IN (SELECT rowid FROM outbox_attempts"
     " WHERE at < ?1 LIMIT ?2)"},
    {offsetof(store_outbox, ledger_load),
     "SELECT conversation_id, state FROM ledger WHERE cleared_at IS NULL"},
    /* the rows `herald blocked` shows (report.c), one page in conversation-id order: a compound
     * ORDER BY the arms' primary keys merges the two index scans and stops at the limit (an outer
     * query over the union would sort everything after ?1 for every page) */
    {offsetof(store_outbox, ledger_list),
     "SELECT conversation_id, state, code, message, user_id, user_aad_id, user_name, tenant_id, at"
     " FROM ledger WHERE cleared_at IS NULL AND conversation_id > ?1"
     " AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR tenant_id = ?3) AND at >= ?4"
     " UNION ALL"
     " SELECT id, 'uninstalled', NULL, NULL, user_id, user_aad_id, user_name, tenant_id,"
     " uninstalled_at FROM conversations c WHERE installed = 0 AND id > ?1"
     " AND (?2 IS NULL OR ?2 = 'uninstalled') AND (?3 IS NULL OR tenant_id = ?3)"
     " AND uninstalled_at >= ?4 AND NOT EXISTS"
     " (SELECT 1 FROM ledger l WHERE l.conversation_id = c.id AND l.cleared_at IS NULL)"
     " ORDER BY 1 LIMIT ?5"},
};

#define NSTATEMENTS (sizeof statements / sizeof statements[0])

store_outbox *store_outbox_open(store *s, char **err)
{
    store_outbox *o = calloc(1, sizeof *o);
    if (!o) {
        set_err(err, "out of memory");
        return NULL;
    }
    o->s = s;
    o->db = store_db(s);
    if (store_prepare_set(o->db, o, statements, NSTATEMENTS, err) < 0) {
        store_outbox_close(o);
        return NULL;
    }
    return o;
}

void store_outbox_close(store_outbox *o)
{
    if (!o)
        return;
    store_finalize_set(o, statements, NSTATEMENTS);
    free(o);
}

static void status_or_null(sqlite3_stmt *st, int i, int status)
{
    if (status)
        sqlite3_bind_int(st, i, status);
    else
        sqlite3_bind_null(st, i);
}

int store_outbox_insert(store_outbox *o, store_op *op, char **err)
{
    sqlite3_stmt *st = o->insert;
    store_bind_text(st, 1, op->kind);
    store_bind_text(st, 2, op->queue);
    store_bind_text(st, 3, op->conversation_id);
    store_bind_text(st, 4, op->service_url);
    store_bind_text(st, 5, op->tenant_id);
    store_bind_text(st, 6, op->target_id);
    store_bind_text(st, 7, op->msg_key);
    store_bind_text(st, 8, op->body);
    sqlite3_bind_int(st, 9, op->flags);
    sqlite3_bind_int64(st, 10, op->next_attempt_at);
    sqlite3_bind_int64(st, 11, op->created_at);
    sqlite3_bind_int64(st, 12, op->expires_at);
    store_bind_text(st, 13, op->category);
    store_bind_text(st, 14, op->service_url_seal);
    if (store_step(o->s, st, "insert outbox operation", err) < 0)
        return -1;
    op->id = sqlite3_last_insert_rowid(o->db);
    return 0;
}

static int record_attempt(store_outbox *o, int64_t op_id, int64_t at, int status, const char *code,
                          const char *error, char **err)
{
    sqlite3_stmt *st = o->attempt;
    sqlite3_bind_int64(st, 1, op_id);
    sqlite3_bind_int64(st, 2, at);
    status_or_null(st, 3, status);
    store_bind_text(st, 4, code);
    store_bind_text(st, 5, error);
    return store_step_kept(o->s, st, "record attempt", err);
}

int store_outbox_note_attempt(store_outbox *o, int64_t op_id, int64_t at, const char *code,
                              const char *error, char **err)
{
    return record_attempt(o, op_id, at, 0, code, error, err);
}

int store_outbox_retry(store_outbox *o, int64_t op_id, int attempts, int64_t at, int status,
                       const char *code, const char *error, int64_t next_attempt_at, char **err)
{
    if (record_attempt(o, op_id, at, status, code, error, err) < 0)
        return -1;
    sqlite3_stmt *st = o->retry;
    sqlite3_bind_int64(st, 1, op_id);
    sqlite3_bind_int(st, 2, attempts);
    sqlite3_bind_int64(st, 3, next_attempt_at);
    status_or_null(st, 4, status);
    store_bind_text(st, 5, code);
    store_bind_text(st, 6, error);
    return store_step_kept(o->s, st, "update outbox operation", err);
}

int store_outbox_finish(store_outbox *o, int64_t op_id, const char *state, int attempts,
                        int64_t at, int status, const char *code, const char *error,
                        const char *result_id, const char *result_extra, char **err)
{
    if (attempts > 0 && (status || code) &&
        record_attempt(o, op_id, at, status, code, error, err) < 0)
        return -1;
    sqlite3_stmt *st = o->finish;
    sqlite3_bind_int64(st, 1, op_id);
    store_bind_text(st, 2, state);
    sqlite3_bind_int(st, 3, attempts);
    sqlite3_bind_int64(st, 4, at);
    status_or_null(st, 5, status);
    store_bind_text(st, 6, code);
    store_bind_text(st, 7, error);
    store_bind_text(st, 8, result_id);
    store_bind_text(st, 9, result_extra);
    return store_step_kept(o->s, st, "finish outbox operation", err);
}

int store_outbox_load(store_outbox *o, int (*fn)(const store_op *op, void *ud), void *ud,
                      char **err)
{
    sqlite3_stmt *st = o->load;
    int rc, n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_op op = {0};
        op.id = sqlite3_column_int64(st, 0);
        op.kind = (const char *)sqlite3_column_text(st, 1);
        op.queue = (const char *)sqlite3_column_text(st, 2);
        op.conversation_id = (const char *)sqlite3_column_text(st, 3);
        op.service_url = (const char *)sqlite3_column_text(st, 4);
        op.tenant_id = (const char *)sqlite3_column_text(st, 5);
        op.target_id = (const char *)sqlite3_column_text(st, 6);
        op.msg_key = (const char *)sqlite3_column_text(st, 7);
        op.body = (const char *)sqlite3_column_text(st, 8);
        op.flags = sqlite3_column_int(st, 9);
        op.attempts = sqlite3_column_int(st, 10);
        op.next_attempt_at = sqlite3_column_int64(st, 11);
        op.created_at = sqlite3_column_int64(st, 12);
        op.expires_at = sqlite3_column_int64(st, 13);
        op.service_url_seal = (const char *)sqlite3_column_text(st, 14);
        n++;
        if (fn(&op, ud))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        set_err(err, "store: load outbox: %s", sqlite3_errmsg(o->db));
        sqlite3_reset(st);
        return -1;
    }
    sqlite3_reset(st);
    return n;
}

int store_key_get(store_outbox *o, const char *conversation_id, const char *key,
                  char **activity_id, char **err)
{
    sqlite3_stmt *st = o->key_get;
    store_bind_text(st, 1, conversation_id);
    store_bind_text(st, 2, key);
    int rc = sqlite3_step(st), found = 0;
    if (rc == SQLITE_ROW) {
        *activity_id = strdup((const char *)sqlite3_column_text(st, 0));
        found = *activity_id ? 1 : -1;
    } else if (rc != SQLITE_DONE) {
        set_err(err, "store: read message key: %s", sqlite3_errmsg(o->db));
        found = -1;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return found;
}

int store_key_put(store_outbox *o, const char *conversation_id, const char *key,
                  const char *activity_id, int64_t now, char **err)
{
    sqlite3_stmt *st = o->key_put;
    store_bind_text(st, 1, conversation_id);
    store_bind_text(st, 2, key);
    store_bind_text(st, 3, activity_id);
    sqlite3_bind_int64(st, 4, now);
    return store_step_kept(o->s, st, "store message key", err);
}

int store_ledger_mark(store_outbox *o, const char *conversation_id, const char *state,
                      const char *code, const char *message, int64_t at, char **err)
{
    sqlite3_stmt *st = o->ledger_mark;
    store_bind_text(st, 1, conversation_id);
    store_bind_text(st, 2, state);
    store_bind_text(st, 3, code);
    store_bind_text(st, 4, message);
    sqlite3_bind_int64(st, 5, at);
    return store_step_kept(o->s, st, "mark ledger", err);
}

int store_ledger_clear(store_outbox *o, const char *conversation_id, int64_t at, char **err)
{
    sqlite3_stmt *st = o->ledger_clear;
    store_bind_text(st, 1, conversation_id);
    sqlite3_bind_int64(st, 2, at);
    return store_step_kept(o->s, st, "clear ledger", err);
}

int store_ledger_load(store_outbox *o, int (*fn)(const char *conversation_id, const char *state,
                                                 void *ud), void *ud, char **err)
{
    sqlite3_stmt *st = o->ledger_load;
    int rc, n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        n++;
        if (fn((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1), ud))
            break;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        set_err(err, "store: load ledger: %s", sqlite3_errmsg(o->db));
        return -1;
    }
    return n;
}

int store_outbox_count_finished(store_outbox *o, int64_t before, int limit,
                                void (*fn)(const char *state, int64_t n, void *ud), void *ud,
                                char **err)
{
    sqlite3_stmt *st = o->count_finished;
    sqlite3_bind_int64(st, 1, before);
    sqlite3_bind_int(st, 2, limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn((const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1), ud);
    if (rc != SQLITE_DONE)
        set_err(err, "store: count finished operations: %s", sqlite3_errmsg(o->db));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int store_ledger_list(store_outbox *o, const char *state, const char *tenant_id, int64_t since_ms,
                      const char *after, int limit,
                      int (*fn)(const store_ledger_entry *e, void *ud), void *ud, char **err)
{
    sqlite3_stmt *st = o->ledger_list;
    store_bind_text(st, 1, after ? after : "");
    store_bind_text(st, 2, state);
    store_bind_text(st, 3, tenant_id);
    sqlite3_bind_int64(st, 4, since_ms);
    sqlite3_bind_int(st, 5, limit);
    int rc, n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_ledger_entry e = {
            .conversation_id = (const char *)sqlite3_column_text(st, 0),
            .state = (const char *)sqlite3_column_text(st, 1),
            .code = (const char *)sqlite3_column_text(st, 2),
            .message = (const char *)sqlite3_column_text(st, 3),
            .user_id = (const char *)sqlite3_column_text(st, 4),
            .user_aad_id = (const char *)sqlite3_column_text(st, 5),
            .user_name = (const char *)sqlite3_column_text(st, 6),
            .tenant_id = (const char *)sqlite3_column_text(st, 7),
            .since = sqlite3_column_int64(st, 8),
        };
        n++;
        if (fn(&e, ud))
            break;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        set_err(err, "store: list ledger: %s", sqlite3_errmsg(o->db));
        return -1;
    }
    return n;
}

int store_outbox_purge(store_outbox *o, int64_t before, int limit, char **err)
{
    sqlite3_bind_int64(o->purge_ops, 1, before);
    sqlite3_bind_int(o->purge_ops, 2, limit);
    if (store_step(o->s, o->purge_ops, "purge finished operations", err) < 0)
        return -1;
    int n = sqlite3_changes(o->db);
    sqlite3_bind_int64(o->purge_attempts, 1, before);
    sqlite3_bind_int(o->purge_attempts, 2, limit * 2);
    if (store_step(o->s, o->purge_attempts, "purge attempts", err) < 0)
        return -1;
    return n + sqlite3_changes(o->db);
}

int store_outbox_count_category(store_outbox *o, const char *conversation_id, const char *category,
                                int64_t since, int64_t *oldest, char **err)
{
    sqlite3_stmt *st = o->count_category;
    store_bind_text(st, 1, conversation_id);
    store_bind_text(st, 2, category);
    sqlite3_bind_int64(st, 3, since);
    int n = -1;
    if (sqlite3_step(st) == SQLITE_ROW) {
        n = sqlite3_column_int(st, 0);
        *oldest = sqlite3_column_int64(st, 1);
    } else {
        set_err(err, "store: count category: %s", sqlite3_errmsg(o->db));
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return n;
}
