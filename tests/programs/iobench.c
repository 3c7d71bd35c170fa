/* The I/O benchmark of `cargo xtask bench-io`, run natively and in kiln on
 * the same kind of storage:
 *
 *   iobench PATH MIB
 *
 * PATH is a file (created if missing) or a block device. Prints one line
 * per measurement, "name value unit":
 *   seq_write   MiB/s  MIB MiB in 1 MiB writes, then fsync
 *   seq_read    MiB/s  the same bytes in 1 MiB reads
 *   rand_write  IOPS   4 KiB pwrites at random aligned offsets (no sync)
 *   rand_read   IOPS   4 KiB preads at random aligned offsets
 *   fsync_p50   us     a 4 KiB write + fsync, median of 200
 *   fsync_p99   us     ... 99th percentile
 * Each check of the data read back is part of the run (a wrong byte fails).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int fail(const char *what) {
    fprintf(stderr, "iobench: %s: %s\n", what, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: iobench PATH MIB\n");
        return 2;
    }
    const char *path = argv[1];
    size_t mib = strtoul(argv[2], 0, 10);
    size_t total = mib << 20;
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0)
        return fail("open");
    size_t chunk = 1 << 20;
    unsigned char *buf = malloc(chunk), *back = malloc(chunk);
    if (!buf || !back)
        return fail("malloc");
    for (size_t i = 0; i < chunk; i++)
        buf[i] = (unsigned char)(i * 31 + 7);

    double t = now();
    for (size_t off = 0; off < total; off += chunk)
        if (pwrite(fd, buf, chunk, (off_t)off) != (ssize_t)chunk)
            return fail("pwrite");
    if (fsync(fd))
        return fail("fsync");
    printf("seq_write %.1f MiB/s\n", mib / (now() - t));

    t = now();
    for (size_t off = 0; off < total; off += chunk) {
        if (pread(fd, back, chunk, (off_t)off) != (ssize_t)chunk)
            return fail("pread");
        if (memcmp(buf, back, chunk)) {
            fprintf(stderr, "iobench: data read back differs at %zu\n", off);
            return 1;
        }
    }
    printf("seq_read %.1f MiB/s\n", mib / (now() - t));

    size_t blocks = total / 4096, ops = 2000;
    t = now();
    for (size_t i = 0; i < ops; i++)
        if (pwrite(fd, buf, 4096, (off_t)(next() % blocks) * 4096) != 4096)
            return fail("pwrite 4k");
    printf("rand_write %.0f IOPS\n", ops / (now() - t));

    t = now();
    for (size_t i = 0; i < ops; i++)
        if (pread(fd, back, 4096, (off_t)(next() % blocks) * 4096) != 4096)
            return fail("pread 4k");
    printf("rand_read %.0f IOPS\n", ops / (now() - t));

    enum { SYNCS = 200 };
    static double lat[SYNCS];
    for (int i = 0; i < SYNCS; i++) {
        double s = now();
        if (pwrite(fd, buf, 4096, (off_t)(i % blocks) * 4096) != 4096 || fsync(fd))
            return fail("write+fsync");
        lat[i] = (now() - s) * 1e6;
    }
    qsort(lat, SYNCS, sizeof lat[0], cmp);
    printf("fsync_p50 %.0f us\n", lat[SYNCS / 2]);
    printf("fsync_p99 %.0f us\n", lat[SYNCS * 99 / 100]);
    return 0;
}
