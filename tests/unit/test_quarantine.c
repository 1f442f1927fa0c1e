/* test_quarantine.c — unit tests for quarantine.c: an entry the watchdog appends is found again after
 * a load whatever bytes its key holds (not UTF-8, longer than the watchdog keeps, a newline, quotes),
 * and the file stays one JSON line per entry. */
#include "quarantine.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *HASH = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static char *tmp_path(void)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/herald-quarantine-%d", (int)getpid());
    unlink(path);
    return path;
}

/* What the watchdog records of a key: it keeps QUARANTINE_KEY_MAX - 1 bytes of the culprit. */
static void watchdog_append(const char *path, const char *kind, const char *key)
{
    char kept[QUARANTINE_KEY_MAX];
    snprintf(kept, sizeof kept, "%s", key);
    CHECK_INT(quarantine_append(path, HASH, kind, kept, 1234, 5000, "/srv/bot\xff.lua"), 0);
}

static void test_keys_that_are_not_utf8_are_recorded_and_found(void)
{
    const char *path = tmp_path();
    const char *keys[] = {"bad\xffid", "cut \xe2\x82", "lone surrogate \xed\xa0\x80", "\xc0\xaf"};
    for (int i = 0; i < 4; i++)
        watchdog_append(path, "schedule", keys[i]);
    CHECK_INT(quarantine_load(path), 4);
    for (int i = 0; i < 4; i++)
        CHECK_INT(quarantine_since(HASH, "schedule", keys[i]), 1234);
    CHECK_INT(quarantine_since(HASH, "schedule", "bad id"), 0);
    CHECK_INT(quarantine_since(HASH, "timer", "bad\xffid"), 0);
    quarantine_clear();
    unlink(path);
}

static void test_a_key_longer_than_the_watchdog_keeps_is_found(void)
{
    const char *path = tmp_path();
    char key[1000];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = 0;
    memcpy(key + QUARANTINE_KEY_MAX - 3, "\xe2\x82\xac", 3);   /* a character across the cut */
    watchdog_append(path, "load", key);
    CHECK_INT(quarantine_load(path), 1);
    CHECK_INT(quarantine_since(HASH, "load", key), 1234);
    quarantine_clear();
    unlink(path);
}

static void test_the_file_stays_one_json_line_per_entry(void)
{
    const char *path = tmp_path();
    watchdog_append(path, "activity", "conv\n{\"kind\":\"load\"} \"quoted\"");
    watchdog_append(path, "activity", "second");
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    int lines = 0, c;
    while (f && (c = fgetc(f)) != EOF)
        lines += c == '\n';
    if (f)
        fclose(f);
    CHECK_INT(lines, 2);
    CHECK_INT(quarantine_load(path), 2);
    CHECK_INT(quarantine_since(HASH, "activity", "conv\n{\"kind\":\"load\"} \"quoted\""), 1234);
    CHECK_INT(quarantine_since(HASH, "load", "conv"), 0);
    quarantine_clear();
    unlink(path);
}

UNIT_MAIN("quarantine",
          CASE(test_keys_that_are_not_utf8_are_recorded_and_found),
          CASE(test_a_key_longer_than_the_watchdog_keeps_is_found),
          CASE(test_the_file_stays_one_json_line_per_entry))
