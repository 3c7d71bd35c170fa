/* Signals: handlers with siginfo, masks and pending sets, faults turned
 * into signals (and recovered from with siglongjmp or by editing the
 * ucontext), the alternate stack, interval and POSIX timers, sigsuspend,
 * sigtimedwait, EINTR versus SA_RESTART, and finally death by a signal's
 * default action (exit status 128 + 15). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

static volatile sig_atomic_t hits;
static volatile int last_signo, last_code;
static volatile pid_t last_pid;

static void on_usr(int signo, siginfo_t *si, void *uc) {
    (void)uc;
    hits++;
    last_signo = signo;
    last_code = si->si_code;
    last_pid = si->si_pid;
}

static void install(int signo, void (*fn)(int, siginfo_t *, void *), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, NULL) != 0)
        printf("sigaction %d failed: %s\n", signo, strerror(errno));
}

static const char *code_name(int code) {
    switch (code) {
    case SI_USER: return "SI_USER";
    case SI_TKILL: return "SI_TKILL";
    case SI_QUEUE: return "SI_QUEUE";
    case SI_TIMER: return "SI_TIMER";
    case SI_KERNEL: return "SI_KERNEL";
    default: return "other";
    }
}

static sigjmp_buf recover;
static volatile void *fault_addr;
static volatile int fault_code;
static volatile int on_alt;
static char *alt_base;
static size_t alt_size;

static void on_fault(int signo, siginfo_t *si, void *uc) {
    (void)uc;
    char here;
    fault_addr = si->si_addr;
    fault_code = si->si_code;
    on_alt = alt_base && &here > alt_base && &here < alt_base + alt_size;
    siglongjmp(recover, signo);
}

static void skip_ud2(int signo, siginfo_t *si, void *ucv) {
    (void)signo;
    (void)si;
    ucontext_t *uc = ucv;
    uc->uc_mcontext.gregs[REG_RIP] += 2; /* resume after the ud2 */
    uc->uc_mcontext.gregs[REG_RAX] = 1234;
}

static void on_alarm(int signo) {
    (void)signo;
    hits++;
}

static int pipe_fds[2];

static void *write_later(void *arg) {
    (void)arg;
    struct timespec d = {0, 150 * 1000000L};
    nanosleep(&d, NULL);
    if (write(pipe_fds[1], "x", 1) != 1)
        abort();
    return NULL;
}

/* FUTEX_WAIT through an inline `mov eax, 202; syscall`, the pattern kiln
 * rewrites into a call: a restart after a signal handler must still work
 * from a rewritten site. */
static long raw_futex_wait(int *addr, int val) {
    long ret;
    register long r10 __asm__("r10") = 0;
    __asm__ volatile("mov $202, %%eax\n\tsyscall"
                     : "=a"(ret)
                     : "D"(addr), "S"(128 /* FUTEX_WAIT_PRIVATE */), "d"(val), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}

static int futex_word;

static void *wake_later(void *arg) {
    (void)arg;
    struct timespec d = {0, 150 * 1000000L};
    nanosleep(&d, NULL);
    __atomic_store_n(&futex_word, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &futex_word, 129 /* FUTEX_WAKE_PRIVATE */, 1, NULL, NULL, 0);
    return NULL;
}

/* Stores to a low address that is never mapped; the address goes through
 * a volatile so that the compiler neither warns nor assumes anything. */
static void poke_unmapped(uintptr_t addr) {
    volatile uintptr_t where = addr;
    *(volatile int *)where = 1;
}

static void arm_ms(long ms) {
    struct itimerval it = {{0, 0}, {ms / 1000, (ms % 1000) * 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
}

int main(void) {
    int r;
    setvbuf(stdout, NULL, _IONBF, 0);

    /* 1. raise and kill deliver to the handler with the right siginfo. */
    install(SIGUSR1, on_usr, 0);
    raise(SIGUSR1);
    printf("raise: hits %d signo %d code %s\n", hits, last_signo, code_name(last_code));
    kill(getpid(), SIGUSR1);
    printf("kill: hits %d code %s pid matches %d\n", hits, code_name(last_code),
           last_pid == getpid());
    union sigval v = {.sival_int = 42};
    sigqueue(getpid(), SIGUSR1, v);
    printf("sigqueue: hits %d code %s\n", hits, code_name(last_code));

    /* 2. A blocked signal stays pending until unblocked. */
    sigset_t set, old, pend;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, &old);
    raise(SIGUSR1);
    raise(SIGUSR1);
    sigpending(&pend);
    printf("blocked: hits %d pending %d\n", hits, sigismember(&pend, SIGUSR1));
    sigprocmask(SIG_SETMASK, &old, NULL);
    sigpending(&pend);
    printf("unblocked: hits %d (standard signals do not queue) pending %d\n", hits,
           sigismember(&pend, SIGUSR1));

    /* 3. Real-time signals queue every instance, in order. */
    install(SIGRTMIN + 1, on_usr, 0);
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + 1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int before = hits;
    for (int i = 0; i < 3; i++)
        sigqueue(getpid(), SIGRTMIN + 1, v);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    printf("realtime: %d deliveries\n", hits - before);

    /* 4. Faults become signals; the handler escapes with siglongjmp. */
    install(SIGSEGV, on_fault, 0);
    install(SIGFPE, on_fault, 0);
    int got = sigsetjmp(recover, 1);
    if (got == 0) {
        poke_unmapped(16);
        puts("no fault?");
    }
    printf("segv: signal %d addr %p code %s\n", got, (void *)fault_addr,
           fault_code == SEGV_MAPERR ? "SEGV_MAPERR" : "other");
    got = sigsetjmp(recover, 1);
    if (got == 0) {
        volatile int zero = 0;
        volatile int r = 10 / zero;
        (void)r;
    }
    printf("fpe: signal %d code %s\n", got, fault_code == FPE_INTDIV ? "FPE_INTDIV" : "other");
    /* The mask was restored by siglongjmp: SIGSEGV works again. */
    got = sigsetjmp(recover, 1);
    if (got == 0)
        poke_unmapped(24);
    printf("segv again: signal %d addr %p\n", got, (void *)fault_addr);

    /* 5. A handler that edits the ucontext: skip a ud2, change RAX. */
    install(SIGILL, skip_ud2, 0);
    long rax;
    __asm__ volatile("xor %%eax, %%eax\n\tud2" : "=a"(rax));
    printf("ill: resumed after ud2 with rax %ld\n", rax);

    /* 6. The alternate stack. */
    alt_size = 64 * 1024;
    alt_base = malloc(alt_size);
    stack_t ss = {.ss_sp = alt_base, .ss_size = alt_size, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    install(SIGSEGV, on_fault, SA_ONSTACK);
    got = sigsetjmp(recover, 1);
    if (got == 0)
        poke_unmapped(32);
    stack_t now;
    memset(&now, 0, sizeof now);
    sigaltstack(NULL, &now);
    printf("altstack: handler ran on it %d, flags after %d\n", on_alt, now.ss_flags);
    stack_t small = {.ss_sp = alt_base, .ss_size = 100, .ss_flags = 0};
    r = sigaltstack(&small, NULL);
    printf("altstack too small: %d %s\n", r, strerror(errno));

    /* 7. setitimer + sigsuspend; the mask comes back afterwards. */
    signal(SIGALRM, on_alarm);
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    sigprocmask(SIG_BLOCK, &set, &old);
    hits = 0;
    arm_ms(30);
    sigset_t wait_mask = old;
    sigdelset(&wait_mask, SIGALRM);
    r = sigsuspend(&wait_mask);
    sigset_t after;
    sigprocmask(SIG_SETMASK, NULL, &after);
    printf("sigsuspend: %d %s hits %d alarm still blocked %d\n", r, strerror(errno), hits,
           sigismember(&after, SIGALRM));
    sigprocmask(SIG_SETMASK, &old, NULL);

    /* 8. POSIX timer, periodic, collected with sigtimedwait. */
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &set, NULL);
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGRTMIN;
    sev.sigev_value.sival_int = 7;
    timer_t tid;
    timer_create(CLOCK_MONOTONIC, &sev, &tid);
    struct itimerspec its = {{0, 10 * 1000000L}, {0, 10 * 1000000L}};
    timer_settime(tid, 0, &its, NULL);
    int ticks = 0, value_ok = 1, code_ok = 1;
    for (int i = 0; i < 5; i++) {
        siginfo_t si;
        if (sigwaitinfo(&set, &si) == SIGRTMIN) {
            ticks++;
            value_ok &= si.si_value.sival_int == 7;
            code_ok &= si.si_code == SI_TIMER;
        }
    }
    struct itimerspec cur;
    memset(&cur, 0, sizeof cur);
    timer_gettime(tid, &cur);
    printf("timer: %d ticks, value ok %d, code ok %d, interval %ld ns\n", ticks, value_ok,
           code_ok, cur.it_interval.tv_nsec);
    /* Stop it and drain an expiry that raced with the last wait. */
    struct itimerspec off = {{0, 0}, {0, 0}};
    timer_settime(tid, 0, &off, NULL);
    struct timespec poll_now = {0, 0};
    while (sigtimedwait(&set, NULL, &poll_now) == SIGRTMIN)
        ;
    timer_delete(tid);
    r = timer_gettime(tid, &cur);
    printf("deleted timer: %d %s\n", r, strerror(errno));
    struct timespec zero = {0, 0};
    r = sigtimedwait(&set, NULL, &zero);
    printf("sigtimedwait on nothing: %d %s\n", r, strerror(errno));
    struct timespec short_wait = {0, 20 * 1000000L};
    r = sigtimedwait(&set, NULL, &short_wait);
    printf("sigtimedwait 20 ms: %d %s\n", r, strerror(errno));

    /* 9. EINTR without SA_RESTART, a restarted read with it. */
    pipe(pipe_fds);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    arm_ms(20);
    char c = '?';
    ssize_t n = read(pipe_fds[0], &c, 1);
    printf("read without SA_RESTART: %zd %s\n", n, strerror(errno));
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    pthread_t w;
    pthread_create(&w, NULL, write_later, NULL);
    hits = 0;
    arm_ms(20);
    n = read(pipe_fds[0], &c, 1);
    printf("read with SA_RESTART: %zd '%c' after %d alarm\n", n, c, hits);
    pthread_join(w, NULL);
    /* The same restart from a system call made through a rewritten site:
     * run it once (EAGAIN: the value differs) so that kiln rewrites it. */
    futex_word = 0;
    printf("futex wait on a changed word: %ld\n", raw_futex_wait(&futex_word, 1));
    pthread_create(&w, NULL, wake_later, NULL);
    hits = 0;
    arm_ms(20);
    long fr = raw_futex_wait(&futex_word, 0);
    printf("restarted futex wait: %ld, word %d, after %d alarm\n", fr, futex_word, hits);
    pthread_join(w, NULL);
    arm_ms(20);
    struct timespec long_sleep = {5, 0}, rem = {0, 0};
    r = nanosleep(&long_sleep, &rem);
    printf("nanosleep interrupted: %d %s, remaining between 4 and 5 s: %d\n", r,
           strerror(errno), rem.tv_sec == 4);

    /* 10. SIG_IGN discards; the default action of SIGTERM ends the program. */
    signal(SIGUSR2, SIG_IGN);
    raise(SIGUSR2);
    puts("ignored SIGUSR2");
    signal(SIGTERM, SIG_DFL);
    raise(SIGTERM);
    puts("not reached");
    return 0;
}
