/* A hostile guest for `cargo xtask hostile`: kiln runs every program at
 * the guest kernel's privilege level, so a program can do what a
 * compromised guest kernel would — write any I/O port or MMIO register,
 * load garbage into the IDT, CR0 or MSRs, stomp on the kernel's page
 * tables and text, flood the console, exhaust memory, storm interrupts.
 * Whatever it does, kiln-vmm must end the run cleanly (an exit status and
 * a message) in bounded time with bounded host memory. One attack per
 * run:  attacker MODE  (`attacker list` prints the modes). */
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

#define PHYS_MAP 0xffff888000000000ull /* kiln_boot::vm::PHYS_MAP */
#define KERNEL_BASE 0xffffffff80000000ull
#define MMIO_BASE (64ull << 30) /* kiln_boot::layout::VIRTIO_MMIO_BASE */
#define PORT_EXIT 0x530         /* kiln_boot::port::EXIT */

static sigjmp_buf back;

static void recover(int sig)
{
    siglongjmp(back, sig);
}

/* Catch faults so that one attack can try many things. */
static void catch_faults(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = recover;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGILL, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGFPE, &sa, NULL);
    sigaction(SIGTRAP, &sa, NULL);
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}
static uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}
static uint64_t read_cr3(void)
{
    uint64_t v;
    __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    return v;
}

/* Every I/O port but kiln's exit port once (8 bits), and every 64th 32
 * bits wide: each write is an exit to the host. */
static int ports(void)
{
    for (uint32_t p = 0; p < 0x10000; p++) {
        if (p == PORT_EXIT)
            continue;
        outb((uint16_t)p, (uint8_t)next());
        if ((p & 63) == 0 && (p + 3 < PORT_EXIT || p > PORT_EXIT))
            outl((uint16_t)p, (uint32_t)next());
    }
    printf("wrote every port\n");
    return 0;
}

static int port_reads(void)
{
    unsigned sum = 0;
    for (uint32_t p = 0; p < 0x10000; p += 2)
        sum += inb((uint16_t)p);
    printf("read every port (sum %u)\n", sum & 0);
    return 0;
}

/* The MMIO window: registers of devices that exist and of slots that do
 * not, written and read at every offset of the first 64 KiB. */
static int mmio(void)
{
    volatile uint32_t *w = (volatile uint32_t *)(uintptr_t)(PHYS_MAP + MMIO_BASE);
    catch_faults();
    unsigned faults = 0;
    for (unsigned i = 0x40; i < 0x4000; i += 1) {
        if (sigsetjmp(back, 1)) {
            faults++;
            continue;
        }
        (void)w[i];
        w[i] = (uint32_t)next();
    }
    printf("mmio done\n");
    return faults > 0x10000;
}

static int console_flood(void)
{
    static char buf[1 << 16];
    memset(buf, 'x', sizeof buf);
    for (int i = 0; i < 1024; i++)
        for (size_t done = 0; done < sizeof buf;) {
            ssize_t n = write(1, buf + done, sizeof buf - done);
            if (n <= 0)
                return 1;
            done += (size_t)n;
        }
    return 0;
}

static int triple_fault(void)
{
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) idt = {0, 0};
    __asm__ volatile("lidt %0; int3" ::"m"(idt));
    return 0;
}

static volatile int forever = 1;

static int cli_spin(void)
{
    __asm__ volatile("cli");
    while (forever)
        __asm__ volatile("" ::: "memory");
    return 0;
}

static int cli_hlt(void)
{
    while (forever)
        __asm__ volatile("cli; hlt");
    return 0;
}

static int spin(void)
{
    while (forever)
        __asm__ volatile("" ::: "memory");
    return 0;
}

static int memory(void)
{
    size_t total = 0;
    for (;;) {
        char *p = malloc(1 << 20);
        if (!p)
            break;
        memset(p, 1, 1 << 20);
        total += 1 << 20;
    }
    printf("allocated %zu MiB\n", total >> 20);
    return 0;
}

static int recurse(int n);
static int (*volatile again)(int) = recurse;

static int recurse(int n)
{
    volatile char pad[4096];
    pad[0] = (char)n;
    return again(n + 1) + pad[0];
}

static int stack(void) { return recurse(0); }

static int msr_writes(void)
{
    catch_faults();
    for (int i = 0; i < 2000; i++) {
        volatile uint32_t msr = (uint32_t)next();
        /* Unknown MSRs, and a few real ones with garbage: not the ones the
         * kernel needs to keep running (LSTAR, GS base, PVM's page). */
        if (i % 4 == 0)
            msr = 0x1000 + (msr & 0x3ff);
        if (msr == 0xc0000082 || msr == 0xc0000101 || (msr >> 16) == 0x4b56)
            continue;
        if (sigsetjmp(back, 1))
            continue;
        wrmsr(msr, next());
    }
    printf("msr writes done\n");
    return 0;
}

static int msr_reads(void)
{
    catch_faults();
    uint64_t sum = 0;
    for (int i = 0; i < 2000; i++) {
        if (sigsetjmp(back, 1))
            continue;
        sum += rdmsr((uint32_t)next());
    }
    printf("msr reads done %d\n", (int)(sum & 0));
    return 0;
}

static int cpuid_flood(void)
{
    unsigned a, b, c, d, sum = 0;
    for (int i = 0; i < 20000; i++) {
        uint32_t leaf = (uint32_t)next();
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(0));
        sum += a + b + c + d;
    }
    printf("cpuid done %u\n", sum & 0);
    return 0;
}

static int ud2(void)
{
    __asm__ volatile("ud2");
    return 0;
}

static int int_vectors(void)
{
    catch_faults();
    /* Every software interrupt vector through a tiny generated stub. */
    unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED)
        return 1;
    for (int v = 0; v < 256; v++) {
        if (v == 0x20 || v == 0x30 || v == 0x40 || v >= 0xe0)
            continue; /* the timer's and device vectors: they EOI the APIC */
        code[0] = 0xcd;
        code[1] = (unsigned char)v;
        code[2] = 0xc3;
        if (sigsetjmp(back, 1))
            continue;
        ((void (*)(void))code)();
    }
    printf("int vectors done\n");
    return 0;
}

static int kernel_text(void)
{
    volatile uint8_t *k = (volatile uint8_t *)(uintptr_t)(KERNEL_BASE + 0x100000);
    for (int i = 0; i < 0x40000; i++)
        k[i] = 0xcc;
    write(1, "still here\n", 11);
    return 0;
}

static int page_tables(void)
{
    uint64_t *pml4 = (uint64_t *)(uintptr_t)(PHYS_MAP + (read_cr3() & ~0xfffull));
    for (int i = 0; i < 512; i++)
        pml4[i] = next();
    __asm__ volatile("mov %%cr3, %%rax; mov %%rax, %%cr3" ::: "rax", "memory");
    write(1, "still here\n", 11);
    return 0;
}

static int boot_data(void)
{
    /* The boot page tables, PVM's registration pages, the boot info and
     * memory map: the low 64 KiB of guest memory. */
    volatile uint8_t *low = (volatile uint8_t *)(uintptr_t)PHYS_MAP;
    for (int i = 0x1000; i < 0x10000; i++)
        low[i] = (uint8_t)next();
    for (int i = 0; i < 100; i++)
        getppid();
    printf("boot data stomped\n");
    return 0;
}

static int ram(void)
{
    /* All guest RAM (64 MiB by default), the kernel's and ours. */
    volatile uint64_t *m = (volatile uint64_t *)(uintptr_t)PHYS_MAP;
    for (uint64_t i = 0; i < (512ull << 20) / 8; i++)
        m[i] = 0xdeadbeefdeadbeefull;
    return 0;
}

static int idt_garbage(void)
{
    static uint8_t junk[4096];
    for (unsigned i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)next();
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) idt = {4095, (uint64_t)(uintptr_t)junk};
    __asm__ volatile("lidt %0" ::"m"(idt));
    for (int i = 0; i < 1000; i++)
        getppid();
    __asm__ volatile("int3");
    return 0;
}

static int cr0(void)
{
    __asm__ volatile("mov %%cr0, %%rax; and $0x7fffffff, %%eax; mov %%rax, %%cr0" ::: "rax");
    return 0;
}

static int timer_storm(void)
{
    /* The TSC deadline (MSR 0x6e0) always in the past, interrupts on. */
    catch_faults();
    for (int i = 0; i < 20000; i++) {
        if (sigsetjmp(back, 1))
            continue;
        wrmsr(0x6e0, 1);
    }
    printf("timer storm done\n");
    return 0;
}

static int ipi_storm(void)
{
    catch_faults();
    for (int i = 0; i < 20000; i++) {
        if (sigsetjmp(back, 1))
            continue;
        /* x2APIC ICR: fixed delivery, random vector, random destination. */
        wrmsr(0x830, ((next() & 0xff) << 32) | (0x20 + (next() % 0xd0)));
    }
    printf("ipi storm done\n");
    return 0;
}

static int hypercalls(void)
{
    catch_faults();
    for (int i = 0; i < 2000; i++) {
        if (sigsetjmp(back, 1))
            continue;
        uint64_t a = next(), b = next(), c = next(), d = next();
        if (i & 1)
            __asm__ volatile("vmcall" : "+a"(a) : "b"(b), "c"(c), "d"(d) : "memory");
        else
            __asm__ volatile("vmmcall" : "+a"(a) : "b"(b), "c"(c), "d"(d) : "memory");
    }
    printf("hypercalls done\n");
    return 0;
}

static void *idle_thread(void *arg)
{
    pause();
    return arg;
}

static int threads(void)
{
    int n = 0;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 64 << 10);
    for (;;) {
        pthread_t t;
        if (pthread_create(&t, &a, idle_thread, NULL) != 0)
            break;
        n++;
    }
    printf("threads until refused: %d\n", n > 0);
    return 0;
}

static int mappings(void)
{
    size_t mapped = 0;
    for (;;) {
        char *p = mmap(NULL, 1ull << 36, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            break;
        mapped++;
        for (int i = 0; i < 64; i++)
            p[(next() % (1ull << 36)) & ~4095ull] = 1;
    }
    printf("mapped %zu areas of 64 GiB\n", mapped);
    return 0;
}

static volatile sig_atomic_t caught;
static void count(int s)
{
    (void)s;
    caught++;
}

static int signals(void)
{
    signal(SIGUSR1, count);
    for (int i = 0; i < 20000; i++)
        kill(getpid(), SIGUSR1);
    printf("signals caught: %d\n", caught == 20000);
    return 0;
}

static int exit_port(void)
{
    /* A garbage exit report: kiln decides what it means. */
    outl(PORT_EXIT, 0xffffffff);
    while (forever)
        ;
    return 0;
}

static const struct {
    const char *name;
    int (*run)(void);
} modes[] = {
    {"ports", ports},         {"port-reads", port_reads}, {"mmio", mmio},
    {"console-flood", console_flood}, {"triple-fault", triple_fault},
    {"cli-spin", cli_spin},   {"cli-hlt", cli_hlt},       {"spin", spin},
    {"memory", memory},       {"stack", stack},           {"msr-writes", msr_writes},
    {"msr-reads", msr_reads}, {"cpuid", cpuid_flood},     {"ud2", ud2},
    {"int-vectors", int_vectors}, {"kernel-text", kernel_text},
    {"page-tables", page_tables}, {"boot-data", boot_data}, {"ram", ram},
    {"idt", idt_garbage},     {"cr0", cr0},               {"timer-storm", timer_storm},
    {"ipi-storm", ipi_storm}, {"hypercalls", hypercalls}, {"threads", threads},
    {"mappings", mappings},   {"signals", signals},
    {"exit-port", exit_port},
};

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 2 && strcmp(argv[1], "list") == 0) {
        for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
            printf("%s\n", modes[i].name);
        return 0;
    }
    for (size_t i = 0; argc == 2 && i < sizeof modes / sizeof modes[0]; i++)
        if (strcmp(argv[1], modes[i].name) == 0)
            return modes[i].run();
    fprintf(stderr, "usage: attacker MODE (attacker list)\n");
    return 2;
}
