#include "id_map.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"

void id_map_reserve(id_map_t *m, size_t n) {
    size_t want = 64;
    while (want < 2 * n)
        want *= 2;
    if (want <= m->cap) return;
    id_map_free(m);
    m->cap = want;
    m->keys = XMALLOC(want * sizeof *m->keys);
    m->val = XMALLOC(want * sizeof *m->val);
    m->stamp = XCALLOC(want, sizeof *m->stamp);
}

void id_map_clear(id_map_t *m) {
    if (++m->gen == 0) { /* the stamps wrapped: clear them once */
        memset(m->stamp, 0, m->cap * sizeof *m->stamp);
        m->gen = 1;
    }
}

int32_t id_map_get_or_put(id_map_t *m, uint64_t id, int32_t value, int *inserted) {
    size_t mask = m->cap - 1, h = (size_t)((id * 0x9E3779B97F4A7C15ull) >> 17) & mask;
    while (m->stamp[h] == m->gen && m->keys[h] != id)
        h = (h + 1) & mask;
    *inserted = m->stamp[h] != m->gen;
    if (*inserted) {
        m->stamp[h] = m->gen;
        m->keys[h] = id;
        m->val[h] = value;
    }
    return m->val[h];
}

void id_map_free(id_map_t *m) {
    free(m->keys);
    free(m->val);
    free(m->stamp);
    memset(m, 0, sizeof *m);
}
