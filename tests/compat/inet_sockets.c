/* TCP and UDP over the loopback: IPv4 and IPv6, a dual-stack listener
 * taking IPv4, blocking and non-blocking connect with epoll, refused
 * connections, SO_REUSEADDR rebinding after TIME-WAIT, half-close, EPIPE,
 * MSG_PEEK and FIONREAD, a 4 MiB transfer between threads checked by sum,
 * sendfile to a socket, UDP datagrams with addresses, truncation and
 * connected filtering, and getaddrinfo("localhost"). Port numbers are
 * ephemeral, so only whether they are set is printed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "show.h"

static void show_name(const char *what, struct sockaddr *sa) {
    char host[64] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
    }
    printf("%s: family %d, %s, port %s\n", what, sa->sa_family, host, port ? "set" : "0");
}

/* A listening socket on 127.0.0.1 (or ::1) with an ephemeral port. */
static int listener(int family, struct sockaddr_storage *addr, socklen_t *len) {
    int s = socket(family, SOCK_STREAM, 0);
    memset(addr, 0, sizeof *addr);
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)addr;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        *len = sizeof *in;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)addr;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_loopback;
        *len = sizeof *in6;
    }
    if (bind(s, (struct sockaddr *)addr, *len) != 0 || listen(s, 8) != 0)
        return -1;
    getsockname(s, (struct sockaddr *)addr, len);
    return s;
}

#define BIG (4 << 20)

struct big {
    int fd;
    unsigned long sum;
};

static void *send_big(void *arg) {
    struct big *b = arg;
    static unsigned char chunk[65536];
    unsigned long sum = 0;
    long sent = 0;
    while (sent < BIG) {
        for (size_t i = 0; i < sizeof chunk; i++) {
            chunk[i] = (unsigned char)((sent + (long)i) * 131 + 7);
            sum += chunk[i];
        }
        ssize_t off = 0;
        while (off < (ssize_t)sizeof chunk) {
            ssize_t n = write(b->fd, chunk + off, sizeof chunk - off);
            if (n <= 0)
                return NULL;
            off += n;
        }
        sent += sizeof chunk;
    }
    b->sum = sum;
    shutdown(b->fd, SHUT_WR);
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGPIPE, SIG_IGN);
    char buf[4096];
    struct sockaddr_storage addr, peer;
    socklen_t len, plen;

    /* TCP over IPv4: connect, accept, names, both directions. */
    int l = listener(AF_INET, &addr, &len);
    printf("listening: %s\n", l >= 0 ? "yes" : strerrorname_np(errno));
    show_name("listener", (struct sockaddr *)&addr);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    SHOW(connect(c, (struct sockaddr *)&addr, len));
    plen = sizeof peer;
    int s = accept(l, (struct sockaddr *)&peer, &plen);
    printf("accepted: %s, address length %u\n", s >= 0 ? "yes" : strerrorname_np(errno), plen);
    show_name("accepted peer", (struct sockaddr *)&peer);
    plen = sizeof peer;
    SHOW(getpeername(c, (struct sockaddr *)&peer, &plen));
    show_name("client's peer", (struct sockaddr *)&peer);
    plen = sizeof peer;
    SHOW(getsockname(c, (struct sockaddr *)&peer, &plen));
    show_name("client", (struct sockaddr *)&peer);
    SHOW(write(c, "hello server", 12));
    int avail = -1;
    struct pollfd pf = {.fd = s, .events = POLLIN};
    SHOW(poll(&pf, 1, 1000));
    SHOW(ioctl(s, FIONREAD, &avail));
    printf("FIONREAD %d\n", avail);
    SHOW(recv(s, buf, 5, MSG_PEEK));
    SHOW(read(s, buf, sizeof buf));
    SHOW(send(s, "hello client", 12, 0));
    memset(buf, 0, sizeof buf);
    SHOW(recv(c, buf, 12, MSG_WAITALL));
    printf("client got: %s\n", buf);
    int one = 1, val = -1;
    socklen_t olen = sizeof val;
    SHOW(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    SHOW(getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &val, &olen));
    printf("TCP_NODELAY %d\n", val);
    olen = sizeof val;
    SHOW(getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &val, &olen));
    printf("SO_ACCEPTCONN %d\n", val);

    /* TCP_CORK: pieces written while corked arrive whole once uncorked;
     * MSG_MORE likewise for one call. */
    SHOW(setsockopt(c, IPPROTO_TCP, TCP_CORK, &one, sizeof one));
    olen = sizeof val;
    SHOW(getsockopt(c, IPPROTO_TCP, TCP_CORK, &val, &olen));
    printf("TCP_CORK %d\n", val);
    SHOW(write(c, "header;", 7));
    SHOW(send(c, "body", 4, MSG_MORE));
    int zero = 0;
    SHOW(setsockopt(c, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero));
    memset(buf, 0, sizeof buf);
    SHOW(recv(s, buf, 11, MSG_WAITALL));
    printf("server got: %s\n", buf);

    /* Half-close: the server reads EOF, can still write. */
    SHOW(shutdown(c, SHUT_WR));
    SHOW(read(s, buf, sizeof buf));
    SHOW(write(s, "after shutdown", 14));
    SHOW(read(c, buf, sizeof buf));
    SHOW(write(c, "x", 1));
    close(c);
    close(s);

    /* EPIPE once the peer is gone (SIGPIPE ignored). */
    c = socket(AF_INET, SOCK_STREAM, 0);
    SHOW(connect(c, (struct sockaddr *)&addr, len));
    s = accept(l, NULL, NULL);
    close(s);
    int epipe = 0;
    for (int i = 0; i < 100 && !epipe; i++) {
        if (write(c, "data", 4) < 0)
            epipe = errno;
        usleep(1000);
    }
    printf("writing to a closed peer: %s\n", epipe ? strerrorname_np(epipe) : "no error");
    close(c);

    /* A 4 MiB transfer, summed on both sides. */
    c = socket(AF_INET, SOCK_STREAM, 0);
    SHOW(connect(c, (struct sockaddr *)&addr, len));
    s = accept(l, NULL, NULL);
    struct big b = {.fd = c};
    pthread_t t;
    pthread_create(&t, NULL, send_big, &b);
    unsigned long sum = 0;
    long got = 0;
    ssize_t n;
    while ((n = read(s, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            sum += (unsigned char)buf[i];
        got += n;
    }
    pthread_join(t, NULL);
    printf("received %ld bytes, sums %s\n", got, sum == b.sum ? "match" : "differ");
    close(s);
    close(c);

    /* sendfile from a file to a socket. */
    FILE *f = tmpfile();
    for (int i = 0; i < 1000; i++)
        fprintf(f, "line %d\n", i);
    fflush(f);
    long flen = ftell(f);
    c = socket(AF_INET, SOCK_STREAM, 0);
    SHOW(connect(c, (struct sockaddr *)&addr, len));
    s = accept(l, NULL, NULL);
    off_t off = 0;
    printf("sendfile sent all: %d\n", sendfile(c, fileno(f), &off, flen) == flen);
    shutdown(c, SHUT_WR);
    got = 0;
    while ((n = read(s, buf, sizeof buf)) > 0)
        got += n;
    printf("received %ld of %ld\n", got, flen);
    fclose(f);
    close(s);
    close(c);

    /* Non-blocking connect with epoll. */
    c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int r = connect(c, (struct sockaddr *)&addr, len);
    printf("non-blocking connect: %s\n", r == 0 ? "done at once" : strerrorname_np(errno));
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLOUT, .data.fd = c};
    SHOW(epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev));
    SHOW(epoll_wait(ep, &ev, 1, 1000));
    printf("events %#x\n", ev.events);
    int err = -1;
    olen = sizeof err;
    SHOW(getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &olen));
    printf("SO_ERROR %d\n", err);
    s = accept(l, NULL, NULL);
    SHOW(write(s, "edge", 4));
    ev.events = EPOLLIN | EPOLLET;
    SHOW(epoll_ctl(ep, EPOLL_CTL_MOD, c, &ev));
    SHOW(epoll_wait(ep, &ev, 1, 1000));
    SHOW(epoll_wait(ep, &ev, 1, 0));
    SHOW(read(c, buf, sizeof buf));
    SHOW(read(c, buf, sizeof buf));
    close(ep);
    close(s);
    close(c);

    /* Refused: nobody listens on the port any more. */
    close(l);
    c = socket(AF_INET, SOCK_STREAM, 0);
    SHOW(connect(c, (struct sockaddr *)&addr, len));
    close(c);
    c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    r = connect(c, (struct sockaddr *)&addr, len);
    if (r < 0 && errno == EINPROGRESS) {
        struct pollfd wp = {.fd = c, .events = POLLOUT};
        poll(&wp, 1, 1000);
        olen = sizeof err;
        getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &olen);
        printf("non-blocking refused: SO_ERROR %s\n", strerrorname_np(err));
    } else {
        printf("non-blocking refused: %s\n", r == 0 ? "connected?" : strerrorname_np(errno));
    }
    close(c);

    /* SO_REUSEADDR: a port whose connection the server closed first is
     * in TIME-WAIT; binding it again needs the option on both the old
     * socket and the new one. */
    for (int reuse = 0; reuse <= 1; reuse++) {
        printf("old listener with SO_REUSEADDR: %d\n", reuse);
        int ol = socket(AF_INET, SOCK_STREAM, 0);
        if (reuse)
            setsockopt(ol, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        bind(ol, (struct sockaddr *)&lo, sizeof lo);
        listen(ol, 4);
        len = sizeof addr;
        getsockname(ol, (struct sockaddr *)&addr, &len);
        c = socket(AF_INET, SOCK_STREAM, 0);
        connect(c, (struct sockaddr *)&addr, len);
        s = accept(ol, NULL, NULL);
        close(s);
        read(c, buf, sizeof buf);
        close(c);
        close(ol);
        usleep(10000);
        l = socket(AF_INET, SOCK_STREAM, 0);
        SHOW(bind(l, (struct sockaddr *)&addr, len));
        close(l);
        l = socket(AF_INET, SOCK_STREAM, 0);
        SHOW(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
        SHOW(bind(l, (struct sockaddr *)&addr, len));
        SHOW(listen(l, 4));
        int l2 = socket(AF_INET, SOCK_STREAM, 0);
        SHOW(setsockopt(l2, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
        SHOW(bind(l2, (struct sockaddr *)&addr, len));
        close(l2);
        close(l);
    }

    /* IPv6 and a dual-stack listener taking an IPv4 client. */
    l = listener(AF_INET6, &addr, &len);
    show_name("IPv6 listener", (struct sockaddr *)&addr);
    c = socket(AF_INET6, SOCK_STREAM, 0);
    SHOW(connect(c, (struct sockaddr *)&addr, len));
    s = accept(l, (struct sockaddr *)&peer, &(socklen_t){sizeof peer});
    show_name("IPv6 peer", (struct sockaddr *)&peer);
    SHOW(write(c, "six", 3));
    SHOW(read(s, buf, sizeof buf));
    close(s);
    close(c);
    close(l);
    l = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 any6 = {.sin6_family = AF_INET6, .sin6_addr = in6addr_any};
    SHOW(bind(l, (struct sockaddr *)&any6, sizeof any6));
    SHOW(listen(l, 4));
    plen = sizeof any6;
    getsockname(l, (struct sockaddr *)&any6, &plen);
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = any6.sin6_port,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    c = socket(AF_INET, SOCK_STREAM, 0);
    SHOW(connect(c, (struct sockaddr *)&v4, sizeof v4));
    plen = sizeof peer;
    s = accept(l, (struct sockaddr *)&peer, &plen);
    show_name("dual-stack peer", (struct sockaddr *)&peer);
    close(s);
    close(c);
    close(l);
    l = socket(AF_INET6, SOCK_STREAM, 0);
    SHOW(setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
    olen = sizeof val;
    SHOW(getsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &val, &olen));
    printf("IPV6_V6ONLY %d\n", val);
    close(l);

    /* UDP: addresses, boundaries, truncation, connected filtering. */
    int u1 = socket(AF_INET, SOCK_DGRAM, 0), u2 = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a1 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in a2 = a1;
    SHOW(bind(u1, (struct sockaddr *)&a1, sizeof a1));
    SHOW(bind(u2, (struct sockaddr *)&a2, sizeof a2));
    socklen_t alen = sizeof a1;
    getsockname(u1, (struct sockaddr *)&a1, &alen);
    getsockname(u2, (struct sockaddr *)&a2, &alen);
    show_name("udp one", (struct sockaddr *)&a1);
    SHOW(sendto(u1, "first datagram", 14, 0, (struct sockaddr *)&a2, sizeof a2));
    SHOW(sendto(u1, "second", 6, 0, (struct sockaddr *)&a2, sizeof a2));
    pf.fd = u2;
    SHOW(poll(&pf, 1, 1000));
    SHOW(ioctl(u2, FIONREAD, &avail));
    printf("FIONREAD %d\n", avail);
    plen = sizeof peer;
    SHOW(recvfrom(u2, buf, 5, MSG_TRUNC, (struct sockaddr *)&peer, &plen));
    printf("from u1: %d\n", ((struct sockaddr_in *)&peer)->sin_port == a1.sin_port);
    SHOW(recv(u2, buf, sizeof buf, 0));
    SHOW(recv(u2, buf, sizeof buf, MSG_DONTWAIT));
    int u3 = socket(AF_INET, SOCK_DGRAM, 0);
    SHOW(connect(u2, (struct sockaddr *)&a1, sizeof a1));
    SHOW(sendto(u3, "stranger", 8, 0, (struct sockaddr *)&a2, sizeof a2));
    SHOW(send(u1, "unconnected", 11, 0));
    SHOW(sendto(u1, "friend", 6, 0, (struct sockaddr *)&a2, sizeof a2));
    usleep(10000);
    memset(buf, 0, sizeof buf);
    SHOW(recv(u2, buf, sizeof buf, MSG_DONTWAIT));
    printf("connected socket got: %s\n", buf);
    SHOW(send(u2, "reply", 5, 0));
    SHOW(recv(u1, buf, sizeof buf, 0));
    close(u1);
    close(u2);
    close(u3);
    int u6 = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 l6 = {.sin6_family = AF_INET6, .sin6_addr = in6addr_loopback};
    SHOW(bind(u6, (struct sockaddr *)&l6, sizeof l6));
    alen = sizeof l6;
    getsockname(u6, (struct sockaddr *)&l6, &alen);
    SHOW(sendto(u6, "to myself", 9, 0, (struct sockaddr *)&l6, sizeof l6));
    SHOW(recv(u6, buf, sizeof buf, 0));
    close(u6);

    /* Name resolution from /etc/hosts. */
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    int gai = getaddrinfo("localhost", "80", &hints, &res);
    printf("getaddrinfo(localhost, AF_INET): %s\n", gai ? gai_strerror(gai) : "ok");
    for (struct addrinfo *a = res; !gai && a; a = a->ai_next)
        show_name("  localhost", a->ai_addr);
    if (!gai)
        freeaddrinfo(res);
    hints.ai_family = AF_INET6;
    gai = getaddrinfo("localhost", "80", &hints, &res);
    printf("getaddrinfo(localhost, AF_INET6): %s\n", gai ? gai_strerror(gai) : "ok");
    for (struct addrinfo *a = res; !gai && a; a = a->ai_next)
        show_name("  localhost", a->ai_addr);
    if (!gai)
        freeaddrinfo(res);
    hints.ai_family = AF_INET;
    hints.ai_flags = AI_NUMERICHOST;
    gai = getaddrinfo("127.0.0.1", NULL, &hints, &res);
    printf("numeric: %s\n", gai ? gai_strerror(gai) : "ok");
    if (!gai)
        freeaddrinfo(res);

    /* Wrong calls. */
    SHOW(socket(AF_INET, SOCK_STREAM, IPPROTO_UDP));
    SHOW(socket(AF_INET, SOCK_SEQPACKET, 0));
    c = socket(AF_INET, SOCK_STREAM, 0);
    SHOW(listen(c, 1) == 0 && getsockname(c, (struct sockaddr *)&peer, &plen) == 0);
    SHOW(send(socket(AF_INET, SOCK_DGRAM, 0), "x", 1, 0));
    SHOW(accept(socket(AF_INET, SOCK_STREAM, 0), NULL, NULL));
    SHOW(recv(socket(AF_INET, SOCK_STREAM, 0), buf, 1, 0));
    SHOW(getpeername(c, (struct sockaddr *)&peer, &plen));
    struct sockaddr_in bad = {.sin_family = AF_INET, .sin_addr.s_addr = inet_addr("192.0.2.1")};
    SHOW(bind(socket(AF_INET, SOCK_STREAM, 0), (struct sockaddr *)&bad, sizeof bad));
    return 0;
}
