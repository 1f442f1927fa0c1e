/* broadcast.c — broadcast jobs. A job's recipients are rows materialised once, while
 * the job is "preparing", and it starts in one UPDATE (or is abandoned, never half-started); the
 * pump keeps at most a window of them in the outbox (memory stays flat for 100,000 recipients)
 * and each recipient gets exactly one send operation; its outcome comes back through the outbox's
 * finish hook, which also works for operations resumed after a restart. */
#include "broadcast.h"
#include "clock.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "outbox.h"
#include "runtime.h"
#include "send_policy.h"
#include "store.h"

#include <event2/event.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Recipients in the outbox at once per job: enough to keep every tenant's window busy. */
#define WINDOW 1000
/* Rows of abandoned preparations deleted per loop turn: a 100,000-recipient one goes in 50 turns
 * of a few milliseconds instead of holding the loop for one long DELETE. */
#define SWEEP_ROWS 2000

typedef struct job {
    int64_t id;
    char *body, *category;
    long cap_max;
    int64_t cap_per_ms;
    int cap_drop;
    int queued;                   /* recipients whose operation is in the outbox */
    int paused;
    struct job *next;
} job;

struct broadcast_prep {
    broadcaster *b;               /* NULL once the broadcaster is gone */
    int64_t id;
    int64_t written;              /* recipients added: the next one's seq is written + 1 */
    char *key;
    int done;                     /* committed or abandoned: only free remains */
    broadcast_prep *prev, *next;  /* the broadcaster's open preparations */
};

struct broadcaster {
    runtime *rt;
    sqlite3 *db;
    sqlite3_stmt *create, *add, *start, *set_state, *pending, *mark, *on_op, *progress, *info,
        *running, *count_queued, *delivered, *cancel_pending, *find_key, *abandon, *abandon_all,
        *swept, *sweep;
    job *jobs;                    /* running or paused jobs */
    broadcast_prep *preps;        /* open preparations, detached by broadcast_free */
    struct event *sweep_ev;       /* deletes abandoned preparations' rows, a chunk per turn */
};

static const store_statement statements[] = {
    {offsetof(broadcaster, create),
     "INSERT INTO broadcasts (name, state, body, category, created_at, updated_at, cap_max,"
     " cap_per_ms, cap_drop) VALUES (?1, 'preparing', ?2, ?3, ?4, ?4, ?5, ?6, ?7)"},
    {offsetof(broadcaster, add),
     "INSERT INTO broadcast_recipients (broadcast_id, seq, conversation_id, user_id, tenant_id, body,"
     " user_name, user_aad_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"},
    /* the commit point of a creation: the key is claimed here, so only created jobs hold one */
    {offsetof(broadcaster, start),
     "UPDATE broadcasts SET state = 'running', total = ?2, key = ?3, updated_at = ?4"
     " WHERE id = ?1 AND state = 'preparing'"},
    {offsetof(broadcaster, find_key), "SELECT id FROM broadcasts WHERE key = ?1"},
    {offsetof(broadcaster, abandon),
     "UPDATE broadcasts SET state = 'abandoned', updated_at = ?2, finished_at = ?2"
     " WHERE id = ?1 AND state = 'preparing'"},
    {offsetof(broadcaster, abandon_all),
     "UPDATE broadcasts SET state = 'abandoned', updated_at = ?1, finished_at = ?1"
     " WHERE state = 'preparing' RETURNING id"},
    {offsetof(broadcaster, swept),
     "SELECT b.id FROM broadcasts b WHERE b.state = 'abandoned' AND EXISTS"
     " (SELECT 1 FROM broadcast_recipients r WHERE r.broadcast_id = b.id) LIMIT 1"},
    {offsetof(broadcaster, sweep),
     "DELETE FROM broadcast_recipients WHERE broadcast_id = ?1 AND seq IN"
     " (SELECT seq FROM broadcast_recipients WHERE broadcast_id = ?1 LIMIT ?2)"},
    {offsetof(broadcaster, set_state),
     "UPDATE broadcasts SET state = ?2, updated_at = ?3,"
     " finished_at = CASE WHEN ?2 IN ('done', 'cancelled') THEN ?3 END WHERE id = ?1"},
    {offsetof(broadcaster, pending),
     "SELECT seq, conversation_id, user_id, tenant_id, body, user_aad_id FROM broadcast_recipients"
     " WHERE broadcast_id = ?1 AND state = 'pending' ORDER BY seq LIMIT ?2"},
    {offsetof(broadcaster, mark),
     "UPDATE broadcast_recipients SET state = ?3, op_id = ?4, conversation_id = coalesce(?5,"
     " conversation_id), code = ?6 WHERE broadcast_id = ?1 AND seq = ?2"},
    {offsetof(broadcaster, on_op),
     "UPDATE broadcast_recipients SET state = ?2, activity_id = coalesce(?3, activity_id),"
     " conversation_id = coalesce(?4, conversation_id), code = ?5"
     " WHERE op_id = ?1 RETURNING broadcast_id, seq, state, user_id, tenant_id, user_name,"
     " user_aad_id"},
    {offsetof(broadcaster, progress),
     "SELECT state, count(*) FROM broadcast_recipients WHERE broadcast_id = ?1 GROUP BY state"},
    {offsetof(broadcaster, info),
     "SELECT state, coalesce(name, ''), total, created_at, finished_at, body, category,"
     " cap_max, cap_per_ms, cap_drop FROM broadcasts WHERE id = ?1"},
    {offsetof(broadcaster, running),
     "SELECT id, state, body, category, cap_max, cap_per_ms, cap_drop FROM broadcasts"
     " WHERE state IN ('running', 'paused')"},
    {offsetof(broadcaster, count_queued),
     "SELECT count(*) FROM broadcast_recipients WHERE broadcast_id = ?1"
     " AND state IN ('queued', 'creating', 'recalling', 'updating')"},
    {offsetof(broadcaster, delivered),
     "SELECT seq, conversation_id, activity_id FROM broadcast_recipients"
     " WHERE broadcast_id = ?1 AND state = 'sent' AND activity_id IS NOT NULL"},
    {offsetof(broadcaster, cancel_pending),
     "UPDATE broadcast_recipients SET state = 'cancelled' WHERE broadcast_id = ?1 AND state = 'pending'"},
};

#define NSTATEMENTS (sizeof statements / sizeof statements[0])

static void on_sweep(evutil_socket_t fd, short what, void *arg);

static int run(broadcaster *b, sqlite3_stmt *st, char **err)
{
    return store_step(b->rt->store, st, "broadcast", err);
}

static job *find_job(broadcaster *b, int64_t id)
{
    for (job *j = b->jobs; j; j = j->next)
        if (j->id == id)
            return j;
    return NULL;
}

static job *add_job(broadcaster *b, int64_t id, const char *body, const char *category, int paused)
{
    job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->id = id;
    j->body = body ? strdup(body) : NULL;
    j->category = category ? strdup(category) : NULL;
    j->paused = paused;
    j->next = b->jobs;
    b->jobs = j;
    return j;
}

static void set_caps(job *j, sqlite3_stmt *st, int col)
{
    if (j && sqlite3_column_type(st, col) != SQLITE_NULL) {
        j->cap_max = (long)sqlite3_column_int64(st, col);
        j->cap_per_ms = sqlite3_column_int64(st, col + 1);
        j->cap_drop = sqlite3_column_int(st, col + 2);
    }
}

static void drop_job(broadcaster *b, job *dead)
{
    for (job **pp = &b->jobs; *pp; pp = &(*pp)->next)
        if (*pp == dead) {
            *pp = dead->next;
            break;
        }
    free(dead->body);
    free(dead->category);
    free(dead);
}

static void set_state(broadcaster *b, int64_t id, const char *state)
{
    sqlite3_bind_int64(b->set_state, 1, id);
    store_bind_text(b->set_state, 2, state);
    sqlite3_bind_int64(b->set_state, 3, clock_wall_ms());
    run(b, b->set_state, NULL);
}

/* code: why the recipient ended in state, as a single send would have been told (NULL: no
 * refusal, or not final yet). */
static void mark(broadcaster *b, int64_t id, int64_t seq, const char *state, int64_t op,
                 const char *conv, const char *code)
{
    sqlite3_bind_int64(b->mark, 1, id);
    sqlite3_bind_int64(b->mark, 2, seq);
    store_bind_text(b->mark, 3, state);
    if (op > 0) sqlite3_bind_int64(b->mark, 4, op); else sqlite3_bind_null(b->mark, 4);
    store_bind_text(b->mark, 5, conv);
    store_bind_text(b->mark, 6, code);
    run(b, b->mark, NULL);
}

/* A 1:1 conversation for a user the bot has no conversation with, as Teams expects it. */
static char *create_body(const store_reference *known, const char *user, const char *tenant)
{
    json_t *p = json_pack("{s:b, s:{s:s}, s:[{s:s}], s:s, s:{s:{s:s}}}", "isGroup", 0, "bot", "id",
                          known->bot_id ? known->bot_id : "", "members", "id", user, "tenantId",
                          tenant, "channelData", "tenant", "id", tenant);
    char *s = p ? json_dumps(p, JSON_COMPACT) : NULL;
    json_decref(p);
    return s;
}

/* A refusal's recipient state: the job's counts keep their names (skipped, capped, ...), and the
 * row's code is the one a single send gets. */
static const char *refused_state(const char *code)
{
    if (strcmp(code, "opted_out") == 0)
        return "skipped";
    if (strcmp(code, "capped") == 0)
        return "capped";
    if (strcmp(code, "unknown_conversation") == 0)
        return "not_found";
    if (strcmp(code, "store") == 0)
        return "failed";
    return "rejected";            /* untrusted_service_url */
}

/* The recipient refused by send_policy: its row ends with the verdict's code. */
static void refuse(broadcaster *b, job *j, int64_t seq, const char *conv, send_verdict *v)
{
    mark(b, j->id, seq, refused_state(v->code), 0, conv, v->code);
    send_policy_clear(v);
}

/* Moves one pending recipient into the outbox (or straight to a final state). Every send and
 * create passes send_policy first, exactly as teams.send and teams.create_conversation do. */
static void feed(broadcaster *b, job *j, int64_t seq, const char *conv, const char *user,
                 const char *tenant, const char *body, const char *user_aad)
{
    runtime *rt = b->rt;
    store_reference ref = {0};
    send_verdict v = {0};
    char *err = NULL;
    int found = 0;
    if (conv) {
        found = send_policy_lookup(rt, conv, &ref, &v);
        if (!found && !user) {
            refuse(b, j, seq, NULL, &v);
            return;
        }
        send_policy_clear(&v);
    } else if (user && (found = store_find_user_reference(rt->store, user, tenant, "personal", &ref,
                                                          &err) == 1))
        conv = ref.id;
    free(err);
    if (!found && user) {
        /* no conversation yet: create the 1:1 first (needs any reference of the tenant) */
        store_reference known = {0};
        char *e2 = NULL;
        if (!tenant || store_find_tenant_reference(rt->store, tenant, &known, &e2) != 1) {
            free(e2);
            mark(b, j->id, seq, "rejected", 0, NULL, "unknown_conversation");
            return;
        }
        /* the user's opt-outs apply before a conversation is made only to be skipped */
        send_request rq = {.service_url = known.service_url, .seal_id = known.id,
                           .seal = known.service_url_seal, .user_id = user,
                           .user_aad_id = user_aad, .category = j->category};
        if (!send_policy_check(rt, &rq, &v)) {
            store_reference_clear(&known);
            refuse(b, j, seq, NULL, &v);
            return;
        }
        send_policy_clear(&v);
        char *json = create_body(&known, user, tenant);
        char queue[300];
        snprintf(queue, sizeof queue, "create:%s", user);
        outbox_spec spec = {.kind = OUTBOX_CREATE, .service_url = known.service_url,
                            .tenant_id = tenant, .queue = queue, .body = json,
                            .body_len = json ? strlen(json) : 0};
        int64_t op = json ? outbox_enqueue(rt->outbox, &spec, NULL, NULL, NULL, &e2) : -1;
        free(json);
        store_reference_clear(&known);
        if (op < 0) {
            free(e2);
            mark(b, j->id, seq, "failed", 0, NULL, "store");
            return;
        }
        mark(b, j->id, seq, "creating", op, NULL, NULL);
        j->queued++;
        return;
    }
    if (!found) {
        mark(b, j->id, seq, "not_found", 0, NULL, "unknown_conversation");
        return;
    }
    send_request rq = {.conversation_id = ref.id, .service_url = ref.service_url,
                       .seal_id = ref.id, .seal = ref.service_url_seal, .user_id = ref.user_id,
                       .user_aad_id = ref.user_aad_id, .category = j->category,
                       .cap_max = j->cap_max, .cap_per_ms = j->cap_per_ms, .cap_drop = j->cap_drop};
    if (!send_policy_check(rt, &rq, &v)) {
        refuse(b, j, seq, ref.id, &v);
        store_reference_clear(&ref);
        return;
    }
    int64_t not_before = v.not_before_ms;
    send_policy_clear(&v);
    /* what the outbox would find at the attempt, found now: no operation, the same outcome */
    const char *ledger = outbox_ledger_state(rt->outbox, ref.id);
    if (ledger) {
        int blocked = strcmp(ledger, "blocked") == 0;
        mark(b, j->id, seq, blocked ? "blocked" : "not_found", 0, ref.id,
             blocked ? "blocked" : "not_found");
        store_reference_clear(&ref);
        return;
    }
    const char *msg = body ? body : j->body;
    outbox_spec spec = {.kind = OUTBOX_SEND, .conversation_id = ref.id, .service_url = ref.service_url,
                        .tenant_id = ref.tenant_id, .body = msg, .body_len = msg ? strlen(msg) : 0,
                        .category = j->category, .not_before_ms = not_before};
    int64_t op = msg ? outbox_enqueue(rt->outbox, &spec, NULL, NULL, NULL, &err) : -1;
    if (op < 0) {
        free(err);
        mark(b, j->id, seq, "failed", 0, ref.id, "store");
    } else {
        mark(b, j->id, seq, "queued", op, ref.id, NULL);
        j->queued++;
    }
    store_reference_clear(&ref);
}

static void maybe_done(broadcaster *b, job *j)
{
    if (j->queued > 0)
        return;
    sqlite3_bind_int64(b->pending, 1, j->id);
    sqlite3_bind_int(b->pending, 2, 1);
    int more = sqlite3_step(b->pending) == SQLITE_ROW;
    sqlite3_reset(b->pending);
    sqlite3_clear_bindings(b->pending);
    if (!more) {
        set_state(b, j->id, "done");
        log_info("broadcast %lld done", (long long)j->id);
        drop_job(b, j);
    }
}

/* Fills j's window from its pending recipients. */
static void pump(broadcaster *b, job *j)
{
    /* while the store is degraded a recipient's row could not be written: broadcast_store_recovered */
    if (j->paused || j->queued >= WINDOW / 2 || !store_writable(b->rt->store))
        return;
    int want = WINDOW - j->queued;
    typedef struct row { int64_t seq; char *conv, *user, *tenant, *body, *aad; } row;
    row *rows = calloc((size_t)want, sizeof *rows);
    if (!rows)
        return;
    int n = 0;
    sqlite3_bind_int64(b->pending, 1, j->id);
    sqlite3_bind_int(b->pending, 2, want);
    while (n < want && sqlite3_step(b->pending) == SQLITE_ROW) {
        rows[n].seq = sqlite3_column_int64(b->pending, 0);
        char **f[] = {&rows[n].conv, &rows[n].user, &rows[n].tenant, &rows[n].body, &rows[n].aad};
        for (int k = 0; k < 5; k++) {
            const unsigned char *t = sqlite3_column_text(b->pending, k + 1);
            *f[k] = t ? strdup((const char *)t) : NULL;
        }
        n++;
    }
    sqlite3_reset(b->pending);
    sqlite3_clear_bindings(b->pending);
    outbox_touch_batch(b->rt->outbox);
    for (int i = 0; i < n; i++) {
        feed(b, j, rows[i].seq, rows[i].conv, rows[i].user, rows[i].tenant, rows[i].body,
             rows[i].aad);
        free(rows[i].aad);
        free(rows[i].conv);
        free(rows[i].user);
        free(rows[i].tenant);
        free(rows[i].body);
    }
    free(rows);
    maybe_done(b, j);
}

/* Every finished outbox operation: if it belongs to a recipient, record the outcome. */
static void on_finished(enum outbox_kind kind, const outbox_result *res, void *ud)
{
    broadcaster *b = ud;
    const char *state = res->state;
    if (kind == OUTBOX_DELETE && strcmp(state, "sent") == 0)
        state = "recalled";
    else if (kind == OUTBOX_CREATE && strcmp(state, "sent") == 0)
        state = "pending";        /* the 1:1 exists now: the recipient is fed again */
    sqlite3_stmt *st = b->on_op;
    sqlite3_bind_int64(st, 1, res->op_id);
    store_bind_text(st, 2, state);
    store_bind_text(st, 3, kind == OUTBOX_SEND ? res->activity_id : NULL);
    store_bind_text(st, 4, kind == OUTBOX_CREATE ? res->conversation_id : NULL);
    store_bind_text(st, 5, strcmp(state, "pending") == 0 ? NULL : res->code);
    int64_t id = 0;
    char user[200] = "", tenant[100] = "", user_name[256] = "", user_aad[100] = "";
    /* kept: the outcome of a send that happened must reach the job even while the store is
     * degraded (the job's in-memory count is then recounted when the store recovers) */
    if (store_step_kept_row(b->rt->store, st, "broadcast outcome", NULL) == 1) {
        id = sqlite3_column_int64(st, 0);
        if (sqlite3_column_text(st, 3))
            snprintf(user, sizeof user, "%s", sqlite3_column_text(st, 3));
        if (sqlite3_column_text(st, 4))
            snprintf(tenant, sizeof tenant, "%s", sqlite3_column_text(st, 4));
        if (sqlite3_column_text(st, 5))
            snprintf(user_name, sizeof user_name, "%s", sqlite3_column_text(st, 5));
        if (sqlite3_column_text(st, 6))
            snprintf(user_aad, sizeof user_aad, "%s", sqlite3_column_text(st, 6));
        store_reset(st);
    }
    if (!id)
        return;
    if (kind == OUTBOX_CREATE && res->conversation_id) {
        /* store the new 1:1 so the send (and later ones) find it */
        store_reference known = {0}, r = {0};
        char *err = NULL;
        if (store_find_tenant_reference(b->rt->store, tenant, &known, &err) == 1) {
            r.id = res->conversation_id;
            r.service_url = res->service_url ? res->service_url : known.service_url;
            r.type = "personal";
            r.tenant_id = tenant;
            r.user_id = user;
            /* what the job knew of the user (a roster's name and Entra id): a personalised
             * broadcast to this conversation later greets them by name */
            r.user_name = *user_name ? user_name : NULL;
            r.user_aad_id = *user_aad ? user_aad : NULL;
            r.bot_id = known.bot_id;
            r.channel_id = "msteams";
            /* as teams.create_conversation stores it: the answer came from a trusted endpoint,
             * so its URL is trusted, and the reference is sealed to stay so after a restart */
            send_policy_note_created(b->rt, res->service_url);
            char seal[65];
            if (send_policy_seal(b->rt, r.id, r.service_url, seal))
                r.service_url_seal = seal;
            int hook;
            store_put_reference(b->rt->store, &r, STORE_SIGNAL_NONE, clock_wall_ms(), 0, &hook, &err);
        }
        free(err);
        store_reference_clear(&known);
    }
    job *j = find_job(b, id);
    if (!j)
        return;
    if (j->queued > 0)
        j->queued--;
    pump(b, j);
}

broadcaster *broadcast_new(runtime *rt, char **err)
{
    broadcaster *b = calloc(1, sizeof *b);
    if (!b) {
        *err = strdup("out of memory");
        return NULL;
    }
    b->rt = rt;
    b->db = store_db(rt->store);
    if (store_prepare_set(b->db, b, statements, NSTATEMENTS, err) < 0) {
        broadcast_free(b);
        return NULL;
    }
    b->sweep_ev = event_new(rt->base, -1, 0, on_sweep, b);
    if (!b->sweep_ev) {
        *err = strdup("out of memory");
        broadcast_free(b);
        return NULL;
    }
    outbox_set_hook(rt->outbox, on_finished, b);
    /* a preparation the last process died in has no creator left: it never starts */
    outbox_touch_batch(rt->outbox);
    sqlite3_bind_int64(b->abandon_all, 1, clock_wall_ms());
    /* through the store, so a failed first commit replays it; the update is whole at the first
     * row, the rest only reads what RETURNING collected */
    if (store_step_kept_row(rt->store, b->abandon_all, "abandon preparations", NULL) == 1) {
        do
            log_warn("broadcast %lld abandoned: herald stopped while it was being prepared; "
                     "nothing of it is sent", (long long)sqlite3_column_int64(b->abandon_all, 0));
        while (sqlite3_step(b->abandon_all) == SQLITE_ROW);
        store_reset(b->abandon_all);
    }
    event_active(b->sweep_ev, 0, 0);
    /* resume: running and paused jobs come back; their queued recipients are in the outbox */
    while (sqlite3_step(b->running) == SQLITE_ROW) {
        const char *body = (const char *)sqlite3_column_text(b->running, 2);
        const char *cat = (const char *)sqlite3_column_text(b->running, 3);
        int paused = strcmp((const char *)sqlite3_column_text(b->running, 1), "paused") == 0;
        set_caps(add_job(b, sqlite3_column_int64(b->running, 0), body, cat, paused), b->running, 4);
    }
    sqlite3_reset(b->running);
    for (job *j = b->jobs; j; j = j->next) {
        sqlite3_bind_int64(b->count_queued, 1, j->id);
        if (sqlite3_step(b->count_queued) == SQLITE_ROW)
            j->queued = sqlite3_column_int(b->count_queued, 0);
        sqlite3_reset(b->count_queued);
        sqlite3_clear_bindings(b->count_queued);
        log_info("broadcast %lld resumed (%s, %d in the outbox)", (long long)j->id,
                 j->paused ? "paused" : "running", j->queued);
    }
    for (job *j = b->jobs, *next; j; j = next) {
        next = j->next;
        pump(b, j);
    }
    return b;
}

void broadcast_store_recovered(broadcaster *b)
{
    /* outcomes recorded while degraded were kept without being read back: recount, then refill */
    for (job *j = b->jobs; j; j = j->next) {
        sqlite3_bind_int64(b->count_queued, 1, j->id);
        if (sqlite3_step(b->count_queued) == SQLITE_ROW)
            j->queued = sqlite3_column_int(b->count_queued, 0);
        store_reset(b->count_queued);
    }
    for (job *j = b->jobs, *next; j; j = next) {
        next = j->next;
        pump(b, j);
    }
}

void broadcast_free(broadcaster *b)
{
    if (!b)
        return;
    if (b->rt && b->rt->outbox)
        outbox_set_hook(b->rt->outbox, NULL, NULL);
    while (b->jobs)
        drop_job(b, b->jobs);
    /* their Lua handles outlive us (the VM closes later): the rows wait for the next start */
    while (b->preps) {
        broadcast_prep *p = b->preps;
        b->preps = p->next;
        p->b = NULL;
        p->prev = p->next = NULL;
    }
    if (b->sweep_ev)
        event_free(b->sweep_ev);
    store_finalize_set(b, statements, NSTATEMENTS);
    free(b);
}

static int load_info(broadcaster *b, int64_t id, char state[16], char **body, char **category,
                     job *caps)
{
    sqlite3_bind_int64(b->info, 1, id);
    int found = sqlite3_step(b->info) == SQLITE_ROW;
    if (found) {
        set_caps(caps, b->info, 7);
        snprintf(state, 16, "%s", sqlite3_column_text(b->info, 0));
        if (body)
            *body = sqlite3_column_text(b->info, 5) ? strdup((const char *)sqlite3_column_text(b->info, 5)) : NULL;
        if (category)
            *category = sqlite3_column_text(b->info, 6) ? strdup((const char *)sqlite3_column_text(b->info, 6)) : NULL;
    }
    sqlite3_reset(b->info);
    sqlite3_clear_bindings(b->info);
    return found;
}

/* ---- creation ---------------------------------------------------------------------------- */

#ifdef HERALD_TEST_HOOKS
/* Tests only (compiled into the ASan build): HERALD_TEST_CRASH_BROADCAST=N kills the process with
 * SIGKILL when a preparation is about to write its (N+1)-th recipient, or to commit with N
 * written, so a test dies at an exact point of a creation instead of at a timer's whim. */
static void crash_point(int64_t written)
{
    static int64_t at = -2;
    if (at == -2) {
        const char *v = getenv("HERALD_TEST_CRASH_BROADCAST");
        at = v && *v ? strtoll(v, NULL, 10) : -1;
    }
    if (at >= 0 && written >= at)
        raise(SIGKILL);
}
#else
#define crash_point(written) ((void)(written))
#endif

/* Deletes a chunk of abandoned preparations' rows; comes back next turn while any are left. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    broadcaster *b = arg;
    int64_t id = 0;
    if (sqlite3_step(b->swept) == SQLITE_ROW)
        id = sqlite3_column_int64(b->swept, 0);
    sqlite3_reset(b->swept);
    if (!id)
        return;
    char *err = NULL;
    outbox_touch_batch(b->rt->outbox);
    sqlite3_bind_int64(b->sweep, 1, id);
    sqlite3_bind_int(b->sweep, 2, SWEEP_ROWS);
    if (run(b, b->sweep, &err) < 0) {
        log_error("broadcast %lld: cannot delete the abandoned recipients: %s", (long long)id, err);
        free(err);
        return;                   /* the next start tries again */
    }
    event_active(b->sweep_ev, 0, 0);
}

static void abandon(broadcaster *b, int64_t id, int64_t written, const char *why)
{
    char *err = NULL;
    outbox_touch_batch(b->rt->outbox);
    sqlite3_bind_int64(b->abandon, 1, id);
    sqlite3_bind_int64(b->abandon, 2, clock_wall_ms());
    if (run(b, b->abandon, &err) < 0) {
        log_error("broadcast %lld: cannot abandon its preparation: %s", (long long)id, err);
        free(err);
        return;
    }
    log_warn("broadcast %lld abandoned after %lld recipients: %s; nothing of it is sent",
             (long long)id, (long long)written, why);
    event_active(b->sweep_ev, 0, 0);
}

int64_t broadcast_find_key(broadcaster *b, const char *key)
{
    if (!key)
        return 0;
    store_bind_text(b->find_key, 1, key);
    int64_t id = sqlite3_step(b->find_key) == SQLITE_ROW ? sqlite3_column_int64(b->find_key, 0) : 0;
    sqlite3_reset(b->find_key);
    sqlite3_clear_bindings(b->find_key);
    return id;
}

broadcast_prep *broadcast_prepare(broadcaster *b, const broadcast_spec *spec, char **err)
{
    broadcast_prep *p = calloc(1, sizeof *p);
    if (!p || (spec->key && !(p->key = strdup(spec->key)))) {
        free(p);
        *err = strdup("out of memory");
        return NULL;
    }
    store_bind_text(b->create, 1, spec->name);
    store_bind_text(b->create, 2, spec->body);
    store_bind_text(b->create, 3, spec->category);
    sqlite3_bind_int64(b->create, 4, clock_wall_ms());
    if (spec->cap_max > 0) {
        sqlite3_bind_int64(b->create, 5, spec->cap_max);
        sqlite3_bind_int64(b->create, 6, spec->cap_per_ms);
    } else {
        sqlite3_bind_null(b->create, 5);
        sqlite3_bind_null(b->create, 6);
    }
    sqlite3_bind_int(b->create, 7, spec->cap_drop);
    outbox_touch_batch(b->rt->outbox);
    if (run(b, b->create, err) < 0) {
        free(p->key);
        free(p);
        return NULL;
    }
    p->id = sqlite3_last_insert_rowid(b->db);
    p->b = b;
    p->next = b->preps;
    if (b->preps)
        b->preps->prev = p;
    b->preps = p;
    return p;
}

int broadcast_prep_add(broadcast_prep *p, const broadcast_recipient *r, int n, char **err)
{
    broadcaster *b = p->b;
    if (!b || p->done) {
        *err = strdup(b ? "the broadcast is no longer in preparation" : "broadcasts are stopped");
        return -1;
    }
    outbox_touch_batch(b->rt->outbox);
    for (int i = 0; i < n; i++) {
        crash_point(p->written);
        sqlite3_bind_int64(b->add, 1, p->id);
        sqlite3_bind_int64(b->add, 2, p->written + 1);
        store_bind_text(b->add, 3, r[i].conversation_id);
        store_bind_text(b->add, 4, r[i].user_id);
        store_bind_text(b->add, 5, r[i].tenant_id);
        store_bind_text(b->add, 6, r[i].body);
        store_bind_text(b->add, 7, r[i].user_name);
        store_bind_text(b->add, 8, r[i].user_aad_id);
        if (run(b, b->add, err) < 0)
            return -1;
        p->written++;
    }
    return 0;
}

static void prep_unlink(broadcast_prep *p)
{
    broadcaster *b = p->b;
    if (!b)
        return;
    if (p->prev) p->prev->next = p->next; else b->preps = p->next;
    if (p->next) p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

int64_t broadcast_prep_commit(broadcast_prep *p, char **err)
{
    broadcaster *b = p->b;
    if (!b || p->done) {
        *err = strdup(b ? "the broadcast is no longer in preparation" : "broadcasts are stopped");
        return -1;
    }
    crash_point(p->written);
    p->done = 1;
    /* two preparations under one key: the first to commit wins, the other gives its id back */
    int64_t other = broadcast_find_key(b, p->key);
    if (other) {
        abandon(b, p->id, p->written, "a broadcast with the same key was created meanwhile");
        return other;
    }
    char state[16], *body = NULL, *category = NULL;
    job caps = {0}, *j = NULL;
    if (load_info(b, p->id, state, &body, &category, &caps) && strcmp(state, "preparing") == 0)
        j = add_job(b, p->id, body, category, 0);
    free(body);
    free(category);
    if (!j) {
        *err = strdup("the broadcast cannot be started: out of memory, or its row is gone");
        abandon(b, p->id, p->written, "it could not be started");
        return -1;
    }
    j->cap_max = caps.cap_max;
    j->cap_per_ms = caps.cap_per_ms;
    j->cap_drop = caps.cap_drop;
    outbox_touch_batch(b->rt->outbox);
    sqlite3_bind_int64(b->start, 1, p->id);
    sqlite3_bind_int64(b->start, 2, p->written);
    store_bind_text(b->start, 3, p->key);
    sqlite3_bind_int64(b->start, 4, clock_wall_ms());
    if (run(b, b->start, err) < 0) {
        drop_job(b, j);
        abandon(b, p->id, p->written, "it could not be started");
        return -1;
    }
    log_info("broadcast %lld started (%lld recipients)", (long long)p->id, (long long)p->written);
    pump(b, j);
    return p->id;
}

void broadcast_prep_free(broadcast_prep *p)
{
    if (!p)
        return;
    if (p->b && !p->done)
        abandon(p->b, p->id, p->written, "its creator went away before starting it");
    prep_unlink(p);
    free(p->key);
    free(p);
}

int broadcast_control(broadcaster *b, int64_t id, const char *action, char **err)
{
    if (strcmp(action, "pause") != 0 && strcmp(action, "resume") != 0 && strcmp(action, "cancel") != 0) {
        *err = strdup("action must be pause, resume or cancel");
        return BROADCAST_E_BAD_ACTION;
    }
    job *j = find_job(b, id);
    if (!j) {
        char state[16];
        if (load_info(b, id, state, NULL, NULL, NULL)) {
            *err = errf("broadcast %lld is %s: only a running or paused one can be %s", (long long)id,
                        state, strcmp(action, "pause") == 0    ? "paused"
                                   : strcmp(action, "resume") == 0 ? "resumed"
                                                                   : "cancelled");
            return BROADCAST_E_FINISHED;
        }
        *err = strdup("no broadcast with that id");
        return BROADCAST_E_NOT_FOUND;
    }
    outbox_touch_batch(b->rt->outbox);
    if (strcmp(action, "pause") == 0) {
        j->paused = 1;
        set_state(b, id, "paused");
    } else if (strcmp(action, "resume") == 0) {
        j->paused = 0;
        set_state(b, id, "running");
        pump(b, j);
    } else if (strcmp(action, "cancel") == 0) {
        /* what is already in the outbox still goes: it was promised to Teams' pacing, not sent */
        sqlite3_bind_int64(b->cancel_pending, 1, id);
        run(b, b->cancel_pending, NULL);
        set_state(b, id, "cancelled");
        drop_job(b, j);
    }
    log_info("broadcast %lld %s", (long long)id, action);
    return 0;
}

int broadcast_redo(broadcaster *b, int64_t id, const char *body, char **err)
{
    char state[16];
    if (!load_info(b, id, state, NULL, NULL, NULL)) {
        *err = strdup("no broadcast with that id");
        return BROADCAST_E_NOT_FOUND;
    }
    typedef struct row { int64_t seq; char *conv, *act; } row;
    row *rows = NULL;
    int n = 0, cap = 0;
    sqlite3_bind_int64(b->delivered, 1, id);
    while (sqlite3_step(b->delivered) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            row *nr = realloc(rows, (size_t)cap * sizeof *nr);
            if (!nr)
                break;
            rows = nr;
        }
        rows[n].seq = sqlite3_column_int64(b->delivered, 0);
        rows[n].conv = strdup((const char *)sqlite3_column_text(b->delivered, 1));
        rows[n].act = strdup((const char *)sqlite3_column_text(b->delivered, 2));
        n++;
    }
    sqlite3_reset(b->delivered);
    sqlite3_clear_bindings(b->delivered);
    outbox_touch_batch(b->rt->outbox);
    job *j = find_job(b, id);
    if (!j && !(j = add_job(b, id, NULL, NULL, 0))) {
        for (int i = 0; i < n; i++) {
            free(rows[i].conv);
            free(rows[i].act);
        }
        free(rows);
        *err = strdup("out of memory");
        return BROADCAST_E_NO_MEMORY;
    }
    int queued = 0;
    for (int i = 0; i < n; i++) {
        store_reference ref = {0};
        char *e = NULL;
        send_verdict v = {0};
        int found = send_policy_lookup(b->rt, rows[i].conv, &ref, &v);
        /* an edit or recall goes where teams.update / teams.delete would go, nowhere else */
        send_request rq = {.conversation_id = ref.id, .service_url = ref.service_url,
                           .seal_id = ref.id, .seal = ref.service_url_seal};
        if (found && send_policy_check(b->rt, &rq, &v)) {
            outbox_spec spec = {.kind = body ? OUTBOX_UPDATE : OUTBOX_DELETE,
                                .conversation_id = ref.id, .service_url = ref.service_url,
                                .tenant_id = ref.tenant_id, .target_id = rows[i].act,
                                .body = body, .body_len = body ? strlen(body) : 0};
            int64_t op = outbox_enqueue(b->rt->outbox, &spec, NULL, NULL, NULL, &e);
            if (op > 0) {
                mark(b, id, rows[i].seq, body ? "updating" : "recalling", op, NULL, NULL);
                j->queued++;
                queued++;
            }
        } else if (found) {
            log_warn("broadcast %lld: the %s of its copy in %s was refused: %s", (long long)id,
                     body ? "update" : "recall", ref.id, v.code);
        }
        send_policy_clear(&v);
        if (found)
            store_reference_clear(&ref);
        free(e);
        free(rows[i].conv);
        free(rows[i].act);
    }
    free(rows);
    log_info("broadcast %lld: %s queued for %d delivered copies", (long long)id,
             body ? "update" : "recall", queued);
    return queued;
}

int broadcast_get_progress(broadcaster *b, int64_t id, broadcast_progress *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_bind_int64(b->info, 1, id);
    int found = sqlite3_step(b->info) == SQLITE_ROW;
    if (found) {
        snprintf(out->state, sizeof out->state, "%s", sqlite3_column_text(b->info, 0));
        snprintf(out->name, sizeof out->name, "%s", sqlite3_column_text(b->info, 1));
        out->total = sqlite3_column_int64(b->info, 2);
        out->created_at = sqlite3_column_int64(b->info, 3);
        out->finished_at = sqlite3_column_int64(b->info, 4);
    }
    sqlite3_reset(b->info);
    sqlite3_clear_bindings(b->info);
    if (!found)
        return 0;
    sqlite3_bind_int64(b->progress, 1, id);
    while (sqlite3_step(b->progress) == SQLITE_ROW) {
        const char *s = (const char *)sqlite3_column_text(b->progress, 0);
        int64_t c = sqlite3_column_int64(b->progress, 1);
        if (strcmp(s, "pending") == 0) out->pending += c;
        else if (strcmp(s, "sent") == 0 || strcmp(s, "updating") == 0) out->sent += c;
        else if (strcmp(s, "blocked") == 0) out->blocked += c;
        else if (strcmp(s, "not_found") == 0) out->not_found += c;
        else if (strcmp(s, "skipped") == 0) out->skipped += c;
        else if (strcmp(s, "recalled") == 0 || strcmp(s, "recalling") == 0) out->recalled += c;
        else if (strcmp(s, "cancelled") == 0) out->cancelled += c;
        else if (strcmp(s, "capped") == 0) out->capped += c;
        else if (strcmp(s, "queued") == 0 || strcmp(s, "creating") == 0) out->queued += c;
        else out->failed += c;    /* failed, rejected, expired, cancelled */
    }
    sqlite3_reset(b->progress);
    sqlite3_clear_bindings(b->progress);
    int64_t end = out->finished_at ? out->finished_at : clock_wall_ms();
    double secs = (double)(end - out->created_at) / 1000.0;
    out->rate = secs > 0 ? (double)(out->sent + out->recalled) / secs : 0;
    return 1;
}
