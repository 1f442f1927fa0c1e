/* send_policy.c — one policy for every way out (issue 13): a single send and a broadcast
 * recipient go through the same trust, opt-out and frequency-cap checks, in the same order, and
 * are refused with the same codes, so a security rule cannot drift between two copies. No Lua
 * here: the bindings turn a verdict into `nil, message, code`, broadcast.c into a row's state. */
#include "send_policy.h"
#include "err.h"
#include "log.h"
#include "outbox.h"
#include "runtime.h"
#include "store.h"
#include "trust.h"

#include <stdlib.h>
#include <string.h>

/* Refuses with code and message (taken; NULL when memory ran out); returns 0 so callers can
 * `return refuse(...)`. */
static int refuse(send_verdict *v, const char *code, char *message)
{
    free(v->message);
    v->message = message;
    v->code = code;
    v->not_before_ms = 0;
    return 0;
}

void send_policy_clear(send_verdict *v)
{
    free(v->message);
    memset(v, 0, sizeof *v);
}

int send_policy_lookup(runtime *rt, const char *conversation_id, store_reference *ref,
                       send_verdict *v)
{
    char *err = NULL;
    int found = store_get_reference(rt->store, conversation_id, ref, &err);
    if (found == 1)
        return 1;
    memset(ref, 0, sizeof *ref);
    if (found == 0)
        refuse(v, "unknown_conversation", errf("no stored conversation '%s'", conversation_id));
    else
        refuse(v, "store", errf("store error: %s", err ? err : "?"));
    free(err);
    return 0;
}

/* The bearer token only goes where trust.c allows (never checked in dev mode). trust_allows also
 * holds the plain-http rule (config_url_allowed), so there is one test, here and in connector.c. */
static int check_trust(runtime *rt, const send_request *rq, send_verdict *v)
{
    if (!rt->trust)
        return 1;
    if (rq->service_url && trust_allows(rt->trust, rq->service_url, rq->seal_id, rq->seal)) {
        trust_note_validated(rt->trust, rq->service_url);
        return 1;
    }
    const char *conv = rq->conversation_id ? rq->conversation_id : rq->seal_id;
    log_warn("refused to send the bot's token to an untrusted service URL url=%s conversation=%s",
             rq->service_url ? rq->service_url : "-", conv ? conv : "-");
    return refuse(v, "untrusted_service_url",
                  errf("service URL %s is not trusted: it came from no validated activity and is "
                       "not the cloud's endpoint (see HERALD_TRUSTED_SERVICE_URLS)",
                       rq->service_url ? rq->service_url : "(none)"));
}

static int check_category(runtime *rt, const send_request *rq, send_verdict *v)
{
    if (!rq->category)
        return 1;
    if (store_opt_out_check(rt->store, rq->conversation_id, rq->user_id, rq->user_aad_id,
                            rq->category))
        return refuse(v, "opted_out", errf("the recipient opted out of '%s'", rq->category));
    if (rq->conversation_id && rq->cap_max > 0 && rq->cap_per_ms > 0) {
        int64_t oldest = 0;
        int n = outbox_count_category(rt->outbox, rq->conversation_id, rq->category,
                                      rq->cap_per_ms, &oldest);
        if (n >= rq->cap_max) {
            if (rq->cap_drop)
                return refuse(v, "capped", errf("frequency cap of %d per %d s reached for '%s'",
                                                (int)rq->cap_max, (int)(rq->cap_per_ms / 1000),
                                                rq->category));
            /* the window opens when the oldest leaves it */
            v->not_before_ms = oldest + rq->cap_per_ms;
        }
    }
    return 1;
}

int send_policy_check(runtime *rt, const send_request *rq, send_verdict *v)
{
    memset(v, 0, sizeof *v);
    return check_trust(rt, rq, v) && check_category(rt, rq, v);
}

void send_policy_note_created(runtime *rt, const char *service_url)
{
    if (rt->trust && service_url)
        trust_note_validated(rt->trust, service_url);
}

int send_policy_seal(runtime *rt, const char *id, const char *service_url, char out[65])
{
    return rt->trust && id && service_url && trust_allows(rt->trust, service_url, NULL, NULL) &&
           trust_seal(rt->trust, id, service_url, out) == 0;
}
