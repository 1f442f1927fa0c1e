/* test_err.c — src/err.c: the message is formatted onto the heap, and a caller that passes no
 * out-parameter gets nothing (and nothing leaks: LeakSanitizer). */
#include "err.h"
#include "unit.h"

static void test_errf_formats_a_heap_string(void)
{
    char *s = errf("store: %s (%d)", "disk full", 13);
    CHECK_STR(s, "store: disk full (13)");
    free(s);
}

static void test_set_err_fills_the_out_parameter(void)
{
    char *err = NULL;
    set_err(&err, "bad %s", "schedule");
    CHECK_STR(err, "bad schedule");
    free(err);
    set_err(NULL, "nobody %s", "asked");             /* nothing to do, nothing to free */
}

UNIT_MAIN("err",
          CASE(test_errf_formats_a_heap_string),
          CASE(test_set_err_fills_the_out_parameter))
