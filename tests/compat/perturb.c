/* Preloaded (LD_PRELOAD) into the second native run of every case, to
 * catch output that depends on leftover memory rather than on the kernel.
 *
 * A fresh process's stack is zero-filled, and what a program's
 * uninitialised locals hold is whatever code ran there before: the same
 * on one machine, different on another (main's CI once printed
 * `ram > 0: 0` where the developer's machine printed 1). This library
 * stands between the C library and the program's main: it fills the stack
 * main is about to use with a non-zero pattern, removes its own variables
 * from the environment (so that a program printing its environment sees
 * the same one in both runs) and calls main. The harness also sets
 * MALLOC_PERTURB_ (glibc then fills fresh and freed heap memory) and pads
 * the environment (moving the stack). A case whose two native runs print
 * different things reads memory it never wrote, and is refused.
 *
 * Statically linked programs do not load it; MALLOC_PERTURB_ and the
 * padding still apply to them (and they see the variables). */
#define _GNU_SOURCE
#include <alloca.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How much of the stack below main's caller is filled: far more than the
 * frames of any case's main and its callees. */
#define FILL_BYTES (512 * 1024)
#define PATTERN 0xa5

typedef int (*main_fn)(int, char **, char **);
typedef int (*start_fn)(main_fn, int, char **, void (*)(void), void (*)(void),
                        void (*)(void), void *);

static main_fn real_main;

__attribute__((noinline)) static void fill_stack(void) {
    unsigned char *below = alloca(FILL_BYTES);
    memset(below, PATTERN, FILL_BYTES);
    /* Keep the stores: nothing reads them in this function. */
    __asm__ volatile("" : : "r"(below) : "memory");
}

/* Runs in place of main, in the frame the C library gave main. */
static int perturbed_main(int argc, char **argv, char **envp) {
    unsetenv("LD_PRELOAD");
    unsetenv("MALLOC_PERTURB_");
    unsetenv("KILN_COMPAT_PAD");
    fill_stack();
    return real_main(argc, argv, environ ? environ : envp);
}

/* The C library's entry to main, as every dynamically linked glibc program
 * (C, Rust) calls it from _start. */
int __libc_start_main(main_fn main, int argc, char **argv, void (*init)(void),
                      void (*fini)(void), void (*rtld_fini)(void), void *stack_end) {
    start_fn real = (start_fn)dlvsym(RTLD_NEXT, "__libc_start_main", "GLIBC_2.34");
    if (!real)
        real = (start_fn)dlsym(RTLD_NEXT, "__libc_start_main");
    if (!real) {
        static const char msg[] = "perturb.so: no __libc_start_main to call\n";
        (void)!write(2, msg, sizeof msg - 1);
        _exit(125);
    }
    real_main = main;
    return real(perturbed_main, argc, argv, init, fini, rtld_fini, stack_end);
}
