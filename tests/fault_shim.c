/* fault_shim.c — an LD_PRELOAD shim for the fault suite (tests/integration/jepsen.py): while a
 * control file exists, writes to files under a path prefix fail with ENOSPC and fsync/fdatasync on
 * them fail with EIO, as a full disk or a dying one would. Used where a tmpfs cannot be mounted.
 *
 *   HERALD_FAULT_PREFIX   files whose path starts with this are affected (e.g. the database path:
 *                         h.db, h.db-wal, h.db-shm, h.db-journal)
 *   HERALD_FAULT_CONTROL  the control file; its content says what fails: "full" (write, pwrite,
 *                         pwrite64, writev: ENOSPC) and/or "fsync" (fsync, fdatasync: EIO)
 *   HERALD_FAULT_LOG      optional: one line per failed call ("full <path>" / "fsync <path>")
 *
 * Nothing is cached: the control file is opened on every call (a failed open(2) while it is
 * absent), so the shim is inert until a test creates it. The real calls are found with
 * dlsym(RTLD_NEXT), which under ASan is its interceptor (run with
 * ASAN_OPTIONS=verify_asan_link_order=0). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwrite64_fn)(int, const void *, size_t, off64_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef int (*sync_fn)(int);

static void *real(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f)
        abort();
    return f;
}

/* 1 when the control file names mode and fd is a file under the prefix; path gets its name. */
static int failing(int fd, const char *mode, char *path, size_t cap)
{
    const char *control = getenv("HERALD_FAULT_CONTROL");
    const char *prefix = getenv("HERALD_FAULT_PREFIX");
    if (!control || !prefix || !*prefix)
        return 0;
    int saved = errno, hit = 0;     /* a call that goes through sees the errno it would have */
    int cfd = open(control, O_RDONLY | O_CLOEXEC);
    if (cfd >= 0) {
        char want[64];
        ssize_t n = read(cfd, want, sizeof want - 1);
        close(cfd);
        want[n > 0 ? n : 0] = 0;
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t len = strstr(want, mode) ? readlink(link, path, cap - 1) : -1;
        if (len > 0) {
            path[len] = 0;
            hit = strncmp(path, prefix, strlen(prefix)) == 0;
        }
    }
    errno = saved;
    return hit;
}

static void note(const char *mode, const char *path)
{
    const char *log = getenv("HERALD_FAULT_LOG");
    if (!log)
        return;
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    char line[4200];
    int n = snprintf(line, sizeof line, "%s %s\n", mode, path);
    static write_fn w;
    if (!w)
        w = (write_fn)real("write");
    if (n > 0)
        (void)!w(fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    close(fd);
}

#define FAIL_IF(fd, mode, err, ret)                                                              \
    do {                                                                                         \
        char path_[4096];                                                                        \
        if (failing(fd, mode, path_, sizeof path_)) {                                            \
            note(mode, path_);                                                                   \
            errno = err;                                                                         \
            return ret;                                                                          \
        }                                                                                        \
    } while (0)

ssize_t write(int fd, const void *buf, size_t n)
{
    static write_fn f;
    if (!f)
        f = (write_fn)real("write");
    FAIL_IF(fd, "full", ENOSPC, -1);
    return f(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    static pwrite_fn f;
    if (!f)
        f = (pwrite_fn)real("pwrite");
    FAIL_IF(fd, "full", ENOSPC, -1);
    return f(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    static pwrite64_fn f;
    if (!f)
        f = (pwrite64_fn)real("pwrite64");
    FAIL_IF(fd, "full", ENOSPC, -1);
    return f(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    static writev_fn f;
    if (!f)
        f = (writev_fn)real("writev");
    FAIL_IF(fd, "full", ENOSPC, -1);
    return f(fd, iov, cnt);
}

int fsync(int fd)
{
    static sync_fn f;
    if (!f)
        f = (sync_fn)real("fsync");
    FAIL_IF(fd, "fsync", EIO, -1);
    return f(fd);
}

int fdatasync(int fd)
{
    static sync_fn f;
    if (!f)
        f = (sync_fn)real("fdatasync");
    FAIL_IF(fd, "fsync", EIO, -1);
    return f(fd);
}
