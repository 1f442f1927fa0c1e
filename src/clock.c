/* clock.c — real time by default; virtual time for tests: a heap of (due, sequence) timers that
 * clock_advance walks, activating each libevent event at its instant, then settling the loop, so
 * a test can pass a day in microseconds and still see timers, retries and schedules in order. */
#include "clock.h"

#include <event2/event.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

typedef struct vtimer {
    struct event *ev;
    int64_t due, delay;
    uint64_t seq;
} vtimer;

static int virtual_mode;
static struct event_base *vbase;
static int64_t vmono, vwall_start, wall_shift;
static vtimer *heap;
static int heap_len, heap_cap;
static uint64_t seq;

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

static int earlier(const vtimer *a, const vtimer *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void up(int i)
{
    while (i > 0 && earlier(&heap[i], &heap[(i - 1) / 2])) {
        vtimer t = heap[i];
        heap[i] = heap[(i - 1) / 2];
        heap[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static void down(int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < heap_len && earlier(&heap[l], &heap[m])) m = l;
        if (r < heap_len && earlier(&heap[r], &heap[m])) m = r;
        if (m == i)
            return;
        vtimer t = heap[i];
        heap[i] = heap[m];
        heap[m] = t;
        i = m;
    }
}

static void remove_at(int i)
{
    heap_len--;
    if (i != heap_len) {
        heap[i] = heap[heap_len];
        down(i);
        up(i);
    }
}

static int find(struct event *ev)
{
    for (int i = 0; i < heap_len; i++)   /* tests hold few timers: a scan is fine */
        if (heap[i].ev == ev)
            return i;
    return -1;
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
    int i = find(ev);
    if (i >= 0)
        remove_at(i);
    if (heap_len == heap_cap) {
        int cap = heap_cap ? heap_cap * 2 : 64;
        vtimer *n = realloc(heap, (size_t)cap * sizeof *n);
        if (!n)
            return;
        heap = n;
        heap_cap = cap;
    }
    heap[heap_len] = (vtimer){ev, vmono + delay_ms, delay_ms, seq++};
    up(heap_len++);
}

void clock_timer_del(struct event *ev)
{
    if (!virtual_mode) {
        event_del(ev);
        return;
    }
    int i = find(ev);
    if (i >= 0)
        remove_at(i);
    event_del(ev);   /* it may be active already */
}

void clock_timer_free(struct event *ev)
{
    if (!ev)
        return;
    if (virtual_mode) {
        int i = find(ev);
        if (i >= 0)
            remove_at(i);
    }
    event_free(ev);
}

int clock_timer_pending(struct event *ev)
{
    if (!virtual_mode)
        return event_pending(ev, EV_TIMEOUT, NULL);
    return find(ev) >= 0;
}

void clock_virtual(struct event_base *base, int64_t start_wall_ms)
{
    virtual_mode = 1;
    vbase = base;
    vmono = 1000000;              /* a nonzero origin: "0 means never" holds in the code */
    vwall_start = start_wall_ms - vmono;
    heap_len = 0;
}

void clock_virtual_reset(void)
{
    heap_len = 0;
}

int clock_virtual_pending(void) { return heap_len; }

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
    for (int guard = 0; guard < 100000 && heap_len && heap[0].due <= vmono; guard++) {
        vtimer t = heap[0];
        remove_at(0);
        if (event_get_events(t.ev) & EV_PERSIST)
            clock_timer_add(t.ev, t.delay > 0 ? t.delay : 1);
        event_active(t.ev, EV_TIMEOUT, 1);
        drain();
    }
}

void clock_advance(int64_t ms)
{
    int64_t target = vmono + (ms > 0 ? ms : 0);
    clock_settle();
    while (heap_len && heap[0].due <= target) {
        if (heap[0].due > vmono)
            vmono = heap[0].due;
        clock_settle();           /* fires everything due at this instant, in order */
    }
    vmono = target;
    clock_settle();
}
