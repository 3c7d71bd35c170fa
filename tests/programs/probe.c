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

static int deep(int n)
{
    volatile char page[4096];
    page[0] = (char)n;
    return n == 0 ? page[0] : deep(n - 1) + page[0];
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: probe exit N|segv|ud2|div0|abort|enosys|fork|forkbomb|spin|stack\n");
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
