/* test_config.c — the table of numeric settings: every row's default, both ends of its range, and
 * zero, negative, huge and malformed values refused at start with the setting and range named. */
#include "config.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *argv_check[] = {"herald", "check", "--dev", "/nonexistent/bot.lua", NULL};

/* config_load with only name=value set among the table's variables; returns its result, *err
 * kept for the caller (free it), *value the row's stored value. */
static int load_with(const config_limit *l, const char *value, long *stored, char **err)
{
    if (value)
        setenv(l->name, value, 1);
    config cfg;
    *err = NULL;
    int rc = config_load(&cfg, 4, argv_check, err);
    if (rc == 0)
        *stored = config_limit_value(&cfg, l);
    config_free(&cfg);
    unsetenv(l->name);
    return rc;
}

static void clear_env(void)
{
    size_t n;
    const config_limit *t = config_limits(&n);
    for (size_t i = 0; i < n; i++)
        unsetenv(t[i].name);
}

static void test_table_is_sane(void)
{
    size_t n;
    const config_limit *t = config_limits(&n);
    CHECK(n >= 20);
    for (size_t i = 0; i < n; i++) {
        CHECK(strncmp(t[i].name, "HERALD_", 7) == 0);
        CHECK(t[i].min >= 1);                 /* zero never means "off" for a limit */
        CHECK(t[i].min <= t[i].def && t[i].def <= t[i].max);
        CHECK(t[i].unit && *t[i].unit);
        for (size_t j = 0; j < i; j++) {
            CHECK(strcmp(t[i].name, t[j].name) != 0);
            CHECK(t[i].offset != t[j].offset);
        }
    }
}

static void test_defaults_and_both_ends_accepted(void)
{
    clear_env();
    size_t n;
    const config_limit *t = config_limits(&n);
    for (size_t i = 0; i < n; i++) {
        long v = -1;
        char *err;
        CHECK_INT(load_with(&t[i], NULL, &v, &err), 0);
        CHECK_INT(v, t[i].def);
        free(err);
        char buf[32];
        snprintf(buf, sizeof buf, "%ld", t[i].min);
        CHECK_INT(load_with(&t[i], buf, &v, &err), 0);
        CHECK_INT(v, t[i].min);
        free(err);
        snprintf(buf, sizeof buf, "%ld", t[i].max);
        CHECK_INT(load_with(&t[i], buf, &v, &err), 0);
        CHECK_INT(v, t[i].max);
        free(err);
        if (unit_failed_checks)
            fprintf(stderr, "    (row %s)\n", t[i].name);
    }
}

static void test_out_of_range_and_malformed_refused(void)
{
    clear_env();
    size_t n;
    const config_limit *t = config_limits(&n);
    for (size_t i = 0; i < n; i++) {
        char below[32], above[32], range[80];
        snprintf(below, sizeof below, "%ld", t[i].min - 1);
        snprintf(above, sizeof above, "%ld", t[i].max + 1);
        snprintf(range, sizeof range, "from %ld to %ld (%s)", t[i].min, t[i].max, t[i].unit);
        const char *bad[] = {"0", "-1", below, above, "-9223372036854775808", "9223372036854775807",
                             "99999999999999999999999", "1e3", "12abc", "0x10", "ten"};
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            long v = 0;
            char *err;
            int rc = load_with(&t[i], bad[k], &v, &err);
            CHECK_INT(rc, -1);
            CHECK(err && strstr(err, t[i].name));
            CHECK(err && strstr(err, range));
            if (rc != -1 || !err || !strstr(err, range))
                fprintf(stderr, "    (row %s, value '%s': %s)\n", t[i].name, bad[k], err ? err : "accepted");
            free(err);
        }
    }
}

static void test_floor_zero_message(void)
{
    clear_env();
    setenv("HERALD_JWKS_REFRESH_FLOOR_S", "0", 1);
    config cfg;
    char *err = NULL;
    CHECK_INT(config_load(&cfg, 4, argv_check, &err), -1);
    CHECK_STR(err, "HERALD_JWKS_REFRESH_FLOOR_S must be an integer from 1 to 86400 (s), got '0'");
    free(err);
    config_free(&cfg);
    unsetenv("HERALD_JWKS_REFRESH_FLOOR_S");
}

UNIT_MAIN("config", CASE(test_table_is_sane), CASE(test_defaults_and_both_ends_accepted),
          CASE(test_out_of_range_and_malformed_refused), CASE(test_floor_zero_message))
