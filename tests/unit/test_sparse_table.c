/* Sparse tables: placement, row creation and initial values, pre-sized tables, the memory budget, lazy
 * optimizer steps against optim_apply, checkpoint access, growth; and the lookup rate (printed). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "check.h"
#include "expect.h"
#include "shard_map.h"
#include "sparse_table.h"
#include "util.h"

/* The placement, written out independently of the library: XXH64 of (table LE32, id LE64), seed 0. */
static uint64_t placement_hash(uint32_t table, uint64_t id) {
    unsigned char b[12];
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(table >> (8 * i));
    for (int i = 0; i < 8; i++)
        b[4 + i] = (unsigned char)(id >> (8 * i));
    return XXH64(b, sizeof b, 0);
}

static int owner_ref(uint32_t table, uint64_t id, int n_shards) {
    return (int)(placement_hash(table, id) % (uint64_t)n_shards);
}

static sparse_table_cfg_t make_cfg(const char *name, uint32_t table, int dim, uint64_t rows, opt_kind_t kind,
                                   int shard, int n_shards) {
    sparse_table_cfg_t c = {.name = name,
                            .table = table,
                            .dim = dim,
                            .rows = rows,
                            .bound = 0.05f,
                            .seed = 1234,
                            .opt = {.kind = kind, .lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f},
                            .shard = shard,
                            .n_shards = n_shards};
    return c;
}

/* The first `n` ids >= from that `shard` of `n_shards` owns in `table`. */
static void owned_ids(uint32_t table, int shard, int n_shards, uint64_t from, uint64_t *out, size_t n) {
    for (uint64_t id = from; n; id++)
        if (owner_ref(table, id, n_shards) == shard) {
            *out++ = id;
            n--;
        }
}

static void test_placement(void) {
    /* Computed once with XXH64 (libxxhash 0.8.1) over the 12 bytes; they must never change. */
    static const struct {
        uint32_t table;
        uint64_t id, hash;
        int shard[4]; /* for S = 2, 3, 4, 7 */
    } cases[] = {
        {0, 0ull, 0xef6eb604187a17faull, {0, 0, 2, 5}},
        {0, 1ull, 0xf96a9dd0802aa462ull, {0, 0, 2, 1}},
        {0, 12345ull, 0x0fb4da4cee88a41bull, {1, 1, 3, 3}},
        {3, 42ull, 0x511dd1b55e5f9679ull, {1, 0, 1, 1}},
        {7, 18446744073709551615ull, 0x95830f6e3d543b9bull, {1, 2, 3, 4}},
        {1, 1000000007ull, 0xbf7ab3dbb4e79592ull, {0, 1, 2, 4}},
    };
    static const int S[4] = {2, 3, 4, 7};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        EXPECT(placement_hash(cases[i].table, cases[i].id) == cases[i].hash, "case %zu: hash %016llx", i,
               (unsigned long long)placement_hash(cases[i].table, cases[i].id));
        EXPECT(sparse_shard_of(cases[i].table, cases[i].id, 1) == 0, "case %zu: S=1", i);
        for (int k = 0; k < 4; k++) {
            int got = sparse_shard_of(cases[i].table, cases[i].id, S[k]);
            EXPECT(got == cases[i].shard[k], "case %zu S=%d: shard %d, expected %d", i, S[k], got,
                   cases[i].shard[k]);
            EXPECT(got == (int)(cases[i].hash % (uint64_t)S[k]), "case %zu S=%d", i, S[k]);
        }
    }

    /* The copy in common/shard_map (for clients that do not link the shard) agrees. */
    int differ = 0;
    for (uint64_t id = 0; id < 2000; id++)
        for (int s = 1; s <= 7; s++)
            differ += sparse_shard_of(2, id * 7919, s) != shard_map_sparse_owner(2, id * 7919, s);
    EXPECT(differ == 0, "sparse_shard_of and shard_map_sparse_owner differ on %d ids", differ);

    /* Balanced: sequential ids (the worst case for a weak hash) and random ones. */
    rng_t r;
    rng_seed(&r, 99);
    for (int pass = 0; pass < 2; pass++)
        for (int s = 2; s <= 4; s++) {
            const int n = 100000;
            long count[4] = {0};
            for (int i = 0; i < n; i++)
                count[sparse_shard_of(5, pass ? rng_next(&r) : (uint64_t)i, s)]++;
            double expected = (double)n / s, chi2 = 0;
            for (int k = 0; k < s; k++) {
                chi2 += (count[k] - expected) * (count[k] - expected) / expected;
                EXPECT(fabs(count[k] - expected) < 0.02 * expected, "S=%d shard %d holds %ld of %d", s, k,
                       count[k], n);
            }
            /* chi-square with S-1 degrees of freedom: p = 0.001 is 10.8 / 13.8 / 16.3 */
            EXPECT(chi2 < 17.0, "S=%d %s ids: chi2 = %.2f", s, pass ? "random" : "sequential", chi2);
        }
}

static void test_dynamic(void) {
    char err[512];
    mem_budget_t budget = {0, 0};
    enum { DIM = 8, N = 50 };
    sparse_table_cfg_t cfg = make_cfg("emb.user", 2, DIM, 0, OPT_ADAM, 1, 3);
    sparse_table_t *t = sparse_table_create(&cfg, &budget, err, sizeof err);
    EXPECT(t != NULL, "%s", err);
    if (!t) return;
    EXPECT(sparse_table_size(t) == 0, "size %zu", sparse_table_size(t));

    uint64_t ids[N];
    uint32_t idx[N], again[N];
    owned_ids(2, 1, 3, 1000, ids, N);
    EXPECT(sparse_table_lookup(t, ids, N, 1, idx, err, sizeof err) == 0, "%s", err);
    EXPECT(sparse_table_size(t) == N, "size %zu", sparse_table_size(t));
    EXPECT(budget.used_bytes == N * sparse_row_bytes(DIM, 2), "used %llu",
           (unsigned long long)budget.used_bytes);
    float got[N * DIM], want[DIM];
    sparse_table_gather(t, idx, N, got);
    for (int i = 0; i < N; i++) {
        EXPECT(idx[i] == (uint32_t)i, "row %d has index %u", i, idx[i]);
        sparse_row_init(&cfg, ids[i], want);
        EXPECT(!memcmp(got + i * DIM, want, sizeof want), "row of id %llu is not its initial value",
               (unsigned long long)ids[i]);
        int nonzero = 0;
        for (int k = 0; k < DIM; k++) {
            nonzero += want[k] != 0.0f;
            EXPECT(fabsf(want[k]) <= cfg.bound, "init value %g outside the bound", want[k]);
        }
        EXPECT(nonzero > 0, "id %llu initialised to zeros", (unsigned long long)ids[i]);
    }
    /* Found again, in any order and with duplicates, with or without create; nothing new is created. */
    uint64_t mixed[N];
    for (int i = 0; i < N; i++)
        mixed[i] = ids[(i * 7) % N];
    EXPECT(sparse_table_lookup(t, mixed, N, 0, again, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < N; i++)
        EXPECT(again[i] == idx[(i * 7) % N], "lookup %d: %u", i, again[i]);
    EXPECT(sparse_table_lookup(t, ids, N, 1, again, err, sizeof err) == 0, "%s", err);
    EXPECT(!memcmp(again, idx, sizeof idx), "indices changed on a second lookup");
    EXPECT(sparse_table_size(t) == N, "size %zu", sparse_table_size(t));

    /* Errors: an id another shard owns (even with create), a missing row without create. */
    uint64_t other;
    owned_ids(2, 2, 3, 0, &other, 1);
    uint32_t one;
    err[0] = '\0';
    EXPECT(sparse_table_lookup(t, &other, 1, 1, &one, err, sizeof err) == -TS_EINVAL, "unowned id accepted");
    char idstr[32];
    snprintf(idstr, sizeof idstr, "%llu", (unsigned long long)other);
    EXPECT(strstr(err, "emb.user") && strstr(err, idstr) && strstr(err, "shard 2 of 3"), "message: %s", err);
    uint64_t missing;
    owned_ids(2, 1, 3, 5000, &missing, 1);
    err[0] = '\0';
    EXPECT(sparse_table_lookup(t, &missing, 1, 0, &one, err, sizeof err) == -TS_EINVAL, "missing row found");
    snprintf(idstr, sizeof idstr, "%llu", (unsigned long long)missing);
    EXPECT(strstr(err, "emb.user") && strstr(err, idstr) && strstr(err, "without create"), "message: %s",
           err);
    EXPECT(sparse_table_size(t) == N, "an error created a row");

    /* Rows created before an error stay; idx is written up to it. */
    uint64_t batch[3];
    owned_ids(2, 1, 3, 9000, batch, 2);
    batch[2] = other;
    uint32_t bidx[3];
    EXPECT(sparse_table_lookup(t, batch, 3, 1, bidx, err, sizeof err) == -TS_EINVAL, "unowned id accepted");
    EXPECT(sparse_table_size(t) == N + 2 && bidx[0] == N && bidx[1] == N + 1, "size %zu",
           sparse_table_size(t));

    sparse_table_free(t);
    EXPECT(budget.used_bytes == 0, "free left %llu bytes charged", (unsigned long long)budget.used_bytes);
    sparse_table_free(NULL);
}

static void test_shard_counts(void) {
    char err[256];
    enum { DIM = 16 };
    const uint64_t ids[] = {0, 7, 12345, 1ull << 40, UINT64_MAX};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        float ref[DIM];
        for (int s = 1; s <= 5; s++) {
            int owner = sparse_shard_of(4, ids[i], s);
            sparse_table_cfg_t cfg = make_cfg("emb.item", 4, DIM, 0, OPT_SGD, owner, s);
            sparse_table_t *t = sparse_table_create(&cfg, NULL, err, sizeof err);
            EXPECT(t != NULL, "%s", err);
            if (!t) continue;
            uint32_t idx;
            float got[DIM];
            EXPECT(sparse_table_lookup(t, &ids[i], 1, 1, &idx, err, sizeof err) == 0, "S=%d: %s", s, err);
            sparse_table_gather(t, &idx, 1, got);
            if (s == 1)
                memcpy(ref, got, sizeof ref);
            else
                EXPECT(!memcmp(ref, got, sizeof ref), "id %llu differs between 1 and %d shards",
                       (unsigned long long)ids[i], s);
            sparse_table_free(t);
        }
    }
    /* Different tables and seeds give different rows. */
    sparse_table_cfg_t a = make_cfg("a", 4, DIM, 0, OPT_SGD, 0, 1), b = a, c = a;
    b.table = 5;
    c.seed = 1235;
    float ra[DIM], rb[DIM], rc[DIM];
    sparse_row_init(&a, 3, ra);
    sparse_row_init(&b, 3, rb);
    sparse_row_init(&c, 3, rc);
    EXPECT(memcmp(ra, rb, sizeof ra) && memcmp(ra, rc, sizeof ra), "table or seed ignored by the init");
}

static void test_presized(void) {
    char err[512];
    enum { DIM = 4, NROWS = 1000 };
    mem_budget_t budget = {0, 100};
    sparse_table_cfg_t cfg = make_cfg("emb.slot3", 3, DIM, NROWS, OPT_ADAGRAD, 1, 3);
    sparse_table_t *t = sparse_table_create(&cfg, &budget, err, sizeof err);
    EXPECT(t != NULL, "%s", err);
    if (!t) return;
    size_t owned = 0;
    for (uint64_t id = 0; id < NROWS; id++)
        owned += owner_ref(3, id, 3) == 1;
    EXPECT(sparse_table_size(t) == owned, "holds %zu rows, owns %zu", sparse_table_size(t), owned);
    EXPECT(budget.used_bytes == 100 + owned * sparse_row_bytes(DIM, 1), "used %llu",
           (unsigned long long)budget.used_bytes);
    uint64_t prev = 0;
    for (size_t i = 0; i < sparse_table_size(t); i++) {
        uint64_t id;
        float *p, *s0, *s1;
        long steps;
        sparse_table_row(t, i, &id, &p, &s0, &s1, &steps);
        EXPECT(id < NROWS && owner_ref(3, id, 3) == 1, "row %zu holds id %llu", i, (unsigned long long)id);
        EXPECT(i == 0 || id > prev, "rows not in id order at %zu", i);
        prev = id;
        float want[DIM];
        sparse_row_init(&cfg, id, want);
        EXPECT(!memcmp(p, want, sizeof want), "id %llu not initialised", (unsigned long long)id);
        EXPECT(s0 && !s1 && s0[0] == 0.0f && steps == 0, "row %zu state", i);
        uint32_t idx;
        EXPECT(sparse_table_lookup(t, &id, 1, 0, &idx, err, sizeof err) == 0 && idx == i, "id %llu: %s",
               (unsigned long long)id, err);
    }
    uint32_t idx;
    uint64_t big = NROWS;
    err[0] = '\0';
    EXPECT(sparse_table_lookup(t, &big, 1, 1, &idx, err, sizeof err) == -TS_EINVAL, "id >= rows accepted");
    EXPECT(strstr(err, "emb.slot3") && strstr(err, "id 1000 ") && strstr(err, "out of range"), "message: %s",
           err);
    fprintf(stderr, "example: %s\n", err);
    uint64_t other;
    owned_ids(3, 0, 3, 0, &other, 1);
    err[0] = '\0';
    EXPECT(sparse_table_lookup(t, &other, 1, 1, &idx, err, sizeof err) == -TS_EINVAL, "unowned id accepted");
    EXPECT(strstr(err, "emb.slot3") && strstr(err, "belongs to shard 0"), "message: %s", err);
    fprintf(stderr, "example: %s\n", err);
    float p[DIM] = {1, 2, 3, 4};
    EXPECT(sparse_table_put(t, big, p, NULL, NULL, 1, err, sizeof err) == -TS_EINVAL, "put id >= rows");
    EXPECT(sparse_table_put(t, other, p, NULL, NULL, 1, err, sizeof err) == -TS_EINVAL, "put unowned id");
    EXPECT(sparse_table_size(t) == owned, "size changed");
    sparse_table_free(t);
    EXPECT(budget.used_bytes == 100, "used %llu after free", (unsigned long long)budget.used_bytes);

    /* A shard that owns nothing of a tiny table is fine. */
    sparse_table_cfg_t tiny = make_cfg("tiny", 0, DIM, 1, OPT_SGD, 1, 2); /* id 0 -> shard 0 */
    t = sparse_table_create(&tiny, NULL, err, sizeof err);
    EXPECT(t && sparse_table_size(t) == 0, "%s", err);
    sparse_table_free(t);
}

static void test_budget(void) {
    char err[512];
    enum { DIM = 16 };
    const uint64_t rb = sparse_row_bytes(DIM, 2);
    EXPECT(rb == DIM * 4 * 3 + 52, "row bytes %llu", (unsigned long long)rb);

    /* Pre-sized: does not fit, nothing charged. */
    mem_budget_t budget = {.limit_bytes = 256ull << 20, .used_bytes = 3250586};
    sparse_table_cfg_t cfg = make_cfg("emb.slot3", 3, DIM, 5000000, OPT_ADAM, 1, 2);
    errno = 0;
    err[0] = '\0';
    sparse_table_t *t = sparse_table_create(&cfg, &budget, err, sizeof err);
    EXPECT(t == NULL && errno == ENOMEM, "created over budget");
    sparse_table_free(t);
    EXPECT(strstr(err, "emb.slot3") && strstr(err, "budget") && strstr(err, "256.0 MB") &&
               strstr(err, "3.1 MB used") && strstr(err, "16 floats + 2 adam slots"),
           "message: %s", err);
    fprintf(stderr, "example: %s\n", err);
    EXPECT(budget.used_bytes == 3250586, "a failed create charged the budget");

    /* Dynamic: room for exactly 5 rows; the 6th fails, the 5 stay. */
    budget.limit_bytes = budget.used_bytes + 5 * rb + rb / 2;
    cfg.rows = 0;
    t = sparse_table_create(&cfg, &budget, err, sizeof err);
    EXPECT(t != NULL, "%s", err);
    if (!t) return;
    uint64_t ids[8];
    uint32_t idx[8];
    owned_ids(3, 1, 2, 0, ids, 8);
    err[0] = '\0';
    EXPECT(sparse_table_lookup(t, ids, 8, 1, idx, err, sizeof err) == -TS_ENOMEM, "over budget accepted");
    char rbs[32], idstr[32];
    snprintf(rbs, sizeof rbs, "%llu bytes", (unsigned long long)rb);
    snprintf(idstr, sizeof idstr, "%llu", (unsigned long long)ids[5]);
    EXPECT(strstr(err, "emb.slot3") && strstr(err, "budget") && strstr(err, rbs) && strstr(err, idstr) &&
               strstr(err, "used"),
           "message: %s", err);
    fprintf(stderr, "example: %s\n", err);
    EXPECT(sparse_table_size(t) == 5, "size %zu", sparse_table_size(t));
    EXPECT(budget.used_bytes == 3250586 + 5 * rb, "used %llu", (unsigned long long)budget.used_bytes);
    /* Existing rows are still found, and put of a new row fails the same way. */
    EXPECT(sparse_table_lookup(t, ids, 5, 0, idx, err, sizeof err) == 0, "%s", err);
    float p[DIM] = {0};
    EXPECT(sparse_table_put(t, ids[6], p, NULL, NULL, 0, err, sizeof err) == -TS_ENOMEM, "put over budget");
    EXPECT(sparse_table_put(t, ids[2], p, NULL, NULL, 0, err, sizeof err) == 0, "overwrite: %s", err);
    sparse_table_free(t);
    EXPECT(budget.used_bytes == 3250586, "used %llu after free", (unsigned long long)budget.used_bytes);
}

/* Lazy steps against optim_apply on plain arrays: two workers per step, summed in order, gscale 0.5. */
static void test_optimizers(void) {
    enum { DIM = 5, NR = 4, STEPS = 3 };
    const opt_kind_t kinds[] = {OPT_SGD, OPT_ADAGRAD, OPT_ADAM, OPT_MOMENTUM, OPT_ADAMW};
    const uint64_t ids[NR] = {10, 20, 30, 40};
    /* rows each worker sends per step (indices into ids; -1 ends); row 3 (id 40) never */
    static const int plan[STEPS][2][4] = {
        {{0, 1, -1}, {1, 2, -1}},
        {{2, -1}, {1, -1}},
        {{0, 1, 2, -1}, {-1}},
    };
    static const long want_steps[NR] = {2, 3, 3, 0};
    char err[256];
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        sparse_table_cfg_t cfg = make_cfg("emb.opt", 1, DIM, 0, kinds[k], 0, 1);
        cfg.opt.momentum = 0.9f;
        cfg.opt.weight_decay = 0.01f;
        sparse_table_t *t = sparse_table_create(&cfg, NULL, err, sizeof err);
        EXPECT(t != NULL, "%s", err);
        if (!t) continue;
        uint32_t idx[NR];
        EXPECT(sparse_table_lookup(t, ids, NR, 1, idx, err, sizeof err) == 0, "%s", err);
        float ref_p[NR][DIM], ref_s0[NR][DIM] = {{0}}, ref_s1[NR][DIM] = {{0}};
        long ref_t[NR] = {0};
        for (int r = 0; r < NR; r++)
            sparse_row_init(&cfg, ids[r], ref_p[r]);
        rng_t rng;
        rng_seed(&rng, 7 + k);
        for (int step = 0; step < STEPS; step++) {
            float g[2][4][DIM];
            const float *per_row[NR][2];
            int ng[NR] = {0};
            size_t touched = 0;
            for (int w = 0; w < 2; w++) {
                uint32_t widx[4];
                int n = 0;
                for (; plan[step][w][n] >= 0; n++) {
                    int r = plan[step][w][n];
                    widx[n] = idx[r];
                    for (int d = 0; d < DIM; d++)
                        g[w][n][d] = (float)((double)(rng_next(&rng) >> 11) / 9007199254740992.0 - 0.5);
                    if (!ng[r]) touched++;
                    per_row[r][ng[r]++] = g[w][n];
                }
                sparse_table_accumulate(t, widx, (size_t)n, &g[w][0][0]);
            }
            EXPECT(sparse_table_apply(t, 0.5f) == touched, "kind %d step %d", (int)kinds[k], step);
            for (int r = 0; r < NR; r++)
                if (ng[r])
                    optim_apply(&cfg.opt, ref_p[r], optim_slots(&cfg.opt) >= 1 ? ref_s0[r] : NULL,
                                optim_slots(&cfg.opt) >= 2 ? ref_s1[r] : NULL, per_row[r], ng[r], 0.5f, DIM,
                                ++ref_t[r]);
        }
        EXPECT(sparse_table_apply(t, 0.5f) == 0, "the accumulator was not emptied");
        for (int r = 0; r < NR; r++) {
            uint64_t id;
            float *p, *s0, *s1;
            long steps;
            sparse_table_row(t, idx[r], &id, &p, &s0, &s1, &steps);
            EXPECT(id == ids[r], "row %d id", r);
            EXPECT(steps == want_steps[r] && steps == ref_t[r], "kind %d id %llu: %ld steps", (int)kinds[k],
                   (unsigned long long)id, steps);
            EXPECT(!memcmp(p, ref_p[r], sizeof ref_p[r]), "kind %d id %llu: parameters differ (%.9g vs %.9g)",
                   (int)kinds[k], (unsigned long long)id, p[0], ref_p[r][0]);
            if (s0)
                EXPECT(!memcmp(s0, ref_s0[r], sizeof ref_s0[r]), "kind %d id %llu: s0", (int)kinds[k],
                       (unsigned long long)id);
            if (s1)
                EXPECT(!memcmp(s1, ref_s1[r], sizeof ref_s1[r]), "kind %d id %llu: s1", (int)kinds[k],
                       (unsigned long long)id);
            EXPECT((s0 != NULL) == (optim_slots(&cfg.opt) >= 1) &&
                       (s1 != NULL) == (optim_slots(&cfg.opt) >= 2),
                   "kind %d: slots", (int)kinds[k]);
            if (r == 3) { /* lazy: never accumulated, never touched */
                float init[DIM];
                sparse_row_init(&cfg, id, init);
                EXPECT(!memcmp(p, init, sizeof init), "untouched row changed");
            }
        }
        sparse_table_free(t);
    }
}

static void test_put_roundtrip(void) {
    enum { DIM = 6, N = 300 };
    char err[256];
    sparse_table_cfg_t cfg = make_cfg("emb.ckpt", 9, DIM, 0, OPT_ADAM, 0, 2);
    sparse_table_t *a = sparse_table_create(&cfg, NULL, err, sizeof err);
    sparse_table_t *b = sparse_table_create(&cfg, NULL, err, sizeof err);
    EXPECT(a && b, "%s", err);
    if (!a || !b) return;
    uint64_t ids[N];
    uint32_t idx[N];
    owned_ids(9, 0, 2, 77, ids, N);
    EXPECT(sparse_table_lookup(a, ids, N, 1, idx, err, sizeof err) == 0, "%s", err);
    float g[N * DIM];
    for (int i = 0; i < N * DIM; i++)
        g[i] = (float)((i * 37) % 11) * 0.01f - 0.05f;
    for (int s = 0; s < 4; s++) { /* a varying subset each step, so step counts differ */
        size_t n = (size_t)N / (size_t)(s + 1);
        sparse_table_accumulate(a, idx, n, g);
        sparse_table_apply(a, 1.0f);
    }
    for (size_t i = 0; i < sparse_table_size(a); i++) {
        uint64_t id;
        float *p, *s0, *s1;
        long steps;
        sparse_table_row(a, i, &id, &p, &s0, &s1, &steps);
        EXPECT(sparse_table_put(b, id, p, s0, s1, steps, err, sizeof err) == 0, "%s", err);
    }
    EXPECT(sparse_table_size(b) == N, "size %zu", sparse_table_size(b));
    for (size_t i = 0; i < N; i++) {
        uint64_t ida, idb;
        float *pa, *s0a, *s1a, *pb, *s0b, *s1b;
        long ta, tb;
        uint32_t j;
        sparse_table_row(a, i, &ida, &pa, &s0a, &s1a, &ta);
        EXPECT(sparse_table_lookup(b, &ida, 1, 0, &j, err, sizeof err) == 0, "%s", err);
        sparse_table_row(b, j, &idb, &pb, &s0b, &s1b, &tb);
        EXPECT(ida == idb && ta == tb && !memcmp(pa, pb, DIM * 4) && !memcmp(s0a, s0b, DIM * 4) &&
                   !memcmp(s1a, s1b, DIM * 4),
               "row %zu (id %llu) differs after put", i, (unsigned long long)ida);
    }
    uint64_t id0;
    float *p0, *s00, *s10;
    long t0;
    sparse_table_row(a, 0, &id0, &p0, &s00, &s10, &t0);
    EXPECT(t0 == 4 && idx[N - 1] == N - 1, "steps %ld", t0);
    sparse_table_row(a, N - 1, &id0, &p0, &s00, &s10, &t0);
    EXPECT(t0 == 1, "steps %ld", t0);
    /* Overwrite with NULL state: zeros. */
    float p[DIM] = {1, 2, 3, 4, 5, 6};
    EXPECT(sparse_table_put(b, ids[0], p, NULL, NULL, 9, err, sizeof err) == 0, "%s", err);
    uint32_t j;
    EXPECT(sparse_table_lookup(b, ids, 1, 0, &j, err, sizeof err) == 0, "%s", err);
    float *pb, *s0b, *s1b;
    long tb;
    sparse_table_row(b, j, NULL, &pb, &s0b, &s1b, &tb);
    EXPECT(!memcmp(pb, p, sizeof p) && s0b[3] == 0.0f && s1b[5] == 0.0f && tb == 9, "overwrite");
    EXPECT(sparse_table_size(b) == N, "overwrite added a row");
    sparse_table_free(a);
    sparse_table_free(b);
}

static void test_growth(void) {
    enum { DIM = 3, FIRST = 10, MORE = 200000, BATCH = 1000 };
    char err[256];
    mem_budget_t budget = {0, 0};
    sparse_table_cfg_t cfg = make_cfg("emb.grow", 6, DIM, 0, OPT_ADAGRAD, 0, 1);
    sparse_table_t *t = sparse_table_create(&cfg, &budget, err, sizeof err);
    EXPECT(t != NULL, "%s", err);
    if (!t) return;
    for (uint64_t id = 0; id < FIRST; id++) {
        float p[DIM] = {(float)id + 0.25f, -1.0f, 2.0f}, s0[DIM] = {3.0f, 3.0f, (float)id};
        EXPECT(sparse_table_put(t, id * 1000003, p, s0, NULL, (long)id, err, sizeof err) == 0, "%s", err);
    }
    uint64_t ids[BATCH];
    uint32_t idx[BATCH];
    rng_t r;
    rng_seed(&r, 5);
    for (int b = 0; b < MORE / BATCH; b++) {
        for (int i = 0; i < BATCH; i++)
            ids[i] = rng_next(&r) | (1ull << 63); /* never one of the first ids */
        EXPECT(sparse_table_lookup(t, ids, BATCH, 1, idx, err, sizeof err) == 0, "%s", err);
    }
    EXPECT(sparse_table_size(t) == FIRST + MORE, "size %zu", sparse_table_size(t));
    EXPECT(budget.used_bytes == (FIRST + MORE) * sparse_row_bytes(DIM, 1), "used %llu",
           (unsigned long long)budget.used_bytes);
    for (uint64_t id = 0; id < FIRST; id++) {
        uint64_t key = id * 1000003;
        uint32_t j;
        EXPECT(sparse_table_lookup(t, &key, 1, 0, &j, err, sizeof err) == 0 && j == id, "id %llu: %s",
               (unsigned long long)key, err);
        float *p, *s0, *s1;
        long steps;
        sparse_table_row(t, j, NULL, &p, &s0, &s1, &steps);
        EXPECT(p[0] == (float)id + 0.25f && p[1] == -1.0f && s0[2] == (float)id && steps == (long)id,
               "row %llu lost its values", (unsigned long long)id);
    }
    /* Every row still maps to itself and holds its initial values. */
    int bad = 0;
    for (size_t i = FIRST; i < sparse_table_size(t); i++) {
        uint64_t id;
        float *p, *s0, *s1;
        long steps;
        uint32_t j;
        sparse_table_row(t, i, &id, &p, &s0, &s1, &steps);
        float want[DIM];
        sparse_row_init(&cfg, id, want);
        bad += sparse_table_lookup(t, &id, 1, 0, &j, err, sizeof err) != 0 || j != i ||
               memcmp(p, want, sizeof want) || s0[0] != 0.0f || steps != 0;
    }
    EXPECT(bad == 0, "%d rows wrong after growth", bad);
    sparse_table_free(t);
}

/* Not asserted: the lookup rate, and the time to create a pre-sized table. */
static void bench(void) {
    enum { DIM = 64, ROWS = 100000, LOOKUPS = 1000000, BATCH = 4096 };
    char err[256];
    sparse_table_cfg_t cfg = make_cfg("emb.bench", 0, DIM, 0, OPT_SGD, 0, 1);
    sparse_table_t *t = sparse_table_create(&cfg, NULL, err, sizeof err);
    EXPECT(t != NULL, "%s", err);
    if (!t) return;
    uint64_t *ids = XMALLOC(ROWS * sizeof *ids), *q = XMALLOC(LOOKUPS * sizeof *q);
    uint32_t *idx = XMALLOC(LOOKUPS * sizeof *idx);
    rng_t r;
    rng_seed(&r, 11);
    for (int i = 0; i < ROWS; i++)
        ids[i] = rng_next(&r);
    double t0 = now_s();
    EXPECT(sparse_table_lookup(t, ids, ROWS, 1, idx, err, sizeof err) == 0, "%s", err);
    double create_s = now_s() - t0;
    for (int i = 0; i < LOOKUPS; i++)
        q[i] = ids[rng_below(&r, ROWS)];
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        t0 = now_s();
        for (size_t off = 0; off < LOOKUPS; off += BATCH) {
            size_t n = LOOKUPS - off < BATCH ? LOOKUPS - off : BATCH;
            if (sparse_table_lookup(t, q + off, n, 0, idx + off, err, sizeof err)) {
                EXPECT(0, "%s", err);
                break;
            }
        }
        double s = now_s() - t0;
        best = s < best ? s : best;
    }
    int wrong = 0;
    for (int i = 0; i < LOOKUPS; i += 997)
        wrong += idx[i] >= sparse_table_size(t);
    EXPECT(wrong == 0, "bad indices");
    float *out = XMALLOC((size_t)BATCH * DIM * sizeof *out);
    t0 = now_s();
    for (size_t off = 0; off + BATCH <= LOOKUPS; off += BATCH)
        sparse_table_gather(t, idx + off, BATCH, out);
    double gather_s = now_s() - t0;
    fprintf(stderr,
            "bench: lookup %.1f M ids/s (1e6 random ids over %d rows, dim %d, best of 5); creating %d rows "
            "%.1f M rows/s; gather %.1f M rows/s\n",
            LOOKUPS / best / 1e6, ROWS, DIM, ROWS, ROWS / create_s / 1e6,
            (double)(LOOKUPS / BATCH * BATCH) / gather_s / 1e6);
    free(out);
    free(ids);
    free(q);
    free(idx);
    sparse_table_free(t);

    sparse_table_cfg_t pre = make_cfg("emb.pre", 1, 16, 4000000, OPT_ADAM, 2, 4);
    t0 = now_s();
    t = sparse_table_create(&pre, NULL, err, sizeof err);
    EXPECT(t != NULL, "%s", err);
    fprintf(stderr, "bench: pre-sized table of 4,000,000 ids, dim 16, shard 2 of 4: %zu rows in %.2f s\n",
            t ? sparse_table_size(t) : 0, now_s() - t0);
    sparse_table_free(t);
}

int main(void) {
    test_placement();
    test_dynamic();
    test_shard_counts();
    test_presized();
    test_budget();
    test_optimizers();
    test_put_roundtrip();
    test_growth();
    bench();
    EXPECT_DONE();
}
