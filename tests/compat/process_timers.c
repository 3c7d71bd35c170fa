/* Timers belong to the process that set them: a forked child starts with
 * no alarm, its own interval timer and POSIX timer signal the child (the
 * parent, whose SIGALRM and SIGUSR1 stay at their default, would die of
 * one), and the parent's alarm is still there afterwards. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "show.h"

static volatile sig_atomic_t alarms, usr1s;
static void on_alarm(int sig) { (void)sig; alarms++; }
static void on_usr1(int sig) { (void)sig; usr1s++; }

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    SHOW(alarm(100));
    pid_t c = fork();
    if (c == 0) {
        /* Not inherited. */
        printf("child: alarm(0) = %u\n", alarm(0));
        signal(SIGALRM, on_alarm);
        signal(SIGUSR1, on_usr1);
        struct itimerval it = {{0, 20000}, {0, 20000}};
        setitimer(ITIMER_REAL, &it, NULL);
        while (alarms < 3)
            pause();
        memset(&it, 0, sizeof it);
        setitimer(ITIMER_REAL, &it, NULL);
        timer_t t;
        struct sigevent ev;
        memset(&ev, 0, sizeof ev);
        ev.sigev_notify = SIGEV_SIGNAL;
        ev.sigev_signo = SIGUSR1;
        if (timer_create(CLOCK_MONOTONIC, &ev, &t))
            _exit(1);
        struct itimerspec ts = {{0, 0}, {0, 30000000}};
        timer_settime(t, 0, &ts, NULL);
        while (usr1s < 1)
            pause();
        timer_delete(t);
        printf("child: %d SIGALRM from its interval timer, %d SIGUSR1 from its POSIX timer\n",
               (int)alarms, (int)usr1s);
        _exit(0);
    }
    int st = 0;
    SHOW(waitpid(c, &st, 0) == c);
    printf("child %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "exited 0" : "failed");
    unsigned left = alarm(0);
    printf("parent: its alarm is still set: %s\n", left > 90 && left <= 100 ? "yes" : "no");
    struct itimerval now;
    getitimer(ITIMER_REAL, &now);
    printf("parent: no interval timer of the child's: %s\n",
           now.it_interval.tv_usec == 0 && now.it_value.tv_sec == 0 ? "yes" : "no");
    return 0;
}
