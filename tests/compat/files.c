/* Files: the read-only root file system from the image and the writable
 * layer over it. Reads, writes, offsets, the stat family, directories,
 * links, renames, truncation, descriptor flags and the exact errno of
 * every refusal. Run with the compat data files in /data. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "show.h"

static void show_stat(const char *path, int follow) {
    struct stat st;
    int r = follow ? stat(path, &st) : lstat(path, &st);
    if (r < 0) {
        printf("stat %s: %s\n", path, strerrorname_np(errno));
        return;
    }
    const char *kind = S_ISREG(st.st_mode)   ? "file"
                       : S_ISDIR(st.st_mode) ? "dir"
                       : S_ISLNK(st.st_mode) ? "symlink"
                       : S_ISCHR(st.st_mode) ? "chardev"
                       : S_ISFIFO(st.st_mode) ? "fifo"
                                              : "other";
    printf("stat %s: %s mode %o uid %d gid %d", path, kind, st.st_mode & 07777, st.st_uid,
           st.st_gid);
    if (!S_ISDIR(st.st_mode))
        printf(" size %lld", (long long)st.st_size);
    if (S_ISREG(st.st_mode))
        printf(" nlink %ld", (long)st.st_nlink);
    printf("\n");
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list_dir(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        printf("opendir %s: %s\n", path, strerrorname_np(errno));
        return;
    }
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256) {
        char type = e->d_type == DT_DIR ? 'd' : e->d_type == DT_REG ? 'f' : e->d_type == DT_LNK ? 'l' : '?';
        if (asprintf(&names[n], "%s(%c)", e->d_name, type) > 0)
            n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    printf("%s:", path);
    for (int i = 0; i < n; i++) {
        printf(" %s", names[i]);
        free(names[i]);
    }
    printf("\n");
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    char buf[512];
    memset(buf, 0, sizeof buf);

    /* Reading an image file: whole, by offset, vectored, with seeks. */
    int fd = open("/data/words.txt", O_RDONLY);
    SHOW(fd >= 0);
    SHOW(read(fd, buf, 10));
    printf("first bytes: %.10s\n", buf);
    SHOW(lseek(fd, 0, SEEK_CUR));
    SHOW(pread(fd, buf, 5, 100));
    printf("at 100: %.5s\n", buf);
    SHOW(lseek(fd, 0, SEEK_CUR));
    SHOW(lseek(fd, -4, SEEK_END));
    SHOW(read(fd, buf, sizeof buf));
    SHOW(read(fd, buf, sizeof buf));
    SHOW(lseek(fd, -1, SEEK_SET));
    char a[4] = "----", b[6] = "------";
    struct iovec iov[2] = {{a, sizeof a}, {b, sizeof b}};
    lseek(fd, 0, SEEK_SET);
    SHOW(readv(fd, iov, 2));
    printf("readv: %.4s|%.6s\n", a, b);
    SHOW(write(fd, "x", 1));
    SHOW(fcntl(fd, F_GETFL) & O_ACCMODE);
    SHOW(fcntl(fd, F_GETFD));
    close(fd);

    /* The stat family. */
    show_stat("/data/words.txt", 1);
    show_stat("/data", 1);
    show_stat("/data/script.sh", 1);
    show_stat("/dev/null", 1);
    show_stat("/missing", 1);
    SHOW(access("/data/words.txt", R_OK | W_OK));
    SHOW(access("/data/words.txt", X_OK));
    SHOW(access("/data/script.sh", X_OK));
    SHOW(access("/data/words.txt/x", F_OK));
    SHOW(faccessat(AT_FDCWD, "/data", X_OK, AT_EACCESS));
    struct statx sx;
    memset(&sx, 0, sizeof sx);
    SHOW(statx(AT_FDCWD, "/data/numbers.txt", 0, STATX_SIZE | STATX_MODE, &sx));
    printf("statx size %llu mode %o\n", (unsigned long long)sx.stx_size, sx.stx_mode & 07777);

    /* Errors opening. */
    SHOW(open("/data/nope", O_RDONLY));
    SHOW(open("/data", O_WRONLY));
    SHOW(open("/data/words.txt/", O_RDONLY));
    SHOW(open("/data/words.txt", O_RDONLY | O_DIRECTORY));
    SHOW(open("/data/words.txt", O_CREAT | O_EXCL | O_WRONLY, 0644));
    SHOW(open("", O_RDONLY));
    SHOW(close(12345));
    SHOW(read(-1, buf, 1));

    /* Directories. */
    list_dir("/data");
    list_dir("/data/tree");
    SHOW(chdir("/data/tree"));
    SHOW(getcwd(buf, sizeof buf) != NULL);
    printf("cwd %s\n", buf);
    SHOW(chdir("../words.txt"));
    SHOW(chdir("/nowhere"));
    SHOW(getcwd(buf, 2) != NULL);
    chdir("/");

    /* Writing: the tmp directory and files over the image. */
    SHOW(mkdir("/tmp/w", 0755));
    SHOW(mkdir("/tmp/w", 0755));
    SHOW(mkdir("/tmp/none/x", 0755));
    fd = open("/tmp/w/f", O_CREAT | O_RDWR | O_TRUNC, 0640);
    SHOW(fd >= 0);
    SHOW(write(fd, "hello, world\n", 13));
    SHOW(pwrite(fd, "HELLO", 5, 0));
    SHOW(lseek(fd, 0, SEEK_CUR));
    SHOW(ftruncate(fd, 5));
    SHOW(lseek(fd, 0, SEEK_END));
    SHOW(write(fd, "!", 1));
    SHOW(pread(fd, buf, sizeof buf, 0));
    printf("contents: %.6s\n", buf);
    SHOW(ftruncate(fd, 8192));
    struct stat st;
    memset(&st, 0, sizeof st);
    fstat(fd, &st);
    printf("after growing: size %lld\n", (long long)st.st_size);
    SHOW(pread(fd, buf, 4, 8000));
    printf("zero-filled: %d %d %d %d\n", buf[0], buf[1], buf[2], buf[3]);
    close(fd);
    show_stat("/tmp/w/f", 1);
    fd = open("/tmp/w/f", O_WRONLY | O_APPEND);
    SHOW(write(fd, "tail", 4));
    SHOW(lseek(fd, 0, SEEK_CUR));
    close(fd);

    SHOW(rename("/tmp/w/f", "/tmp/w/g"));
    SHOW(access("/tmp/w/f", F_OK));
    SHOW(link("/tmp/w/g", "/tmp/w/h"));
    show_stat("/tmp/w/h", 1);
    SHOW(symlink("/tmp/w/g", "/tmp/w/s"));
    show_stat("/tmp/w/s", 0);
    ssize_t n = readlink("/tmp/w/s", buf, sizeof buf);
    printf("readlink: %.*s\n", n > 0 ? (int)n : 0, buf);
    SHOW(readlink("/tmp/w/g", buf, sizeof buf));
    list_dir("/tmp/w");
    SHOW(rmdir("/tmp/w"));
    SHOW(unlink("/tmp/w"));
    SHOW(unlink("/tmp/w/h"));
    SHOW(unlink("/tmp/w/s"));
    SHOW(unlink("/tmp/w/g"));
    SHOW(unlink("/tmp/w/g"));
    SHOW(rmdir("/tmp/w"));
    list_dir("/tmp");

    /* Changing a file that came with the image. */
    fd = open("/data/numbers.txt", O_WRONLY | O_APPEND);
    SHOW(write(fd, "99\n", 3));
    close(fd);
    fd = open("/data/numbers.txt", O_RDONLY);
    n = read(fd, buf, sizeof buf);
    close(fd);
    printf("numbers now end with: %.6s", n >= 6 ? buf + n - 6 : "(short)\n");
    SHOW(rename("/data/numbers.txt", "/tmp/numbers.txt"));
    SHOW(access("/data/numbers.txt", F_OK));
    show_stat("/tmp/numbers.txt", 1);
    SHOW(unlink("/data/words.txt"));
    SHOW(open("/data/words.txt", O_RDONLY));

    /* sendfile from an image file to a new file. */
    int in = open("/data/sorted.txt", O_RDONLY);
    int out = open("/tmp/sent", O_CREAT | O_WRONLY, 0600);
    off_t off = 10;
    SHOW(sendfile(out, in, &off, 50));
    SHOW(off);
    SHOW(lseek(in, 0, SEEK_CUR));
    SHOW(sendfile(out, in, NULL, 1000));
    SHOW(lseek(in, 0, SEEK_CUR));
    SHOW(sendfile(out, 999, NULL, 10));
    close(in);
    close(out);
    show_stat("/tmp/sent", 1);

    /* Descriptors: dup, dup2, dup3, fcntl, O_CLOEXEC. */
    fd = open("/data/script.sh", O_RDONLY | O_CLOEXEC);
    SHOW(fcntl(fd, F_GETFD));
    int d2 = dup(fd);
    SHOW(fcntl(d2, F_GETFD));
    SHOW(read(fd, buf, 3));
    SHOW(lseek(d2, 0, SEEK_CUR));
    SHOW(dup2(fd, 20));
    SHOW(dup3(fd, 21, O_CLOEXEC));
    SHOW(fcntl(21, F_GETFD));
    SHOW(dup3(fd, fd, 0));
    SHOW(fcntl(fd, F_DUPFD, 30));
    SHOW(fcntl(fd, F_SETFD, 0));
    SHOW(fcntl(fd, F_GETFD));
    SHOW(fcntl(99, F_GETFD));
    return 0;
}
