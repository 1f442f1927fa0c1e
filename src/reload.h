/* reload.h — hot reload: watch the bot's files (inotify, debounced), SIGHUP and /-/reload; build
 * the next Lua generation aside, switch new work to it, drain and close the old one. */
#ifndef HERALD_RELOAD_H
#define HERALD_RELOAD_H

typedef struct runtime runtime;
typedef struct reloader reloader;

typedef struct reload_stats {
    int generation;               /* 1 for the first script load */
    int reloads, failures;
    int retired;                  /* old generations still draining */
    int retired_tasks;            /* their tasks */
    const char *last_error;       /* of the latest failed attempt, NULL after a success */
} reload_stats;

/* Watches the files of rt->vm (watch = 0: only SIGHUP and /-/reload). NULL with *err. */
reloader *reloader_new(runtime *rt, int watch, char **err);
void reloader_free(reloader *r);

/* Builds a new generation now. Returns 0 when it went live, -1 when the old one keeps serving. */
int reloader_reload(reloader *r, const char *why);

void reloader_get_stats(const reloader *r, reload_stats *out);

/* The vm_config every generation is built with (main.c fills it once). */
struct vm_config;
void reloader_set_vm_config(reloader *r, const struct vm_config *vc);

#endif
