/* governor.h — pacing: when an outbound operation may go. Sliding-window limits that keep herald
 * inside Teams' published limits (per conversation 7/1s, 8/2s, 60/30s, 1800/1h; per tenant) before
 * the service has to say 429, tenant wait lists, the rate cut after a 429 and its recovery, and the
 * bound on attempts in flight. The outbox (outbox.h) asks; what is durable is the outbox's. */
#ifndef HERALD_GOVERNOR_H
#define HERALD_GOVERNOR_H

#include <stdint.h>

struct event;
struct event_base;

typedef struct gov_window {
    int64_t ms;                   /* window length */
    int max;                      /* operations allowed in any such window */
} gov_window;

/* The recent operation times of one conversation or tenant, oldest first. Zero-initialise. */
typedef struct gov_limiter {
    int64_t *t;
    int len, cap, head;           /* ring buffer */
} gov_limiter;

/* Teams' per-bot-per-conversation limits for sends (and creates, updates, deletes). */
extern const gov_window gov_conversation_windows[4];

/* The earliest time >= now at which one more operation fits every window. */
int64_t gov_next(const gov_limiter *l, const gov_window *w, int nw, int64_t now);

/* Records an operation at time t (t never decreases between calls on one limiter). keep is the
 * largest max of the windows used with this limiter: older entries cannot matter. */
int gov_record(gov_limiter *l, int64_t t, int keep);

void gov_limiter_free(gov_limiter *l);

/* Operations recorded within the last ms before now. */
int gov_count_since(const gov_limiter *l, int64_t since);

/* ---- pacing of conversations and tenants --------------------------------------------------- */

typedef struct governor governor;
typedef struct gov_conv gov_conv;

typedef struct gov_tenant {
    char *id;                     /* "" for an unknown tenant */
    gov_limiter lim;
    gov_conv *wait_head, *wait_tail;  /* conversations ready by their own windows, FIFO */
    struct event *timer;          /* wakes the wait list when the tenant's window allows */
    double factor;                /* < 1 after a 429: the tenant's rate is reduced for a while */
    int64_t factor_since;
    int64_t outstanding;          /* the outbox's count of operations in its queues (outbox_admit) */
    governor *g;
    struct gov_tenant *hnext;
} gov_tenant;

/* One conversation's (one outbox queue's) pacing state, embedded in the queue. */
struct gov_conv {
    gov_limiter lim;
    gov_tenant *tenant;
    int waiting;                  /* in its tenant's wait list */
    gov_conv *tnext;
    int slot_waiting;             /* ready, but max_in_flight attempts are out */
    gov_conv *snext;
};

typedef struct gov_config {
    int enabled;                  /* 0: no pacing by windows (benchmarks); slots still apply */
    int tenant_rps;               /* per app per tenant */
    int64_t max_in_flight;        /* attempts out at once */
} gov_config;

/* go: c, which waited in its tenant's list, may go now. slot_free: c, which waited for an attempt
 * slot, should be scheduled again (off this stack: it re-checks its windows). */
typedef void (*gov_fn)(gov_conv *c, void *ud);

/* Teams counts arrivals, herald counts departures: requests sent at a window's exact edge can
 * arrive inside it (a burst on new connections arrives spread, the next on warm ones all at once),
 * so every window is paced with this much slack: 95 % of a 1 s limit, 0 measured 429s. */
#define GOV_PACING_MARGIN_MS 50
/* After a 429 the tenant's rate halves (at most once a second, down to 10 %) and grows back by
 * a quarter every GOV_RECOVERY_MS without another 429. */
#define GOV_RECOVERY_MS 10000

governor *governor_new(struct event_base *base, const gov_config *cfg, gov_fn go,
                       gov_fn slot_free, void *ud);
/* Frees the tenants; conversations are their owners' to free (gov_conv_free). */
void governor_free(governor *g);

/* Joins c (zeroed) to its tenant, made on first use. -1 when out of memory. */
int gov_conv_init(governor *g, gov_conv *c, const char *tenant_id);
void gov_conv_free(gov_conv *c);
/* The tenant called id (NULL: unknown), or NULL if none has been seen. */
gov_tenant *gov_tenant_find(governor *g, const char *id);

/* In a tenant's wait list or the slot list: the governor will call back for it. */
int gov_conv_waiting(const gov_conv *c);
/* Waits for nothing and no send of its own still counts against a window at now: its owner may
 * drop it without changing the pacing. */
int gov_conv_idle(const gov_conv *c, int64_t now);

/* The earliest time >= now at which c's conversation windows allow one more operation (now when
 * pacing is off). */
int64_t gov_conv_ready(governor *g, gov_conv *c, int64_t now);
/* c is ready by its own windows: 1 when its tenant lets it go now; else 0 and c waits in its
 * tenant's list (behind the conversations already there) until go(c). */
int gov_tenant_go(governor *g, gov_conv *c, int64_t now);
/* The earliest time >= now at which the tenant's window, scaled by its factor, allows one more;
 * applies the factor's recovery as time passes. */
int64_t gov_tenant_next(governor *g, gov_tenant *t, int64_t now);

/* Attempt slots. 0 when one is free (take it with gov_slot_taken once the call starts); 1 when
 * all are out, and c waits in the slot list until slot_free(c). */
int gov_slot_wait(governor *g, gov_conv *c);
void gov_slot_taken(governor *g);
/* An attempt ended: hands free slots to waiting conversations, first come first served. */
void gov_slot_release(governor *g);
int64_t gov_in_flight(const governor *g);

/* An operation went out to c at now (counted in its conversation's and tenant's windows). */
void gov_note_sent(governor *g, gov_conv *c, int64_t now);
/* The service answered 429 for c at now: cuts its tenant's rate once per throttling moment.
 * Returns the tenant's factor after the cut. */
double gov_note_429(governor *g, gov_conv *c, int64_t now);

#endif
