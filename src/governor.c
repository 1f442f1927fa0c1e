/* governor.c — sliding-window rate limiting over a ring of recent operation times. Exact rather
 * than token buckets: Teams counts real windows, and an exact window can run at 100 % of the limit
 * with no 429, where a bucket approximation must leave headroom. */
#include "governor.h"

#include <stdlib.h>

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
