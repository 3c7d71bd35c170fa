/* Large anonymous mappings, which kiln backs with 2 MiB pages (Linux with
 * transparent huge pages may too): every operation on a part of one must
 * behave as on small pages — munmap, mprotect and MADV_DONTNEED of a page
 * inside it, a fork whose child writes (copy on write), mremap moving it,
 * thread stacks, and memory given back and taken again — also where
 * small pages were before (MADV_NOHUGEPAGE, then none), and the other way
 * round. */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "show.h"

#define MIB (1024UL * 1024UL)
#define PAGE 4096UL

static sigjmp_buf on_fault;

static void segv(int sig)
{
    (void)sig;
    siglongjmp(on_fault, 1);
}

/* Whether reading (write == 0) or writing the byte at p faults. */
static int faults(volatile char *p, int write)
{
    if (sigsetjmp(on_fault, 1))
        return 1;
    if (write)
        *p = 1;
    else
        (void)*p;
    return 0;
}

/* A checksum of n bytes. */
static uint64_t sum(const unsigned char *p, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s = s * 31 + p[i];
    return s;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 7 + seed + i / PAGE);
}

static void *thread_main(void *arg)
{
    /* Some stack and some heap in a thread of its own. */
    volatile char buf[64 * 1024];
    memset((char *)buf, (int)(intptr_t)arg, sizeof buf);
    unsigned char *heap = malloc(3 * MIB);
    if (!heap)
        return (void *)1;
    fill(heap, 3 * MIB, (unsigned)(intptr_t)arg);
    uint64_t s = sum(heap, 3 * MIB) + buf[100];
    free(heap);
    return (void *)(uintptr_t)(s & 0xffff);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = segv;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);

    size_t len = 8 * MIB;
    unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 1;
    printf("fresh memory reads zero: %d\n", sum(m, len) == 0);
    fill(m, len, 1);
    printf("checksum: %016llx\n", (unsigned long long)sum(m, len));

    /* Inside the first 2 MiB boundary of the area. */
    unsigned char *big = (unsigned char *)(((uintptr_t)m + 2 * MIB - 1) & ~(2 * MIB - 1));

    /* One page of it unmapped: its neighbours keep their contents. */
    SHOW(munmap(big + 5 * PAGE, PAGE));
    printf("unmapped page faults: %d, neighbours: %d %d\n", faults((char *)big + 5 * PAGE, 0),
           big[4 * PAGE + 17] == (unsigned char)((4 * PAGE + 17) * 7 + 1 + 4 + (big - m) / PAGE),
           big[6 * PAGE] == (unsigned char)((6 * PAGE) * 7 + 1 + 6 + (big - m) / PAGE));

    /* One page of it read-only. */
    SHOW(mprotect(big + 9 * PAGE, PAGE, PROT_READ));
    printf("read-only page: write faults %d, read faults %d, next page writes %d\n",
           faults((char *)big + 9 * PAGE, 1), faults((char *)big + 9 * PAGE, 0),
           !faults((char *)big + 10 * PAGE, 1));
    SHOW(mprotect(big + 9 * PAGE, PAGE, PROT_READ | PROT_WRITE));

    /* One page of it given back: zero again, the others kept. */
    big[20 * PAGE] = 0x5a;
    big[21 * PAGE] = 0x6b;
    SHOW(madvise(big + 20 * PAGE, PAGE, MADV_DONTNEED));
    printf("after MADV_DONTNEED: %d, next page %#x\n", big[20 * PAGE], big[21 * PAGE]);

    /* A whole 2 MiB given back. */
    unsigned char *second = big + 2 * MIB;
    SHOW(madvise(second, 2 * MIB, MADV_DONTNEED));
    printf("a whole 2 MiB given back reads zero: %d\n", sum(second, 2 * MIB) == 0);
    fill(second, 2 * MIB, 3);

    /* A fork: the child's writes stay its own, the parent's its own. */
    uint64_t before = sum(second, 2 * MIB);
    pid_t c = fork();
    if (c == 0) {
        fill(second, 2 * MIB, 9);
        second[12345] = 1;
        printf("child sees its writes: %d\n", second[12345] == 1 && sum(second, 2 * MIB) != before);
        _exit(0);
    }
    int st = 0;
    waitpid(c, &st, 0);
    printf("child exited %d; parent's memory unchanged: %d\n", WEXITSTATUS(st),
           sum(second, 2 * MIB) == before);
    second[77] = 0x42;
    printf("parent writes after the fork: %#x\n", second[77]);

    /* mremap moves the area with its contents. */
    uint64_t whole = sum(second, 2 * MIB);
    unsigned char *moved = mremap(second, 2 * MIB, 6 * MIB, MREMAP_MAYMOVE);
    if (moved == MAP_FAILED)
        return 2;
    printf("mremap kept contents: %d, new part zero: %d\n", sum(moved, 2 * MIB) == whole,
           sum(moved + 2 * MIB, 4 * MIB) == 0);
    fill(moved, 6 * MIB, 5);
    printf("moved checksum: %016llx\n", (unsigned long long)sum(moved, 6 * MIB));

    /* Threads with stacks and heaps of their own. */
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)(i + 1));
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        printf("thread %d: %04lx\n", i, (unsigned long)(uintptr_t)r);
    }

    /* Memory given back and taken again, many times. */
    uint64_t total = 0;
    for (int round = 0; round < 20; round++) {
        unsigned char *p = mmap(NULL, 4 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return 3;
        total += sum(p, 4 * MIB); /* zero, whatever held the frames before */
        fill(p, 4 * MIB, (unsigned)round);
        total += sum(p, 4 * MIB);
        munmap(p, 4 * MIB);
    }
    printf("20 rounds: %016llx\n", (unsigned long long)total);

    /* Small pages asked for, then large ones where they were. */
    total = 0;
    for (int round = 0; round < 6; round++) {
        unsigned char *p = mmap(NULL, 4 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return 4;
        if (round % 2 == 0 && madvise(p, 4 * MIB, MADV_NOHUGEPAGE))
            return 5;
        if (round == 3 && (madvise(p, 4 * MIB, MADV_NOHUGEPAGE) || madvise(p, 4 * MIB, MADV_HUGEPAGE)))
            return 6;
        total += sum(p, 4 * MIB);
        fill(p, 4 * MIB, (unsigned)round + 40);
        total += sum(p, 4 * MIB);
        munmap(p, 4 * MIB);
    }
    printf("small and large pages in turn: %016llx\n", (unsigned long long)total);
    SHOW(madvise(m, PAGE, MADV_NOHUGEPAGE));
    SHOW(madvise(big + 5 * PAGE, PAGE, MADV_HUGEPAGE));
    SHOW(munmap(m, len));
    SHOW(munmap(moved, 6 * MIB));
    return 0;
}
