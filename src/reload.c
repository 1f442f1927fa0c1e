/* reload.c — one directory watch per directory holding a loaded file (editors and deploy tools
 * replace files by rename, which a watch on the file itself would miss), a debounce timer, and
 * the generation switch: the new state is built and loaded aside; only a fully loaded script with
 * at least one hook replaces the old one, which then drains its tasks and is closed. */
#include "reload.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "lua_teams.h"
#include "lua_timer.h"
#include "runtime.h"
#include "scheduler.h"
#include "task.h"
#include "vm.h"

#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

typedef struct retired {
    vm *v;
    int generation;
    struct event *grace;
    struct retired *next;
} retired;

typedef struct watched {
    int wd;
    char *dir;
} watched;

struct reloader {
    runtime *rt;
    vm_config vc;
    int fd;                       /* inotify, -1 without watching */
    struct event *inotify_ev, *debounce, *reap;
    watched *dirs;
    int ndirs;
    char **paths;                 /* files whose change triggers a reload */
    int npaths;
    retired *old;
    reload_stats stats;
    char *last_error;
};

static char *dirname_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* Records path as "<its directory>/<name>", the form on_inotify rebuilds from an event, and
 * watches that directory once. */
static void add_path(reloader *r, const char *path)
{
    char *dir = dirname_of(path);
    const char *slash = strrchr(path, '/');
    char *full = NULL;
    if (!dir || asprintf(&full, "%s/%s", dir, slash ? slash + 1 : path) < 0) {
        free(dir);
        return;
    }
    for (int i = 0; i < r->npaths; i++)
        if (strcmp(r->paths[i], full) == 0) {
            free(full);
            free(dir);
            return;
        }
    char **n = realloc(r->paths, (size_t)(r->npaths + 1) * sizeof *n);
    if (!n) {
        free(full);
        free(dir);
        return;
    }
    r->paths = n;
    r->paths[r->npaths++] = full;
    for (int i = 0; r->fd >= 0 && i < r->ndirs; i++)
        if (strcmp(r->dirs[i].dir, dir) == 0) {
            free(dir);
            return;
        }
    if (r->fd < 0) {
        free(dir);
        return;
    }
    int wd = inotify_add_watch(r->fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE |
                                               IN_ATTRIB);
    watched *nd = wd >= 0 ? realloc(r->dirs, (size_t)(r->ndirs + 1) * sizeof *nd) : NULL;
    if (!nd) {
        if (wd < 0)
            log_warn("reload: cannot watch %s: %s", dir, strerror(errno));
        free(dir);
        return;
    }
    r->dirs = nd;
    r->dirs[r->ndirs].wd = wd;
    r->dirs[r->ndirs].dir = dir;
    r->ndirs++;
}

/* Watches the files of v (kept from earlier generations too: fixing a file a failed attempt
 * loaded must trigger the next attempt). */
static void watch_files_of(reloader *r, vm *v)
{
    for (int i = 0; vm_file(v, i); i++)
        add_path(r, vm_file(v, i));
}

static void free_generation(retired *g)
{
    if (g->grace)
        clock_timer_free(g->grace);
    int leaks = vm_ref_count(g->v);
    vm_free(g->v);
    log_info("reload: generation %d closed%s", g->generation, leaks ? " (with leaked refs)" : "");
    free(g);
}

static void unlink_retired(reloader *r, retired *g)
{
    for (retired **pp = &r->old; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    r->stats.retired--;
}

static void on_grace(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    retired *g = arg;
    log_warn("reload: generation %d still had %d task(s) after the grace period: cancelling them",
             g->generation, task_count(g->v));
    task_cancel_all(g->v, "the script was reloaded and the grace period ended");
}

/* Closes drained generations; polled because their tasks end in many places. */
static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    reloader *r = arg;
    retired *g = r->old;
    while (g) {
        retired *next = g->next;
        if (task_count(g->v) == 0) {
            unlink_retired(r, g);
            free_generation(g);
        }
        g = next;
    }
    if (!r->old)
        clock_timer_del(r->reap);
}

void reloader_set_vm_config(reloader *r, const vm_config *vc) { r->vc = *vc; }

int reloader_reload(reloader *r, const char *why)
{
    runtime *rt = r->rt;
    char *err = NULL;
    int64_t t0 = vm_now_ms();
    vm *nv = vm_new(rt->base, &r->vc, rt, &err);
    if (nv) {
        lua_teams_install(nv);
        if (vm_load_script(nv, rt->cfg->script, &err) == 0 && vm_hook_count(nv) == 0)
            err = strdup("the script registered no handler (teams.on_message, on_install, ...)");
        watch_files_of(r, nv);
    }
    if (err) {
        r->stats.failures++;
        free(r->last_error);
        r->last_error = err;
        r->stats.last_error = err;
        log_error("reload (%s) failed; generation %d keeps serving: %s", why, r->stats.generation,
                  err);
        vm_free(nv);
        return -1;
    }
    retired *g = calloc(1, sizeof *g);
    if (!g) {
        vm_free(nv);
        return -1;
    }
    g->v = rt->vm;
    g->generation = r->stats.generation;
    rt->vm = nv;
    rt->script_quarantined = 0;
    r->stats.generation++;
    r->stats.reloads++;
    free(r->last_error);
    r->last_error = NULL;
    r->stats.last_error = NULL;
    log_info("reload (%s): generation %d live in %lld ms; generation %d drains %d task(s)", why,
             r->stats.generation, (long long)(vm_now_ms() - t0), g->generation, task_count(g->v));
    /* in-memory timers die with their generation (durable work belongs in schedules); its
     * running tasks finish or are cancelled at the grace */
    lua_timer_cancel_all(g->v);
    g->next = r->old;
    r->old = g;
    r->stats.retired++;
    g->grace = evtimer_new(rt->base, on_grace, g);
    if (g->grace) {
        clock_timer_add(g->grace, rt->cfg->reload_grace_ms);
    }
    clock_timer_add(r->reap, 50);
    on_reap(-1, 0, r);
    return 0;
}

static void on_debounce(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    reloader *r = arg;
    if (reloader_reload(r, "file changed") == 0 && r->rt->scheduler)
        scheduler_handlers_changed(r->rt->scheduler);
}

static void on_inotify(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    reloader *r = arg;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    int hit = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)p;
            p += sizeof *e + e->len;
            if (!e->len)
                continue;
            for (int i = 0; i < r->ndirs && !hit; i++) {
                if (r->dirs[i].wd != e->wd)
                    continue;
                char full[PATH_MAX];
                snprintf(full, sizeof full, "%s/%s", r->dirs[i].dir, e->name);
                for (int k = 0; k < r->npaths && !hit; k++)
                    hit = strcmp(full, r->paths[k]) == 0;
            }
        }
    }
    if (hit) {
        /* an editor writes, renames and touches in a burst: reload once, after it settles */
        clock_timer_add(r->debounce, r->rt->cfg->reload_debounce_ms);
    }
}

reloader *reloader_new(runtime *rt, int watch, char **err)
{
    reloader *r = calloc(1, sizeof *r);
    if (!r) {
        *err = strdup("out of memory");
        return NULL;
    }
    r->rt = rt;
    r->fd = -1;
    r->stats.generation = 1;
    r->debounce = evtimer_new(rt->base, on_debounce, r);
    r->reap = event_new(rt->base, -1, EV_PERSIST, on_reap, r);
    if (!r->debounce || !r->reap) {
        reloader_free(r);
        *err = strdup("out of memory");
        return NULL;
    }
    if (watch) {
        r->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (r->fd < 0) {
            log_warn("reload: inotify unavailable (%s); reload with SIGHUP or herald reload",
                     strerror(errno));
        } else {
            r->inotify_ev = event_new(rt->base, r->fd, EV_READ | EV_PERSIST, on_inotify, r);
            if (r->inotify_ev)
                event_add(r->inotify_ev, NULL);
        }
    }
    watch_files_of(r, rt->vm);
    return r;
}

void reloader_free(reloader *r)
{
    if (!r)
        return;
    while (r->old) {
        retired *g = r->old;
        r->old = g->next;
        free_generation(g);
    }
    if (r->inotify_ev)
        event_free(r->inotify_ev);
    if (r->fd >= 0)
        close(r->fd);
    if (r->debounce)
        clock_timer_free(r->debounce);
    if (r->reap)
        clock_timer_free(r->reap);
    for (int i = 0; i < r->ndirs; i++)
        free(r->dirs[i].dir);
    free(r->dirs);
    for (int i = 0; i < r->npaths; i++)
        free(r->paths[i]);
    free(r->paths);
    free(r->last_error);
    free(r);
}

void reloader_get_stats(const reloader *r, reload_stats *out)
{
    *out = r->stats;
    out->retired_tasks = 0;
    for (retired *g = r->old; g; g = g->next)
        out->retired_tasks += task_count(g->v);
}
