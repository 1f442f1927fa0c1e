/* test_governor.c — src/governor.c: sliding-window math at exact boundaries, Teams' per-conversation
 * windows (7/1 s, 8/2 s, 60/30 s, 1800/1 h) driven by a greedy sender and checked by brute force,
 * ring growth and eviction, gov_next never answering a time before now; and the pacing the outbox
 * asks for, on the virtual clock: margins, the 429 cut and its recovery, tenant wait lists (first
 * come first served, no overtaking), attempt slots, and when a conversation may be dropped. */
#include "governor.h"
#include "clock.h"
#include "unit.h"

#include <event2/event.h>

#include <stdint.h>
#include <stdlib.h>

static const gov_window *W = gov_conversation_windows;

/* Brute force over a plain array: ops with t > at - ms, t <= at. */
static int count_in(const int64_t *ts, int n, int64_t at, int64_t ms)
{
    int c = 0;
    for (int i = 0; i < n; i++)
        if (ts[i] > at - ms && ts[i] <= at)
            c++;
    return c;
}

static void test_published_windows(void)
{
    CHECK_INT(W[0].ms, 1000); CHECK_INT(W[0].max, 7);
    CHECK_INT(W[1].ms, 2000); CHECK_INT(W[1].max, 8);
    CHECK_INT(W[2].ms, 30000); CHECK_INT(W[2].max, 60);
    CHECK_INT(W[3].ms, 3600000); CHECK_INT(W[3].max, 1800);
}

static void test_empty_and_under_limit(void)
{
    gov_limiter l = {0};
    CHECK_INT(gov_next(&l, W, 4, 0), 0);
    CHECK_INT(gov_next(&l, W, 4, 123456), 123456);
    CHECK_INT(gov_count_since(&l, 0), 0);
    for (int i = 0; i < 6; i++)
        CHECK_INT(gov_record(&l, 1000, 1800), 0);
    CHECK_INT(gov_next(&l, W, 4, 1000), 1000);         /* 6 < 7: the 7th goes now */
    gov_limiter_free(&l);
    CHECK(l.t == NULL && l.len == 0 && l.cap == 0);
}

static void test_one_second_boundary(void)
{
    gov_limiter l = {0};
    gov_window one = {1000, 7};
    for (int i = 0; i < 7; i++)
        gov_record(&l, 5000, 1800);
    /* the window is (now - 1000, now]: the op at 5000 counts until now = 6000 exclusive */
    CHECK_INT(gov_next(&l, &one, 1, 5000), 6000);
    CHECK_INT(gov_next(&l, &one, 1, 5999), 6000);
    CHECK_INT(gov_next(&l, &one, 1, 6000), 6000);
    CHECK_INT(gov_next(&l, &one, 1, 7000), 7000);
    CHECK_INT(gov_count_since(&l, 4999), 7);
    CHECK_INT(gov_count_since(&l, 5000), 0);           /* exact boundary: t > since */
    gov_limiter_free(&l);
}

static void test_seven_then_eight_per_two_seconds(void)
{
    gov_limiter l = {0};
    for (int i = 0; i < 7; i++)
        gov_record(&l, 0, 1800);
    CHECK_INT(gov_next(&l, W, 4, 0), 1000);            /* 7/1 s full */
    gov_record(&l, 1000, 1800);                        /* 8th */
    /* 7/1 s is free again at 1000, but 8/2 s holds 8 in (t-2000, t] until the ops at 0 leave */
    CHECK_INT(gov_next(&l, W, 4, 1000), 2000);
    CHECK_INT(gov_next(&l, W, 4, 1500), 2000);
    CHECK_INT(gov_next(&l, W, 4, 1999), 2000);
    CHECK_INT(gov_next(&l, W, 4, 2000), 2000);
    /* at 2000 the 8/2 s window is (0, 2000]: the 8th (at 1000) plus up to 7 more */
    for (int i = 0; i < 7; i++) {
        CHECK_INT(gov_next(&l, W, 4, 2000), 2000);
        gov_record(&l, 2000, 1800);
    }
    CHECK_INT(gov_next(&l, W, 4, 2000), 3000);         /* 7/1 s full again; 8/2 s: 1000 leaves at 3000 */
    gov_limiter_free(&l);
}

/* A greedy sender (each op at the earliest time gov_next allows) under all four windows: every
 * window holds at every op (brute force), and each op could not have gone 1 ms earlier. */
static void test_greedy_sender_all_windows(void)
{
    enum { N = 1900 };
    int64_t *ts = calloc(N, sizeof *ts);
    gov_limiter l = {0};
    int64_t t = 0;
    int violations = 0, not_earliest = 0;
    for (int k = 0; k < N; k++) {
        int64_t prev = t;
        t = gov_next(&l, W, 4, t);
        CHECK(t >= prev);
        ts[k] = t;
        for (int w = 0; w < 4; w++)
            if (count_in(ts, k + 1, t, W[w].ms) > W[w].max)
                violations++;
        if (t > prev) {                               /* it waited: at t - 1 some window was full */
            int full = 0;
            for (int w = 0; w < 4; w++)
                if (count_in(ts, k, t - 1, W[w].ms) >= W[w].max)
                    full = 1;
            if (!full)
                not_earliest++;
        }
        CHECK_INT(gov_record(&l, t, 1800), 0);
    }
    CHECK_INT(violations, 0);
    CHECK_INT(not_earliest, 0);
    /* the known shape: 7 at 0, the 8th at 1 s, the 9th at 2 s, the 61st at 30 s */
    CHECK_INT(ts[6], 0);
    CHECK_INT(ts[7], 1000);
    CHECK_INT(ts[8], 2000);
    CHECK_INT(ts[14], 2000);
    CHECK_INT(ts[15], 3000);
    CHECK_INT(ts[59], 14000);
    CHECK_INT(ts[60], 30000);
    /* hour window: the 1801st op waits for the first to be an hour old */
    CHECK(ts[1799] < 3600000);
    CHECK_INT(ts[1800], 3600000);
    /* the ring kept only what can matter */
    CHECK_INT(l.len, 1800);
    CHECK(l.cap <= 1800);
    gov_limiter_free(&l);
    free(ts);
}

static void test_sixty_per_thirty_seconds(void)
{
    gov_limiter l = {0};
    gov_window thirty = {30000, 60};
    for (int i = 0; i < 60; i++)
        gov_record(&l, 100 + i * 10, 1800);           /* 100 .. 690 */
    CHECK_INT(gov_next(&l, &thirty, 1, 700), 30100);
    CHECK_INT(gov_next(&l, &thirty, 1, 30099), 30100);
    CHECK_INT(gov_next(&l, &thirty, 1, 30100), 30100);
    gov_record(&l, 30100, 1800);
    CHECK_INT(gov_next(&l, &thirty, 1, 30100), 30110); /* the second oldest leaves next */
    gov_limiter_free(&l);
}

static void test_hour_window(void)
{
    gov_limiter l = {0};
    gov_window hour = {3600000, 1800};
    for (int i = 0; i < 1800; i++)
        gov_record(&l, i, 1800);
    CHECK_INT(gov_next(&l, &hour, 1, 1800), 3600000);
    CHECK_INT(gov_next(&l, &hour, 1, 3599999), 3600000);
    gov_record(&l, 3600000, 1800);                     /* evicts the op at 0 */
    CHECK_INT(l.len, 1800);
    CHECK_INT(gov_next(&l, &hour, 1, 3600000), 3600001);
    CHECK_INT(gov_count_since(&l, 0), 1800);         /* (0, 3600000]: 1..1799 and the new one */
    gov_limiter_free(&l);
}

static void test_ring_growth_and_eviction(void)
{
    gov_limiter l = {0};
    CHECK_INT(gov_record(&l, 1, 5), 0);
    CHECK_INT(l.cap, 4);
    for (int i = 2; i <= 5; i++)
        gov_record(&l, i, 5);
    CHECK_INT(l.cap, 5);                               /* grew, capped at keep */
    CHECK_INT(l.len, 5);
    for (int i = 6; i <= 13; i++)
        gov_record(&l, i, 5);                          /* wraps: the oldest go */
    CHECK_INT(l.cap, 5);
    CHECK_INT(l.len, 5);
    CHECK_INT(gov_count_since(&l, 0), 5);
    CHECK_INT(gov_count_since(&l, 9), 4);              /* 10..13 */
    CHECK_INT(gov_count_since(&l, 13), 0);
    gov_window w = {100, 5};
    CHECK_INT(gov_next(&l, &w, 1, 13), 109);           /* oldest kept (9) + 100 */
    gov_limiter_free(&l);

    /* growth by doubling up to keep, order kept across a wrapped ring */
    gov_limiter m = {0};
    for (int i = 0; i < 3; i++)
        gov_record(&m, i, 1000);
    for (int i = 3; i < 700; i++) {
        gov_record(&m, i, 1000);
        CHECK(m.cap >= m.len && m.cap <= 1000);
    }
    CHECK_INT(m.len, 700);
    CHECK_INT(gov_count_since(&m, 349), 350);
    for (int i = 700; i < 2500; i++)
        gov_record(&m, i, 1000);
    CHECK_INT(m.len, 1000);
    CHECK_INT(m.cap, 1000);
    CHECK_INT(gov_count_since(&m, 1499), 1000);
    CHECK_INT(gov_count_since(&m, 2000), 499);
    gov_window tenant = {1000, 50};
    CHECK_INT(gov_next(&m, &tenant, 1, 2499), 2450 + 1000);
    gov_limiter_free(&m);
}

static void test_never_before_now(void)
{
    srand(7);
    gov_limiter l = {0};
    int64_t t = 0;
    int bad = 0;
    for (int k = 0; k < 20000; k++) {
        t += rand() % 300;
        int64_t now = t + (rand() % 3 == 0 ? rand() % 5000 : 0);
        int64_t n = gov_next(&l, W, 4, now);
        if (n < now)
            bad++;
        /* ops long gone never delay */
        if (gov_next(&l, W, 4, t + 3600000 + 1) != t + 3600000 + 1)
            bad++;
        if (rand() % 2)
            gov_record(&l, t, 1800);
    }
    CHECK_INT(bad, 0);
    /* many old ops beyond max but all outside the window: now */
    gov_limiter m = {0};
    for (int i = 0; i < 50; i++)
        gov_record(&m, i, 1800);
    gov_window one = {1000, 7};
    CHECK_INT(gov_next(&m, &one, 1, 10000), 10000);
    CHECK_INT(gov_next(&m, &one, 1, 1048), 1048);      /* (48, 1048]: only 49 */
    CHECK_INT(gov_next(&m, &one, 1, 1042), 1043);      /* (42, 1042]: 43..49 = 7 → 43 + 1000 */
    gov_limiter_free(&m);
    gov_limiter_free(&l);
}

/* ---- pacing (governor_new and the gov_conv interface) ------------------------------------- */

static struct event_base *vbase;

/* The virtual clock: tenant timers fire only when a test advances time. */
static void vclock(void)
{
    if (!vbase) {
        vbase = event_base_new();
        clock_virtual(vbase, 1767225600000);
    }
}

/* What the governor called back, in order. */
static gov_conv *calls[16];
static int ncalls;
static governor *rec_g;
static int rec_send;              /* the go callback records a send, as the outbox's attempt does */

static void rec(gov_conv *c, void *ud)
{
    CHECK(ud == &ncalls);
    if (ncalls < 16)
        calls[ncalls] = c;
    ncalls++;
    if (rec_send)
        gov_note_sent(rec_g, c, clock_mono_ms());
}

static governor *gnew(int enabled, int rps, int64_t slots)
{
    vclock();
    ncalls = 0;
    rec_send = 0;
    gov_config cfg = {enabled, rps, slots};
    rec_g = governor_new(vbase, &cfg, rec, rec, &ncalls);
    CHECK(rec_g != NULL);
    return rec_g;
}

static void test_conversation_ready_with_margin(void)
{
    governor *g = gnew(1, 50, 256);
    gov_conv c = {0};
    CHECK_INT(gov_conv_init(g, &c, "t1"), 0);
    int64_t t0 = clock_mono_ms();
    CHECK_INT(gov_conv_ready(g, &c, t0), t0);
    for (int i = 0; i < 7; i++)
        gov_note_sent(g, &c, t0);
    /* 7 per second, paced with GOV_PACING_MARGIN_MS of slack */
    CHECK_INT(gov_conv_ready(g, &c, t0), t0 + 1000 + GOV_PACING_MARGIN_MS);
    CHECK_INT(gov_conv_ready(g, &c, t0 + 1049), t0 + 1050);
    CHECK_INT(gov_conv_ready(g, &c, t0 + 1050), t0 + 1050);
    /* the tenant counted them too */
    CHECK_INT(gov_count_since(&c.tenant->lim, t0 - 1), 7);
    gov_conv_free(&c);
    governor_free(g);

    /* pacing off: nothing is recorded and everything is ready now; the tenant never holds */
    g = gnew(0, 50, 256);
    gov_conv d = {0};
    CHECK_INT(gov_conv_init(g, &d, NULL), 0);
    CHECK_STR(d.tenant->id, "");
    for (int i = 0; i < 100; i++)
        gov_note_sent(g, &d, t0);
    CHECK_INT(d.lim.len, 0);
    CHECK_INT(gov_conv_ready(g, &d, t0), t0);
    CHECK_INT(gov_tenant_go(g, &d, t0), 1);
    gov_conv_free(&d);
    governor_free(g);
}

static void test_429_cut_and_recovery(void)
{
    governor *g = gnew(1, 50, 256);
    gov_conv c = {0}, c2 = {0};
    CHECK_INT(gov_conv_init(g, &c, "t1"), 0);
    CHECK_INT(gov_conv_init(g, &c2, "t1"), 0);
    CHECK(c.tenant == c2.tenant);
    CHECK(gov_tenant_find(g, "t1") == c.tenant);
    CHECK(gov_tenant_find(g, "t2") == NULL);
    gov_tenant *t = c.tenant;
    int64_t t0 = clock_mono_ms();
    CHECK(t->factor == 1.0);
    CHECK(gov_note_429(g, &c, t0) == 0.5);
    /* one throttling moment: the other 429s of the same second cut nothing more, from any
     * conversation of the tenant */
    CHECK(gov_note_429(g, &c2, t0 + 10) == 0.5);
    CHECK(gov_note_429(g, &c, t0 + 999) == 0.5);
    CHECK(gov_note_429(g, &c, t0 + 1000) == 0.25);
    CHECK(gov_note_429(g, &c, t0 + 2000) == 0.125);
    CHECK(gov_note_429(g, &c, t0 + 3000) == 0.1);   /* floor: 10 % */
    CHECK(gov_note_429(g, &c, t0 + 4000) == 0.1);
    int64_t cut = t0 + 4000;
    /* at 10 % of 50/s the tenant's window holds 5 */
    for (int i = 0; i < 5; i++)
        gov_note_sent(g, &c, cut);
    CHECK_INT(gov_tenant_next(g, t, cut), cut + 1000 + GOV_PACING_MARGIN_MS);
    /* recovery: a quarter more after more than GOV_RECOVERY_MS without a 429 */
    CHECK_INT(gov_tenant_next(g, t, cut + GOV_RECOVERY_MS), cut + GOV_RECOVERY_MS);
    CHECK(t->factor == 0.1);
    gov_tenant_next(g, t, cut + GOV_RECOVERY_MS + 1);
    CHECK(t->factor > 0.1249 && t->factor < 0.1251);
    int64_t at = cut + GOV_RECOVERY_MS + 1;
    for (int i = 0; i < 20; i++) {
        at += GOV_RECOVERY_MS + 1;
        gov_tenant_next(g, t, at);
    }
    CHECK(t->factor == 1.0);                        /* capped at the full rate */
    /* at the full rate a new 429 cuts at once, however recent the last step */
    CHECK(gov_note_429(g, &c, at + 1) == 0.5);
    gov_conv_free(&c);
    gov_conv_free(&c2);
    governor_free(g);
}

static void test_tenant_wait_list_fifo(void)
{
    governor *g = gnew(1, 2, 256);
    gov_conv a = {0}, b = {0}, c = {0}, other = {0};
    CHECK_INT(gov_conv_init(g, &a, "t1"), 0);
    CHECK_INT(gov_conv_init(g, &b, "t1"), 0);
    CHECK_INT(gov_conv_init(g, &c, "t1"), 0);
    CHECK_INT(gov_conv_init(g, &other, "t2"), 0);
    int64_t t0 = clock_mono_ms();
    CHECK_INT(gov_tenant_go(g, &a, t0), 1);
    gov_note_sent(g, &a, t0);
    CHECK_INT(gov_tenant_go(g, &b, t0), 1);
    gov_note_sent(g, &b, t0);
    /* the tenant's 2/s are spent: a, b, c wait in the order they came */
    CHECK_INT(gov_tenant_go(g, &a, t0), 0);
    CHECK_INT(gov_tenant_go(g, &b, t0), 0);
    CHECK_INT(gov_tenant_go(g, &c, t0), 0);
    CHECK(gov_conv_waiting(&a) && gov_conv_waiting(&b) && gov_conv_waiting(&c));
    CHECK(!gov_conv_idle(&a, t0));
    /* another tenant is not held by this one */
    CHECK_INT(gov_tenant_go(g, &other, t0), 1);
    /* nobody overtakes the list, even at a time the window alone would allow */
    gov_conv late = {0};
    CHECK_INT(gov_conv_init(g, &late, "t1"), 0);
    CHECK_INT(gov_tenant_next(g, a.tenant, t0 + 5000), t0 + 5000);
    CHECK_INT(gov_tenant_go(g, &late, t0 + 5000), 0);
    CHECK_INT(ncalls, 0);
    rec_send = 1;
    clock_advance(1000 + GOV_PACING_MARGIN_MS - 1);
    CHECK_INT(ncalls, 0);
    clock_advance(1);
    CHECK_INT(ncalls, 2);                           /* two per second */
    CHECK(calls[0] == &a && calls[1] == &b);
    CHECK(!gov_conv_waiting(&a) && gov_conv_waiting(&c));
    clock_advance(1000 + GOV_PACING_MARGIN_MS);
    CHECK_INT(ncalls, 4);
    CHECK(calls[2] == &c && calls[3] == &late);
    CHECK(!gov_conv_waiting(&c) && !gov_conv_waiting(&late));
    clock_advance(5000);
    CHECK_INT(ncalls, 4);
    CHECK_INT(clock_virtual_pending(), 0);
    gov_conv *all[] = {&a, &b, &c, &other, &late};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        gov_conv_free(all[i]);
    governor_free(g);
}

static void test_attempt_slots(void)
{
    /* slots bound attempts whether or not pacing is on */
    for (int enabled = 0; enabled <= 1; enabled++) {
        governor *g = gnew(enabled, 50, 2);
        gov_conv a = {0}, b = {0}, c = {0}, d = {0};
        gov_conv *all[] = {&a, &b, &c, &d};
        for (int i = 0; i < 4; i++)
            CHECK_INT(gov_conv_init(g, all[i], "t1"), 0);
        CHECK_INT(gov_slot_wait(g, &a), 0);
        gov_slot_taken(g);
        CHECK_INT(gov_slot_wait(g, &b), 0);
        gov_slot_taken(g);
        CHECK_INT(gov_in_flight(g), 2);
        CHECK_INT(gov_slot_wait(g, &c), 1);
        CHECK_INT(gov_slot_wait(g, &d), 1);
        CHECK(gov_conv_waiting(&c) && gov_conv_waiting(&d));
        CHECK(!gov_conv_idle(&c, clock_mono_ms()));
        /* each freed slot goes to the longest waiter, one per slot */
        gov_slot_release(g);
        CHECK_INT(gov_in_flight(g), 1);
        CHECK_INT(ncalls, 1);
        CHECK(calls[0] == &c);
        CHECK(!gov_conv_waiting(&c) && gov_conv_waiting(&d));
        gov_slot_release(g);
        CHECK_INT(gov_in_flight(g), 0);
        CHECK_INT(ncalls, 2);
        CHECK(calls[1] == &d);
        gov_slot_release(g);            /* nobody waits: nothing is called */
        CHECK_INT(ncalls, 2);
        for (int i = 0; i < 4; i++)
            gov_conv_free(all[i]);
        governor_free(g);
    }
}

static void test_conversation_idle(void)
{
    governor *g = gnew(1, 50, 256);
    gov_conv c = {0};
    CHECK_INT(gov_conv_init(g, &c, "t1"), 0);
    int64_t t0 = clock_mono_ms();
    CHECK(gov_conv_idle(&c, t0));
    gov_note_sent(g, &c, t0);
    /* its send counts against the hour window until the hour has passed */
    CHECK(!gov_conv_idle(&c, t0 + 3600000 - 1));
    CHECK(gov_conv_idle(&c, t0 + 3600000));
    gov_conv_free(&c);
    governor_free(g);
}

UNIT_MAIN("governor",
          CASE(test_published_windows),
          CASE(test_empty_and_under_limit),
          CASE(test_one_second_boundary),
          CASE(test_seven_then_eight_per_two_seconds),
          CASE(test_greedy_sender_all_windows),
          CASE(test_sixty_per_thirty_seconds),
          CASE(test_hour_window),
          CASE(test_ring_growth_and_eviction),
          CASE(test_never_before_now),
          CASE(test_conversation_ready_with_margin),
          CASE(test_429_cut_and_recovery),
          CASE(test_tenant_wait_list_fifo),
          CASE(test_attempt_slots),
          CASE(test_conversation_idle))
