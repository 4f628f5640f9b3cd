/* main.c - runs the test groups and prints "N passed, N failed".
 *
 *   infer-tests [WORD ...]   only the groups whose name contains a WORD
 *                            (e.g. `infer-tests tok chat`) */
#include <stdio.h>
#include <string.h>

#include "test.h"

/* groups.h is made by the Makefile from the TEST_GROUP(...) lines of
 * tests/test_*.c: it defines GROUPS(X) as X(test_a) X(test_b) ... */
#include "groups.h"
#define DECLARE(g) int g(int *n_tests);
GROUPS(DECLARE)

static int selected(const char *name, int argc, char **argv)
{
    if (argc < 2) return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i])) return 1;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct {
        int (*run)(int *);
        const char *name;
    } groups[] = {
#define ENTRY(g) {g, #g},
        GROUPS(ENTRY)
    };
    int total = 0, failed = 0;
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        if (!selected(groups[i].name, argc, argv)) continue;
        int n = 0;
        int f = groups[i].run(&n);
        total += n;
        failed += f;
    }
    printf("\n%d passed, %d failed\n", total - failed, failed);
    return failed ? 1 : 0;
}
