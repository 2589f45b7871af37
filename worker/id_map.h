/* A map from row ids to small ints for deduplicating a batch's ids: open addressing, power-of-two
 * capacity of at least twice the keys it is reserved for, emptied in O(1) by a generation stamp. */
#ifndef TESSERA_ID_MAP_H
#define TESSERA_ID_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t *keys;
    int32_t *val;    /* [cap]; also scratch for a caller once it is done with the map */
    uint32_t *stamp; /* a slot is used when stamp == gen */
    uint32_t gen;
    size_t cap;
} id_map_t;

/* Room for n keys; growing drops the contents. */
void id_map_reserve(id_map_t *m, size_t n);
/* Empties the map. */
void id_map_clear(id_map_t *m);
/* The value of id; when absent, inserts `value` and sets *inserted (else clears it). */
int32_t id_map_get_or_put(id_map_t *m, uint64_t id, int32_t value, int *inserted);
void id_map_free(id_map_t *m);

#endif
