/* main.c - runs every test group and prints "N passed, N failed". */
#include <stdio.h>

#include "test.h"

/* groups.h is made by the Makefile from the TEST_GROUP(...) lines of
 * tests/test_*.c: it defines GROUPS(X) as X(test_a) X(test_b) ... */
#include "groups.h"
#define DECLARE(g) int g(int *n_tests);
GROUPS(DECLARE)

int main(void)
{
    static int (*const groups[])(int *) = {
#define ENTRY(g) g,
        GROUPS(ENTRY)
    };
    int total = 0, failed = 0;
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        int n = 0;
        int f = groups[i](&n);
        total += n;
        failed += f;
    }
    printf("\n%d passed, %d failed\n", total - failed, failed);
    return failed ? 1 : 0;
}
