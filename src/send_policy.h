/* send_policy.h — the one decision every way out passes before anything is queued: send, reply,
 * update, delete, create_conversation and each broadcast recipient (trust, opt-out, frequency cap).
 * It decides; the callers (lua_teams.c, broadcast.c) queue; connector.c re-checks trust at use. */
#ifndef HERALD_SEND_POLICY_H
#define HERALD_SEND_POLICY_H

#include <stdint.h>

typedef struct runtime runtime;
typedef struct store_reference store_reference;

/* What is about to leave, as plain strings owned by the caller (any may be NULL unless noted). */
typedef struct send_request {
    const char *conversation_id;  /* the target; NULL for a create (no frequency cap applies) */
    const char *service_url;      /* where the bot's token would go (required) */
    const char *seal_id;          /* the stored conversation whose seal vouches for service_url */
    const char *seal;             /* its service_url_seal */
    const char *user_id;          /* whose opt-outs count besides the conversation's */
    const char *user_aad_id;
    const char *category;         /* NULL: no opt-out or cap applies */
    long cap_max;                 /* > 0 with cap_per_ms > 0: at most cap_max of category per */
    int64_t cap_per_ms;           /* conversation per cap_per_ms; over it the message waits for */
    int cap_drop;                 /* the next window, or with cap_drop it is refused "capped" */
} send_request;

/* The answer: go (code NULL, possibly not before not_before_ms), or a refusal. */
typedef struct send_verdict {
    const char *code;             /* NULL: go; else a stable code from README's error table */
    char *message;                /* with code: the reason, malloc'd (NULL when out of memory) */
    int64_t not_before_ms;        /* go, but not before this wall time (0: now) */
} send_verdict;

/* Resolves a stored conversation id. Returns 1 with *ref filled (the caller clears it), or 0
 * with *v refused "unknown_conversation" (no such row) or "store" (the read failed). */
int send_policy_lookup(runtime *rt, const char *conversation_id, store_reference *ref,
                       send_verdict *v);

/* Decides rq, in this order: trust (the token only goes to a URL trust.c allows; not checked in
 * dev mode, and a URL that passes is remembered, so what is created from it can be sealed), then
 * opt-outs, then the frequency cap. Returns 1 to go (v->not_before_ms may be set) or 0 with *v
 * holding the refusal ("untrusted_service_url", "opted_out", "capped"). */
int send_policy_check(runtime *rt, const send_request *rq, send_verdict *v);

/* A conversation created through a trusted endpoint: its service URL (the endpoint's answer) is
 * trusted for this process too. No-op in dev mode or with url NULL. */
void send_policy_note_created(runtime *rt, const char *service_url);

/* The seal to store with a reference (id, service_url) learned by herald itself: written to out
 * and 1 when the URL is trusted right now, else 0 (the reference is stored unsealed). */
int send_policy_seal(runtime *rt, const char *id, const char *service_url, char out[65]);

/* Frees the message of a refusal and resets *v. */
void send_policy_clear(send_verdict *v);

#endif
