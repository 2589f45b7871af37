#include "shard_map.h"

#include <xxhash.h>

#include <stdlib.h>
#include <string.h>

#include "check.h"

int shard_map_init(shard_map_t *map, const uint64_t *rows, int n_tensors, int n_shards) {
    memset(map, 0, sizeof *map);
    if (n_shards < 1 || n_tensors < 0) return -TS_EINVAL;
    map->ranges = calloc((size_t)(n_tensors ? n_tensors : 1) * (size_t)n_shards, sizeof *map->ranges);
    if (!map->ranges) return -TS_ENOMEM;
    map->n_tensors = n_tensors;
    map->n_shards = n_shards;
    for (int t = 0; t < n_tensors; t++) {
        uint64_t base = rows[t] / (uint64_t)n_shards, rem = rows[t] % (uint64_t)n_shards;
        uint64_t begin = 0;
        for (int k = 0; k < n_shards; k++) {
            /* rotated position of shard k for tensor t: the first `rem` positions get an extra row */
            uint64_t pos = (uint64_t)((k - t % n_shards + n_shards) % n_shards);
            uint64_t n = base + (pos < rem);
            map->ranges[(long)t * n_shards + k] = (row_range_t){begin, begin + n};
            begin += n;
        }
    }
    return 0;
}

void shard_map_free(shard_map_t *map) {
    if (!map) return;
    free(map->ranges);
    memset(map, 0, sizeof *map);
}

int shard_map_sparse_owner(uint32_t table, uint64_t id, int n_shards) {
    if (n_shards <= 1) return 0;
    unsigned char b[12];
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(table >> (8 * i));
    for (int i = 0; i < 8; i++)
        b[4 + i] = (unsigned char)(id >> (8 * i));
    return (int)(XXH64(b, sizeof b, 0) % (uint64_t)n_shards);
}
