/* scheduler.h — durable schedules (teams.schedule): persisted rows, an index on the next fire
 * instant, one wake-up timer, batched firing through a C callback (the script side is
 * lua_schedule.c). Knows no Lua. */
#ifndef HERALD_SCHEDULER_H
#define HERALD_SCHEDULER_H

#include <stdint.h>

typedef struct runtime runtime;
typedef struct scheduler scheduler;

typedef struct scheduler_entry {
    const char *id;               /* the script's name for it; putting it again reschedules */
    const char *handler;          /* teams.on_schedule(handler, fn) */
    const char *kind;             /* "at" | "every" | "cron" */
    const char *expr;
    const char *tz;               /* IANA name, "user" (the owner conversation's zone), or NULL */
    const char *conversation_id;  /* owner, may be NULL */
    const char *payload;          /* JSON, may be NULL */
    const char *missed;           /* "once" (default: fire once on start) | "skip" */
} scheduler_entry;

typedef struct scheduler_stats {
    uint64_t fired, skipped, waiting, errors, paused;
} scheduler_stats;

/* One due schedule handed to the script side. The strings are the scheduler's and live only for
 * the call. */
typedef struct scheduler_firing {
    const char *id, *handler;
    const char *payload;          /* JSON or NULL */
    const char *conversation_id;  /* or NULL */
    int64_t due, now;             /* unix s: the instant it was due, the instant it fires */
} scheduler_firing;

/* What the scheduler asks of whoever runs the handlers (lua_schedule.c for the live generation).
 * Each gets the runtime the scheduler was made with. */
typedef struct scheduler_script {
    /* 1 when the live script has a handler registered under name. */
    int (*has_handler)(runtime *rt, const char *handler);
    /* 1 when this loop turn has run a slice of script code (rows left wait for a later turn). */
    int (*turn_spent)(runtime *rt);
    /* 1 when the schedule's handler stalled the host before and is quarantined. */
    int (*quarantined)(runtime *rt, const char *id);
    /* Runs the handler. A run that fails (at once or later) reports with scheduler_fire_failed. */
    void (*fire)(runtime *rt, scheduler *s, const scheduler_firing *f);
} scheduler_script;

/* script is kept (not copied): a static table. */
scheduler *scheduler_new(runtime *rt, const scheduler_script *script, char **err);
void scheduler_free(scheduler *s);

/* Stores (or replaces) a schedule; returns its next fire instant (unix s), or -1 with *err. */
int64_t scheduler_put(scheduler *s, const scheduler_entry *e, char **err);
/* Deletes a schedule; returns 1 if it existed, 0 if not, -1 on a store error. */
int scheduler_cancel(scheduler *s, const char *id);
/* A schedule's run failed: records "error: <first line of message>" as its last result. */
void scheduler_fire_failed(scheduler *s, const char *id, const char *message);

/* One stored schedule as the script sees it. Strings are NULL when unset. */
typedef struct scheduler_row {
    const char *id, *handler, *kind, *expr, *tz, *conversation_id, *payload, *missed;
    int has_next_fire, has_last_fire;
    int64_t next_fire, last_fire; /* unix s, when has_* */
    const char *last_result, *paused;
    int64_t runs;
    int waiting_for_handler;
} scheduler_row;

/* A read of schedules, row by row: scheduler_get (one id) or scheduler_list (by handler and/or
 * conversation, ids after `after`, at most limit). scheduler_query_next fills row (1) or says the
 * read is over (0); a row's strings live until the next call. Every query must be ended with
 * scheduler_query_end, which releases its read snapshot; only one query is open at a time per
 * kind (get/list). */
typedef struct scheduler_query scheduler_query;
scheduler_query *scheduler_get(scheduler *s, const char *id);
scheduler_query *scheduler_list(scheduler *s, const char *handler, const char *conv,
                                const char *after, int limit);
int scheduler_query_next(scheduler_query *q, scheduler_row *row);
void scheduler_query_end(scheduler_query *q);

/* A reload went live: schedules waiting for a missing handler are due again. */
void scheduler_handlers_changed(scheduler *s);
/* The conversation's user reported a (possibly new) time zone: its tz="user" schedules are
 * recomputed so the next firing is in the new zone. */
void scheduler_zone_changed(scheduler *s, const char *conversation_id);
/* The conversation's bot was uninstalled: its schedules pause (paused = "uninstalled", no next
 * fire instant). A schedule found due for an uninstalled conversation pauses the same way. */
void scheduler_conversation_uninstalled(scheduler *s, const char *conversation_id);
/* The conversation was heard from (installed again): its paused schedules resume from their next
 * occurrence after now; the ones missed meanwhile are not fired, and an "at" whose time passed
 * ends. Cheap when nothing is paused (one index lookup), so it runs for every activity. */
void scheduler_conversation_back(scheduler *s, const char *conversation_id);
/* The clock moved (test clock): re-read the earliest due instant. */
void scheduler_poke(scheduler *s);
void scheduler_get_stats(const scheduler *s, scheduler_stats *out);

#endif
