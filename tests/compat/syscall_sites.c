/* System calls from the call sites kiln rewrites into jumps once they are
 * hot: glibc's read (whose number is loaded by `xor eax, eax`, so the
 * instructions around the SYSCALL move), syscall() (number from a
 * register), in a loop long enough to be rewritten; then the same sites
 * interrupted by a signal — restarted with SA_RESTART, EINTR without —
 * and used again from several threads. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

/* One byte through a pipe, many times: the read and write sites get hot. */
static int ping(int rounds)
{
    int p[2];
    if (pipe(p))
        return -1;
    int ok = 0;
    for (int i = 0; i < rounds; i++) {
        char c = (char)('a' + i % 26), got = 0;
        if (write(p[1], &c, 1) == 1 && read(p[0], &got, 1) == 1 && got == c)
            ok++;
    }
    close(p[0]);
    close(p[1]);
    return ok;
}

/* A read that blocks until a child writes, with a timer firing meanwhile. */
static void blocked_read(int restart)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigaction(SIGALRM, &sa, NULL);
    int p[2];
    if (pipe(p))
        return;
    pid_t c = fork();
    if (c == 0) {
        close(p[0]);
        usleep(300000);
        if (write(p[1], "late", 4) != 4)
            _exit(1);
        _exit(0);
    }
    close(p[1]);
    alarms = 0;
    struct itimerval t = {{0, 0}, {0, 50000}};
    setitimer(ITIMER_REAL, &t, NULL);
    char buf[8] = {0};
    errno = 0;
    ssize_t n = read(p[0], buf, sizeof buf);
    int e = errno;
    if (restart)
        printf("SA_RESTART: read %zd bytes \"%.*s\" after a signal: %d\n", n, (int)(n > 0 ? n : 0), buf,
               alarms > 0);
    else
        printf("no SA_RESTART: read %zd (%s) after a signal: %d\n", n, n < 0 ? strerrorname_np(e) : "",
               alarms > 0);
    int st;
    waitpid(c, &st, 0);
    close(p[0]);
}

static void *thread_main(void *arg)
{
    (void)arg;
    return (void *)(long)ping(200);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ping: %d of 200\n", ping(200));
    long pid = 0;
    for (int i = 0; i < 100; i++)
        pid = syscall(SYS_getpid);
    printf("syscall(SYS_getpid) is getpid(): %d\n", pid == getpid());
    blocked_read(1);
    blocked_read(0);
    printf("ping after the signals: %d of 200\n", ping(200));
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, thread_main, NULL);
    for (int i = 0; i < 3; i++) {
        void *r;
        pthread_join(t[i], &r);
        printf("thread %d: ping %ld of 200\n", i, (long)r);
    }
    return 0;
}
