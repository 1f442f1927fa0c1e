/* scheduler.c — durable schedules: rows in SQLite with the next fire instant indexed, one timer
 * armed at the earliest, due rows fired in bounded batches (so 10,000 schedules due at 09:00
 * stream into the outbox without stalling inbound traffic), the missed-run policy, "tz = user",
 * and handlers found by name in whichever generation is live. The math lives in schedule.c. */
#include "scheduler.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "outbox.h"
#include "runtime.h"
#include "schedule.h"
#include "store.h"
#include "tz.h"

#include <event2/event.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rows fired per loop turn: enough to keep up with any real schedule load, few enough that an
 * inbound request waits at most a few milliseconds behind a burst. */
#define FIRE_BATCH 200
/* Longest sleep between checks: bounds the effect of a wall-clock jump on a monotonic timer. */
#define MAX_SLEEP_S 300

struct scheduler {
    runtime *rt;
    const scheduler_script *script;
    sqlite3 *db;
    sqlite3_stmt *put, *del, *get, *due, *min_next, *advance, *wait_handler, *unwait, *result,
        *user_tz, *list, *user_rows, *set_next, *pause, *pause_conv, *paused_rows, *resume;
    struct event *timer;
    int64_t armed_for;            /* unix s the timer is set for, 0 when idle */
    scheduler_stats stats;
};

static const store_statement statements[] = {
    {offsetof(struct scheduler, put),
     "INSERT INTO schedules (id, handler, kind, expr, tz, conversation_id, payload, missed, anchor,"
     " next_fire_at, waiting_handler, runs, created_at, updated_at)"
     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, 0, ?11, ?11)"
     " ON CONFLICT(id) DO UPDATE SET handler = excluded.handler, kind = excluded.kind,"
     " expr = excluded.expr, tz = excluded.tz, conversation_id = excluded.conversation_id,"
     " payload = excluded.payload, missed = excluded.missed, anchor = excluded.anchor,"
     " next_fire_at = excluded.next_fire_at, waiting_handler = 0, paused = NULL,"
     " updated_at = excluded.updated_at"},
    {offsetof(struct scheduler, del), "DELETE FROM schedules WHERE id = ?1"},
    {offsetof(struct scheduler, get),
     "SELECT id, handler, kind, expr, tz, conversation_id, payload, missed, next_fire_at,"
     " last_fire_at, last_result, runs, waiting_handler, paused FROM schedules WHERE id = ?1"},
    {offsetof(struct scheduler, due),
     "SELECT id, handler, kind, expr, tz, conversation_id, payload, missed, anchor, next_fire_at,"
     " last_result LIKE 'no handler%',"
     " (SELECT installed = 0 FROM conversations c WHERE c.id = schedules.conversation_id)"
     " FROM schedules WHERE next_fire_at <= ?1 AND waiting_handler = 0"
     " ORDER BY next_fire_at LIMIT ?2"},
    {offsetof(struct scheduler, pause),
     "UPDATE schedules SET paused = ?2, next_fire_at = NULL, updated_at = ?3 WHERE id = ?1"},
    {offsetof(struct scheduler, pause_conv),
     "UPDATE schedules SET paused = ?2, next_fire_at = NULL, updated_at = ?3"
     " WHERE conversation_id = ?1 AND paused IS NULL AND next_fire_at IS NOT NULL"},
    {offsetof(struct scheduler, paused_rows),
     "SELECT id, kind, expr, tz, anchor FROM schedules WHERE conversation_id = ?1"
     " AND paused IS NOT NULL"},
    {offsetof(struct scheduler, resume),
     "UPDATE schedules SET paused = NULL, next_fire_at = ?2, updated_at = ?3,"
     " last_result = CASE WHEN ?2 IS NULL THEN 'skipped (its conversation was uninstalled when"
     " it was due)' ELSE last_result END WHERE id = ?1"},
    {offsetof(struct scheduler, min_next),
     "SELECT min(next_fire_at) FROM schedules WHERE next_fire_at IS NOT NULL AND waiting_handler = 0"},
    {offsetof(struct scheduler, advance),
     "UPDATE schedules SET next_fire_at = ?2, last_fire_at = ?3, last_result = ?4,"
     " runs = runs + ?5, updated_at = ?6 WHERE id = ?1"},
    {offsetof(struct scheduler, wait_handler),
     "UPDATE schedules SET waiting_handler = 1, last_result = ?2 WHERE id = ?1"},
    {offsetof(struct scheduler, unwait),
     "UPDATE schedules SET waiting_handler = 0 WHERE waiting_handler = 1"},
    {offsetof(struct scheduler, user_rows),
     "SELECT id, kind, expr, anchor, next_fire_at FROM schedules WHERE conversation_id = ?1"
     " AND tz = 'user' AND next_fire_at IS NOT NULL AND next_fire_at > ?2"},
    {offsetof(struct scheduler, set_next),
     "UPDATE schedules SET next_fire_at = ?2, updated_at = ?3 WHERE id = ?1"},
    {offsetof(struct scheduler, result), "UPDATE schedules SET last_result = ?2 WHERE id = ?1"},
    {offsetof(struct scheduler, user_tz), "SELECT timezone FROM conversations WHERE id = ?1"},
    {offsetof(struct scheduler, list),
     "SELECT id, handler, kind, expr, tz, conversation_id, payload, missed, next_fire_at,"
     " last_fire_at, last_result, runs, waiting_handler, paused FROM schedules"
     " WHERE (?1 IS NULL OR handler = ?1) AND (?2 IS NULL OR conversation_id = ?2)"
     " AND id > ?3 ORDER BY id LIMIT ?4"},
};

#define NSTATEMENTS (sizeof statements / sizeof statements[0])

static int64_t now_s(void) { return clock_wall_ms() / 1000; }

static int exec(scheduler *s, sqlite3_stmt *st, char **err)
{
    return store_step(s->rt->store, st, "schedules", err);
}

/* The zone a schedule runs in: its own, the owner conversation's when "user", else the default. */
static const char *zone_for(scheduler *s, const char *tzname, const char *conv, char *buf,
                            size_t len)
{
    if (!tzname || !*tzname)
        return NULL;
    if (strcmp(tzname, "user") != 0)
        return tzname;
    const char *zone = s->rt->cfg->default_tz;
    if (conv) {
        store_bind_text(s->user_tz, 1, conv);
        if (sqlite3_step(s->user_tz) == SQLITE_ROW && sqlite3_column_text(s->user_tz, 0)) {
            const char *z = (const char *)sqlite3_column_text(s->user_tz, 0);
            char *err = NULL;
            if (tz_get(z, &err))  /* a zone the system does not know falls back to the default */
                snprintf(buf, len, "%s", z), zone = buf;
            free(err);
        }
        sqlite3_reset(s->user_tz);
        sqlite3_clear_bindings(s->user_tz);
    }
    return zone;
}

/* Parses a stored or new spec; every gets its anchor (creation time unless given). */
static int build_spec(scheduler *s, const char *kind, const char *expr, const char *tzname,
                      const char *conv, int64_t anchor, schedule_spec *spec, char **err)
{
    char buf[128];
    const char *zone = zone_for(s, tzname, conv, buf, sizeof buf);
    if (schedule_parse(kind, expr, zone, spec, err) < 0)
        return -1;
    if (spec->kind == SCHEDULE_EVERY && !spec->has_anchor && anchor) {
        spec->anchor = anchor;
        spec->has_anchor = 1;
    }
    return 0;
}

static void arm(scheduler *s)
{
    int64_t next = -1;
    if (sqlite3_step(s->min_next) == SQLITE_ROW && sqlite3_column_type(s->min_next, 0) != SQLITE_NULL)
        next = sqlite3_column_int64(s->min_next, 0);
    sqlite3_reset(s->min_next);
    if (next < 0) {
        clock_timer_del(s->timer);
        s->armed_for = 0;
        return;
    }
    int64_t now_ms = clock_wall_ms();
    int64_t wait = next * 1000 - now_ms;
    if (wait < 0)
        wait = 0;
    if (wait > MAX_SLEEP_S * 1000)
        wait = MAX_SLEEP_S * 1000;
    s->armed_for = next;
    clock_timer_add(s->timer, wait);
}

void scheduler_fire_failed(scheduler *s, const char *id, const char *message)
{
    log_error("schedule handler failed schedule=%s error=%s", id, message);
    char result[300];
    snprintf(result, sizeof result, "error: %.280s", message ? message : "?");
    char *nl = strchr(result, '\n');
    if (nl)
        *nl = 0;
    s->stats.errors++;
    store_bind_text(s->result, 1, id);
    store_bind_text(s->result, 2, result);
    outbox_touch_batch(s->rt->outbox);
    exec(s, s->result, NULL);
}

/* Fires up to FIRE_BATCH due rows; returns how many it handled, FIRE_BATCH when it stopped early
 * because this turn has run a slice of script code (scheduler_script.turn_spent: the rest stay due
 * and fire on a later turn, after inbound requests). */
static int fire_due(scheduler *s)
{
    int64_t now = now_s();
    int misfire = (int)s->rt->cfg->schedule_misfire_s;
    typedef struct due_row {
        char *id, *handler, *kind, *expr, *tz, *conv, *payload, *missed;
        int64_t anchor, next;
        int was_waiting;          /* released by a returning handler: late, but not missed */
        int uninstalled;          /* its conversation's bot was removed */
    } due_row;
    due_row rows[FIRE_BATCH];
    int n = 0;
    sqlite3_bind_int64(s->due, 1, now);
    sqlite3_bind_int(s->due, 2, FIRE_BATCH);
    while (n < FIRE_BATCH && sqlite3_step(s->due) == SQLITE_ROW) {
        due_row *r = &rows[n++];
        char **f[] = {&r->id, &r->handler, &r->kind, &r->expr, &r->tz, &r->conv, &r->payload,
                      &r->missed};
        for (int i = 0; i < 8; i++) {
            const unsigned char *t = sqlite3_column_text(s->due, i);
            *f[i] = t ? strdup((const char *)t) : NULL;
        }
        r->anchor = sqlite3_column_int64(s->due, 8);
        r->next = sqlite3_column_int64(s->due, 9);
        r->was_waiting = sqlite3_column_int(s->due, 10);
        r->uninstalled = sqlite3_column_int(s->due, 11);
    }
    sqlite3_reset(s->due);
    sqlite3_clear_bindings(s->due);
    if (n)
        outbox_touch_batch(s->rt->outbox);
    /* a firing whose advance cannot be written would fire again: wait for the store */
    int hold = n && !store_in_batch(s->rt->store);
    int stopped = 0;
    for (int i = 0; i < n; i++) {
        due_row *r = &rows[i];
        char *err = NULL;
        if (!hold && !stopped && s->script->turn_spent(s->rt))
            stopped = 1;
        if (hold || stopped)
            goto next_row;                /* stopped: still due, a later turn fires it */
        if (r->uninstalled) {
            /* teams.conversations hides this conversation; a send to it would reach nobody */
            log_info("schedule %s paused: its conversation was uninstalled (resumes when it is "
                     "installed again) conversation=%s", r->id, r->conv);
            store_bind_text(s->pause, 1, r->id);
            store_bind_text(s->pause, 2, "uninstalled");
            sqlite3_bind_int64(s->pause, 3, now);
            exec(s, s->pause, NULL);
            s->stats.paused++;
            goto next_row;
        }
        if (!s->script->has_handler(s->rt, r->handler)) {
            char why[300];
            snprintf(why, sizeof why, "no handler '%s' in the live script (kept; retried when one "
                     "registers)", r->handler);
            log_warn("schedule %s is due but %s", r->id, why + 0);
            store_bind_text(s->wait_handler, 1, r->id);
            store_bind_text(s->wait_handler, 2, why);
            exec(s, s->wait_handler, NULL);
            s->stats.waiting++;
            goto next_row;
        }
        schedule_spec spec;
        int64_t next = -1;
        if (build_spec(s, r->kind, r->expr, r->tz, r->conv, r->anchor, &spec, &err) == 0)
            next = schedule_next(&spec, now);
        else
            log_error("schedule %s can no longer be parsed: %s", r->id, err);
        int missed = !r->was_waiting && now - r->next > misfire;
        int skip = missed && r->missed && strcmp(r->missed, "skip") == 0;
        int quarantined = s->script->quarantined(s->rt, r->id);
        const char *result = err ? "error: unparsable" : skip ? "skipped (missed while down)"
                             : quarantined ? "skipped (quarantined: it stalled the host)"
                             : missed ? "fired late (missed)" : "fired";
        if (quarantined) {
            log_warn("schedule %s skipped: its handler stalled the host before and it is "
                     "quarantined until the script changes", r->id);
            skip = 1;
        }
        store_bind_text(s->advance, 1, r->id);
        if (next >= 0) sqlite3_bind_int64(s->advance, 2, next); else sqlite3_bind_null(s->advance, 2);
        sqlite3_bind_int64(s->advance, 3, now);
        store_bind_text(s->advance, 4, result);
        sqlite3_bind_int(s->advance, 5, skip || err ? 0 : 1);
        sqlite3_bind_int64(s->advance, 6, now);
        if (exec(s, s->advance, NULL) < 0 && !store_writable(s->rt->store)) {
            free(err);
            goto next_row;
        }
        if (!skip && !err) {
            s->stats.fired++;
            scheduler_firing f = {.id = r->id, .handler = r->handler, .payload = r->payload,
                                  .conversation_id = r->conv, .due = r->next, .now = now};
            s->script->fire(s->rt, s, &f);
        } else if (skip) {
            s->stats.skipped++;
        }
        free(err);
    next_row:
        free(r->id);
        free(r->handler);
        free(r->kind);
        free(r->expr);
        free(r->tz);
        free(r->conv);
        free(r->payload);
        free(r->missed);
    }
    return hold ? 0 : stopped ? FIRE_BATCH : n;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    scheduler *s = arg;
    if (!store_writable(s->rt->store)) {
        /* a firing could not be recorded; reads may lag kept writes: wait for scheduler_poke */
        s->armed_for = 0;
        return;
    }
    int n = fire_due(s);
    if (n == FIRE_BATCH) {
        /* more are due: continue on the next loop turn, after pending inbound requests */
        s->armed_for = now_s();
        clock_timer_add(s->timer, 0);
        return;
    }
    arm(s);
}

scheduler *scheduler_new(runtime *rt, const scheduler_script *script, char **err)
{
    scheduler *s = calloc(1, sizeof *s);
    if (!s) {
        *err = strdup("out of memory");
        return NULL;
    }
    s->rt = rt;
    s->script = script;
    s->db = store_db(rt->store);
    if (store_prepare_set(s->db, s, statements, NSTATEMENTS, err) < 0) {
        scheduler_free(s);
        return NULL;
    }
    s->timer = evtimer_new(rt->base, on_timer, s);
    if (!s->timer) {
        *err = strdup("out of memory");
        scheduler_free(s);
        return NULL;
    }
    arm(s);
    return s;
}

void scheduler_free(scheduler *s)
{
    if (!s)
        return;
    store_finalize_set(s, statements, NSTATEMENTS);
    if (s->timer)
        clock_timer_free(s->timer);
    free(s);
}

void scheduler_poke(scheduler *s)
{
    arm(s);
}

void scheduler_handlers_changed(scheduler *s)
{
    outbox_touch_batch(s->rt->outbox);
    exec(s, s->unwait, NULL);
    arm(s);
}

void scheduler_zone_changed(scheduler *s, const char *conversation_id)
{
    /* "09:00 in the user's zone" means the new zone from the next firing on */
    int64_t now = now_s();
    typedef struct row { char *id, *kind, *expr; int64_t anchor, next; } row;
    row rows[64];
    int n = 0;
    store_bind_text(s->user_rows, 1, conversation_id);
    sqlite3_bind_int64(s->user_rows, 2, now);
    while (n < 64 && sqlite3_step(s->user_rows) == SQLITE_ROW) {
        rows[n].id = strdup((const char *)sqlite3_column_text(s->user_rows, 0));
        rows[n].kind = strdup((const char *)sqlite3_column_text(s->user_rows, 1));
        rows[n].expr = strdup((const char *)sqlite3_column_text(s->user_rows, 2));
        rows[n].anchor = sqlite3_column_int64(s->user_rows, 3);
        rows[n].next = sqlite3_column_int64(s->user_rows, 4);
        n++;
    }
    sqlite3_reset(s->user_rows);
    sqlite3_clear_bindings(s->user_rows);
    int changed = 0;
    for (int i = 0; i < n; i++) {
        schedule_spec spec;
        char *err = NULL;
        if (rows[i].id && rows[i].kind && rows[i].expr &&
            build_spec(s, rows[i].kind, rows[i].expr, "user", conversation_id, rows[i].anchor,
                       &spec, &err) == 0) {
            int64_t next = schedule_next(&spec, now);
            if (next >= 0 && next != rows[i].next) {
                store_bind_text(s->set_next, 1, rows[i].id);
                sqlite3_bind_int64(s->set_next, 2, next);
                sqlite3_bind_int64(s->set_next, 3, now);
                outbox_touch_batch(s->rt->outbox);
                exec(s, s->set_next, NULL);
                changed = 1;
            }
        }
        free(err);
        free(rows[i].id);
        free(rows[i].kind);
        free(rows[i].expr);
    }
    if (changed)
        arm(s);
}

void scheduler_conversation_uninstalled(scheduler *s, const char *conversation_id)
{
    store_bind_text(s->pause_conv, 1, conversation_id);
    store_bind_text(s->pause_conv, 2, "uninstalled");
    sqlite3_bind_int64(s->pause_conv, 3, now_s());
    outbox_touch_batch(s->rt->outbox);
    if (exec(s, s->pause_conv, NULL) == 0 && sqlite3_changes(s->db) > 0) {
        log_info("%d schedule(s) paused: their conversation was uninstalled conversation=%s",
                 sqlite3_changes(s->db), conversation_id);
        s->stats.paused += (uint64_t)sqlite3_changes(s->db);
        arm(s);
    }
}

void scheduler_conversation_back(scheduler *s, const char *conversation_id)
{
    int64_t now = now_s();
    typedef struct row { char *id, *kind, *expr, *tz; int64_t anchor; } row;
    row rows[64];
    int n = 0;
    /* a conversation with more paused schedules resumes 64 per activity: the rest on the next */
    store_bind_text(s->paused_rows, 1, conversation_id);
    while (n < 64 && sqlite3_step(s->paused_rows) == SQLITE_ROW) {
        const char *f[4];
        for (int i = 0; i < 4; i++)
            f[i] = (const char *)sqlite3_column_text(s->paused_rows, i);
        rows[n].id = f[0] ? strdup(f[0]) : NULL;
        rows[n].kind = f[1] ? strdup(f[1]) : NULL;
        rows[n].expr = f[2] ? strdup(f[2]) : NULL;
        rows[n].tz = f[3] ? strdup(f[3]) : NULL;
        rows[n].anchor = sqlite3_column_int64(s->paused_rows, 4);
        n++;
    }
    sqlite3_reset(s->paused_rows);
    sqlite3_clear_bindings(s->paused_rows);
    if (!n)
        return;
    outbox_touch_batch(s->rt->outbox);
    for (int i = 0; i < n; i++) {
        schedule_spec spec;
        char *err = NULL;
        int64_t next = -1;
        if (rows[i].id && rows[i].kind && rows[i].expr &&
            build_spec(s, rows[i].kind, rows[i].expr, rows[i].tz, conversation_id, rows[i].anchor,
                       &spec, &err) == 0)
            next = schedule_next(&spec, now);   /* from now on: what was missed stays missed */
        if (rows[i].id) {
            store_bind_text(s->resume, 1, rows[i].id);
            if (next >= 0)
                sqlite3_bind_int64(s->resume, 2, next);
            else
                sqlite3_bind_null(s->resume, 2);
            sqlite3_bind_int64(s->resume, 3, now);
            exec(s, s->resume, NULL);
            log_info("schedule %s resumed: its conversation is installed again (next %lld) "
                     "conversation=%s", rows[i].id, (long long)next, conversation_id);
        }
        free(err);
        free(rows[i].id);
        free(rows[i].kind);
        free(rows[i].expr);
        free(rows[i].tz);
    }
    arm(s);
}

void scheduler_get_stats(const scheduler *s, scheduler_stats *out) { *out = s->stats; }

int64_t scheduler_put(scheduler *s, const scheduler_entry *e, char **err)
{
    schedule_spec spec;
    int64_t now = now_s();
    if (build_spec(s, e->kind, e->expr, e->tz, e->conversation_id, now, &spec, err) < 0)
        return -1;
    int64_t next = schedule_next(&spec, now - 1);   /* an "at" of this very second still fires */
    if (next < 0) {
        *err = strdup(spec.kind == SCHEDULE_AT ? "that time is in the past"
                                               : "the schedule never fires");
        return -1;
    }
    sqlite3_stmt *st = s->put;
    store_bind_text(st, 1, e->id);
    store_bind_text(st, 2, e->handler);
    store_bind_text(st, 3, e->kind);
    store_bind_text(st, 4, e->expr);
    store_bind_text(st, 5, e->tz);
    store_bind_text(st, 6, e->conversation_id);
    store_bind_text(st, 7, e->payload);
    store_bind_text(st, 8, e->missed ? e->missed : "once");
    sqlite3_bind_int64(st, 9, spec.kind == SCHEDULE_EVERY ? spec.anchor : 0);
    sqlite3_bind_int64(st, 10, next);
    sqlite3_bind_int64(st, 11, now);
    outbox_touch_batch(s->rt->outbox);
    if (exec(s, st, err) < 0)
        return -1;
    if (!s->armed_for || next < s->armed_for)
        arm(s);
    return next;
}

int scheduler_cancel(scheduler *s, const char *id)
{
    store_bind_text(s->del, 1, id);
    outbox_touch_batch(s->rt->outbox);
    if (exec(s, s->del, NULL) < 0)
        return -1;
    int n = sqlite3_changes(s->db);
    arm(s);
    return n;
}

static const char *column_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

/* A query is one of the scheduler's statements, bound and stepping. */
static sqlite3_stmt *stmt_of(scheduler_query *q) { return (sqlite3_stmt *)q; }

int scheduler_query_next(scheduler_query *q, scheduler_row *row)
{
    sqlite3_stmt *st = stmt_of(q);
    if (sqlite3_step(st) != SQLITE_ROW)
        return 0;
    const char **f[] = {&row->id, &row->handler, &row->kind, &row->expr, &row->tz,
                        &row->conversation_id, &row->payload, &row->missed};
    for (int i = 0; i < 8; i++)
        *f[i] = column_text(st, i);
    row->has_next_fire = sqlite3_column_type(st, 8) != SQLITE_NULL;
    row->next_fire = row->has_next_fire ? sqlite3_column_int64(st, 8) : 0;
    row->has_last_fire = sqlite3_column_type(st, 9) != SQLITE_NULL;
    row->last_fire = row->has_last_fire ? sqlite3_column_int64(st, 9) : 0;
    row->last_result = column_text(st, 10);
    row->runs = sqlite3_column_int64(st, 11);
    row->waiting_for_handler = sqlite3_column_int(st, 12);
    row->paused = column_text(st, 13);
    return 1;
}

void scheduler_query_end(scheduler_query *q)
{
    sqlite3_stmt *st = stmt_of(q);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

scheduler_query *scheduler_get(scheduler *s, const char *id)
{
    store_bind_text(s->get, 1, id);
    return (scheduler_query *)s->get;
}

scheduler_query *scheduler_list(scheduler *s, const char *handler, const char *conv,
                                const char *after, int limit)
{
    sqlite3_stmt *st = s->list;
    store_bind_text(st, 1, handler);
    store_bind_text(st, 2, conv);
    store_bind_text(st, 3, after ? after : "");
    sqlite3_bind_int(st, 4, limit);
    return (scheduler_query *)st;
}
