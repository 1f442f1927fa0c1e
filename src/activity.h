/* activity.h — POST /api/messages before any script: parse (jansson), validate, authenticate,
 * drop redeliveries, store the reference and install signal, ledgers and schedules; no Lua. */
#ifndef HERALD_ACTIVITY_H
#define HERALD_ACTIVITY_H

#include <stddef.h>

#include <jansson.h>

struct http_exchange;
struct runtime;

/* Handles one POST /api/messages body (answers x exactly once, now or later). Only an activity
 * that passed every check reaches the script side below. */
void activity_request(struct http_exchange *x, const char *body, size_t len, void *rt);

/* Answers every activity still waiting for signing keys with 503 (shutdown). */
void activity_abandon_pending(void *rt);

/* Answers status with {"error": reason} and, for a malformed activity, "field": the JSON path of
 * the field at fault ("from.id"). reason and field are ours, never client bytes. A 4xx counts as
 * rejected on /healthz. */
void activity_refuse(struct runtime *rt, struct http_exchange *x, int status, const char *reason,
                     const char *field);

/* 1 when s[0..n) is UTF-8 as RFC 3629 defines it: no overlong forms, surrogates or code points
 * past U+10FFFF. */
int activity_valid_utf8(const unsigned char *s, size_t n);

/* ---- the script side, implemented by lua_inbound.c ------------------------------------------
 * activity.c calls these in this order for an accepted activity, so that nothing is written
 * before the script's copy exists and the script sees nothing before it is trusted. */

typedef struct inbound inbound;

/* What activity.c hands over: the parsed body and the fields the handoff needs (borrowed: they
 * live as long as doc). */
typedef struct accepted_activity {
    const json_t *doc;            /* the activity object (an empty array counts as one) */
    const char *type;
    const char *conversation;     /* conversation.id */
    const char *id;               /* activity id, or NULL */
} accepted_activity;

/* Builds the activity the handler will see in the live generation's state. NULL when it cannot
 * (the script's memory cap): x is then answered 503 and nothing was written. */
inbound *inbound_prepare(struct runtime *rt, struct http_exchange *x, const accepted_activity *a);

/* Drops a prepared activity without answering its exchange (the caller answers). */
void inbound_discard(inbound *ib);

/* Runs the prepared activity as a task: hook is "install", "uninstall" or NULL, zone_unknown
 * tells the script its time zone was ignored, culprit names it for the watchdog. The task waits
 * for the commit of the batch holding the reference; the exchange is answered when it ends or at
 * the response deadline. Takes ib (answered 503 itself when the task cannot start). */
void inbound_start(inbound *ib, const char *hook, int zone_unknown, const char *culprit);

#endif
