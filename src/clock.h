/* clock.h — herald's two clocks (monotonic for timeouts and pacing, wall for schedules and
 * records) and its timers, real by default; in virtual mode (teams.testing) time moves only when
 * the test advances it, and due timers fire in deadline order. */
#ifndef HERALD_CLOCK_H
#define HERALD_CLOCK_H

#include <stdint.h>

struct event;
struct event_base;

/* Monotonic milliseconds (timeouts, pacing); wall-clock unix milliseconds (references,
 * schedules). */
int64_t clock_mono_ms(void);
int64_t clock_wall_ms(void);

/* Shifts the wall clock (real mode; a test build: HERALD_TEST_CLOCK=1 and POST /-/clock). */
void clock_shift_wall(int64_t delta_ms);

/* Arms ev (made with evtimer_new or event_new(-1, [EV_PERSIST])) to fire after delay_ms; a
 * persistent event re-arms itself with the same delay after each firing. */
void clock_timer_add(struct event *ev, int64_t delay_ms);
void clock_timer_del(struct event *ev);
int clock_timer_pending(struct event *ev);
/* Disarms and frees a timer event: the only way to free one (a virtual timer must leave the heap). */
void clock_timer_free(struct event *ev);

/* Virtual mode: from now on both clocks stand still until clock_advance; wall time starts at
 * start_wall_ms. Must be called before any timer is armed. */
void clock_virtual(struct event_base *base, int64_t start_wall_ms);
int clock_is_virtual(void);
/* Moves virtual time forward by ms, firing every timer that falls due on the way (in deadline
 * order, each at its own instant) and running the loop until nothing is ready. */
void clock_advance(int64_t ms);
/* Runs the loop until nothing is ready, without moving time. */
void clock_settle(void);
/* Pending virtual timers. */
int clock_virtual_pending(void);
/* Drops every virtual timer (the runtime that owned them is gone). */
void clock_virtual_reset(void);

#endif
