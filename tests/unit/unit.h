/* unit.h — the smallest test harness that reports like the rest of `make test`.
 * A test file defines TESTS(...) cases with UNIT_TEST; main runs them and prints "N passed, N failed". */
#ifndef HERALD_UNIT_H
#define HERALD_UNIT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int unit_failed_checks;

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "    %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    unit_failed_checks++; } } while (0)
#define CHECK_STR(a, b) do { const char *a_ = (a), *b_ = (b); \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) { \
    fprintf(stderr, "    %s:%d: CHECK_STR failed: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, \
            #a, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); unit_failed_checks++; } } while (0)
#define CHECK_INT(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); if (a_ != b_) { \
    fprintf(stderr, "    %s:%d: CHECK_INT failed: %s == %lld, expected %lld\n", __FILE__, __LINE__, \
            #a, a_, b_); unit_failed_checks++; } } while (0)

/* ms scaled by HERALD_TEST_TIME_FACTOR (default 1), the tests' one allowance for slow machines: for
 * how long a test waits for an outcome, never for which of two timers wins. */
static inline int unit_tf_ms(int ms)
{
    const char *f = getenv("HERALD_TEST_TIME_FACTOR");
    double x = f && *f ? atof(f) : 1.0;
    return (int)(ms * (x > 0 ? x : 1.0));
}

typedef struct unit_case { const char *name; void (*fn)(void); } unit_case;

static inline int unit_run(const char *suite, const unit_case *cases, int n)
{
    int passed = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        int before = unit_failed_checks;
        cases[i].fn();
        if (unit_failed_checks == before) { passed++; printf("ok   %s.%s\n", suite, cases[i].name); }
        else { failed++; printf("FAIL %s.%s\n", suite, cases[i].name); }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#define UNIT_MAIN(suite, ...) int main(void) { \
    static const unit_case cases_[] = { __VA_ARGS__ }; \
    return unit_run(suite, cases_, (int)(sizeof cases_ / sizeof cases_[0])); }
#define CASE(fn) { #fn, fn }

#endif
