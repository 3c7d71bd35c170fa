/* Drives a terminal the way interactive programs do, for the -t tests.
 * At start it prints whether fds 0-2 are terminals and the window size,
 * then reads commands a line at a time (canonical mode):
 *   size    print the window size
 *   winch   wait for SIGWINCH, then print the new size
 *   raw     switch to raw mode, read 3 keys, print them in hex, restore
 *   quit    exit 0
 * Ctrl-C interrupts the read (SIGINT handler, no SA_RESTART): "sigint".
 * End of file (Ctrl-D) prints "eof" and exits 0. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

static volatile sig_atomic_t winched, interrupted;

static void on_winch(int sig)
{
    (void)sig;
    winched = 1;
}

static void on_int(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void print_size(const char *what)
{
    struct winsize ws;
    memset(&ws, 0, sizeof ws);
    if (ioctl(0, TIOCGWINSZ, &ws) != 0) {
        printf("%s: TIOCGWINSZ failed: %s\n", what, strerror(errno));
        return;
    }
    printf("%s %ux%u\n", what, (unsigned)ws.ws_col, (unsigned)ws.ws_row);
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_winch;
    sigaction(SIGWINCH, &sa, NULL);
    sa.sa_handler = on_int;
    sigaction(SIGINT, &sa, NULL);
    setvbuf(stdout, NULL, _IONBF, 0);

    printf("isatty %d %d %d\n", isatty(0), isatty(1), isatty(2));
    print_size("size");
    printf("ready\n");
    char line[256];
    for (;;) {
        ssize_t n = read(0, line, sizeof line - 1);
        if (n < 0 && errno == EINTR) {
            printf("%s\n", interrupted ? "sigint" : "interrupted");
            interrupted = 0;
            continue;
        }
        if (n <= 0) {
            printf("eof\n");
            return 0;
        }
        line[n] = 0;
        line[strcspn(line, "\n")] = 0;
        if (!strcmp(line, "size")) {
            print_size("size");
        } else if (!strcmp(line, "winch")) {
            printf("waiting for a resize\n");
            while (!winched)
                pause();
            winched = 0;
            print_size("resized");
        } else if (!strcmp(line, "raw")) {
            struct termios saved, raw;
            tcgetattr(0, &saved);
            raw = saved;
            cfmakeraw(&raw);
            tcsetattr(0, TCSANOW, &raw);
            printf("raw mode\r\n");
            unsigned char keys[3];
            size_t got = 0;
            while (got < sizeof keys) {
                ssize_t r = read(0, keys + got, sizeof keys - got);
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
            tcsetattr(0, TCSANOW, &saved);
            printf("keys");
            for (size_t i = 0; i < got; i++)
                printf(" %02x", keys[i]);
            printf("\n");
        } else if (!strcmp(line, "quit")) {
            return 0;
        } else {
            printf("unknown: %s\n", line);
        }
    }
}
