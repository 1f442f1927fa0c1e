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

/* A job in state "preparing": add recipients, then start it. Returns its id or -1. */
/* cap_max > 0: at most cap_max messages of category per recipient per cap_per_ms; over it a
 * recipient is deferred to the next window, or with cap_drop skipped as "capped". */
int64_t broadcast_create(broadcaster *b, const char *name, const char *body, const char *category,
                         long cap_max, int64_t cap_per_ms, int cap_drop, char **err);
int broadcast_add(broadcaster *b, int64_t id, const broadcast_recipient *r, int n, char **err);
int broadcast_start(broadcaster *b, int64_t id, char **err);
/* action: "pause" | "resume" | "cancel". 0, or -1 with *err. */
int broadcast_control(broadcaster *b, int64_t id, const char *action, char **err);
/* Edits (body) or, with body NULL, deletes every delivered copy. Returns how many were queued. */
int broadcast_redo(broadcaster *b, int64_t id, const char *body, char **err);
int broadcast_get_progress(broadcaster *b, int64_t id, broadcast_progress *out);

/* Opt-outs: subject is a conversation id or a user id (Teams or Entra object id); category "*"
 * means everything. */
int opt_out_set(broadcaster *b, const char *subject, const char *category, int out, char **err);
/* 1 when any of the subjects opted out of category (or of "*"). */
int opt_out_check(broadcaster *b, const char *conversation_id, const char *user_id,
                  const char *user_aad_id, const char *category);

#endif
