/* File locks between processes: flock (held by an open file, shared by
 * inherited descriptors, waited for without LOCK_NB) and fcntl record
 * locks (byte ranges held by a process: F_GETLK names the holder,
 * F_SETLK fails with EAGAIN, F_SETLKW waits, read locks share, a close or
 * the holder's end releases them). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "show.h"

#define PATH "/tmp/kiln-locks-test"

static int range(int fd, int cmd, short type, off_t start, off_t len)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    return fcntl(fd, cmd, &fl);
}

/* The child says it has printed what comes before the wait. */
static int sync_pipe[2];
static void ready(void)
{
    if (write(sync_pipe[1], "+", 1) != 1)
        _exit(1);
}
static void await_child(void)
{
    char b;
    if (read(sync_pipe[0], &b, 1) != 1)
        exit(1);
}

static void wait_child(pid_t c)
{
    int st = 0;
    waitpid(c, &st, 0);
    printf("child %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "exited 0" : "failed");
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (pipe(sync_pipe))
        return 1;
    unlink(PATH);
    int fd = open(PATH, O_RDWR | O_CREAT, 0644);
    if (fd < 0 || write(fd, "0123456789", 10) != 10)
        return 1;

    /* flock */
    SHOW(flock(fd, LOCK_EX));
    pid_t parent = getpid();
    pid_t c = fork();
    if (c == 0) {
        int own = open(PATH, O_RDWR);
        SHOW(flock(own, LOCK_EX | LOCK_NB));
        SHOW(flock(own, LOCK_SH | LOCK_NB));
        SHOW(flock(fd, LOCK_EX | LOCK_NB)); /* the inherited open file holds it */
        ready();
        SHOW(flock(own, LOCK_EX));          /* waits for the parent */
        printf("child: got the flock lock\n");
        SHOW(flock(own, LOCK_UN));
        _exit(0);
    }
    await_child();
    usleep(20000);
    printf("parent: releasing the flock lock\n");
    /* Printed after the child ends: the child prints as soon as the lock is
     * released, so printing here first would race with it. */
    int unlocked = flock(fd, LOCK_UN);
    wait_child(c);
    printf("parent: flock(fd, LOCK_UN) = %d\n", unlocked);

    /* record locks */
    SHOW(range(fd, F_SETLK, F_WRLCK, 0, 100));
    SHOW(range(fd, F_SETLK, F_RDLCK, 1000, 10));
    c = fork();
    if (c == 0) {
        int own = open(PATH, O_RDWR);
        struct flock fl;
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_RDLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = 50;
        fl.l_len = 10;
        SHOW(fcntl(own, F_GETLK, &fl));
        printf("F_GETLK: %s, start %ld, len %ld, the parent's: %d\n",
               fl.l_type == F_WRLCK ? "F_WRLCK" : fl.l_type == F_RDLCK ? "F_RDLCK" : "F_UNLCK",
               (long)fl.l_start, (long)fl.l_len, fl.l_pid == parent);
        SHOW(range(own, F_SETLK, F_WRLCK, 50, 10));
        SHOW(range(own, F_SETLK, F_WRLCK, 200, 100));
        SHOW(range(own, F_SETLK, F_RDLCK, 1000, 10)); /* read locks share */
        SHOW(range(own, F_SETLK, F_WRLCK, 1000, 10));
        ready();
        SHOW(range(own, F_SETLKW, F_WRLCK, 0, 10)); /* waits for the close */
        printf("child: got the record lock\n");
        SHOW(range(own, F_SETLK, F_WRLCK, 500, 100));
        _exit(0); /* its end releases its locks */
    }
    await_child();
    usleep(20000);
    printf("parent: closing a descriptor of the file\n");
    int fd2 = dup(fd);
    int closed = close(fd2); /* any close releases the process's record locks */
    wait_child(c);
    printf("parent: close(fd2) = %d\n", closed);
    SHOW(range(fd, F_SETLK, F_WRLCK, 500, 100));
    SHOW(range(fd, F_SETLK, F_WRLCK, 0, 10));
    SHOW(range(fd, F_SETLK, F_UNLCK, 0, 0));
    close(fd);
    unlink(PATH);
    return 0;
}
