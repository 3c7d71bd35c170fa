/* System calls from the call sites kiln rewrites into jumps once they are
 * hot: glibc's read (whose number is loaded by `xor eax, eax`, so the
 * instructions around the SYSCALL move), syscall() (number from a
 * register), in a loop long enough to be rewritten; then the same sites
 * interrupted by a signal — restarted with SA_RESTART, EINTR without —
 * and used again from several threads. Then a read of read's short shape
 * (`xor eax, eax; syscall; cmp`: the SYSCALL moves too) that gets hot
 * while other threads are blocked in it — they must come back through
 * the trampoline — and threads created and joined many times (glibc's
 * clone3 and thread-exit sites). */
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

/* read(2) in the shape of glibc's single-threaded path, with its own
 * unwind entry: two bytes before the SYSCALL, a compare after. Returns
 * the raw result (a negative errno on failure). */
long short_read(long fd, void *buf, long len);
__asm__(".text\n"
        ".globl short_read\n"
        ".type short_read, @function\n"
        "short_read:\n"
        ".cfi_startproc\n"
        "xor %eax, %eax\n"
        "syscall\n"
        "cmp $-4095, %rax\n"
        "ret\n"
        ".cfi_endproc\n"
        ".size short_read, .-short_read\n");

static int blocked_pipes[3][2];

static void *blocked_reader(void *arg)
{
    long i = (long)arg;
    char c = 0;
    long n = short_read(blocked_pipes[i][0], &c, 1);
    return (void *)(n == 1 ? (long)c : n);
}

/* Three threads block in short_read; each trap counts towards the site's
 * rewrite, which happens while the others wait inside it. */
static void readers_blocked_in_a_rewritten_site(void)
{
    pthread_t t[3];
    for (long i = 0; i < 3; i++) {
        if (pipe(blocked_pipes[i]))
            return;
        pthread_create(&t[i], NULL, blocked_reader, (void *)i);
    }
    usleep(200000);
    for (long i = 0; i < 3; i++) {
        char c = (char)('x' + i);
        if (write(blocked_pipes[i][1], &c, 1) != 1)
            return;
    }
    for (long i = 0; i < 3; i++) {
        void *r;
        pthread_join(t[i], &r);
        printf("blocked reader %ld read '%c'\n", i, (char)(long)r);
        close(blocked_pipes[i][0]);
        close(blocked_pipes[i][1]);
    }
    int p[2];
    if (pipe(p))
        return;
    int ok = 0;
    for (int i = 0; i < 50; i++) {
        char c = (char)('a' + i % 26), got = 0;
        if (write(p[1], &c, 1) == 1 && short_read(p[0], &got, 1) == 1 && got == c)
            ok++;
    }
    printf("short_read afterwards: %d of 50\n", ok);
    close(p[0]);
    close(p[1]);
}

static void *nothing(void *arg)
{
    return arg;
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
    readers_blocked_in_a_rewritten_site();
    long joined = 0;
    for (long i = 0; i < 300; i++) {
        pthread_t th;
        void *r = NULL;
        if (pthread_create(&th, NULL, nothing, (void *)i) == 0 && pthread_join(th, &r) == 0 &&
            (long)r == i)
            joined++;
    }
    printf("threads created and joined: %ld of 300\n", joined);
    return 0;
}
