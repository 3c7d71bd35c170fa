/* Pipes, eventfd, poll, select, epoll: readiness, edge and level
 * triggering, one-shot, timeouts, EOF and EPIPE, a producer thread waking
 * a consumer blocked in epoll_wait, and the errors of bad calls. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

static int p[2];

static void *producer(void *arg) {
    (void)arg;
    for (int i = 0; i < 5; i++) {
        struct timespec d = {0, 5 * 1000000L};
        nanosleep(&d, NULL);
        char b[16];
        int n = snprintf(b, sizeof b, "msg%d;", i);
        if (write(p[1], b, n) != n)
            return NULL;
    }
    close(p[1]);
    return NULL;
}

static long elapsed_ms(struct timespec a) {
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
}

#include "show.h"

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGPIPE, SIG_IGN);
    char buf[256] = "";

    /* poll on a pipe: empty, then readable, then EOF (POLLHUP). */
    SHOW(pipe2(p, O_CLOEXEC));
    struct pollfd pf = {.fd = p[0], .events = POLLIN};
    SHOW(poll(&pf, 1, 0));
    SHOW(write(p[1], "hello", 5));
    SHOW(poll(&pf, 1, 0));
    printf("revents %#x\n", pf.revents);
    SHOW(read(p[0], buf, sizeof buf));
    close(p[1]);
    SHOW(poll(&pf, 1, 100));
    printf("revents after close %#x\n", pf.revents);
    SHOW(read(p[0], buf, sizeof buf));
    close(p[0]);
    struct pollfd bad = {.fd = 999, .events = POLLIN};
    SHOW(poll(&bad, 1, 0));
    printf("revents bad fd %#x\n", bad.revents);

    /* EPIPE when the reader is gone (SIGPIPE ignored). */
    SHOW(pipe(p));
    close(p[0]);
    SHOW(write(p[1], "x", 1));
    close(p[1]);

    /* Non-blocking pipe: EAGAIN when empty, and when full. */
    SHOW(pipe2(p, O_NONBLOCK));
    SHOW(read(p[0], buf, 1));
    long total = 0;
    char chunk[4096];
    memset(chunk, 'z', sizeof chunk);
    for (;;) {
        ssize_t n = write(p[1], chunk, sizeof chunk);
        if (n < 0) {
            printf("pipe full after %ld bytes: %s\n", total, strerrorname_np(errno));
            break;
        }
        total += n;
    }
    close(p[0]);
    close(p[1]);

    /* A poll timeout takes about its time. */
    SHOW(pipe(p));
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pf.fd = p[0];
    SHOW(poll(&pf, 1, 30));
    long ms = elapsed_ms(t0);
    printf("poll waited %s\n", ms >= 29 && ms < 1000 ? "about 30 ms" : "the wrong time");

    /* select: a writable write end, an empty read end, a timeout. */
    fd_set rs, ws;
    FD_ZERO(&rs);
    FD_ZERO(&ws);
    FD_SET(p[0], &rs);
    FD_SET(p[1], &ws);
    struct timeval tv = {0, 20000};
    SHOW(select(p[1] + 1, &rs, &ws, NULL, &tv));
    printf("read set %d write set %d\n", FD_ISSET(p[0], &rs), FD_ISSET(p[1], &ws));
    FD_ZERO(&rs);
    FD_SET(p[0], &rs);
    tv.tv_sec = 0;
    tv.tv_usec = 20000;
    SHOW(select(p[0] + 1, &rs, NULL, NULL, &tv));
    printf("after timeout: read set %d, timeval %ld.%06ld\n", FD_ISSET(p[0], &rs),
           (long)tv.tv_sec, (long)tv.tv_usec);
    /* A descriptor that is surely closed, whatever the caller passed down.
     * Below 64: Linux ignores bits beyond the size of the descriptor table
     * (64 slots unless a higher descriptor was ever open), and would wait
     * forever instead of failing. */
    close(60);
    FD_ZERO(&rs);
    FD_SET(60, &rs);
    SHOW(select(61, &rs, NULL, NULL, NULL));
    close(p[0]);
    close(p[1]);

    /* eventfd counter and semaphore modes. */
    int efd = eventfd(3, EFD_NONBLOCK);
    uint64_t v = 0;
    SHOW(read(efd, &v, 8));
    printf("eventfd value %llu\n", (unsigned long long)v);
    SHOW(read(efd, &v, 8));
    v = 2;
    SHOW(write(efd, &v, 8));
    SHOW(write(efd, &v, 4));
    close(efd);
    efd = eventfd(2, EFD_SEMAPHORE | EFD_NONBLOCK);
    SHOW(read(efd, &v, 8));
    printf("semaphore read %llu\n", (unsigned long long)v);
    SHOW(read(efd, &v, 8));
    SHOW(read(efd, &v, 8));
    close(efd);

    /* epoll: level-triggered, edge-triggered, one-shot. */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    SHOW(pipe(p));
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = 0x1122334455667788ULL};
    SHOW(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e));
    SHOW(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e));
    struct epoll_event out[8];
    memset(out, 0, sizeof out);
    SHOW(epoll_wait(ep, out, 8, 0));
    SHOW(write(p[1], "abc", 3));
    SHOW(epoll_wait(ep, out, 8, 0));
    printf("event %#x data %#llx\n", out[0].events, (unsigned long long)out[0].data.u64);
    SHOW(epoll_wait(ep, out, 8, 0)); /* level: still ready */
    e.events = EPOLLIN | EPOLLET;
    SHOW(epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &e));
    SHOW(epoll_wait(ep, out, 8, 0)); /* edge: reported once */
    SHOW(epoll_wait(ep, out, 8, 0));
    SHOW(read(p[0], buf, sizeof buf));
    SHOW(write(p[1], "d", 1));
    SHOW(epoll_wait(ep, out, 8, 0)); /* new data: a new edge */
    SHOW(read(p[0], buf, sizeof buf));
    e.events = EPOLLIN | EPOLLONESHOT;
    SHOW(epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &e));
    SHOW(write(p[1], "e", 1));
    SHOW(epoll_wait(ep, out, 8, 0));
    SHOW(epoll_wait(ep, out, 8, 0)); /* disarmed */
    SHOW(epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &e));
    SHOW(epoll_wait(ep, out, 8, 0)); /* re-armed */
    SHOW(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL));
    SHOW(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL));
    SHOW(epoll_ctl(ep, EPOLL_CTL_ADD, ep, &e));
    SHOW(epoll_ctl(p[0], EPOLL_CTL_ADD, p[1], &e));
    SHOW(epoll_wait(ep, out, 0, 0));
    int reg = open("/etc/passwd", O_RDONLY);
    SHOW(epoll_ctl(ep, EPOLL_CTL_ADD, reg, &e));
    close(reg);
    close(p[0]);
    close(p[1]);

    /* A consumer blocked in epoll_wait, woken by a producer thread. */
    SHOW(pipe(p));
    e.events = EPOLLIN | EPOLLRDHUP;
    e.data.fd = p[0];
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e);
    pthread_t t;
    pthread_create(&t, NULL, producer, NULL);
    char got[128] = "";
    int hup = 0;
    while (!hup) {
        int n = epoll_wait(ep, out, 8, 2000);
        if (n <= 0) {
            printf("epoll_wait gave %d\n", n);
            break;
        }
        if (out[0].events & EPOLLIN) {
            ssize_t r = read(p[0], buf, sizeof buf - 1);
            if (r > 0) {
                buf[r] = 0;
                strcat(got, buf);
            } else {
                hup = 1;
            }
        } else if (out[0].events & EPOLLHUP) {
            hup = 1;
        }
    }
    pthread_join(t, NULL);
    printf("consumer got \"%s\"\n", got);
    close(ep);
    return 0;
}
