/* broadcast.h — durable broadcasts and opt-outs: a job with one row per recipient, fed to the
 * outbox a window at a time, followed through the outbox's finish hook across restarts. */
#ifndef HERALD_BROADCAST_H
#define HERALD_BROADCAST_H

#include <stdint.h>

typedef struct runtime runtime;
typedef struct broadcaster broadcaster;

typedef struct broadcast_recipient {
    const char *conversation_id;  /* a stored conversation, or NULL with user_id */
    const char *user_id;          /* a user reached 1:1 (created when no conversation is stored) */
    const char *tenant_id;
    const char *body;             /* personalised message JSON, or NULL for the job's */
    const char *user_name;        /* what is known of user_id (a roster's record), stored with */
    const char *user_aad_id;      /* the 1:1 the job creates; may be NULL */
} broadcast_recipient;

typedef struct broadcast_progress {
    char state[16];
    char name[128];
    int64_t total, pending, queued, sent, failed, blocked, not_found, skipped, recalled, cancelled,
        capped;
    int64_t created_at, finished_at;
    double rate;                  /* delivered per second since the job started */
} broadcast_progress;

broadcaster *broadcast_new(runtime *rt, char **err);
void broadcast_free(broadcaster *b);
/* The store takes writes again: recount each job's recipients in the outbox (outcomes recorded
 * while it was degraded were not read back) and refill the windows held meanwhile. */
void broadcast_store_recovered(broadcaster *b);

/* A preparation: a job row in state "preparing" that only its creator writes to. Its recipients
 * go in over as many loop turns as the creator likes (each turn's rows commit with the turn); one
 * UPDATE at broadcast_prep_commit makes it a running job. A preparation freed before that, or one
 * the process died in (found at the next start), ends "abandoned": its rows are deleted and
 * nothing of it is ever sent. So a job is either whole or never started. */
typedef struct broadcast_prep broadcast_prep;

typedef struct broadcast_spec {
    const char *name, *body, *category;
    const char *key;              /* idempotency key, or NULL: one created job per key */
    long cap_max;                 /* > 0: at most cap_max messages of category per recipient per */
    int64_t cap_per_ms;           /* cap_per_ms; over it a recipient waits for the next window, */
    int cap_drop;                 /* or with cap_drop it is skipped as "capped" */
} broadcast_spec;

/* The id of the job created under key, or 0 when none (a preparation does not count). */
int64_t broadcast_find_key(broadcaster *b, const char *key);
/* Writes the preparing row. NULL with *err on a store error. */
broadcast_prep *broadcast_prepare(broadcaster *b, const broadcast_spec *spec, char **err);
/* Appends n recipients (in the current batch). 0, or -1 with *err (the preparation stays open). */
int broadcast_prep_add(broadcast_prep *p, const broadcast_recipient *r, int n, char **err);
/* Makes the preparation a running job and starts feeding it; returns its id. When a job was
 * created under the same key meanwhile, this preparation is abandoned and that job's id returned.
 * -1 with *err when the preparation cannot be committed (it is then abandoned). Once called, only
 * broadcast_prep_free remains. */
int64_t broadcast_prep_commit(broadcast_prep *p, char **err);
/* Abandons the preparation unless it was committed, and frees it. Safe after broadcast_free (the
 * row is then left for the next start to abandon). */
void broadcast_prep_free(broadcast_prep *p);

/* Why broadcast_control / broadcast_redo refused (their negative results), each its own code for
 * scripts and the admin route: no such broadcast, one that is no longer running or paused, an
 * action that is not one, memory. */
enum { BROADCAST_E_NOT_FOUND = -1, BROADCAST_E_FINISHED = -2, BROADCAST_E_BAD_ACTION = -3,
       BROADCAST_E_NO_MEMORY = -4 };
/* action: "pause" | "resume" | "cancel". 0, or a BROADCAST_E_* with *err. */
int broadcast_control(broadcaster *b, int64_t id, const char *action, char **err);
/* Edits (body) or, with body NULL, deletes every delivered copy. Returns how many were queued, or
 * a BROADCAST_E_* with *err. */
int broadcast_redo(broadcaster *b, int64_t id, const char *body, char **err);
int broadcast_get_progress(broadcaster *b, int64_t id, broadcast_progress *out);

#endif
