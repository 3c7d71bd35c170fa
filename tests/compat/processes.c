/* Processes: fork and wait (exit statuses, deaths by signal, WNOHANG,
 * ECHILD), copy-on-fork isolation of globals, heap and stack, descriptors
 * shared across fork (one file offset), a pipe between parent and child,
 * exec in a child (a missing program exits 127 by convention of the
 * child), and the parent/child ids seen from both sides. Pids themselves
 * differ between runs, so only relations between them are printed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "show.h"

static int global = 1;

static void show_status(const char *what, int st) {
    if (WIFEXITED(st))
        printf("%s: exited %d\n", what, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        printf("%s: killed by signal %d\n", what, WTERMSIG(st));
    else
        printf("%s: status %#x\n", what, st);
}

int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    pid_t me = getpid();
    /* Many children, each with its own status, collected in any order. */
    int seen = 0;
    for (int i = 0; i < 8; i++) {
        pid_t c = fork();
        if (c == 0)
            _exit(10 + i);
        if (c < 0)
            return 1;
    }
    for (;;) {
        int st;
        pid_t w = wait(&st);
        if (w < 0) {
            printf("wait: %s after %d children\n", strerrorname_np(errno), seen);
            break;
        }
        seen |= 1 << (WEXITSTATUS(st) - 10);
    }
    printf("statuses seen: %#x\n", seen);
    /* A child killed by a signal, and one by its own raise. */
    pid_t c = fork();
    if (c == 0) {
        pause();
        _exit(0);
    }
    SHOW(kill(c, SIGTERM));
    int st;
    SHOW(waitpid(c, &st, 0) == c);
    show_status("sigterm child", st);
    c = fork();
    if (c == 0) {
        raise(SIGKILL);
        _exit(0);
    }
    SHOW(waitpid(c, &st, 0) == c);
    show_status("sigkill child", st);
    /* Isolation: the child's writes stay its own. */
    char *heap = malloc(64);
    strcpy(heap, "parent heap");
    char stack[32] = "parent stack";
    int pfd[2];
    SHOW(pipe(pfd));
    c = fork();
    if (c == 0) {
        global = 2;
        strcpy(heap, "child heap");
        strcpy(stack, "child stack");
        char msg[128];
        int n = snprintf(msg, sizeof msg, "child sees global %d, %s, %s, parent is me's parent: %d", global,
                         heap, stack, getppid() == me);
        write(pfd[1], msg, n);
        _exit(0);
    }
    close(pfd[1]);
    char buf[256] = {0};
    ssize_t n = read(pfd[0], buf, sizeof buf - 1);
    printf("from the pipe (%zd): %s\n", n, buf);
    SHOW(read(pfd[0], buf, sizeof buf));
    SHOW(waitpid(c, &st, 0) == c);
    printf("parent sees global %d, %s, %s\n", global, heap, stack);
    /* One open file description, two processes: the offset is shared. */
    int fd = open("/data/words.txt", O_RDONLY);
    c = fork();
    if (c == 0) {
        char b[10];
        read(fd, b, sizeof b);
        _exit(0);
    }
    SHOW(waitpid(c, &st, 0) == c);
    SHOW(lseek(fd, 0, SEEK_CUR));
    /* WNOHANG with a live child, then ECHILD. */
    SHOW(pipe(pfd));
    c = fork();
    if (c == 0) {
        char b;
        close(pfd[1]);
        read(pfd[0], &b, 1);
        _exit(4);
    }
    close(pfd[0]);
    SHOW(waitpid(c, &st, WNOHANG));
    close(pfd[1]);
    SHOW(waitpid(c, &st, 0) == c);
    show_status("released child", st);
    SHOW(waitpid(-1, &st, WNOHANG));
    /* exec in a child: a missing program, then a real one. */
    c = fork();
    if (c == 0) {
        execl("/nope", "nope", (char *)0);
        _exit(errno == ENOENT ? 127 : 126);
    }
    SHOW(waitpid(c, &st, 0) == c);
    show_status("missing program", st);
    c = fork();
    if (c == 0) {
        execl("/bin/busybox", "busybox", "echo", "exec'd by a child", (char *)0);
        _exit(126);
    }
    SHOW(waitpid(c, &st, 0) == c);
    show_status("busybox child", st);
    return 0;
}
