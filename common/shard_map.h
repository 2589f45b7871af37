/* The shard map: which rows of each dense tensor each shard owns. A pure function of the tensor
 * shapes and S, so every process computes the same map without talking. */
#ifndef TESSERA_SHARD_MAP_H
#define TESSERA_SHARD_MAP_H

#include <stdint.h>

typedef struct {
    uint64_t row_begin, row_end; /* [begin, end) */
} row_range_t;

typedef struct {
    int n_tensors;
    int n_shards;
    row_range_t *ranges; /* [tensor * n_shards + shard] */
} shard_map_t;

/* Splits each tensor's `rows[t]` rows into `n_shards` contiguous blocks whose sizes differ by at most
 * one row. The extra rows of tensor t go to the shards starting at t mod S, so many small tensors do not
 * all land their remainder on shard 0. Returns 0 or -TS_EINVAL (n_shards < 1). */
int shard_map_init(shard_map_t *map, const uint64_t *rows, int n_tensors, int n_shards);
void shard_map_free(shard_map_t *map);

static inline row_range_t shard_map_range(const shard_map_t *map, int tensor, int shard) {
    return map->ranges[(long)tensor * map->n_shards + shard];
}

/* The shard that owns row `id` of sparse table `table`: XXH64 of the 12 bytes (table as uint32 LE, id as
 * uint64 LE) with seed 0, mod n_shards. Stable across versions: checkpoints and clients rely on it. */
int shard_map_sparse_owner(uint32_t table, uint64_t id, int n_shards);

#endif
