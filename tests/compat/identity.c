/* Identity and system information: ids, the passwd and group files, the
 * host name, uname, /proc/self and friends, /dev devices, and the clocks.
 * Values that differ between any two machines (CPU model, memory size,
 * kernel release) are checked for shape, not printed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static char *slurp(const char *path, size_t *len) {
    static char buf[1 << 16];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    size_t n = 0;
    ssize_t r;
    while ((r = read(fd, buf + n, sizeof buf - 1 - n)) > 0)
        n += r;
    close(fd);
    buf[n] = 0;
    if (len)
        *len = n;
    return buf;
}

int main(int argc, char **argv) {
    printf("argc %d argv[0] %s argv[1] %s\n", argc, argv[0], argc > 1 ? argv[1] : "-");
    printf("uid %d euid %d gid %d egid %d\n", getuid(), geteuid(), getgid(), getegid());
    printf("getgroups ok: %d\n", getgroups(0, NULL) >= 0);
    struct passwd *pw = getpwuid(0);
    printf("passwd: %s home %s shell %s\n", pw ? pw->pw_name : "-", pw ? pw->pw_dir : "-",
           pw ? pw->pw_shell : "-");
    struct group *gr = getgrgid(0);
    printf("group: %s\n", gr ? gr->gr_name : "-");
    printf("getpwnam(nobody): %s\n", getpwnam("nobody") ? "found" : "missing");

    char host[128] = "";
    gethostname(host, sizeof host);
    printf("hostname %s\n", host);
    struct utsname u;
    memset(&u, 0, sizeof u);
    uname(&u);
    printf("uname: %s %s %s, release looks like a version: %d\n", u.sysname, u.nodename,
           u.machine, u.release[0] >= '0' && u.release[0] <= '9');

    char exe[256];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    printf("/proc/self/exe -> %s\n", exe);
    size_t len;
    char *cmd = slurp("/proc/self/cmdline", &len);
    printf("/proc/self/cmdline: %zu bytes, first %s\n", len, cmd ? cmd : "-");
    char *maps = slurp("/proc/self/maps", NULL);
    printf("/proc/self/maps names the program: %d, [stack]: %d, [heap] or anonymous: %d\n",
           maps && strstr(maps, exe) != NULL, maps && strstr(maps, "[stack]") != NULL,
           maps && strstr(maps, "rw-p") != NULL);
    char *cpu = slurp("/proc/cpuinfo", NULL);
    printf("/proc/cpuinfo: processor %d, model name %d, flags %d\n",
           cpu && strstr(cpu, "processor\t: 0") != NULL, cpu && strstr(cpu, "model name") != NULL,
           cpu && strstr(cpu, "flags\t\t:") != NULL);
    char *mem = slurp("/proc/meminfo", NULL);
    long total = 0, avail = 0;
    if (mem) {
        char *t = strstr(mem, "MemTotal:");
        char *a = strstr(mem, "MemAvailable:");
        if (t)
            total = strtol(t + 9, NULL, 10);
        if (a)
            avail = strtol(a + 13, NULL, 10);
    }
    printf("/proc/meminfo: MemTotal > 0: %d, MemAvailable <= MemTotal: %d\n", total > 0,
           avail > 0 && avail <= total);
    char *status = slurp("/proc/self/status", NULL);
    printf("/proc/self/status has Name: %d\n", status && strstr(status, "Name:") != NULL);
    printf("sysconf: nprocessors >= 1: %d, pagesize %ld\n", sysconf(_SC_NPROCESSORS_ONLN) >= 1,
           sysconf(_SC_PAGESIZE));

    /* Thread names, sysinfo, and no children to wait for. */
    char name[16] = "";
    prctl(PR_GET_NAME, name);
    printf("comm %s\n", name);
    prctl(PR_SET_NAME, "renamed-by-prctl-long");
    prctl(PR_GET_NAME, name);
    char *comm = slurp("/proc/self/comm", NULL);
    printf("comm now %s, /proc/self/comm %s", name, comm ? comm : "-\n");
    /* Every call on its own line, before the printf that shows its result:
     * C leaves the order in which arguments are evaluated unspecified. */
    struct sysinfo si;
    memset(&si, 0, sizeof si);
    int si_ret = sysinfo(&si);
    printf("sysinfo %d, ram > 0: %d, procs >= 1: %d\n", si_ret, si.totalram > 0, si.procs >= 1);
    int wstatus = 0;
    errno = 0;
    pid_t w = wait(&wstatus);
    int wait_errno = errno;
    printf("wait: %d %s\n", w, strerrorname_np(wait_errno));

    /* Devices. */
    int z = open("/dev/zero", O_RDONLY);
    char buf[64];
    memset(buf, 1, sizeof buf);
    ssize_t got = read(z, buf, sizeof buf);
    printf("/dev/zero read %zd, zeros %d\n", got, buf[0] == 0 && buf[63] == 0);
    close(z);
    int nul = open("/dev/null", O_RDWR);
    ssize_t wrote = write(nul, "abc", 3);
    ssize_t got_null = read(nul, buf, sizeof buf);
    printf("/dev/null write %zd read %zd\n", wrote, got_null);
    close(nul);
    int ur = open("/dev/urandom", O_RDONLY);
    unsigned char r1[16] = {0}, r2[16] = {0};
    read(ur, r1, 16);
    read(ur, r2, 16);
    close(ur);
    printf("/dev/urandom differs between reads: %d\n", memcmp(r1, r2, 16) != 0);
    printf("getrandom 32 bytes: %zd\n", getrandom(buf, 32, 0));

    /* Limits. */
    struct rlimit rl = {0, 0};
    getrlimit(RLIMIT_NOFILE, &rl);
    printf("RLIMIT_NOFILE soft >= 256: %d\n", rl.rlim_cur >= 256);
    getrlimit(RLIMIT_STACK, &rl);
    printf("RLIMIT_STACK soft >= 1 MiB: %d\n", rl.rlim_cur >= (1 << 20));

    /* Clocks agree with each other and with the wall. */
    struct timespec rt = {0, 0}, mono = {0, 0}, mono2 = {0, 0};
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    time_t t = time(NULL);
    clock_gettime(CLOCK_MONOTONIC, &mono2);
    printf("realtime after 2024: %d, time() agrees: %d, monotonic advances: %d\n",
           rt.tv_sec > 1704067200, t - rt.tv_sec <= 1,
           mono2.tv_sec > mono.tv_sec || mono2.tv_nsec >= mono.tv_nsec);
    struct tm tm;
    gmtime_r(&t, &tm);
    char when[64];
    strftime(when, sizeof when, "%Y", &tm);
    printf("the year has four digits: %zu\n", strlen(when));
    struct timespec res = {1, 0};
    clock_getres(CLOCK_MONOTONIC, &res);
    printf("monotonic resolution <= 1 ms: %d\n", res.tv_sec == 0 && res.tv_nsec <= 1000000);
    errno = 0;
    int bad = clock_gettime(12345, &rt);
    int bad_errno = errno;
    printf("bad clock: %d %s\n", bad, strerrorname_np(bad_errno));
    return 0;
}
