/* A minimal test harness: EXPECT records a failure with its location and goes on; the test's exit
 * status is the number of failures. */
#ifndef TESSERA_EXPECT_H
#define TESSERA_EXPECT_H

#include <math.h>
#include <stdio.h>

static int expect_failures;

#define EXPECT(cond, ...)                                                                                    \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            expect_failures++;                                                                               \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                  \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fputc('\n', stderr);                                                                             \
        }                                                                                                    \
    } while (0)

#define EXPECT_NEAR(a, b, tol)                                                                               \
    EXPECT(fabs((double)(a) - (double)(b)) <= (tol), "%s = %.9g, %s = %.9g, tolerance %.3g", #a,             \
           (double)(a), #b, (double)(b), (double)(tol))

#define EXPECT_DONE()                                                                                        \
    do {                                                                                                     \
        if (expect_failures)                                                                                 \
            fprintf(stderr, "%d check(s) failed\n", expect_failures);                                        \
        else                                                                                                 \
            fprintf(stderr, "all checks passed\n");                                                          \
        return expect_failures ? 1 : 0;                                                                      \
    } while (0)

#endif
