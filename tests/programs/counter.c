/* A counter served over TCP, for the standby test: every line a client
 * sends is answered with the next number ("1\n", "2\n", ...). The count
 * lives only in this process's memory, so after a failover a client can
 * tell whether the standby resumed from the state it last saw. Clients are
 * served concurrently (poll), so a connection the guest still believes
 * open after a failover does not keep new ones waiting. `counter PORT N`
 * ends the program right after its Nth answer. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CLIENTS 64

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8080;
    unsigned long long last = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (listener < 0 || setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 16) < 0) {
        perror("counter: listen");
        return 1;
    }
    printf("counter listening on %d\n", port);
    fflush(stdout);
    struct pollfd fds[MAX_CLIENTS + 1];
    int count = 1;
    fds[0].fd = listener;
    fds[0].events = POLLIN;
    unsigned long long counter = 0;
    for (;;) {
        if (poll(fds, (nfds_t)count, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("counter: poll");
            return 1;
        }
        if (fds[0].revents & POLLIN) {
            int c = accept(listener, NULL, NULL);
            if (c >= 0 && count <= MAX_CLIENTS) {
                fds[count].fd = c;
                fds[count].events = POLLIN;
                fds[count].revents = 0;
                count++;
            } else if (c >= 0) {
                close(c);
            }
        }
        for (int i = 1; i < count; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[512];
            ssize_t n = read(fds[i].fd, buf, sizeof buf);
            int gone = n <= 0;
            for (ssize_t j = 0; j < n && !gone; j++) {
                if (buf[j] != '\n')
                    continue;
                char out[32];
                int len = snprintf(out, sizeof out, "%llu\n", ++counter);
                if (write(fds[i].fd, out, (size_t)len) != len)
                    gone = 1;
                if (last && counter >= last) {
                    close(fds[i].fd);
                    return 0;
                }
            }
            if (gone) {
                close(fds[i].fd);
                fds[i] = fds[count - 1];
                fds[i].revents = 0;
                count--;
                i--;
            }
        }
    }
}
