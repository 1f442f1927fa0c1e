/* governor.c — pacing: exact sliding windows over a ring of recent operation times, per
 * conversation and per tenant, tenant wait lists, the 429 rate cut and its recovery, attempt slots.
 * Exact rather than token buckets: Teams counts real windows, and an exact window can run at 100 %
 * of the limit with no 429, where a bucket approximation must leave headroom. */
#include "governor.h"
#include "clock.h"
#include "strhash.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

const gov_window gov_conversation_windows[4] = {
    {1000, 7}, {2000, 8}, {30000, 60}, {3600000, 1800},
};

static int64_t at(const gov_limiter *l, int i) /* i-th oldest */
{
    return l->t[(l->head + i) % l->cap];
}

int gov_count_since(const gov_limiter *l, int64_t since)
{
    /* binary search for the first time > since */
    int lo = 0, hi = l->len;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (at(l, mid) > since)
            hi = mid;
        else
            lo = mid + 1;
    }
    return l->len - lo;
}

int64_t gov_next(const gov_limiter *l, const gov_window *w, int nw, int64_t now)
{
    int64_t next = now;
    for (int i = 0; i < nw; i++) {
        if (l->len < w[i].max)
            continue;
        /* the max-th most recent operation must have left the window */
        int64_t t = at(l, l->len - w[i].max) + w[i].ms;
        if (t > next && gov_count_since(l, now - w[i].ms) >= w[i].max)
            next = t;
    }
    return next;
}

int gov_record(gov_limiter *l, int64_t t, int keep)
{
    if (l->len == l->cap) {
        if (l->cap >= keep) {     /* full at the useful size: forget the oldest */
            l->head = (l->head + 1) % l->cap;
            l->len--;
        } else {
            int cap = l->cap ? l->cap * 2 : 4;
            if (cap > keep)
                cap = keep;
            int64_t *n = malloc((size_t)cap * sizeof *n);
            if (!n)
                return -1;
            for (int i = 0; i < l->len; i++)
                n[i] = at(l, i);
            free(l->t);
            l->t = n;
            l->cap = cap;
            l->head = 0;
        }
    }
    l->t[(l->head + l->len) % l->cap] = t;
    l->len++;
    return 0;
}

void gov_limiter_free(gov_limiter *l)
{
    free(l->t);
    l->t = NULL;
    l->len = l->cap = l->head = 0;
}

/* ---- pacing ------------------------------------------------------------------------------- */

#define TENANT_BUCKETS 65536
#define TENANT_KEEP 1000          /* sends a tenant's ring keeps: more than any tenant_rps used */

struct governor {
    struct event_base *base;
    gov_config cfg;
    gov_fn go, slot_free;
    void *ud;
    gov_tenant **tenants;         /* hash by id */
    gov_window conv_w[4];         /* the conversation windows with the pacing margin */
    int64_t in_flight;
    gov_conv *slot_head, *slot_tail;  /* conversations waiting for an attempt slot, FIFO */
};

governor *governor_new(struct event_base *base, const gov_config *cfg, gov_fn go,
                       gov_fn slot_free, void *ud)
{
    governor *g = calloc(1, sizeof *g);
    if (!g || !(g->tenants = calloc(TENANT_BUCKETS, sizeof *g->tenants))) {
        free(g);
        return NULL;
    }
    g->base = base;
    g->cfg = *cfg;
    g->go = go;
    g->slot_free = slot_free;
    g->ud = ud;
    for (int i = 0; i < 4; i++)
        g->conv_w[i] = (gov_window){gov_conversation_windows[i].ms + GOV_PACING_MARGIN_MS,
                                    gov_conversation_windows[i].max};
    return g;
}

void governor_free(governor *g)
{
    if (!g)
        return;
    for (int b = 0; b < TENANT_BUCKETS; b++) {
        gov_tenant *t = g->tenants[b];
        while (t) {
            gov_tenant *n = t->hnext;
            if (t->timer)
                clock_timer_free(t->timer);
            gov_limiter_free(&t->lim);
            free(t->id);
            free(t);
            t = n;
        }
    }
    free(g->tenants);
    free(g);
}

gov_tenant *gov_tenant_find(governor *g, const char *id)
{
    if (!id)
        id = "";
    for (gov_tenant *t = g->tenants[strhash(id, TENANT_BUCKETS - 1)]; t; t = t->hnext)
        if (strcmp(t->id, id) == 0)
            return t;
    return NULL;
}

static gov_tenant *tenant_get(governor *g, const char *id)
{
    if (!id)
        id = "";
    gov_tenant *t = gov_tenant_find(g, id);
    if (t)
        return t;
    unsigned b = strhash(id, TENANT_BUCKETS - 1);
    t = calloc(1, sizeof *t);
    if (!t || !(t->id = strdup(id))) {
        free(t);
        return NULL;
    }
    t->factor = 1.0;
    t->g = g;
    t->hnext = g->tenants[b];
    g->tenants[b] = t;
    return t;
}

int gov_conv_init(governor *g, gov_conv *c, const char *tenant_id)
{
    c->tenant = tenant_get(g, tenant_id);
    return c->tenant ? 0 : -1;
}

void gov_conv_free(gov_conv *c)
{
    gov_limiter_free(&c->lim);
}

int gov_conv_waiting(const gov_conv *c)
{
    return c->waiting || c->slot_waiting;
}

int gov_conv_idle(const gov_conv *c, int64_t now)
{
    if (c->waiting || c->slot_waiting)
        return 0;
    /* its recent sends still count against the hour window */
    return !(c->lim.len && c->lim.t &&
             now - gov_conversation_windows[3].ms < c->lim.t[(c->lim.head + c->lim.len - 1) %
                                                              c->lim.cap]);
}

int64_t gov_conv_ready(governor *g, gov_conv *c, int64_t now)
{
    return g->cfg.enabled ? gov_next(&c->lim, g->conv_w, 4, now) : now;
}

int64_t gov_tenant_next(governor *g, gov_tenant *t, int64_t now)
{
    if (t->factor < 1.0 && now - t->factor_since > GOV_RECOVERY_MS) {
        t->factor = t->factor * 1.25 > 1.0 ? 1.0 : t->factor * 1.25;
        t->factor_since = now;
    }
    int rps = (int)(g->cfg.tenant_rps * t->factor);
    gov_window w = {1000 + GOV_PACING_MARGIN_MS, rps < 1 ? 1 : rps};
    return gov_next(&t->lim, &w, 1, now);
}

static void arm_tenant(gov_tenant *t, int64_t at)
{
    clock_timer_add(t->timer, at - clock_mono_ms());
}

static void on_tenant_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    gov_tenant *t = arg;
    governor *g = t->g;
    while (t->wait_head) {
        int64_t now = clock_mono_ms();
        int64_t next = gov_tenant_next(g, t, now);
        if (next > now) {
            arm_tenant(t, next);
            return;
        }
        gov_conv *c = t->wait_head;
        t->wait_head = c->tnext;
        if (!t->wait_head)
            t->wait_tail = NULL;
        c->tnext = NULL;
        c->waiting = 0;
        g->go(c, g->ud);
    }
}

int gov_tenant_go(governor *g, gov_conv *c, int64_t now)
{
    gov_tenant *t = c->tenant;
    if (!g->cfg.enabled)
        return 1;
    if (!t->wait_head && gov_tenant_next(g, t, now) <= now)
        return 1;
    c->waiting = 1;
    if (t->wait_tail) t->wait_tail->tnext = c; else t->wait_head = c;
    t->wait_tail = c;
    if (!t->timer)
        t->timer = evtimer_new(g->base, on_tenant_timer, t);
    if (t->timer && !clock_timer_pending(t->timer))
        arm_tenant(t, gov_tenant_next(g, t, now));
    return 0;
}

/* Bounded concurrency: beyond it libcurl would only hold the transfers in a pending list it
 * rescans on every event, which stalls the loop during a burst of thousands. */
int gov_slot_wait(governor *g, gov_conv *c)
{
    if (g->in_flight < g->cfg.max_in_flight)
        return 0;
    c->slot_waiting = 1;
    c->snext = NULL;
    if (g->slot_tail) g->slot_tail->snext = c; else g->slot_head = c;
    g->slot_tail = c;
    return 1;
}

void gov_slot_taken(governor *g)
{
    g->in_flight++;
}

void gov_slot_release(governor *g)
{
    g->in_flight--;
    int64_t free_slots = g->cfg.max_in_flight - g->in_flight;
    while (free_slots-- > 0 && g->slot_head) {
        gov_conv *c = g->slot_head;
        g->slot_head = c->snext;
        if (!g->slot_head)
            g->slot_tail = NULL;
        c->snext = NULL;
        c->slot_waiting = 0;
        g->slot_free(c, g->ud);
    }
}

int64_t gov_in_flight(const governor *g)
{
    return g->in_flight;
}

void gov_note_sent(governor *g, gov_conv *c, int64_t now)
{
    if (!g->cfg.enabled)
        return;
    gov_record(&c->lim, now, gov_conversation_windows[3].max);
    gov_record(&c->tenant->lim, now, TENANT_KEEP);
}

double gov_note_429(governor *g, gov_conv *c, int64_t now)
{
    (void)g;
    gov_tenant *t = c->tenant;
    /* one throttling moment answers many requests at once: slow down once for all of them */
    if (now - t->factor_since >= 1000 || t->factor >= 1.0) {
        t->factor = t->factor * 0.5 < 0.1 ? 0.1 : t->factor * 0.5;
        t->factor_since = now;
    }
    return t->factor;
}
