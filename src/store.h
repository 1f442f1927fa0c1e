/* store.h — SQLite storage for herald: schema migrations, prepared statements, conversation
 * references. Knows nothing of Lua or HTTP; every query is a prepared statement made once at open. */
#ifndef HERALD_STORE_H
#define HERALD_STORE_H

#include <stdint.h>
#include <stddef.h>

typedef struct store store;

/* A conversation reference. Every string may be NULL (unknown). On upsert a NULL field never
 * overwrites a stored value; on read the strings point into a buffer owned by the reference
 * (release with store_reference_clear). */
typedef struct store_reference {
    const char *id;               /* conversation id (required) */
    const char *type;             /* "personal" | "groupChat" | "channel" */
    const char *tenant_id;
    const char *service_url;      /* required on upsert */
    const char *channel_id;       /* Bot Framework channel, "msteams" */
    const char *bot_id;           /* recipient.id of inbound activities ("28:...") */
    const char *bot_name;
    const char *user_id;          /* from.id of the latest activity ("29:...") */
    const char *user_aad_id;      /* from.aadObjectId */
    const char *user_name;
    const char *team_id;          /* channelData.team.id */
    const char *team_name;
    const char *team_aad_group_id;
    const char *team_channel_id;  /* channelData.channel.id (the channel a thread lives in) */
    const char *locale;
    const char *timezone;         /* IANA name from localTimezone / clientInfo.timezone */
    const char *last_activity_id;
    const char *service_url_seal; /* HMAC seal of (id, service_url); always replaced on upsert */
    int installed;                /* read: 1 installed, 0 uninstalled */
    int64_t created_at;           /* read only: unix ms */
    int64_t updated_at;           /* read only: unix ms */
    int64_t uninstalled_at;       /* read only: unix ms, 0 when installed */
    char *buf_;                   /* owned storage behind the strings after a read */
} store_reference;

/* Install-state signal carried by the activity being stored. */
enum store_install_signal {
    STORE_SIGNAL_NONE = 0,        /* ordinary activity: marks installed, never runs a hook */
    STORE_SIGNAL_INSTALL,         /* the bot was added (installationUpdate add, or bot in membersAdded) */
    STORE_SIGNAL_UNINSTALL,       /* the bot was removed */
};

/* Filter for store_list_references; NULL fields match anything. */
typedef struct store_filter {
    const char *tenant_id;
    const char *type;             /* conversation type */
    const char *team_id;
    const char *user;             /* matches user_id or user_aad_id */
    int include_uninstalled;
} store_filter;

/* Opens (creating if needed) the database at path (":memory:" allowed), sets WAL and
 * synchronous=NORMAL, applies migrations up to the current version and prepares statements.
 * Then proves it can be used before anything is served: a read-only file or directory fails the
 * write probe (a one-page commit), and a database file of at most check_max_mb MB passes
 * PRAGMA quick_check (0 skips it). SQLite never waits for a lock after open (busy timeout 0):
 * a busy database is a failed write the caller handles, not a stalled event loop.
 * Returns NULL and sets *err (malloc'd, caller frees) on failure. */
store *store_open_checked(const char *path, long check_max_mb, char **err);
/* store_open_checked with the quick_check limit of 0 (tests, teams.testing). */
store *store_open(const char *path, char **err);
void store_close(store *s);

/* Schema version after migrations (PRAGMA user_version). */
int store_schema_version(store *s);

/* Upserts ref (id and service_url required) at time now_ms, applying the install signal in the
 * same transaction. *run_hook is set to 1 when the signal should run the script's hook:
 *   INSTALL:   unless the conversation is installed and another INSTALL was recorded less than
 *              window_ms ago (Teams sends installationUpdate and conversationUpdate for one install);
 *   UNINSTALL: when the conversation was installed (the second of a pair finds it uninstalled).
 * NONE marks the conversation installed (the bot is evidently there) and sets *run_hook to 0.
 * UNINSTALL keeps the row (history is not deleted), setting installed=0 and uninstalled_at.
 * Returns 0, or -1 with *err set. */
int store_put_reference(store *s, const store_reference *ref, enum store_install_signal signal,
                        int64_t now_ms, int64_t window_ms, int *run_hook, char **err);

/* The same, also setting *zone_changed (may be NULL) when ref carries a time zone that differs
 * from the stored one (or the conversation is new): schedules that follow the user's zone then
 * need recomputing. */
int store_put_reference_zone(store *s, const store_reference *ref, enum store_install_signal signal,
                             int64_t now_ms, int64_t window_ms, int *run_hook, int *zone_changed,
                             char **err);

/* store_put_reference_zone for an inbound activity: if the batch holding the write fails, the
 * write is not kept for replay (see Durability below). The activity is refused with 503 instead,
 * and Teams' redelivery stores it again, install signal included. */
int store_put_inbound(store *s, const store_reference *ref, enum store_install_signal signal,
                      int64_t now_ms, int64_t window_ms, int *run_hook, int *zone_changed,
                      char **err);

/* Opt-outs: subject is a conversation id or a user id (Teams or Entra object id); category "*"
 * (or NULL) means everything. Sets (out) or clears one inside the open batch, as store_step
 * writes: 0, or -1 with *err. */
int store_opt_out_set(store *s, const char *subject, const char *category, int out, int64_t now_ms,
                      char **err);
/* 1 when any of the subjects opted out of category (or of "*"); 0 otherwise or with category
 * NULL. */
int store_opt_out_check(store *s, const char *conversation_id, const char *user_id,
                        const char *user_aad_id, const char *category);

/* Reads the reference with this conversation id into *out. Returns 1 found, 0 not found,
 * -1 error (*err set). On 1, release *out with store_reference_clear. */
int store_get_reference(store *s, const char *id, store_reference *out, char **err);

/* Finds the most recently updated reference for a user (user_id or user_aad_id equal to user),
 * optionally restricted to a tenant and a conversation type. Same return contract as get. */
int store_find_user_reference(store *s, const char *user, const char *tenant_id, const char *type,
                              store_reference *out, char **err);

/* Finds the most recently updated reference in a team or channel (team_id, team_channel_id or id
 * equal to channel_or_team), for its service url and tenant. Same return contract as get. */
int store_find_channel_reference(store *s, const char *channel_or_team, store_reference *out,
                                 char **err);

/* Finds any reference of a tenant (most recently updated). Same return contract as get. */
int store_find_tenant_reference(store *s, const char *tenant_id, store_reference *out, char **err);

/* Lists up to limit references matching filter whose id sorts after after_id (NULL: from the
 * start), ordered by id, calling fn for each; stops early when fn returns non-zero.
 * Returns the number of rows passed to fn, or -1 with *err set. */
typedef int (*store_reference_fn)(const store_reference *ref, void *ud);
int store_list_references(store *s, const store_filter *filter, const char *after_id, int limit,
                          store_reference_fn fn, void *ud, char **err);

void store_reference_clear(store_reference *ref);

/* Group commit: store_batch_begin opens one write transaction (BEGIN IMMEDIATE) that later writes
 * join (references use a savepoint inside it); store_batch_commit makes them all durable at once.
 * The runtime commits at the end of each event-loop turn, before any outbound attempt of the
 * batch starts. begin returns -1 without trying while the store is degraded; commit returns -1
 * when the batch could not be committed (it is rolled back; its writes are kept, see below). */
int store_batch_begin(store *s, char **err);
int store_batch_commit(store *s, char **err);
int store_in_batch(const store *s);

/* ---- Durability ----
 * A write that fails for a storage reason (disk full, I/O error, read-only file, another process
 * holding the write lock, corruption) degrades the store: the open batch is rolled back, and
 * until store_probe succeeds no batch opens and store_step refuses every write. Nothing is lost
 * in between: every write a batch executed (except store_put_inbound's) is kept, as SQL text with
 * its values, and replayed in order by store_probe, which then commits them together with a
 * one-page write of its own, so success means the disk really took a write. Replay is exact
 * because nothing else can commit in between: the batch began from the last committed state, and
 * herald holds the database alone (store_lock). */
int store_writable(const store *s);
/* The storage error that degraded the store, or NULL while it is writable. */
const char *store_last_error(const store *s);
/* Writes kept for replay (0 while writable, outside a batch). */
size_t store_kept_writes(const store *s);
/* Tries to leave the degraded state: BEGIN IMMEDIATE, replay the kept writes, write one page,
 * COMMIT. Returns 0 when the store is writable (again), -1 with *err (malloc'd) when not. A kept
 * write that fails for a reason other than storage (it can no longer apply) is dropped and
 * counted in *dropped (may be NULL), never retried forever. */
int store_probe(store *s, size_t *dropped, char **err);

/* Runs w->fn once, after the commit of the batch that is open now: committed 1 when that batch
 * is durable, 0 when it was not (rolled back, or no batch could be opened this turn). w stays
 * owned by the caller; store_unwait removes it before it ran (its owner went away). */
typedef struct store_waiter store_waiter;
struct store_waiter {
    void (*fn)(store_waiter *w, int committed);
    store_waiter *prev, *next;
    int queued;
};
void store_wait_commit(store *s, store_waiter *w);
void store_unwait(store *s, store_waiter *w);

/* Exclusive use of a database by one herald process: an flock on "<path>.lock" (pid inside),
 * close-on-exec, released when the process ends however it ends. Readers (the report commands)
 * do not take it. Returns the lock's fd (>= 0, or -2 for ":memory:"), or -1 with *err naming the
 * pid that holds it. */
int store_lock(const char *path, char **err);
void store_unlock(int fd, const char *path);

/* The connection, for the statement sets of other tables (store_outbox.c, scheduler.c, ...). */
struct sqlite3;
struct sqlite3_stmt;
struct sqlite3 *store_db(store *s);

/* A statement set: each sql is prepared once, persistent, into the `struct sqlite3_stmt *` field
 * at offset inside owner. One mechanism for every table family. */
typedef struct store_statement {
    size_t offset;
    const char *sql;
} store_statement;

/* Prepares every statement of set into owner. Returns 0, or -1 with *err (the failing SQL named);
 * statements already prepared stay in owner for store_finalize_set. */
int store_prepare_set(struct sqlite3 *db, void *owner, const store_statement *set, size_t n,
                      char **err);
/* Finalizes every statement of set in owner (NULL fields are fine). */
void store_finalize_set(void *owner, const store_statement *set, size_t n);
/* Binds v as text, or NULL when v is NULL (SQLITE_STATIC: v must outlive the step). */
void store_bind_text(struct sqlite3_stmt *st, int i, const char *v);
/* A write: steps st once inside the open batch, then resets it and clears its bindings. Returns 0
 * (done or a row), or -1 with *err = "store: what: <sqlite message>" (err may be NULL). While the
 * store is degraded it refuses (-1, "store: not writable: ...") without running st. */
int store_step(store *s, struct sqlite3_stmt *st, const char *what, char **err);
/* A write herald must not lose: bookkeeping of work already under way (an operation's attempts
 * and final state, the ledger, message keys). Like store_step, except that while the store is
 * degraded the write is kept for replay instead of refused; it returns 0 then, though the write
 * is not yet visible to reads. */
int store_step_kept(store *s, struct sqlite3_stmt *st, const char *what, char **err);
/* store_step_kept for a statement with RETURNING: returns 1 with the first row readable on st
 * (the caller reads it, then calls store_reset), 0 when there is no row (st reset; also when the
 * write was only kept), -1 on error (st reset). */
int store_step_kept_row(store *s, struct sqlite3_stmt *st, const char *what, char **err);
/* Resets st and clears its bindings. */
void store_reset(struct sqlite3_stmt *st);

#endif
