/* A vsock appliance for the device tests:
 *   vsock serve PORT COUNT  accept COUNT host connections on PORT; read
 *                           each to its end, answer with the byte count and
 *                           their FNV-1a hash (8 bytes each, little endian)
 *   vsock send PORT SIZE    connect to the host's PORT, send SIZE bytes of
 *                           the pattern, shut the writing side, read the
 *                           host's count and hash and check them
 * It prints `listening` once a server listens. The pattern and hash are the
 * echo appliance's (tests/programs/echo.rs). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

/* struct sockaddr_vm, spelled out: not every libc ships linux/vm_sockets.h. */
struct vsock_addr {
    unsigned short family;
    unsigned short reserved;
    unsigned int port;
    unsigned int cid;
    unsigned char zero[4];
};

#define CID_ANY 0xffffffffu
#define CID_HOST 2u

static unsigned char pattern(uint64_t i)
{
    return (unsigned char)(i * 131 ^ (i >> 20) * 7);
}

static uint64_t fnv1a(uint64_t hash, const unsigned char *data, size_t len)
{
    for (size_t i = 0; i < len; i++)
        hash = (hash ^ data[i]) * 0x100000001b3ull;
    return hash;
}

#define FNV_START 0xcbf29ce484222325ull

static void die(const char *what)
{
    fprintf(stderr, "vsock: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void write_all(int fd, const unsigned char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        p += n;
        len -= (size_t)n;
    }
}

static void put_u64(unsigned char *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static unsigned char buf[256 * 1024];

static int serve(unsigned port, long count)
{
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (s < 0)
        die("socket");
    struct vsock_addr a = {.family = AF_VSOCK, .port = port, .cid = CID_ANY};
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind");
    if (listen(s, 4) < 0)
        die("listen");
    struct vsock_addr me;
    socklen_t len = sizeof me;
    if (getsockname(s, (struct sockaddr *)&me, &len) < 0)
        die("getsockname");
    printf("listening on vsock port %u (cid %u)\n", me.port, me.cid);
    fflush(stdout);
    for (long c = 0; c < count; c++) {
        struct vsock_addr peer;
        len = sizeof peer;
        int conn = accept(s, (struct sockaddr *)&peer, &len);
        if (conn < 0)
            die("accept");
        uint64_t total = 0, hash = FNV_START;
        for (;;) {
            ssize_t n = read(conn, buf, sizeof buf);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                die("read");
            }
            if (n == 0)
                break;
            hash = fnv1a(hash, buf, (size_t)n);
            total += (uint64_t)n;
        }
        unsigned char answer[16];
        put_u64(answer, total);
        put_u64(answer + 8, hash);
        write_all(conn, answer, sizeof answer);
        close(conn);
        printf("connection from cid %u: %llu bytes\n", peer.cid, (unsigned long long)total);
        fflush(stdout);
    }
    close(s);
    return 0;
}

static int send_to_host(unsigned port, uint64_t size)
{
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (s < 0)
        die("socket");
    struct vsock_addr a = {.family = AF_VSOCK, .port = port, .cid = CID_HOST};
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect");
    uint64_t hash = FNV_START, at = 0;
    while (at < size) {
        size_t n = sizeof buf;
        if (size - at < n)
            n = (size_t)(size - at);
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(at + i);
        hash = fnv1a(hash, buf, n);
        write_all(s, buf, n);
        at += n;
    }
    if (shutdown(s, SHUT_WR) < 0)
        die("shutdown");
    unsigned char answer[16];
    size_t got = 0;
    while (got < sizeof answer) {
        ssize_t n = read(s, answer + got, sizeof answer - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "vsock: the host closed after %zu bytes of its answer\n", got);
            return 1;
        }
        got += (size_t)n;
    }
    close(s);
    uint64_t count = get_u64(answer), theirs = get_u64(answer + 8);
    printf("sent %llu bytes; the host saw %llu, hash %s\n", (unsigned long long)size,
           (unsigned long long)count, theirs == hash ? "matches" : "differs");
    return count == size && theirs == hash ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "serve") == 0)
        return serve((unsigned)strtoul(argv[2], NULL, 10), strtol(argv[3], NULL, 10));
    if (argc == 4 && strcmp(argv[1], "send") == 0)
        return send_to_host((unsigned)strtoul(argv[2], NULL, 10), strtoull(argv[3], NULL, 10));
    fprintf(stderr, "usage: vsock serve PORT COUNT | vsock send PORT SIZE\n");
    return 2;
}
