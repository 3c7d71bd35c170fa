/* Threads and futexes: pthread create/join, a contended mutex, condition
 * variables with many waiters, a barrier, thread-local storage, sleeps and
 * sched_yield. Every line of output depends on the kernel getting clone,
 * futex and the scheduler right; the totals are checked, not assumed. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 8
#define ROUNDS 20000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;
static __thread int tls_value;

static void *add_many(void *arg) {
    tls_value = (int)(long)arg;
    for (int i = 0; i < ROUNDS; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
        if (i % 1000 == 0)
            sched_yield();
    }
    return (void *)(long)(tls_value * 10);
}

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate = PTHREAD_COND_INITIALIZER;
static pthread_cond_t arrived_cond = PTHREAD_COND_INITIALIZER;
static int open_gate, arrived, passed;

static void *wait_at_gate(void *arg) {
    (void)arg;
    pthread_mutex_lock(&gate_lock);
    arrived++;
    pthread_cond_signal(&arrived_cond);
    while (!open_gate)
        pthread_cond_wait(&gate, &gate_lock);
    passed++;
    pthread_mutex_unlock(&gate_lock);
    return NULL;
}

static pthread_barrier_t barrier;
static atomic_int serial_count;

static void *meet(void *arg) {
    (void)arg;
    for (int i = 0; i < 5; i++)
        if (pthread_barrier_wait(&barrier) == PTHREAD_BARRIER_SERIAL_THREAD)
            atomic_fetch_add(&serial_count, 1);
    return NULL;
}

static long ms_between(struct timespec a, struct timespec b) {
    return (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
}

static void *sleeper(void *arg) {
    struct timespec d = {0, (long)arg * 1000000L};
    nanosleep(&d, NULL);
    return arg;
}

static void *own_tid(void *arg) {
    (void)arg;
    return (void *)(long)gettid();
}

int main(void) {
    pthread_t t[WORKERS];

    for (long i = 0; i < WORKERS; i++)
        if (pthread_create(&t[i], NULL, add_many, (void *)(i + 1)) != 0)
            return 1;
    long sum = 0;
    for (int i = 0; i < WORKERS; i++) {
        void *r;
        pthread_join(t[i], &r);
        sum += (long)r;
    }
    printf("mutex: counter %ld (expected %d), join values sum %ld\n", counter,
           WORKERS * ROUNDS, sum);
    printf("tls: main thread still sees %d\n", tls_value);

    enum { WAITERS = 32 };
    pthread_t w[WAITERS];
    for (int i = 0; i < WAITERS; i++)
        pthread_create(&w[i], NULL, wait_at_gate, NULL);
    pthread_mutex_lock(&gate_lock);
    while (arrived < WAITERS)
        pthread_cond_wait(&arrived_cond, &gate_lock);
    int before = passed;
    open_gate = 1;
    pthread_cond_broadcast(&gate);
    pthread_mutex_unlock(&gate_lock);
    for (int i = 0; i < WAITERS; i++)
        pthread_join(w[i], NULL);
    printf("condvar: %d waiters arrived, %d passed before broadcast, %d after\n",
           arrived, before, passed);

    pthread_barrier_init(&barrier, NULL, 4);
    pthread_t b[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&b[i], NULL, meet, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(b[i], NULL);
    printf("barrier: %d serial threads over 5 rounds\n", atomic_load(&serial_count));

    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pthread_t s[3];
    for (long i = 0; i < 3; i++)
        pthread_create(&s[i], NULL, sleeper, (void *)(20 + i * 10));
    for (int i = 0; i < 3; i++)
        pthread_join(s[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &end);
    long ms = ms_between(start, end);
    printf("sleep: three sleepers done together in %s\n",
           ms >= 40 && ms < 1000 ? "between 40 ms and 1 s" : "the wrong time");

    /* A raw futex: wait with a value that does not match is EAGAIN, a wait
     * with a timeout times out, a wake with no waiters wakes nobody. */
    int word = 1;
    long r = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    printf("futex wait on changed value: %ld %s\n", r, r < 0 ? strerror(errno) : "");
    struct timespec tmo = {0, 5000000};
    r = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 1, &tmo, NULL, 0);
    printf("futex wait with timeout: %ld %s\n", r, r < 0 ? strerror(errno) : "");
    r = syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0);
    printf("futex wake nobody: %ld\n", r);
    pthread_t g;
    void *tid;
    pthread_create(&g, NULL, own_tid, NULL);
    pthread_join(g, &tid);
    printf("gettid: main %s pid, thread %s pid\n",
           gettid() == getpid() ? "equals" : "differs from",
           (long)tid == getpid() ? "equals" : "differs from");
    return 0;
}
