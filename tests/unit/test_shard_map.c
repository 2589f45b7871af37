/* Shard map: every row of every tensor has exactly one owner; blocks differ by at most one row. */
#include <stdlib.h>

#include "check.h"
#include "expect.h"
#include "shard_map.h"

int main(void) {
    uint64_t rows[] = {0, 1, 2, 3, 7, 10, 128, 256, 1000, 1001, 4095};
    int nt = (int)(sizeof rows / sizeof rows[0]);
    for (int S = 1; S <= 9; S++) {
        shard_map_t m;
        EXPECT(shard_map_init(&m, rows, nt, S) == 0, "S=%d", S);
        uint64_t per_shard[9] = {0};
        for (int t = 0; t < nt; t++) {
            uint64_t next = 0, lo = UINT64_MAX, hi = 0;
            for (int k = 0; k < S; k++) {
                row_range_t r = shard_map_range(&m, t, k);
                EXPECT(r.row_begin == next, "S=%d tensor %d shard %d starts at %llu, expected %llu", S, t, k,
                       (unsigned long long)r.row_begin, (unsigned long long)next);
                EXPECT(r.row_end >= r.row_begin, "S=%d tensor %d shard %d negative block", S, t, k);
                uint64_t n = r.row_end - r.row_begin;
                lo = n < lo ? n : lo;
                hi = n > hi ? n : hi;
                per_shard[k] += n;
                next = r.row_end;
            }
            EXPECT(next == rows[t], "S=%d tensor %d covers %llu of %llu rows", S, t, (unsigned long long)next,
                   (unsigned long long)rows[t]);
            EXPECT(hi - lo <= 1, "S=%d tensor %d blocks range from %llu to %llu rows", S, t,
                   (unsigned long long)lo, (unsigned long long)hi);
        }
        /* The rotation spreads remainders: totals over all tensors stay within nt rows of each other
         * and, for this list, within a few rows. */
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int k = 0; k < S; k++) {
            lo = per_shard[k] < lo ? per_shard[k] : lo;
            hi = per_shard[k] > hi ? per_shard[k] : hi;
        }
        EXPECT(hi - lo <= 3, "S=%d total rows per shard range from %llu to %llu", S, (unsigned long long)lo,
               (unsigned long long)hi);
        /* A pure function: computing it again gives the same map. */
        shard_map_t m2;
        shard_map_init(&m2, rows, nt, S);
        for (int i = 0; i < nt * S; i++)
            EXPECT(m.ranges[i].row_begin == m2.ranges[i].row_begin &&
                       m.ranges[i].row_end == m2.ranges[i].row_end,
                   "S=%d entry %d differs between two computations", S, i);
        shard_map_free(&m);
        shard_map_free(&m2);
    }
    shard_map_t bad;
    EXPECT(shard_map_init(&bad, rows, nt, 0) == -TS_EINVAL, "S=0 must be rejected");
    shard_map_free(NULL);
    EXPECT_DONE();
}
