/* Memory: file mappings (private, read-only and copy-on-write), shared and
 * private anonymous memory, mprotect with faults caught as SIGSEGV,
 * munmap, mremap, madvise, brk, and refusals (ENOMEM, EINVAL, EEXIST). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "show.h"

static sigjmp_buf env;
static volatile int fault_code;

static void on_segv(int s, siginfo_t *si, void *uc) {
    (void)s;
    (void)uc;
    fault_code = si->si_code;
    siglongjmp(env, 1);
}

/* 1 when writing (or reading) `p` faults. */
static int faults(volatile char *p, int write) {
    if (sigsetjmp(env, 1) == 0) {
        if (write)
            *p = 1;
        else
            (void)*p;
        return 0;
    }
    return 1;
}

/* "no fault", or the fault's si_code: one call, so printf's argument
 * order cannot mix results up. */
static const char *fault_of(volatile char *p, int write) {
    if (!faults(p, write))
        return "no fault";
    return fault_code == SEGV_MAPERR ? "SEGV_MAPERR" : fault_code == SEGV_ACCERR ? "SEGV_ACCERR" : "?";
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa = {0};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    long page = sysconf(_SC_PAGESIZE);
    printf("page size %ld\n", page);

    /* A private read-only file mapping shows the file. */
    int fd = open("/data/words.txt", O_RDONLY);
    off_t size = lseek(fd, 0, SEEK_END);
    char *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    SHOW(m != MAP_FAILED);
    printf("mapped starts: %.12s\n", m);
    char buf[16] = "";
    pread(fd, buf, 12, 0);
    printf("same as read: %d\n", memcmp(m, buf, 12) == 0);
    printf("write to read-only mapping: %s\n", fault_of(m, 1));
    SHOW(munmap(m, size));
    printf("read after munmap: %s\n", fault_of(m, 0));

    /* Copy-on-write: private writable mapping; the file stays. */
    m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    memcpy(m, "CHANGED", 7);
    pread(fd, buf, 7, 0);
    printf("private write: mapping %.7s, file %.7s\n", m, buf);
    munmap(m, size);
    /* Offsets and errors of file mappings. */
    SHOW(mmap(NULL, page, PROT_READ, MAP_PRIVATE, fd, 1) == MAP_FAILED);
    SHOW(mmap(NULL, 0, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED);
    SHOW(mmap(NULL, page, PROT_READ, 0, fd, 0) == MAP_FAILED);
    SHOW(mmap(NULL, page, PROT_READ, MAP_PRIVATE, 999, 0) == MAP_FAILED);
    int dir = open("/data", O_RDONLY | O_DIRECTORY);
    SHOW(mmap(NULL, page, PROT_READ, MAP_PRIVATE, dir, 0) == MAP_FAILED);
    close(dir);
    close(fd);

    /* Anonymous memory is zeroed and usable; shared anonymous too. */
    size_t len = 16 * page;
    char *anon = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int zero = 1;
    for (size_t i = 0; i < len; i++)
        zero &= anon[i] == 0;
    printf("anonymous zeroed: %d\n", zero);
    memset(anon, 0xab, len);
    char *shared = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    strcpy(shared, "shared");
    printf("shared anonymous: %s\n", shared);

    /* mprotect: read-only, then none, then back. */
    SHOW(mprotect(anon, page, PROT_READ));
    printf("write to PROT_READ: %s\n", fault_of(anon, 1));
    printf("read of PROT_READ: %s\n", fault_of(anon, 0));
    SHOW(mprotect(anon, page, PROT_NONE));
    printf("read of PROT_NONE: %s\n", fault_of(anon, 0));
    SHOW(mprotect(anon, page, PROT_READ | PROT_WRITE));
    printf("contents kept across PROT_NONE: %#x\n", (unsigned char)anon[10]);
    SHOW(mprotect(anon + 1, page, PROT_READ));
    SHOW(mprotect(anon, page, 0x100));

    /* madvise(MADV_DONTNEED) gives zero pages back. */
    SHOW(madvise(anon + page, page, MADV_DONTNEED));
    printf("after MADV_DONTNEED: %d, next page kept: %#x\n", anon[page], (unsigned char)anon[2 * page]);

    /* Unmapping a hole in the middle. */
    SHOW(munmap(anon + 4 * page, page));
    printf("read of the hole: %s\n", fault_of(anon + 4 * page, 0));
    printf("read after the hole: %s\n", fault_of(anon + 5 * page, 0));

    /* mremap: grow in place or move, shrink; contents follow. */
    char *r = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(r, 'r', 2 * page);
    char *r2 = mremap(r, 2 * page, 64 * page, MREMAP_MAYMOVE);
    SHOW(r2 != MAP_FAILED);
    printf("mremap kept contents: %c%c, new part zero: %d\n", r2[0], r2[2 * page - 1], r2[3 * page]);
    r2[63 * page] = 'e';
    char *r3 = mremap(r2, 64 * page, page, 0);
    SHOW(r3 == r2);
    printf("shrunk: tail %s\n", fault_of(r2 + 2 * page, 0));
    SHOW(mremap(r3, page, 2 * page, 0x40) == MAP_FAILED);
    SHOW(mremap(r3 + 1, page, 2 * page, MREMAP_MAYMOVE) == MAP_FAILED);
    char *fixed_target = mmap(NULL, 4 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *r4 = mremap(r3, page, 2 * page, MREMAP_MAYMOVE | MREMAP_FIXED, fixed_target);
    SHOW(r4 == fixed_target);
    printf("moved to the fixed address: %c\n", r4[0]);
    printf("old address: %s\n", fault_of(r3, 0));

    /* Fixed mappings. */
    char *area = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    area[page] = 'x';
    SHOW(mmap(area + page, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == MAP_FAILED);
    char *over = mmap(area + page, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    SHOW(over == area + page);
    printf("MAP_FIXED replaced the page: %d\n", area[page]);
    SHOW(mmap(area + 1, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED);

    /* More than the machine has: ENOMEM, not a crash. */
    void *huge = mmap(NULL, 1UL << 40, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("1 TiB mapping: %s %s\n", huge == MAP_FAILED ? "refused" : "accepted",
           huge == MAP_FAILED ? strerrorname_np(errno) : "");
    void *reserve = mmap(NULL, 1UL << 40, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    printf("1 TiB PROT_NONE reservation: %s\n", reserve == MAP_FAILED ? "refused" : "accepted");
    if (reserve != MAP_FAILED)
        munmap(reserve, 1UL << 40);

    /* brk. */
    char *b0 = sbrk(0);
    SHOW(sbrk(64 * 1024) == b0);
    memset(b0, 1, 64 * 1024);
    SHOW((char *)sbrk(0) - b0);
    SHOW(sbrk(-32 * 1024) != (void *)-1);
    SHOW((char *)sbrk(0) - b0);

    /* malloc of many sizes, freed and reused. */
    unsigned long sum = 0;
    for (int round = 0; round < 3; round++) {
        void *ptrs[64];
        for (int i = 0; i < 64; i++) {
            size_t sz = (size_t)(i + 1) * 4093 * (round + 1);
            ptrs[i] = malloc(sz);
            memset(ptrs[i], i, sz);
            sum += ((unsigned char *)ptrs[i])[sz - 1];
        }
        for (int i = 0; i < 64; i++)
            free(ptrs[i]);
    }
    void *big = malloc(8 << 20);
    memset(big, 7, 8 << 20);
    big = realloc(big, 24 << 20);
    sum += ((unsigned char *)big)[(8 << 20) - 1];
    free(big);
    printf("malloc checksum %lu\n", sum);
    return 0;
}
