/* User and group ids: a root process sets its groups and gives up root
 * (setresgid, setresuid), after which it may only move between the ids it
 * has; a forked child keeps them. */
#define _GNU_SOURCE
#include <grp.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "show.h"

static void show_ids(const char *when)
{
    uid_t r, e, s;
    gid_t gr, ge, gs;
    getresuid(&r, &e, &s);
    getresgid(&gr, &ge, &gs);
    gid_t groups[8];
    int n = getgroups(8, groups);
    printf("%s: uid %u/%u/%u gid %u/%u/%u, %d groups", when, r, e, s, gr, ge, gs, n);
    for (int i = 0; i < n; i++)
        printf(" %u", groups[i]);
    printf("\n");
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    gid_t groups[] = {100, 27};
    SHOW(setgroups(2, groups));
    SHOW(setresgid(1000, 1000, 1000));
    SHOW(setresuid(1000, 1000, 0));
    show_ids("after dropping root (saved uid 0)");
    SHOW(seteuid(0));
    show_ids("back to effective root");
    SHOW(setuid(1000));
    show_ids("after setuid(1000) as root");
    SHOW(setuid(0));
    SHOW(seteuid(1001));
    SHOW(setgroups(0, NULL));
    SHOW(setreuid(-1, 1000));
    pid_t c = fork();
    if (c == 0) {
        show_ids("child");
        _exit(getuid() == 1000 ? 0 : 1);
    }
    int st = 0;
    waitpid(c, &st, 0);
    printf("child exited %d\n", WEXITSTATUS(st));
    return 0;
}
