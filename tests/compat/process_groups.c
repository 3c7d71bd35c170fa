/* Process groups, sessions and what a parent hears of its children:
 * setpgid/getpgid and kill of a whole group, setsid/getsid in a child,
 * SIGCHLD with its siginfo, children reaped for the parent under SIG_IGN
 * and SA_NOCLDWAIT, a zombie seen in /proc before it is collected,
 * another process's /proc entries, fork in a threaded process (only the
 * caller lives on in the child), vfork + exec (the child in the parent's
 * memory), posix_spawn (a failed exec reported), and the
 * parent-death signal. Pids differ between runs (and the program is not
 * pid 1 natively), so only relations between them are printed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "show.h"

extern char **environ;

static volatile sig_atomic_t chld_count, chld_code, chld_status, chld_pid_ok;
static volatile pid_t expected;

static void on_chld(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    chld_count++;
    chld_code = si->si_code;
    chld_status = si->si_status;
    chld_pid_ok = si->si_pid == expected;
}

static void show_status(const char *what, int st) {
    if (WIFEXITED(st))
        printf("%s: exited %d\n", what, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        printf("%s: killed by signal %d\n", what, WTERMSIG(st));
    else
        printf("%s: status %#x\n", what, st);
}

/* A field of /proc/PID/status ("Threads", "PPid", ...), -1 if missing. */
static long status_field(pid_t pid, const char *name) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    size_t n = strlen(name);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, n) == 0 && line[n] == ':')
            v = strtol(line + n + 1, 0, 10);
    fclose(f);
    return v;
}

/* The state letter and parent of /proc/PID/stat. */
static void stat_of(pid_t pid, char *state, pid_t *ppid) {
    char path[64], buf[512] = {0};
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    *state = '?';
    *ppid = -1;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    char *close_paren = n > 0 ? strrchr(buf, ')') : 0;
    if (close_paren) {
        int pp;
        if (sscanf(close_paren + 2, "%c %d", state, &pp) == 2)
            *ppid = pp;
    }
}

static void *idle_thread(void *arg) {
    (void)arg;
    for (;;)
        pause();
    return 0;
}

static int report_fd = -1;
static pid_t first_parent;

static void on_usr1(int sig) {
    /* The grandchild below: told that its parent ended. */
    char msg[80];
    int n = snprintf(msg, sizeof msg, "grandchild: signal %d, adopted by another %d\n", sig,
                     getppid() != first_parent);
    write(report_fd, msg, n);
    _exit(0);
}

int main(int argc, char **argv) {
    setvbuf(stdout, 0, _IONBF, 0);
    if (argc > 1 && strcmp(argv[1], "exec-me") == 0) {
        printf("exec'd: %s, parent kept: %d\n", argv[2], getppid() == atoi(argv[3]));
        return 9;
    }
    pid_t me = getpid();
    int st;

    /* Groups: two children moved into a new group, killed together. */
    SHOW(getpgid(0) == getpgrp());
    SHOW(getsid(0) == getsid(me));
    pid_t a = fork();
    if (a == 0) {
        for (;;)
            pause();
    }
    pid_t b = fork();
    if (b == 0) {
        for (;;)
            pause();
    }
    SHOW(setpgid(a, a));
    SHOW(getpgid(a) == a);
    SHOW(setpgid(b, a));
    SHOW(getpgid(b) == a);
    SHOW(getpgid(b) != getpgrp());
    SHOW(setpgid(b, 0x7ffffff0));
    SHOW(kill(-a, SIGUSR1));
    SHOW(waitpid(-a, &st, 0) > 0);
    show_status("first of the group", st);
    SHOW(waitpid(-a, &st, 0) > 0);
    show_status("second of the group", st);
    SHOW(waitpid(-a, &st, WNOHANG));
    SHOW(kill(-a, SIGUSR1));

    /* A session of its own, in a child. */
    pid_t c = fork();
    if (c == 0) {
        pid_t s = setsid();
        printf("child: setsid is its pid %d, getsid %d, getpgrp %d\n", s == getpid(),
               getsid(0) == getpid(), getpgrp() == getpid());
        int r = setsid();
        int e = errno;
        printf("child: setsid again %d %s\n", r, strerrorname_np(e));
        r = setpgid(0, getpgid(getppid()));
        e = errno;
        printf("child: setpgid into the old group %d %s\n", r, strerrorname_np(e));
        _exit(0);
    }
    SHOW(waitpid(c, &st, 0) == c);

    /* SIGCHLD with the child's pid, how it ended and its status. */
    struct sigaction sa = {0};
    sa.sa_sigaction = on_chld;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    SHOW(sigaction(SIGCHLD, &sa, 0));
    expected = fork();
    if (expected == 0)
        _exit(42);
    SHOW(waitpid(expected, &st, 0) == expected);
    printf("SIGCHLD: count %d, code %d, status %d, pid matches %d\n", chld_count, chld_code,
           chld_status, chld_pid_ok);
    expected = fork();
    if (expected == 0) {
        for (;;)
            pause();
    }
    SHOW(kill(expected, SIGTERM));
    SHOW(waitpid(expected, &st, 0) == expected);
    printf("SIGCHLD: count %d, code %d, status %d, pid matches %d\n", chld_count, chld_code,
           chld_status, chld_pid_ok);

    /* A zombie until collected, seen in /proc; a live child's entries. */
    int pfd[2];
    SHOW(pipe(pfd));
    c = fork();
    if (c == 0) {
        char x;
        close(pfd[1]);
        read(pfd[0], &x, 1);
        _exit(0);
    }
    close(pfd[0]);
    char state;
    pid_t parent;
    stat_of(c, &state, &parent);
    /* (Running or asleep by now: its state is left out.) */
    printf("live child: parent is me %d, PPid %d\n", parent == me, status_field(c, "PPid") == me);
    close(pfd[1]);
    siginfo_t si;
    SHOW(waitid(P_PID, c, &si, WEXITED | WNOWAIT));
    stat_of(c, &state, &parent);
    printf("ended child: state %c, parent is me %d\n", state, parent == me);
    SHOW(waitpid(c, &st, 0) == c);
    stat_of(c, &state, &parent);
    printf("collected child: state %c\n", state);
    char link[64] = {0};
    SHOW(readlink("/proc/self", link, sizeof link - 1) > 0);
    printf("/proc/self names me: %d\n", atoi(link) == me);

    /* Children reaped for the parent: SIG_IGN, then SA_NOCLDWAIT. */
    signal(SIGCHLD, SIG_IGN);
    c = fork();
    if (c == 0)
        _exit(3);
    SHOW(waitpid(c, &st, 0));
    sa.sa_flags = SA_SIGINFO | SA_NOCLDWAIT;
    SHOW(sigaction(SIGCHLD, &sa, 0));
    int before = chld_count;
    expected = c = fork();
    if (c == 0)
        _exit(4);
    SHOW(waitpid(c, &st, 0));
    printf("SIGCHLD under SA_NOCLDWAIT: %d more\n", chld_count - before);
    signal(SIGCHLD, SIG_DFL);

    /* vfork + exec of this program, posix_spawn of it and of nothing. */
    char mine[16];
    snprintf(mine, sizeof mine, "%d", (int)me);
    c = vfork();
    if (c == 0) {
        execl("/proc/self/exe", "self", "exec-me", "by vfork", mine, (char *)0);
        _exit(127);
    }
    SHOW(waitpid(c, &st, 0) == c);
    show_status("vfork child", st);
    pid_t spawned;
    char *spawn_argv[] = {"self", "exec-me", "by posix_spawn", mine, 0};
    /* (The parent goes on once the child execs: the result is printed
     * after the child's line.) */
    int spawn_result = posix_spawn(&spawned, "/proc/self/exe", 0, 0, spawn_argv, environ);
    SHOW(waitpid(spawned, &st, 0) == spawned);
    printf("posix_spawn of this program: %d\n", spawn_result);
    show_status("spawned child", st);
    /* The child reports the failed exec through the memory it shares with
     * the parent (vfork): posix_spawn itself fails. */
    SHOW(posix_spawn(&spawned, "/nope", 0, 0, spawn_argv, environ));
    /* And the vfork child's writes are the parent's memory too. */
    volatile int shared_word = 0;
    c = vfork();
    if (c == 0) {
        shared_word = 7;
        _exit(0);
    }
    SHOW(waitpid(c, &st, 0) == c);
    printf("written by the vfork child: %d\n", shared_word);

    /* fork in a threaded process: the child has one thread. */
    pthread_t t;
    SHOW(pthread_create(&t, 0, idle_thread, 0));
    printf("threads here: %ld\n", status_field(me, "Threads"));
    c = fork();
    if (c == 0) {
        printf("threads in the child: %ld\n", status_field(getpid(), "Threads"));
        _exit(0);
    }
    SHOW(waitpid(c, &st, 0) == c);

    /* The parent-death signal: a grandchild told when its parent ends. */
    SHOW(prctl(PR_SET_PDEATHSIG, SIGUSR2));
    int got = 0;
    SHOW(prctl(PR_GET_PDEATHSIG, &got));
    printf("own parent-death signal: %d\n", got);
    SHOW(prctl(PR_SET_PDEATHSIG, 0));
    int ready[2], report[2];
    SHOW(pipe(ready));
    SHOW(pipe(report));
    c = fork();
    if (c == 0) {
        pid_t g = fork();
        if (g == 0) {
            report_fd = report[1];
            first_parent = getppid();
            signal(SIGUSR1, on_usr1);
            prctl(PR_SET_PDEATHSIG, SIGUSR1);
            write(ready[1], "r", 1);
            for (;;)
                pause();
        }
        char x;
        read(ready[0], &x, 1);
        _exit(0);
    }
    close(report[1]);
    close(ready[1]);
    SHOW(waitpid(c, &st, 0) == c);
    show_status("the middle child", st);
    char line[128] = {0};
    ssize_t n = read(report[0], line, sizeof line - 1);
    printf("from the grandchild (%zd): %s", n, line);
    return 0;
}
