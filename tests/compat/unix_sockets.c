/* Local (AF_UNIX) sockets: socketpair streams, datagrams and seqpackets,
 * shutdown and half-close, EPIPE with and without MSG_NOSIGNAL, SCM_RIGHTS
 * file passing, path names (bind, listen, connect, accept, names, the
 * socket file) and abstract names, non-blocking accept and MSG_DONTWAIT,
 * MSG_PEEK and MSG_TRUNC, FIONREAD, poll and epoll, a blocking accept
 * woken by a connect from another thread, and the options servers set. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "show.h"

static void show_addr(const char *what, struct sockaddr_un *a, socklen_t len) {
    if (len <= offsetof(struct sockaddr_un, sun_path)) {
        printf("%s: unnamed (len %u)\n", what, (unsigned)len);
    } else if (a->sun_path[0] == 0) {
        printf("%s: abstract \"%.*s\" (len %u)\n", what,
               (int)(len - offsetof(struct sockaddr_un, sun_path) - 1), a->sun_path + 1,
               (unsigned)len);
    } else {
        printf("%s: path \"%s\" (len %u)\n", what, a->sun_path, (unsigned)len);
    }
}

static const char *sock_path = "/tmp/kiln-compat.sock";
static int listener;

static void *client(void *arg) {
    (void)arg;
    struct timespec d = {0, 20 * 1000000L};
    nanosleep(&d, NULL);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, sock_path);
    if (connect(c, (struct sockaddr *)&a, sizeof a) != 0)
        return NULL;
    if (write(c, "from the thread", 15) != 15)
        return NULL;
    close(c);
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGPIPE, SIG_IGN);
    char buf[256];
    int sv[2];

    /* A stream pair: both directions, FIONREAD, poll, half-close. */
    SHOW(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    SHOW(write(sv[0], "ping", 4));
    int avail = -1;
    SHOW(ioctl(sv[1], FIONREAD, &avail));
    printf("FIONREAD %d\n", avail);
    SHOW(recv(sv[1], buf, sizeof buf, MSG_PEEK));
    SHOW(read(sv[1], buf, sizeof buf));
    printf("got %.4s\n", buf);
    SHOW(send(sv[1], "pong!", 5, 0));
    SHOW(read(sv[0], buf, 2));
    SHOW(read(sv[0], buf, sizeof buf));
    struct pollfd pf = {.fd = sv[1], .events = POLLIN | POLLOUT | POLLRDHUP};
    SHOW(poll(&pf, 1, 0));
    printf("revents %#x\n", pf.revents);
    SHOW(shutdown(sv[0], SHUT_WR));
    SHOW(poll(&pf, 1, 0));
    printf("revents after SHUT_WR %#x\n", pf.revents);
    SHOW(read(sv[1], buf, sizeof buf));
    SHOW(write(sv[0], "x", 1));
    SHOW(write(sv[1], "still open", 10));
    SHOW(read(sv[0], buf, sizeof buf));
    close(sv[1]);
    SHOW(write(sv[0], "x", 1));
    SHOW(send(sv[0], "x", 1, MSG_NOSIGNAL));
    close(sv[0]);
    SHOW(shutdown(sv[0], SHUT_RD));

    /* MSG_NOSIGNAL with SIGPIPE at its default: EPIPE, no signal. */
    signal(SIGPIPE, SIG_DFL);
    SHOW(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    close(sv[1]);
    SHOW(send(sv[0], "x", 1, MSG_NOSIGNAL));
    close(sv[0]);
    signal(SIGPIPE, SIG_IGN);

    /* Datagram pair: boundaries, truncation, peeking, MSG_DONTWAIT. */
    SHOW(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv));
    SHOW(send(sv[0], "first datagram", 14, 0));
    SHOW(send(sv[0], "second", 6, 0));
    SHOW(recv(sv[1], buf, 5, MSG_PEEK));
    SHOW(recv(sv[1], buf, 5, MSG_TRUNC));
    printf("truncated to %.5s\n", buf);
    SHOW(recv(sv[1], buf, sizeof buf, 0));
    SHOW(recv(sv[1], buf, sizeof buf, MSG_DONTWAIT));
    struct iovec iov[2] = {{buf, 3}, {buf + 100, 50}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    SHOW(send(sv[0], "scattered", 9, 0));
    SHOW(recvmsg(sv[1], &mh, 0));
    printf("iov0 %.3s iov1 %.6s flags %#x\n", buf, buf + 100, mh.msg_flags);
    close(sv[0]);
    close(sv[1]);

    /* Seqpacket pair: records keep their boundaries; EOF after close. */
    SHOW(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv));
    SHOW(write(sv[0], "rec1", 4));
    SHOW(write(sv[0], "record2", 7));
    SHOW(read(sv[1], buf, sizeof buf));
    SHOW(read(sv[1], buf, 3));
    close(sv[0]);
    SHOW(read(sv[1], buf, sizeof buf));
    close(sv[1]);

    /* SCM_RIGHTS: a pipe's read end travels; the receiver reads it. */
    int p[2];
    SHOW(pipe(p));
    SHOW(write(p[1], "through a passed fd", 19));
    SHOW(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    {
        char control[CMSG_SPACE(sizeof(int))];
        memset(control, 0, sizeof control);
        struct iovec v = {"F", 1};
        struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = control,
                           .msg_controllen = sizeof control};
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &p[0], sizeof(int));
        SHOW(sendmsg(sv[0], &m, 0));
    }
    close(p[0]);
    close(p[1]);
    {
        char control[CMSG_SPACE(sizeof(int) * 4)];
        memset(control, 0, sizeof control);
        char one = 0;
        struct iovec v = {&one, 1};
        struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = control,
                           .msg_controllen = sizeof control};
        SHOW(recvmsg(sv[1], &m, MSG_CMSG_CLOEXEC));
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        int passed = -1;
        if (c && c->cmsg_type == SCM_RIGHTS) {
            printf("cmsg level %d type %d len %zu\n", c->cmsg_level, c->cmsg_type,
                   (size_t)c->cmsg_len);
            memcpy(&passed, CMSG_DATA(c), sizeof(int));
        }
        printf("byte %c, fd passed: %s\n", one, passed >= 0 ? "yes" : "no");
        SHOW(fcntl(passed, F_GETFD));
        memset(buf, 0, sizeof buf);
        SHOW(read(passed, buf, sizeof buf));
        printf("read through it: %s\n", buf);
        SHOW(read(passed, buf, sizeof buf));
        close(passed);
    }
    close(sv[0]);
    close(sv[1]);

    /* A path name: the socket file, connect, accept, the names. */
    unlink(sock_path);
    listener = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, sock_path);
    socklen_t alen = offsetof(struct sockaddr_un, sun_path) + strlen(sock_path) + 1;
    SHOW(connect(listener, (struct sockaddr *)&a, alen));
    SHOW(bind(listener, (struct sockaddr *)&a, alen));
    struct stat st;
    SHOW(stat(sock_path, &st));
    printf("is a socket: %d\n", S_ISSOCK(st.st_mode));
    SHOW(open(sock_path, O_RDONLY));
    int other = socket(AF_UNIX, SOCK_STREAM, 0);
    SHOW(bind(other, (struct sockaddr *)&a, alen));
    close(other);
    SHOW(accept(listener, NULL, NULL));
    SHOW(listen(listener, 4));
    SHOW(fcntl(listener, F_SETFL, O_NONBLOCK));
    SHOW(accept(listener, NULL, NULL));
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    SHOW(connect(c, (struct sockaddr *)&a, alen));
    SHOW(connect(c, (struct sockaddr *)&a, alen));
    struct sockaddr_un got;
    socklen_t glen = sizeof got;
    int s = accept4(listener, (struct sockaddr *)&got, &glen, SOCK_CLOEXEC);
    printf("accepted: %s\n", s >= 0 ? "yes" : strerrorname_np(errno));
    show_addr("accept peer", &got, glen);
    glen = sizeof got;
    SHOW(getsockname(s, (struct sockaddr *)&got, &glen));
    show_addr("server end name", &got, glen);
    glen = sizeof got;
    SHOW(getpeername(c, (struct sockaddr *)&got, &glen));
    show_addr("client's peer", &got, glen);
    glen = sizeof got;
    SHOW(getsockname(c, (struct sockaddr *)&got, &glen));
    show_addr("client name", &got, glen);
    SHOW(write(c, "over a path", 11));
    SHOW(read(s, buf, sizeof buf));
    int type = 0;
    socklen_t olen = sizeof type;
    SHOW(getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &olen));
    printf("SO_TYPE %d len %u\n", type, (unsigned)olen);
    int size = 4096;
    SHOW(setsockopt(s, SOL_SOCKET, SO_SNDBUF, &size, sizeof size));
    olen = sizeof size;
    SHOW(getsockopt(s, SOL_SOCKET, SO_SNDBUF, &size, &olen));
    printf("SO_SNDBUF %d\n", size);
    struct ucred cred;
    olen = sizeof cred;
    SHOW(getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &olen));
    printf("peer uid %u gid %u\n", cred.uid, cred.gid);
    close(c);
    close(s);

    /* A blocking accept woken by a connect from another thread. */
    SHOW(fcntl(listener, F_SETFL, 0));
    pthread_t t;
    pthread_create(&t, NULL, client, NULL);
    s = accept(listener, NULL, NULL);
    printf("blocking accept: %s\n", s >= 0 ? "yes" : strerrorname_np(errno));
    memset(buf, 0, sizeof buf);
    ssize_t n = 0, r;
    while ((r = read(s, buf + n, sizeof buf - 1 - n)) > 0)
        n += r;
    printf("read %zd bytes: %s\n", n, buf);
    pthread_join(t, NULL);
    close(s);
    close(listener);
    SHOW(connect(socket(AF_UNIX, SOCK_STREAM, 0), (struct sockaddr *)&a, alen));
    SHOW(unlink(sock_path));

    /* Abstract names, datagrams with the sender's address, epoll. */
    int d1 = socket(AF_UNIX, SOCK_DGRAM, 0), d2 = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un n1 = {.sun_family = AF_UNIX}, n2 = {.sun_family = AF_UNIX};
    memcpy(n1.sun_path, "\0kiln-one", 9);
    memcpy(n2.sun_path, "\0kiln-two", 9);
    socklen_t nlen = offsetof(struct sockaddr_un, sun_path) + 9;
    SHOW(bind(d1, (struct sockaddr *)&n1, nlen));
    SHOW(bind(d2, (struct sockaddr *)&n2, nlen));
    SHOW(bind(socket(AF_UNIX, SOCK_DGRAM, 0), (struct sockaddr *)&n1, nlen));
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 7};
    SHOW(epoll_ctl(ep, EPOLL_CTL_ADD, d2, &ev));
    SHOW(epoll_wait(ep, &ev, 1, 0));
    SHOW(sendto(d1, "to two", 6, 0, (struct sockaddr *)&n2, nlen));
    SHOW(epoll_wait(ep, &ev, 1, 1000));
    printf("event %#x data %u\n", ev.events, ev.data.u32);
    glen = sizeof got;
    SHOW(recvfrom(d2, buf, sizeof buf, 0, (struct sockaddr *)&got, &glen));
    show_addr("datagram from", &got, glen);
    SHOW(connect(d2, (struct sockaddr *)&n1, nlen));
    SHOW(send(d2, "reply", 5, 0));
    SHOW(recv(d1, buf, sizeof buf, 0));
    close(d1);
    SHOW(send(d2, "to nobody", 9, 0));
    close(d2);
    close(ep);

    /* Unnamed: autobind, wrong families and types. */
    int u = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un anon = {.sun_family = AF_UNIX};
    SHOW(bind(u, (struct sockaddr *)&anon, sizeof(sa_family_t)));
    glen = sizeof got;
    SHOW(getsockname(u, (struct sockaddr *)&got, &glen));
    printf("autobind name length %u, abstract %d\n", (unsigned)glen, got.sun_path[0] == 0);
    close(u);
    SHOW(socket(AF_UNIX, SOCK_RAW, 0));
    SHOW(socketpair(AF_INET, SOCK_STREAM, 0, sv));
    SHOW(socket(12345, SOCK_STREAM, 0));
    SHOW(getsockname(0, (struct sockaddr *)&got, &glen));
    SHOW(listen(1, 1));
    return 0;
}
