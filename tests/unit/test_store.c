/* test_store.c — unit tests for store.c: open and migrations, reference upsert and reads, the
 * install-signal rules, finds, filtered keyset listing, and every error path we can provoke. */
#include "store.h"
#include "store_outbox.h"
#include "unit.h"

/* The schema version this build migrates to (bump with each migration appended in store.c). */
#define STORE_TEST_LATEST 11

#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WINDOW 10000   /* install dedupe window used throughout, ms */
#define T0 1700000000000LL

/* ---- helpers ---- */

static char tmpdir[64];

static const char *make_tmpdir(void)
{
    strcpy(tmpdir, "/tmp/herald-store-XXXXXX");
    return mkdtemp(tmpdir);
}

static void tmp_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

/* Removes the database and its WAL companions, then the directory. */
static void remove_tmpdir(void)
{
    static const char *const names[] = {"h.db", "h.db-wal", "h.db-shm", "h.db-journal",
                                        "junk.db", "new.db", "new.db-wal", "new.db-shm",
                                        "new.db-journal"};
    char path[128];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        tmp_path(path, sizeof path, names[i]);
        unlink(path);
    }
    CHECK_INT(rmdir(tmpdir), 0);
}

static store *open_mem(void)
{
    char *err = NULL;
    store *s = store_open(":memory:", &err);
    CHECK(s != NULL);
    CHECK(err == NULL);
    free(err);
    return s;
}

static store_reference full_ref(const char *id)
{
    store_reference r = {
        .id = id,
        .type = "personal",
        .tenant_id = "tenant-1",
        .service_url = "https://smba.trafficmanager.net/emea/",
        .channel_id = "msteams",
        .bot_id = "28:bot",
        .bot_name = "Herald",
        .user_id = "29:user-1",
        .user_aad_id = "aad-1",
        .user_name = "Ada Lovelace",
        .team_id = "19:team@thread.tacv2",
        .team_name = "Engineering",
        .team_aad_group_id = "group-1",
        .team_channel_id = "19:chan@thread.tacv2",
        .locale = "en-GB",
        .timezone = "Europe/London",
        .last_activity_id = "act-1",
    };
    return r;
}

/* A minimal reference: only what put requires, plus the fields the find tests look at. */
static store_reference ref_of(const char *id, const char *type, const char *tenant,
                              const char *user, const char *aad, const char *team,
                              const char *channel)
{
    store_reference r = {.id = id, .type = type, .tenant_id = tenant, .service_url = "https://s/",
                         .user_id = user, .user_aad_id = aad, .team_id = team,
                         .team_channel_id = channel};
    return r;
}

static int put(store *s, const store_reference *r, enum store_install_signal sig, int64_t now)
{
    char *err = NULL;
    int hook = -1;
    int rc = store_put_reference(s, r, sig, now, WINDOW, &hook, &err);
    CHECK_INT(rc, 0);
    if (err) {
        fprintf(stderr, "    unexpected error: %s\n", err);
        free(err);
    }
    return hook;
}

/* Sets up an ordinary conversation as if a message arrived at now. */
static void put_plain(store *s, const store_reference *r, int64_t now)
{
    CHECK_INT(put(s, r, STORE_SIGNAL_NONE, now), 0);
}

static int installed(store *s, const char *id)
{
    store_reference r;
    char *err = NULL;
    CHECK_INT(store_get_reference(s, id, &r, &err), 1);
    int v = r.installed;
    store_reference_clear(&r);
    return v;
}

/* A second, raw connection to a file store, to inspect or sabotage what store.c wrote. */
static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fprintf(stderr, "    raw_exec %s: %s\n", sql, msg ? msg : "?");
    CHECK_INT(rc, SQLITE_OK);
    sqlite3_free(msg);
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -12345;
    CHECK_INT(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void raw_text(sqlite3 *db, const char *sql, char *out, size_t size)
{
    sqlite3_stmt *st = NULL;
    out[0] = '\0';
    CHECK_INT(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, size, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
}

/* Collects ids passed to a list callback. */
typedef struct collected {
    char ids[64][48];
    int n;
    int stop_after;   /* return non-zero once this many were seen (0: never) */
} collected;

static int collect(const store_reference *r, void *ud)
{
    collected *c = ud;
    if (c->n < 64)
        snprintf(c->ids[c->n], sizeof c->ids[0], "%s", r->id);
    c->n++;
    return c->stop_after && c->n >= c->stop_after;
}

static int list_ids(store *s, const store_filter *f, const char *after, int limit, collected *c)
{
    char *err = NULL;
    memset(c, 0, sizeof *c);
    int n = store_list_references(s, f, after, limit, collect, c, &err);
    CHECK(err == NULL);
    free(err);
    return n;
}

/* ---- open and migrations ---- */

static void open_in_memory(void)
{
    store *s = open_mem();
    CHECK_INT(store_schema_version(s), STORE_TEST_LATEST);
    store_close(s);
    store_close(NULL);
}

static void open_file_sets_wal_schema_and_indexes(void)
{
    char path[128];
    CHECK(make_tmpdir() != NULL);
    tmp_path(path, sizeof path, "h.db");
    char *err = NULL;
    store *s = store_open(path, &err);
    CHECK(s != NULL);
    CHECK(err == NULL);
    CHECK_INT(store_schema_version(s), STORE_TEST_LATEST);

    sqlite3 *db = raw_open(path);
    char mode[32];
    raw_text(db, "PRAGMA journal_mode", mode, sizeof mode);
    CHECK_STR(mode, "wal");
    CHECK_INT(raw_int(db, "PRAGMA user_version"), STORE_TEST_LATEST);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM pragma_table_info('conversations')"), 23);
    CHECK_INT(raw_int(db, "SELECT \"notnull\" FROM pragma_table_info('conversations')"
                          " WHERE name = 'service_url'"), 1);
    CHECK_INT(raw_int(db, "SELECT pk FROM pragma_table_info('conversations') WHERE name = 'id'"), 1);
    CHECK_INT(raw_int(db, "SELECT dflt_value FROM pragma_table_info('conversations')"
                          " WHERE name = 'installed'"), 1);
    static const char *const indexed[] = {"tenant_id", "team_id", "team_channel_id", "user_id",
                                          "user_aad_id"};
    for (size_t i = 0; i < sizeof indexed / sizeof indexed[0]; i++) {
        sqlite3_stmt *st = NULL;
        CHECK_INT(sqlite3_prepare_v2(db,
                  "SELECT count(*) FROM pragma_index_list('conversations') AS l"
                  " JOIN pragma_index_info(l.name) AS i WHERE i.name = ?1 AND i.seqno = 0",
                  -1, &st, NULL), SQLITE_OK);
        sqlite3_bind_text(st, 1, indexed[i], -1, SQLITE_STATIC);
        CHECK_INT(sqlite3_step(st), SQLITE_ROW);
        if (sqlite3_column_int(st, 0) != 1)
            fprintf(stderr, "    no index leads with %s\n", indexed[i]);
        CHECK_INT(sqlite3_column_int(st, 0), 1);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    store_close(s);
    remove_tmpdir();
}

static void reopen_keeps_data_and_version(void)
{
    char path[128];
    CHECK(make_tmpdir() != NULL);
    tmp_path(path, sizeof path, "h.db");
    char *err = NULL;
    store *s = store_open(path, &err);
    CHECK(s != NULL);
    store_reference r = full_ref("a:conv-1");
    put_plain(s, &r, T0);
    store_close(s);

    s = store_open(path, &err);
    CHECK(s != NULL);
    CHECK(err == NULL);
    CHECK_INT(store_schema_version(s), STORE_TEST_LATEST);
    store_reference got;
    CHECK_INT(store_get_reference(s, "a:conv-1", &got, &err), 1);
    CHECK_STR(got.user_name, "Ada Lovelace");
    CHECK_INT(got.created_at, T0);
    store_reference_clear(&got);
    store_close(s);
    remove_tmpdir();
}

static void too_new_database_is_refused_untouched(void)
{
    char path[128];
    CHECK(make_tmpdir() != NULL);
    tmp_path(path, sizeof path, "new.db");
    sqlite3 *db = raw_open(path);
    raw_exec(db, "CREATE TABLE future (x); PRAGMA user_version = 99");
    sqlite3_close(db);

    char *err = NULL;
    store *s = store_open(path, &err);
    CHECK(s == NULL);
    CHECK(err != NULL);
    CHECK(err && strstr(err, "99") != NULL);
    CHECK(err && strstr(err, "newer") != NULL);
    free(err);

    /* Not switched to WAL, not migrated. */
    db = raw_open(path);
    char mode[32];
    raw_text(db, "PRAGMA journal_mode", mode, sizeof mode);
    CHECK_STR(mode, "delete");
    CHECK_INT(raw_int(db, "PRAGMA user_version"), 99);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'conversations'"), 0);
    sqlite3_close(db);
    remove_tmpdir();
}

static void open_errors(void)
{
    char *err = NULL;
    CHECK(store_open(NULL, &err) == NULL);
    CHECK(err && strstr(err, "path") != NULL);
    free(err);
    err = NULL;
    CHECK(store_open("", &err) == NULL);
    CHECK(err != NULL);
    free(err);
    err = NULL;

    CHECK(store_open("/nonexistent-herald-dir/x/h.db", &err) == NULL);
    CHECK(err && strstr(err, "/nonexistent-herald-dir/x/h.db") != NULL);
    free(err);
    err = NULL;

    /* A file that is not a database. */
    char path[128];
    CHECK(make_tmpdir() != NULL);
    tmp_path(path, sizeof path, "junk.db");
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        for (int i = 0; i < 200; i++)
            fputs("this is not an sqlite database at all. ", f);
        fclose(f);
    }
    CHECK(store_open(path, &err) == NULL);
    CHECK(err != NULL);
    free(err);
    err = NULL;
    /* A NULL err is allowed. */
    CHECK(store_open(path, NULL) == NULL);
    remove_tmpdir();
}

/* ---- upsert and get ---- */

static void upsert_then_get_round_trips_every_field(void)
{
    store *s = open_mem();
    store_reference r = full_ref("a:conv-1");
    put_plain(s, &r, T0);

    store_reference g;
    char *err = NULL;
    CHECK_INT(store_get_reference(s, "a:conv-1", &g, &err), 1);
    CHECK(err == NULL);
    CHECK_STR(g.id, "a:conv-1");
    CHECK_STR(g.type, "personal");
    CHECK_STR(g.tenant_id, "tenant-1");
    CHECK_STR(g.service_url, "https://smba.trafficmanager.net/emea/");
    CHECK_STR(g.channel_id, "msteams");
    CHECK_STR(g.bot_id, "28:bot");
    CHECK_STR(g.bot_name, "Herald");
    CHECK_STR(g.user_id, "29:user-1");
    CHECK_STR(g.user_aad_id, "aad-1");
    CHECK_STR(g.user_name, "Ada Lovelace");
    CHECK_STR(g.team_id, "19:team@thread.tacv2");
    CHECK_STR(g.team_name, "Engineering");
    CHECK_STR(g.team_aad_group_id, "group-1");
    CHECK_STR(g.team_channel_id, "19:chan@thread.tacv2");
    CHECK_STR(g.locale, "en-GB");
    CHECK_STR(g.timezone, "Europe/London");
    CHECK_STR(g.last_activity_id, "act-1");
    CHECK_INT(g.installed, 1);
    CHECK_INT(g.created_at, T0);
    CHECK_INT(g.updated_at, T0);
    CHECK_INT(g.uninstalled_at, 0);
    CHECK(g.buf_ != NULL);
    /* The strings are copies, not the caller's pointers. */
    CHECK(g.user_name != r.user_name);
    store_reference_clear(&g);
    store_close(s);
}

static void unicode_and_minimal_reference(void)
{
    store *s = open_mem();
    store_reference r = {.id = "a:ünï", .service_url = "https://s/", .user_name = "Zoë 山田"};
    put_plain(s, &r, T0);
    store_reference g;
    char *err = NULL;
    CHECK_INT(store_get_reference(s, "a:ünï", &g, &err), 1);
    CHECK_STR(g.user_name, "Zoë 山田");
    CHECK(g.type == NULL);
    CHECK(g.tenant_id == NULL);
    CHECK(g.team_id == NULL);
    CHECK(g.last_activity_id == NULL);
    store_reference_clear(&g);
    store_close(s);
}

static void null_fields_do_not_overwrite(void)
{
    store *s = open_mem();
    store_reference r = full_ref("a:conv-1");
    put_plain(s, &r, T0);

    store_reference sparse = {.id = "a:conv-1", .service_url = "https://smba.new/",
                              .last_activity_id = "act-2", .user_name = "Ada King"};
    put_plain(s, &sparse, T0 + 500);

    store_reference g;
    char *err = NULL;
    CHECK_INT(store_get_reference(s, "a:conv-1", &g, &err), 1);
    CHECK_STR(g.service_url, "https://smba.new/");
    CHECK_STR(g.last_activity_id, "act-2");
    CHECK_STR(g.user_name, "Ada King");
    CHECK_STR(g.type, "personal");
    CHECK_STR(g.tenant_id, "tenant-1");
    CHECK_STR(g.channel_id, "msteams");
    CHECK_STR(g.bot_id, "28:bot");
    CHECK_STR(g.bot_name, "Herald");
    CHECK_STR(g.user_id, "29:user-1");
    CHECK_STR(g.user_aad_id, "aad-1");
    CHECK_STR(g.team_id, "19:team@thread.tacv2");
    CHECK_STR(g.team_name, "Engineering");
    CHECK_STR(g.team_aad_group_id, "group-1");
    CHECK_STR(g.team_channel_id, "19:chan@thread.tacv2");
    CHECK_STR(g.locale, "en-GB");
    CHECK_STR(g.timezone, "Europe/London");
    CHECK_INT(g.created_at, T0);
    CHECK_INT(g.updated_at, T0 + 500);
    store_reference_clear(&g);
    store_close(s);
}

static void missing_id_or_service_url_is_an_error(void)
{
    store *s = open_mem();
    char *err = NULL;
    int hook = 7;
    store_reference no_id = {.service_url = "https://s/"};
    CHECK_INT(store_put_reference(s, &no_id, STORE_SIGNAL_INSTALL, T0, WINDOW, &hook, &err), -1);
    CHECK(err && strstr(err, "id") != NULL);
    CHECK_INT(hook, 0);
    free(err);
    err = NULL;

    store_reference empty_id = {.id = "", .service_url = "https://s/"};
    CHECK_INT(store_put_reference(s, &empty_id, STORE_SIGNAL_NONE, T0, WINDOW, &hook, &err), -1);
    CHECK(err != NULL);
    free(err);
    err = NULL;

    store_reference no_url = {.id = "a:x"};
    CHECK_INT(store_put_reference(s, &no_url, STORE_SIGNAL_NONE, T0, WINDOW, &hook, &err), -1);
    CHECK(err && strstr(err, "service url") != NULL);
    free(err);
    err = NULL;

    store_reference empty_url = {.id = "a:x", .service_url = ""};
    CHECK_INT(store_put_reference(s, &empty_url, STORE_SIGNAL_NONE, T0, WINDOW, &hook, &err), -1);
    CHECK(err != NULL);
    free(err);
    err = NULL;

    CHECK_INT(store_put_reference(s, NULL, STORE_SIGNAL_NONE, T0, WINDOW, &hook, &err), -1);
    CHECK(err != NULL);
    free(err);
    err = NULL;

    store_reference ok = {.id = "a:x", .service_url = "https://s/"};
    CHECK_INT(store_put_reference(s, &ok, (enum store_install_signal)42, T0, WINDOW, &hook, &err),
              -1);
    CHECK(err && strstr(err, "signal") != NULL);
    free(err);
    err = NULL;

    /* Nothing was stored by the failed calls, and a NULL err / run_hook is tolerated. */
    store_reference g;
    CHECK_INT(store_get_reference(s, "a:x", &g, &err), 0);
    CHECK_INT(store_put_reference(s, &no_url, STORE_SIGNAL_NONE, T0, WINDOW, NULL, NULL), -1);
    CHECK_INT(store_put_reference(s, &ok, STORE_SIGNAL_NONE, T0, WINDOW, NULL, NULL), 0);
    CHECK_INT(store_get_reference(s, "a:x", &g, &err), 1);
    store_reference_clear(&g);
    store_close(s);
}

static void get_unknown_and_bad_arguments(void)
{
    store *s = open_mem();
    store_reference g;
    memset(&g, 0xab, sizeof g);   /* garbage in: the struct is zeroed on "not found" */
    char *err = NULL;
    CHECK_INT(store_get_reference(s, "a:nope", &g, &err), 0);
    CHECK(err == NULL);
    CHECK(g.id == NULL);
    CHECK(g.buf_ == NULL);
    store_reference_clear(&g);

    CHECK_INT(store_get_reference(s, NULL, &g, &err), -1);
    CHECK(err != NULL);
    free(err);
    err = NULL;
    CHECK_INT(store_find_user_reference(s, NULL, NULL, NULL, &g, &err), -1);
    CHECK(err != NULL);
    free(err);
    err = NULL;
    CHECK_INT(store_find_channel_reference(s, "", &g, &err), -1);
    CHECK(err != NULL);
    free(err);
    err = NULL;
    CHECK_INT(store_find_tenant_reference(s, NULL, &g, &err), -1);
    CHECK(err != NULL);
    free(err);
    err = NULL;
    store_close(s);
}

/* ---- install signals ---- */

static void install_signal_rules(void)
{
    store *s = open_mem();
    store_reference r = ref_of("19:group@thread.v2", "groupChat", "t", NULL, NULL, NULL, NULL);

    /* First INSTALL runs the hook; its twin within the window does not. */
    CHECK_INT(put(s, &r, STORE_SIGNAL_INSTALL, T0), 1);
    CHECK_INT(installed(s, r.id), 1);
    CHECK_INT(put(s, &r, STORE_SIGNAL_INSTALL, T0 + 200), 0);
    /* Ordinary traffic never runs a hook. */
    CHECK_INT(put(s, &r, STORE_SIGNAL_NONE, T0 + 300), 0);
    /* An INSTALL once the window has passed (since the last recorded one) runs again. */
    CHECK_INT(put(s, &r, STORE_SIGNAL_INSTALL, T0 + 200 + WINDOW), 1);
    CHECK_INT(put(s, &r, STORE_SIGNAL_INSTALL, T0 + 200 + WINDOW + WINDOW - 1), 0);

    /* UNINSTALL runs once; its twin finds the conversation already uninstalled. */
    int64_t t = T0 + 100000;
    CHECK_INT(put(s, &r, STORE_SIGNAL_UNINSTALL, t), 1);
    CHECK_INT(installed(s, r.id), 0);
    CHECK_INT(put(s, &r, STORE_SIGNAL_UNINSTALL, t + 50), 0);
    store_reference g;
    char *err = NULL;
    CHECK_INT(store_get_reference(s, r.id, &g, &err), 1);
    CHECK_INT(g.installed, 0);
    CHECK_INT(g.uninstalled_at, t);   /* the first removal time is kept */
    CHECK_INT(g.updated_at, t + 50);
    store_reference_clear(&g);

    /* A reinstall right after removal runs even though the last INSTALL is within the window. */
    CHECK_INT(put(s, &r, STORE_SIGNAL_UNINSTALL, t + 1000), 0);
    CHECK_INT(put(s, &r, STORE_SIGNAL_INSTALL, t + 1001), 1);
    CHECK_INT(put(s, &r, STORE_SIGNAL_UNINSTALL, t + 1002), 1);
    CHECK_INT(put(s, &r, STORE_SIGNAL_INSTALL, t + 1003), 1);
    CHECK_INT(store_get_reference(s, r.id, &g, &err), 1);
    CHECK_INT(g.installed, 1);
    CHECK_INT(g.uninstalled_at, 0);
    store_reference_clear(&g);

    /* NONE on an uninstalled conversation reinstalls it without a hook... */
    CHECK_INT(put(s, &r, STORE_SIGNAL_UNINSTALL, t + 2000), 1);
    CHECK_INT(put(s, &r, STORE_SIGNAL_NONE, t + 2001), 0);
    CHECK_INT(store_get_reference(s, r.id, &g, &err), 1);
    CHECK_INT(g.installed, 1);
    CHECK_INT(g.uninstalled_at, 0);
    store_reference_clear(&g);
    /* ...and a later UNINSTALL finds it installed again. */
    CHECK_INT(put(s, &r, STORE_SIGNAL_UNINSTALL, t + 2002), 1);
    store_close(s);
}

static void install_on_conversation_known_from_traffic(void)
{
    store *s = open_mem();
    store_reference r = ref_of("a:personal", "personal", "t", "29:u", NULL, NULL, NULL);
    /* Seen through ordinary messages first: no INSTALL recorded, so the first one runs. */
    put_plain(s, &r, T0);
    CHECK_INT(put(s, &r, STORE_SIGNAL_INSTALL, T0 + 1), 1);
    CHECK_INT(put(s, &r, STORE_SIGNAL_INSTALL, T0 + 2), 0);
    /* A zero window never deduplicates. */
    int hook = -1;
    char *err = NULL;
    CHECK_INT(store_put_reference(s, &r, STORE_SIGNAL_INSTALL, T0 + 3, 0, &hook, &err), 0);
    CHECK_INT(hook, 1);
    store_close(s);
}

static void uninstall_of_unknown_conversation_is_stored(void)
{
    store *s = open_mem();
    store_reference r = ref_of("a:ghost", "personal", "t", "29:u", NULL, NULL, NULL);
    CHECK_INT(put(s, &r, STORE_SIGNAL_UNINSTALL, T0), 0);
    store_reference g;
    char *err = NULL;
    CHECK_INT(store_get_reference(s, "a:ghost", &g, &err), 1);
    CHECK_INT(g.installed, 0);
    CHECK_INT(g.uninstalled_at, T0);
    CHECK_INT(g.created_at, T0);
    store_reference_clear(&g);
    /* Then an INSTALL runs the hook. */
    CHECK_INT(put(s, &r, STORE_SIGNAL_INSTALL, T0 + 1), 1);
    store_close(s);
}

/* ---- finds ---- */

static void find_user_reference(void)
{
    store *s = open_mem();
    store_reference a = ref_of("a:1", "personal", "t1", "29:u", "aad-u", NULL, NULL);
    store_reference b = ref_of("19:g@thread.v2", "groupChat", "t1", "29:u", "aad-u", NULL, NULL);
    store_reference c = ref_of("a:2", "personal", "t2", "29:u-t2", "aad-u", NULL, NULL);
    store_reference other = ref_of("a:3", "personal", "t1", "29:v", "aad-v", NULL, NULL);
    put_plain(s, &a, T0);
    put_plain(s, &b, T0 + 10);
    put_plain(s, &c, T0 + 20);
    put_plain(s, &other, T0 + 30);

    store_reference g;
    char *err = NULL;
    /* By user id: the most recently updated of a and b. */
    CHECK_INT(store_find_user_reference(s, "29:u", NULL, NULL, &g, &err), 1);
    CHECK_STR(g.id, "19:g@thread.v2");
    store_reference_clear(&g);
    CHECK_INT(store_find_user_reference(s, "29:u", NULL, "personal", &g, &err), 1);
    CHECK_STR(g.id, "a:1");
    store_reference_clear(&g);
    CHECK_INT(store_find_user_reference(s, "29:u", "t2", NULL, &g, &err), 0);
    CHECK(g.buf_ == NULL);

    /* By AAD object id, across tenants unless one is named. */
    CHECK_INT(store_find_user_reference(s, "aad-u", NULL, NULL, &g, &err), 1);
    CHECK_STR(g.id, "a:2");
    store_reference_clear(&g);
    CHECK_INT(store_find_user_reference(s, "aad-u", "t1", "personal", &g, &err), 1);
    CHECK_STR(g.id, "a:1");
    store_reference_clear(&g);
    CHECK_INT(store_find_user_reference(s, "aad-u", "t1", "channel", &g, &err), 0);
    CHECK_INT(store_find_user_reference(s, "nobody", NULL, NULL, &g, &err), 0);

    /* An update makes a the most recent. */
    put_plain(s, &a, T0 + 100);
    CHECK_INT(store_find_user_reference(s, "29:u", "t1", NULL, &g, &err), 1);
    CHECK_STR(g.id, "a:1");
    store_reference_clear(&g);

    /* Installed beats more recent but uninstalled; with none installed, the most recent wins. */
    CHECK_INT(put(s, &a, STORE_SIGNAL_UNINSTALL, T0 + 200), 1);
    CHECK_INT(store_find_user_reference(s, "29:u", "t1", NULL, &g, &err), 1);
    CHECK_STR(g.id, "19:g@thread.v2");
    CHECK_INT(g.installed, 1);
    store_reference_clear(&g);
    CHECK_INT(put(s, &b, STORE_SIGNAL_UNINSTALL, T0 + 150), 1);
    CHECK_INT(store_find_user_reference(s, "29:u", "t1", NULL, &g, &err), 1);
    CHECK_STR(g.id, "a:1");
    CHECK_INT(g.installed, 0);
    CHECK_INT(g.uninstalled_at, T0 + 200);
    store_reference_clear(&g);
    CHECK(err == NULL);
    store_close(s);
}

static void find_channel_reference(void)
{
    store *s = open_mem();
    store_reference general = ref_of("19:team@thread.tacv2", "channel", "t1", NULL, NULL,
                                     "19:team@thread.tacv2", "19:team@thread.tacv2");
    store_reference thread = ref_of("19:dev@thread.tacv2;messageid=42", "channel", "t1", NULL,
                                    NULL, "19:team@thread.tacv2", "19:dev@thread.tacv2");
    store_reference elsewhere = ref_of("19:other@thread.tacv2", "channel", "t2", NULL, NULL,
                                       "19:otherteam@thread.tacv2", "19:other@thread.tacv2");
    put_plain(s, &general, T0);
    put_plain(s, &thread, T0 + 10);
    put_plain(s, &elsewhere, T0 + 20);

    store_reference g;
    char *err = NULL;
    /* By team id: the most recent conversation in the team. */
    CHECK_INT(store_find_channel_reference(s, "19:team@thread.tacv2", &g, &err), 1);
    CHECK_STR(g.id, "19:dev@thread.tacv2;messageid=42");
    CHECK_STR(g.tenant_id, "t1");
    CHECK_STR(g.service_url, "https://s/");
    store_reference_clear(&g);
    /* By channel id. */
    CHECK_INT(store_find_channel_reference(s, "19:dev@thread.tacv2", &g, &err), 1);
    CHECK_STR(g.id, "19:dev@thread.tacv2;messageid=42");
    store_reference_clear(&g);
    /* By conversation id. */
    CHECK_INT(store_find_channel_reference(s, "19:other@thread.tacv2", &g, &err), 1);
    CHECK_STR(g.tenant_id, "t2");
    store_reference_clear(&g);
    CHECK_INT(store_find_channel_reference(s, "19:otherteam@thread.tacv2", &g, &err), 1);
    CHECK_STR(g.id, "19:other@thread.tacv2");
    store_reference_clear(&g);
    CHECK_INT(store_find_channel_reference(s, "19:none@thread.tacv2", &g, &err), 0);

    /* Installed beats recent-but-removed. */
    CHECK_INT(put(s, &thread, STORE_SIGNAL_UNINSTALL, T0 + 30), 1);
    CHECK_INT(store_find_channel_reference(s, "19:team@thread.tacv2", &g, &err), 1);
    CHECK_STR(g.id, "19:team@thread.tacv2");
    store_reference_clear(&g);
    CHECK(err == NULL);
    store_close(s);
}

static void find_tenant_reference(void)
{
    store *s = open_mem();
    store_reference a = ref_of("a:1", "personal", "t1", "29:a", NULL, NULL, NULL);
    store_reference b = ref_of("a:2", "personal", "t1", "29:b", NULL, NULL, NULL);
    store_reference c = ref_of("a:3", "personal", "t2", "29:c", NULL, NULL, NULL);
    put_plain(s, &b, T0 + 10);
    put_plain(s, &a, T0 + 20);
    put_plain(s, &c, T0 + 30);

    store_reference g;
    char *err = NULL;
    CHECK_INT(store_find_tenant_reference(s, "t1", &g, &err), 1);
    CHECK_STR(g.id, "a:1");
    store_reference_clear(&g);
    CHECK_INT(store_find_tenant_reference(s, "t2", &g, &err), 1);
    CHECK_STR(g.id, "a:3");
    store_reference_clear(&g);
    CHECK_INT(store_find_tenant_reference(s, "t3", &g, &err), 0);

    CHECK_INT(put(s, &a, STORE_SIGNAL_UNINSTALL, T0 + 40), 1);
    CHECK_INT(store_find_tenant_reference(s, "t1", &g, &err), 1);
    CHECK_STR(g.id, "a:2");
    store_reference_clear(&g);
    CHECK_INT(put(s, &b, STORE_SIGNAL_UNINSTALL, T0 + 50), 1);
    CHECK_INT(store_find_tenant_reference(s, "t1", &g, &err), 1);
    CHECK_STR(g.id, "a:2");   /* none installed: the most recently updated */
    CHECK_INT(g.installed, 0);
    store_reference_clear(&g);
    /* Same-millisecond updates: the later insert wins, deterministically. */
    store_reference d = ref_of("a:0", "personal", "t4", NULL, NULL, NULL, NULL);
    store_reference e = ref_of("a:9", "personal", "t4", NULL, NULL, NULL, NULL);
    put_plain(s, &e, T0);
    put_plain(s, &d, T0);
    CHECK_INT(store_find_tenant_reference(s, "t4", &g, &err), 1);
    CHECK_STR(g.id, "a:0");
    store_reference_clear(&g);
    CHECK(err == NULL);
    store_close(s);
}

/* ---- list ---- */

static store *list_fixture(void)
{
    store *s = open_mem();
    store_reference refs[] = {
        ref_of("a:01", "personal", "t1", "29:u1", "aad-1", NULL, NULL),
        ref_of("a:02", "personal", "t1", "29:u2", "aad-2", NULL, NULL),
        ref_of("a:03", "personal", "t2", "29:u3", "aad-1", NULL, NULL),
        ref_of("19:c1", "channel", "t1", NULL, NULL, "19:teamA", "19:c1"),
        ref_of("19:c2", "channel", "t1", "29:u1", NULL, "19:teamA", "19:c2"),
        ref_of("19:c3", "channel", "t2", NULL, NULL, "19:teamB", "19:c3"),
        ref_of("19:g1", "groupChat", "t1", "29:u2", NULL, NULL, NULL),
    };
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
        put_plain(s, &refs[i], T0 + (int64_t)i);
    /* a:02 and 19:c3 are uninstalled. */
    CHECK_INT(put(s, &refs[1], STORE_SIGNAL_UNINSTALL, T0 + 100), 1);
    CHECK_INT(put(s, &refs[5], STORE_SIGNAL_UNINSTALL, T0 + 100), 1);
    return s;
}

static void list_filters(void)
{
    store *s = list_fixture();
    collected c;

    /* No filter: installed only, ordered by id. */
    CHECK_INT(list_ids(s, NULL, NULL, 100, &c), 5);
    CHECK_STR(c.ids[0], "19:c1");
    CHECK_STR(c.ids[1], "19:c2");
    CHECK_STR(c.ids[2], "19:g1");
    CHECK_STR(c.ids[3], "a:01");
    CHECK_STR(c.ids[4], "a:03");

    store_filter f = {.include_uninstalled = 1};
    CHECK_INT(list_ids(s, &f, NULL, 100, &c), 7);
    CHECK_STR(c.ids[2], "19:c3");
    CHECK_STR(c.ids[5], "a:02");

    f = (store_filter){.tenant_id = "t1"};
    CHECK_INT(list_ids(s, &f, NULL, 100, &c), 4);
    f.include_uninstalled = 1;
    CHECK_INT(list_ids(s, &f, NULL, 100, &c), 5);

    f = (store_filter){.type = "personal"};
    CHECK_INT(list_ids(s, &f, NULL, 100, &c), 2);
    CHECK_STR(c.ids[0], "a:01");
    CHECK_STR(c.ids[1], "a:03");

    f = (store_filter){.team_id = "19:teamA"};
    CHECK_INT(list_ids(s, &f, NULL, 100, &c), 2);
    CHECK_STR(c.ids[0], "19:c1");
    CHECK_STR(c.ids[1], "19:c2");
    f = (store_filter){.team_id = "19:teamB"};
    CHECK_INT(list_ids(s, &f, NULL, 100, &c), 0);
    f.include_uninstalled = 1;
    CHECK_INT(list_ids(s, &f, NULL, 100, &c), 1);

    /* user matches user_id or user_aad_id. */
    f = (store_filter){.user = "29:u1"};
    CHECK_INT(list_ids(s, &f, NULL, 100, &c), 2);
    CHECK_STR(c.ids[0], "19:c2");
    CHECK_STR(c.ids[1], "a:01");
    f = (store_filter){.user = "aad-1"};
    CHECK_INT(list_ids(s, &f, NULL, 100, &c), 2);
    CHECK_STR(c.ids[0], "a:01");
    CHECK_STR(c.ids[1], "a:03");

    /* Filters combine. */
    f = (store_filter){.user = "aad-1", .tenant_id = "t2", .type = "personal"};
    CHECK_INT(list_ids(s, &f, NULL, 100, &c), 1);
    CHECK_STR(c.ids[0], "a:03");
    f = (store_filter){.user = "29:u2", .tenant_id = "t1", .include_uninstalled = 1};
    CHECK_INT(list_ids(s, &f, NULL, 100, &c), 2);
    CHECK_STR(c.ids[0], "19:g1");
    CHECK_STR(c.ids[1], "a:02");
    f = (store_filter){.tenant_id = "nope"};
    CHECK_INT(list_ids(s, &f, NULL, 100, &c), 0);
    store_close(s);
}

static int check_fields(const store_reference *r, void *ud)
{
    int *seen = ud;
    (*seen)++;
    CHECK_STR(r->id, "a:conv-1");
    CHECK_STR(r->user_name, "Ada Lovelace");
    CHECK_STR(r->timezone, "Europe/London");
    CHECK_STR(r->service_url, "https://smba.trafficmanager.net/emea/");
    CHECK_INT(r->installed, 1);
    CHECK_INT(r->created_at, T0);
    CHECK_INT(r->updated_at, T0);
    CHECK_INT(r->uninstalled_at, 0);
    CHECK(r->buf_ == NULL);
    return 0;
}

static void list_passes_every_field(void)
{
    store *s = open_mem();
    store_reference r = full_ref("a:conv-1");
    put_plain(s, &r, T0);
    int seen = 0;
    char *err = NULL;
    CHECK_INT(store_list_references(s, NULL, NULL, 10, check_fields, &seen, &err), 1);
    CHECK_INT(seen, 1);
    store_close(s);
}

static void list_pagination_and_early_stop(void)
{
    store *s = open_mem();
    char id[32];
    for (int i = 0; i < 25; i++) {
        snprintf(id, sizeof id, "a:%03d", i);
        store_reference r = ref_of(id, "personal", "t", NULL, NULL, NULL, NULL);
        put_plain(s, &r, T0 + i);
    }
    /* Walk in pages of 10, resuming after the last id of each page. */
    collected c;
    char after[48] = "";
    int total = 0, pages = 0;
    for (;;) {
        int n = list_ids(s, NULL, pages ? after : NULL, 10, &c);
        CHECK(n >= 0);
        if (n <= 0)
            break;
        for (int i = 0; i < n; i++) {
            snprintf(id, sizeof id, "a:%03d", total + i);
            CHECK_STR(c.ids[i], id);
        }
        total += n;
        pages++;
        snprintf(after, sizeof after, "%s", c.ids[n - 1]);
        if (pages > 10)
            break;
    }
    CHECK_INT(total, 25);
    CHECK_INT(pages, 3);

    CHECK_INT(list_ids(s, NULL, "a:020", 100, &c), 4);
    CHECK_STR(c.ids[0], "a:021");
    CHECK_INT(list_ids(s, NULL, "a:024", 100, &c), 0);
    CHECK_INT(list_ids(s, NULL, NULL, 0, &c), 0);
    CHECK_INT(list_ids(s, NULL, NULL, -1, &c), 25);

    /* fn returning non-zero stops; the row it stopped on counts. */
    char *err = NULL;
    memset(&c, 0, sizeof c);
    c.stop_after = 3;
    CHECK_INT(store_list_references(s, NULL, NULL, 100, collect, &c, &err), 3);
    CHECK_INT(c.n, 3);
    CHECK_STR(c.ids[2], "a:002");
    /* The statement was reset: the next list starts fresh. */
    CHECK_INT(list_ids(s, NULL, NULL, 100, &c), 25);
    store_close(s);
}

typedef struct nested {
    store *s;
    int rc;
    char *err;
    int puts;
} nested;

static int list_inside_list(const store_reference *r, void *ud)
{
    nested *n = ud;
    collected c;
    n->rc = store_list_references(n->s, NULL, NULL, 10, collect, &c, &n->err);
    return 1;
}

/* Storing from inside a list callback (a broadcast that records what it sent) must work. */
static int put_inside_list(const store_reference *r, void *ud)
{
    nested *n = ud;
    store_reference upd = {.id = r->id, .service_url = r->service_url, .last_activity_id = "sent"};
    int hook = -1;
    if (store_put_reference(n->s, &upd, STORE_SIGNAL_NONE, T0 + 1000, WINDOW, &hook, &n->err) == 0)
        n->puts++;
    return 0;
}

static void list_errors_and_nesting(void)
{
    store *s = list_fixture();
    char *err = NULL;
    CHECK_INT(store_list_references(s, NULL, NULL, 10, NULL, NULL, &err), -1);
    CHECK(err && strstr(err, "callback") != NULL);
    free(err);
    err = NULL;

    nested n = {.s = s};
    CHECK_INT(store_list_references(s, NULL, NULL, 10, list_inside_list, &n, &err), 1);
    CHECK_INT(n.rc, -1);
    CHECK(n.err != NULL);
    free(n.err);

    n = (nested){.s = s};
    CHECK_INT(store_list_references(s, NULL, NULL, 100, put_inside_list, &n, &err), 5);
    CHECK(n.err == NULL);
    CHECK_INT(n.puts, 5);
    free(n.err);
    store_reference g;
    CHECK_INT(store_get_reference(s, "a:03", &g, &err), 1);
    CHECK_STR(g.last_activity_id, "sent");
    CHECK_INT(g.updated_at, T0 + 1000);
    store_reference_clear(&g);
    store_close(s);
}

/* ---- database failures underneath the store ---- */

static void failed_upsert_rolls_back(void)
{
    char path[128];
    CHECK(make_tmpdir() != NULL);
    tmp_path(path, sizeof path, "h.db");
    char *err = NULL;
    store *s = store_open(path, &err);
    CHECK(s != NULL);
    store_reference ok = ref_of("a:ok", "personal", "t", NULL, NULL, NULL, NULL);
    put_plain(s, &ok, T0);

    /* A trigger added behind the store's back makes the upsert itself fail. */
    sqlite3 *db = raw_open(path);
    raw_exec(db, "CREATE TRIGGER no_boom BEFORE INSERT ON conversations WHEN NEW.id = 'a:boom'"
                 " BEGIN SELECT RAISE(ABORT, 'boom refused'); END;"
                 "CREATE TRIGGER no_ok_update BEFORE UPDATE ON conversations"
                 " WHEN NEW.last_activity_id = 'bad' BEGIN SELECT RAISE(ABORT, 'bad update'); END");

    int hook = 7;
    store_reference boom = ref_of("a:boom", "personal", "t", NULL, NULL, NULL, NULL);
    CHECK_INT(store_put_reference(s, &boom, STORE_SIGNAL_INSTALL, T0, WINDOW, &hook, &err), -1);
    CHECK(err && strstr(err, "boom refused") != NULL);
    CHECK_INT(hook, 0);
    free(err);
    err = NULL;

    store_reference bad = ok;
    bad.last_activity_id = "bad";
    CHECK_INT(store_put_reference(s, &bad, STORE_SIGNAL_UNINSTALL, T0 + 1, WINDOW, &hook, &err), -1);
    CHECK(err && strstr(err, "bad update") != NULL);
    free(err);
    err = NULL;

    /* Rolled back: the transaction is not left open, the row is unchanged, the store still works. */
    store_reference g;
    CHECK_INT(store_get_reference(s, "a:boom", &g, &err), 0);
    CHECK_INT(store_get_reference(s, "a:ok", &g, &err), 1);
    CHECK_INT(g.installed, 1);
    CHECK(g.last_activity_id == NULL);
    store_reference_clear(&g);
    CHECK_INT(put(s, &ok, STORE_SIGNAL_UNINSTALL, T0 + 2), 1);
    /* The other connection can write, so no lock was leaked. */
    raw_exec(db, "DROP TRIGGER no_boom; DROP TRIGGER no_ok_update");
    sqlite3_close(db);
    store_close(s);
    remove_tmpdir();
}

static void busy_database_fails_put(void)
{
    char path[128];
    CHECK(make_tmpdir() != NULL);
    tmp_path(path, sizeof path, "h.db");
    char *err = NULL;
    store *s = store_open(path, &err);
    CHECK(s != NULL);
    sqlite3 *db = raw_open(path);
    /* Another writer holds the lock: the store never waits for it (busy timeout 0 after open),
     * so the put fails at once instead of stalling the event loop. */
    raw_exec(db, "BEGIN IMMEDIATE");
    store_reference r = ref_of("a:x", "personal", "t", NULL, NULL, NULL, NULL);
    CHECK_INT(store_put_reference(s, &r, STORE_SIGNAL_NONE, T0, WINDOW, NULL, &err), -1);
    CHECK(err && strstr(err, "locked") != NULL);
    free(err);
    err = NULL;
    raw_exec(db, "ROLLBACK");
    CHECK_INT(store_put_reference(s, &r, STORE_SIGNAL_NONE, T0, WINDOW, NULL, &err), 0);
    sqlite3_close(db);
    store_close(s);
    remove_tmpdir();
}

static void reads_fail_cleanly_when_table_is_gone(void)
{
    char path[128];
    CHECK(make_tmpdir() != NULL);
    tmp_path(path, sizeof path, "h.db");
    char *err = NULL;
    store *s = store_open(path, &err);
    CHECK(s != NULL);
    store_reference r = ref_of("a:1", "personal", "t", "29:u", NULL, NULL, NULL);
    put_plain(s, &r, T0);

    sqlite3 *db = raw_open(path);
    raw_exec(db, "DROP TABLE conversations");
    sqlite3_close(db);

    store_reference g;
    CHECK_INT(store_get_reference(s, "a:1", &g, &err), -1);
    CHECK(err && strstr(err, "conversations") != NULL);
    CHECK(g.buf_ == NULL);
    free(err);
    err = NULL;
    CHECK_INT(store_find_user_reference(s, "29:u", NULL, NULL, &g, &err), -1);
    CHECK(err != NULL);
    free(err);
    err = NULL;
    CHECK_INT(store_find_channel_reference(s, "a:1", &g, &err), -1);
    CHECK(err != NULL);
    free(err);
    err = NULL;
    CHECK_INT(store_find_tenant_reference(s, "t", &g, &err), -1);
    CHECK(err != NULL);
    free(err);
    err = NULL;
    collected c;
    CHECK_INT(store_list_references(s, NULL, NULL, 10, collect, &c, &err), -1);
    CHECK(err != NULL);
    free(err);
    err = NULL;
    int hook = 7;
    CHECK_INT(store_put_reference(s, &r, STORE_SIGNAL_INSTALL, T0, WINDOW, &hook, &err), -1);
    CHECK(err != NULL);
    CHECK_INT(hook, 0);
    free(err);
    err = NULL;
    /* The version statement still works, and a failed put left no transaction open. */
    CHECK_INT(store_schema_version(s), STORE_TEST_LATEST);
    CHECK_INT(store_put_reference(s, &r, STORE_SIGNAL_INSTALL, T0, WINDOW, &hook, &err), -1);
    free(err);
    store_close(s);
    remove_tmpdir();
}

static void partially_migrated_database_is_completed(void)
{
    /* A database at version 0 that was never migrated (e.g. created empty by a shell). */
    char path[128];
    CHECK(make_tmpdir() != NULL);
    tmp_path(path, sizeof path, "h.db");
    sqlite3 *db = raw_open(path);
    raw_exec(db, "CREATE TABLE unrelated (x)");
    sqlite3_close(db);
    char *err = NULL;
    store *s = store_open(path, &err);
    CHECK(s != NULL);
    CHECK_INT(store_schema_version(s), STORE_TEST_LATEST);
    store_close(s);

    /* A version-0 database where migration 1 cannot apply fails the open and stays at version 0. */
    db = raw_open(path);
    raw_exec(db, "DROP TABLE conversations; CREATE TABLE conversations (x); PRAGMA user_version = 0");
    sqlite3_close(db);
    s = store_open(path, &err);
    CHECK(s == NULL);
    CHECK(err && strstr(err, "migration 1") != NULL);
    free(err);
    db = raw_open(path);
    CHECK_INT(raw_int(db, "PRAGMA user_version"), 0);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'conversations_user'"), 0);
    sqlite3_close(db);
    remove_tmpdir();
}

/* ---- write paths: the index-preserving UPDATE and the full UPSERT ---- */

/* A group chat's user_id follows whoever spoke last, so indexed fields do change on a known row. */
static void changed_keys_are_reindexed(void)
{
    store *s = open_mem();
    store_reference r = full_ref("19:g@thread.v2");
    put_plain(s, &r, T0);

    store_reference next = {.id = r.id, .service_url = "https://s2/", .user_id = "29:bob",
                            .user_aad_id = "aad-bob", .user_name = "Bob", .tenant_id = "tenant-2",
                            .team_id = "19:team2", .team_channel_id = "19:chan2"};
    put_plain(s, &next, T0 + 10);

    store_reference g;
    char *err = NULL;
    CHECK_INT(store_find_user_reference(s, "29:bob", NULL, NULL, &g, &err), 1);
    CHECK_STR(g.id, "19:g@thread.v2");
    CHECK_STR(g.user_name, "Bob");
    CHECK_STR(g.service_url, "https://s2/");
    CHECK_STR(g.locale, "en-GB");   /* unindexed fields the activity lacked are kept */
    CHECK_STR(g.bot_name, "Herald");
    store_reference_clear(&g);
    CHECK_INT(store_find_user_reference(s, "aad-bob", "tenant-2", NULL, &g, &err), 1);
    store_reference_clear(&g);
    CHECK_INT(store_find_user_reference(s, "29:user-1", NULL, NULL, &g, &err), 0);
    CHECK_INT(store_find_user_reference(s, "aad-1", NULL, NULL, &g, &err), 0);
    CHECK_INT(store_find_tenant_reference(s, "tenant-1", &g, &err), 0);
    CHECK_INT(store_find_tenant_reference(s, "tenant-2", &g, &err), 1);
    store_reference_clear(&g);
    CHECK_INT(store_find_channel_reference(s, "19:team@thread.tacv2", &g, &err), 0);
    CHECK_INT(store_find_channel_reference(s, "19:chan@thread.tacv2", &g, &err), 0);
    CHECK_INT(store_find_channel_reference(s, "19:team2", &g, &err), 1);
    store_reference_clear(&g);
    CHECK_INT(store_find_channel_reference(s, "19:chan2", &g, &err), 1);
    store_reference_clear(&g);

    /* Only one indexed field changes: the others stay findable. */
    store_reference third = {.id = r.id, .service_url = "https://s2/", .user_id = "29:carol"};
    put_plain(s, &third, T0 + 20);
    CHECK_INT(store_find_user_reference(s, "29:carol", NULL, NULL, &g, &err), 1);
    CHECK_STR(g.user_aad_id, "aad-bob");   /* NULL did not overwrite */
    CHECK_STR(g.user_name, "Bob");
    store_reference_clear(&g);
    CHECK_INT(store_find_user_reference(s, "aad-bob", NULL, NULL, &g, &err), 1);
    store_reference_clear(&g);
    CHECK_INT(store_find_user_reference(s, "29:bob", NULL, NULL, &g, &err), 0);
    store_filter f = {.team_id = "19:team2", .user = "29:carol"};
    collected c;
    CHECK_INT(list_ids(s, &f, NULL, 10, &c), 1);
    CHECK(err == NULL);
    store_close(s);
}

/* The same install rules with an indexed field changing on every put, so each one takes the
 * UPSERT path rather than the UPDATE one. */
static void install_signal_rules_on_the_upsert_path(void)
{
    store *s = open_mem();
    char user[32];
    int n = 0;
    store_reference r = ref_of("19:group@thread.v2", "groupChat", "t", user, NULL, NULL, NULL);
#define NEXT_USER() snprintf(user, sizeof user, "29:u%d", n++)
    NEXT_USER();
    CHECK_INT(put(s, &r, STORE_SIGNAL_INSTALL, T0), 1);
    NEXT_USER();
    CHECK_INT(put(s, &r, STORE_SIGNAL_INSTALL, T0 + 200), 0);
    NEXT_USER();
    CHECK_INT(put(s, &r, STORE_SIGNAL_INSTALL, T0 + 200 + WINDOW), 1);
    int64_t t = T0 + 100000;
    NEXT_USER();
    CHECK_INT(put(s, &r, STORE_SIGNAL_UNINSTALL, t), 1);
    NEXT_USER();
    CHECK_INT(put(s, &r, STORE_SIGNAL_UNINSTALL, t + 50), 0);
    store_reference g;
    char *err = NULL;
    CHECK_INT(store_get_reference(s, r.id, &g, &err), 1);
    CHECK_INT(g.installed, 0);
    CHECK_INT(g.uninstalled_at, t);
    CHECK_STR(g.user_id, "29:u4");
    store_reference_clear(&g);
    NEXT_USER();
    CHECK_INT(put(s, &r, STORE_SIGNAL_INSTALL, t + 60), 1);
    NEXT_USER();
    CHECK_INT(put(s, &r, STORE_SIGNAL_UNINSTALL, t + 70), 1);
    NEXT_USER();
    CHECK_INT(put(s, &r, STORE_SIGNAL_NONE, t + 80), 0);
    CHECK_INT(store_get_reference(s, r.id, &g, &err), 1);
    CHECK_INT(g.installed, 1);
    CHECK_INT(g.uninstalled_at, 0);
    CHECK_INT(g.created_at, T0);
    CHECK_INT(g.updated_at, t + 80);
    store_reference_clear(&g);
#undef NEXT_USER
    store_close(s);
}

/* Unlike every other field, the seal is replaced even by NULL: a seal belongs to one
 * (id, service_url) pair, and keeping an old one beside a new URL would be wrong. */
static void seal_is_always_replaced(void)
{
    store *s = open_mem();
    store_reference r = ref_of("a:1", "personal", "t", "29:u", NULL, NULL, NULL);
    r.service_url_seal = "seal-1";
    put_plain(s, &r, T0);
    store_reference g;
    char *err = NULL;
    CHECK_INT(store_get_reference(s, "a:1", &g, &err), 1);
    CHECK_STR(g.service_url_seal, "seal-1");
    store_reference_clear(&g);

    /* UPDATE path (same keys). */
    r.service_url_seal = NULL;
    put_plain(s, &r, T0 + 1);
    CHECK_INT(store_get_reference(s, "a:1", &g, &err), 1);
    CHECK(g.service_url_seal == NULL);
    store_reference_clear(&g);
    r.service_url_seal = "seal-2";
    put_plain(s, &r, T0 + 2);
    CHECK_INT(store_get_reference(s, "a:1", &g, &err), 1);
    CHECK_STR(g.service_url_seal, "seal-2");
    store_reference_clear(&g);

    /* UPSERT path (a key changes). */
    r.user_id = "29:v";
    r.service_url_seal = NULL;
    put_plain(s, &r, T0 + 3);
    CHECK_INT(store_get_reference(s, "a:1", &g, &err), 1);
    CHECK(g.service_url_seal == NULL);
    CHECK_STR(g.user_id, "29:v");
    store_reference_clear(&g);
    store_close(s);
}

/* ---- group commit ---- */

static void batch_groups_puts_into_one_commit(void)
{
    char path[128];
    CHECK(make_tmpdir() != NULL);
    tmp_path(path, sizeof path, "h.db");
    char *err = NULL;
    store *s = store_open(path, &err);
    CHECK(s != NULL);
    CHECK_INT(store_in_batch(s), 0);
    CHECK_INT(store_batch_commit(s, &err), 0);   /* nothing open: a no-op */

    CHECK_INT(store_batch_begin(s, &err), 0);
    CHECK_INT(store_in_batch(s), 1);
    CHECK_INT(store_batch_begin(s, &err), 0);    /* already open: joins it */
    store_reference a = ref_of("a:1", "personal", "t", "29:a", NULL, NULL, NULL);
    store_reference b = ref_of("a:2", "personal", "t", "29:b", NULL, NULL, NULL);
    CHECK_INT(put(s, &a, STORE_SIGNAL_INSTALL, T0), 1);
    CHECK_INT(put(s, &b, STORE_SIGNAL_NONE, T0), 0);
    CHECK_INT(put(s, &a, STORE_SIGNAL_INSTALL, T0 + 1), 0);   /* the batch sees its own writes */
    store_reference g;
    CHECK_INT(store_get_reference(s, "a:2", &g, &err), 1);
    store_reference_clear(&g);

    /* Another connection sees nothing until the batch commits. */
    sqlite3 *db = raw_open(path);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM conversations"), 0);

    /* A failing put inside the batch undoes only itself. */
    store_reference bad = {.id = "a:3"};
    CHECK_INT(store_put_reference(s, &bad, STORE_SIGNAL_NONE, T0, WINDOW, NULL, &err), -1);
    free(err);
    err = NULL;
    CHECK_INT(store_in_batch(s), 1);

    CHECK_INT(store_batch_commit(s, &err), 0);
    CHECK(err == NULL);
    CHECK_INT(store_in_batch(s), 0);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM conversations"), 2);
    sqlite3_close(db);
    store_close(s);
    remove_tmpdir();
}

static void failed_put_inside_batch_keeps_the_batch(void)
{
    char path[128];
    CHECK(make_tmpdir() != NULL);
    tmp_path(path, sizeof path, "h.db");
    char *err = NULL;
    store *s = store_open(path, &err);
    CHECK(s != NULL);
    sqlite3 *db = raw_open(path);
    raw_exec(db, "CREATE TRIGGER no_boom BEFORE INSERT ON conversations WHEN NEW.id = 'a:boom'"
                 " BEGIN SELECT RAISE(ABORT, 'boom refused'); END");

    CHECK_INT(store_batch_begin(s, &err), 0);
    store_reference ok = ref_of("a:ok", "personal", "t", NULL, NULL, NULL, NULL);
    store_reference boom = ref_of("a:boom", "personal", "t", NULL, NULL, NULL, NULL);
    put_plain(s, &ok, T0);
    int hook = 7;
    CHECK_INT(store_put_reference(s, &boom, STORE_SIGNAL_INSTALL, T0, WINDOW, &hook, &err), -1);
    CHECK(err && strstr(err, "boom refused") != NULL);
    CHECK_INT(hook, 0);
    free(err);
    err = NULL;
    /* The batch is still usable and the earlier put survives the failed one. */
    store_reference ok2 = ref_of("a:ok2", "personal", "t", NULL, NULL, NULL, NULL);
    put_plain(s, &ok2, T0);
    CHECK_INT(store_batch_commit(s, &err), 0);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM conversations"), 2);
    CHECK_INT(raw_int(db, "SELECT count(*) FROM conversations WHERE id = 'a:boom'"), 0);
    raw_exec(db, "DROP TRIGGER no_boom");
    sqlite3_close(db);
    store_close(s);
    remove_tmpdir();
}

/* ---- time zone changes ---- */

/* store_put_reference_zone reports a zone only when it differs from the stored one. */
static void zone_change_is_reported(void)
{
    store *s = open_mem();
    store_reference r = full_ref("a:tz");
    char *err = NULL;
    int hook = 0, changed = -1;
    r.timezone = "America/New_York";
    CHECK_INT(store_put_reference_zone(s, &r, STORE_SIGNAL_NONE, T0, WINDOW, &hook, &changed, &err), 0);
    CHECK_INT(changed, 1);                     /* new conversation with a zone */
    CHECK_INT(store_put_reference_zone(s, &r, STORE_SIGNAL_NONE, T0 + 1, WINDOW, &hook, &changed, &err), 0);
    CHECK_INT(changed, 0);                     /* same zone */
    r.timezone = NULL;
    CHECK_INT(store_put_reference_zone(s, &r, STORE_SIGNAL_NONE, T0 + 2, WINDOW, &hook, &changed, &err), 0);
    CHECK_INT(changed, 0);                     /* no zone in the activity: nothing changes */
    r.timezone = "Europe/Paris";
    CHECK_INT(store_put_reference_zone(s, &r, STORE_SIGNAL_NONE, T0 + 3, WINDOW, &hook, &changed, &err), 0);
    CHECK_INT(changed, 1);                     /* moved */
    CHECK_INT(store_put_reference_zone(s, &r, STORE_SIGNAL_NONE, T0 + 4, WINDOW, NULL, NULL, &err), 0);
    store_close(s);
}

/* ---- clear ---- */

static void clear_is_idempotent(void)
{
    store *s = open_mem();
    store_reference r = full_ref("a:conv-1");
    put_plain(s, &r, T0);
    store_reference g;
    char *err = NULL;
    CHECK_INT(store_get_reference(s, "a:conv-1", &g, &err), 1);
    store_reference_clear(&g);
    CHECK(g.id == NULL);
    CHECK(g.buf_ == NULL);
    CHECK_INT(g.installed, 0);
    store_reference_clear(&g);
    store_reference zero = {0};
    store_reference_clear(&zero);
    store_reference_clear(NULL);
    store_close(s);
}

/* ---- the ledger as teams.ledger reads it (store_outbox.c) ---- */

typedef struct ledger_seen {
    int n;
    char ids[8][16], states[8][16];
    int64_t since[8];
} ledger_seen;

static int note_ledger(const store_ledger_entry *e, void *ud)
{
    ledger_seen *ls = ud;
    if (ls->n < 8) {
        snprintf(ls->ids[ls->n], sizeof ls->ids[0], "%s", e->conversation_id);
        snprintf(ls->states[ls->n], sizeof ls->states[0], "%s", e->state);
        ls->since[ls->n] = e->since;
    }
    ls->n++;
    return 0;
}

static ledger_seen ledger_page(store_outbox *so, const char *state, const char *tenant,
                               int64_t since, const char *after, int limit)
{
    ledger_seen ls = {0};
    char *err = NULL;
    CHECK_INT(store_ledger_list(so, state, tenant, since, after, limit, note_ledger, &ls, &err), ls.n);
    CHECK(err == NULL);
    free(err);
    return ls;
}

/* Uncleared blocked/gone marks and uninstalled conversations without one, each once, in id order,
 * paged by id, filtered by state, tenant and time; a cleared mark is gone. */
static void ledger_list_pages_and_filters(void)
{
    store *s = open_mem();
    char *err = NULL;
    store_outbox *so = store_outbox_open(s, &err);
    CHECK(so != NULL);
    const char *ids[] = {"a:1", "a:2", "a:3", "a:4", "a:5"};
    for (int i = 0; i < 5; i++) {
        store_reference r = full_ref(ids[i]);
        if (i == 2)
            r.tenant_id = "tenant-2";
        CHECK_INT(put(s, &r, STORE_SIGNAL_NONE, T0), 0);
    }
    store_reference r4 = full_ref("a:4"), r5 = full_ref("a:5");
    put(s, &r4, STORE_SIGNAL_UNINSTALL, T0 + 4);
    put(s, &r5, STORE_SIGNAL_UNINSTALL, T0 + 5);
    CHECK_INT(store_ledger_mark(so, "a:1", "blocked", "MessageWritesBlocked", "blocked", T0 + 1, &err), 0);
    CHECK_INT(store_ledger_mark(so, "a:2", "gone", "ConversationNotFound", "gone", T0 + 2, &err), 0);
    CHECK_INT(store_ledger_mark(so, "a:3", "blocked", NULL, NULL, T0 + 3, &err), 0);
    CHECK_INT(store_ledger_mark(so, "a:5", "blocked", NULL, NULL, T0 + 6, &err), 0);   /* and uninstalled */
    CHECK_INT(store_ledger_clear(so, "a:2", T0 + 7, &err), 0);

    ledger_seen all = ledger_page(so, NULL, NULL, 0, NULL, 100);
    CHECK_INT(all.n, 4);
    CHECK_STR(all.ids[0], "a:1");
    CHECK_STR(all.states[0], "blocked");
    CHECK_INT(all.since[0], T0 + 1);
    CHECK_STR(all.ids[1], "a:3");
    CHECK_STR(all.ids[2], "a:4");
    CHECK_STR(all.states[2], "uninstalled");
    CHECK_INT(all.since[2], T0 + 4);
    CHECK_STR(all.ids[3], "a:5");
    CHECK_STR(all.states[3], "blocked");           /* a mark wins over the uninstall, once */

    ledger_seen p1 = ledger_page(so, NULL, NULL, 0, NULL, 2);
    CHECK_INT(p1.n, 2);
    ledger_seen p2 = ledger_page(so, NULL, NULL, 0, p1.ids[1], 2);
    CHECK_INT(p2.n, 2);
    CHECK_STR(p2.ids[0], "a:4");
    CHECK_INT(ledger_page(so, NULL, NULL, 0, p2.ids[1], 2).n, 0);

    CHECK_INT(ledger_page(so, "blocked", NULL, 0, NULL, 100).n, 3);
    CHECK_INT(ledger_page(so, "uninstalled", NULL, 0, NULL, 100).n, 1);
    CHECK_INT(ledger_page(so, "gone", NULL, 0, NULL, 100).n, 0);
    ledger_seen t2 = ledger_page(so, NULL, "tenant-2", 0, NULL, 100);
    CHECK_INT(t2.n, 1);
    CHECK_STR(t2.ids[0], "a:3");
    ledger_seen late = ledger_page(so, NULL, NULL, T0 + 4, NULL, 100);
    CHECK_INT(late.n, 2);
    CHECK_STR(late.ids[0], "a:4");

    store_outbox_close(so);
    store_close(s);
}

UNIT_MAIN("store",
          CASE(open_in_memory),
          CASE(open_file_sets_wal_schema_and_indexes),
          CASE(reopen_keeps_data_and_version),
          CASE(too_new_database_is_refused_untouched),
          CASE(open_errors),
          CASE(upsert_then_get_round_trips_every_field),
          CASE(unicode_and_minimal_reference),
          CASE(null_fields_do_not_overwrite),
          CASE(missing_id_or_service_url_is_an_error),
          CASE(get_unknown_and_bad_arguments),
          CASE(install_signal_rules),
          CASE(install_on_conversation_known_from_traffic),
          CASE(uninstall_of_unknown_conversation_is_stored),
          CASE(find_user_reference),
          CASE(find_channel_reference),
          CASE(find_tenant_reference),
          CASE(list_filters),
          CASE(list_passes_every_field),
          CASE(list_pagination_and_early_stop),
          CASE(list_errors_and_nesting),
          CASE(failed_upsert_rolls_back),
          CASE(busy_database_fails_put),
          CASE(reads_fail_cleanly_when_table_is_gone),
          CASE(partially_migrated_database_is_completed),
          CASE(changed_keys_are_reindexed),
          CASE(install_signal_rules_on_the_upsert_path),
          CASE(seal_is_always_replaced),
          CASE(batch_groups_puts_into_one_commit),
          CASE(failed_put_inside_batch_keeps_the_batch),
          CASE(zone_change_is_reported),
          CASE(clear_is_idempotent),
          CASE(ledger_list_pages_and_filters))
