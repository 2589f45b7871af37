/* tessera loadtest: throughput and latency of a serving endpoint, after Triton's perf_analyzer. One
 * thread and one event loop keep C requests in flight (closed loop), or send at a fixed rate with at
 * most C outstanding (open loop). Every latency is kept, so the percentiles are exact. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "commands.h"
#include "tessera_client.h"
#include "util.h"

static const char *const loadtest_usage =
    "usage: tessera loadtest --endpoint E [options]\n"
    "\n"
    "Sends PREDICT requests for --warmup + --duration seconds and reports what was measured\n"
    "after the warm-up: throughput, latency percentiles (exact), errors by code, timeouts and\n"
    "the model versions that answered.\n"
    "\n"
    "  --endpoint E       the server (router), e.g. tcp://127.0.0.1:5555\n"
    "  --concurrency C    requests in flight (closed loop), or at most outstanding with\n"
    "                     --rate (default 1)\n"
    "  --rate R           open loop: send R requests/s; a send due while C are outstanding is\n"
    "                     skipped and counted as client_limited (default: closed loop)\n"
    "  --duration S       seconds measured (default 10)\n"
    "  --warmup S         seconds run first and not counted (default 1)\n"
    "  --batch B          rows per request (default 1)\n"
    "  --model M          the model's name (default: the only one served)\n"
    "  --version V        the model version (default 0: the server's default)\n"
    "  --input FILE       IDX images to cycle through, scaled like the training data\n"
    "                     (default: random normal inputs of the model's input_dim)\n"
    "  --timeout-ms MS    a request without a reply after MS is counted as a timeout and\n"
    "                     abandoned; also sent as its deadline (default 5000)\n"
    "  --json             print the report as one JSON object\n"
    "  --quiet            no progress line on stderr each second\n"
    "\n"
    "Ctrl-C ends the measurement early and reports it. Exit status: 0 when the run completed\n"
    "(request errors included), 1 when it could not run, 2 on a usage error.\n";

#define CMD             "tessera loadtest"
#define MAX_CODES       128 /* outcome codes counted apart; see tessera_client.h */
#define RANDOM_POOL     1024
#define SEND_RETRY_S    0.001
#define SCAN_INTERVAL_S 0.01

typedef struct {
    const char *endpoint, *model, *input;
    long concurrency, batch, version, timeout_ms;
    double rate, duration, warmup;
    int json, quiet;
} loadtest_opts_t;

/* A request in flight. */
typedef struct {
    uint64_t id;
    double sent;
    int busy;
} slot_t;

typedef struct {
    double *v;
    size_t n, cap;
} samples_t;

typedef struct {
    uint64_t version, count;
    double first_s; /* since the measurement started */
} version_seen_t;

typedef struct {
    uint64_t ok, ok_rows, batch_rows_sum, timeouts, client_limited;
    uint64_t errors[MAX_CODES];
    char *error_msg[MAX_CODES]; /* the first message of each code */
    samples_t latency_us, overhead_us;
    version_seen_t *versions;
    size_t n_versions;
} stats_t;

static volatile sig_atomic_t g_stop;

static void on_sigint(int sig) {
    (void)sig;
    g_stop = 1;
}

static void samples_push(samples_t *s, double v) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 1 << 16;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) {
            fprintf(stderr, CMD ": out of memory for %zu samples\n", s->cap);
            abort();
        }
    }
    s->v[s->n++] = v;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile p (0 < p <= 1) of sorted v[0..n). */
static double percentile(const double *v, size_t n, double p) {
    if (!n) return 0;
    size_t k = (size_t)ceil(p * (double)n);
    return v[k ? k - 1 : 0];
}

static double mean_of(const samples_t *s) {
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->v[i];
    return s->n ? sum / (double)s->n : 0;
}

static void stats_free(stats_t *st) {
    for (int i = 0; i < MAX_CODES; i++)
        free(st->error_msg[i]);
    free(st->latency_us.v);
    free(st->overhead_us.v);
    free(st->versions);
}

static uint64_t errors_total(const stats_t *st) {
    uint64_t n = 0;
    for (int i = 0; i < MAX_CODES; i++)
        n += st->errors[i];
    return n;
}

static void count_error(stats_t *st, int code, const char *msg) {
    if (code < 0 || code >= MAX_CODES) code = TSC_INTERNAL;
    if (!st->errors[code]++ && !(st->error_msg[code] = strdup(msg))) abort();
}

static void record_ok(stats_t *st, const tsc_result_t *r, double latency_s, double since_start) {
    double us = latency_s * 1e6;
    st->ok++;
    st->ok_rows += r->rows;
    st->batch_rows_sum += r->batch_rows;
    samples_push(&st->latency_us, us);
    samples_push(&st->overhead_us, us - (double)r->compute_us);
    for (size_t i = 0; i < st->n_versions; i++)
        if (st->versions[i].version == r->version) {
            st->versions[i].count++;
            return;
        }
    version_seen_t *v = realloc(st->versions, (st->n_versions + 1) * sizeof *v);
    if (!v) abort();
    st->versions = v;
    st->versions[st->n_versions++] = (version_seen_t){r->version, 1, since_start};
}

/* The p99 of the samples from `first` on (the last second's), for the progress line. */
static double recent_p99(const samples_t *s, size_t first) {
    size_t n = s->n - first;
    if (!n) return 0;
    double *tmp = XMALLOC(n * sizeof *tmp);
    memcpy(tmp, s->v + first, n * sizeof *tmp);
    qsort(tmp, n, sizeof *tmp, cmp_double);
    double p = percentile(tmp, n, 0.99);
    free(tmp);
    return p;
}

/* The input rows requests cycle through: IDX images, or random normal values. */
typedef struct {
    float *x;
    size_t rows, dim;
} pool_t;

static int make_pool(const loadtest_opts_t *o, const tsc_model_info_t *info, int have_info, pool_t *p) {
    if (o->input) {
        char err[1024];
        double mean = have_info ? info->input_mean : 0, std = have_info ? info->input_std : 0;
        if (idx_load_inputs(o->input, 0, mean, std, &p->x, &p->rows, &p->dim, err, sizeof err)) {
            fprintf(stderr, CMD ": %s\n", err);
            return -1;
        }
        if (!p->rows || (have_info && p->dim != info->input_dim)) {
            fprintf(stderr, CMD ": %s: %zu examples of %zu values, but the model takes %u inputs\n", o->input,
                    p->rows, p->dim, info->input_dim);
            free(p->x);
            return -1;
        }
        return 0;
    }
    if (!info->input_dim) {
        fprintf(stderr, CMD ": the server reports input_dim 0; give --input\n");
        return -1;
    }
    p->rows = RANDOM_POOL;
    p->dim = info->input_dim;
    p->x = XMALLOC(p->rows * p->dim * sizeof *p->x);
    rng_t rng;
    rng_seed(&rng, 1);
    for (size_t i = 0; i < p->rows * p->dim; i += 2) { /* Box-Muller */
        double u1 = ((double)(rng_next(&rng) >> 11) + 1.0) * 0x1p-53,
               u2 = (double)(rng_next(&rng) >> 11) * 0x1p-53;
        double r = sqrt(-2.0 * log(u1));
        p->x[i] = (float)(r * cos(2 * M_PI * u2));
        if (i + 1 < p->rows * p->dim) p->x[i + 1] = (float)(r * sin(2 * M_PI * u2));
    }
    return 0;
}

/* Sends the next request into a free slot, with the next `batch` pool rows. Returns the outcome. */
static int send_one(const loadtest_opts_t *o, tsc_client_t *c, const pool_t *p, float *staging,
                    uint64_t *next_row, slot_t *slot) {
    for (long i = 0; i < o->batch; i++, (*next_row)++)
        memcpy(staging + (size_t)i * p->dim, p->x + (*next_row % p->rows) * p->dim, p->dim * sizeof *staging);
    slot->sent = now_s();
    int rc =
        tsc_predict_send(c, o->model, (uint64_t)o->version, staging, (size_t)o->batch, p->dim, &slot->id);
    slot->busy = rc == TSC_OK;
    return rc;
}

/* Runs the load: warm-up, then the measured window, whose length is returned in *measured_s (shorter
 * after Ctrl-C). Returns 0, or -1 when the socket failed. */
static int run(const loadtest_opts_t *o, tsc_client_t *c, const pool_t *p, stats_t *st, double *measured_s) {
    size_t nslots = (size_t)o->concurrency;
    slot_t *slots = XCALLOC(nslots, sizeof *slots);
    /* Free slots on a stack, and request id -> slot through a table (verified on use): the loop's
     * cost per request stays constant at any concurrency. */
    size_t *free_slots = XMALLOC(nslots * sizeof *free_slots), n_free = nslots;
    for (size_t i = 0; i < nslots; i++)
        free_slots[i] = nslots - 1 - i;
    size_t mask = 1;
    while (mask < 4 * nslots)
        mask <<= 1;
    size_t *slot_of = XCALLOC(mask--, sizeof *slot_of);
    double next_scan = 0;
    float *staging = XMALLOC((size_t)o->batch * p->dim * sizeof *staging);
    uint64_t next_row = 0, tick_ok = 0;
    size_t tick_sample = 0;
    double timeout_s = (double)o->timeout_ms / 1000.0;
    double t0 = now_s(), t_meas = t0 + o->warmup, t_end = t_meas + o->duration;
    double next_send = t0, interval = o->rate > 0 ? 1.0 / o->rate : 0;
    double last_tick = t_meas, next_tick = t_meas + 1;
    int rc = 0;
    for (;;) {
        double now = now_s();
        if (g_stop && now < t_end) t_end = now > t_meas ? now : t_meas;
        if (now >= t_end) break;
        int counting = now >= t_meas;

        /* Abandon requests past their timeout (checked every 10 ms): a late reply no longer matches a
         * slot. */
        double wake = t_end;
        if (now >= next_scan) {
            for (size_t i = 0; i < nslots; i++)
                if (slots[i].busy && now - slots[i].sent >= timeout_s) {
                    slots[i].busy = 0;
                    free_slots[n_free++] = i;
                    st->timeouts += (uint64_t)counting;
                }
            next_scan = now + SCAN_INTERVAL_S;
        }
        if (n_free < nslots && next_scan < wake) wake = next_scan;

        /* Send: fill every free slot (closed loop), or what is due (open loop). */
        while (n_free > 0 && (interval == 0 || next_send <= now)) {
            size_t i = free_slots[n_free - 1];
            int s = send_one(o, c, p, staging, &next_row, &slots[i]);
            if (interval) next_send += interval;
            if (s == TSC_OK) {
                n_free--;
                slot_of[slots[i].id & mask] = i;
                continue;
            }
            if (counting) count_error(st, s, tsc_error(c));
            if (now + SEND_RETRY_S < wake) wake = now + SEND_RETRY_S; /* retry soon, without spinning */
            break;
        }
        for (; interval && next_send <= now; next_send += interval)
            st->client_limited += (uint64_t)counting; /* due, but C requests are outstanding */
        if (interval && next_send < wake) wake = next_send;

        if (counting && now >= next_tick) {
            if (!o->quiet)
                fprintf(stderr,
                        "t=%.0fs ok=%" PRIu64 " err=%" PRIu64 " timeouts=%" PRIu64 " rps=%.0f p99_us=%.0f\n",
                        now - t_meas, st->ok, errors_total(st), st->timeouts,
                        (double)(st->ok - tick_ok) / (now - last_tick),
                        recent_p99(&st->latency_us, tick_sample));
            tick_ok = st->ok;
            tick_sample = st->latency_us.n;
            last_tick = now;
            while (next_tick <= now)
                next_tick += 1;
        }
        if (next_tick < wake) wake = next_tick;

        /* Wait for a reply until the next thing to do. */
        tsc_result_t r;
        uint64_t id;
        /* At least 1 ms when something is ahead: an open loop sends what fell due meanwhile in one go
         * rather than spinning between sends. */
        int wait_ms = wake > now ? (int)ceil(fmin((wake - now) * 1000.0, 1000.0)) : 0;
        int s = tsc_predict_recv(c, wait_ms, &id, &r);
        double t = now_s();
        if (s == TSC_TIMEOUT) continue;
        if (s == TSC_IO && !id) {
            fprintf(stderr, CMD ": %s\n", tsc_error(c));
            rc = -1;
            break;
        }
        slot_t *slot = &slots[slot_of[id & mask]];
        if (slot->busy && slot->id == id) {
            slot->busy = 0;
            free_slots[n_free++] = (size_t)(slot - slots);
            if (t >= t_meas && t < t_end) {
                if (t - slot->sent >= timeout_s) /* late while the loop was busy sending */
                    st->timeouts++;
                else if (s == TSC_OK)
                    record_ok(st, &r, t - slot->sent, t - t_meas);
                else
                    count_error(st, s, tsc_error(c));
            }
        } /* else: the reply to an abandoned request */
        tsc_result_free(&r);
    }
    *measured_s = t_end > t_meas ? t_end - t_meas : 0;
    free(slots);
    free(free_slots);
    free(slot_of);
    free(staging);
    return rc;
}

static void *json_alloc(size_t n) {
    return XMALLOC(n);
}

/* The report as one JSON object (see the usage text for the keys). */
static void print_json(const loadtest_opts_t *o, const stats_t *st, double secs) {
    cJSON_InitHooks(&(cJSON_Hooks){.malloc_fn = json_alloc, .free_fn = free}); /* no silent OOM */
    const samples_t *lat = &st->latency_us, *ovh = &st->overhead_us;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "endpoint", o->endpoint);
    cJSON_AddStringToObject(j, "model", o->model);
    cJSON_AddNumberToObject(j, "concurrency", (double)o->concurrency);
    if (o->rate > 0)
        cJSON_AddNumberToObject(j, "rate", o->rate);
    else
        cJSON_AddNullToObject(j, "rate");
    cJSON_AddNumberToObject(j, "batch", (double)o->batch);
    cJSON_AddNumberToObject(j, "duration_s", secs);
    cJSON_AddNumberToObject(j, "warmup_s", o->warmup);
    cJSON_AddNumberToObject(j, "requests", (double)(st->ok + errors_total(st) + st->timeouts));
    cJSON_AddNumberToObject(j, "ok", (double)st->ok);
    cJSON *errors = cJSON_AddObjectToObject(j, "errors");
    cJSON *messages = cJSON_AddObjectToObject(j, "error_messages");
    for (int i = 0; i < MAX_CODES; i++)
        if (st->errors[i]) {
            cJSON_AddNumberToObject(errors, tsc_code_name(i), (double)st->errors[i]);
            cJSON_AddStringToObject(messages, tsc_code_name(i), st->error_msg[i]);
        }
    cJSON_AddNumberToObject(j, "timeouts", (double)st->timeouts);
    cJSON_AddNumberToObject(j, "client_limited", (double)st->client_limited);
    cJSON_AddNumberToObject(j, "throughput_rps", secs > 0 ? (double)st->ok / secs : 0);
    cJSON_AddNumberToObject(j, "rows_per_s", secs > 0 ? (double)st->ok_rows / secs : 0);
    cJSON *l = cJSON_AddObjectToObject(j, "latency_us");
    cJSON_AddNumberToObject(l, "p50", percentile(lat->v, lat->n, 0.50));
    cJSON_AddNumberToObject(l, "p90", percentile(lat->v, lat->n, 0.90));
    cJSON_AddNumberToObject(l, "p99", percentile(lat->v, lat->n, 0.99));
    cJSON_AddNumberToObject(l, "p999", percentile(lat->v, lat->n, 0.999));
    cJSON_AddNumberToObject(l, "max", lat->n ? lat->v[lat->n - 1] : 0);
    cJSON_AddNumberToObject(l, "mean", mean_of(lat));
    cJSON *ov = cJSON_AddObjectToObject(j, "overhead_us");
    cJSON_AddNumberToObject(ov, "p50", percentile(ovh->v, ovh->n, 0.50));
    cJSON_AddNumberToObject(ov, "mean", mean_of(ovh));
    cJSON_AddNumberToObject(j, "mean_batch_rows", st->ok ? (double)st->batch_rows_sum / (double)st->ok : 0);
    cJSON *vers = cJSON_AddObjectToObject(j, "versions");
    cJSON *first = cJSON_AddObjectToObject(j, "version_first_seen_s");
    for (size_t i = 0; i < st->n_versions; i++) {
        char key[24];
        snprintf(key, sizeof key, "%" PRIu64, st->versions[i].version);
        cJSON_AddNumberToObject(vers, key, (double)st->versions[i].count);
        cJSON_AddNumberToObject(first, key, st->versions[i].first_s);
    }
    char *text = cJSON_PrintUnformatted(j);
    puts(text);
    cJSON_free(text);
    cJSON_Delete(j);
}

static void print_human(const loadtest_opts_t *o, const stats_t *st, double secs) {
    const samples_t *lat = &st->latency_us, *ovh = &st->overhead_us;
    printf("endpoint     %s model=%s ", o->endpoint, *o->model ? o->model : "(default)");
    if (o->version)
        printf("version=%ld\n", o->version);
    else
        printf("version=(default)\n");
    if (o->rate > 0)
        printf("load         open loop at %g requests/s, at most %ld outstanding, batch %ld\n", o->rate,
               o->concurrency, o->batch);
    else
        printf("load         closed loop, concurrency %ld, batch %ld\n", o->concurrency, o->batch);
    printf("measured     %.2f s after %.2f s warm-up\n", secs, o->warmup);
    printf("requests     %" PRIu64 ": ok %" PRIu64 ", errors %" PRIu64 ", timeouts %" PRIu64,
           st->ok + errors_total(st) + st->timeouts, st->ok, errors_total(st), st->timeouts);
    if (o->rate > 0) printf(", client_limited %" PRIu64, st->client_limited);
    printf("\nthroughput   %.1f requests/s, %.1f rows/s\n", secs > 0 ? (double)st->ok / secs : 0,
           secs > 0 ? (double)st->ok_rows / secs : 0);
    printf("latency_us   p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f  mean %.1f\n",
           percentile(lat->v, lat->n, 0.50), percentile(lat->v, lat->n, 0.90),
           percentile(lat->v, lat->n, 0.99), percentile(lat->v, lat->n, 0.999),
           lat->n ? lat->v[lat->n - 1] : 0, mean_of(lat));
    printf("overhead_us  p50 %.0f  mean %.1f  (latency - compute_us)\n", percentile(ovh->v, ovh->n, 0.50),
           mean_of(ovh));
    printf("batch_rows   mean %.2f\n", st->ok ? (double)st->batch_rows_sum / (double)st->ok : 0);
    for (size_t i = 0; i < st->n_versions; i++)
        printf("version      %" PRIu64 ": %" PRIu64 " replies, first at %.3f s\n", st->versions[i].version,
               st->versions[i].count, st->versions[i].first_s);
    for (int i = 0; i < MAX_CODES; i++)
        if (st->errors[i])
            printf("error        %s: %" PRIu64 " (first: %s)\n", tsc_code_name(i), st->errors[i],
                   st->error_msg[i]);
}

/* Parses the options. Returns -1 to go on, else the exit status (0 for --help, 2 for usage errors). */
static int parse_args(int argc, char **argv, loadtest_opts_t *o) {
    static const struct option longopts[] = {
        {"endpoint", required_argument, NULL, 'e'}, {"concurrency", required_argument, NULL, 'c'},
        {"duration", required_argument, NULL, 'd'}, {"rate", required_argument, NULL, 'r'},
        {"batch", required_argument, NULL, 'b'},    {"model", required_argument, NULL, 'm'},
        {"version", required_argument, NULL, 'v'},  {"input", required_argument, NULL, 'i'},
        {"warmup", required_argument, NULL, 'w'},   {"timeout-ms", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},           {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    *o = (loadtest_opts_t){
        .model = "", .concurrency = 1, .batch = 1, .timeout_ms = 5000, .duration = 10, .warmup = 1};
    char *args[argc + 2];
    int nargs = cli_getopt_args(CMD, argc, argv, args);
    int c, bad = 0;
    while (!bad && (c = getopt_long(nargs, args, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'e': o->endpoint = optarg; break;
        case 'm': o->model = optarg; break;
        case 'i': o->input = optarg; break;
        case 'j': o->json = 1; break;
        case 'q': o->quiet = 1; break;
        case 'c': bad = cli_parse_long(CMD, "--concurrency", optarg, 1, 100000, &o->concurrency); break;
        case 'b': bad = cli_parse_long(CMD, "--batch", optarg, 1, 1 << 20, &o->batch); break;
        case 'v': bad = cli_parse_long(CMD, "--version", optarg, 0, LONG_MAX, &o->version); break;
        case 't': bad = cli_parse_long(CMD, "--timeout-ms", optarg, 1, INT32_MAX, &o->timeout_ms); break;
        case 'd': bad = cli_parse_double(CMD, "--duration", optarg, 0.001, 1e7, &o->duration); break;
        case 'w': bad = cli_parse_double(CMD, "--warmup", optarg, 0, 1e7, &o->warmup); break;
        case 'r': bad = cli_parse_double(CMD, "--rate", optarg, 0.001, 1e9, &o->rate); break;
        case 'h': fputs(loadtest_usage, stdout); return 0;
        default: bad = 1; break; /* getopt has said why */
        }
    }
    if (!bad && optind < nargs) {
        fprintf(stderr, CMD ": unexpected argument '%s'\n", args[optind]);
        bad = 1;
    }
    if (!bad && !o->endpoint) {
        fprintf(stderr, CMD ": --endpoint is required\n");
        bad = 1;
    }
    if (bad) {
        fputs(loadtest_usage, stderr);
        return 2;
    }
    return -1;
}

int cmd_loadtest(int argc, char **argv) {
    loadtest_opts_t o;
    int status = parse_args(argc, argv, &o);
    if (status >= 0) return status;

    char err[1024];
    tsc_client_t *c = tsc_connect(o.endpoint, err, sizeof err);
    if (!c) {
        fprintf(stderr, CMD ": %s\n", err);
        return 1;
    }
    tsc_set_timeout(c, (int)o.timeout_ms);
    tsc_model_info_t info;
    int rc = tsc_model_info(c, o.model, &info);
    if (rc) fprintf(stderr, CMD ": STATUS failed: %s: %s\n", tsc_code_name(rc), tsc_error(c));
    pool_t pool = {0};
    if ((rc && !o.input) || make_pool(&o, &info, !rc, &pool)) {
        tsc_close(c);
        return 1;
    }

    stats_t st = {0};
    double secs = 0;
    struct sigaction sa = {.sa_handler = on_sigint, .sa_flags = SA_RESETHAND}, old;
    sigemptyset(&sa.sa_mask);
    g_stop = 0;
    sigaction(SIGINT, &sa, &old);
    status = run(&o, c, &pool, &st, &secs) ? 1 : 0;
    sigaction(SIGINT, &old, NULL);

    if (!status) {
        if (st.ok) {
            qsort(st.latency_us.v, st.latency_us.n, sizeof(double), cmp_double);
            qsort(st.overhead_us.v, st.overhead_us.n, sizeof(double), cmp_double);
        }
        if (o.json)
            print_json(&o, &st, secs);
        else
            print_human(&o, &st, secs);
        if (fflush(stdout)) status = 1;
    }
    stats_free(&st);
    free(pool.x);
    tsc_close(c);
    return status;
}
