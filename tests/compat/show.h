/* SHOW(expr): prints the expression, its value and, when it is negative,
 * the errno name, so that a wrong result or errno changes the output. */
#ifndef KILN_COMPAT_SHOW_H
#define KILN_COMPAT_SHOW_H

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define SHOW(expr)                                                            \
    do {                                                                      \
        errno = 0;                                                            \
        long r_ = (long)(expr);                                               \
        int e_ = errno;                                                       \
        printf("%-56s = %ld%s%s\n", #expr, r_, r_ < 0 ? " " : "",             \
               r_ < 0 ? strerrorname_np(e_) : "");                           \
    } while (0)

#endif
