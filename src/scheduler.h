/* scheduler.h — durable schedules (teams.schedule): persisted rows, an index on the next fire
 * instant, one wake-up timer, batched firing into handlers registered by name. */
#ifndef HERALD_SCHEDULER_H
#define HERALD_SCHEDULER_H

#include <stdint.h>

typedef struct runtime runtime;
typedef struct scheduler scheduler;
typedef struct lua_State lua_State;

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

scheduler *scheduler_new(runtime *rt, char **err);
void scheduler_free(scheduler *s);

/* Stores (or replaces) a schedule; returns its next fire instant (unix s), or -1 with *err. */
int64_t scheduler_put(scheduler *s, const scheduler_entry *e, char **err);
/* Deletes a schedule; returns 1 if it existed, 0 if not, -1 on a store error. */
int scheduler_cancel(scheduler *s, const char *id);
/* Pushes one schedule as a table (or nil); pushes an array of up to limit schedules. May raise
 * (the memory cap), and then only once the query is reset. */
int scheduler_push_get(scheduler *s, lua_State *L, const char *id);
int scheduler_push_list(scheduler *s, lua_State *L, const char *handler, const char *conv,
                        const char *after, int limit);

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
