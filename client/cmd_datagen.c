/* tessera datagen ctr: writes a synthetic click-through dataset in the Criteo format (train.tsv,
 * test.tsv) from a planted logistic model, and the planted model's own scores (truth.json), so that a
 * trained model can be judged against the best achievable AUC. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "metrics.h"
#include "util.h"

static const char *const datagen_usage =
    "usage: tessera datagen ctr --rows N --out DIR [options]\n"
    "\n"
    "Writes DIR/train.tsv and DIR/test.tsv in the Criteo format (label, D integer columns, S hex\n"
    "categorical columns, TAB-separated) drawn from a planted logistic model,\n"
    "  logit = bias + sum_j a_j log(1 + x_j) + sum_s w_s[id_s],   label ~ Bernoulli(sigmoid(logit)),\n"
    "and DIR/truth.json with the planted model's own test_auc and test_logloss: what a trained model\n"
    "can at best reach. Ids of each slot are Zipf-distributed ranks; 5% of the integers and 2% of the\n"
    "categoricals are missing (empty). The output depends only on the options.\n"
    "\n"
    "  --rows N          training examples (required)\n"
    "  --out DIR         output directory, created if needed (required)\n"
    "  --test-rows M     test examples (default N/5)\n"
    "  --dense D         integer columns (default 13)\n"
    "  --slots S         categorical columns (default 26)\n"
    "  --vocab V         distinct ids per slot (default 10000)\n"
    "  --zipf A          Zipf exponent of the id ranks (default 1.05)\n"
    "  --ids hashed|index  hashed: a 32-bit hash of (slot, rank) as 8 hex digits, like Criteo;\n"
    "                    index: the rank itself in [0, V), for tables of V rows (default hashed)\n"
    "  --seed X          (default 1)\n"
    "\n"
    "Exit status: 0 on success, 1 when the files cannot be written, 2 on a usage error.\n";

#define CMD "tessera datagen ctr"

/* Scales of the planted model, chosen so that the planted test AUC is about 0.815 and a logistic
 * regression trained on 200k rows (13 integers, 8 slots of 2000 ids) comes within 0.004 of it: the
 * categorical weights shrink with the rank, so the rare ids a model sees a few times matter little. */
#define LOGIT_SD_DENSE   0.8 /* standard deviation of the dense part of the logit */
#define LOGIT_SD_CAT     1.3 /* of the categorical part, all slots together */
#define RANK_DECAY       0.8 /* the weight of rank k is drawn with sd ~ (k + 1)^-RANK_DECAY */
#define POSITIVE_RATE    0.3 /* the bias is set for this on a pilot sample */
#define MISSING_DENSE    0.05
#define MISSING_CAT      0.02
#define PILOT_ROWS       20000
#define MAX_TABLE_FLOATS 50000000L /* slots * vocab */

typedef struct {
    long rows, test_rows, dense, slots, vocab, seed;
    double zipf;
    int index_ids;
    const char *out;
} datagen_opts_t;

/* The planted model and the distributions the features come from. */
typedef struct {
    int D, S;
    long V;
    double *p;            /* [V]: P(rank = k) */
    double *alias_prob;   /* [V]: Walker's alias table of p: column k keeps k with this probability, */
    uint32_t *alias;      /* [V]: else gives alias[k] */
    float *w;             /* [S, V]: categorical weights by rank */
    double *mu, *sig, *a; /* [D]: x_j = floor(exp(mu + sig N(0,1))), coefficient of log(1 + x_j) */
    uint32_t *slot_key;   /* [S]: hashed ids */
    double bias;
} planted_t;

/* Per row: integers (-1 = missing) and ranks (-1 = missing). */
typedef struct {
    int64_t *x, *rank;
} row_t;

typedef struct {
    rng_t r;
    int have;
    double spare;
} gen_t;

static double uniform01(gen_t *g) {
    return (double)(rng_next(&g->r) >> 11) * 0x1.0p-53;
}

/* Box-Muller, both halves used. */
static double normal01(gen_t *g) {
    if (g->have) {
        g->have = 0;
        return g->spare;
    }
    double u1 = 1.0 - uniform01(g), u2 = uniform01(g), rad = sqrt(-2.0 * log(u1));
    g->spare = rad * sin(2.0 * M_PI * u2);
    g->have = 1;
    return rad * cos(2.0 * M_PI * u2);
}

static void gen_seed(gen_t *g, uint64_t seed) {
    rng_seed(&g->r, seed);
    g->have = 0;
}

/* A Zipf rank in O(1): a column of the alias table, then the column's own rank or its alias. */
static int64_t zipf_rank(const planted_t *m, gen_t *g) {
    double u = uniform01(g) * (double)m->V;
    long k = (long)u;
    if (k >= m->V) k = m->V - 1;
    return u - (double)k < m->alias_prob[k] ? k : (int64_t)m->alias[k];
}

/* Builds the alias table of m->p (Vose's method). 0, or -1 out of memory. */
static int alias_init(planted_t *m) {
    size_t V = (size_t)m->V, n_small = 0, n_large = 0;
    double *q = malloc(V * sizeof *q);
    uint32_t *small = malloc(V * sizeof *small), *large = malloc(V * sizeof *large);
    m->alias_prob = malloc(V * sizeof *m->alias_prob);
    m->alias = malloc(V * sizeof *m->alias);
    int ok = q && small && large && m->alias_prob && m->alias;
    for (size_t k = 0; ok && k < V; k++) {
        q[k] = m->p[k] * (double)V;
        if (q[k] < 1.0)
            small[n_small++] = (uint32_t)k;
        else
            large[n_large++] = (uint32_t)k;
    }
    while (ok && n_small && n_large) {
        uint32_t s = small[--n_small], l = large[--n_large];
        m->alias_prob[s] = q[s];
        m->alias[s] = l;
        q[l] = q[l] + q[s] - 1.0;
        if (q[l] < 1.0)
            small[n_small++] = l;
        else
            large[n_large++] = l;
    }
    while (ok && n_large) { /* what rounding leaves is kept whole */
        uint32_t l = large[--n_large];
        m->alias_prob[l] = 1.0;
        m->alias[l] = l;
    }
    while (ok && n_small) {
        uint32_t s = small[--n_small];
        m->alias_prob[s] = 1.0;
        m->alias[s] = s;
    }
    free(q);
    free(small);
    free(large);
    return ok ? 0 : -1;
}

/* Draws one row's features. */
static void row_draw(const planted_t *m, gen_t *g, row_t *row) {
    for (int j = 0; j < m->D; j++) {
        if (uniform01(g) < MISSING_DENSE) {
            row->x[j] = -1;
            continue;
        }
        double v = floor(exp(m->mu[j] + m->sig[j] * normal01(g)));
        row->x[j] = v < 1e9 ? (int64_t)v : 1000000000;
    }
    for (int s = 0; s < m->S; s++)
        row->rank[s] = uniform01(g) < MISSING_CAT ? -1 : zipf_rank(m, g);
}

/* The dense value a reader computes for an integer: log(1 + x), in float as model/data_ctr.c does. */
static float dense_value(int64_t x) {
    return x > 0 ? (float)log1p((double)x) : 0.0f;
}

/* The planted logit of a row, without the bias. */
static double row_logit(const planted_t *m, const row_t *row) {
    double z = 0;
    for (int j = 0; j < m->D; j++)
        z += m->a[j] * dense_value(row->x[j]);
    for (int s = 0; s < m->S; s++)
        if (row->rank[s] >= 0) z += m->w[(size_t)s * (size_t)m->V + (size_t)row->rank[s]];
    return z;
}

static double sigmoid(double z) {
    return z >= 0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
}

/* murmur3's finaliser: a bijection of 32-bit words, so distinct ranks of a slot get distinct ids. */
static uint32_t fmix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static void planted_free(planted_t *m) {
    free(m->p);
    free(m->alias_prob);
    free(m->alias);
    free(m->w);
    free(m->mu);
    free(m->sig);
    free(m->a);
    free(m->slot_key);
    memset(m, 0, sizeof *m);
}

/* Builds the planted model from the options: the Zipf alias table, per-slot weights scaled to
 * LOGIT_SD_CAT / sqrt(S) under the id distribution, dense coefficients scaled to LOGIT_SD_DENSE on a
 * pilot sample, and the bias that gives POSITIVE_RATE there. 0, or -1 out of memory. */
static int planted_init(planted_t *m, const datagen_opts_t *o) {
    memset(m, 0, sizeof *m);
    m->D = (int)o->dense;
    m->S = (int)o->slots;
    m->V = o->vocab;
    size_t V = (size_t)m->V, D = (size_t)m->D, S = (size_t)m->S;
    m->p = malloc(V * sizeof *m->p);
    m->w = malloc((S + 1) * V * sizeof *m->w);
    m->mu = calloc(D + 1, sizeof *m->mu);
    m->sig = calloc(D + 1, sizeof *m->sig);
    m->a = calloc(D + 1, sizeof *m->a);
    m->slot_key = calloc(S + 1, sizeof *m->slot_key);
    row_t row = {calloc(D + 1, sizeof(int64_t)), calloc(S + 1, sizeof(int64_t))};
    double *sum = calloc(D + 1, sizeof *sum), *sum2 = calloc(D + 1, sizeof *sum2);
    float *z = malloc(PILOT_ROWS * sizeof *z);
    int rc = -1;
    if (!m->p || !m->w || !m->mu || !m->sig || !m->a || !m->slot_key || !row.x || !row.rank || !sum ||
        !sum2 || !z)
        goto out;

    double h = 0;
    for (size_t k = 0; k < V; k++)
        h += (m->p[k] = pow((double)k + 1.0, -o->zipf));
    for (size_t k = 0; k < V; k++)
        m->p[k] /= h;
    if (alias_init(m)) goto out;

    gen_t g;
    for (size_t s = 0; s < S; s++) {
        float *w = m->w + s * V;
        gen_seed(&g, seed_derive((uint64_t)o->seed, 1, s));
        m->slot_key[s] = (uint32_t)seed_derive(0x7e55e7a, s, 0);
        double mean = 0, var = 0;
        for (size_t k = 0; k < V; k++) {
            w[k] = (float)(normal01(&g) * pow((double)k + 1.0, -RANK_DECAY));
            mean += m->p[k] * w[k];
        }
        for (size_t k = 0; k < V; k++)
            var += m->p[k] * (w[k] - mean) * (w[k] - mean);
        double scale = var > 0 ? LOGIT_SD_CAT / sqrt((double)S) / sqrt(var) : 0;
        for (size_t k = 0; k < V; k++)
            w[k] = (float)((w[k] - mean) * scale);
    }

    gen_seed(&g, seed_derive((uint64_t)o->seed, 2, 0));
    double gsum2 = 0;
    for (size_t j = 0; j < D; j++) {
        m->mu[j] = 0.5 + 2.5 * uniform01(&g);
        m->sig[j] = 0.5 + 0.7 * uniform01(&g);
        m->a[j] = normal01(&g);
        gsum2 += m->a[j] * m->a[j];
    }
    /* Pass 1 over the pilot: the spread of each dense value, to scale its coefficient. */
    gen_seed(&g, seed_derive((uint64_t)o->seed, 3, 0));
    for (int i = 0; i < PILOT_ROWS; i++) {
        row_draw(m, &g, &row);
        for (size_t j = 0; j < D; j++) {
            double u = dense_value(row.x[j]);
            sum[j] += u;
            sum2[j] += u * u;
        }
    }
    for (size_t j = 0; j < D; j++) {
        double mean = sum[j] / PILOT_ROWS, var = sum2[j] / PILOT_ROWS - mean * mean;
        m->a[j] = var > 0 ? LOGIT_SD_DENSE * m->a[j] / sqrt(gsum2) / sqrt(var) : 0;
    }
    /* Pass 2, the same rows: the bias for POSITIVE_RATE, by bisection. */
    gen_seed(&g, seed_derive((uint64_t)o->seed, 3, 0));
    for (int i = 0; i < PILOT_ROWS; i++) {
        row_draw(m, &g, &row);
        z[i] = (float)row_logit(m, &row);
    }
    double lo = -50, hi = 50;
    for (int it = 0; it < 60; it++) {
        double b = 0.5 * (lo + hi), p = 0;
        for (int i = 0; i < PILOT_ROWS; i++)
            p += sigmoid(b + z[i]);
        if (p / PILOT_ROWS > POSITIVE_RATE)
            hi = b;
        else
            lo = b;
    }
    m->bias = 0.5 * (lo + hi);
    rc = 0;
out:
    free(row.x);
    free(row.rank);
    free(sum);
    free(sum2);
    free(z);
    if (rc) planted_free(m);
    return rc;
}

static char *put_u64(char *p, uint64_t v) {
    char tmp[24];
    int n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10));
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *put_hex(char *p, uint64_t v, int min_digits) {
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    int n = 0;
    do
        tmp[n++] = hex[v & 15];
    while ((v >>= 4));
    while (n < min_digits)
        tmp[n++] = '0';
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* Writes `rows` examples drawn with `seed` to path (through path.tmp and a rename), their planted
 * logits to logit[] and labels to label[]. 0, or -1 after printing why. */
static int write_split(const planted_t *m, const datagen_opts_t *o, const char *path, long rows,
                       uint64_t seed, float *logit, int32_t *label, long *positives) {
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        fprintf(stderr, CMD ": cannot create %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    size_t D = (size_t)m->D, S = (size_t)m->S;
    row_t row = {calloc(D + 1, sizeof(int64_t)), calloc(S + 1, sizeof(int64_t))};
    char *line = malloc(4 + D * 22 + S * 18);
    int ok = row.x && row.rank && line;
    gen_t g;
    gen_seed(&g, seed);
    *positives = 0;
    for (long i = 0; ok && i < rows; i++) {
        row_draw(m, &g, &row);
        double z = m->bias + row_logit(m, &row);
        int y = uniform01(&g) < sigmoid(z);
        logit[i] = (float)z;
        label[i] = y;
        *positives += y;
        char *p = line;
        *p++ = (char)('0' + y);
        for (size_t j = 0; j < D; j++) {
            *p++ = '\t';
            if (row.x[j] >= 0) p = put_u64(p, (uint64_t)row.x[j]);
        }
        for (size_t s = 0; s < S; s++) {
            *p++ = '\t';
            if (row.rank[s] < 0) continue;
            if (o->index_ids)
                p = put_hex(p, (uint64_t)row.rank[s], 1);
            else
                p = put_hex(p, fmix32((uint32_t)row.rank[s] ^ m->slot_key[s]), 8);
        }
        *p++ = '\n';
        ok = fwrite(line, 1, (size_t)(p - line), f) == (size_t)(p - line);
    }
    if (!row.x || !row.rank || !line) fprintf(stderr, CMD ": out of memory\n");
    free(row.x);
    free(row.rank);
    free(line);
    int werr = ok ? 0 : errno;
    if (fclose(f) && ok) {
        werr = errno;
        ok = 0;
    }
    if (ok && rename(tmp, path)) {
        werr = errno;
        ok = 0;
    }
    if (!ok) {
        if (werr) fprintf(stderr, CMD ": cannot write %s: %s\n", path, strerror(werr));
        remove(tmp);
        return -1;
    }
    return 0;
}

/* Parses the options after `ctr`. Returns -1 to go on, else the exit status (0 for --help, 2 for
 * usage errors). */
static int parse_args(int argc, char **argv, datagen_opts_t *o) {
    static const struct option longopts[] = {{"rows", required_argument, NULL, 'n'},
                                             {"out", required_argument, NULL, 'o'},
                                             {"test-rows", required_argument, NULL, 't'},
                                             {"dense", required_argument, NULL, 'd'},
                                             {"slots", required_argument, NULL, 's'},
                                             {"vocab", required_argument, NULL, 'v'},
                                             {"zipf", required_argument, NULL, 'z'},
                                             {"ids", required_argument, NULL, 'i'},
                                             {"seed", required_argument, NULL, 'x'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    *o = (datagen_opts_t){
        .rows = -1, .test_rows = -1, .dense = 13, .slots = 26, .vocab = 10000, .zipf = 1.05, .seed = 1};
    char *args[argc + 2];
    int nargs = cli_getopt_args(CMD, argc, argv, args);
    int c, bad = 0;
    while (!bad && (c = getopt_long(nargs, args, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': o->out = optarg; break;
        case 'n': bad = cli_parse_long(CMD, "--rows", optarg, 1, 1000000000L, &o->rows); break;
        case 't': bad = cli_parse_long(CMD, "--test-rows", optarg, 1, 1000000000L, &o->test_rows); break;
        case 'd': bad = cli_parse_long(CMD, "--dense", optarg, 0, 1000, &o->dense); break;
        case 's': bad = cli_parse_long(CMD, "--slots", optarg, 0, 1000, &o->slots); break;
        case 'v': bad = cli_parse_long(CMD, "--vocab", optarg, 1, 10000000L, &o->vocab); break;
        case 'z': bad = cli_parse_double(CMD, "--zipf", optarg, 0, 10, &o->zipf); break;
        case 'x': bad = cli_parse_long(CMD, "--seed", optarg, 0, LONG_MAX, &o->seed); break;
        case 'i':
            if (!strcmp(optarg, "index") || !strcmp(optarg, "hashed"))
                o->index_ids = !strcmp(optarg, "index");
            else {
                fprintf(stderr, CMD ": --ids takes hashed or index, not '%s'\n", optarg);
                bad = 1;
            }
            break;
        case 'h': fputs(datagen_usage, stdout); return 0;
        default: bad = 1; break; /* getopt has said why */
        }
    }
    if (!bad && optind < nargs) {
        fprintf(stderr, CMD ": unexpected argument '%s'\n", args[optind]);
        bad = 1;
    }
    if (!bad && (o->rows < 0 || !o->out)) {
        fprintf(stderr, CMD ": --rows and --out are required\n");
        bad = 1;
    }
    if (!bad && o->dense + o->slots == 0) {
        fprintf(stderr, CMD ": --dense and --slots are both 0: no features\n");
        bad = 1;
    }
    if (!bad && o->slots * o->vocab > MAX_TABLE_FLOATS) {
        fprintf(stderr, CMD ": --slots x --vocab is %ld, more than the %ld planted weights this holds\n",
                o->slots * o->vocab, MAX_TABLE_FLOATS);
        bad = 1;
    }
    if (bad) {
        fputs(datagen_usage, stderr);
        return 2;
    }
    if (o->test_rows < 0) o->test_rows = o->rows / 5 > 0 ? o->rows / 5 : 1;
    return -1;
}

/* Writes truth.json: the options, the planted model's scores and its scales. 0 or -1. */
static int write_truth(const datagen_opts_t *o, const planted_t *m, const char *path, double scores[4],
                       double positive_rate, double test_positive_rate) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "generator", "tessera datagen ctr");
    cJSON_AddStringToObject(j, "format", "criteo");
    cJSON_AddNumberToObject(j, "test_auc", scores[0]);
    cJSON_AddNumberToObject(j, "test_logloss", scores[1]);
    cJSON_AddNumberToObject(j, "train_auc", scores[2]);
    cJSON_AddNumberToObject(j, "train_logloss", scores[3]);
    cJSON_AddNumberToObject(j, "rows", (double)o->rows);
    cJSON_AddNumberToObject(j, "test_rows", (double)o->test_rows);
    cJSON_AddNumberToObject(j, "dense", (double)o->dense);
    cJSON_AddNumberToObject(j, "slots", (double)o->slots);
    cJSON_AddNumberToObject(j, "vocab", (double)o->vocab);
    cJSON_AddNumberToObject(j, "zipf", o->zipf);
    cJSON_AddStringToObject(j, "ids", o->index_ids ? "index" : "hashed");
    cJSON_AddNumberToObject(j, "seed", (double)o->seed);
    cJSON_AddNumberToObject(j, "positive_rate", positive_rate);
    cJSON_AddNumberToObject(j, "test_positive_rate", test_positive_rate);
    cJSON_AddNumberToObject(j, "bias", m->bias);
    cJSON_AddNumberToObject(j, "logit_sd_dense", m->D ? LOGIT_SD_DENSE : 0);
    cJSON_AddNumberToObject(j, "logit_sd_categorical", m->S ? LOGIT_SD_CAT : 0);
    cJSON_AddNumberToObject(j, "rank_decay", RANK_DECAY);
    cJSON_AddNumberToObject(j, "missing_dense", MISSING_DENSE);
    cJSON_AddNumberToObject(j, "missing_categorical", MISSING_CAT);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) {
        fprintf(stderr, CMD ": out of memory\n");
        return -1;
    }
    size_t n = strlen(text);
    text[n] = '\n'; /* the file ends with a newline, not cJSON's terminator */
    int rc = write_file_atomic(path, text, n + 1);
    if (rc) fprintf(stderr, CMD ": cannot write %s: %s\n", path, strerror(errno));
    free(text);
    return rc ? -1 : 0;
}

int cmd_datagen(int argc, char **argv) {
    if (argc == 0 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h") || !strcmp(argv[0], "help")) {
        fputs(datagen_usage, argc == 0 ? stderr : stdout);
        return argc == 0 ? 2 : 0;
    }
    if (strcmp(argv[0], "ctr")) {
        fprintf(stderr, "tessera datagen: unknown dataset kind '%s' (only ctr)\n", argv[0]);
        return 2;
    }
    datagen_opts_t o;
    int status = parse_args(argc - 1, argv + 1, &o);
    if (status >= 0) return status;

    double t0 = now_s();
    char train_path[PATH_MAX], test_path[PATH_MAX], truth_path[PATH_MAX];
    if (snprintf(train_path, sizeof train_path, "%s/train.tsv", o.out) >= (int)sizeof train_path ||
        snprintf(test_path, sizeof test_path, "%s/test.tsv", o.out) >= (int)sizeof test_path ||
        snprintf(truth_path, sizeof truth_path, "%s/truth.json", o.out) >= (int)sizeof truth_path) {
        fprintf(stderr, CMD ": --out path too long\n");
        return 2;
    }
    if (mkdir_p(o.out)) {
        fprintf(stderr, CMD ": cannot create %s: %s\n", o.out, strerror(errno));
        return 1;
    }
    planted_t m;
    float *logit = malloc((size_t)(o.rows > o.test_rows ? o.rows : o.test_rows) * sizeof *logit);
    int32_t *label = malloc((size_t)(o.rows > o.test_rows ? o.rows : o.test_rows) * sizeof *label);
    if (!logit || !label || planted_init(&m, &o)) {
        fprintf(stderr, CMD ": out of memory\n");
        free(logit);
        free(label);
        return 1;
    }
    double scores[4];
    long pos_train = 0, pos_test = 0;
    status = 1;
    if (write_split(&m, &o, train_path, o.rows, seed_derive((uint64_t)o.seed, 4, 0), logit, label,
                    &pos_train))
        goto out;
    scores[2] = metric_auc(logit, label, (size_t)o.rows);
    scores[3] = metric_logloss(logit, label, (size_t)o.rows);
    if (write_split(&m, &o, test_path, o.test_rows, seed_derive((uint64_t)o.seed, 5, 0), logit, label,
                    &pos_test))
        goto out;
    scores[0] = metric_auc(logit, label, (size_t)o.test_rows);
    scores[1] = metric_logloss(logit, label, (size_t)o.test_rows);
    if (write_truth(&o, &m, truth_path, scores, (double)pos_train / (double)o.rows,
                    (double)pos_test / (double)o.test_rows))
        goto out;
    printf("%s: %ld train rows in %s, %ld test rows in %s, truth.json: planted test_auc=%.4f "
           "test_logloss=%.4f positive_rate=%.3f (%.1f s)\n",
           CMD, o.rows, train_path, o.test_rows, test_path, scores[0], scores[1],
           (double)pos_train / (double)o.rows, now_s() - t0);
    status = fflush(stdout) ? 1 : 0;
out:
    planted_free(&m);
    free(logit);
    free(label);
    return status;
}
