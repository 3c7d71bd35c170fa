/* The greeting program of the boot tests: prints a greeting, its arguments
 * and one environment variable, so that a wrong argv/envp shows up as a
 * difference from the same binary run natively. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    const char *greeting = getenv("GREETING");
    printf("hello from kiln (%s)\n", greeting ? greeting : "no GREETING");
    for (int i = 0; i < argc; i++)
        printf("argv[%d] = %s\n", i, argv[i]);
    return 0;
}
