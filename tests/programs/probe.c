/* Exercises the failure paths of the boot tests, one per mode:
 *   exit N   exit with status N
 *   segv     write through a null pointer (SIGSEGV)
 *   ud2      execute an undefined instruction (SIGILL)
 *   div0     divide by zero (SIGFPE)
 *   abort    abort() (SIGABRT)
 *   enosys   call a system call kiln does not implement; print the errno
 *   fork     fork(); the child exits 42, the parent waits and prints
 *            what it saw
 *   forkbomb fork children that wait forever until fork fails; print how
 *            many and the errno name, then exit (ending the appliance)
 *   forkmem  fill 100 MiB, fork, and print how much memory the fork and
 *            the child's write of 10 MiB of it took (copy-on-write), the
 *            RSS of both, and whether the parent's bytes stayed its own
 *   orphan   leave a grandchild that ends after its parent (adopted by
 *            pid 1, which never waits for it) and print whether it stays
 *            a zombie or is reaped (kiln run --init)
 *   childfault  fork a child that writes through a null pointer; print
 *            how it ended and that the parent goes on
 *   spin     loop forever
 *   stack    touch 4 MiB of stack (demand paging), then exit 0 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int zero, one = 1;

/* A "Name:  value kB" field of a /proc file, in KiB (-1 if missing). */
static long proc_kib(const char *path, const char *name)
{
    FILE *f = fopen(path, "r");
    char line[256];
    long v = -1;
    size_t n = strlen(name);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, name, n) && line[n] == ':')
            v = strtol(line + n + 1, 0, 10);
    if (f)
        fclose(f);
    return v;
}

static int deep(int n)
{
    volatile char page[4096];
    page[0] = (char)n;
    return n == 0 ? page[0] : deep(n - 1) + page[0];
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: probe exit N|segv|ud2|div0|abort|enosys|fork|childfault|forkbomb|forkmem|orphan|spin|stack\n");
        return 2;
    }
    const char *mode = argv[1];
    if (!strcmp(mode, "exit"))
        return argc > 2 ? atoi(argv[2]) : 0;
    if (!strcmp(mode, "segv"))
        *(volatile int *)0 = 1;
    if (!strcmp(mode, "ud2"))
        __asm__ volatile("ud2");
    if (!strcmp(mode, "div0"))
        return one / zero;
    if (!strcmp(mode, "abort"))
        abort();
    if (!strcmp(mode, "enosys")) {
        long r = syscall(SYS_kexec_load, 0, 0, 0, 0);
        printf("kexec_load returned %ld, errno %s\n", r, errno == ENOSYS ? "ENOSYS" : strerror(errno));
        return 0;
    }
    if (!strcmp(mode, "fork")) {
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid == 0)
            _exit(getppid() == parent ? 42 : 1);
        if (pid < 0) {
            printf("fork failed: %s\n", strerror(errno));
            return 1;
        }
        int st = 0;
        pid_t w = waitpid(pid, &st, 0);
        printf("child %s, exited %d; wait again: %s\n", w == pid ? "reaped" : "lost",
               WIFEXITED(st) ? WEXITSTATUS(st) : -1, waitpid(-1, &st, 0) < 0 ? strerror(errno) : "?");
        return 0;
    }
    if (!strcmp(mode, "childfault")) {
        pid_t pid = fork();
        if (pid == 0) {
            *(volatile int *)0 = 1;
            _exit(0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        printf("child %s %d; the parent goes on\n", WIFSIGNALED(st) ? "killed by signal" : "exited",
               WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        return 0;
    }
    if (!strcmp(mode, "forkbomb")) {
        int made = 0;
        for (;;) {
            pid_t c = fork();
            if (c == 0) {
                pause();
                _exit(0);
            }
            if (c < 0)
                break;
            made++;
        }
        printf("made %s children, then %s\n", made > 10 ? "many" : "few", errno == EAGAIN ? "EAGAIN" : strerror(errno));
        return 0;
    }
    if (!strcmp(mode, "forkmem")) {
        size_t len = 100 << 20;
        char *m = malloc(len);
        if (!m)
            return 1;
        memset(m, 1, len);
        long before = proc_kib("/proc/meminfo", "MemFree");
        pid_t c = fork();
        if (c == 0) {
            long forked = proc_kib("/proc/meminfo", "MemFree");
            long rss = proc_kib("/proc/self/status", "VmRSS");
            /* One byte a page, through a volatile pointer: the compiler
             * may not drop stores that nothing reads before _exit. */
            for (size_t i = 0; i < (10 << 20); i += 4096)
                ((volatile char *)m)[i] = 2;
            long written = proc_kib("/proc/meminfo", "MemFree");
            printf("fork copied %ld MiB; child RSS %ld MiB; its write of 10 MiB copied %ld MiB\n",
                   (before - forked) / 1024, rss / 1024, (forked - written) / 1024);
            _exit(m[0] == 2 && m[len - 1] == 1 ? 0 : 1);
        }
        int st = 0;
        waitpid(c, &st, 0);
        printf("child exited %d; parent RSS %ld MiB; parent's bytes its own: %s\n",
               WIFEXITED(st) ? WEXITSTATUS(st) : -1, proc_kib("/proc/self/status", "VmRSS") / 1024,
               m[0] == 1 && m[(10 << 20) - 1] == 1 ? "yes" : "no");
        return 0;
    }
    if (!strcmp(mode, "orphan")) {
        int fds[2];
        if (pipe(fds))
            return 1;
        pid_t middle = fork();
        if (middle == 0) {
            pid_t g = fork();
            if (g == 0) {
                while (getppid() == middle)
                    usleep(1000);
                _exit(0);
            }
            write(fds[1], &g, sizeof g);
            _exit(0);
        }
        pid_t g = 0;
        read(fds[0], &g, sizeof g);
        waitpid(middle, 0, 0);
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)g);
        const char *fate = "still running";
        for (int i = 0; i < 500; i++) {
            FILE *f = fopen(path, "r");
            if (!f) {
                fate = "reaped";
                break;
            }
            char line[256] = {0};
            fgets(line, sizeof line, f);
            fclose(f);
            char *p = strrchr(line, ')');
            if (p && p[2] == 'Z') {
                fate = "a zombie";
                break;
            }
            usleep(10000);
        }
        printf("the orphan is %s\n", fate);
        return 0;
    }
    if (!strcmp(mode, "spin"))
        for (;;)
            zero++;
    if (!strcmp(mode, "stack")) {
        deep(1000);
        printf("touched %d KiB of stack\n", 4000);
        return 0;
    }
    fprintf(stderr, "probe: unknown mode %s\n", mode);
    return 2;
}
