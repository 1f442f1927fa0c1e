/* redelivery.h — the activity ids seen in the last few minutes, per conversation, so an activity
 * Teams redelivers after a timeout is acknowledged and not run twice. In memory by design. */
#ifndef HERALD_REDELIVERY_H
#define HERALD_REDELIVERY_H

#include <stddef.h>
#include <stdint.h>

typedef struct redelivery redelivery;

/* max_entries bounds memory: past it the oldest ids are forgotten first. NULL when out of memory
 * or when OpenSSL offers no SipHash. */
redelivery *redelivery_new(size_t max_entries);
void redelivery_free(redelivery *r);

/* Returns 1 when (conversation_id, activity_id) was recorded less than window_ms before now_ms;
 * otherwise records it at now_ms and returns 0. now_ms must not go backwards (monotonic clock).
 * Record an activity only once it is accepted (stored and running): one refused with 503 must
 * run when Teams sends it again. */
int redelivery_check(redelivery *r, const char *conversation_id, const char *activity_id,
                     int64_t now_ms, int64_t window_ms);

/* The lookup half of redelivery_check: 1 when recorded within the window, records nothing. */
int redelivery_seen(redelivery *r, const char *conversation_id, const char *activity_id,
                    int64_t now_ms, int64_t window_ms);

/* The keyed hash of a key (exposed for tests: two instances disagree, one agrees with itself). */
uint64_t redelivery_hash(redelivery *r, const char *conversation_id, const char *activity_id);

size_t redelivery_size(const redelivery *r);

#endif
