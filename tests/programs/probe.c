/* Exercises the failure paths of the boot tests, one per mode:
 *   exit N   exit with status N
 *   segv     write through a null pointer (SIGSEGV)
 *   ud2      execute an undefined instruction (SIGILL)
 *   div0     divide by zero (SIGFPE)
 *   abort    abort() (SIGABRT)
 *   enosys   call a system call kiln does not implement; print the errno
 *   fork     fork(); print what it returned (kiln: -1, ENOSYS)
 *   spin     loop forever
 *   stack    touch 4 MiB of stack (demand paging), then exit 0 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
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
        fprintf(stderr, "usage: probe exit N|segv|ud2|div0|abort|enosys|fork|spin|stack\n");
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
        pid_t pid = fork();
        if (pid == 0)
            _exit(0);
        printf("fork returned %d, errno %s\n", (int)pid, pid < 0 ? strerror(errno) : "-");
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
