/* Signals for a process as a whole go to any of its threads that does not
 * block them: a child whose main thread has ended (pthread_exit) still
 * gets them through its other thread, and one whose first thread blocks
 * a signal gets it in the thread that does not. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "show.h"

static int report;

static void *waiter(void *arg)
{
    (void)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    int sig = 0;
    if (sigwait(&set, &sig) == 0 && write(report, "1", 1) != 1)
        _exit(3);
    for (;;)
        pause(); /* SIGTERM, at its default, ends the process */
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    int pfd[2];
    if (pipe(pfd))
        return 1;
    report = pfd[1];
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pid_t c = fork();
    if (c == 0) {
        pthread_t t;
        pthread_create(&t, NULL, waiter, NULL);
        if (write(report, "+", 1) != 1)
            _exit(3);
        /* The main thread ends (SYS_exit ends one thread; pthread_exit
         * would need libgcc_s); the process lives on. */
        syscall(SYS_exit, 0);
    }
    char b;
    SHOW(read(pfd[0], &b, 1));
    usleep(20000);
    SHOW(kill(c, SIGUSR1));
    SHOW(read(pfd[0], &b, 1));
    printf("the remaining thread took SIGUSR1: %s\n", b == '1' ? "yes" : "no");
    SHOW(kill(c, SIGTERM));
    int st = 0;
    SHOW(waitpid(c, &st, 0) == c);
    printf("child: %s %d\n", WIFSIGNALED(st) ? "killed by signal" : "exited", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    return 0;
}
