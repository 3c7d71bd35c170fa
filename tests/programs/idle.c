/* An idle appliance for `cargo xtask bench-density`: says it is ready,
 * then sleeps (a long timer, no busy waiting) until the VM is killed. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    fputs("ready\n", stdout);
    fflush(stdout);
    for (;;)
        sleep(3600);
}
