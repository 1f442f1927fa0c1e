/* test_store_durable.c — unit tests for the store's durability: a commit that fails (a VFS shim
 * makes writes fail with SQLITE_FULL, or fsync fail) degrades the store, keeps the batch's writes
 * and replays them once writes succeed; inbound references are not replayed; waiters learn the
 * outcome; a lock held by another connection fails at once; start-up checks; the one-process lock;
 * the keyed redelivery filter. */
#include "redelivery.h"
#include "store.h"
#include "store_outbox.h"
#include "unit.h"

#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define T0 1700000000000LL

/* ---- a VFS that fails on demand ---------------------------------------------------------- */

static int fail_writes;   /* xWrite answers SQLITE_FULL, as a full disk makes unixWrite do */
static int fail_syncs;    /* xSync answers SQLITE_IOERR_FSYNC */
static int syncs_failed;

typedef struct shim_file {
    sqlite3_file base;
    sqlite3_file *real;       /* allocated right after this struct */
} shim_file;

static sqlite3_vfs *real_vfs;

static int shim_close(sqlite3_file *f)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods ? s->real->pMethods->xClose(s->real) : SQLITE_OK;
}
static int shim_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xRead(s->real, b, n, o);
}
static int shim_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
    shim_file *s = (shim_file *)f;
    if (fail_writes)
        return SQLITE_FULL;
    return s->real->pMethods->xWrite(s->real, b, n, o);
}
static int shim_truncate(sqlite3_file *f, sqlite3_int64 n)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xTruncate(s->real, n);
}
static int shim_sync(sqlite3_file *f, int flags)
{
    shim_file *s = (shim_file *)f;
    if (fail_syncs) {
        syncs_failed++;
        return SQLITE_IOERR_FSYNC;
    }
    return s->real->pMethods->xSync(s->real, flags);
}
static int shim_size(sqlite3_file *f, sqlite3_int64 *n)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xFileSize(s->real, n);
}
static int shim_lock(sqlite3_file *f, int l)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xLock(s->real, l);
}
static int shim_unlock(sqlite3_file *f, int l)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xUnlock(s->real, l);
}
static int shim_check(sqlite3_file *f, int *out)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xCheckReservedLock(s->real, out);
}
static int shim_fcntl(sqlite3_file *f, int op, void *arg)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xFileControl(s->real, op, arg);
}
static int shim_sector(sqlite3_file *f)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xSectorSize(s->real);
}
static int shim_caps(sqlite3_file *f)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xDeviceCharacteristics(s->real);
}
static int shim_shm_map(sqlite3_file *f, int pg, int sz, int extend, void volatile **pp)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xShmMap(s->real, pg, sz, extend, pp);
}
static int shim_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xShmLock(s->real, off, n, flags);
}
static void shim_shm_barrier(sqlite3_file *f)
{
    shim_file *s = (shim_file *)f;
    s->real->pMethods->xShmBarrier(s->real);
}
static int shim_shm_unmap(sqlite3_file *f, int del)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xShmUnmap(s->real, del);
}

/* Version 2 methods: WAL needs the shm ones; no mmap, so SQLite reads through xRead. */
static const sqlite3_io_methods shim_methods = {
    2, shim_close, shim_read, shim_write, shim_truncate, shim_sync, shim_size, shim_lock,
    shim_unlock, shim_check, shim_fcntl, shim_sector, shim_caps, shim_shm_map, shim_shm_lock,
    shim_shm_barrier, shim_shm_unmap, NULL, NULL,
};

static int shim_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    (void)vfs;
    shim_file *s = (shim_file *)f;
    s->real = (sqlite3_file *)(s + 1);
    memset(s->real, 0, (size_t)real_vfs->szOsFile);
    int rc = real_vfs->xOpen(real_vfs, name, s->real, flags, out);
    s->base.pMethods = s->real->pMethods ? &shim_methods : NULL;
    return rc;
}

static sqlite3_vfs shim_vfs;

static void install_shim(void)
{
    if (real_vfs)
        return;
    real_vfs = sqlite3_vfs_find(NULL);
    shim_vfs = *real_vfs;
    shim_vfs.zName = "herald-faulty";
    shim_vfs.szOsFile = (int)sizeof(shim_file) + real_vfs->szOsFile;
    shim_vfs.xOpen = shim_open;
    sqlite3_vfs_register(&shim_vfs, 1);     /* the default: store_open uses it */
}

/* ---- helpers ------------------------------------------------------------------------------- */

static char tmpdir[64];

static void make_tmpdir(void)
{
    strcpy(tmpdir, "/tmp/herald-durable-XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
}

static void tmp_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

static void remove_tmpdir(void)
{
    static const char *const names[] = {"h.db", "h.db-wal", "h.db-shm", "h.db-journal", "h.db.lock"};
    char path[128];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        tmp_path(path, sizeof path, names[i]);
        unlink(path);
    }
    CHECK_INT(rmdir(tmpdir), 0);
}

static store *open_file(char *path, size_t size)
{
    make_tmpdir();
    tmp_path(path, size, "h.db");
    char *err = NULL;
    store *s = store_open(path, &err);
    CHECK(s != NULL);
    if (err)
        fprintf(stderr, "    open: %s\n", err);
    free(err);
    return s;
}

static int64_t raw_count(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    CHECK_INT(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, "unix"), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static store_reference ref(const char *id)
{
    store_reference r = {.id = id, .type = "personal", .tenant_id = "t",
                         .service_url = "https://smba.trafficmanager.net/emea/", .user_id = "29:u"};
    return r;
}

static int64_t insert_op(store_outbox *so, const char *conv, char **err)
{
    store_op op = {.kind = "send", .queue = conv, .conversation_id = conv,
                   .service_url = "https://smba.trafficmanager.net/emea/", .body = "{\"text\":\"hi 'q'\"}",
                   .next_attempt_at = T0, .created_at = T0, .expires_at = T0 + 3600000};
    if (store_outbox_insert(so, &op, err) < 0)
        return -1;
    return op.id;
}

typedef struct waiter_box {
    store_waiter w;
    int calls, committed;
} waiter_box;

static void on_waiter(store_waiter *w, int committed)
{
    waiter_box *b = (waiter_box *)w;
    b->calls++;
    b->committed = committed;
}

/* ---- cases --------------------------------------------------------------------------------- */

/* A full disk at COMMIT: nothing is taken for committed, the writes are kept, refused or kept while
 * degraded, replayed in order (same row ids) once a write succeeds; an inbound put is not. */
static void failed_commit_keeps_and_replays(void)
{
    install_shim();
    char path[128];
    store *s = open_file(path, sizeof path);
    char *err = NULL;
    store_outbox *so = store_outbox_open(s, &err);
    CHECK(so != NULL);

    /* a batch that commits: the healthy path */
    CHECK_INT(store_batch_begin(s, &err), 0);
    int64_t first = insert_op(so, "a:1", &err);
    CHECK(first > 0);
    CHECK_INT(store_batch_commit(s, &err), 0);
    CHECK_INT(store_kept_writes(s), 0);

    /* a batch whose commit meets a full disk */
    waiter_box wb = {.w.fn = on_waiter};
    CHECK_INT(store_batch_begin(s, &err), 0);
    store_reference r = ref("a:kept"), in = ref("a:inbound");
    CHECK_INT(store_put_reference(s, &r, STORE_SIGNAL_INSTALL, T0, 1000, NULL, &err), 0);
    CHECK_INT(store_put_inbound(s, &in, STORE_SIGNAL_INSTALL, T0, 1000, NULL, NULL, &err), 0);
    int64_t second = insert_op(so, "a:2", &err);
    CHECK_INT(second, first + 1);
    CHECK_INT(store_outbox_finish(so, first, "sent", 1, T0 + 5, 201, NULL, NULL, "m1", NULL, &err), 0);
    store_wait_commit(s, &wb.w);
    fail_writes = 1;
    CHECK_INT(store_batch_commit(s, &err), -1);
    CHECK(err && strstr(err, "not writable") && strstr(err, "full"));
    free(err);
    err = NULL;
    CHECK_INT(wb.calls, 1);
    CHECK_INT(wb.committed, 0);
    CHECK_INT(store_writable(s), 0);
    CHECK(store_last_error(s) && strstr(store_last_error(s), "commit batch"));
    size_t kept = store_kept_writes(s);
    CHECK(kept >= 4);             /* put, insert, attempt row, finish; not the inbound put */

    /* degraded: no batch, new work refused, bookkeeping kept */
    CHECK_INT(store_batch_begin(s, &err), -1);
    free(err);
    err = NULL;
    CHECK_INT(insert_op(so, "a:3", &err), -1);
    CHECK(err && strstr(err, "not writable"));
    free(err);
    err = NULL;
    CHECK_INT(store_put_reference(s, &r, STORE_SIGNAL_NONE, T0, 1000, NULL, &err), -1);
    free(err);
    err = NULL;
    CHECK_INT(store_ledger_mark(so, "a:2", "blocked", "MessageWritesBlocked", "blocked", T0 + 9, &err), 0);
    CHECK_INT(store_kept_writes(s), kept + 1);

    /* still full: the probe fails and keeps everything */
    size_t odd = 99;
    CHECK_INT(store_probe(s, &odd, &err), -1);
    CHECK(err != NULL);
    free(err);
    err = NULL;
    CHECK_INT(store_kept_writes(s), kept + 1);
    CHECK_INT(raw_count(path, "SELECT count(*) FROM outbox"), 1);

    /* space returns: one probe writes it all, with the same ids */
    fail_writes = 0;
    CHECK_INT(store_probe(s, &odd, &err), 0);
    CHECK(err == NULL);
    CHECK_INT(odd, 0);
    CHECK_INT(store_writable(s), 1);
    CHECK(store_last_error(s) == NULL);
    CHECK_INT(store_kept_writes(s), 0);
    CHECK_INT(raw_count(path, "SELECT count(*) FROM outbox"), 2);
    CHECK_INT(raw_count(path, "SELECT max(id) FROM outbox"), second);
    CHECK_INT(raw_count(path, "SELECT count(*) FROM outbox WHERE state = 'sent' AND result_id = 'm1'"), 1);
    CHECK_INT(raw_count(path, "SELECT count(*) FROM outbox WHERE body LIKE '%''q''%'"), 1);
    CHECK_INT(raw_count(path, "SELECT count(*) FROM ledger WHERE conversation_id = 'a:2'"), 1);
    CHECK_INT(raw_count(path, "SELECT count(*) FROM conversations WHERE id = 'a:kept'"), 1);
    CHECK_INT(raw_count(path, "SELECT count(*) FROM conversations WHERE id = 'a:inbound'"), 0);
    /* and the store works as before */
    CHECK_INT(store_batch_begin(s, &err), 0);
    CHECK_INT(insert_op(so, "a:4", &err), second + 1);
    CHECK_INT(store_batch_commit(s, &err), 0);
    store_outbox_close(so);
    store_close(s);
    remove_tmpdir();
}

/* A write that fails inside the batch (the transaction is lost) degrades at once: later writes of
 * the same turn are refused or kept, and the end-of-turn commit reports the failure. */
static void failure_inside_the_batch(void)
{
    install_shim();
    char path[128];
    store *s = open_file(path, sizeof path);
    char *err = NULL;
    store_outbox *so = store_outbox_open(s, &err);
    /* a small cache makes the statement itself spill to the WAL, and meet the full disk there */
    sqlite3_exec(store_db(s), "PRAGMA cache_size = 2", NULL, NULL, NULL);
    CHECK_INT(store_batch_begin(s, &err), 0);
    fail_writes = 1;
    int refused = 0;
    for (int i = 0; i < 200 && store_writable(s); i++) {
        char conv[32];
        snprintf(conv, sizeof conv, "a:spill-%03d", i);
        if (insert_op(so, conv, &err) < 0)
            refused++;
        free(err);
        err = NULL;
    }
    CHECK_INT(store_writable(s), 0);
    CHECK_INT(refused, 1);
    CHECK_INT(store_in_batch(s), 0);
    CHECK_INT(store_outbox_finish(so, 1, "sent", 1, T0, 201, NULL, NULL, "m", NULL, &err), 0);
    waiter_box wb = {.w.fn = on_waiter};
    store_wait_commit(s, &wb.w);
    CHECK_INT(store_batch_commit(s, &err), -1);
    free(err);
    err = NULL;
    CHECK_INT(wb.calls, 1);
    CHECK_INT(wb.committed, 0);
    fail_writes = 0;
    size_t kept = store_kept_writes(s);
    CHECK_INT(store_probe(s, NULL, &err), 0);
    /* every insert that succeeded before the failure is there; the refused one is not */
    CHECK_INT(raw_count(path, "SELECT count(*) FROM outbox"), (int64_t)kept - 2);
    store_outbox_close(so);
    store_close(s);
    remove_tmpdir();
}

/* A waiter removed before the commit is not called; one added during a commit waits for the next. */
static void waiters(void)
{
    install_shim();
    char path[128];
    store *s = open_file(path, sizeof path);
    char *err = NULL;
    waiter_box a = {.w.fn = on_waiter}, b = {.w.fn = on_waiter};
    CHECK_INT(store_batch_begin(s, &err), 0);
    store_wait_commit(s, &a.w);
    store_wait_commit(s, &b.w);
    store_unwait(s, &a.w);
    store_unwait(s, &a.w);        /* twice is harmless */
    CHECK_INT(store_batch_commit(s, &err), 0);
    CHECK_INT(a.calls, 0);
    CHECK_INT(b.calls, 1);
    CHECK_INT(b.committed, 1);
    store_close(s);
    remove_tmpdir();
}

/* Another process holding the write lock: the batch fails at once (no busy wait), the store is
 * degraded, and the probe succeeds as soon as the lock is gone. */
static void busy_fails_fast_and_recovers(void)
{
    install_shim();
    char path[128];
    store *s = open_file(path, sizeof path);
    char *err = NULL;
    sqlite3 *other = NULL;
    CHECK_INT(sqlite3_open(path, &other), SQLITE_OK);
    CHECK_INT(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_INT(store_batch_begin(s, &err), -1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    CHECK(ms < unit_tf_ms(500));  /* it used to wait 5 s */
    CHECK(err && strstr(err, "locked"));
    free(err);
    err = NULL;
    CHECK_INT(store_writable(s), 0);
    CHECK_INT(store_probe(s, NULL, &err), -1);
    free(err);
    err = NULL;
    CHECK_INT(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    CHECK_INT(store_probe(s, NULL, &err), 0);
    CHECK_INT(store_writable(s), 1);
    sqlite3_close(other);
    store_close(s);
    remove_tmpdir();
}

/* fsync failing: with WAL and synchronous=NORMAL a commit never waits for fsync (only
 * checkpoints do), so commits stand and nothing is lost when the checkpoint fails. */
static void failing_fsync_loses_nothing(void)
{
    install_shim();
    char path[128];
    store *s = open_file(path, sizeof path);
    char *err = NULL;
    store_outbox *so = store_outbox_open(s, &err);
    fail_syncs = 1;
    syncs_failed = 0;
    CHECK_INT(store_batch_begin(s, &err), 0);
    CHECK(insert_op(so, "a:sync", &err) > 0);
    CHECK_INT(store_batch_commit(s, &err), 0);
    CHECK_INT(store_writable(s), 1);
    int rc = sqlite3_wal_checkpoint_v2(store_db(s), NULL, SQLITE_CHECKPOINT_FULL, NULL, NULL);
    CHECK(rc != SQLITE_OK);       /* the checkpoint met the failing fsync ... */
    CHECK(syncs_failed > 0);
    fail_syncs = 0;
    store_outbox_close(so);
    store_close(s);
    s = store_open(path, &err);   /* ... and the row is still there, from the WAL */
    CHECK(s != NULL);
    CHECK_INT(raw_count(path, "SELECT count(*) FROM outbox WHERE queue = 'a:sync'"), 1);
    store_close(s);
    remove_tmpdir();
}

/* Start-up: a corrupted file is refused by quick_check (unless larger than the limit), and a
 * store that cannot write is refused by the write probe, not at its first real write. */
static void start_checks(void)
{
    install_shim();
    char path[128];
    store *s = open_file(path, sizeof path);
    char *err = NULL;
    store_outbox *so = store_outbox_open(s, &err);
    CHECK_INT(store_batch_begin(s, &err), 0);
    for (int i = 0; i < 300; i++) {
        char conv[32];
        snprintf(conv, sizeof conv, "a:c-%03d", i);
        insert_op(so, conv, &err);
    }
    CHECK_INT(store_batch_commit(s, &err), 0);
    store_outbox_close(so);
    store_close(s);               /* checkpoints: the rows are in the main file now */

    /* the probe: writes fail */
    fail_writes = 1;
    s = store_open(path, &err);
    fail_writes = 0;
    CHECK(s == NULL);
    CHECK(err && strstr(err, "cannot be written"));
    free(err);
    err = NULL;

    /* garbage over the b-tree pages of the last tables: header and schema stay readable */
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size - 4096 * 8, SEEK_SET);
    for (int i = 0; i < 4096 * 6; i++)
        fputc(0xA5, f);
    fclose(f);
    s = store_open_checked(path, 256, &err);
    CHECK(s == NULL);
    store_close(s);
    CHECK(err && strstr(err, "corrupted"));
    free(err);
    err = NULL;
    /* past the size limit (0 MB here) the check is skipped: it opens */
    s = store_open_checked(path, 0, &err);
    CHECK(s != NULL);
    free(err);
    store_close(s);
    remove_tmpdir();
}

static void one_process_lock(void)
{
    make_tmpdir();
    char path[128], msg[300];
    tmp_path(path, sizeof path, "h.db");
    char *err = NULL;
    CHECK_INT(store_lock(":memory:", &err), -2);
    int fd = store_lock(path, &err);
    CHECK(fd >= 0);
    CHECK_INT(store_lock(path, &err), -1);
    snprintf(msg, sizeof msg, "another herald (pid %ld) is running on %s", (long)getpid(), path);
    CHECK_STR(err, msg);
    free(err);
    err = NULL;
    store_unlock(fd, path);
    fd = store_lock(path, &err);
    CHECK(fd >= 0);
    store_unlock(fd, path);
    remove_tmpdir();
}

static void redelivery_records_only_when_asked(void)
{
    redelivery *r = redelivery_new(4);
    CHECK(r != NULL);
    CHECK_INT(redelivery_seen(r, "a:1", "x", 1000, 500), 0);
    CHECK_INT(redelivery_seen(r, "a:1", "x", 1001, 500), 0);   /* a lookup records nothing */
    CHECK_INT(redelivery_check(r, "a:1", "x", 1002, 500), 0);
    CHECK_INT(redelivery_seen(r, "a:1", "x", 1003, 500), 1);
    CHECK_INT(redelivery_check(r, "a:1", "x", 1004, 500), 1);
    CHECK_INT(redelivery_seen(r, "a:1\nx", "", 1005, 500), 0);  /* the separator is part of the key */
    CHECK_INT(redelivery_seen(r, "a:1", "x", 1600, 500), 0);   /* expired */
    CHECK_INT(redelivery_size(r), 0);
    redelivery_free(r);
}

/* The hash is keyed per instance: the same key hashes alike in one instance, differently in two
 * (2^-64 odds of a false failure). */
static void redelivery_hash_is_keyed(void)
{
    redelivery *a = redelivery_new(10), *b = redelivery_new(10);
    CHECK(a && b);
    CHECK(redelivery_hash(a, "a:1", "x") == redelivery_hash(a, "a:1", "x"));
    CHECK(redelivery_hash(a, "a:1", "x") != redelivery_hash(b, "a:1", "x"));
    CHECK(redelivery_hash(a, "a:1", "x") != redelivery_hash(a, "a:1", "y"));
    redelivery_free(a);
    redelivery_free(b);
}

UNIT_MAIN("store_durable",
          CASE(failed_commit_keeps_and_replays),
          CASE(failure_inside_the_batch),
          CASE(waiters),
          CASE(busy_fails_fast_and_recovers),
          CASE(failing_fsync_loses_nothing),
          CASE(start_checks),
          CASE(one_process_lock),
          CASE(redelivery_records_only_when_asked),
          CASE(redelivery_hash_is_keyed))
