/* execve: refusals with the exact errno, then a chain of real execs — the
 * program runs itself again, then through a #! script — checking what
 * crosses an exec (arguments, environment, descriptors without
 * close-on-exec, ignored signals, the working directory) and what does not
 * (close-on-exec descriptors, handlers). Run with the compat data files in
 * /data (run-me.sh: "#!/app/c-exec script-arg"). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "show.h"

extern char **environ;

static void on_usr2(int s) { (void)s; }

static void show_args(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        printf("argv[%d] = %s\n", i, argv[i]);
    printf("EXEC_STAGE = %s\n", getenv("EXEC_STAGE") ? getenv("EXEC_STAGE") : "(unset)");
}

static void show_inherited(void) {
    printf("fd 5 open: %d\n", fcntl(5, F_GETFD) >= 0);
    printf("fd 6 open: %d\n", fcntl(6, F_GETFD) >= 0);
    struct sigaction sa;
    sigaction(SIGUSR1, 0, &sa);
    printf("SIGUSR1 ignored: %d\n", sa.sa_handler == SIG_IGN);
    sigaction(SIGUSR2, 0, &sa);
    printf("SIGUSR2 default: %d\n", sa.sa_handler == SIG_DFL);
    char cwd[256];
    printf("cwd = %s\n", getcwd(cwd, sizeof cwd) ? cwd : "?");
    char exe[256];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    printf("exe = %s\n", exe);
}

int main(int argc, char **argv) {
    fflush(stdout);
    if (argc > 1 && !strcmp(argv[1], "child")) {
        printf("-- in the child\n");
        show_args(argc, argv);
        show_inherited();
        fflush(stdout);
        char *next[] = {"ignored-argv0", "from-child", 0};
        char *env[] = {"EXEC_STAGE=script", 0};
        execve("/data/run-me.sh", next, env);
        printf("execve of the script failed: %s\n", strerrorname_np(errno));
        return 1;
    }
    if (argc > 1 && !strcmp(argv[1], "script-arg")) {
        printf("-- through the script\n");
        show_args(argc, argv);
        show_inherited();
        return 3;
    }
    char *none[] = {"x", 0};
    SHOW(execve("/nope", none, environ));
    SHOW(execve("/data/numbers.txt", none, environ));
    SHOW(execve("/data/tree", none, environ));
    SHOW(execve("/data/words.txt/x", none, environ));
    SHOW(execve("", none, environ));
    /* What the child should and should not inherit. */
    SHOW(dup2(open("/data/words.txt", O_RDONLY), 5));
    SHOW(dup2(open("/data/words.txt", O_RDONLY | O_CLOEXEC), 6));
    SHOW(fcntl(6, F_SETFD, FD_CLOEXEC));
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, on_usr2);
    SHOW(chdir("/data"));
    fflush(stdout);
    char *args[] = {"/app/c-exec", "child", "two words", 0};
    char *env[] = {"EXEC_STAGE=child", "OTHER=1", 0};
    execve("/app/c-exec", args, env);
    printf("execve failed: %s\n", strerrorname_np(errno));
    return 1;
}
