/* watchdog.c — a thread beside the loop: it receives herald's signals and forwards them to the loop,
 * and when script code has run past its slice inside C (where the count hook cannot fire) it
 * records the culprit in the quarantine file and re-executes herald in place. Nothing is lost by
 * the restart: every accepted operation is in the outbox, and Teams redelivers an unanswered
 * activity, which then finds its culprit quarantined.
 *
 * Why a thread and exec, not a supervising parent process: the pid stays the same (systemd, a
 * container's PID 1, the lock on the database), there is one process to deploy, and SIGTERM
 * keeps working while the loop is stuck, because this thread, not the loop, takes signals. Why not
 * interrupt the C call from a signal handler: longjmp out of Lua's string library or its
 * allocator leaves the state (or malloc's locks) half-changed. */
#include "watchdog.h"
#include "clock.h"
#include "log.h"
#include "quarantine.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define RESTART_ENV "HERALD_WATCHDOG_RESTARTS"
#define MAX_RESTARTS 5
#define RESTART_WINDOW_S 600
#define TICK_MS 100
#define CULPRIT_MAX (QUARANTINE_KEY_MAX + 32)
#define DEPTH_MAX 8

/* What the loop is running, published for the thread. Only the main thread writes; the thread
 * reads a torn copy at worst, which it discards when gen moved meanwhile. */
static struct {
    atomic_ullong gen;            /* bumped at every enter and leave */
    atomic_llong cpu_start;       /* main thread CPU ms at entry; 0 when no script code runs */
    atomic_long slice_ms;
    char culprit[CULPRIT_MAX];
    char hash[65];
} pub;

/* The main thread's own stack of nested runs, to republish the outer one on leave. */
static struct frame {
    char culprit[CULPRIT_MAX];
    char hash[65];
    int64_t cpu_start;
    long slice_ms;
} frames[DEPTH_MAX];
static int depth;

static watchdog_config cfg;
static pthread_t thread, main_thread;
static clockid_t main_clock;
static atomic_int running, stopping;
static int64_t term_at_ms;            /* thread-only: when SIGTERM/SIGINT arrived */
static int restarts;
static long long first_restart_s;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t main_cpu_ms(void)
{
    struct timespec ts;
    if (clock_gettime(main_clock, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void publish(const char *culprit, const char *hash, int64_t cpu_start, long slice_ms)
{
    atomic_fetch_add(&pub.gen, 1);
    atomic_store(&pub.cpu_start, 0);
    snprintf(pub.culprit, sizeof pub.culprit, "%s", culprit ? culprit : "host\t-");
    snprintf(pub.hash, sizeof pub.hash, "%s", hash ? hash : "");
    atomic_store(&pub.slice_ms, slice_ms);
    atomic_store(&pub.cpu_start, cpu_start ? cpu_start : 1);
}

void watchdog_enter(const char *culprit, const char *script_hash, int64_t cpu_start_ms, long slice_ms)
{
    if (!atomic_load(&running))
        return;
    if (depth < DEPTH_MAX) {
        struct frame *f = &frames[depth];
        snprintf(f->culprit, sizeof f->culprit, "%s", culprit ? culprit : "host\t-");
        snprintf(f->hash, sizeof f->hash, "%s", script_hash ? script_hash : "");
        f->cpu_start = cpu_start_ms;
        f->slice_ms = slice_ms;
    }
    depth++;
    publish(culprit, script_hash, cpu_start_ms, slice_ms);
}

void watchdog_leave(void)
{
    if (!atomic_load(&running) || depth == 0)
        return;
    depth--;
    if (depth > 0 && depth <= DEPTH_MAX) {
        struct frame *f = &frames[depth - 1];
        publish(f->culprit, f->hash, f->cpu_start, f->slice_ms);
        return;
    }
    atomic_fetch_add(&pub.gen, 1);
    atomic_store(&pub.cpu_start, 0);
}

int watchdog_restarts(void) { return restarts; }

/* The signals the watchdog thread takes: herald's three, and SIGUSR2 to wake it for a stop. */
static void watched_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR2);
}

void watchdog_block_signals(void)
{
    sigset_t set;
    watched_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* Marks every descriptor above stderr close-on-exec, so the new image starts with only its
 * standard streams: the listener, the database and the connector's sockets close with the old. */
static void cloexec_all(void)
{
#ifdef CLOSE_RANGE_CLOEXEC
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return;
#endif
    struct rlimit rl;
    long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (long)rl.rlim_cur : 65536;
    for (long fd = 3; fd < max; fd++)
        fcntl((int)fd, F_SETFD, FD_CLOEXEC);
}

static void restart(void)
{
    long long now_s = (long long)time(NULL);
    int n = restarts + 1;
    long long first = first_restart_s;
    if (!first || now_s - first > RESTART_WINDOW_S) {
        n = 1;
        first = now_s;
    }
    if (n > MAX_RESTARTS) {
        log_error("watchdog: %d restarts within %d s; giving up (exit 1) so that a supervisor sees "
                  "the failure", MAX_RESTARTS, RESTART_WINDOW_S);
        _exit(1);
    }
    int count = 0;
    while (environ && environ[count])
        count++;
    char **envp = calloc((size_t)count + 2, sizeof *envp);
    char mark[96];
    snprintf(mark, sizeof mark, RESTART_ENV "=%d,%lld", n, first);
    if (envp) {
        int j = 0;
        for (int i = 0; i < count; i++)
            if (strncmp(environ[i], RESTART_ENV "=", sizeof RESTART_ENV) != 0)
                envp[j++] = environ[i];
        envp[j++] = mark;
        envp[j] = NULL;
    }
    log_error("watchdog: restarting herald in place (restart %d within %d s)", n, RESTART_WINDOW_S);
    cloexec_all();
    execve("/proc/self/exe", cfg.argv, envp ? envp : environ);
    log_error("watchdog: cannot re-execute herald: %s; exiting", strerror(errno));
    _exit(1);
}

static void act(const char *culprit, const char *hash, int64_t used_ms, long slice_ms)
{
    char kind[32] = "host", key[QUARANTINE_KEY_MAX] = "-";
    const char *tab = strchr(culprit, '\t');
    if (tab) {
        snprintf(kind, sizeof kind, "%.*s", (int)(tab - culprit < 31 ? tab - culprit : 31), culprit);
        snprintf(key, sizeof key, "%s", tab + 1);
    }
    log_error("watchdog: script code has run %lld ms of CPU without returning (slice %ld ms + grace "
              "%ld ms), inside C where the slice cannot stop it; culprit: %s %s",
              (long long)used_ms, slice_ms, cfg.grace_ms, kind, key);
    if (strcmp(kind, "host") != 0) {
        if (quarantine_append(cfg.quarantine_path, hash, kind, key, (long long)clock_wall_ms(),
                              (long)used_ms, cfg.script_path) == 0)
            log_error("watchdog: %s %s is quarantined in %s until the script changes", kind, key,
                      cfg.quarantine_path);
        else
            log_error("watchdog: cannot record the quarantine in %s: %s", cfg.quarantine_path,
                      strerror(errno));
    }
    if (term_at_ms) {
        log_error("watchdog: a stop was requested; exiting (1) instead of restarting");
        _exit(1);
    }
    restart();
}

static void check(void)
{
    unsigned long long g = atomic_load(&pub.gen);
    int64_t start = atomic_load(&pub.cpu_start);
    if (!start)
        return;
    long slice = atomic_load(&pub.slice_ms);
    int64_t used = main_cpu_ms() - start;
    if (used <= slice + cfg.grace_ms)
        return;
    char culprit[CULPRIT_MAX], hash[65];
    memcpy(culprit, pub.culprit, sizeof culprit);
    memcpy(hash, pub.hash, sizeof hash);
    culprit[sizeof culprit - 1] = 0;
    hash[sizeof hash - 1] = 0;
    if (atomic_load(&pub.gen) != g)
        return;                   /* it returned while we looked */
    act(culprit, hash, used, slice);
}

static void *watch(void *arg)
{
    (void)arg;
    sigset_t set;
    watched_signals(&set);
    struct timespec tick = {0, TICK_MS * 1000000L};
    while (!atomic_load(&stopping)) {
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
            unsigned char b = (unsigned char)sig;
            if (sig != SIGHUP && !term_at_ms)
                term_at_ms = mono_ms();
            if (write(cfg.signal_fd, &b, 1) < 0)
                log_warn("watchdog: cannot forward signal %d to the loop: %s", sig, strerror(errno));
        }
        if (atomic_load(&stopping))
            break;
        check();
        if (term_at_ms && mono_ms() - term_at_ms > cfg.term_grace_ms) {
            log_error("watchdog: still running %ld ms after a stop was requested; exiting (1)",
                      cfg.term_grace_ms);
            _exit(1);
        }
    }
    return NULL;
}

int watchdog_start(const watchdog_config *c, char **err)
{
    cfg = *c;
    const char *r = getenv(RESTART_ENV);
    if (r) {
        if (sscanf(r, "%d,%lld", &restarts, &first_restart_s) != 2)
            restarts = 0, first_restart_s = 0;
        unsetenv(RESTART_ENV);
    }
    main_thread = pthread_self();
    if (pthread_getcpuclockid(main_thread, &main_clock) != 0) {
        *err = strdup("cannot read the main thread's CPU clock");
        return -1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    atomic_store(&stopping, 0);
    atomic_store(&running, 1);
    int rc = pthread_create(&thread, &attr, watch, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_store(&running, 0);
        *err = strdup("cannot start the watchdog thread");
        return -1;
    }
    return 0;
}

void watchdog_stop(void)
{
    if (!atomic_load(&running))
        return;
    atomic_store(&stopping, 1);
    pthread_kill(thread, SIGUSR2);
    pthread_join(thread, NULL);
    atomic_store(&running, 0);
    depth = 0;
}
