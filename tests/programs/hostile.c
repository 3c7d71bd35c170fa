/* A hostile guest driver: kiln runs programs at the kernel's privilege
 * level, so a program can reach a virtio device's registers through the
 * kernel's direct map and program a queue the way a broken or malicious
 * driver would. kiln-vmm must mark the device DEVICE_NEEDS_RESET and carry
 * on, never crash or hang. The victim is the entropy device, which the
 * kernel starts only on first use (this program never reads /dev/hwrng).
 *
 *   hostile outside   a buffer descriptor pointing outside guest memory
 *   hostile index     an available-ring entry past the descriptor table
 *   hostile loop      a descriptor chain that loops forever
 *   hostile length    a buffer descriptor longer than guest memory
 *   hostile rings     queue rings outside guest memory
 *   hostile setup     kiln's one-write setup block outside guest memory
 *
 * It prints the device status it reads back at the end and exits 0.
 *
 * The rings live in the unused tail of the page that held the boot info's
 * device table (guest-physical 0xa000, kiln_boot::layout::DEVICES): the
 * kernel copied the table at boot, so nothing else uses those bytes. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define PHYS_MAP 0xffff888000000000ull /* kiln_boot::vm::PHYS_MAP */
#define MMIO_BASE (64ull << 30)        /* kiln_boot::layout::VIRTIO_MMIO_BASE */
#define WINDOW 0x1000ull
#define SCRATCH 0xa800ull
#define OUTSIDE (1ull << 40) /* far beyond any guest's RAM */

enum {
    MAGIC = 0x000,
    DEVICE_ID = 0x008,
    DRIVER_FEATURES = 0x020,
    DRIVER_FEATURES_SEL = 0x024,
    QUEUE_SEL = 0x030,
    QUEUE_NUM = 0x038,
    QUEUE_READY = 0x044,
    QUEUE_NOTIFY = 0x050,
    STATUS = 0x070,
    QUEUE_DESC = 0x080,
    QUEUE_DRIVER = 0x090,
    QUEUE_DEVICE = 0x0a0,
    KILN_SETUP = 0x0f0,
};

#define QSIZE 16
#define NEEDS_RESET 0x40

struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

static volatile uint32_t *window;

static void put(unsigned reg, uint32_t v)
{
    window[reg / 4] = v;
}

static uint32_t get(unsigned reg)
{
    return window[reg / 4];
}

static void *phys(uint64_t pa)
{
    return (void *)(uintptr_t)(PHYS_MAP + pa);
}

static void put64(unsigned reg, uint64_t v)
{
    put(reg, (uint32_t)v);
    put(reg + 4, (uint32_t)(v >> 32));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: hostile outside|index|loop|length|rings|setup\n");
        return 2;
    }
    const char *mode = argv[1];
    /* The entropy device: the first window whose DeviceID is 4. */
    for (int i = 0; i < 4 && !window; i++) {
        volatile uint32_t *w = phys(MMIO_BASE + i * WINDOW);
        if (w[MAGIC / 4] == 0x74726976 && w[DEVICE_ID / 4] == 4)
            window = w;
    }
    if (!window) {
        fprintf(stderr, "hostile: no entropy device\n");
        return 1;
    }
    put(STATUS, 0);
    if (strcmp(mode, "setup") == 0) {
        put(KILN_SETUP, (uint32_t)(OUTSIDE >> 12));
    } else {
        uint64_t desc = SCRATCH, avail = SCRATCH + 0x100, used = SCRATCH + 0x200;
        struct desc *d = phys(desc);
        volatile uint16_t *a = phys(avail);
        memset(phys(SCRATCH), 0, 0x300);
        d[0] = (struct desc){.addr = SCRATCH + 0x400, .len = 64, .flags = 2 /* WRITE */};
        a[2] = 0; /* ring[0]: descriptor 0 */
        if (strcmp(mode, "outside") == 0)
            d[0].addr = OUTSIDE;
        else if (strcmp(mode, "index") == 0)
            a[2] = 200;
        else if (strcmp(mode, "loop") == 0) {
            d[0].flags = 2 | 1; /* WRITE | NEXT */
            d[0].next = 1;
            d[1] = (struct desc){.addr = SCRATCH + 0x400, .len = 64, .flags = 2 | 1, .next = 0};
        } else if (strcmp(mode, "length") == 0)
            d[0].len = 0xffffffff;
        else if (strcmp(mode, "rings") == 0)
            desc = avail = used = OUTSIDE;
        else {
            fprintf(stderr, "hostile: unknown mode %s\n", mode);
            return 2;
        }
        put(STATUS, 1);
        put(STATUS, 1 | 2);
        put(DRIVER_FEATURES_SEL, 1);
        put(DRIVER_FEATURES, 1); /* VIRTIO_F_VERSION_1 */
        put(DRIVER_FEATURES_SEL, 0);
        put(DRIVER_FEATURES, 0);
        put(STATUS, 1 | 2 | 8);
        put(QUEUE_SEL, 0);
        put(QUEUE_NUM, QSIZE);
        put64(QUEUE_DESC, desc);
        put64(QUEUE_DRIVER, avail);
        put64(QUEUE_DEVICE, used);
        put(QUEUE_READY, 1);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        a[1] = 1; /* avail idx: one buffer (unless the rings are elsewhere) */
        put(STATUS, 1 | 2 | 8 | 4);
        put(QUEUE_NOTIFY, 0);
    }
    /* The device thread handles the kick on its own time. */
    uint32_t status = 0;
    for (int i = 0; i < 200 && !(status & NEEDS_RESET); i++) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
        status = get(STATUS);
    }
    printf("%s: device status %#x%s\n", mode, status,
           status & NEEDS_RESET ? ", needs reset" : "");
    return 0;
}
