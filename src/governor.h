/* governor.h — sliding-window rate limits that keep herald inside Teams' published limits before
 * the service has to say 429: per conversation (7/1s, 8/2s, 60/30s, 1800/1h) and per tenant. */
#ifndef HERALD_GOVERNOR_H
#define HERALD_GOVERNOR_H

#include <stdint.h>

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

#endif
