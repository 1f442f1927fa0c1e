/* clock.c — real time by default; virtual time for tests: a heap of (due, sequence) timers that
 * clock_advance walks, activating each libevent event at its instant, then settling the loop, so
 * a test can pass a day in microseconds and still see timers, retries and schedules in order. */
#include "clock.h"
#include "heap.h"

#include <event2/event.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

/* A virtual timer: the heap's node for one libevent event (libevent's struct is not ours to embed
 * a node in), made when the event is first armed and freed when it leaves the heap. */
typedef struct vtimer {
    heap_node hn;                 /* deadline: virtual monotonic ms */
    struct event *ev;
    int64_t delay;
} vtimer;

static int virtual_mode;
static struct event_base *vbase;
static int64_t vmono, vwall_start, wall_shift;
static heap timers = HEAP_INIT;

int64_t clock_mono_ms(void)
{
    if (virtual_mode)
        return vmono;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_wall_ms(void)
{
    if (virtual_mode)
        return vwall_start + vmono;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000 + wall_shift;
}

void clock_shift_wall(int64_t delta_ms) { wall_shift += delta_ms; }
int clock_is_virtual(void) { return virtual_mode; }

static vtimer *of(heap_node *n) { return n ? heap_entry(n, vtimer, hn) : NULL; }

static vtimer *find(struct event *ev)
{
    for (int i = 0; i < timers.len; i++)   /* tests hold few timers: a scan is fine */
        if (of(timers.nodes[i])->ev == ev)
            return of(timers.nodes[i]);
    return NULL;
}

static void forget(struct event *ev)
{
    vtimer *t = find(ev);
    if (t) {
        heap_remove(&timers, &t->hn);
        free(t);
    }
}

static void drop_all(void)
{
    for (heap_node *n; (n = heap_pop(&timers));)
        free(of(n));
}

void clock_timer_add(struct event *ev, int64_t delay_ms)
{
    if (delay_ms < 0)
        delay_ms = 0;
    if (!virtual_mode) {
        struct timeval tv = {(long)(delay_ms / 1000), (long)(delay_ms % 1000) * 1000};
        event_add(ev, &tv);
        return;
    }
    vtimer *t = find(ev);
    if (!t) {
        if (!(t = malloc(sizeof *t)))
            return;
        heap_node_init(&t->hn);
        t->ev = ev;
    }
    t->delay = delay_ms;
    if (heap_set(&timers, &t->hn, vmono + delay_ms) < 0)
        free(t);                  /* it was not in the heap: a move cannot fail */
}

void clock_timer_del(struct event *ev)
{
    if (!virtual_mode) {
        event_del(ev);
        return;
    }
    forget(ev);
    event_del(ev);   /* it may be active already */
}

void clock_timer_free(struct event *ev)
{
    if (!ev)
        return;
    if (virtual_mode)
        forget(ev);
    event_free(ev);
}

int clock_timer_pending(struct event *ev)
{
    if (!virtual_mode)
        return event_pending(ev, EV_TIMEOUT, NULL);
    return find(ev) != NULL;
}

void clock_virtual(struct event_base *base, int64_t start_wall_ms)
{
    virtual_mode = 1;
    vbase = base;
    vmono = 1000000;              /* a nonzero origin: "0 means never" holds in the code */
    vwall_start = start_wall_ms - vmono;
    drop_all();
}

void clock_virtual_reset(void)
{
    drop_all();
}

int clock_virtual_pending(void) { return heap_len(&timers); }

/* Runs the loop until nothing is ready, firing timers due at this very instant (a zero-delay
 * answer of the fake connector) without moving time. */
static void drain(void)
{
    /* bounded: a task that wakes itself forever must not hang the test */
    for (int i = 0; i < 100000; i++) {
        event_base_loop(vbase, EVLOOP_NONBLOCK);
        if (event_base_get_num_events(vbase, EVENT_BASE_COUNT_ACTIVE) == 0)
            return;
    }
}

void clock_settle(void)
{
    drain();
    for (int guard = 0; guard < 100000 && heap_top(&timers) && heap_top(&timers)->deadline <= vmono;
         guard++) {
        vtimer *t = of(heap_top(&timers));
        struct event *ev = t->ev;
        if (event_get_events(ev) & EV_PERSIST) {
            heap_set(&timers, &t->hn, vmono + (t->delay > 0 ? t->delay : 1));   /* a move */
        } else {
            heap_remove(&timers, &t->hn);
            free(t);
        }
        event_active(ev, EV_TIMEOUT, 1);
        drain();
    }
}

void clock_advance(int64_t ms)
{
    int64_t target = vmono + (ms > 0 ? ms : 0);
    clock_settle();
    for (heap_node *top; (top = heap_top(&timers)) && top->deadline <= target;) {
        if (top->deadline > vmono)
            vmono = top->deadline;
        clock_settle();           /* fires everything due at this instant, in order */
    }
    vmono = target;
    clock_settle();
}
