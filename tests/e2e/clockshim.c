/* Test-only LD_PRELOAD shim: the wall clock of one process tree, stepped at run time.
 *
 * CLOCKSHIM_OFFSET_FILE names a file holding a signed whole number of seconds; every wall-clock
 * read (clock_gettime of CLOCK_REALTIME and its variants, gettimeofday, time) returns the real
 * time plus that offset. The file is read again at most every 50 ms of monotonic time, so a test
 * steps the clock by rewriting it (write a new file, rename over). Monotonic clocks are never
 * touched: that is what a step of the system clock does too. Built by tests/e2e/clock.py.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static clock_gettime_fn real_clock_gettime;
static volatile long offset_seconds;
static volatile long long next_read_ns;

static clock_gettime_fn real(void) {
    if (real_clock_gettime == NULL) {
        real_clock_gettime = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    }
    return real_clock_gettime;
}

static long current_offset(void) {
    struct timespec mono;
    if (real()(CLOCK_MONOTONIC, &mono) != 0) {
        return offset_seconds;
    }
    long long now_ns = (long long)mono.tv_sec * 1000000000LL + mono.tv_nsec;
    if (now_ns < next_read_ns) {
        return offset_seconds;
    }
    next_read_ns = now_ns + 50000000LL;
    const char *path = getenv("CLOCKSHIM_OFFSET_FILE");
    if (path == NULL) {
        return offset_seconds;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return offset_seconds;
    }
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n > 0) {
        buf[n] = '\0';
        offset_seconds = strtol(buf, NULL, 10);
    }
    return offset_seconds;
}

static int is_wall(clockid_t id) {
    return id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE || id == CLOCK_TAI;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    int rc = real()(id, ts);
    if (rc == 0 && is_wall(id)) {
        ts->tv_sec += current_offset();
    }
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    (void)tz;
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    if (rc == 0) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return (time_t)-1;
    }
    if (out != NULL) {
        *out = ts.tv_sec;
    }
    return ts.tv_sec;
}
