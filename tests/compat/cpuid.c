// What glibc's dynamic loader learnt from CPUID as the program started
// (kiln answers most of those questions from a table instead of the
// hypervisor: the loader's CPUID instructions are rewritten at exec) must
// be what the CPUID instruction says now, leaf by leaf, and the cache
// sizes glibc derived from the cache leaves must match the program's own
// reading of them (leaf 4 on Intel, 0x80000005/6 on AMD). Prints only whether they agree, so that the output
// is the same on any CPU.
#include <cpuid.h>
#include <stdio.h>
#include <sys/platform/x86.h>
#include <unistd.h>

static int mismatches;

static void compare(const char *name, unsigned index, unsigned leaf, unsigned subleaf) {
    unsigned max = __get_cpuid_max(leaf & 0x80000000u, NULL);
    if (leaf > max) {
        printf("%-12s not offered\n", name);
        return;
    }
    unsigned r[4];
    __cpuid_count(leaf, subleaf, r[0], r[1], r[2], r[3]);
    const struct cpuid_feature *f = __x86_get_cpuid_feature_leaf(index);
    int same = 1;
    for (int i = 0; i < 4; i++) {
        if (f->cpuid_array[i] != r[i]) {
            same = 0;
            fprintf(stderr, "%s register %d: loader %#x, now %#x\n", name, i, f->cpuid_array[i],
                    r[i]);
        }
    }
    mismatches += !same;
    printf("%-12s %s\n", name, same ? "agrees" : "DIFFERS");
}

// The size of the first data or unified cache of `level` by leaf 4
// (0 when leaf 4 does not list one).
static long leaf4_size(unsigned level) {
    if (__get_cpuid_max(0, NULL) < 4) {
        return 0;
    }
    for (unsigned i = 0; i < 64; i++) {
        unsigned a, b, c, d;
        __cpuid_count(4, i, a, b, c, d);
        unsigned type = a & 0x1f;
        if (type == 0) {
            break;
        }
        if (((a >> 5) & 7) == level && type != 2) {
            return (long)(((b >> 22) & 0x3ff) + 1) * (((b >> 12) & 0x3ff) + 1) *
                   ((b & 0xfff) + 1) * ((long)c + 1);
        }
    }
    return 0;
}

int main(void) {
    compare("leaf 7.0", CPUID_INDEX_7, 7, 0);
    compare("leaf 7.1", CPUID_INDEX_7_ECX_1, 7, 1);
    compare("leaf 14.0", CPUID_INDEX_14_ECX_0, 0x14, 0);
    compare("leaf 19", CPUID_INDEX_19, 0x19, 0);
    compare("leaf 80000001", CPUID_INDEX_80000001, 0x80000001, 0);
    compare("leaf 80000007", CPUID_INDEX_80000007, 0x80000007, 0);
    compare("leaf 80000008", CPUID_INDEX_80000008, 0x80000008, 0);
    unsigned vendor[4];
    __cpuid(0, vendor[0], vendor[1], vendor[2], vendor[3]);
    int intel = vendor[1] == 0x756e6547 && vendor[3] == 0x49656e69 && vendor[2] == 0x6c65746e;
    int amd = vendor[1] == 0x68747541 && vendor[3] == 0x69746e65 && vendor[2] == 0x444d4163;
    const struct {
        const char *name;
        int conf;
        unsigned level;
    } caches[] = {
        {"L1d size", _SC_LEVEL1_DCACHE_SIZE, 1},
        {"L2 size", _SC_LEVEL2_CACHE_SIZE, 2},
    };
    for (unsigned i = 0; i < sizeof caches / sizeof caches[0]; i++) {
        long glibc = sysconf(caches[i].conf), own = -1;
        if (intel) {
            own = leaf4_size(caches[i].level); // glibc reads leaf 4
        } else if (amd && __get_cpuid_max(0x80000000u, NULL) >= 0x80000006u) {
            unsigned a, b, c, d; // glibc 2.36 reads 0x80000005 and 0x80000006
            __cpuid(caches[i].level == 1 ? 0x80000005u : 0x80000006u, a, b, c, d);
            own = caches[i].level == 1 ? (long)(c >> 24) << 10 : (long)(c >> 16) << 10;
        }
        if (own < 0) {
            printf("%-12s not compared\n", caches[i].name);
            continue;
        }
        int same = glibc == own || (glibc <= 0 && own == 0);
        if (!same) {
            fprintf(stderr, "%s: glibc %ld, CPUID %ld\n", caches[i].name, glibc, own);
        }
        mismatches += !same;
        printf("%-12s %s\n", caches[i].name, same ? "agrees" : "DIFFERS");
    }
    return mismatches ? 1 : 0;
}
