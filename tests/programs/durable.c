/* Storage checks run inside kiln (tests/volumes.rs), on a disk (/dev/vda)
 * or a file on a volume.
 *
 *   durable append PATH [SYNC]  write 512-byte records 0, 1, 2, ... at
 *                               offset 512*n, each numbered and
 *                               checksummed; after each fsync (fdatasync
 *                               when SYNC is "data", O_SYNC when "osync")
 *                               print "synced N" — forever (the test kills
 *                               kiln at a random moment)
 *   durable verify PATH N       check records 0..N-1 (print "ok N" or the
 *                               first bad record)
 *   durable pattern PATH OFF LEN SEED
 *                               write LEN pattern bytes at byte OFF
 *                               (unaligned is fine), fsync, read them back,
 *                               print "pattern ok" or where they differ
 *   durable info PATH           print the block device's size, sector
 *                               size, read-only flag and file type
 *   durable open-rw PATH        try to open PATH for writing; print
 *                               "opened" or the errno name
 *   durable discard PATH OFF LEN  BLKDISCARD, then read the range: "zeros"
 *   durable mmap PATH LEN SEED [msync|exit]
 *                               size PATH to LEN, map it MAP_SHARED, write
 *                               the pattern through the mapping, then
 *                               msync+munmap (default) or just exit;
 *                               print "mapped"
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* linux/fs.h's block-device ioctls (musl-gcc has no kernel headers). */
#define BLKROGET 0x125e
#define BLKSSZGET 0x1268
#define BLKDISCARD 0x1277
#define BLKGETSIZE64 0x80081272

#define RECORD 512
#define MAGIC 0x6b696c6e7265636fULL /* "kilnreco" */

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* A record: magic, number, payload derived from the number, checksum of
 * everything before it in the last 8 bytes. */
static void make_record(unsigned char *r, uint64_t n) {
    memset(r, 0, RECORD);
    memcpy(r, &(uint64_t){MAGIC}, 8);
    memcpy(r + 8, &n, 8);
    for (int i = 16; i < RECORD - 8; i++)
        r[i] = (unsigned char)(n * 131 + i);
    uint64_t sum = fnv1a(r, RECORD - 8);
    memcpy(r + RECORD - 8, &sum, 8);
}

static unsigned char pattern(uint64_t i, unsigned seed) {
    return (unsigned char)((i * 7 + seed + (i >> 9)) & 0xff);
}

static const char *errname(int e) {
    switch (e) {
    case EROFS: return "EROFS";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case ENOSPC: return "ENOSPC";
    default: return strerror(e);
    }
}

static int die(const char *what) {
    printf("%s: %s\n", what, errname(errno));
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: durable append|verify|pattern|info|open-rw|discard PATH ...\n");
        return 2;
    }
    const char *cmd = argv[1], *path = argv[2];
    unsigned char rec[RECORD], got[RECORD];
    if (!strcmp(cmd, "append")) {
        const char *how = argc > 3 ? argv[3] : "fsync";
        int flags = O_RDWR | O_CREAT | (!strcmp(how, "osync") ? O_SYNC : 0);
        int fd = open(path, flags, 0644);
        if (fd < 0)
            return die("open");
        for (uint64_t n = 0;; n++) {
            make_record(rec, n);
            if (pwrite(fd, rec, RECORD, (off_t)(n * RECORD)) != RECORD)
                return die("pwrite");
            if (!strcmp(how, "data") ? fdatasync(fd) : !strcmp(how, "osync") ? 0 : fsync(fd))
                return die("fsync");
            printf("synced %llu\n", (unsigned long long)n);
            fflush(stdout);
        }
    }
    if (!strcmp(cmd, "verify") && argc > 3) {
        uint64_t count = strtoull(argv[3], 0, 10);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            return die("open");
        for (uint64_t n = 0; n < count; n++) {
            make_record(rec, n);
            if (pread(fd, got, RECORD, (off_t)(n * RECORD)) != RECORD || memcmp(rec, got, RECORD)) {
                printf("record %llu is damaged\n", (unsigned long long)n);
                return 1;
            }
        }
        printf("ok %llu\n", (unsigned long long)count);
        return 0;
    }
    if (!strcmp(cmd, "pattern") && argc > 5) {
        off_t off = (off_t)strtoull(argv[3], 0, 10);
        size_t len = strtoull(argv[4], 0, 10);
        unsigned seed = (unsigned)strtoul(argv[5], 0, 10);
        unsigned char *buf = malloc(len), *back = malloc(len);
        if (!buf || !back)
            return die("malloc");
        for (size_t i = 0; i < len; i++)
            buf[i] = pattern(i, seed);
        int fd = open(path, O_RDWR | O_CREAT, 0644);
        if (fd < 0)
            return die("open");
        if (pwrite(fd, buf, len, off) != (ssize_t)len)
            return die("pwrite");
        if (fsync(fd))
            return die("fsync");
        memset(back, 0, len);
        if (pread(fd, back, len, off) != (ssize_t)len)
            return die("pread");
        for (size_t i = 0; i < len; i++)
            if (back[i] != buf[i]) {
                printf("differs at %zu\n", i);
                return 1;
            }
        printf("pattern ok\n");
        return 0;
    }
    if (!strcmp(cmd, "info")) {
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            return die("open");
        uint64_t size = 0;
        int ssz = 0, ro = -1;
        struct stat st;
        if (ioctl(fd, BLKGETSIZE64, &size) || ioctl(fd, BLKSSZGET, &ssz) || ioctl(fd, BLKROGET, &ro) ||
            fstat(fd, &st))
            return die("ioctl");
        off_t end = lseek(fd, 0, SEEK_END);
        printf("size %llu sector %d ro %d block %d end %lld\n", (unsigned long long)size, ssz, ro,
               S_ISBLK(st.st_mode) ? 1 : 0, (long long)end);
        return 0;
    }
    if (!strcmp(cmd, "open-rw")) {
        int fd = open(path, O_RDWR);
        if (fd < 0)
            return die("open");
        printf("opened\n");
        return 0;
    }
    if (!strcmp(cmd, "discard") && argc > 4) {
        uint64_t range[2] = {strtoull(argv[3], 0, 10), strtoull(argv[4], 0, 10)};
        int fd = open(path, O_RDWR);
        if (fd < 0)
            return die("open");
        if (ioctl(fd, BLKDISCARD, range))
            return die("discard");
        unsigned char *back = malloc(range[1]);
        if (!back || pread(fd, back, range[1], (off_t)range[0]) != (ssize_t)range[1])
            return die("pread");
        for (uint64_t i = 0; i < range[1]; i++)
            if (back[i]) {
                printf("not zero at %llu\n", (unsigned long long)i);
                return 1;
            }
        printf("zeros\n");
        return 0;
    }
    if (!strcmp(cmd, "mmap") && argc > 4) {
        size_t len = strtoull(argv[3], 0, 10);
        unsigned seed = (unsigned)strtoul(argv[4], 0, 10);
        int msync_first = argc <= 5 || strcmp(argv[5], "exit");
        int fd = open(path, O_RDWR | O_CREAT, 0644);
        if (fd < 0)
            return die("open");
        if (ftruncate(fd, (off_t)len))
            return die("ftruncate");
        unsigned char *m = mmap(0, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED)
            return die("mmap");
        for (size_t i = 0; i < len; i++)
            m[i] = pattern(i, seed);
        if (msync_first && (msync(m, len, MS_SYNC) || munmap(m, len)))
            return die("msync");
        printf("mapped\n");
        return 0;
    }
    fprintf(stderr, "durable: unknown command %s\n", cmd);
    return 2;
}
