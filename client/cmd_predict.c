/* tessera predict: sends the rows of an input file (IDX images, CSV, JSON lines, or Criteo TSV for
 * models with embedding tables) to a serving endpoint in batches and prints one JSON line of logits
 * per row. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "commands.h"
#include "data.h"
#include "data_ctr.h"
#include "metrics.h"
#include "tessera_client.h"
#include "util.h"

static const char *const predict_usage =
    "usage: tessera predict --endpoint E --input FILE [options]\n"
    "\n"
    "Sends the rows of FILE to a serving endpoint in batches and prints one JSON line per row:\n"
    "  {\"index\": i, \"class\": argmax, \"logits\": [...], \"version\": v}\n"
    "\n"
    "  --endpoint E     the server (router), e.g. tcp://127.0.0.1:5555\n"
    "  --input FILE     IDX images (bytes, scaled with the served model's input_mean and\n"
    "                   input_std), CSV (one row of input floats per line; a header line is\n"
    "                   skipped), JSON lines (an array of numbers, or {\"input\": [...]}) or, for\n"
    "                   a model with embedding tables, Criteo TSV (label, the dense features, one\n"
    "                   hex id per categorical slot; the ids' rows are resolved on the shards; the\n"
    "                   labels give test_auc=A test_logloss=L count=N on stderr)\n"
    "  --format F       idx, csv, jsonl or criteo (default: from the name: *.csv; *.jsonl,\n"
    "                   *.json; *-ubyte, *-ubyte.gz, *.idx, *.idx.gz; *.tsv, *.tsv.gz)\n"
    "  --labels FILE    IDX labels of the rows: prints accuracy=A correct=N count=N to stderr\n"
    "  --model M        the model's name (default: the only one served)\n"
    "  --version V      the model version (default 0: the server's default)\n"
    "  --batch B        rows per request (default 256)\n"
    "  --output FILE    where the JSON lines go (default stdout)\n"
    "  --timeout-ms MS  per request, also sent as its deadline (default 10000)\n"
    "  --limit N        only the first N rows\n"
    "\n"
    "Exit status: 0 on success, 1 on an input, connection or server error, 2 on a usage error.\n";

#define CMD "tessera predict"

typedef enum { FMT_NONE, FMT_IDX, FMT_CSV, FMT_JSONL, FMT_CRITEO } input_format_t;

typedef struct {
    const char *endpoint, *input, *labels, *model, *output;
    input_format_t format;
    long version, batch, timeout_ms, limit;
} predict_opts_t;

/* The rows to predict. */
typedef struct {
    size_t rows, dim;
    float *x;        /* rows x dim (malloc'd) */
    int32_t *labels; /* rows, or NULL without --labels */
    size_t slots;    /* criteo: categorical ids per row */
    uint64_t *ids;   /* criteo: rows x slots, TSC_ID_MISSING where a row has none */
} inputs_t;

static void inputs_free(inputs_t *in) {
    free(in->x);
    free(in->ids);
    free(in->labels);
    memset(in, 0, sizeof *in);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcasecmp(s + n - k, suffix);
}

static input_format_t format_of_name(const char *path) {
    if (ends_with(path, ".csv")) return FMT_CSV;
    if (ends_with(path, ".jsonl") || ends_with(path, ".json")) return FMT_JSONL;
    if (ends_with(path, "-ubyte") || ends_with(path, "-ubyte.gz") || ends_with(path, ".idx") ||
        ends_with(path, ".idx.gz"))
        return FMT_IDX;
    if (ends_with(path, ".tsv") || ends_with(path, ".tsv.gz")) return FMT_CRITEO;
    return FMT_NONE;
}

/* Reads exactly n bytes; 0 or -1 with a message. */
static int gz_read_exact(gzFile f, void *buf, size_t n, const char *path, char *err, size_t errlen) {
    size_t done = 0;
    while (done < n) {
        unsigned chunk = n - done > (1u << 30) ? 1u << 30 : (unsigned)(n - done);
        int got = gzread(f, (char *)buf + done, chunk);
        if (got <= 0) {
            int zerr = 0;
            const char *msg = gzerror(f, &zerr);
            if (zerr) /* zlib's message names the file */
                snprintf(err, errlen, "%s (after %zu of %zu bytes)", msg, done, n);
            else
                snprintf(err, errlen, "%s: truncated (%zu of %zu bytes)", path, done, n);
            return -1;
        }
        done += (size_t)got;
    }
    return 0;
}

/* Reads an IDX file of unsigned bytes with 1 to 4 dimensions: *n = dims[0] examples (at most
 * `limit` when > 0) of *dim = dims[1] * ... bytes each (1 for a label file) into *data (malloc'd).
 * Returns 0, or -1 with a message. model/data.h's idx_load needs a label file; this does not. */
static int idx_read_bytes(const char *path, long limit, size_t *n, size_t *dim, uint8_t **data, char *err,
                          size_t errlen) {
    *data = NULL;
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno ? errno : ENOMEM));
        return -1;
    }
    uint8_t head[4 + 4 * 4] = {0};
    int rc = gz_read_exact(f, head, 4, path, err, errlen);
    int ndims = head[3];
    if (!rc && (head[0] || head[1] || head[2] != 0x08 || ndims < 1 || ndims > 4)) {
        snprintf(err, errlen, "%s: not an IDX file of unsigned bytes (magic %02x%02x%02x%02x)", path, head[0],
                 head[1], head[2], head[3]);
        rc = -1;
    }
    if (!rc) rc = gz_read_exact(f, head + 4, 4 * (size_t)ndims, path, err, errlen);
    if (!rc) {
        const uint8_t *p = head + 4;
        *n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        *dim = 1;
        for (int i = 1; i < ndims; i++) {
            p += 4;
            *dim *= (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        }
        if (*dim == 0 || *dim > (1u << 24)) {
            snprintf(err, errlen, "%s: implausible example size of %zu bytes", path, *dim);
            rc = -1;
        }
    }
    if (!rc) {
        if (limit > 0 && (size_t)limit < *n) *n = (size_t)limit;
        *data = malloc(*n * *dim + 1);
        if (!*data) {
            snprintf(err, errlen, "%s: out of memory for %zu examples", path, *n);
            rc = -1;
        }
    }
    if (!rc) rc = gz_read_exact(f, *data, *n * *dim, path, err, errlen);
    gzclose(f);
    if (rc) {
        free(*data);
        *data = NULL;
    }
    return rc;
}

/* The training job's scaling, or plain b / 255 when the server reports none. */
static void input_scaling(double *mean, double *std) {
    if (*std > 0) return;
    fprintf(stderr, "warning: no input scaling from the server (input_std=%g); using bytes / 255\n", *std);
    *mean = 0;
    *std = 1;
}

/* Scales d's examples into a new malloc'd [d->n, d->dim] float array (labels to *y when not NULL). */
static float *scale_dataset(const dataset_t *d, double mean, double std, int32_t *y) {
    float *x = malloc(d->n * (size_t)d->dim * sizeof *x + 1);
    uint32_t *idx = malloc(d->n * sizeof *idx + 1);
    int32_t *ytmp = y ? NULL : malloc(d->n * sizeof *ytmp + 1);
    if (!x || !idx || (!y && !ytmp)) {
        free(x);
        x = NULL;
    } else {
        for (size_t i = 0; i < d->n; i++)
            idx[i] = (uint32_t)i;
        dataset_gather(d, idx, d->n, (float)mean, (float)std, x, y ? y : ytmp);
    }
    free(idx);
    free(ytmp);
    return x;
}

int idx_load_inputs(const char *path, long limit, double mean, double std, float **x, size_t *n, size_t *dim,
                    char *err, size_t errlen) {
    *x = NULL;
    dataset_t d = {0};
    size_t dd;
    if (idx_read_bytes(path, limit, &d.n, &dd, &d.x, err, errlen)) return -1;
    if (dd > INT32_MAX || d.n > UINT32_MAX) {
        snprintf(err, errlen, "%s: too large (%zu examples of %zu bytes)", path, d.n, dd);
        free(d.x);
        return -1;
    }
    d.dim = (int)dd;
    d.y = calloc(d.n + 1, sizeof *d.y); /* dataset_gather copies labels too */
    input_scaling(&mean, &std);
    *x = d.y ? scale_dataset(&d, mean, std, NULL) : NULL;
    *n = d.n;
    *dim = dd;
    dataset_free(&d);
    if (!*x) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    return 0;
}

/* A growable float array for the text formats. */
typedef struct {
    float *v;
    size_t n, cap;
} fvec_t;

static void fvec_push(fvec_t *a, float x) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 4096;
        float *v = realloc(a->v, cap * sizeof *v);
        if (!v) {
            fprintf(stderr, CMD ": out of memory\n");
            abort();
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
}

static int is_blank(const char *s) {
    for (; *s; s++)
        if (!isspace((unsigned char)*s)) return 0;
    return 1;
}

static void chomp(char *s, ssize_t *len) {
    while (*len > 0 && (s[*len - 1] == '\n' || s[*len - 1] == '\r'))
        s[--*len] = '\0';
}

/* Parses one CSV field starting at *p into *v and moves *p past its comma. 0, 1 at the end of the
 * line, or -1 when the field is not a finite number (*p then points at the field). */
static int csv_field(const char **p, float *v) {
    char *end;
    *v = strtof(*p, &end);
    const char *q = end;
    while (*q == ' ' || *q == '\t')
        q++;
    if (end == *p || (*q != ',' && *q != '\0') || !isfinite(*v)) return -1;
    *p = *q == ',' ? q + 1 : q;
    return *q == '\0';
}

/* Length of the field at p, for error messages. */
static int field_len(const char *p) {
    const char *e = strchr(p, ',');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    return n > 40 ? 40 : (int)n;
}

/* True when no field of the line is a number: a header. */
static int csv_is_header(const char *line) {
    for (const char *p = line;;) {
        float v;
        int r = csv_field(&p, &v);
        if (r >= 0) return 0;
        const char *e = strchr(p, ',');
        if (!e) return 1;
        p = e + 1;
    }
}

/* CSV: one row of `dim` floats per line; blank lines and a first line without numbers skipped. */
static int parse_csv(FILE *f, const char *path, size_t dim, long limit, fvec_t *x, size_t *rows, char *err,
                     size_t errlen) {
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t len;
    int rc = 0, seen_content = 0;
    while (!rc && (limit <= 0 || *rows < (size_t)limit) && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        chomp(line, &len);
        if (is_blank(line)) continue;
        if (!seen_content++ && csv_is_header(line)) continue;
        const char *p = line;
        size_t col = 0;
        for (int r = 0; r == 0;) {
            float v;
            const char *at = p;
            r = csv_field(&p, &v);
            col++;
            if (r < 0) {
                snprintf(err, errlen, "%s:%zu: column %zu: '%.*s' is not a number", path, lineno, col,
                         field_len(at), at);
                rc = -1;
                break;
            }
            if (col <= dim) fvec_push(x, v);
        }
        if (!rc && col != dim) {
            snprintf(err, errlen, "%s:%zu: %zu values, but the model takes %zu inputs", path, lineno, col,
                     dim);
            rc = -1;
        }
        if (!rc) (*rows)++;
    }
    if (!rc && ferror(f)) {
        snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
        rc = -1;
    }
    free(line);
    return rc;
}

/* JSON lines: each line an array of `dim` numbers or an object whose "input" is one. */
static int parse_jsonl(FILE *f, const char *path, size_t dim, long limit, fvec_t *x, size_t *rows, char *err,
                       size_t errlen) {
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t len;
    int rc = 0;
    while (!rc && (limit <= 0 || *rows < (size_t)limit) && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        chomp(line, &len);
        if (is_blank(line)) continue;
        rc = -1;
        cJSON *j = cJSON_ParseWithLength(line, (size_t)len);
        const cJSON *a = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "input") : j;
        if (!j) {
            snprintf(err, errlen, "%s:%zu: not valid JSON", path, lineno);
        } else if (!cJSON_IsArray(a)) {
            snprintf(err, errlen, "%s:%zu: expected an array of numbers or an object with \"input\": [...]",
                     path, lineno);
        } else if ((size_t)cJSON_GetArraySize(a) != dim) {
            snprintf(err, errlen, "%s:%zu: %d values, but the model takes %zu inputs", path, lineno,
                     cJSON_GetArraySize(a), dim);
        } else {
            rc = 0;
            size_t k = 0;
            const cJSON *e;
            cJSON_ArrayForEach(e, a) {
                if (!cJSON_IsNumber(e) || !isfinite((float)e->valuedouble)) {
                    snprintf(err, errlen, "%s:%zu: value %zu is not a finite number", path, lineno, k + 1);
                    rc = -1;
                    break;
                }
                fvec_push(x, (float)e->valuedouble);
                k++;
            }
        }
        cJSON_Delete(j);
        if (!rc) (*rows)++;
    }
    if (!rc && ferror(f)) {
        snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
        rc = -1;
    }
    free(line);
    return rc;
}

/* IDX labels for the rows of a text file: at least `rows` of them, each below `classes`. */
static int load_labels(const char *path, size_t rows, uint32_t classes, int32_t **labels, char *err,
                       size_t errlen) {
    uint8_t *b;
    size_t n, dim;
    if (idx_read_bytes(path, (long)rows, &n, &dim, &b, err, errlen)) return -1;
    int rc = -1;
    if (dim != 1)
        snprintf(err, errlen, "%s: not an IDX label file (examples of %zu bytes)", path, dim);
    else if (n < rows)
        snprintf(err, errlen, "%s has %zu labels for %zu rows", path, n, rows);
    else if (!(*labels = malloc(rows * sizeof **labels + 1)))
        snprintf(err, errlen, "%s: out of memory", path);
    else
        rc = 0;
    for (size_t i = 0; !rc && i < rows; i++) {
        if (b[i] >= classes) {
            snprintf(err, errlen, "%s: label %u of example %zu is not below the model's %u classes", path,
                     b[i], i, classes);
            rc = -1;
        }
        (*labels)[i] = b[i];
    }
    if (rc && *labels) {
        free(*labels);
        *labels = NULL;
    }
    free(b);
    return rc;
}

/* IDX images, scaled like the training data, with their labels when --labels is given. */
static int load_idx(const predict_opts_t *o, const tsc_model_info_t *info, inputs_t *in, char *err,
                    size_t errlen) {
    double mean = info->input_mean, std = info->input_std;
    if (!o->labels)
        return idx_load_inputs(o->input, o->limit, mean, std, &in->x, &in->rows, &in->dim, err, errlen);
    dataset_t d;
    if (idx_load(&d, o->input, o->labels, o->limit, (int)info->outputs, err, errlen)) return -1;
    input_scaling(&mean, &std);
    in->rows = d.n;
    in->dim = (size_t)d.dim;
    in->labels = malloc(d.n * sizeof *in->labels + 1);
    in->x = in->labels ? scale_dataset(&d, mean, std, in->labels) : NULL;
    dataset_free(&d);
    if (!in->x) {
        snprintf(err, errlen, "%s: out of memory", o->input);
        return -1;
    }
    return 0;
}

/* CSV or JSON lines from f, and IDX labels for them when --labels is given. */
static int load_text(const predict_opts_t *o, FILE *f, const tsc_model_info_t *info, inputs_t *in, char *err,
                     size_t errlen) {
    fvec_t x = {0};
    in->dim = info->input_dim;
    int rc = o->format == FMT_CSV ? parse_csv(f, o->input, in->dim, o->limit, &x, &in->rows, err, errlen)
                                  : parse_jsonl(f, o->input, in->dim, o->limit, &x, &in->rows, err, errlen);
    in->x = x.v;
    if (!rc && o->labels) rc = load_labels(o->labels, in->rows, info->outputs, &in->labels, err, errlen);
    return rc;
}

/* Criteo TSV for a model with tables: the dense features, one id per slot, and the labels. */
static int load_criteo(const predict_opts_t *o, const tsc_model_info_t *info, inputs_t *in, char *err,
                       size_t errlen) {
    if (!info->categorical_slots) {
        snprintf(err, errlen, "%s is Criteo TSV, but the served model has no categorical slots", o->input);
        return -1;
    }
    ctr_read_opts_t ro = {.format = "criteo",
                          .n_dense = (int)info->input_dim,
                          .n_slots = (int)info->categorical_slots,
                          .limit = o->limit};
    ctr_dataset_t d;
    if (ctr_load(&d, o->input, &ro, err, errlen)) return -1;
    in->rows = d.n;
    in->dim = (size_t)d.n_dense;
    in->slots = (size_t)d.n_slots;
    in->x = d.dense;
    in->labels = d.label;
    d.dense = NULL;
    d.label = NULL;
    in->ids = malloc((d.n * in->slots + 1) * sizeof *in->ids);
    if (!in->ids) {
        ctr_dataset_free(&d);
        snprintf(err, errlen, "%s: out of memory", o->input);
        return -1;
    }
    for (size_t j = 0; j < d.n * in->slots; j++) /* a Criteo bag holds one id or none */
        in->ids[j] = d.bag_off[j + 1] > d.bag_off[j] ? d.ids[d.bag_off[j]] : TSC_ID_MISSING;
    ctr_dataset_free(&d);
    return 0;
}

/* Reads the input file (f: the text formats) for a model of info's shape and scaling. Returns 0, or
 * -1 with a message and *in empty. */
static int load_inputs(const predict_opts_t *o, FILE *f, const tsc_model_info_t *info, inputs_t *in,
                       char *err, size_t errlen) {
    memset(in, 0, sizeof *in);
    int rc = o->format == FMT_IDX      ? load_idx(o, info, in, err, errlen)
             : o->format == FMT_CRITEO ? load_criteo(o, info, in, err, errlen)
                                       : load_text(o, f, info, in, err, errlen);
    if (!rc && info->categorical_slots && !in->ids) {
        snprintf(err, errlen,
                 "the served model has %u categorical slots: give its inputs as Criteo TSV (--format criteo)",
                 info->categorical_slots);
        rc = -1;
    }
    if (!rc && !in->rows) {
        snprintf(err, errlen, "%s: no input rows", o->input);
        rc = -1;
    } else if (!rc && in->dim != info->input_dim) {
        snprintf(err, errlen, "%s: examples of %zu values, but the model takes %u inputs", o->input, in->dim,
                 info->input_dim);
        rc = -1;
    }
    if (rc) inputs_free(in);
    return rc;
}

/* Prints a float as JSON: %.9g round-trips a float exactly; JSON has no NaN or infinity. */
static void put_float(FILE *out, float v) {
    if (isfinite(v))
        fprintf(out, "%.9g", (double)v);
    else
        fputs("null", out);
}

/* Writes the JSON lines of one answered batch starting at row `first`; counts correct labels. */
static void write_batch(FILE *out, const tsc_result_t *r, size_t first, const int32_t *labels,
                        size_t *correct) {
    for (size_t i = 0; i < r->rows; i++) {
        const float *l = r->outputs + i * r->cols;
        size_t best = r->cols == 1 && l[0] > 0; /* one logit: a binary model's class is its sign */
        for (size_t k = 1; k < r->cols; k++)
            if (l[k] > l[best]) best = k;
        fprintf(out, "{\"index\": %zu, \"class\": %zu, \"logits\": [", first + i, best);
        for (size_t k = 0; k < r->cols; k++) {
            if (k) fputs(", ", out);
            put_float(out, l[k]);
        }
        fprintf(out, "], \"version\": %llu}\n", (unsigned long long)r->version);
        if (labels && labels[first + i] == (int32_t)best) (*correct)++;
    }
}

/* Parses the options. Returns -1 to go on, else the exit status (0 for --help, 2 for usage errors). */
static int parse_args(int argc, char **argv, predict_opts_t *o) {
    static const struct option longopts[] = {{"endpoint", required_argument, NULL, 'e'},
                                             {"input", required_argument, NULL, 'i'},
                                             {"format", required_argument, NULL, 'f'},
                                             {"labels", required_argument, NULL, 'l'},
                                             {"model", required_argument, NULL, 'm'},
                                             {"version", required_argument, NULL, 'v'},
                                             {"batch", required_argument, NULL, 'b'},
                                             {"output", required_argument, NULL, 'o'},
                                             {"timeout-ms", required_argument, NULL, 't'},
                                             {"limit", required_argument, NULL, 'n'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    *o = (predict_opts_t){.model = "", .batch = 256, .timeout_ms = 10000};
    char *args[argc + 2];
    int nargs = cli_getopt_args(CMD, argc, argv, args);
    int c, bad = 0;
    while (!bad && (c = getopt_long(nargs, args, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'e': o->endpoint = optarg; break;
        case 'i': o->input = optarg; break;
        case 'l': o->labels = optarg; break;
        case 'm': o->model = optarg; break;
        case 'o': o->output = optarg; break;
        case 'v': bad = cli_parse_long(CMD, "--version", optarg, 0, LONG_MAX, &o->version); break;
        case 'b': bad = cli_parse_long(CMD, "--batch", optarg, 1, 1 << 20, &o->batch); break;
        case 't': bad = cli_parse_long(CMD, "--timeout-ms", optarg, 1, INT32_MAX, &o->timeout_ms); break;
        case 'n': bad = cli_parse_long(CMD, "--limit", optarg, 1, LONG_MAX, &o->limit); break;
        case 'f':
            if (!strcmp(optarg, "idx"))
                o->format = FMT_IDX;
            else if (!strcmp(optarg, "csv"))
                o->format = FMT_CSV;
            else if (!strcmp(optarg, "jsonl") || !strcmp(optarg, "json"))
                o->format = FMT_JSONL;
            else if (!strcmp(optarg, "criteo"))
                o->format = FMT_CRITEO;
            else {
                fprintf(stderr, CMD ": --format takes idx, csv, jsonl or criteo, not '%s'\n", optarg);
                bad = 1;
            }
            break;
        case 'h': fputs(predict_usage, stdout); return 0;
        default: bad = 1; break; /* getopt has said why */
        }
    }
    if (!bad && optind < nargs) {
        fprintf(stderr, CMD ": unexpected argument '%s'\n", args[optind]);
        bad = 1;
    }
    if (!bad && (!o->endpoint || !o->input)) {
        fprintf(stderr, CMD ": --endpoint and --input are required\n");
        bad = 1;
    }
    if (!bad && o->format == FMT_NONE && (o->format = format_of_name(o->input)) == FMT_NONE) {
        fprintf(stderr, CMD ": cannot tell the format of %s from its name; give --format\n", o->input);
        bad = 1;
    }
    if (bad) {
        fputs(predict_usage, stderr);
        return 2;
    }
    return -1;
}

int cmd_predict(int argc, char **argv) {
    predict_opts_t o;
    int status = parse_args(argc, argv, &o);
    if (status >= 0) return status;

    char err[1024];
    FILE *in_file = NULL, *out = stdout;
    tsc_client_t *c = NULL;
    inputs_t in = {0};
    float *scores = NULL; /* a binary model on Criteo TSV: each row's logit, for the AUC */
    size_t correct = 0, done = 0;
    status = 1;
    /* Open the input before asking the server anything, so a wrong path fails at once. */
    if (!(in_file = fopen(o.input, o.format == FMT_IDX ? "rb" : "r"))) {
        fprintf(stderr, CMD ": cannot open %s: %s\n", o.input, strerror(errno));
        goto out;
    }
    if (!(c = tsc_connect(o.endpoint, err, sizeof err))) {
        fprintf(stderr, CMD ": %s\n", err);
        goto out;
    }
    tsc_set_timeout(c, (int)o.timeout_ms);
    tsc_model_info_t info;
    int rc = tsc_model_info(c, o.model, &info);
    if (rc) {
        fprintf(stderr, CMD ": STATUS of model '%s' at %s failed: %s: %s\n", o.model, o.endpoint,
                tsc_code_name(rc), tsc_error(c));
        goto out;
    }
    if (load_inputs(&o, in_file, &info, &in, err, sizeof err)) {
        fprintf(stderr, CMD ": %s\n", err);
        goto out;
    }
    if (o.output && strcmp(o.output, "-") && !(out = fopen(o.output, "w"))) {
        out = stdout;
        fprintf(stderr, CMD ": cannot create %s: %s\n", o.output, strerror(errno));
        goto out;
    }
    if (o.format == FMT_CRITEO && info.outputs == 1 && !(scores = malloc(in.rows * sizeof *scores))) {
        fprintf(stderr, CMD ": out of memory\n");
        goto out;
    }
    for (; done < in.rows; done += (size_t)o.batch) {
        size_t n = in.rows - done < (size_t)o.batch ? in.rows - done : (size_t)o.batch;
        tsc_result_t r;
        rc = tsc_predict_ids(c, o.model, (uint64_t)o.version, in.x + done * in.dim, n, in.dim,
                             in.ids ? in.ids + done * in.slots : NULL, in.slots, &r);
        if (rc) {
            fprintf(stderr, CMD ": rows %zu-%zu: %s: %s\n", done, done + n - 1, tsc_code_name(rc),
                    tsc_error(c));
            goto out;
        }
        write_batch(out, &r, done, in.labels, &correct);
        if (scores && r.cols == 1) memcpy(scores + done, r.outputs, n * sizeof(float));
        tsc_result_free(&r);
    }
    if (fflush(out) || ferror(out)) {
        fprintf(stderr, CMD ": writing %s: %s\n", o.output ? o.output : "stdout", strerror(errno));
        goto out;
    }
    if (scores)
        fprintf(stderr, "test_auc=%.4f test_logloss=%.4f count=%zu\n", metric_auc(scores, in.labels, in.rows),
                metric_logloss(scores, in.labels, in.rows), in.rows);
    else if (in.labels)
        fprintf(stderr, "accuracy=%.4f correct=%zu count=%zu\n",
                in.rows ? (double)correct / (double)in.rows : 0.0, correct, in.rows);
    status = 0;
out:
    if (out != stdout && fclose(out) && !status) {
        fprintf(stderr, CMD ": writing %s: %s\n", o.output, strerror(errno));
        status = 1;
    }
    if (in_file) fclose(in_file);
    inputs_free(&in);
    free(scores);
    tsc_close(c);
    return status;
}
