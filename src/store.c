/* store.c — the SQLite database behind herald: connection pragmas, versioned schema migrations,
 * the prepared statements made once at open, conversation references with their install state,
 * and durability: the group-commit batch, the degraded state with its replay of kept writes, the
 * start-up checks and the one-process lock. */
#include "store.h"
#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Each migration runs in its own transaction together with the user_version bump, so a crash leaves
 * the schema at a whole version. Append new migrations; never edit a released one. The version
 * pragma is a literal because PRAGMA takes no bound parameters and SQL is never built at run time. */
#define MIGRATION(version, sql) { version, sql, "PRAGMA user_version = " #version }

static const struct migration {
    int version;
    const char *sql;
    const char *set_version;
} migrations[] = {
    MIGRATION(1,
        "CREATE TABLE conversations ("
        " id TEXT PRIMARY KEY,"
        " type TEXT,"
        " tenant_id TEXT,"
        " service_url TEXT NOT NULL,"
        " channel_id TEXT,"
        " bot_id TEXT,"
        " bot_name TEXT,"
        " user_id TEXT,"
        " user_aad_id TEXT,"
        " user_name TEXT,"
        " team_id TEXT,"
        " team_name TEXT,"
        " team_aad_group_id TEXT,"
        " team_channel_id TEXT,"
        " locale TEXT,"
        " timezone TEXT,"
        " last_activity_id TEXT,"
        " installed INTEGER NOT NULL DEFAULT 1,"
        " install_signal_at INTEGER,"
        " created_at INTEGER NOT NULL,"
        " updated_at INTEGER NOT NULL,"
        " uninstalled_at INTEGER"
        ");"
        /* find_user and find_channel match one value against several columns; single-column indexes
         * let SQLite answer the OR as a union of index lookups. No index holds installed or
         * updated_at: updated_at changes on every put, and such an index would be rewritten on
         * every inbound activity to spare a small sort in the rare find_* calls. */
        "CREATE INDEX conversations_tenant ON conversations(tenant_id);"
        "CREATE INDEX conversations_team ON conversations(team_id);"
        "CREATE INDEX conversations_team_channel ON conversations(team_channel_id);"
        "CREATE INDEX conversations_user ON conversations(user_id);"
        "CREATE INDEX conversations_user_aad ON conversations(user_aad_id);"),
    /* The HMAC seal of (id, service_url) made by a process holding the app's secret: the bearer
     * token only goes to a stored service URL whose seal verifies (trust.c). */
    MIGRATION(2, "ALTER TABLE conversations ADD COLUMN service_url_seal TEXT;"),
    /* The durable outbox (store_outbox.c): an operation is a row before its first attempt. */
    MIGRATION(3,
        "CREATE TABLE outbox ("
        " id INTEGER PRIMARY KEY,"
        " kind TEXT NOT NULL,"                 /* send | reply | update | delete | create */
        " queue TEXT NOT NULL,"                /* ordering key: the conversation id */
        " conversation_id TEXT,"
        " service_url TEXT NOT NULL,"
        " tenant_id TEXT,"
        " target_id TEXT,"                     /* reply-to / updated / deleted activity id */
        " msg_key TEXT,"                       /* the script's key for the message */
        " body TEXT,"
        " flags INTEGER NOT NULL DEFAULT 0,"
        " state TEXT NOT NULL,"                /* queued | sent | blocked | not_found | rejected | expired | failed */
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " next_attempt_at INTEGER NOT NULL,"
        " created_at INTEGER NOT NULL,"
        " expires_at INTEGER NOT NULL,"
        " finished_at INTEGER,"
        " result_id TEXT,"
        " result_extra TEXT,"
        " last_status INTEGER,"
        " last_code TEXT,"
        " last_error TEXT);"
        "CREATE INDEX outbox_open ON outbox(state, id) WHERE state = 'queued';"
        "CREATE INDEX outbox_finished ON outbox(finished_at);"
        "CREATE TABLE outbox_attempts ("
        " op_id INTEGER NOT NULL,"
        " at INTEGER NOT NULL,"
        " status INTEGER,"
        " code TEXT,"
        " error TEXT);"
        "CREATE INDEX outbox_attempts_op ON outbox_attempts(op_id);"
        "CREATE INDEX outbox_attempts_at ON outbox_attempts(at);"
        "CREATE TABLE message_keys ("
        " conversation_id TEXT NOT NULL,"
        " key TEXT NOT NULL,"
        " activity_id TEXT NOT NULL,"
        " updated_at INTEGER NOT NULL,"
        " PRIMARY KEY (conversation_id, key)) WITHOUT ROWID;"
        "CREATE TABLE ledger ("
        " conversation_id TEXT PRIMARY KEY,"
        " state TEXT NOT NULL,"                /* blocked | gone */
        " code TEXT,"
        " message TEXT,"
        " tenant_id TEXT,"
        " user_id TEXT,"
        " user_aad_id TEXT,"
        " user_name TEXT,"
        " at INTEGER NOT NULL,"
        " cleared_at INTEGER);"),
    /* Durable schedules (scheduler.c): times are unix seconds; the partial index is the wake-up
     * source, so finding the next instant among millions of rows is one index seek. */
    MIGRATION(4,
        "CREATE TABLE schedules ("
        " id TEXT PRIMARY KEY,"
        " handler TEXT NOT NULL,"
        " kind TEXT NOT NULL,"
        " expr TEXT NOT NULL,"
        " tz TEXT,"
        " conversation_id TEXT,"
        " payload TEXT,"
        " missed TEXT NOT NULL DEFAULT 'once',"
        " anchor INTEGER,"
        " next_fire_at INTEGER,"
        " waiting_handler INTEGER NOT NULL DEFAULT 0,"
        " last_fire_at INTEGER,"
        " last_result TEXT,"
        " runs INTEGER NOT NULL DEFAULT 0,"
        " created_at INTEGER NOT NULL,"
        " updated_at INTEGER NOT NULL);"
        "CREATE INDEX schedules_due ON schedules(next_fire_at)"
        " WHERE next_fire_at IS NOT NULL AND waiting_handler = 0;"
        "CREATE INDEX schedules_conversation ON schedules(conversation_id);"),
    /* Notifications at scale (broadcast.c, outbox categories): opt-outs per subject (a conversation
     * or a user) and category; durable broadcast jobs with one row per recipient. */
    MIGRATION(5,
        "ALTER TABLE outbox ADD COLUMN category TEXT;"
        "CREATE INDEX outbox_category ON outbox(conversation_id, category, created_at)"
        " WHERE category IS NOT NULL;"
        "CREATE TABLE opt_outs ("
        " subject TEXT NOT NULL,"
        " category TEXT NOT NULL,"
        " at INTEGER NOT NULL,"
        " PRIMARY KEY (subject, category)) WITHOUT ROWID;"
        "CREATE TABLE broadcasts ("
        " id INTEGER PRIMARY KEY,"
        " name TEXT,"
        " state TEXT NOT NULL,"  /* preparing | running | paused | cancelled | done | abandoned */
        " body TEXT,"                         /* the message when it is the same for everyone */
        " category TEXT,"
        " total INTEGER NOT NULL DEFAULT 0,"
        " created_at INTEGER NOT NULL,"
        " updated_at INTEGER NOT NULL,"
        " finished_at INTEGER);"
        "CREATE TABLE broadcast_recipients ("
        " broadcast_id INTEGER NOT NULL,"
        " seq INTEGER NOT NULL,"
        " conversation_id TEXT,"
        " user_id TEXT,"                      /* a user to reach 1:1 when no conversation is known */
        " tenant_id TEXT,"
        " body TEXT,"                         /* a personalised message */
        " state TEXT NOT NULL DEFAULT 'pending',"
        " op_id INTEGER,"
        " activity_id TEXT,"
        " PRIMARY KEY (broadcast_id, seq)) WITHOUT ROWID;"
        "CREATE INDEX broadcast_pending ON broadcast_recipients(broadcast_id, state, seq);"
        "CREATE UNIQUE INDEX broadcast_op ON broadcast_recipients(op_id) WHERE op_id IS NOT NULL;"),
    /* A broadcast's frequency cap travels with the job, so a restart keeps honouring it. */
    MIGRATION(6,
        "ALTER TABLE broadcasts ADD COLUMN cap_max INTEGER;"
        "ALTER TABLE broadcasts ADD COLUMN cap_per_ms INTEGER;"
        "ALTER TABLE broadcasts ADD COLUMN cap_drop INTEGER NOT NULL DEFAULT 0;"),
    /* A broadcast is created atomically: its rows are written while it is 'preparing' and become a
     * job in one UPDATE; a preparation the process died in is 'abandoned' at the next start. The
     * script's key makes creation idempotent: set at that UPDATE, unique among created jobs. */
    MIGRATION(7,
        "ALTER TABLE broadcasts ADD COLUMN key TEXT;"
        "CREATE UNIQUE INDEX broadcasts_key ON broadcasts(key) WHERE key IS NOT NULL;"),
    /* An operation's service URL sealed as the conversation's is (trust.c): a row edited or
     * inserted behind herald's back cannot send the bearer token anywhere new. */
    MIGRATION(8, "ALTER TABLE outbox ADD COLUMN service_url_seal TEXT;"),
    /* Why a schedule does not fire (scheduler.c): "uninstalled" while its conversation is; NULL
     * when it runs. A paused row has no next_fire_at, so the due index never holds it. */
    MIGRATION(9, "ALTER TABLE schedules ADD COLUMN paused TEXT;"),
    /* What a broadcast knows of a user it reaches 1:1 (a team roster's name and Entra id) is
     * stored with the conversation it creates; uninstalled conversations are listed by id
     * (teams.ledger) without reading the installed ones. */
    MIGRATION(10,
        "ALTER TABLE broadcast_recipients ADD COLUMN user_name TEXT;"
        "ALTER TABLE broadcast_recipients ADD COLUMN user_aad_id TEXT;"
        "CREATE INDEX conversations_uninstalled ON conversations(id) WHERE installed = 0;"),
    /* Why a broadcast recipient ended as it did, in the codes a single send returns (send_policy.c
     * refusals, or the outbox operation's last code): the same rule gives the same answer. */
    MIGRATION(11, "ALTER TABLE broadcast_recipients ADD COLUMN code TEXT;"),
};

#define LATEST_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* The string fields of store_reference in the column order of REF_COLUMNS and of the upsert's
 * parameters ?1..?N, so binding and reading walk one table instead of naming each field twice. */
static const size_t ref_string_fields[] = {
    offsetof(store_reference, id),
    offsetof(store_reference, type),
    offsetof(store_reference, tenant_id),
    offsetof(store_reference, service_url),
    offsetof(store_reference, channel_id),
    offsetof(store_reference, bot_id),
    offsetof(store_reference, bot_name),
    offsetof(store_reference, user_id),
    offsetof(store_reference, user_aad_id),
    offsetof(store_reference, user_name),
    offsetof(store_reference, team_id),
    offsetof(store_reference, team_name),
    offsetof(store_reference, team_aad_group_id),
    offsetof(store_reference, team_channel_id),
    offsetof(store_reference, locale),
    offsetof(store_reference, timezone),
    offsetof(store_reference, last_activity_id),
    offsetof(store_reference, service_url_seal),
};

#define REF_STRINGS ((int)(sizeof ref_string_fields / sizeof ref_string_fields[0]))

/* The indexed string fields, in the order SQL_STATE reads them from column 2. */
static const size_t ref_key_fields[] = {
    offsetof(store_reference, tenant_id),
    offsetof(store_reference, user_id),
    offsetof(store_reference, user_aad_id),
    offsetof(store_reference, team_id),
    offsetof(store_reference, team_channel_id),
};

#define REF_KEYS ((int)(sizeof ref_key_fields / sizeof ref_key_fields[0]))

#define REF_COLUMNS \
    "id, type, tenant_id, service_url, channel_id, bot_id, bot_name, user_id, user_aad_id," \
    " user_name, team_id, team_name, team_aad_group_id, team_channel_id, locale, timezone," \
    " last_activity_id, service_url_seal, installed, created_at, updated_at, uninstalled_at"

/* Among several matches, an installed conversation beats an uninstalled one (a send to a removed
 * bot fails), then the most recently updated wins; rowid breaks ties in the same millisecond. */
#define REF_PREFERENCE " ORDER BY installed DESC, updated_at DESC, rowid DESC LIMIT 1"

#define SQL_BEGIN "BEGIN IMMEDIATE"
#define SQL_COMMIT "COMMIT"
#define SQL_ROLLBACK "ROLLBACK"
#define SQL_VERSION "PRAGMA user_version"
/* Columns 2.. are the ref_key_fields, read so put can tell whether an indexed field changes. */
#define SQL_STATE \
    "SELECT installed, install_signal_at, tenant_id, user_id, user_aad_id, team_id, team_channel_id," \
    " timezone FROM conversations WHERE id = ?1"
/* Bare column names in DO UPDATE are the stored row, so coalesce(excluded.x, x) keeps what we
 * know when the activity did not carry a field. A repeated UNINSTALL keeps the first removal time. */
#define SQL_UPSERT \
    "INSERT INTO conversations (id, type, tenant_id, service_url, channel_id, bot_id, bot_name," \
    " user_id, user_aad_id, user_name, team_id, team_name, team_aad_group_id, team_channel_id," \
    " locale, timezone, last_activity_id, service_url_seal, installed, install_signal_at," \
    " created_at, updated_at, uninstalled_at)" \
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17," \
    " ?18, ?19, ?20, ?21, ?21, ?22)" \
    " ON CONFLICT(id) DO UPDATE SET" \
    " type = coalesce(excluded.type, type)," \
    " tenant_id = coalesce(excluded.tenant_id, tenant_id)," \
    " service_url = excluded.service_url," \
    " channel_id = coalesce(excluded.channel_id, channel_id)," \
    " bot_id = coalesce(excluded.bot_id, bot_id)," \
    " bot_name = coalesce(excluded.bot_name, bot_name)," \
    " user_id = coalesce(excluded.user_id, user_id)," \
    " user_aad_id = coalesce(excluded.user_aad_id, user_aad_id)," \
    " user_name = coalesce(excluded.user_name, user_name)," \
    " team_id = coalesce(excluded.team_id, team_id)," \
    " team_name = coalesce(excluded.team_name, team_name)," \
    " team_aad_group_id = coalesce(excluded.team_aad_group_id, team_aad_group_id)," \
    " team_channel_id = coalesce(excluded.team_channel_id, team_channel_id)," \
    " locale = coalesce(excluded.locale, locale)," \
    " timezone = coalesce(excluded.timezone, timezone)," \
    " last_activity_id = coalesce(excluded.last_activity_id, last_activity_id)," \
    " service_url_seal = excluded.service_url_seal," \
    " installed = excluded.installed," \
    " install_signal_at = coalesce(excluded.install_signal_at, install_signal_at)," \
    " updated_at = excluded.updated_at," \
    " uninstalled_at = CASE WHEN excluded.installed = 0" \
    "   THEN coalesce(uninstalled_at, excluded.uninstalled_at) END"
/* The common put: a known conversation whose indexed fields are unchanged or absent. Leaving them
 * out of SET means SQLite rewrites only the table row instead of also five index entries, which
 * was most of the write cost of a put. Parameters are numbered as in SQL_UPSERT (the unindexed
 * ones only) so one binding serves both statements. */
#define SQL_UPDATE \
    "UPDATE conversations SET" \
    " type = coalesce(?2, type)," \
    " service_url = ?4," \
    " channel_id = coalesce(?5, channel_id)," \
    " bot_id = coalesce(?6, bot_id)," \
    " bot_name = coalesce(?7, bot_name)," \
    " user_name = coalesce(?10, user_name)," \
    " team_name = coalesce(?12, team_name)," \
    " team_aad_group_id = coalesce(?13, team_aad_group_id)," \
    " locale = coalesce(?15, locale)," \
    " timezone = coalesce(?16, timezone)," \
    " last_activity_id = coalesce(?17, last_activity_id)," \
    " service_url_seal = ?18," \
    " installed = ?19," \
    " install_signal_at = coalesce(?20, install_signal_at)," \
    " updated_at = ?21," \
    " uninstalled_at = CASE WHEN ?19 = 0 THEN coalesce(uninstalled_at, ?22) END" \
    " WHERE id = ?1"
#define SQL_GET "SELECT " REF_COLUMNS " FROM conversations WHERE id = ?1"
#define SQL_FIND_USER \
    "SELECT " REF_COLUMNS " FROM conversations" \
    " WHERE (user_id = ?1 OR user_aad_id = ?1)" \
    " AND (?2 IS NULL OR tenant_id = ?2) AND (?3 IS NULL OR type = ?3)" REF_PREFERENCE
#define SQL_FIND_CHANNEL \
    "SELECT " REF_COLUMNS " FROM conversations" \
    " WHERE team_id = ?1 OR team_channel_id = ?1 OR id = ?1" REF_PREFERENCE
#define SQL_FIND_TENANT \
    "SELECT " REF_COLUMNS " FROM conversations WHERE tenant_id = ?1" REF_PREFERENCE
/* ?1 is '' rather than NULL for "from the start": ids are never empty, and a plain range keeps the
 * primary-key seek that makes every page cost the same however deep it is. */
#define SQL_LIST \
    "SELECT " REF_COLUMNS " FROM conversations" \
    " WHERE id > ?1" \
    " AND (?2 IS NULL OR tenant_id = ?2) AND (?3 IS NULL OR type = ?3)" \
    " AND (?4 IS NULL OR team_id = ?4) AND (?5 IS NULL OR user_id = ?5 OR user_aad_id = ?5)" \
    " AND (?6 OR installed = 1)" \
    " ORDER BY id LIMIT ?7"

/* A write kept for replay: its SQL with the values expanded in, and the rowid it made (0 when it
 * inserted nothing), so a replay that would hand out a different id is noticed. */
typedef struct kept_write {
    char *sql;                    /* sqlite3_malloc'd */
    int64_t rowid;
} kept_write;

struct store {
    sqlite3 *db;
    sqlite3_stmt *savepoint, *release, *rollback_to;
    int batch;     /* a group-commit transaction is open (store_batch_begin) */
    sqlite3_stmt *begin, *commit, *rollback, *version, *state, *upsert, *update, *get, *find_user,
        *find_channel, *find_tenant, *list, *probe, *opt_set, *opt_del, *opt_check;
    int listing;   /* the list statement is stepping: a nested list would reset it under fn */
    int degraded;  /* a storage failure; cleared by store_probe */
    int unkept;    /* writes now belong to an inbound put: not kept for replay */
    char last_error[400];
    kept_write *kept;             /* the open batch's writes, then (degraded) those to replay */
    size_t nkept, kept_cap;
    store_waiter *waiters;        /* told the outcome of the open batch's commit */
    store_waiter *notifying;      /* being told now (notify) */
};

static const store_statement statements[] = {
    {offsetof(store, begin), SQL_BEGIN},
    {offsetof(store, savepoint), "SAVEPOINT put_reference"},
    {offsetof(store, release), "RELEASE put_reference"},
    {offsetof(store, rollback_to), "ROLLBACK TO put_reference"},
    {offsetof(store, commit), SQL_COMMIT},
    {offsetof(store, rollback), SQL_ROLLBACK},
    {offsetof(store, version), SQL_VERSION},
    {offsetof(store, state), SQL_STATE},
    {offsetof(store, upsert), SQL_UPSERT},
    {offsetof(store, update), SQL_UPDATE},
    {offsetof(store, get), SQL_GET},
    {offsetof(store, find_user), SQL_FIND_USER},
    {offsetof(store, find_channel), SQL_FIND_CHANNEL},
    {offsetof(store, find_tenant), SQL_FIND_TENANT},
    {offsetof(store, opt_set), "INSERT OR REPLACE INTO opt_outs (subject, category, at) VALUES (?1, ?2, ?3)"},
    {offsetof(store, opt_del), "DELETE FROM opt_outs WHERE subject = ?1 AND category = ?2"},
    {offsetof(store, opt_check),
     "SELECT 1 FROM opt_outs WHERE subject IN (?1, ?2, ?3) AND category IN (?4, '*') LIMIT 1"},
    {offsetof(store, list), SQL_LIST},
};

#define STATEMENTS (sizeof statements / sizeof statements[0])

static const char **ref_field(const store_reference *ref, size_t offset)
{
    return (const char **)(void *)((char *)ref + offset);
}

static const char **ref_string(const store_reference *ref, int i)
{
    return ref_field(ref, ref_string_fields[i]);
}

/* Whether writing ref over the row in stmt (SQL_STATE) leaves every indexed field as it is. */
static int keys_unchanged(sqlite3_stmt *stmt, const store_reference *ref)
{
    for (int i = 0; i < REF_KEYS; i++) {
        const char *want = *ref_field(ref, ref_key_fields[i]);
        const char *have = (const char *)sqlite3_column_text(stmt, 2 + i);
        if (want && (!have || strcmp(want, have) != 0))
            return 0;
    }
    return 1;
}

static void set_db_err(store *s, char **err, const char *what)
{
    set_err(err, "store: %s: %s", what, sqlite3_errmsg(s->db));
}

/* Finishes a statement so the next use starts clean; bindings point at caller memory that is gone
 * once we return, so they are cleared too. */
static void done(sqlite3_stmt *stmt)
{
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
}

/* Runs a statement that returns no rows we need. */
static int run(store *s, sqlite3_stmt *stmt, const char *what, char **err)
{
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        set_db_err(s, err, what);
        done(stmt);
        return -1;
    }
    done(stmt);
    return 0;
}

/* ---- durability ------------------------------------------------------------------------- */

/* Errors that say the database cannot take writes now, as opposed to a write that is wrong. */
static int storage_error(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_NOMEM:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_PROTOCOL:
    case SQLITE_PERM:
        return 1;
    }
    return 0;
}

static void clear_kept(store *s, size_t from)
{
    for (size_t i = from; i < s->nkept; i++)
        sqlite3_free(s->kept[i].sql);
    s->nkept = from;
    /* a burst's array is not worth keeping for ever */
    if (!from && s->kept_cap > 4096) {
        free(s->kept);
        s->kept = NULL;
        s->kept_cap = 0;
    }
}

/* Takes ownership of sql (sqlite3_malloc'd) even on failure. */
static int keep_write(store *s, char *sql, int64_t rowid)
{
    if (s->nkept == s->kept_cap) {
        size_t cap = s->kept_cap ? s->kept_cap * 2 : 64;
        kept_write *k = realloc(s->kept, cap * sizeof *k);
        if (!k) {
            sqlite3_free(sql);
            return -1;
        }
        s->kept = k;
        s->kept_cap = cap;
    }
    s->kept[s->nkept++] = (kept_write){sql, rowid};
    return 0;
}

/* Leaves the batch for the degraded state: the transaction is rolled back (its kept writes are
 * replayed by store_probe), and why is recorded. message is sqlite's, read right after the error. */
static void degrade(store *s, const char *what, const char *message)
{
    if (!s->degraded)
        snprintf(s->last_error, sizeof s->last_error, "%s: %s", what, message);
    s->degraded = 1;
    s->batch = 0;
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, SQL_ROLLBACK, NULL, NULL, NULL);
}

enum { WRITE_ERROR = -1, WRITE_DONE = 0, WRITE_ROW = 1, WRITE_KEPT = 2 };

/* The one door for writes. In a batch: runs st and keeps its SQL (values expanded) until the
 * commit. Degraded (no batch can be open): keeps st's SQL for replay without running it when keep,
 * else refuses. Healthy outside a batch (tests, tools): runs st on its own. With want_row a ROW
 * result leaves st unreset for the caller. */
static int write_step(store *s, sqlite3_stmt *st, int keep, int want_row, const char *what,
                      char **err)
{
    if (s->degraded && !s->batch) {
        if (!keep) {
            set_err(err, "store: not writable: %s", s->last_error);
            done(st);
            return WRITE_ERROR;
        }
        char *sql = sqlite3_expanded_sql(st);
        done(st);
        if (!sql || keep_write(s, sql, 0) < 0) {
            set_err(err, "store: %s: out of memory keeping a write", what);
            return WRITE_ERROR;
        }
        return WRITE_KEPT;
    }
    char *sql = NULL;
    if (s->batch && !s->unkept && !(sql = sqlite3_expanded_sql(st))) {
        set_err(err, "store: %s: out of memory", what);
        done(st);
        return WRITE_ERROR;
    }
    int64_t before = sqlite3_last_insert_rowid(s->db);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
        int64_t after = sqlite3_last_insert_rowid(s->db);
        if (rc == SQLITE_DONE || !want_row)
            done(st);
        if (sql && keep_write(s, sql, after != before ? after : 0) < 0) {
            /* the write stands in the transaction but could not be replayed: refuse the batch */
            degrade(s, what, "out of memory keeping a write");
            set_err(err, "store: %s: out of memory", what);
            if (rc == SQLITE_ROW && want_row)
                done(st);
            return WRITE_ERROR;
        }
        return rc == SQLITE_ROW && want_row ? WRITE_ROW : WRITE_DONE;
    }
    char message[300];
    snprintf(message, sizeof message, "%s", sqlite3_errmsg(s->db));
    set_err(err, "store: %s: %s", what, message);
    done(st);
    if (s->batch && (storage_error(rc) || sqlite3_get_autocommit(s->db))) {
        degrade(s, what, message);
        if (keep && sql) {
            int kept = keep_write(s, sql, 0) == 0;      /* takes sql either way */
            if (kept && err) {
                free(*err);
                *err = NULL;
            }
            return kept ? WRITE_KEPT : WRITE_ERROR;
        }
    }
    sqlite3_free(sql);
    return WRITE_ERROR;
}

int store_writable(const store *s) { return !s->degraded; }
const char *store_last_error(const store *s) { return s->degraded ? s->last_error : NULL; }
size_t store_kept_writes(const store *s) { return s->degraded ? s->nkept : 0; }

/* Tells every waiter of the batch that just ended. A waiter's fn may unwait others (cancelling a
 * task ends its request), so they are taken off one at a time from a list of their own. */
static void notify(store *s, int committed)
{
    s->notifying = s->waiters;
    s->waiters = NULL;
    for (store_waiter *w = s->notifying; w; w = w->next)
        w->queued = 2;
    while (s->notifying) {
        store_waiter *w = s->notifying;
        s->notifying = w->next;
        if (s->notifying)
            s->notifying->prev = NULL;
        w->prev = w->next = NULL;
        w->queued = 0;
        w->fn(w, committed);
    }
}

void store_wait_commit(store *s, store_waiter *w)
{
    w->prev = NULL;
    w->next = s->waiters;
    if (s->waiters)
        s->waiters->prev = w;
    s->waiters = w;
    w->queued = 1;
}

void store_unwait(store *s, store_waiter *w)
{
    if (!w->queued)
        return;
    store_waiter **head = w->queued == 1 ? &s->waiters : &s->notifying;
    if (w->prev) w->prev->next = w->next; else *head = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->queued = 0;
}

int store_probe(store *s, size_t *anomalies, char **err)
{
    size_t odd = 0;
    if (anomalies)
        *anomalies = 0;
    if (!s->degraded)
        return 0;
    char message[300];
    const char *what = "begin";
    int rc = sqlite3_step(s->begin);
    done(s->begin);
    if (rc != SQLITE_DONE)
        goto fail;
    for (size_t i = 0; i < s->nkept; i++) {
        what = "replay a kept write";
        rc = sqlite3_exec(s->db, s->kept[i].sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            if (storage_error(rc) || sqlite3_get_autocommit(s->db))
                goto fail;
            odd++;                /* it can no longer apply: dropping it beats retrying for ever */
            continue;
        }
        if (s->kept[i].rowid && sqlite3_last_insert_rowid(s->db) != s->kept[i].rowid)
            odd++;
    }
    what = "probe write";
    rc = sqlite3_step(s->probe);
    done(s->probe);
    if (rc != SQLITE_DONE)
        goto fail;
    what = "commit";
    rc = sqlite3_step(s->commit);
    done(s->commit);
    if (rc != SQLITE_DONE)
        goto fail;
    clear_kept(s, 0);
    s->degraded = 0;
    s->last_error[0] = 0;
    if (anomalies)
        *anomalies = odd;
    return 0;
fail:
    snprintf(message, sizeof message, "%s", sqlite3_errmsg(s->db));
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, SQL_ROLLBACK, NULL, NULL, NULL);
    snprintf(s->last_error, sizeof s->last_error, "%s: %s", what, message);
    set_err(err, "store: not writable: %s", s->last_error);
    return -1;
}

int store_lock(const char *path, char **err)
{
    if (!path || strcmp(path, ":memory:") == 0)
        return -2;
    char lock[4096];
    if ((size_t)snprintf(lock, sizeof lock, "%s.lock", path) >= sizeof lock) {
        set_err(err, "store: database path too long");
        return -1;
    }
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        set_err(err, "store: cannot create the lock file %s: %s", lock, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        if (e == EWOULDBLOCK)
            set_err(err, "another herald (pid %s) is running on %s", *pid ? pid : "?", path);
        else
            set_err(err, "store: cannot lock %s: %s", lock, strerror(e));
        close(fd);
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        /* the lock holds without the pid in it; only the message of a refused second start is poorer */
    }
    return fd;
}

void store_unlock(int fd, const char *path)
{
    (void)path;
    if (fd < 0)
        return;
    /* the file stays: unlinking it would let a starting process lock an inode nobody else sees */
    if (ftruncate(fd, 0) < 0) {
        /* nothing to do: the pid only informs */
    }
    close(fd);
}

/* Used only during open, before the persistent statements exist (migrations may change the
 * schema they compile against). */
static int exec(store *s, const char *sql, const char *what, char **err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        set_err(err, "store: %s: %s", what, msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int read_version(store *s, int *version, char **err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(s->db, SQL_VERSION, -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW) {
        set_db_err(s, err, "read schema version");
        sqlite3_finalize(stmt);
        return -1;
    }
    *version = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    return 0;
}

static int refuse_newer(int version, const char *path, char **err)
{
    set_err(err, "store: %s has schema version %d but this herald knows only up to %d; "
            "refusing to open a database written by a newer herald", path, version, LATEST_VERSION);
    return -1;
}

/* The version is re-read inside each write transaction so two processes opening one fresh file
 * at once cannot both apply the same migration. */
static int migrate(store *s, const char *path, char **err)
{
    for (;;) {
        int version = 0;
        if (exec(s, SQL_BEGIN, "begin migration", err) < 0)
            return -1;
        if (read_version(s, &version, err) < 0)
            goto fail;
        if (version > LATEST_VERSION) {
            refuse_newer(version, path, err);
            goto fail;
        }
        if (version == LATEST_VERSION)
            return exec(s, SQL_COMMIT, "commit migration", err);
        const struct migration *m = &migrations[version];
        char what[64];
        snprintf(what, sizeof what, "migration %d", m->version);
        if (exec(s, m->sql, what, err) < 0 || exec(s, m->set_version, what, err) < 0)
            goto fail;
        int applied = 0;
        if (read_version(s, &applied, err) < 0)
            goto fail;
        if (applied != version + 1) {
            set_err(err, "store: migration %d sets user_version %d; expected %d",
                    version + 1, applied, version + 1);
            goto fail;
        }
        if (exec(s, SQL_COMMIT, what, err) < 0)
            goto fail;
    }
fail:
    sqlite3_exec(s->db, SQL_ROLLBACK, NULL, NULL, NULL);
    return -1;
}

/* The database is usable before anything is served: a corrupted file is refused at start, not at
 * the first write (which would fail requests Teams cannot resend), with quick_check's first
 * complaint. It reads every page, about 1 s per GB from the page cache and 20 s per GB from a
 * cold disk (measured), so files above the limit skip it and corruption there degrades the store
 * when a write meets it. */
static int quick_check(store *s, const char *path, long check_max_mb, char **err)
{
    struct stat st;
    if (check_max_mb <= 0 || strcmp(path, ":memory:") == 0 || stat(path, &st) != 0 ||
        st.st_size > (off_t)check_max_mb << 20)
        return 0;
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA quick_check(1)", -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    const char *verdict = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(stmt, 0) : NULL;
    if (!verdict || strcmp(verdict, "ok") != 0) {
        set_err(err, "store: %s is corrupted (PRAGMA quick_check: %s); restore a backup or move "
                "it aside", path, verdict ? verdict : sqlite3_errmsg(s->db));
        sqlite3_finalize(stmt);
        return -1;
    }
    sqlite3_finalize(stmt);
    return 0;
}

/* Says what an open failure means for the operator: a damaged file, or a file system that cannot
 * take writes (with the system's reason, e.g. "No space left on device"). */
static void explain_open_failure(store *s, const char *path, char **err)
{
    int code = sqlite3_extended_errcode(s->db), primary = code & 0xff;
    int sys = sqlite3_system_errno(s->db);
    char *was = *err, *now = NULL;
    if ((primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) && !strstr(was, "corrupted"))
        set_err(&now, "store: %s is corrupted or not a database (%s); restore a backup or move it "
                "aside", path, was);
    else if ((primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN || primary == SQLITE_FULL ||
              primary == SQLITE_READONLY) && sys)
        set_err(&now, "%s (%s)", was, strerror(sys));
    if (now) {
        free(was);
        *err = now;
    }
}

store *store_open(const char *path, char **err)
{
    return store_open_checked(path, 0, err);
}

store *store_open_checked(const char *path, long check_max_mb, char **err)
{
    if (err)
        *err = NULL;
    if (!path || !*path) {
        set_err(err, "store: database path is required");
        return NULL;
    }
    store *s = calloc(1, sizeof *s);
    if (!s) {
        set_err(err, "store: out of memory");
        return NULL;
    }
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        if (s->db)
            set_err(err, "store: open %s: %s", path, sqlite3_errmsg(s->db));
        else
            set_err(err, "store: open %s: out of memory", path);
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    /* Only while opening, before the loop runs: a shell holding the lock for a moment should not
     * fail the start. Afterwards herald never waits (see the end of this function). */
    sqlite3_busy_timeout(s->db, 2000);
    /* A double-quoted typo would otherwise silently become a string literal. */
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DQS_DML, 0, (int *)NULL);
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DQS_DDL, 0, (int *)NULL);
    /* SQLite quietly opens a file it may not write read-only; every write would then fail. */
    if (sqlite3_db_readonly(s->db, "main") == 1) {
        set_err(err, "store: %s is read-only; herald needs to write it", path);
        goto fail;
    }

    /* Checked before anything writes: switching a newer database to WAL would already change it. */
    int version = 0;
    if (read_version(s, &version, err) < 0)
        goto fail;
    if (version > LATEST_VERSION) {
        refuse_newer(version, path, err);
        goto fail;
    }
    /* WAL lets readers (an operator's sqlite3 shell) run beside the writer, and with
     * synchronous=NORMAL a commit costs no fsync; a power loss may drop the last commits but never
     * corrupts. ":memory:" stays in "memory" mode, which is fine. */
    if (exec(s, "PRAGMA journal_mode = WAL", "set journal mode", err) < 0 ||
        exec(s, "PRAGMA synchronous = NORMAL", "set synchronous", err) < 0 ||
        exec(s, "PRAGMA foreign_keys = ON", "enable foreign keys", err) < 0)
        goto fail;
    if (quick_check(s, path, check_max_mb, err) < 0)
        goto fail;
    if (migrate(s, path, err) < 0)
        goto fail;

    if (store_prepare_set(s->db, s, statements, STATEMENTS, err) < 0)
        goto fail;
    /* The write statements hard-code parameter numbers that put derives from store_reference;
     * a field added to one but not the other must fail loudly, not bind values to wrong columns. */
    if (sqlite3_bind_parameter_count(s->upsert) != REF_STRINGS + 4 ||
        sqlite3_bind_parameter_count(s->update) != REF_STRINGS + 4) {
        set_err(err, "store: write statements are out of step with store_reference's fields");
        goto fail;
    }
    /* The probe rewrites the header's user_version with its own value: one real page through the
     * WAL, so it fails where any write would (read-only directory, full disk, I/O error). PRAGMA
     * takes no parameters; the number is ours. */
    char probe[64];
    snprintf(probe, sizeof probe, "PRAGMA user_version = %d", LATEST_VERSION);
    if (sqlite3_prepare_v3(s->db, probe, -1, SQLITE_PREPARE_PERSISTENT, &s->probe, NULL) != SQLITE_OK) {
        set_db_err(s, err, "prepare the write probe");
        goto fail;
    }
    if (run(s, s->begin, "write probe", err) < 0 || run(s, s->probe, "write probe", err) < 0 ||
        run(s, s->commit, "write probe", err) < 0) {
        char *why = err ? *err : NULL;
        if (err)
            *err = NULL;
        set_err(err, "store: %s cannot be written (%s)", path, why ? why : "?");
        free(why);
        goto fail;
    }
    /* From here on a lock held by another process is an error handled on the loop (a 503, a
     * retried batch), never a wait that stalls every request. */
    sqlite3_busy_timeout(s->db, 0);
    return s;
fail:
    if (s->db && err && *err)
        explain_open_failure(s, path, err);
    store_close(s);
    return NULL;
}

void store_close(store *s)
{
    if (!s)
        return;
    store_finalize_set(s, statements, STATEMENTS);
    sqlite3_finalize(s->probe);
    clear_kept(s, 0);
    free(s->kept);
    if (s->db) {
        /* Keeps the planner's statistics current for the OR lookups; cheap when nothing changed. */
        if (s->upsert && !s->degraded)
            sqlite3_exec(s->db, "PRAGMA optimize", NULL, NULL, NULL);
        sqlite3_close(s->db);
    }
    free(s);
}

int store_schema_version(store *s)
{
    if (sqlite3_step(s->version) != SQLITE_ROW) {
        done(s->version);
        return -1;
    }
    int version = sqlite3_column_int(s->version, 0);
    done(s->version);
    return version;
}

static int bind_text(sqlite3_stmt *stmt, int i, const char *text)
{
    return text ? sqlite3_bind_text(stmt, i, text, -1, SQLITE_STATIC) : sqlite3_bind_null(stmt, i);
}

static int bind_int64_or_null(sqlite3_stmt *stmt, int i, int has, int64_t value)
{
    return has ? sqlite3_bind_int64(stmt, i, value) : sqlite3_bind_null(stmt, i);
}

int store_put_reference(store *s, const store_reference *ref, enum store_install_signal signal,
                        int64_t now_ms, int64_t window_ms, int *run_hook, char **err)
{
    return store_put_reference_zone(s, ref, signal, now_ms, window_ms, run_hook, NULL, err);
}

static int put(store *s, const store_reference *ref, enum store_install_signal signal,
               int64_t now_ms, int64_t window_ms, int *run_hook, int *zone_changed, int replay,
               char **err);

int store_put_reference_zone(store *s, const store_reference *ref, enum store_install_signal signal,
                             int64_t now_ms, int64_t window_ms, int *run_hook, int *zone_changed,
                             char **err)
{
    return put(s, ref, signal, now_ms, window_ms, run_hook, zone_changed, 1, err);
}

int store_put_inbound(store *s, const store_reference *ref, enum store_install_signal signal,
                      int64_t now_ms, int64_t window_ms, int *run_hook, int *zone_changed,
                      char **err)
{
    return put(s, ref, signal, now_ms, window_ms, run_hook, zone_changed, 0, err);
}

static int put(store *s, const store_reference *ref, enum store_install_signal signal,
               int64_t now_ms, int64_t window_ms, int *run_hook, int *zone_changed, int replay,
               char **err)
{
    int hook = 0, rc;
    if (run_hook)
        *run_hook = 0;
    if (zone_changed)
        *zone_changed = 0;
    if (!ref || !ref->id || !*ref->id) {
        set_err(err, "store: conversation id is required");
        return -1;
    }
    if (!ref->service_url || !*ref->service_url) {
        set_err(err, "store: service url is required for conversation %s", ref->id);
        return -1;
    }
    if (signal != STORE_SIGNAL_NONE && signal != STORE_SIGNAL_INSTALL &&
        signal != STORE_SIGNAL_UNINSTALL) {
        set_err(err, "store: unknown install signal %d", (int)signal);
        return -1;
    }
    if (s->degraded) {
        set_err(err, "store: not writable: %s", s->last_error);
        return -1;
    }
    /* IMMEDIATE takes the write lock before the read, so the state we decide on cannot change
     * under us between the SELECT and the UPSERT. */
    /* Inside a group-commit batch a savepoint gives the same all-or-nothing without a commit. */
    if (run(s, s->batch ? s->savepoint : s->begin, "begin", err) < 0)
        return -1;
    size_t kept_before = s->nkept;

    sqlite3_bind_text(s->state, 1, ref->id, -1, SQLITE_STATIC);
    rc = sqlite3_step(s->state);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        set_db_err(s, err, "read install state");
        done(s->state);
        goto fail;
    }
    int exists = rc == SQLITE_ROW;
    int installed = exists && sqlite3_column_int(s->state, 0);
    int signalled = exists && sqlite3_column_type(s->state, 1) != SQLITE_NULL;
    int64_t signal_at = signalled ? sqlite3_column_int64(s->state, 1) : 0;
    sqlite3_stmt *write = exists && keys_unchanged(s->state, ref) ? s->update : s->upsert;
    const char *stored_zone = exists ? (const char *)sqlite3_column_text(s->state, 7) : NULL;
    int zone_moved = ref->timezone && (!stored_zone || strcmp(stored_zone, ref->timezone) != 0);
    done(s->state);

    switch (signal) {
    case STORE_SIGNAL_INSTALL:
        /* Teams announces one install twice (installationUpdate and conversationUpdate). */
        hook = !(installed && signalled && now_ms - signal_at < window_ms);
        break;
    case STORE_SIGNAL_UNINSTALL:
        /* Also false for a conversation never seen: no installed bot we know of was removed. */
        hook = installed;
        break;
    case STORE_SIGNAL_NONE:
        hook = 0;
        break;
    }

    /* SQL_UPDATE leaves some numbers out; binding a number a statement does not use is harmless. */
    for (int i = 0; i < REF_STRINGS; i++)
        bind_text(write, i + 1, *ref_string(ref, i));
    sqlite3_bind_int(write, REF_STRINGS + 1, signal != STORE_SIGNAL_UNINSTALL);
    bind_int64_or_null(write, REF_STRINGS + 2, signal == STORE_SIGNAL_INSTALL, now_ms);
    sqlite3_bind_int64(write, REF_STRINGS + 3, now_ms);
    bind_int64_or_null(write, REF_STRINGS + 4, signal == STORE_SIGNAL_UNINSTALL, now_ms);
    s->unkept = !replay;
    rc = write_step(s, write, 0, 0, "store conversation", err);
    s->unkept = 0;
    if (rc < 0)
        goto fail;
    if (run(s, s->batch ? s->release : s->commit, "commit", err) < 0)
        goto fail;
    if (run_hook)
        *run_hook = hook;
    if (zone_changed)
        *zone_changed = zone_moved;
    return 0;
fail:
    if (s->batch) {
        run(s, s->rollback_to, "rollback to savepoint", NULL);
        run(s, s->release, "release savepoint", NULL);
        clear_kept(s, kept_before);   /* undone, so not to be replayed either */
        return -1;
    }
    /* Harmless if the failed COMMIT already ended the transaction; needed so the next BEGIN works. */
    if (!sqlite3_get_autocommit(s->db))
        run(s, s->rollback, "rollback", NULL);
    return -1;
}

/* Points the reference's fields at the current row; strings live as long as the row does. */
static void row_to_ref(sqlite3_stmt *stmt, store_reference *ref)
{
    memset(ref, 0, sizeof *ref);
    for (int i = 0; i < REF_STRINGS; i++)
        *ref_string(ref, i) = (const char *)sqlite3_column_text(stmt, i);
    ref->installed = sqlite3_column_int(stmt, REF_STRINGS);
    ref->created_at = sqlite3_column_int64(stmt, REF_STRINGS + 1);
    ref->updated_at = sqlite3_column_int64(stmt, REF_STRINGS + 2);
    ref->uninstalled_at = sqlite3_column_int64(stmt, REF_STRINGS + 3);   /* NULL reads as 0 */
}

/* One allocation per read, so store_reference_clear has exactly one thing to free. */
static int copy_row(sqlite3_stmt *stmt, store_reference *out)
{
    row_to_ref(stmt, out);
    size_t size = 0;
    for (int i = 0; i < REF_STRINGS; i++)
        if (*ref_string(out, i))
            size += (size_t)sqlite3_column_bytes(stmt, i) + 1;
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        memset(out, 0, sizeof *out);
        return -1;
    }
    char *p = buf;
    for (int i = 0; i < REF_STRINGS; i++) {
        const char **field = ref_string(out, i);
        if (!*field)
            continue;
        size_t n = (size_t)sqlite3_column_bytes(stmt, i);
        memcpy(p, *field, n);
        p[n] = '\0';
        *field = p;
        p += n + 1;
    }
    out->buf_ = buf;
    return 0;
}

/* Steps a single-row lookup whose parameters are bound; the shared tail of get and find_*. */
static int fetch_one(store *s, sqlite3_stmt *stmt, store_reference *out, const char *what,
                     char **err)
{
    int rc = sqlite3_step(stmt), result = 0;
    if (rc == SQLITE_ROW) {
        if (copy_row(stmt, out) < 0) {
            set_err(err, "store: %s: out of memory", what);
            result = -1;
        } else {
            result = 1;
        }
    } else if (rc != SQLITE_DONE) {
        set_db_err(s, err, what);
        result = -1;
    }
    done(stmt);
    return result;
}

static int require(const char *value, const char *name, char **err)
{
    if (value && *value)
        return 0;
    set_err(err, "store: %s is required", name);
    return -1;
}

int store_get_reference(store *s, const char *id, store_reference *out, char **err)
{
    memset(out, 0, sizeof *out);
    if (require(id, "conversation id", err) < 0)
        return -1;
    bind_text(s->get, 1, id);
    return fetch_one(s, s->get, out, "read conversation", err);
}

int store_find_user_reference(store *s, const char *user, const char *tenant_id, const char *type,
                              store_reference *out, char **err)
{
    memset(out, 0, sizeof *out);
    if (require(user, "user id", err) < 0)
        return -1;
    bind_text(s->find_user, 1, user);
    bind_text(s->find_user, 2, tenant_id);
    bind_text(s->find_user, 3, type);
    return fetch_one(s, s->find_user, out, "find user conversation", err);
}

int store_find_channel_reference(store *s, const char *channel_or_team, store_reference *out,
                                 char **err)
{
    memset(out, 0, sizeof *out);
    if (require(channel_or_team, "channel or team id", err) < 0)
        return -1;
    bind_text(s->find_channel, 1, channel_or_team);
    return fetch_one(s, s->find_channel, out, "find channel conversation", err);
}

int store_find_tenant_reference(store *s, const char *tenant_id, store_reference *out, char **err)
{
    memset(out, 0, sizeof *out);
    if (require(tenant_id, "tenant id", err) < 0)
        return -1;
    bind_text(s->find_tenant, 1, tenant_id);
    return fetch_one(s, s->find_tenant, out, "find tenant conversation", err);
}

/* A negative limit lists everything (SQLite's LIMIT -1). fn must not call store_list_references
 * itself: the one prepared list statement is mid-step while fn runs. */
int store_list_references(store *s, const store_filter *filter, const char *after_id, int limit,
                          store_reference_fn fn, void *ud, char **err)
{
    static const store_filter any = {0};
    if (!fn) {
        set_err(err, "store: list needs a callback");
        return -1;
    }
    if (s->listing) {
        set_err(err, "store: list called again from inside its own callback");
        return -1;
    }
    if (!filter)
        filter = &any;
    bind_text(s->list, 1, after_id ? after_id : "");
    bind_text(s->list, 2, filter->tenant_id);
    bind_text(s->list, 3, filter->type);
    bind_text(s->list, 4, filter->team_id);
    bind_text(s->list, 5, filter->user);
    sqlite3_bind_int(s->list, 6, filter->include_uninstalled != 0);
    sqlite3_bind_int(s->list, 7, limit);

    int count = 0, rc;
    s->listing = 1;
    while ((rc = sqlite3_step(s->list)) == SQLITE_ROW) {
        store_reference ref;
        row_to_ref(s->list, &ref);
        count++;
        if (fn(&ref, ud) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    s->listing = 0;
    if (rc != SQLITE_DONE) {
        set_db_err(s, err, "list conversations");
        count = -1;
    }
    done(s->list);
    return count;
}

void store_reference_clear(store_reference *ref)
{
    if (!ref)
        return;
    free(ref->buf_);
    memset(ref, 0, sizeof *ref);
}

/* ---- statement sets ------------------------------------------------------------------------ */

static sqlite3_stmt **slot_of(void *owner, const store_statement *st)
{
    return (sqlite3_stmt **)(void *)((char *)owner + st->offset);
}

int store_prepare_set(sqlite3 *db, void *owner, const store_statement *set, size_t n, char **err)
{
    for (size_t i = 0; i < n; i++)
        if (sqlite3_prepare_v3(db, set[i].sql, -1, SQLITE_PREPARE_PERSISTENT, slot_of(owner, &set[i]),
                               NULL) != SQLITE_OK) {
            set_err(err, "store: prepare \"%s\": %s", set[i].sql, sqlite3_errmsg(db));
            return -1;
        }
    return 0;
}

void store_finalize_set(void *owner, const store_statement *set, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sqlite3_stmt **slot = slot_of(owner, &set[i]);
        sqlite3_finalize(*slot);
        *slot = NULL;
    }
}

void store_bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

int store_step(store *s, sqlite3_stmt *st, const char *what, char **err)
{
    return write_step(s, st, 0, 0, what, err) < 0 ? -1 : 0;
}

int store_opt_out_set(store *s, const char *subject, const char *category, int out, int64_t now_ms,
                      char **err)
{
    sqlite3_stmt *st = out ? s->opt_set : s->opt_del;
    bind_text(st, 1, subject);
    bind_text(st, 2, category ? category : "*");
    if (out)
        sqlite3_bind_int64(st, 3, now_ms);
    return store_step(s, st, "broadcast", err);
}

int store_opt_out_check(store *s, const char *conversation_id, const char *user_id,
                        const char *user_aad_id, const char *category)
{
    if (!category)
        return 0;
    bind_text(s->opt_check, 1, conversation_id);
    bind_text(s->opt_check, 2, user_id);
    bind_text(s->opt_check, 3, user_aad_id);
    bind_text(s->opt_check, 4, category);
    int hit = sqlite3_step(s->opt_check) == SQLITE_ROW;
    sqlite3_reset(s->opt_check);
    sqlite3_clear_bindings(s->opt_check);
    return hit;
}

int store_step_kept(store *s, sqlite3_stmt *st, const char *what, char **err)
{
    return write_step(s, st, 1, 0, what, err) < 0 ? -1 : 0;
}

int store_step_kept_row(store *s, sqlite3_stmt *st, const char *what, char **err)
{
    int rc = write_step(s, st, 1, 1, what, err);
    return rc == WRITE_ROW ? 1 : rc < 0 ? -1 : 0;
}

void store_reset(sqlite3_stmt *st) { done(st); }

/* ---- group commit ------------------------------------------------------------------------ */

int store_batch_begin(store *s, char **err)
{
    if (s->batch)
        return 0;
    if (s->degraded) {
        set_err(err, "store: not writable: %s", s->last_error);
        return -1;
    }
    int rc = sqlite3_step(s->begin);
    if (rc != SQLITE_DONE) {
        char message[300];
        snprintf(message, sizeof message, "%s", sqlite3_errmsg(s->db));
        done(s->begin);
        set_err(err, "store: begin batch: %s", message);
        degrade(s, "begin batch", message);
        return -1;
    }
    done(s->begin);
    s->batch = 1;
    return 0;
}

int store_batch_commit(store *s, char **err)
{
    int committed = !s->degraded;
    if (s->batch) {
        int rc = sqlite3_step(s->commit);
        if (rc == SQLITE_DONE) {
            done(s->commit);
            s->batch = 0;
            clear_kept(s, 0);
        } else {
            char message[300];
            snprintf(message, sizeof message, "%s", sqlite3_errmsg(s->db));
            done(s->commit);
            degrade(s, "commit batch", message);
            committed = 0;
        }
    }
    notify(s, committed);
    if (!committed)
        set_err(err, "store: not writable: %s", s->last_error);
    return committed ? 0 : -1;
}

int store_in_batch(const store *s) { return s->batch; }

sqlite3 *store_db(store *s) { return s->db; }
