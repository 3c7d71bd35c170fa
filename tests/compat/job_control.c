/* Job control: a child stopped by SIGSTOP, SIGTSTP and its own raise()
 * (waitpid with WUNTRACED, waitid with WSTOPPED), continued by SIGCONT
 * (WCONTINUED, its SIGCONT handler), the parent's SIGCHLD with
 * CLD_STOPPED/CLD_CONTINUED — and none under SA_NOCLDSTOP — a stopped
 * child killed by SIGKILL, and a stopped child that sees no other signal
 * until it goes on. Only relations between pids are printed. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "show.h"

static volatile sig_atomic_t chld_count, chld_code, chld_status;

static void on_chld(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    chld_count++;
    chld_code = si->si_code;
    chld_status = si->si_status;
}

static const char *code_name(int code)
{
    switch (code) {
    case CLD_EXITED: return "CLD_EXITED";
    case CLD_KILLED: return "CLD_KILLED";
    case CLD_STOPPED: return "CLD_STOPPED";
    case CLD_CONTINUED: return "CLD_CONTINUED";
    default: return "?";
    }
}

static void show_status(const char *what, int st)
{
    if (WIFEXITED(st))
        printf("%s: exited %d\n", what, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        printf("%s: killed by signal %d\n", what, WTERMSIG(st));
    else if (WIFSTOPPED(st))
        printf("%s: stopped by signal %d\n", what, WSTOPSIG(st));
    else if (WIFCONTINUED(st))
        printf("%s: continued\n", what);
    else
        printf("%s: status %#x\n", what, st);
}

/* Waits (with a pause) for SIGCHLD number `n`, and prints what it said. */
static void show_sigchld(int n)
{
    for (int i = 0; i < 2000 && chld_count < n; i++)
        usleep(1000);
    printf("SIGCHLD %d: %s, status %d\n", (int)chld_count, chld_count >= n ? code_name(chld_code) : "none",
           chld_count >= n ? (int)chld_status : 0);
}

static volatile sig_atomic_t conts, usr1s;
static void on_cont(int sig) { (void)sig; conts++; }
static void on_usr1(int sig) { (void)sig; usr1s++; }

/* A child that waits for signals and reports on its pipe what it saw each
 * time sigsuspend() returns; it ends when a signal kills it. */
static int ready_fd;

static pid_t waiting_child(int report)
{
    pid_t c = fork();
    if (c == 0) {
        signal(SIGCONT, on_cont);
        signal(SIGUSR1, on_usr1);
        /* The signals are taken only inside sigsuspend, so none is used
         * up between one wait and the next. */
        sigset_t both, none;
        sigemptyset(&both);
        sigaddset(&both, SIGCONT);
        sigaddset(&both, SIGUSR1);
        sigprocmask(SIG_BLOCK, &both, &none);
        if (write(report, "+", 1) != 1)
            _exit(1);
        for (;;) {
            sigsuspend(&none);
            char line[64];
            int n = snprintf(line, sizeof line, "child: %d SIGCONT, %d SIGUSR1\n", (int)conts, (int)usr1s);
            if (write(report, line, (size_t)n) != n)
                _exit(1);
        }
    }
    char ready;
    if (read(ready_fd, &ready, 1) != 1)
        exit(1);
    return c;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_chld;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    int pfd[2];
    if (pipe(pfd))
        return 1;
    ready_fd = pfd[0];
    char buf[128];
    int st = 0;

    /* SIGSTOP, then SIGCONT; a SIGUSR1 sent while stopped waits. */
    pid_t c = waiting_child(pfd[1]);
    SHOW(kill(c, SIGSTOP));
    SHOW(waitpid(c, &st, WUNTRACED) == c);
    show_status("after SIGSTOP", st);
    show_sigchld(1);
    SHOW(waitpid(c, &st, WUNTRACED | WNOHANG));
    SHOW(kill(c, SIGUSR1));
    usleep(20000);
    SHOW(waitpid(c, &st, WNOHANG));
    SHOW(kill(c, SIGCONT));
    SHOW(waitpid(c, &st, WCONTINUED) == c);
    show_status("after SIGCONT", st);
    show_sigchld(2);
    ssize_t n = read(pfd[0], buf, sizeof buf - 1);
    if (n > 0) {
        buf[n] = 0;
        fputs(buf, stdout);
    }
    SHOW(kill(c, SIGTERM));
    SHOW(waitpid(c, &st, 0) == c);
    show_status("the first child", st);
    show_sigchld(3);

    /* SIGTSTP stops too; waitid(WSTOPPED) sees it with its siginfo; a
     * stopped child dies of SIGKILL. */
    chld_count = 0;
    c = waiting_child(pfd[1]);
    SHOW(kill(c, SIGTSTP));
    siginfo_t si;
    memset(&si, 0, sizeof si);
    SHOW(waitid(P_PID, (id_t)c, &si, WSTOPPED));
    printf("waitid: %s, status %d, pid matches: %d\n", code_name(si.si_code), si.si_status, si.si_pid == c);
    SHOW(kill(c, SIGKILL));
    SHOW(waitpid(c, &st, 0) == c);
    show_status("the stopped child", st);

    /* A child that stops itself; under SA_NOCLDSTOP no SIGCHLD comes for
     * the stop or the continue, only for the end. */
    sa.sa_flags |= SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    chld_count = 0;
    c = fork();
    if (c == 0) {
        raise(SIGSTOP);
        _exit(7);
    }
    SHOW(waitpid(c, &st, WUNTRACED) == c);
    show_status("raise(SIGSTOP)", st);
    SHOW(kill(c, SIGCONT));
    SHOW(waitpid(c, &st, 0) == c);
    show_status("the self-stopped child", st);
    show_sigchld(1);
    printf("SIGCHLD count under SA_NOCLDSTOP: %d\n", (int)chld_count);
    SHOW(waitpid(-1, &st, WNOHANG | WUNTRACED | WCONTINUED));
    return 0;
}
