/* report.c — the operator commands `herald outbox`, `blocked`, `deliveries`, `schedules` and
 * `broadcast list|show`: read-only queries on the database (safe while herald runs: WAL), as
 * text, one JSON document, or one CSV table with a header row (RFC 4180). */
#include "report.h"
#include "config.h"
#include "outbox.h"
#include "tz.h"

#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void iso_time(int64_t ms, char out[32])
{
    if (ms <= 0) {
        strcpy(out, "-");
        return;
    }
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* One CSV field per RFC 4180: quoted when it holds a comma, quote or line break. */
static void csv_field(FILE *out, const char *s, int last)
{
    if (!s)
        s = "";
    if (strpbrk(s, ",\"\r\n")) {
        fputc('"', out);
        for (; *s; s++) {
            if (*s == '"')
                fputc('"', out);
            fputc(*s, out);
        }
        fputc('"', out);
    } else {
        fputs(s, out);
    }
    fputs(last ? "\n" : ",", out);
}

static const char *col(sqlite3_stmt *st, int i) { return (const char *)sqlite3_column_text(st, i); }

static json_t *json_str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) {
        fprintf(stderr, "herald: query failed: %s\n", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

static void dump_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) {
        puts(s);
        free(s);
    }
    json_decref(j);
}

static int report_outbox(sqlite3 *db, const config *cfg)
{
    sqlite3_stmt *st = NULL;
    int64_t now = now_ms();
    json_t *states = json_object(), *tenants = json_array();
    for (int i = 0; i < OUTBOX_NSTATES; i++)
        json_object_set_new(states, outbox_state_names[i], json_integer(0));
    if (prepare(db, "SELECT state, count(*) FROM outbox GROUP BY state", &st) < 0)
        goto fail;
    while (sqlite3_step(st) == SQLITE_ROW)
        if (outbox_state_index(col(st, 0)) >= 0)   /* the states /healthz counts, no other */
            json_object_set_new(states, col(st, 0), json_integer(sqlite3_column_int64(st, 1)));
    sqlite3_finalize(st);
    if (prepare(db, "SELECT min(created_at) FROM outbox WHERE state = 'queued'", &st) < 0)
        goto fail;
    int64_t oldest = 0;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        oldest = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (prepare(db,
                "SELECT t, sum(q), sum(s), sum(th) FROM ("
                " SELECT coalesce(tenant_id, '') t, state = 'queued' q,"
                "  state = 'sent' AND finished_at >= ?1 s, 0 th FROM outbox"
                " UNION ALL"
                " SELECT coalesce(o.tenant_id, ''), 0, 0, 1 FROM outbox_attempts a"
                "  JOIN outbox o ON o.id = a.op_id WHERE a.at >= ?2 AND a.status = 429)"
                " GROUP BY t HAVING sum(q) > 0 OR sum(s) > 0 OR sum(th) > 0 ORDER BY t",
                &st) < 0)
        goto fail;
    sqlite3_bind_int64(st, 1, now - 60000);
    sqlite3_bind_int64(st, 2, now - 3600000);
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_t *t = json_object();
        json_object_set_new(t, "tenant", json_string(col(st, 0)));
        json_object_set_new(t, "queued", json_integer(sqlite3_column_int64(st, 1)));
        json_object_set_new(t, "sent_last_60s", json_integer(sqlite3_column_int64(st, 2)));
        json_object_set_new(t, "rate_per_s", json_real((double)sqlite3_column_int64(st, 2) / 60.0));
        json_object_set_new(t, "throttled_last_hour", json_integer(sqlite3_column_int64(st, 3)));
        json_array_append_new(tenants, t);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (strcmp(cfg->format, "json") == 0) {
        json_t *root = json_object();
        json_object_set_new(root, "states", states);
        json_object_set_new(root, "oldest_queued_age_s",
                            oldest ? json_real((double)(now - oldest) / 1000.0) : json_null());
        json_object_set_new(root, "tenants", tenants);
        dump_json(root);
        return 0;
    }
    if (strcmp(cfg->format, "csv") == 0) {
        /* the counts per state; per-tenant pacing is in the text and JSON forms */
        fputs("state,count\n", stdout);
        const char *k;
        json_t *v;
        json_object_foreach(states, k, v) {
            char n[24];
            snprintf(n, sizeof n, "%lld", (long long)json_integer_value(v));
            csv_field(stdout, k, 0);
            csv_field(stdout, n, 1);
        }
        json_decref(states);
        json_decref(tenants);
        return 0;
    }
    printf("outbox of %s\n\n  %-10s %10s\n", cfg->db_path, "state", "count");
    const char *k;
    json_t *v;
    json_object_foreach(states, k, v)
        printf("  %-10s %10lld\n", k, (long long)json_integer_value(v));
    if (oldest)
        printf("\n  oldest queued: %.1f s ago\n", (double)(now - oldest) / 1000.0);
    else
        printf("\n  nothing queued\n");
    if (json_array_size(tenants)) {
        printf("\n  %-38s %8s %12s %8s %14s\n", "tenant", "queued", "sent (60 s)", "rate/s",
               "429s (1 h)");
        size_t i;
        json_array_foreach(tenants, i, v) {
            const char *t = json_string_value(json_object_get(v, "tenant"));
            printf("  %-38s %8lld %12lld %8.1f %14lld\n", *t ? t : "(unknown)",
                   (long long)json_integer_value(json_object_get(v, "queued")),
                   (long long)json_integer_value(json_object_get(v, "sent_last_60s")),
                   json_real_value(json_object_get(v, "rate_per_s")),
                   (long long)json_integer_value(json_object_get(v, "throttled_last_hour")));
        }
    }
    json_decref(states);
    json_decref(tenants);
    return 0;
fail:
    sqlite3_finalize(st);
    json_decref(states);
    json_decref(tenants);
    return 1;
}

static int report_blocked(sqlite3 *db, const config *cfg)
{
    sqlite3_stmt *st;
    if (prepare(db,
                "SELECT conversation_id, state, user_id, user_aad_id, user_name, tenant_id, at"
                " FROM ledger WHERE cleared_at IS NULL"
                " UNION ALL"
                " SELECT id, 'uninstalled', user_id, user_aad_id, user_name, tenant_id, uninstalled_at"
                " FROM conversations WHERE installed = 0 AND id NOT IN"
                "  (SELECT conversation_id FROM ledger WHERE cleared_at IS NULL)"
                " ORDER BY 7 DESC",
                &st) < 0)
        return 1;
    int json = strcmp(cfg->format, "json") == 0, csv = strcmp(cfg->format, "csv") == 0;
    json_t *arr = json ? json_array() : NULL;
    if (csv)
        fputs("conversation,state,user_id,user_aad_object_id,user_name,tenant,since\n", stdout);
    else if (!json)
        printf("%-40s %-12s %-30s %-24s %s\n", "conversation", "state", "user", "tenant", "since");
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        char since[32];
        iso_time(sqlite3_column_int64(st, 6), since);
        n++;
        if (json) {
            json_t *o = json_object();
            json_object_set_new(o, "conversation", json_str_or_null(col(st, 0)));
            json_object_set_new(o, "state", json_str_or_null(col(st, 1)));
            json_object_set_new(o, "user_id", json_str_or_null(col(st, 2)));
            json_object_set_new(o, "user_aad_object_id", json_str_or_null(col(st, 3)));
            json_object_set_new(o, "user_name", json_str_or_null(col(st, 4)));
            json_object_set_new(o, "tenant", json_str_or_null(col(st, 5)));
            json_object_set_new(o, "since", json_string(since));
            json_array_append_new(arr, o);
        } else if (csv) {
            for (int i = 0; i < 6; i++)
                csv_field(stdout, col(st, i), 0);
            csv_field(stdout, since, 1);
        } else {
            const char *who = col(st, 4) ? col(st, 4) : col(st, 3) ? col(st, 3) : col(st, 2);
            printf("%-40s %-12s %-30s %-24s %s\n", col(st, 0), col(st, 1), who ? who : "-",
                   col(st, 5) ? col(st, 5) : "-", since);
        }
    }
    sqlite3_finalize(st);
    if (json)
        dump_json(arr);
    else if (!csv && n == 0)
        puts("(nobody has blocked or uninstalled the bot)");
    return 0;
}

/* --since: seconds ago ("3600") or an ISO 8601 UTC time ("2026-11-21T09:00:00Z"). */
static int parse_since(const char *s, int64_t *out)
{
    char *end;
    long long secs = strtoll(s, &end, 10);
    if (*s && !*end && secs >= 0) {
        *out = now_ms() - secs * 1000;
        return 0;
    }
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p || (*p && strcmp(p, "Z") != 0))
        return -1;
    *out = (int64_t)timegm(&tm) * 1000;
    return 0;
}

static int report_deliveries(sqlite3 *db, const config *cfg)
{
    int64_t since = 0;
    if (cfg->since && parse_since(cfg->since, &since) < 0) {
        fprintf(stderr, "herald: --since wants seconds ago or an ISO 8601 UTC time, got '%s'\n",
                cfg->since);
        return 2;
    }
    sqlite3_stmt *st;
    if (prepare(db,
                "SELECT id, kind, conversation_id, state, attempts, created_at, finished_at,"
                " last_status, last_code, last_error, result_id, (SELECT count(*) FROM"
                " outbox_attempts a WHERE a.op_id = outbox.id AND a.code = 'resent') FROM outbox"
                " WHERE created_at >= ?1 ORDER BY id",
                &st) < 0)
        return 1;
    sqlite3_bind_int64(st, 1, since);
    int json = strcmp(cfg->format, "json") == 0, csv = strcmp(cfg->format, "csv") == 0;
    json_t *arr = json ? json_array() : NULL;
    if (csv)
        fputs("id,kind,conversation,state,attempts,created_at,finished_at,status,code,error,"
              "result_id,resent\n", stdout);
    else if (!json)
        printf("%8s %-7s %-36s %-10s %4s %-20s %-20s %6s %s\n", "id", "kind", "conversation",
               "state", "att", "created", "finished", "status", "code / result");
    while (sqlite3_step(st) == SQLITE_ROW) {
        char created[32], finished[32], id[24], attempts[12], status[12], resent[12];
        /* copies libcurl re-sent by itself, counted in attempts: Teams may hold duplicates */
        int nresent = sqlite3_column_int(st, 11);
        snprintf(resent, sizeof resent, "%d", nresent);
        iso_time(sqlite3_column_int64(st, 5), created);
        iso_time(sqlite3_column_int64(st, 6), finished);
        snprintf(id, sizeof id, "%lld", (long long)sqlite3_column_int64(st, 0));
        snprintf(attempts, sizeof attempts, "%d", sqlite3_column_int(st, 4));
        snprintf(status, sizeof status, "%d", sqlite3_column_int(st, 7));
        if (json) {
            json_t *o = json_object();
            json_object_set_new(o, "id", json_integer(sqlite3_column_int64(st, 0)));
            json_object_set_new(o, "kind", json_str_or_null(col(st, 1)));
            json_object_set_new(o, "conversation", json_str_or_null(col(st, 2)));
            json_object_set_new(o, "state", json_str_or_null(col(st, 3)));
            json_object_set_new(o, "attempts", json_integer(sqlite3_column_int(st, 4)));
            json_object_set_new(o, "created_at", json_string(created));
            json_object_set_new(o, "finished_at", sqlite3_column_type(st, 6) == SQLITE_NULL
                                                      ? json_null() : json_string(finished));
            json_object_set_new(o, "status", sqlite3_column_type(st, 7) == SQLITE_NULL
                                                 ? json_null() : json_integer(sqlite3_column_int(st, 7)));
            json_object_set_new(o, "code", json_str_or_null(col(st, 8)));
            json_object_set_new(o, "error", json_str_or_null(col(st, 9)));
            json_object_set_new(o, "result_id", json_str_or_null(col(st, 10)));
            json_object_set_new(o, "resent", json_integer(nresent));
            json_array_append_new(arr, o);
        } else if (csv) {
            csv_field(stdout, id, 0);
            csv_field(stdout, col(st, 1), 0);
            csv_field(stdout, col(st, 2), 0);
            csv_field(stdout, col(st, 3), 0);
            csv_field(stdout, attempts, 0);
            csv_field(stdout, created, 0);
            csv_field(stdout, sqlite3_column_type(st, 6) == SQLITE_NULL ? "" : finished, 0);
            csv_field(stdout, sqlite3_column_type(st, 7) == SQLITE_NULL ? "" : status, 0);
            csv_field(stdout, col(st, 8), 0);
            csv_field(stdout, col(st, 9), 0);
            csv_field(stdout, col(st, 10), 0);
            csv_field(stdout, resent, 1);
        } else {
            const char *detail = col(st, 8) ? col(st, 8) : col(st, 10) ? col(st, 10) : "";
            printf("%8s %-7s %-36.36s %-10s %4s %-20s %-20s %6s %s%s%s%s\n", id, col(st, 1),
                   col(st, 2) ? col(st, 2) : "-", col(st, 3), attempts, created, finished,
                   sqlite3_column_type(st, 7) == SQLITE_NULL ? "-" : status, detail,
                   nresent ? " (" : "", nresent ? resent : "", nresent ? " re-sent by libcurl)" : "");
        }
    }
    sqlite3_finalize(st);
    if (json)
        dump_json(arr);
    return 0;
}

/* "2026-11-22 09:00 CET (+01:00)" for instant t in zone name (NULL or unknown: UTC). */
static void local_time(int64_t t, const char *name, char *out, size_t len)
{
    char *err = NULL;
    const tz *z = name ? tz_get(name, &err) : NULL;
    free(err);
    if (!z) {
        char iso[32];
        iso_time(t * 1000, iso);
        snprintf(out, len, "%s", iso);
        return;
    }
    struct civil c;
    int off = tz_utc_to_local(z, t, &c);
    int a = off < 0 ? -off : off;
    snprintf(out, len, "%04lld-%02d-%02d %02d:%02d %s (%c%02d:%02d)", (long long)c.year, c.month,
             c.day, c.hour, c.minute, tz_abbr_at(z, t), off < 0 ? '-' : '+', a / 3600,
             a / 60 % 60);
}

static int report_schedules(sqlite3 *db, const config *cfg)
{
    sqlite3_stmt *st;
    if (prepare(db,
                "SELECT s.id, s.handler, s.kind, s.expr, s.tz, s.conversation_id, s.next_fire_at,"
                " s.last_fire_at, s.last_result, s.runs, s.waiting_handler,"
                " CASE WHEN s.tz = 'user' THEN c.timezone ELSE s.tz END,"
                /* paused by the scheduler, or about to be: it pauses at the due time */
                " coalesce(s.paused, CASE WHEN c.installed = 0 AND s.next_fire_at IS NOT NULL"
                "  THEN 'uninstalled' END)"
                " FROM schedules s LEFT JOIN conversations c ON c.id = s.conversation_id"
                " ORDER BY s.next_fire_at IS NULL, s.next_fire_at, s.id",
                &st) < 0)
        return 1;
    int json = strcmp(cfg->format, "json") == 0, csv = strcmp(cfg->format, "csv") == 0;
    json_t *arr = json ? json_array() : NULL;
    if (csv)
        fputs("id,handler,spec,tz,zone,state,reason,next_utc,next_local,conversation,runs,"
              "last_result\n", stdout);
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        n++;
        const char *zone = col(st, 11);
        if (col(st, 4) && strcmp(col(st, 4), "user") == 0 && !zone)
            zone = cfg->default_tz;
        char spec[300], next_utc[32] = "-", next_local[96] = "-";
        snprintf(spec, sizeof spec, "%s %s", col(st, 2), col(st, 3));
        int has_next = sqlite3_column_type(st, 6) != SQLITE_NULL;
        if (has_next) {
            iso_time(sqlite3_column_int64(st, 6) * 1000, next_utc);
            local_time(sqlite3_column_int64(st, 6), zone, next_local, sizeof next_local);
        }
        const char *result = sqlite3_column_int(st, 10) ? "waiting for its handler"
                             : col(st, 8) ? col(st, 8) : "-";
        /* state: active, paused (reason: uninstalled), waiting (for a handler), or done */
        const char *paused = col(st, 12), *state = "active", *reason = NULL;
        char why[200];
        if (paused) {
            state = "paused";
            reason = paused;
        } else if (sqlite3_column_int(st, 10)) {
            state = "waiting";
            snprintf(why, sizeof why, "no handler '%s' in the live script", col(st, 1));
            reason = why;
        } else if (!has_next) {
            state = "done";
        }
        if (json) {
            json_t *o = json_object();
            json_object_set_new(o, "id", json_str_or_null(col(st, 0)));
            json_object_set_new(o, "handler", json_str_or_null(col(st, 1)));
            json_object_set_new(o, "kind", json_str_or_null(col(st, 2)));
            json_object_set_new(o, "expr", json_str_or_null(col(st, 3)));
            json_object_set_new(o, "tz", json_str_or_null(col(st, 4)));
            json_object_set_new(o, "zone", json_str_or_null(zone));
            json_object_set_new(o, "state", json_string(state));
            json_object_set_new(o, "reason", json_str_or_null(reason));
            json_object_set_new(o, "next_utc", has_next ? json_string(next_utc) : json_null());
            json_object_set_new(o, "next_local", has_next ? json_string(next_local) : json_null());
            json_object_set_new(o, "conversation", json_str_or_null(col(st, 5)));
            json_object_set_new(o, "runs", json_integer(sqlite3_column_int64(st, 9)));
            json_object_set_new(o, "last_result", json_str_or_null(col(st, 8)));
            json_object_set_new(o, "waiting_for_handler", json_boolean(sqlite3_column_int(st, 10)));
            json_array_append_new(arr, o);
        } else if (csv) {
            char runs[24];
            snprintf(runs, sizeof runs, "%lld", (long long)sqlite3_column_int64(st, 9));
            csv_field(stdout, col(st, 0), 0);
            csv_field(stdout, col(st, 1), 0);
            csv_field(stdout, spec, 0);
            csv_field(stdout, col(st, 4), 0);
            csv_field(stdout, zone, 0);
            csv_field(stdout, state, 0);
            csv_field(stdout, reason, 0);
            csv_field(stdout, has_next ? next_utc : "", 0);
            csv_field(stdout, has_next ? next_local : "", 0);
            csv_field(stdout, col(st, 5), 0);
            csv_field(stdout, runs, 0);
            csv_field(stdout, result, 1);
        } else {
            /* the state line only for a paused one: "last:" already says waiting, "next -" done */
            char state_line[300] = "";
            if (paused)
                snprintf(state_line, sizeof state_line, "  state   paused (%s%s)\n", paused,
                         strcmp(paused, "uninstalled") == 0
                             ? ": resumes when the conversation is installed again" : "");
            printf("%s\n  handler %s, %s%s%s\n%s  next    %s  |  %s\n  owner   %s\n"
                   "  runs    %lld, last: %s\n\n",
                   col(st, 0), col(st, 1), spec, col(st, 4) ? " tz=" : "",
                   col(st, 4) ? col(st, 4) : "", state_line, next_utc, next_local,
                   col(st, 5) ? col(st, 5) : "-", (long long)sqlite3_column_int64(st, 9), result);
        }
    }
    sqlite3_finalize(st);
    if (json)
        dump_json(arr);
    else if (!csv && n == 0)
        puts("(no schedules)");
    return 0;
}

static void progress_bar(int64_t done, int64_t total, char *out, size_t len)
{
    int width = 30, fill = total > 0 ? (int)(done * width / total) : 0;
    size_t n = 0;
    out[n++] = '[';
    for (int i = 0; i < width && n < len - 2; i++)
        out[n++] = i < fill ? '#' : '.';
    out[n++] = ']';
    out[n] = 0;
}

/* One job as an object {id, name, state, total, finished, counts, rate_per_s}; NULL (after a
 * message on stderr) when there is no such job or the query fails. */
static json_t *broadcast_json(sqlite3 *db, int64_t id)
{
    sqlite3_stmt *st;
    if (prepare(db, "SELECT coalesce(name, ''), state, total, created_at, finished_at FROM broadcasts"
                    " WHERE id = ?1", &st) < 0)
        return NULL;
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        fprintf(stderr, "herald: no broadcast %lld\n", (long long)id);
        return NULL;
    }
    json_t *o = json_pack("{s:I, s:s, s:s, s:I}", "id", (json_int_t)id, "name", col(st, 0), "state",
                          col(st, 1), "total", (json_int_t)sqlite3_column_int64(st, 2));
    int64_t created = sqlite3_column_int64(st, 3), finished = sqlite3_column_int64(st, 4);
    sqlite3_finalize(st);
    if (!o || prepare(db, "SELECT state, count(*) FROM broadcast_recipients WHERE broadcast_id = ?1"
                          " GROUP BY state ORDER BY state", &st) < 0) {
        json_decref(o);
        return NULL;
    }
    sqlite3_bind_int64(st, 1, id);
    json_t *counts = json_object();
    int64_t delivered = 0, finals = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *k = col(st, 0);
        int64_t v = sqlite3_column_int64(st, 1);
        json_object_set_new(counts, k, json_integer(v));
        if (strcmp(k, "sent") == 0 || strcmp(k, "recalled") == 0)
            delivered += v;
        if (strcmp(k, "pending") != 0 && strcmp(k, "queued") != 0 && strcmp(k, "creating") != 0)
            finals += v;
    }
    sqlite3_finalize(st);
    double secs = (double)((finished ? finished : now_ms()) - created) / 1000.0;
    json_object_set_new(o, "finished", json_integer(finals));
    json_object_set_new(o, "delivered", json_integer(delivered));
    json_object_set_new(o, "counts", counts);
    json_object_set_new(o, "rate_per_s", json_real(secs > 0 ? (double)delivered / secs : 0));
    return o;
}

static const char *const broadcast_csv_header =
    "id,name,state,total,finished,delivered,rate_per_s,counts\n";

/* One job as a CSV row; counts as "state=n state=n". */
static void broadcast_csv(json_t *o)
{
    char id[24], total[24], finished[24], delivered[24], rate[32], counts[512] = "";
    snprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(o, "id")));
    snprintf(total, sizeof total, "%lld", (long long)json_integer_value(json_object_get(o, "total")));
    snprintf(finished, sizeof finished, "%lld",
             (long long)json_integer_value(json_object_get(o, "finished")));
    snprintf(delivered, sizeof delivered, "%lld",
             (long long)json_integer_value(json_object_get(o, "delivered")));
    snprintf(rate, sizeof rate, "%.1f", json_real_value(json_object_get(o, "rate_per_s")));
    const char *k;
    json_t *v;
    size_t n = 0;
    json_object_foreach(json_object_get(o, "counts"), k, v) {
        int w = snprintf(counts + n, sizeof counts - n, "%s%s=%lld", n ? " " : "", k,
                         (long long)json_integer_value(v));
        if (w < 0 || (size_t)w >= sizeof counts - n)
            break;
        n += (size_t)w;
    }
    csv_field(stdout, id, 0);
    csv_field(stdout, json_string_value(json_object_get(o, "name")), 0);
    csv_field(stdout, json_string_value(json_object_get(o, "state")), 0);
    csv_field(stdout, total, 0);
    csv_field(stdout, finished, 0);
    csv_field(stdout, delivered, 0);
    csv_field(stdout, rate, 0);
    csv_field(stdout, counts, 1);
}

static void broadcast_text(json_t *o)
{
    const char *name = json_string_value(json_object_get(o, "name"));
    int64_t finals = json_integer_value(json_object_get(o, "finished")),
            total = json_integer_value(json_object_get(o, "total"));
    char bar[40];
    progress_bar(finals, total, bar, sizeof bar);
    printf("broadcast %lld %s%s%s: %s %s %lld/%lld  %.1f msg/s\n  ",
           (long long)json_integer_value(json_object_get(o, "id")), *name ? "\"" : "", name,
           *name ? "\"" : "", json_string_value(json_object_get(o, "state")), bar, (long long)finals,
           (long long)total, json_real_value(json_object_get(o, "rate_per_s")));
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(o, "counts"), k, v)
        printf("%s %lld  ", k, (long long)json_integer_value(v));
    printf("\n");
}

/* Prints one job in format; returns 1 when it is finished (done or cancelled), 0 while it runs,
 * -1 when there is no such job. */
static int show_broadcast(sqlite3 *db, int64_t id, const char *format)
{
    json_t *o = broadcast_json(db, id);
    if (!o)
        return -1;
    const char *state = json_string_value(json_object_get(o, "state"));
    int over = strcmp(state, "done") == 0 || strcmp(state, "cancelled") == 0;
    if (strcmp(format, "json") == 0) {
        dump_json(o);
        return over;
    }
    if (strcmp(format, "csv") == 0) {
        fputs(broadcast_csv_header, stdout);
        broadcast_csv(o);
    } else {
        broadcast_text(o);
    }
    json_decref(o);
    return over;
}

static int report_broadcasts(sqlite3 *db, const config *cfg)
{
    if (cfg->broadcast_id > 0) {
        if (!cfg->watch)
            return show_broadcast(db, cfg->broadcast_id, cfg->format) < 0;
        /* a live bar on a terminal: redraw until the job finishes */
        for (;;) {
            if (isatty(1))
                printf("\033[H\033[J");
            int rc = show_broadcast(db, cfg->broadcast_id, "text");
            fflush(stdout);
            if (rc != 0)
                return rc < 0;
            usleep(500000);
        }
    }
    /* one document: a JSON array, or a CSV table with its header, even with no jobs */
    int json = strcmp(cfg->format, "json") == 0, csv = strcmp(cfg->format, "csv") == 0;
    sqlite3_stmt *st;
    if (prepare(db, "SELECT id FROM broadcasts ORDER BY id DESC LIMIT 50", &st) < 0)
        return 1;
    json_t *arr = json ? json_array() : NULL;
    if (csv)
        fputs(broadcast_csv_header, stdout);
    int n = 0, rc = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_t *o = broadcast_json(db, sqlite3_column_int64(st, 0));
        if (!o) {
            rc = 1;
            continue;
        }
        n++;
        if (json) {
            json_array_append_new(arr, o);
            continue;
        }
        if (csv)
            broadcast_csv(o);
        else
            broadcast_text(o);
        json_decref(o);
    }
    sqlite3_finalize(st);
    if (json)
        dump_json(arr);
    else if (!n && !csv)
        puts("(no broadcasts)");
    return rc;
}

int report_run(const config *cfg)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(cfg->db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, "herald: cannot open the database %s: %s\n", cfg->db_path,
                db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return 1;
    }
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    int version = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    int rc;
    if (version < 3) {
        fprintf(stderr, "herald: %s is not a herald database with an outbox (schema version %d); "
                        "start herald on it once to migrate it\n", cfg->db_path, version);
        rc = 1;
    } else if (strcmp(cfg->command, "outbox") == 0) {
        rc = report_outbox(db, cfg);
    } else if (strcmp(cfg->command, "schedules") == 0) {
        rc = version < 9 ? (fprintf(stderr, "herald: %s is from an older herald (no schedule pause "
                                    "state yet); start herald on it once to migrate it\n",
                                    cfg->db_path), 1)
                         : report_schedules(db, cfg);
    } else if (strcmp(cfg->command, "broadcast") == 0) {
        rc = version < 5 ? (fprintf(stderr, "herald: %s has no broadcasts table yet\n", cfg->db_path), 1)
                         : report_broadcasts(db, cfg);
    } else if (strcmp(cfg->command, "blocked") == 0) {
        rc = report_blocked(db, cfg);
    } else {
        rc = report_deliveries(db, cfg);
    }
    sqlite3_close(db);
    return rc;
}
