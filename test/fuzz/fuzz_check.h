/* fuzz_check.h: an invariant a fuzz target asserts, also under NDEBUG: a
 * violation aborts, which libFuzzer reports as a crash with its input. */
#ifndef TORPOR_FUZZ_CHECK_H
#define TORPOR_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#endif
