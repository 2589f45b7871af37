#include "scheduler.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#include "check.h"
#include "ckpt.h"
#include "metrics_http.h"
#include "program.h"
#include "router.h"
#include "util.h"
#include "wire.h"

#ifndef TESSERA_VERSION
#define TESSERA_VERSION "unknown"
#endif

typedef struct {
    int64_t step;
    uint64_t examples;
    double train_seconds, last_seen;
    int done, warned;
    char digest[17];
} member_t;

/* One checkpoint being assembled: which shards and workers have written their parts. */
typedef struct {
    int64_t step; /* 0 = free slot */
    int parts, stop;
    unsigned char *seen; /* per part: shards first, then workers */
    uint64_t bytes;
    double write_s, stall_s, started;
} ckpt_part_t;

typedef struct {
    const job_config_t *cfg;
    const cluster_t *cl;
    const char *run_dir;
    void *router;
    member_t *workers, *shards;
    int n_done;
    uint64_t steps_total;
    double win_loss;
    uint64_t win_correct, win_count, examples_at_print;
    double t_start, last_print;
    int epochs_done;
    double test_accuracy, test_loss;
    int has_auc;
    double test_auc, test_logloss;
    uint64_t data_skipped;
    FILE *metrics;
    /* checkpoints: parts received for the open cut(s) */
    char ckpt_root[4096];
    ckpt_part_t ckpt[4];
    int ckpts_written, stopped;
    int64_t stop_failed;  /* a stop checkpoint that failed (0 = none) */
    int64_t abandoned[8]; /* recently abandoned checkpoints: their late parts are ignored */
    int n_abandoned;
    char resumed_from[4096];
    int64_t last_ckpt;        /* the newest committed */
    int64_t newest_abandoned; /* the newest abandoned */
    double ckpt_bytes, ckpt_write_s, ckpt_stall_s;
    /* job.metrics_listen: the page it serves is rebuilt every METRICS_EVERY_S */
    metrics_http_t *http;
    double next_publish, started_unix;
    double last_loss, last_acc, last_rate; /* the last progress window's */
} sched_t;

#define METRICS_EVERY_S 0.5

static void fmt_duration(double s, char *out, size_t n) {
    if (s < 0 || s > 1e7) {
        snprintf(out, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    snprintf(out, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

static int64_t min_step(const sched_t *s) {
    int64_t m = s->workers[0].step;
    for (int i = 1; i < s->cl->n_workers; i++)
        if (s->workers[i].step < m) m = s->workers[i].step;
    return m;
}

static uint64_t total_examples(const sched_t *s) {
    uint64_t e = 0;
    for (int i = 0; i < s->cl->n_workers; i++)
        e += s->workers[i].examples;
    return e;
}

static void print_progress(sched_t *s) {
    double t = now_s(), dt = t - s->last_print;
    uint64_t ex = total_examples(s);
    int64_t step = min_step(s);
    double rate = dt > 0 ? (double)(ex - s->examples_at_print) / dt : 0;
    double elapsed = t - s->t_start;
    double steps_rate = elapsed > 0 ? (double)step / elapsed : 0;
    char eta[32];
    fmt_duration(steps_rate > 0 ? (double)((int64_t)s->steps_total - step) / steps_rate : -1, eta,
                 sizeof eta);
    if (s->win_count > 0) {
        s->last_loss = s->win_loss / (double)s->win_count;
        s->last_acc = (double)s->win_correct / (double)s->win_count;
    }
    s->last_rate = rate;
    if (s->win_count > 0)
        log_info("progress epoch=%d/%d step=%lld/%llu loss=%.4f acc=%.4f examples_per_s=%.0f eta=%s",
                 s->epochs_done + 1, s->cfg->epochs, (long long)step, (unsigned long long)s->steps_total,
                 s->win_loss / (double)s->win_count, (double)s->win_correct / (double)s->win_count, rate,
                 eta);
    s->win_loss = 0;
    s->win_correct = s->win_count = 0;
    s->examples_at_print = ex;
    s->last_print = t;
}

/* The page job.metrics_listen serves: the job's progress, last evaluation and checkpoints. */
static void publish_metrics(sched_t *s) {
    char *page = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&page, &len);
    if (!f) return;
    const char *job = s->cfg->name;
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"tessera_train_step", "gauge", "Training steps every worker has completed."},
        {"tessera_train_steps_planned", "gauge", "Steps the job will run."},
        {"tessera_train_examples_total", "counter", "Training examples processed, all workers."},
        {"tessera_train_epochs_done", "gauge", "Epochs completed (and evaluated)."},
        {"tessera_train_loss", "gauge", "Mean training loss of the last progress window."},
        {"tessera_train_accuracy", "gauge", "Training accuracy of the last progress window."},
        {"tessera_train_examples_per_second", "gauge", "Training examples per second, the last window."},
        {"tessera_test_accuracy", "gauge", "Test accuracy of the last evaluation."},
        {"tessera_test_loss", "gauge", "Test loss of the last evaluation."},
        {"tessera_train_workers_done", "gauge", "Workers that have finished."},
        {"tessera_checkpoints_total", "counter", "Checkpoints committed by this run."},
        {"tessera_checkpoint_last_step", "gauge", "Step of the newest committed checkpoint (0: none)."},
        {"tessera_checkpoint_bytes_total", "counter", "Bytes of the checkpoints committed."},
        {"tessera_checkpoint_stall_seconds_total", "counter", "Training stalls for checkpoint snapshots."},
        {"process_start_time_seconds", "gauge",
         "When the job's scheduler started, seconds since the epoch."}};
    double v[] = {(double)min_step(s), (double)s->steps_total, (double)total_examples(s),
                  s->epochs_done,      s->last_loss,           s->last_acc,
                  s->last_rate,        s->test_accuracy,       s->test_loss,
                  s->n_done,           s->ckpts_written,       (double)s->last_ckpt,
                  s->ckpt_bytes,       s->ckpt_stall_s,        s->started_unix};
    for (size_t i = 0; i < sizeof fam / sizeof fam[0]; i++) {
        metrics_put_family(f, fam[i].name, fam[i].type, fam[i].help);
        metrics_put_sample(f, "job", job, fam[i].name, NULL, v[i]);
    }
    fclose(f);
    metrics_http_publish(s->http, page, len, 1);
    free(page);
}

static void record_epoch(sched_t *s, const Tessera__Report *r) {
    s->epochs_done = (int)r->epoch;
    s->test_accuracy = r->test_accuracy;
    s->test_loss = r->test_loss;
    s->has_auc = r->has_auc;
    s->test_auc = r->test_auc;
    s->test_logloss = r->test_logloss;
    s->data_skipped = r->data_skipped;
    double train_loss = r->count ? r->loss_sum / (double)r->count : 0;
    double train_acc = r->count ? (double)r->correct / (double)r->count : 0;
    double rate = r->train_seconds > 0 ? (double)r->examples / r->train_seconds : 0;
    double wall = now_s() - s->t_start;
    char auc[96] = "";
    if (r->has_auc)
        snprintf(auc, sizeof auc, " test_auc=%.4f test_logloss=%.4f", r->test_auc, r->test_logloss);
    log_info("epoch %u done step=%llu train_loss=%.4f train_accuracy=%.4f test_loss=%.4f "
             "test_accuracy=%.4f%s examples_per_s=%.0f wall_s=%.1f",
             r->epoch, (unsigned long long)r->step, train_loss, train_acc, r->test_loss, r->test_accuracy,
             auc, rate, wall);
    if (s->metrics) {
        fprintf(s->metrics, "%u,%llu,%.6f,%.6f,%.6f,%.6f,%.1f,%.3f,%.3f\n", r->epoch,
                (unsigned long long)r->step, train_loss, train_acc, r->test_loss, r->test_accuracy, rate,
                r->train_seconds, wall);
        fflush(s->metrics);
    }
}

/* Frees the slot of checkpoint `c`. */
static void ckpt_slot_free(ckpt_part_t *c) {
    free(c->seen);
    memset(c, 0, sizeof *c);
}

/* Phase two of a checkpoint: when every shard and every worker has written its part of `step`, write
 * the manifest (the commit point), move `latest`, and drop old checkpoints. `from_ps` and `sender`
 * say whose part this is (a repeated part is ignored). A failed part abandons the checkpoint; if it
 * was the one asked for to stop the job, the job will end with an error instead of "please requeue". */
static void checkpoint_part(sched_t *s, int64_t step, const Tessera__Report *r, int from_ps, int sender,
                            const char *failure) {
    int n_parts = s->cl->n_ps + s->cl->n_workers;
    for (int i = 0; i < 8; i++) /* late parts of an abandoned checkpoint */
        if (s->abandoned[i] == step) return;
    if (step <= s->last_ckpt) return; /* a repeated part of one committed already */
    ckpt_part_t *c = NULL;
    for (int i = 0; i < 4 && !c; i++)
        if (s->ckpt[i].step == step) c = &s->ckpt[i];
    for (int i = 0; i < 4 && !c; i++)
        if (s->ckpt[i].step == 0) {
            c = &s->ckpt[i];
            memset(c, 0, sizeof *c);
            c->step = step;
            c->started = now_s();
            c->seen = XCALLOC((size_t)n_parts, 1);
        }
    if (!c) {
        log_error("checkpoint %lld: four checkpoints are already in flight; part ignored", (long long)step);
        return;
    }
    int slot = from_ps ? sender : s->cl->n_ps + sender;
    if (c->seen[slot]) return;
    c->seen[slot] = 1;
    c->stop |= r->ckpt_stop;
    if (r->ckpt_failed) {
        log_error("checkpoint %lld abandoned: %s %d could not write its part: %s", (long long)step,
                  from_ps ? "shard" : "worker", sender, failure && *failure ? failure : "unknown error");
        if (c->stop) s->stop_failed = step;
        s->abandoned[s->n_abandoned++ % 8] = step;
        if (step > s->newest_abandoned) s->newest_abandoned = step;
        ckpt_slot_free(c);
        return;
    }
    c->parts++;
    c->bytes += r->ckpt_bytes;
    if (r->ckpt_seconds > c->write_s) c->write_s = r->ckpt_seconds;
    if (r->ckpt_stall_seconds > c->stall_s) c->stall_s = r->ckpt_stall_seconds;
    if (c->parts < n_parts) return;
    ckpt_manifest_t m = {.step = step,
                         .n_shards = s->cl->n_ps,
                         .n_workers = s->cl->n_workers,
                         .unix_time = (int64_t)time(NULL),
                         .stopped = c->stop};
    char err[1024];
    if (ckpt_write_manifest(s->ckpt_root, &m, s->cfg, err, sizeof err)) {
        log_error("checkpoint %lld not committed: %s", (long long)step, err);
        if (c->stop) s->stop_failed = step;
    } else {
        s->ckpts_written++;
        s->last_ckpt = step;
        program_checkpoint_requested = 0; /* a request on demand is served by this checkpoint */
        s->stopped |= c->stop;
        s->ckpt_bytes += (double)c->bytes;
        s->ckpt_write_s += c->write_s;
        s->ckpt_stall_s += c->stall_s;
        log_info("checkpoint committed step=%lld bytes=%llu write_s=%.3f stall_ms=%.2f%s dir=%s/step-%09lld",
                 (long long)step, (unsigned long long)c->bytes, c->write_s, c->stall_s * 1e3,
                 c->stop ? " stop=1" : "", s->ckpt_root, (long long)step);
        ckpt_prune(s->ckpt_root, s->cfg->ckpt_keep);
    }
    ckpt_slot_free(c);
}

/* A checkpoint whose parts stop coming (a rank that could not report) must not hold its slot, nor
 * the end of the job, forever. */
static void expire_checkpoints(sched_t *s) {
    for (int i = 0; i < 4; i++) {
        ckpt_part_t *c = &s->ckpt[i];
        if (c->step && now_s() - c->started > s->cfg->timeout_s) {
            log_error("checkpoint %lld abandoned: %d of %d parts arrived in %.0f s", (long long)c->step,
                      c->parts, s->cl->n_ps + s->cl->n_workers, s->cfg->timeout_s);
            if (c->stop) s->stop_failed = c->step;
            s->abandoned[s->n_abandoned++ % 8] = c->step;
            if (c->step > s->newest_abandoned) s->newest_abandoned = c->step;
            ckpt_slot_free(c);
        }
    }
}

static int ckpts_open(const sched_t *s) {
    int n = 0;
    for (int i = 0; i < 4; i++)
        n += s->ckpt[i].step != 0;
    return n;
}

static void handle(sched_t *s) {
    wire_msg_t m;
    Tessera__ErrorCode code;
    char err[512];
    int rc = wire_recv(s->router, 1, 1 << 20, &m, &code, err, sizeof err);
    if (rc) {
        log_warn("rejected message error=%s detail=\"%s\"", wire_error_name(code), err);
        if (rc == -TS_EPROTO && m.has_identity)
            wire_send_error(s->router, &m.identity, m.hdr ? m.hdr->request_id : 0, code, err);
        wire_msg_free(&m);
        return;
    }
    const Tessera__Header *h = m.hdr;
    const Tessera__Report *r = h->report;
    int is_worker = h->kind == TESSERA__KIND__KIND_HELLO || h->kind == TESSERA__KIND__KIND_REPORT ||
                    h->kind == TESSERA__KIND__KIND_EPOCH || h->kind == TESSERA__KIND__KIND_DONE;
    int bad = 0;
    if (is_worker && (h->sender < 0 || h->sender >= s->cl->n_workers || !r)) bad = 1;
    if (h->kind == TESSERA__KIND__KIND_HEARTBEAT && (h->sender < 0 || h->sender >= s->cl->n_ps)) bad = 1;
    int ckpt_from_ps = h->kind == TESSERA__KIND__KIND_CKPT_DONE && h->role && !strcmp(h->role, "ps");
    if (h->kind == TESSERA__KIND__KIND_CKPT_DONE &&
        (!r || h->clock <= 0 || h->sender < 0 ||
         h->sender >= (ckpt_from_ps ? s->cl->n_ps : s->cl->n_workers)))
        bad = 1;
    if (!is_worker && h->kind != TESSERA__KIND__KIND_HEARTBEAT && h->kind != TESSERA__KIND__KIND_PING &&
        h->kind != TESSERA__KIND__KIND_CKPT_DONE)
        bad = 1;
    if (bad) {
        snprintf(err, sizeof err, "unexpected %s from sender %d", wire_kind_name(h->kind), h->sender);
        wire_send_error(s->router, &m.identity, h->request_id, TESSERA__ERROR_CODE__ERR_INVALID_ARGUMENT,
                        err);
        wire_msg_free(&m);
        return;
    }
    member_t *mem = h->kind == TESSERA__KIND__KIND_HEARTBEAT ? &s->shards[h->sender]
                    : is_worker                              ? &s->workers[h->sender]
                                                             : NULL;
    if (mem) mem->last_seen = now_s();
    switch (h->kind) {
    case TESSERA__KIND__KIND_HELLO:
        if (r->steps_total > s->steps_total) s->steps_total = r->steps_total;
        break;
    case TESSERA__KIND__KIND_REPORT:
        mem->step = (int64_t)r->step;
        mem->examples = r->examples;
        mem->train_seconds = r->train_seconds;
        s->win_loss += r->loss_sum;
        s->win_correct += r->correct;
        s->win_count += r->count;
        break;
    case TESSERA__KIND__KIND_EPOCH: record_epoch(s, r); break;
    case TESSERA__KIND__KIND_DONE:
        if (!mem->done) s->n_done++;
        mem->done = 1;
        mem->step = (int64_t)r->step;
        mem->examples = r->examples;
        mem->train_seconds = r->train_seconds;
        snprintf(mem->digest, sizeof mem->digest, "%s", r->param_digest ? r->param_digest : "");
        break;
    case TESSERA__KIND__KIND_CKPT_DONE:
        checkpoint_part(s, h->clock, r, ckpt_from_ps, h->sender, h->error_message);
        break;
    default: break;
    }
    Tessera__Header ok;
    wire_header_init(&ok, TESSERA__KIND__KIND_OK);
    ok.request_id = h->request_id;
    ok.stop_requested = program_stop_requested != 0;
    ok.checkpoint_requested = program_checkpoint_requested != 0;
    /* A request stays set until a checkpoint commits: workers told of one not committed yet take it as
     * served, unless that one was abandoned. */
    ok.last_checkpoint = s->last_ckpt > s->newest_abandoned ? s->last_ckpt : s->newest_abandoned;
    wire_send(s->router, &m.identity, &ok, NULL, 0);
    wire_msg_free(&m);
}

static void check_liveness(sched_t *s) {
    double t = now_s(), limit = s->cfg->timeout_s;
    for (int i = 0; i < s->cl->n_ps; i++) {
        member_t *m = &s->shards[i];
        if (!m->warned && t - m->last_seen > limit) {
            log_warn("no heartbeat from shard %d for %.0f s", i, t - m->last_seen);
            m->warned = 1;
        }
    }
}

/* Asks every shard to stop, or with serve_version to serve its parameters as that version, and waits
 * for the acknowledgements. */
static void stop_shards(sched_t *s, void *zctx, uint64_t serve_version) {
    int n = s->cl->n_ps, acked = 0;
    void **socks = XCALLOC((size_t)n, sizeof *socks);
    for (int k = 0; k < n; k++) {
        socks[k] = zmq_socket(zctx, ZMQ_DEALER);
        int linger = 0;
        zmq_setsockopt(socks[k], ZMQ_LINGER, &linger, sizeof linger);
        zmq_connect(socks[k], s->cl->ps_endpoints[k]);
        Tessera__Header h;
        wire_header_init(&h, serve_version ? TESSERA__KIND__KIND_SERVE : TESSERA__KIND__KIND_SHUTDOWN);
        h.request_id = (uint64_t)k + 1;
        h.model_version = serve_version;
        h.role = "scheduler";
        wire_send(socks[k], NULL, &h, NULL, 0);
    }
    double deadline = now_s() + 10;
    for (int k = 0; k < n; k++) {
        zmq_pollitem_t it = {socks[k], 0, ZMQ_POLLIN, 0};
        long ms = (long)((deadline - now_s()) * 1000);
        if (ms > 0 && zmq_poll(&it, 1, ms) == 1) {
            wire_msg_t m;
            Tessera__ErrorCode code;
            char err[256];
            if (wire_recv(socks[k], 0, 1 << 20, &m, &code, err, sizeof err) == 0 &&
                m.hdr->kind == TESSERA__KIND__KIND_OK)
                acked++;
            wire_msg_free(&m);
        }
        zmq_close(socks[k]);
    }
    free(socks);
    if (acked != n) log_warn("only %d of %d shards acknowledged shutdown", acked, n);
}

static int write_summary(sched_t *s, double wall) {
    uint64_t ex = total_examples(s);
    double train_s = 0;
    for (int i = 0; i < s->cl->n_workers; i++)
        if (s->workers[i].train_seconds > train_s) train_s = s->workers[i].train_seconds;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "job", s->cfg->name);
    cJSON_AddStringToObject(j, "tessera_version", TESSERA_VERSION);
    cJSON_AddNumberToObject(j, "test_accuracy", s->test_accuracy);
    cJSON_AddNumberToObject(j, "test_loss", s->test_loss);
    if (s->has_auc) {
        cJSON_AddNumberToObject(j, "test_auc", s->test_auc);
        cJSON_AddNumberToObject(j, "test_logloss", s->test_logloss);
    }
    cJSON_AddNumberToObject(j, "data_skipped", (double)s->data_skipped);
    cJSON_AddNumberToObject(j, "train_examples_per_sec", train_s > 0 ? (double)ex / train_s : 0);
    cJSON_AddNumberToObject(j, "train_examples", (double)ex);
    cJSON_AddNumberToObject(j, "train_seconds", train_s);
    cJSON_AddNumberToObject(j, "epochs", s->epochs_done);
    cJSON_AddNumberToObject(j, "steps", (double)min_step(s));
    cJSON_AddNumberToObject(j, "wall_s", wall);
    cJSON_AddNumberToObject(j, "workers", s->cl->n_workers);
    cJSON_AddNumberToObject(j, "servers", s->cl->n_ps);
    if (s->cfg->staleness == CFG_STALENESS_INF)
        cJSON_AddStringToObject(j, "staleness", "inf");
    else
        cJSON_AddNumberToObject(j, "staleness", s->cfg->staleness);
    cJSON_AddStringToObject(j, "consistency",
                            s->cfg->staleness == 0                   ? "bsp"
                            : s->cfg->staleness == CFG_STALENESS_INF ? "asp"
                                                                     : "ssp");
    cJSON_AddNumberToObject(j, "batch_size", s->cfg->batch_size);
    cJSON_AddStringToObject(j, "optimizer", s->cfg->opt_type);
    cJSON_AddNumberToObject(j, "seed", (double)s->cfg->seed);
    cJSON_AddStringToObject(j, "param_digest", s->workers[0].digest);
    cJSON_AddNumberToObject(j, "checkpoints", s->ckpts_written);
    cJSON_AddNumberToObject(j, "last_checkpoint_step", (double)s->last_ckpt);
    cJSON_AddNumberToObject(j, "checkpoint_bytes", s->ckpt_bytes);
    cJSON_AddNumberToObject(j, "checkpoint_write_s", s->ckpt_write_s);
    cJSON_AddNumberToObject(j, "checkpoint_stall_s", s->ckpt_stall_s);
    cJSON_AddBoolToObject(j, "stopped_for_requeue", s->stopped);
    if (s->resumed_from[0]) cJSON_AddStringToObject(j, "resumed_from", s->resumed_from);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) {
        log_error("cannot format summary.json (out of memory)");
        return -TS_ENOMEM;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/summary.json", s->run_dir);
    size_t len = strlen(text);
    text[len] = '\n'; /* cJSON_Print's buffer holds the terminator, so this stays in bounds */
    int rc = write_file_atomic(path, text, len + 1);
    if (rc) log_error("cannot write %s: %s", path, strerror(errno));
    cJSON_free(text);
    return rc;
}

int scheduler_run(const job_config_t *cfg, const cluster_t *cl, void *zctx, void *router, const char *run_dir,
                  const char *resume_dir) {
    sched_t s = {.cfg = cfg, .cl = cl, .run_dir = run_dir, .router = router};
    ckpt_root(run_dir, cfg, s.ckpt_root, sizeof s.ckpt_root);
    if (resume_dir) snprintf(s.resumed_from, sizeof s.resumed_from, "%s", resume_dir);
    s.workers = XCALLOC((size_t)cl->n_workers, sizeof *s.workers);
    s.shards = XCALLOC((size_t)cl->n_ps, sizeof *s.shards);
    s.t_start = s.last_print = now_s();
    for (int i = 0; i < cl->n_ps; i++)
        s.shards[i].last_seen = s.t_start;
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics.csv", run_dir);
    struct stat st;
    int append = resume_dir && stat(path, &st) == 0 && st.st_size > 0; /* a resumed job continues the file */
    s.metrics = fopen(path, append ? "a" : "w");
    if (!s.metrics)
        log_error("cannot write %s: %s", path, strerror(errno));
    else if (!append)
        fprintf(s.metrics, "epoch,step,train_loss,train_accuracy,test_loss,test_accuracy,examples_per_sec,"
                           "epoch_train_s,wall_s\n");
    log_info("job started job=%s workers=%d servers=%d staleness=%d run_dir=%s", cfg->name, cl->n_workers,
             cl->n_ps, cfg->staleness, run_dir);
    if (cfg->metrics_listen[0]) {
        char err[512];
        s.started_unix = unix_s();
        if (!(s.http = metrics_http_start(cfg->metrics_listen, err, sizeof err)))
            log_warn("%s; training goes on without it", err); /* a busy port must not cost the job */
        else
            log_info("job metrics endpoint=http://%s/metrics", cfg->metrics_listen);
    }

    double done_at = 0;
    for (;;) {
        /* Run until every worker is done and no checkpoint is half written (shards finish theirs in
         * the background), but never wait on a checkpoint longer than the network timeout. */
        if (s.n_done == cl->n_workers) {
            if (done_at == 0) done_at = now_s();
            if (!ckpts_open(&s)) break;
            if (now_s() - done_at > cfg->timeout_s) {
                log_error(
                    "a checkpoint was still incomplete %.0f s after training ended; it is not committed",
                    cfg->timeout_s);
                break;
            }
        }
        zmq_pollitem_t it = {router, 0, ZMQ_POLLIN, 0};
        long ms = (long)(cfg->progress_interval_s * 1000 / 4);
        if (zmq_poll(&it, 1, ms > 0 ? ms : 1) < 0 && zmq_errno() != EINTR) {
            log_error("zmq_poll failed error=\"%s\"", zmq_strerror(zmq_errno()));
            break;
        }
        if (it.revents & ZMQ_POLLIN) handle(&s);
        if (now_s() - s.last_print >= cfg->progress_interval_s) print_progress(&s);
        if (s.http && now_s() >= s.next_publish) {
            publish_metrics(&s);
            s.next_publish = now_s() + METRICS_EVERY_S;
        }
        check_liveness(&s);
        expire_checkpoints(&s);
    }
    double wall = now_s() - s.t_start;
    /* tessera train --serve: a job that ran to the end keeps its shards, which serve what it trained. */
    int serve = cfg->serve_enabled && !s.stopped && !s.stop_failed && !program_stop_requested;
    uint64_t version = (uint64_t)(min_step(&s) > 0 ? min_step(&s) : 1);
    if (s.http) publish_metrics(&s); /* the final figures, until the scheduler exits */
    stop_shards(&s, zctx, serve ? version : 0);
    int rc = write_summary(&s, wall);
    for (int i = 1; i < cl->n_workers; i++)
        if (strcmp(s.workers[i].digest, s.workers[0].digest) && cfg->staleness == 0)
            log_warn("worker %d ended with different parameters than worker 0 (BSP should agree)", i);
    if (s.has_auc) log_info("training finished test_auc=%.4f test_logloss=%.4f", s.test_auc, s.test_logloss);
    log_info("training finished test_accuracy=%.4f epochs=%d steps=%lld wall_s=%.1f summary=%s/summary.json",
             s.test_accuracy, s.epochs_done, (long long)min_step(&s), wall, run_dir);
    if (s.metrics) fclose(s.metrics);
    metrics_http_stop(s.http);
    free(s.workers);
    free(s.shards);
    if (!rc && s.stop_failed && !s.stopped) {
        log_error(
            "the job was asked to stop, but its checkpoint %lld failed (see above); the newest committed "
            "checkpoint is step %lld",
            (long long)s.stop_failed, (long long)s.last_ckpt);
        return -TS_EIO;
    }
    if (!rc && s.stopped) {
        log_info("job stopped after checkpoint step=%lld; exit status %d asks for a requeue",
                 (long long)s.last_ckpt, CKPT_EXIT_REQUEUE);
        return CKPT_EXIT_REQUEUE;
    }
    if (!rc && serve) {
        router_config_t rc_cfg = {.opts = cfg,
                                  .n_shards = cl->n_ps,
                                  .n_replicas = 1,
                                  .shard_endpoints = NULL,
                                  .ckpt_root = NULL,
                                  .model_name = NULL,
                                  .initial_version = version,
                                  .initial_job = cfg,
                                  .role = "scheduler",
                                  .shutdown_shards = 1,
                                  .stop_flag = &program_stop_requested};
        char **eps = XCALLOC((size_t)cl->n_ps, sizeof *eps);
        for (int k = 0; k < cl->n_ps; k++)
            eps[k] = (char *)cl->ps_endpoints[k];
        rc_cfg.shard_endpoints = eps;
        log_info("serving the trained model version=%llu endpoint=%s (stop with SIGTERM or Ctrl-C)",
                 (unsigned long long)version, cfg->serve_listen);
        rc = router_run(&rc_cfg, zctx);
        free(eps);
    }
    return rc;
}
