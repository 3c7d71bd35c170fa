/* Micro-benchmarks of the system-call paths, run the same way natively and
 * in kiln by `cargo xtask bench-syscall`. Each prints "name ns_per_op" on
 * stdout (the median of several timed rounds).
 *
 *   sysbench FILE [SCALE [NAME...]]   FILE: a file of at least 4 KiB to
 *                                     read; NAMEs pick benchmarks (all if none)
 *   sysbench --exit         exit at once (what vfork_exec_wait runs) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 7

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static char **only;
static int only_count;

/* Runs `body(n)` ROUNDS times and prints the median ns per operation, if
 * the command line picked this benchmark (or picked none). */
static void report(const char *name, long n, double (*body)(long)) {
    double r[ROUNDS];
    int picked = only_count == 0;
    for (int i = 0; i < only_count; i++)
        picked |= strcmp(only[i], name) == 0;
    if (!picked)
        return;
    body(n / 10 + 1); /* warm up */
    for (int i = 0; i < ROUNDS; i++)
        r[i] = body(n) / n;
    qsort(r, ROUNDS, sizeof r[0], cmp);
    printf("%s %.1f\n", name, r[ROUNDS / 2]);
    fflush(stdout);
}

static double null_syscall(long n) {
    double t = now_ns();
    for (long i = 0; i < n; i++)
        getppid();
    return now_ns() - t;
}

static int fd;
static char buf[4096];

static double read_4k(long n) {
    double t = now_ns();
    for (long i = 0; i < n; i++)
        if (pread(fd, buf, sizeof buf, 0) != sizeof buf)
            abort();
    return now_ns() - t;
}

static double page_fault(long n) {
    long page = 4096;
    char *m = mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        abort();
    madvise(m, n * page, MADV_NOHUGEPAGE);
    double t = now_ns();
    for (long i = 0; i < n; i++)
        m[i * page] = 1;
    double d = now_ns() - t;
    munmap(m, n * page);
    return d;
}

/* The same with huge pages asked for (MADV_HUGEPAGE) on a 2 MiB-aligned
 * area, on both sides. */
static double page_fault_huge(long n) {
    long page = 4096, huge = 2L << 20;
    long len = (n * page + huge - 1) / huge * huge;
    char *raw = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        abort();
    char *m = (char *)(((unsigned long)raw + huge - 1) & ~(huge - 1));
    madvise(m, len, MADV_HUGEPAGE);
    double t = now_ns();
    for (long i = 0; i < n; i++)
        m[i * page] = 1;
    double d = now_ns() - t;
    munmap(raw, len + huge);
    return d;
}

static atomic_int turn;

static void futex_wait(atomic_int *w, int v) {
    syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0);
}

static void futex_wake(atomic_int *w) {
    syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static long pongs;

static void *ponger(void *arg) {
    (void)arg;
    for (long i = 0; i < pongs; i++) {
        while (atomic_load(&turn) != 1)
            futex_wait(&turn, 0);
        atomic_store(&turn, 0);
        futex_wake(&turn);
    }
    return NULL;
}

static double futex_pingpong(long n) {
    pthread_t t;
    pongs = n;
    atomic_store(&turn, 0);
    double start = now_ns();
    pthread_create(&t, NULL, ponger, NULL);
    for (long i = 0; i < n; i++) {
        atomic_store(&turn, 1);
        futex_wake(&turn);
        while (atomic_load(&turn) != 0)
            futex_wait(&turn, 1);
    }
    pthread_join(t, NULL);
    return now_ns() - start;
}

static void *nothing(void *arg) {
    return arg;
}

static double thread_create(long n) {
    double t = now_ns();
    for (long i = 0; i < n; i++) {
        pthread_t th;
        pthread_create(&th, NULL, nothing, NULL);
        pthread_join(th, NULL);
    }
    return now_ns() - t;
}

static double clock_read(long n) {
    struct timespec ts;
    double t = now_ns();
    for (long i = 0; i < n; i++)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    return now_ns() - t;
}

static double fork_exit_wait(long n) {
    double t = now_ns();
    for (long i = 0; i < n; i++) {
        pid_t c = fork();
        if (c == 0)
            _exit(0);
        if (c < 0 || waitpid(c, NULL, 0) != c)
            abort();
    }
    return now_ns() - t;
}

static double vfork_exec_wait(long n) {
    double t = now_ns();
    for (long i = 0; i < n; i++) {
        pid_t c = vfork();
        if (c == 0) {
            execl("/proc/self/exe", "sysbench", "--exit", (char *)NULL);
            _exit(127);
        }
        int st;
        if (c < 0 || waitpid(c, &st, 0) != c || st != 0)
            abort();
    }
    return now_ns() - t;
}

/* A byte to another process and back through two pipes: two switches
 * between processes a round trip. */
static double process_pipe_pingpong(long n) {
    int there[2], back[2];
    if (pipe(there) || pipe(back))
        abort();
    pid_t c = fork();
    if (c == 0) {
        char b;
        close(there[1]);
        close(back[0]);
        while (read(there[0], &b, 1) == 1)
            write(back[1], &b, 1);
        _exit(0);
    }
    close(there[0]);
    close(back[1]);
    char b = 'x';
    double t = now_ns();
    for (long i = 0; i < n; i++)
        if (write(there[1], &b, 1) != 1 || read(back[0], &b, 1) != 1)
            abort();
    t = now_ns() - t;
    close(there[1]);
    close(back[0]);
    waitpid(c, NULL, 0);
    return t;
}

/* sched_yield between two processes held on one CPU: each yield hands the
 * CPU to the other process. Returns the time of n round trips halved: ns
 * per switch between processes (a yield and a switch each). */
static double process_switch(long n) {
    cpu_set_t one, all;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (sched_getaffinity(0, sizeof all, &all) || sched_setaffinity(0, sizeof one, &one))
        abort();
    pid_t c = fork();
    if (c == 0)
        for (;;)
            sched_yield();
    sched_yield();
    double t = now_ns();
    for (long i = 0; i < n; i++)
        sched_yield();
    t = now_ns() - t;
    kill(c, SIGKILL);
    waitpid(c, NULL, 0);
    sched_setaffinity(0, sizeof all, &all);
    return t / 2;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--exit") == 0)
        return 0;
    if (argc < 2) {
        fprintf(stderr, "usage: sysbench FILE [SCALE]\n");
        return 2;
    }
    fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    long scale = argc > 2 ? atol(argv[2]) : 1;
    if (argc > 3) {
        only = argv + 3;
        only_count = argc - 3;
    }
    report("null_syscall", 20000 * scale, null_syscall);
    report("read_4k", 5000 * scale, read_4k);
    report("page_fault", 2000 * scale, page_fault);
    report("page_fault_huge", 2048 * scale, page_fault_huge);
    report("futex_pingpong", 1000 * scale, futex_pingpong);
    report("thread_create_join", 200 * scale, thread_create);
    report("clock_gettime", 20000 * scale, clock_read);
    report("fork_exit_wait", 200 * scale, fork_exit_wait);
    report("vfork_exec_wait", 100 * scale, vfork_exec_wait);
    report("process_pipe_pingpong", 2000 * scale, process_pipe_pingpong);
    report("process_switch", 2000 * scale, process_switch);
    return 0;
}
