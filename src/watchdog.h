/* watchdog.h — the backstop for script code that stalls the loop inside C, where the CPU-slice hook
 * cannot fire (Lua's pattern matcher, a sort with a C comparator): a thread that also owns signals. */
#ifndef HERALD_WATCHDOG_H
#define HERALD_WATCHDOG_H

#include <stdint.h>

typedef struct watchdog_config {
    long grace_ms;               /* CPU ms past a slice before the watchdog acts */
    const char *quarantine_path; /* where culprits are recorded (beside the database) */
    const char *script_path;     /* for the record */
    char *const *argv;           /* what to exec on restart */
    int signal_fd;               /* the loop's end of the signal pipe: one byte per signal */
    long term_grace_ms;          /* after SIGTERM, exit 1 if still running this long (a stuck loop) */
} watchdog_config;

/* Blocks SIGTERM, SIGINT and SIGHUP in the calling thread. Must run before any other thread exists
 * (every thread inherits the mask), so that the watchdog thread receives them all. */
void watchdog_block_signals(void);

/* Starts the thread. It forwards each SIGTERM/SIGINT/SIGHUP to cfg->signal_fd (one byte, the
 * signal number) and, when script code has run slice + grace ms of CPU without returning:
 * logs the culprit, appends it to the quarantine file, and re-executes herald in place (same pid,
 * same arguments) — or exits 1 when a termination was requested, or after 5 restarts in 10
 * minutes. Returns 0 or -1 with *err. */
int watchdog_start(const watchdog_config *cfg, char **err);

/* Stops and joins the thread (clean shutdown). */
void watchdog_stop(void);

/* Main thread, around every run of script code (vm_slice_enter/leave). culprit is "kind\tkey"
 * (see quarantine.h), script_hash the hex SHA-256 of the generation's script; both are copied.
 * cpu_start_ms is the main thread's CPU clock at entry. Nesting restores the outer run. */
void watchdog_enter(const char *culprit, const char *script_hash, int64_t cpu_start_ms, long slice_ms);
void watchdog_leave(void);

/* Watchdog restarts so far (from the environment of the re-executed process), 0 on a fresh start. */
int watchdog_restarts(void);

#endif
