/* test_config_table.c — the table of every setting: its rows are whole, `herald check` reports
 * each once with its source and never a secret, and misspelt HERALD_* variables are named. */
#include "config.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *argv_check[] = {"herald", "check", "--dev", "/nonexistent/bot.lua", NULL};

/* Occurrences of needle in hay as a whole variable name (not followed by a name character). */
static int count_name(const char *hay, const char *needle)
{
    int n = 0;
    size_t len = strlen(needle);
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) {
        char next = p[len];
        int before = p > hay && (p[-1] == '_' || (p[-1] >= 'A' && p[-1] <= 'Z'));
        if (!before && !(next == '_' || (next >= 'A' && next <= 'Z') || (next >= '0' && next <= '9')))
            n++;
    }
    return n;
}

/* The name as README and herald check write it: a prefix row gets "<NAME>". */
static void shown_name(const config_setting *s, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%s", s->name, (s->flags & CONFIG_PREFIX) ? "<NAME>" : "");
}

static void clear_env(void)
{
    size_t n;
    const config_setting *t = config_settings(&n);
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            const char *name = k == 0 ? t[i].name : t[i].alias[k - 1];
            if (name)
                unsetenv(name);
        }
    unsetenv("HERALD_NOTIFY_SECRET_DEPLOY_PROD");
}

static void test_rows_are_whole(void)
{
    size_t n, nl;
    const config_setting *t = config_settings(&n);
    const config_limit *l = config_limits(&nl);
    CHECK(n <= CONFIG_SETTINGS_MAX);
    size_t numeric = 0;
    for (size_t i = 0; i < n; i++) {
        const config_setting *s = &t[i];
        int before = unit_failed_checks;
        CHECK(s->label && *s->label && s->help && *s->help);
        if (s->type == CONFIG_T_NUMBER) {
            numeric++;
            CHECK(s >= l && s < l + nl);      /* config_limits() hands out every numeric row */
        }
        if (s->type == CONFIG_T_BOOL)
            CHECK(s->dflt && (strcmp(s->dflt, "on") == 0 || strcmp(s->dflt, "off") == 0) && s->words);
        if (s->type == CONFIG_T_ENUM)
            CHECK(s->words && *s->words);
        if (s->flags & CONFIG_SECRET)         /* a secret is stored as it came, and never echoed */
            CHECK(s->type == CONFIG_T_STRING || s->type == CONFIG_T_EXTERNAL);
        if (s->flag)
            CHECK(strncmp(s->flag, "--", 2) == 0 && (s->type == CONFIG_T_BOOL) == !s->metavar);
        /* every name, alias included, belongs to one row only */
        const char *mine[3] = {s->name, s->alias[0], s->alias[1]};
        for (size_t j = 0; j < n; j++) {
            const char *theirs[3] = {t[j].name, t[j].alias[0], t[j].alias[1]};
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++)
                    if (mine[a] && theirs[b] && (i != j || a != b))
                        CHECK(strcmp(mine[a], theirs[b]) != 0);
        }
        if (unit_failed_checks != before)
            fprintf(stderr, "    (row %s)\n", s->name);
    }
    CHECK_INT(numeric, nl);
    CHECK(nl >= 20);
}

static void test_aliases_in_order_and_flags_win(void)
{
    clear_env();
    setenv("MicrosoftAppId", "sdk-id", 1);
    setenv("MicrosoftAppPassword", "sdk-secret", 1);
    setenv("HERALD_APP_TYPE", "SingleTenant", 1);
    setenv("TENANT_ID", "t1", 1);
    setenv("HERALD_LISTEN", "127.0.0.2:4000", 1);
    setenv("HERALD_RELOAD", "off", 1);
    config cfg;
    char *err = NULL;
    char *argv[] = {"herald", "check", "--listen", "127.0.0.3:5000", "/nonexistent/bot.lua", NULL};
    CHECK_INT(config_load(&cfg, 5, argv, &err), 0);
    CHECK_STR(cfg.app_id, "sdk-id");
    CHECK_STR(cfg.app_password, "sdk-secret");
    CHECK_STR(cfg.app_type, "SingleTenant");
    CHECK_STR(cfg.listen_host, "127.0.0.3");
    CHECK_INT(cfg.listen_port, 5000);
    CHECK_INT(cfg.reload_watch, 0);
    CHECK_INT(cfg.dev, 0);
    config_free(&cfg);
    /* the Teams SDK name comes before the Bot Framework one, and MicrosoftAppType before ours */
    setenv("CLIENT_ID", "teams-id", 1);
    setenv("MicrosoftAppType", "MultiTenant", 1);
    CHECK_INT(config_load(&cfg, 4, argv_check, &err), 0);
    CHECK_STR(cfg.app_id, "teams-id");
    CHECK_STR(cfg.app_type, "MultiTenant");
    CHECK_STR(cfg.listen_host, "127.0.0.2");
    CHECK_INT(cfg.dev, 1);
    config_free(&cfg);
    free(err);
    clear_env();
}

static char *report_of(int argc, char **argv)
{
    config cfg;
    char *err = NULL, *text = NULL;
    size_t len = 0;
    CHECK_INT(config_load(&cfg, argc, argv, &err), 0);
    free(err);
    FILE *f = open_memstream(&text, &len);
    config_report(f, &cfg);
    fclose(f);
    config_free(&cfg);
    return text;
}

static void test_report_names_every_setting_once(void)
{
    clear_env();
    setenv("MicrosoftAppPassword", "pw-zq1", 1);
    setenv("HERALD_ADMIN_TOKEN", "tok-zq2", 1);
    setenv("HERALD_NOTIFY_SECRET", "ns-zq3", 1);
    setenv("HERALD_NOTIFY_SECRET_DEPLOY_PROD", "np-zq4", 1);
    setenv("HERALD_TASK_SLICE_MS", "250", 1);
    char *argv[] = {"herald", "check", "--dev", "--listen", "127.0.0.1:0", "/nonexistent/bot.lua", NULL};
    char *out = report_of(6, argv);
    CHECK(out != NULL);
    if (!out)
        return;
    size_t n;
    const config_setting *t = config_settings(&n);
    for (size_t i = 0; i < n; i++) {
        char name[64];
        int before = unit_failed_checks;
        shown_name(&t[i], name, sizeof name);
        if (t[i].flags & CONFIG_PREFIX)
            CHECK(strstr(out, name) && strstr(strstr(out, name) + 1, name) == NULL);
        else
            CHECK_INT(count_name(out, name), 1);
        if (unit_failed_checks != before)
            fprintf(stderr, "    (row %s)\n", name);
    }
    if (unit_failed_checks)
        fprintf(stderr, "%s", out);
    CHECK(strstr(out, "zq") == NULL);
    CHECK(strstr(out, "app secret             ******** (set)  (from MicrosoftAppPassword; CLIENT_SECRET)"));
    CHECK(strstr(out, "admin token            ******** (set)  (from HERALD_ADMIN_TOKEN)\n"));
    CHECK(strstr(out, "notify secret          ******** (set)"));
    CHECK(strstr(out, "(set for DEPLOY_PROD)"));
    CHECK(strstr(out, "listen                 127.0.0.1:0  (from --listen; HERALD_LISTEN)\n"));
    CHECK(strstr(out, "mode                   DEV (no authentication)  (from --dev; HERALD_DEV)\n"));
    CHECK(strstr(out, "cloud                  public  (default; HERALD_CLOUD)\n"));
    /* the one numeric setting given is reported apart from the defaults */
    char *set = strstr(out, "limits set"), *dflt = strstr(out, "limits at default");
    char *slice = strstr(out, "    HERALD_TASK_SLICE_MS            250 ms (1..600000)\n");
    CHECK(set && dflt && slice && set < slice && slice < dflt);
    free(out);
    clear_env();
}

static void test_markdown_and_help_list_every_setting(void)
{
    char *md = NULL, *help = NULL;
    size_t len = 0, hlen = 0;
    FILE *f = open_memstream(&md, &len);
    config_markdown(f);
    fclose(f);
    f = open_memstream(&help, &hlen);
    config_help(f);
    fclose(f);
    size_t n;
    const config_setting *t = config_settings(&n);
    for (size_t i = 0; i < n; i++) {
        char name[64];
        int before = unit_failed_checks;
        shown_name(&t[i], name, sizeof name);
        /* once in the first cells of README's tables, whatever the meanings mention */
        int rows = 0;
        for (const char *line = md; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
            const char *end = strstr(line, " | ");
            if (strncmp(line, "| ", 2) != 0 || !end)
                continue;
            char cell[256];
            snprintf(cell, sizeof cell, "%.*s", (int)(end - line), line);
            rows += count_name(cell, name);
        }
        CHECK_INT(rows, 1);
        if (!(t[i].flags & CONFIG_TEST))
            CHECK(strstr(help, name) != NULL);
        if (unit_failed_checks != before)
            fprintf(stderr, "    (row %s)\n", name);
    }
    free(md);
    free(help);
}

static char warned[8][160];
static int nwarned;

static void collect(const char *msg)
{
    if (nwarned < 8)
        snprintf(warned[nwarned++], sizeof warned[0], "%s", msg);
}

static void test_unknown_variables_warned_with_the_closest_name(void)
{
    char *env[] = {"PATH=/bin", "HERALD_TASK_SLICE=5", "HERALD_TASK_SLICE_MS=5", "CLIENT_ID=x",
                   "HERALD_NOTIFY_SECRET_DEPLOY_PROD=s", "HERALD_NOTIFY_SECRET=s",
                   "HERALD_TEST_TIME_FACTOR=2", "HERALD_TEST_CLOCK=1", "HERALD_APP_TYPE=",
                   "HERALD_CLUOD=gcc", "HERALD_MAX_QUEUED_PER_TENNANT=3", "HERALD_FAULT_LOG=x",
                   "HERALD_WATCHDOG_RESTARTS=1,2", "HERALD_TEST_CRASH_BROADCAST=3",
                   "HERALD_TEST_COMMIT_DELAY_MS=9", "HERALD_NOTIFY_SECRET_=x", NULL};
    nwarned = 0;
    CHECK_INT(config_warn_unknown(env, collect), 3);
    CHECK_STR(warned[0], "unknown setting HERALD_TASK_SLICE (did you mean HERALD_TASK_SLICE_MS?)");
    CHECK_STR(warned[1], "unknown setting HERALD_CLUOD (did you mean HERALD_CLOUD?)");
    CHECK_STR(warned[2], "unknown setting HERALD_MAX_QUEUED_PER_TENNANT (did you mean "
                         "HERALD_MAX_QUEUED_PER_TENANT?)");
    /* every name a row has is known, its own and its aliases' */
    size_t n;
    const config_setting *t = config_settings(&n);
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            const char *name = k == 0 ? t[i].name : t[i].alias[k - 1];
            char var[96];
            if (!name)
                continue;
            snprintf(var, sizeof var, "%s%s=1", name, (t[i].flags & CONFIG_PREFIX) ? "X" : "");
            char *one[] = {var, NULL};
            CHECK_INT(config_warn_unknown(one, collect), 0);
        }
}

UNIT_MAIN("config_table", CASE(test_rows_are_whole), CASE(test_aliases_in_order_and_flags_win),
          CASE(test_report_names_every_setting_once), CASE(test_markdown_and_help_list_every_setting),
          CASE(test_unknown_variables_warned_with_the_closest_name))
