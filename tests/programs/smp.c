/* Probes a guest with several vCPUs, one mode per run:
 *   count          print the CPU count as sched_getaffinity, sysconf and
 *                  /proc/cpuinfo report it
 *   spread         run one spinning thread per CPU until every CPU has run
 *                  one of them (getcpu); print how many CPUs did
 *   pin            pin the calling thread to each CPU in turn and print
 *                  where getcpu finds it; then try a mask of no real CPU
 *   spin N         N threads each do the same fixed amount of arithmetic;
 *                  print the wall time (the --cpus speed-up benchmark)
 *   stress SECONDS for SECONDS: pairs of threads pass a token through a
 *                  mutex and condition variables; a thread replaces a page
 *                  at a fixed address (mmap MAP_FIXED) and counts up in it
 *                  while readers on the other CPUs check they never see an
 *                  older page (TLB shootdowns); a thread round-trips
 *                  numbered messages through pipes to a forked child. Each
 *                  check that fails is printed; "stress: ok" at the end. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int cpu_now(void)
{
    unsigned cpu = 0;
    if (syscall(SYS_getcpu, &cpu, NULL, NULL) != 0)
        return -1;
    return (int)cpu;
}

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int affinity_count(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -1;
    return CPU_COUNT(&set);
}

static int cpuinfo_count(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return -1;
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "processor", 9))
            n++;
    fclose(f);
    return n;
}

/* --- spread --- */
static atomic_uint seen;
static unsigned all_cpus;

static void *spread_worker(void *arg)
{
    (void)arg;
    double end = seconds() + 20;
    while ((atomic_load(&seen) & all_cpus) != all_cpus && seconds() < end) {
        int c = cpu_now();
        if (c >= 0 && c < 32)
            atomic_fetch_or(&seen, 1u << c);
        for (volatile int i = 0; i < 100000; i++)
            ;
    }
    return NULL;
}

/* --- spin --- */
static volatile unsigned long sink[64 * 8];

static void *spin_worker(void *arg)
{
    long id = (long)arg;
    unsigned long x = (unsigned long)id + 1;
    for (long i = 0; i < 300000000L; i++)
        x = x * 6364136223846793005UL + 1442695040888963407UL;
    sink[(id % 64) * 8] = x;
    return NULL;
}

/* --- stress --- */
static double stress_end;
static atomic_int failures;

struct pingpong {
    pthread_mutex_t lock;
    pthread_cond_t turn_changed;
    int turn;
    long passes;
};

struct pingpong_side {
    struct pingpong *game;
    int me;
};

static void *pingpong_worker(void *arg)
{
    struct pingpong_side *side = arg;
    struct pingpong *g = side->game;
    for (;;) {
        pthread_mutex_lock(&g->lock);
        while (g->turn != side->me && g->turn != -1)
            pthread_cond_wait(&g->turn_changed, &g->lock);
        if (g->turn == -1) {
            pthread_mutex_unlock(&g->lock);
            return NULL;
        }
        g->passes++;
        g->turn = seconds() < stress_end ? 1 - side->me : -1;
        pthread_cond_broadcast(&g->turn_changed);
        pthread_mutex_unlock(&g->lock);
    }
}

#define REMAP_PAGE 4096
static volatile unsigned long *remap_at;
static atomic_ulong remap_published;
static atomic_int remap_done;

static void *remap_writer(void *arg)
{
    long *count = arg;
    unsigned long k = 0;
    while (seconds() < stress_end) {
        k++;
        void *p = mmap((void *)remap_at, REMAP_PAGE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (p != (void *)remap_at) {
            printf("stress: mmap MAP_FIXED failed: %s\n", strerror(errno));
            atomic_fetch_add(&failures, 1);
            break;
        }
        remap_at[0] = k;
        atomic_store(&remap_published, k);
        /* Some churn elsewhere too: frames freed and reused. */
        void *q = mmap(NULL, 16 * REMAP_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (q != MAP_FAILED) {
            memset(q, (int)(k & 0xff), 16 * REMAP_PAGE);
            munmap(q, 16 * REMAP_PAGE);
        }
    }
    *count = (long)k;
    atomic_store(&remap_done, 1);
    return NULL;
}

static void *remap_reader(void *arg)
{
    long *checks = arg;
    while (!atomic_load(&remap_done)) {
        unsigned long published = atomic_load(&remap_published);
        unsigned long v = remap_at[0];
        /* A fresh page reads 0 until the writer fills it; an older page
         * (a stale TLB entry) reads less than what was published. */
        if (v != 0 && v < published) {
            printf("stress: read %lu after %lu was published (stale TLB entry)\n", v, published);
            atomic_fetch_add(&failures, 1);
            break;
        }
        (*checks)++;
    }
    return NULL;
}

static void *pipe_worker(void *arg)
{
    long *trips = arg;
    int to_child[2], to_parent[2];
    if (pipe(to_child) || pipe(to_parent)) {
        printf("stress: pipe: %s\n", strerror(errno));
        atomic_fetch_add(&failures, 1);
        return NULL;
    }
    pid_t child = fork();
    if (child == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        unsigned long n;
        while (read(to_child[0], &n, sizeof n) == (ssize_t)sizeof n) {
            n = n * 3 + 1;
            if (write(to_parent[1], &n, sizeof n) != (ssize_t)sizeof n)
                _exit(1);
        }
        _exit(0);
    }
    close(to_child[0]);
    close(to_parent[1]);
    unsigned long i = 0;
    while (seconds() < stress_end) {
        unsigned long n = i, back = 0;
        if (write(to_child[1], &n, sizeof n) != (ssize_t)sizeof n ||
            read(to_parent[0], &back, sizeof back) != (ssize_t)sizeof back || back != i * 3 + 1) {
            printf("stress: pipe round trip %lu came back %lu\n", i, back);
            atomic_fetch_add(&failures, 1);
            break;
        }
        i++;
    }
    close(to_child[1]);
    int st = 0;
    if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        printf("stress: the pipe child did not exit 0\n");
        atomic_fetch_add(&failures, 1);
    }
    close(to_parent[0]);
    *trips = (long)i;
    return NULL;
}

static int stress(double duration)
{
    int cpus = affinity_count();
    stress_end = seconds() + duration;
    remap_at = mmap(NULL, REMAP_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (remap_at == MAP_FAILED) {
        printf("stress: mmap: %s\n", strerror(errno));
        return 1;
    }
    remap_at[0] = 0;
    enum { GAMES = 2 };
    static struct pingpong games[GAMES];
    static struct pingpong_side sides[GAMES][2];
    pthread_t players[GAMES][2], writer, readers[8], piper;
    long remaps = 0, checks[8] = {0}, trips = 0;
    int nreaders = cpus > 1 ? cpus - 1 : 1;
    if (nreaders > 8)
        nreaders = 8;
    for (int g = 0; g < GAMES; g++) {
        pthread_mutex_init(&games[g].lock, NULL);
        pthread_cond_init(&games[g].turn_changed, NULL);
        for (int s = 0; s < 2; s++) {
            sides[g][s] = (struct pingpong_side){&games[g], s};
            pthread_create(&players[g][s], NULL, pingpong_worker, &sides[g][s]);
        }
    }
    pthread_create(&writer, NULL, remap_writer, &remaps);
    for (int r = 0; r < nreaders; r++)
        pthread_create(&readers[r], NULL, remap_reader, &checks[r]);
    pthread_create(&piper, NULL, pipe_worker, &trips);
    long passes = 0, reads = 0;
    for (int g = 0; g < GAMES; g++) {
        for (int s = 0; s < 2; s++)
            pthread_join(players[g][s], NULL);
        passes += games[g].passes;
    }
    pthread_join(writer, NULL);
    for (int r = 0; r < nreaders; r++) {
        pthread_join(readers[r], NULL);
        reads += checks[r];
    }
    pthread_join(piper, NULL);
    int failed = atomic_load(&failures);
    printf("stress: %ld token passes, %ld page replacements, %ld reads checked, %ld pipe round trips\n",
           passes, remaps, reads, trips);
    if (passes == 0 || remaps == 0 || reads == 0 || trips == 0)
        failed++;
    printf("stress: %s\n", failed ? "FAILED" : "ok");
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: smp count|spread|pin|spin N|stress SECONDS\n");
        return 2;
    }
    const char *mode = argv[1];
    if (!strcmp(mode, "count")) {
        printf("sched_getaffinity: %d\nsysconf: %ld\n/proc/cpuinfo: %d\n", affinity_count(),
               sysconf(_SC_NPROCESSORS_ONLN), cpuinfo_count());
        return 0;
    }
    if (!strcmp(mode, "spread")) {
        int n = affinity_count();
        all_cpus = n >= 32 ? ~0u : (1u << n) - 1;
        pthread_t t[32];
        for (int i = 0; i < n; i++)
            pthread_create(&t[i], NULL, spread_worker, NULL);
        for (int i = 0; i < n; i++)
            pthread_join(t[i], NULL);
        printf("threads ran on %d of %d CPUs\n", __builtin_popcount(atomic_load(&seen) & all_cpus), n);
        return 0;
    }
    if (!strcmp(mode, "pin")) {
        int n = affinity_count();
        for (int c = n - 1; c >= 0; c--) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(c, &set);
            if (sched_setaffinity(0, sizeof set, &set) != 0) {
                printf("sched_setaffinity(%d): %s\n", c, strerror(errno));
                return 1;
            }
            printf("pinned to CPU %d: runs on CPU %d\n", c, cpu_now());
        }
        cpu_set_t none;
        CPU_ZERO(&none);
        CPU_SET(n + 5, &none);
        int r = sched_setaffinity(0, sizeof none, &none);
        printf("a mask of no CPU: %s\n", r == 0 ? "accepted" : strerror(errno));
        return 0;
    }
    if (!strcmp(mode, "spin")) {
        int n = argc > 2 ? atoi(argv[2]) : 4;
        if (n < 1 || n > 64)
            n = 4;
        pthread_t t[64];
        double start = seconds();
        for (long i = 0; i < n; i++)
            pthread_create(&t[i], NULL, spin_worker, (void *)i);
        for (int i = 0; i < n; i++)
            pthread_join(t[i], NULL);
        printf("%d threads: %.3f s\n", n, seconds() - start);
        return 0;
    }
    if (!strcmp(mode, "stress"))
        return stress(argc > 2 ? atof(argv[2]) : 10);
    fprintf(stderr, "smp: unknown mode %s\n", mode);
    return 2;
}
