#include "sparse_table.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Placement hashes 12 bytes per id: inlined, it is a few nanoseconds instead of a library call. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "check.h"
#include "ckpt.h"
#include "shard_map.h"
#include "util.h"

/* Row indices are uint32 in the API and accumulator slots int32: a table holds at most this many rows
 * per shard. */
#define MAX_ROWS        ((uint64_t)INT32_MAX)
#define MIN_ROW_CAP     64
#define MIN_MAP_CAP     16
#define INIT_TABLE_BASE 0x7e5e7a00u

/* One open-addressing slot: row + 1, so zeroed memory is an empty map. 16 bytes, four per cache line. */
typedef struct {
    uint64_t key;
    uint32_t row1;
    uint32_t unused;
} map_slot_t;

struct sparse_table {
    sparse_table_cfg_t cfg;
    mem_budget_t *budget; /* borrowed; NULL = unlimited */
    int slots;
    size_t dim;
    uint64_t row_bytes;
    uint64_t charged; /* bytes this table holds against the budget */

    /* Rows, in creation order: parameters [cap, dim], state slots [cap, dim], steps, ids. */
    size_t size, cap;
    float *p, *s0, *s1;
    long *steps;
    uint64_t *ids;

    /* id -> row: linear probing, power-of-two capacity, grown at load 0.7. */
    map_slot_t *map;
    size_t map_mask, map_grow_at;

    /* This step's gradients: acc_slot[row] is the row's index in acc/touched, or -1. */
    int32_t *acc_slot;
    float *acc;        /* [acc_cap, dim] */
    uint32_t *touched; /* [acc_cap], rows in first-accumulated order */
    size_t n_touched, acc_cap;
};

int sparse_shard_of(uint32_t table, uint64_t id, int n_shards) {
    return shard_map_sparse_owner(table, id, n_shards); /* one placement, shared with the workers */
}

uint64_t sparse_row_bytes(int dim, int slots) {
    return (uint64_t)dim * sizeof(float) * (uint64_t)(1 + slots) + 8 /* steps */ + 8 /* id */ +
           4 /* accumulator slot */ + 2 * sizeof(map_slot_t);
}

void sparse_row_init(const sparse_table_cfg_t *cfg, uint64_t id, float *out) {
    init_uniform(out, (size_t)cfg->dim, seed_derive(cfg->seed, INIT_TABLE_BASE + cfg->table, id), 0, 0,
                 cfg->bound);
}

/* --- messages --------------------------------------------------------------------------------------- */

static const char *opt_name(opt_kind_t k) {
    switch (k) {
    case OPT_SGD: return "sgd";
    case OPT_MOMENTUM: return "momentum";
    case OPT_ADAM: return "adam";
    case OPT_ADAMW: return "adamw";
    case OPT_ADAGRAD: return "adagrad";
    }
    return "?";
}

/* 2500123 -> "2,500,123" into buf (32 bytes is enough for any uint64). */
static const char *fmt_count(uint64_t v, char buf[32]) {
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v), o = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

static double mb(uint64_t bytes) {
    return (double)bytes / (1024.0 * 1024.0);
}

/* "16 floats + 2 adam slots", "8 floats + 0 sgd slots" */
static const char *fmt_row(const sparse_table_t *t, char *buf, size_t len) {
    snprintf(buf, len, "%d floats + %d %s slot%s", t->cfg.dim, t->slots, opt_name(t->cfg.opt.kind),
             t->slots == 1 ? "" : "s");
    return buf;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* --- storage ---------------------------------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t k) { /* murmur3's finalizer */
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* The slot holding `id`, or the empty slot where it would go. */
static inline map_slot_t *map_probe(const sparse_table_t *t, uint64_t id) {
    size_t i = (size_t)mix64(id) & t->map_mask;
    for (;;) {
        map_slot_t *s = &t->map[i];
        if (!s->row1 || s->key == id) return s;
        i = (i + 1) & t->map_mask;
    }
}

/* Reallocates the map for at least `rows` entries at load <= 0.7 and reinserts every row. 0 or -1. */
static int map_reserve(sparse_table_t *t, size_t rows) {
    size_t cap = MIN_MAP_CAP;
    while ((double)rows > 0.7 * (double)cap)
        cap *= 2;
    if (t->map && cap <= t->map_mask + 1) return 0;
    map_slot_t *m = calloc(cap, sizeof *m);
    if (!m) return -1;
    free(t->map);
    t->map = m;
    t->map_mask = cap - 1;
    t->map_grow_at = (size_t)(0.7 * (double)cap);
    for (size_t r = 0; r < t->size; r++) {
        map_slot_t *s = map_probe(t, t->ids[r]);
        s->key = t->ids[r];
        s->row1 = (uint32_t)r + 1;
    }
    return 0;
}

/* Grows the row arrays to exactly `cap` rows. Arrays already reallocated stay (they are only larger),
 * so a failure part-way leaves the table consistent at its old capacity. 0 or -1. */
static int rows_reserve(sparse_table_t *t, size_t cap) {
    size_t fbytes;
    if (cap <= t->cap) return 0;
    if (__builtin_mul_overflow(cap, t->dim * sizeof(float), &fbytes)) return -1;
#define GROW(field, bytes)                                                                                   \
    do {                                                                                                     \
        void *q_ = realloc(t->field, (bytes));                                                               \
        if (!q_) return -1;                                                                                  \
        t->field = q_;                                                                                       \
    } while (0)
    GROW(p, fbytes);
    if (t->slots >= 1) GROW(s0, fbytes);
    if (t->slots >= 2) GROW(s1, fbytes);
    GROW(steps, cap * sizeof *t->steps);
    GROW(ids, cap * sizeof *t->ids);
    GROW(acc_slot, cap * sizeof *t->acc_slot);
#undef GROW
    t->cap = cap;
    return 0;
}

/* Appends row `id` (not yet in the table) with its initial values and zero state into slot `s` of the
 * map (found by map_probe; the map must have room). Returns the row index. Storage must have room. */
static uint32_t row_append(sparse_table_t *t, uint64_t id, map_slot_t *s) {
    size_t r = t->size++;
    float *p = t->p + r * t->dim;
    sparse_row_init(&t->cfg, id, p);
    if (t->s0) memset(t->s0 + r * t->dim, 0, t->dim * sizeof(float));
    if (t->s1) memset(t->s1 + r * t->dim, 0, t->dim * sizeof(float));
    t->steps[r] = 0;
    t->ids[r] = id;
    t->acc_slot[r] = -1;
    s->key = id;
    s->row1 = (uint32_t)r + 1;
    return (uint32_t)r;
}

/* The row of `id`, creating it (dynamic tables, with `create`) when missing. Row index, or a negative
 * TS code with the message. The slow path of lookup and the whole of put. */
static int64_t row_find(sparse_table_t *t, uint64_t id, int create, char *err, size_t errlen) {
    const sparse_table_cfg_t *c = &t->cfg;
    char a[32], b[32], rowdesc[96];
    if (c->rows && id >= c->rows) {
        set_err(err, errlen, "shard %d: table %s: id %llu is out of range (the table has %s rows)", c->shard,
                c->name, (unsigned long long)id, fmt_count(c->rows, a));
        return -TS_EINVAL;
    }
    map_slot_t *s = map_probe(t, id);
    if (s->row1) return s->row1 - 1;
    int owner = sparse_shard_of(c->table, id, c->n_shards);
    if (owner != c->shard) {
        set_err(err, errlen, "shard %d: table %s: id %llu belongs to shard %d of %d, not this one", c->shard,
                c->name, (unsigned long long)id, owner, c->n_shards);
        return -TS_EINVAL;
    }
    if (!create || c->rows) { /* a pre-sized table holds all its owned rows: unreachable there */
        set_err(err, errlen, "shard %d: table %s: no row for id %llu (looked up without create)", c->shard,
                c->name, (unsigned long long)id);
        return -TS_EINVAL;
    }
    mem_budget_t *bu = t->budget;
    if (bu && bu->limit_bytes &&
        (bu->used_bytes > bu->limit_bytes || bu->limit_bytes - bu->used_bytes < t->row_bytes)) {
        set_err(err, errlen,
                "shard %d: table %s cannot create id %llu: a row costs %llu bytes (%s) but the budget is "
                "%.1f MB (ps.memory_mb) and %.1f MB is used (%s rows of this table)",
                c->shard, c->name, (unsigned long long)id, (unsigned long long)t->row_bytes,
                fmt_row(t, rowdesc, sizeof rowdesc), mb(bu->limit_bytes), mb(bu->used_bytes),
                fmt_count(t->size, a));
        return -TS_ENOMEM;
    }
    if (t->size >= MAX_ROWS) {
        set_err(err, errlen,
                "shard %d: table %s cannot create id %llu: it holds the most rows a shard can (%s)", c->shard,
                c->name, (unsigned long long)id, fmt_count(MAX_ROWS, a));
        return -TS_ENOMEM;
    }
    size_t cap = t->cap;
    if (t->size == cap) cap = cap < MIN_ROW_CAP ? MIN_ROW_CAP : (cap > MAX_ROWS / 2 ? MAX_ROWS : 2 * cap);
    if (rows_reserve(t, cap) || (t->size + 1 > t->map_grow_at && map_reserve(t, t->size + 1))) {
        set_err(err, errlen, "shard %d: table %s: out of memory growing to %s rows (%s)", c->shard, c->name,
                fmt_count(cap, b), fmt_row(t, rowdesc, sizeof rowdesc));
        return -TS_ENOMEM;
    }
    if (bu) bu->used_bytes += t->row_bytes;
    t->charged += t->row_bytes;
    return row_append(t, id, map_probe(t, id));
}

/* --- the API ---------------------------------------------------------------------------------------- */

/* Counts, checks against the budget, reserves exactly and creates the owned ids < rows. */
static int presize(sparse_table_t *t, char *err, size_t errlen) {
    const sparse_table_cfg_t *c = &t->cfg;
    uint64_t owned = 0;
    if (c->n_shards == 1)
        owned = c->rows;
    else
        for (uint64_t id = 0; id < c->rows; id++)
            owned += sparse_shard_of(c->table, id, c->n_shards) == c->shard;

    char a[32], b[32], rowdesc[96];
    uint64_t need;
    mem_budget_t *bu = t->budget;
    int too_big = owned > MAX_ROWS || __builtin_mul_overflow(owned, t->row_bytes, &need);
    if (too_big || (bu && bu->limit_bytes &&
                    (bu->used_bytes > bu->limit_bytes || bu->limit_bytes - bu->used_bytes < need))) {
        if (too_big)
            set_err(err, errlen,
                    "shard %d: table %s: its %s rows on this shard are more than a shard can hold (%s)",
                    c->shard, c->name, fmt_count(owned, a), fmt_count(MAX_ROWS, b));
        else
            set_err(err, errlen,
                    "shard %d: table %s needs %.1f MB for its %s rows (%s each) but the budget is %.1f MB "
                    "(ps.memory_mb), %.1f MB used",
                    c->shard, c->name, mb(need), fmt_count(owned, a), fmt_row(t, rowdesc, sizeof rowdesc),
                    mb(bu->limit_bytes), mb(bu->used_bytes));
        return -TS_ENOMEM;
    }
    if (rows_reserve(t, (size_t)owned) || map_reserve(t, (size_t)owned)) {
        set_err(err, errlen, "shard %d: table %s: out of memory for its %s rows (%.1f MB)", c->shard, c->name,
                fmt_count(owned, a), mb(need));
        return -TS_ENOMEM;
    }
    if (bu) bu->used_bytes += need;
    t->charged = need;
    for (uint64_t id = 0; id < c->rows && t->size < owned; id++)
        if (c->n_shards == 1 || sparse_shard_of(c->table, id, c->n_shards) == c->shard)
            row_append(t, id, map_probe(t, id));
    return 0;
}

sparse_table_t *sparse_table_create(const sparse_table_cfg_t *cfg, mem_budget_t *budget, char *err,
                                    size_t errlen) {
    const char *name = cfg->name ? cfg->name : "(unnamed)";
    if (cfg->dim < 1 || cfg->n_shards < 1 || cfg->shard < 0 || cfg->shard >= cfg->n_shards) {
        set_err(err, errlen, "table %s: bad configuration (dim %d, shard %d of %d)", name, cfg->dim,
                cfg->shard, cfg->n_shards);
        errno = EINVAL;
        return NULL;
    }
    sparse_table_t *t = calloc(1, sizeof *t);
    if (!t) {
        set_err(err, errlen, "shard %d: table %s: out of memory", cfg->shard, name);
        errno = ENOMEM;
        return NULL;
    }
    t->cfg = *cfg;
    t->cfg.name = name;
    t->budget = budget;
    t->slots = optim_slots(&cfg->opt);
    t->dim = (size_t)cfg->dim;
    t->row_bytes = sparse_row_bytes(cfg->dim, t->slots);
    int rc = 0;
    if (cfg->rows)
        rc = presize(t, err, errlen);
    else if (map_reserve(t, 0)) {
        set_err(err, errlen, "shard %d: table %s: out of memory", cfg->shard, name);
        rc = -TS_ENOMEM;
    }
    if (rc) {
        sparse_table_free(t);
        errno = -rc == TS_ENOMEM ? ENOMEM : EINVAL;
        return NULL;
    }
    return t;
}

void sparse_table_free(sparse_table_t *t) {
    if (!t) return;
    if (t->budget)
        t->budget->used_bytes -= t->charged <= t->budget->used_bytes ? t->charged : t->budget->used_bytes;
    free(t->p);
    free(t->s0);
    free(t->s1);
    free(t->steps);
    free(t->ids);
    free(t->map);
    free(t->acc_slot);
    free(t->acc);
    free(t->touched);
    free(t);
}

int sparse_table_lookup(sparse_table_t *t, const uint64_t *ids, size_t n, int create, uint32_t *idx,
                        char *err, size_t errlen) {
    const uint64_t rows = t->cfg.rows;
    for (size_t i = 0; i < n; i++) {
        uint64_t id = ids[i];
        if (!rows || id < rows) { /* the hot path: a row that exists */
            const map_slot_t *s = map_probe(t, id);
            if (s->row1) {
                idx[i] = s->row1 - 1;
                continue;
            }
        }
        int64_t r = row_find(t, id, create, err, errlen);
        if (r < 0) return (int)r;
        idx[i] = (uint32_t)r;
    }
    return 0;
}

void sparse_table_gather(const sparse_table_t *t, const uint32_t *idx, size_t n, float *out) {
    for (size_t i = 0; i < n; i++)
        memcpy(out + i * t->dim, t->p + (size_t)idx[i] * t->dim, t->dim * sizeof(float));
}

/* Room for one more touched row; the accumulator is transient, so running out of memory here aborts
 * like XMALLOC (the API has no error path, and the rows it serves were already charged). */
static void acc_reserve(sparse_table_t *t) {
    if (t->n_touched < t->acc_cap) return;
    /* Never more rows than the table can hold: t->cap grows by doubling, so this stays amortised. */
    size_t cap = t->acc_cap ? 2 * t->acc_cap : MIN_ROW_CAP, bytes;
    if (cap > t->cap) cap = t->cap;
    if (cap <= t->n_touched) cap = t->n_touched + 1;
    float *acc = NULL;
    uint32_t *touched = NULL;
    if (!__builtin_mul_overflow(cap, t->dim * sizeof(float), &bytes)) acc = realloc(t->acc, bytes);
    if (acc) t->acc = acc;
    if (acc) touched = realloc(t->touched, cap * sizeof *touched);
    if (!touched) {
        log_error("out of memory table=%s accumulator_rows=%zu file=%s line=%d", t->cfg.name, cap, __FILE__,
                  __LINE__);
        abort();
    }
    t->touched = touched;
    t->acc_cap = cap;
}

void sparse_table_accumulate(sparse_table_t *t, const uint32_t *idx, size_t n, const float *g) {
    const size_t dim = t->dim;
    for (size_t i = 0; i < n; i++) {
        uint32_t r = idx[i];
        const float *gi = g + i * dim;
        int32_t slot = t->acc_slot[r];
        if (slot < 0) {
            acc_reserve(t);
            slot = (int32_t)t->n_touched++;
            t->acc_slot[r] = slot;
            t->touched[slot] = r;
            memcpy(t->acc + (size_t)slot * dim, gi, dim * sizeof(float));
        } else {
            float *restrict a = t->acc + (size_t)slot * dim;
            for (size_t k = 0; k < dim; k++)
                a[k] += gi[k];
        }
    }
}

size_t sparse_table_apply(sparse_table_t *t, float gscale) {
    const size_t dim = t->dim, n = t->n_touched;
    for (size_t j = 0; j < n; j++) {
        size_t r = t->touched[j];
        const float *g[1] = {t->acc + j * dim};
        long step = ++t->steps[r];
        optim_apply(&t->cfg.opt, t->p + r * dim, t->s0 ? t->s0 + r * dim : NULL,
                    t->s1 ? t->s1 + r * dim : NULL, g, 1, gscale, dim, step);
        t->acc_slot[r] = -1;
    }
    t->n_touched = 0;
    return n;
}

size_t sparse_table_size(const sparse_table_t *t) {
    return t->size;
}

void sparse_table_row(const sparse_table_t *t, size_t i, uint64_t *id, float **p, float **s0, float **s1,
                      long *steps) {
    if (id) *id = t->ids[i];
    if (p) *p = t->p + i * t->dim;
    if (s0) *s0 = t->s0 ? t->s0 + i * t->dim : NULL;
    if (s1) *s1 = t->s1 ? t->s1 + i * t->dim : NULL;
    if (steps) *steps = t->steps[i];
}

int sparse_table_put(sparse_table_t *t, uint64_t id, const float *p, const float *s0, const float *s1,
                     long steps, char *err, size_t errlen) {
    int64_t r = row_find(t, id, 1, err, errlen);
    if (r < 0) return (int)r;
    size_t off = (size_t)r * t->dim, bytes = t->dim * sizeof(float);
    memcpy(t->p + off, p, bytes);
    float *dst[2] = {t->s0, t->s1};
    const float *src[2] = {s0, s1};
    for (int k = 0; k < 2; k++) {
        if (!dst[k]) continue;
        if (src[k])
            memcpy(dst[k] + off, src[k], bytes);
        else
            memset(dst[k] + off, 0, bytes);
    }
    t->steps[r] = steps;
    return 0;
}

void sparse_table_release_budget(sparse_table_t *t) {
    if (t->budget) t->budget->used_bytes -= t->charged;
    t->budget = NULL;
    t->charged = 0;
}

int sparse_table_dim(const sparse_table_t *t) {
    return t->cfg.dim;
}

int sparse_table_peek(sparse_table_t *t, const uint64_t *ids, size_t n, float *out, char *err,
                      size_t errlen) {
    const sparse_table_cfg_t *c = &t->cfg;
    for (size_t i = 0; i < n; i++) {
        float *row = out + i * t->dim;
        map_slot_t *s = c->rows && ids[i] >= c->rows ? NULL : map_probe(t, ids[i]);
        if (s && s->row1) {
            memcpy(row, t->p + (size_t)(s->row1 - 1) * t->dim, t->dim * sizeof(float));
            continue;
        }
        if (!s || sparse_shard_of(c->table, ids[i], c->n_shards) != c->shard)
            return (int)row_find(t, ids[i], 0, err, errlen); /* its message */
        sparse_row_init(c, ids[i], row);
    }
    return 0;
}

int sparse_table_restore(sparse_table_t *t, const char *step_dir, int n_files, const char *optimizer,
                         size_t *kept, char *err, size_t errlen) {
    const sparse_table_cfg_t *c = &t->cfg;
    size_t n_kept = 0;
    int rc = 0;
    for (int k = 0; !rc && k < n_files; k++) {
        if (n_files == c->n_shards && k != c->shard) continue;
        ckpt_table_t in;
        rc = ckpt_read_table(step_dir, k, c->name, c->dim, optimizer, t->slots, &in, err, errlen);
        if (!rc && in.rows != c->rows) {
            set_err(err, errlen, "%s/shard-%d.h5: table %s has rows = %llu, the job says %llu", step_dir, k,
                    c->name, (unsigned long long)in.rows, (unsigned long long)c->rows);
            rc = -TS_EINVAL;
        }
        for (uint64_t i = 0; !rc && i < in.n; i++) {
            if (sparse_shard_of(c->table, in.ids[i], c->n_shards) != c->shard) continue;
            size_t off = (size_t)i * t->dim;
            rc = sparse_table_put(t, in.ids[i], in.slot[0] + off, in.slot[1] ? in.slot[1] + off : NULL,
                                  in.slot[2] ? in.slot[2] + off : NULL, (long)in.steps[i], err, errlen);
            n_kept++;
        }
        ckpt_table_free(&in);
    }
    if (kept) *kept = n_kept;
    return rc;
}
