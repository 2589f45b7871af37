#include "train.h"

#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "backend.h"
#include "check.h"
#include "ckpt.h"
#include "data.h"
#include "model.h"
#include "program.h"
#include "ps_client.h"
#include "util.h"
#include "wire.h"

#define EVAL_BATCH 1000

typedef struct {
    const job_config_t *cfg;
    const cluster_t *cl;
    void *zctx, *sched;
    int outstanding; /* scheduler requests not yet acknowledged */
    int sched_stop;  /* the scheduler was asked to stop the job */
    int sched_ckpt;  /* the scheduler was asked for a checkpoint */
    uint64_t next_request;
} worker_t;

static int sched_send(worker_t *w, Tessera__Kind kind, Tessera__Report *rep) {
    Tessera__Header h;
    wire_header_init(&h, kind);
    h.request_id = ++w->next_request;
    h.sender = w->cl->index;
    h.role = "worker";
    h.report = rep;
    w->outstanding++;
    return wire_send(w->sched, NULL, &h, NULL, 0);
}

/* Collects the scheduler's acknowledgements; with `block`, all of them (or until the timeout). */
static void sched_drain(worker_t *w, int block) {
    double deadline = now_s() + w->cfg->timeout_s;
    while (w->outstanding > 0) {
        zmq_pollitem_t it = {w->sched, 0, ZMQ_POLLIN, 0};
        long ms = block ? (long)((deadline - now_s()) * 1000) : 0;
        if (block && ms <= 0) {
            log_warn("scheduler did not acknowledge %d reports", w->outstanding);
            return;
        }
        if (zmq_poll(&it, 1, ms) <= 0) {
            if (!block) return;
            continue;
        }
        wire_msg_t m;
        Tessera__ErrorCode code;
        char err[256];
        if (wire_recv(w->sched, 0, 1 << 20, &m, &code, err, sizeof err) == 0 && m.hdr->stop_requested)
            w->sched_stop = 1;
        if (m.hdr && m.hdr->checkpoint_requested) w->sched_ckpt = 1;
        if (m.hdr && m.hdr->kind == TESSERA__KIND__KIND_ERROR)
            log_warn("scheduler error=%s detail=\"%s\"", wire_error_name(m.hdr->error_code),
                     m.hdr->error_message);
        wire_msg_free(&m);
        w->outstanding--;
    }
}

/* Evaluates rows [begin, end) of `test`; adds loss sum, correct and count into acc[0..2]. With
 * `logits` (job.save_test_logits), also writes each row's logits there as float32. */
static void evaluate(model_t *m, const dataset_t *test, size_t begin, size_t end, const job_config_t *cfg,
                     float *xb, int32_t *yb, uint32_t *idx, double acc[3], FILE *logits) {
    float *host = logits ? XMALLOC((size_t)EVAL_BATCH * (size_t)m->spec.classes * sizeof(float)) : NULL;
    for (size_t i = begin; i < end; i += EVAL_BATCH) {
        size_t n = end - i < EVAL_BATCH ? end - i : EVAL_BATCH;
        for (size_t j = 0; j < n; j++)
            idx[j] = (uint32_t)(i + j);
        dataset_gather(test, idx, n, (float)cfg->mean, (float)cfg->std, xb, yb);
        long correct = 0;
        model_run(m, xb, yb, (int)n, 0, &acc[0], &correct);
        acc[1] += (double)correct;
        acc[2] += (double)n;
        if (logits) {
            size_t bytes = n * (size_t)m->spec.classes * sizeof(float);
            m->be->ops->to_host(m->be, host, m->act[m->spec.n_layers - 1], bytes);
            m->be->ops->sync(m->be);
            if (fwrite(host, 1, bytes, logits) != bytes) log_warn("cannot write test logits");
        }
    }
    free(host);
}

static int load_data(const job_config_t *cfg, int classes, dataset_t *train, dataset_t *test) {
    char ti[2 * CFG_STR + 2], tl[2 * CFG_STR + 2], vi[2 * CFG_STR + 2], vl[2 * CFG_STR + 2], err[1024];
    snprintf(ti, sizeof ti, "%s/%s", cfg->data_dir, cfg->train_images);
    snprintf(tl, sizeof tl, "%s/%s", cfg->data_dir, cfg->train_labels);
    snprintf(vi, sizeof vi, "%s/%s", cfg->data_dir, cfg->test_images);
    snprintf(vl, sizeof vl, "%s/%s", cfg->data_dir, cfg->test_labels);
    int rc = idx_load(train, ti, tl, cfg->train_limit, classes, err, sizeof err);
    if (!rc) rc = idx_load(test, vi, vl, cfg->test_limit, classes, err, sizeof err);
    if (rc) log_error("cannot load data: %s (set [data] dir or data.dir=DIR)", err);
    return rc;
}

/* Worker 0 decides where checkpoints are cut: on the job's schedule, or when a signal asked. The
 * request rides on its push of iteration `clock`; the cut is at clock + 1. */
static int plan_checkpoint(ps_client_t *pc, const job_config_t *cfg, int64_t clock, double *last_ckpt,
                           int asked, int stop) {
    int64_t next = clock + 1;
    int due = (cfg->ckpt_every_steps > 0 && next % cfg->ckpt_every_steps == 0) ||
              (cfg->ckpt_every_seconds > 0 && now_s() - *last_ckpt >= cfg->ckpt_every_seconds) || asked ||
              stop;
    if (!due) return 0;
    pc->ckpt_request = next;
    pc->ckpt_request_stop = stop;
    *last_ckpt = now_s();
    log_info("checkpoint requested step=%lld reason=%s", (long long)next,
             stop    ? "stop signal"
             : asked ? "SIGUSR2"
                     : "schedule");
    return 1;
}

/* Writes this worker's part of checkpoint `step` and tells the scheduler. */
static void save_state(worker_t *w, const char *root, int64_t step, const ckpt_worker_state_t *st, int stop) {
    char dir[4096], err[1024];
    ckpt_step_dir(root, step, dir, sizeof dir);
    double t0 = now_s();
    int rc = mkdir_p(dir);
    if (!rc)
        rc = ckpt_write_worker(dir, w->cl->index, st, err, sizeof err);
    else
        snprintf(err, sizeof err, "cannot create the checkpoint directory: %s", strerror(errno));
    if (rc) log_error("checkpoint %lld: worker state not written: %s", (long long)step, err);
    Tessera__Report rep;
    tessera__report__init(&rep);
    rep.ckpt_failed = rc != 0;
    rep.ckpt_seconds = now_s() - t0;
    rep.ckpt_stall_seconds = rep.ckpt_seconds;
    rep.ckpt_stop = stop;
    Tessera__Header h;
    wire_header_init(&h, TESSERA__KIND__KIND_CKPT_DONE);
    h.request_id = ++w->next_request;
    h.sender = w->cl->index;
    h.clock = step;
    h.role = "worker";
    h.report = &rep;
    h.error_message = rc ? err : "";
    w->outstanding++;
    if (wire_send(w->sched, NULL, &h, NULL, 0))
        log_error("checkpoint %lld: cannot reach the scheduler", (long long)step);
}

/* Where a resumed worker starts: clock, epoch and position from the checkpoint. With another worker
 * count the position is scaled to the new partition (same epoch). */
static int resume_state(const char *dir, int me, int W, size_t spe_new, size_t n_train, int batch,
                        ckpt_worker_state_t *st) {
    char err[1024];
    ckpt_manifest_t m;
    if (ckpt_read_manifest(dir, &m, err, sizeof err) ||
        ckpt_read_worker(dir, m.n_workers == W ? me : 0, st, err, sizeof err)) {
        log_error("cannot resume: %s", err);
        return -TS_EIO;
    }
    st->clock = m.step;
    if (m.n_workers != W) {
        size_t spe_old = n_train / (size_t)m.n_workers / (size_t)batch;
        st->position = spe_old ? (int64_t)((size_t)st->position * spe_new / spe_old) : 0;
        st->examples = st->examples * (uint64_t)m.n_workers / (uint64_t)W;
        log_warn("resuming with %d workers from a checkpoint of %d: epoch %d continues at step %lld of %zu",
                 W, m.n_workers, st->epoch, (long long)st->position, spe_new);
    }
    return 0;
}

int worker_train(const job_config_t *cfg, const cluster_t *cl, const char *run_dir, const char *resume_dir) {
    char err[1024] = "";
    worker_t w = {.cfg = cfg, .cl = cl};
    int W = cl->n_workers, me = cl->index;
    /* A failure before training stops the job at the workers' agreement below; returning early
     * would leave the other ranks waiting for this one. */
    backend_t *be = backend_create(cfg->backend, cfg->threads, err, sizeof err);
    if (!be) {
        log_error("%s", err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    model_t model;
    int max_batch = cfg->batch_size > EVAL_BATCH ? cfg->batch_size : EVAL_BATCH;
    int rc = model_init(&model, cfg, be, max_batch, err, sizeof err);
    if (rc) {
        log_error("%s", err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    dataset_t train = {0}, test = {0};
    rc = load_data(cfg, model.spec.classes, &train, &test);
    if (!rc && (train.dim != model.spec.input_dim || test.dim != model.spec.input_dim)) {
        log_error("data has %d (train) and %d (test) features per example but [model] input = %d", train.dim,
                  test.dim, model.spec.input_dim);
        rc = -TS_EINVAL;
    }
    size_t part = train.n / (size_t)W; /* every worker runs the same number of steps */
    size_t steps_per_epoch = part / (size_t)cfg->batch_size;
    if (!rc && steps_per_epoch == 0) {
        log_error("%zu training examples per worker is less than one batch of %d", part, cfg->batch_size);
        rc = -TS_EINVAL;
    }
    long total_steps = (long)steps_per_epoch * cfg->epochs;
    if (cfg->max_steps > 0 && cfg->max_steps < total_steps) total_steps = cfg->max_steps;

    uint64_t *rows = XCALLOC((size_t)model.spec.n_tensors, sizeof *rows);
    for (int t = 0; t < model.spec.n_tensors; t++)
        rows[t] = model.spec.tensors[t].rows;
    shard_map_t map;
    if (shard_map_init(&map, rows, model.spec.n_tensors, cl->n_ps)) rc = -TS_ENOMEM;
    free(rows);

    w.zctx = zmq_ctx_new();
    w.sched = zmq_socket(w.zctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(w.sched, ZMQ_LINGER, &linger, sizeof linger);
    ps_client_t pc;
    if (!rc) rc = ZMQ_CHECK(zmq_connect(w.sched, cl->sched_endpoint));
    if (!rc)
        rc = ps_client_init(&pc, w.zctx, cl->ps_endpoints, cl->n_ps, &model.spec, &map, me, cfg->timeout_s,
                            (size_t)cfg->max_message_mb << 20, err, sizeof err);
    if (rc && err[0]) log_error("%s", err);
    /* Workers agree before anyone blocks on a shard: a worker that cannot start stops the job. */
    int failed = rc != 0, any = 0;
    MPI_CHECK(MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, cl->role_comm));
    if (any) MPI_Abort(MPI_COMM_WORLD, 1);

    size_t n_floats = model.spec.n_floats;
    float *params = be->host_memory ? model.params : XMALLOC(n_floats * sizeof(float));
    float *grads = be->host_memory ? model.grads : XMALLOC(n_floats * sizeof(float));
    float *xb = XMALLOC((size_t)max_batch * (size_t)model.spec.input_dim * sizeof(float));
    int32_t *yb = XMALLOC((size_t)max_batch * sizeof(int32_t));
    uint32_t *perm = XMALLOC((part > EVAL_BATCH ? part : EVAL_BATCH) * sizeof(uint32_t));
    uint32_t *eval_idx = XMALLOC(EVAL_BATCH * sizeof(uint32_t));

    Tessera__Report rep;
    tessera__report__init(&rep);
    rep.steps_total = (uint64_t)total_steps;
    sched_send(&w, TESSERA__KIND__KIND_HELLO, &rep);
    if (me == 0)
        log_info("training examples=%zu per_worker=%zu batch=%d steps_per_epoch=%zu steps=%ld params=%zu",
                 train.n, part, cfg->batch_size, steps_per_epoch, total_steps, n_floats);

    ckpt_worker_state_t start = {0};
    if (resume_dir && resume_state(resume_dir, me, W, steps_per_epoch, train.n, cfg->batch_size, &start))
        MPI_Abort(MPI_COMM_WORLD, 1);
    if (resume_dir && me == 0)
        log_info("resuming from %s step=%lld epoch=%d position=%lld", resume_dir, (long long)start.clock,
                 start.epoch, (long long)start.position);
    char ckpt_dir[4096];
    ckpt_root(run_dir, cfg, ckpt_dir, sizeof ckpt_dir);
    int64_t clock = start.clock;
    rc = ps_client_pull(&pc, clock, params, err, sizeof err);
    if (!be->host_memory) be->ops->to_device(be, model.params, params, n_floats * sizeof(float));
    double train_seconds = start.train_seconds, last_report = now_s(), compute_s = 0, sync_s = 0;
    double last_ckpt = now_s();
    double win_loss = 0;
    long win_correct = 0, win_count = 0;
    uint64_t examples = start.examples;
    int stopping = 0, stop_planned = 0, warned_async = 0;
    int64_t stop_step = 0;
    /* The resumed epoch always runs: it may have no steps left but still owe its evaluation. */
    for (int epoch = start.epoch;
         !rc && !stopping && epoch < cfg->epochs && (clock < total_steps || epoch == start.epoch); epoch++) {
        rng_t rng;
        rng_seed(&rng, seed_derive(cfg->seed, (uint64_t)me, (uint64_t)epoch));
        for (size_t i = 0; i < part; i++)
            perm[i] = (uint32_t)((size_t)me * part + i);
        rng_shuffle_u32(&rng, perm, part);
        double ep_loss = 0, t0 = now_s();
        long ep_correct = 0, ep_count = 0;
        size_t first = epoch == start.epoch ? (size_t)start.position : 0;
        for (size_t s = first; s < steps_per_epoch && clock < total_steps && !stopping; s++) {
            int B = cfg->batch_size;
            dataset_gather(&train, perm + s * (size_t)B, (size_t)B, (float)cfg->mean, (float)cfg->std, xb,
                           yb);
            double loss = 0, tc = now_s();
            long correct = 0;
            model_run(&model, xb, yb, B, 1, &loss, &correct);
            double tp = now_s();
            compute_s += tp - tc;
            if (!be->host_memory) be->ops->to_host(be, grads, model.grads, n_floats * sizeof(float));
            /* Worker 0 cuts checkpoints; a request or a stop asked of any rank reaches it through the
             * shards' replies or the scheduler's acknowledgements. A stop checkpoint is asked for once. */
            pc.stop_requested = program_stop_requested != 0;
            if (me != 0 && program_checkpoint_requested) { /* relay it to worker 0 through the shards */
                pc.ckpt_asked = 1;
                program_checkpoint_requested = 0;
            }
            int asked = program_checkpoint_requested || pc.peer_ckpt || w.sched_ckpt;
            int stop_asked = program_stop_requested || pc.peer_stop || w.sched_stop;
            if (cfg->staleness != 0 && (asked || stop_asked) && !warned_async) {
                log_warn(
                    "a checkpoint was asked for, but SSP/ASP jobs cannot checkpoint yet (job.staleness = 0 "
                    "can); training goes on");
                warned_async = 1;
            }
            if (me == 0 && cfg->staleness == 0 &&
                plan_checkpoint(&pc, cfg, clock, &last_ckpt, asked, !stop_planned && stop_asked)) {
                program_checkpoint_requested = 0;
                pc.peer_ckpt = w.sched_ckpt = 0;
                stop_planned |= pc.ckpt_request_stop;
            }
            rc = ps_client_push_pull(&pc, clock, grads, params, err, sizeof err);
            pc.ckpt_request = 0;
            pc.ckpt_request_stop = 0;
            pc.ckpt_asked = 0;
            if (rc) break;
            sync_s += now_s() - tp;
            if (!be->host_memory) be->ops->to_device(be, model.params, params, n_floats * sizeof(float));
            clock++;
            examples += (uint64_t)B;
            if (pc.ckpt_announced > 0) {
                ckpt_worker_state_t st = {.clock = clock,
                                          .epoch = epoch,
                                          .position = (int64_t)s + 1,
                                          .examples = examples,
                                          .train_seconds = train_seconds + (now_s() - t0)};
                save_state(&w, ckpt_dir, pc.ckpt_announced, &st, pc.ckpt_announced_stop);
                stopping = pc.ckpt_announced_stop;
                if (stopping) stop_step = pc.ckpt_announced;
                pc.ckpt_announced = 0;
                pc.ckpt_announced_stop = 0;
            }
            ep_loss += loss;
            ep_correct += correct;
            ep_count += B;
            win_loss += loss;
            win_correct += correct;
            win_count += B;
            double t = now_s();
            if (t - last_report >= cfg->progress_interval_s / 2) {
                rep.epoch = (uint32_t)epoch;
                rep.step = (uint64_t)clock;
                rep.examples = examples;
                rep.loss_sum = win_loss;
                rep.correct = (uint64_t)win_correct;
                rep.count = (uint64_t)win_count;
                rep.train_seconds = train_seconds + (t - t0);
                sched_send(&w, TESSERA__KIND__KIND_REPORT, &rep);
                sched_drain(&w, 0);
                win_loss = 0;
                win_correct = win_count = 0;
                last_report = t;
            }
        }
        if (rc) break;
        double ep_seconds = now_s() - t0;
        train_seconds += ep_seconds;

        /* Every worker joins this reduction once per epoch it entered, stopping or not, so a stop that
         * reaches workers at different points (SSP/ASP) cannot leave one waiting here forever. It
         * carries the evaluation counts, the slowest epoch time and whether anyone is stopping. */
        double local[6] = {ep_loss, (double)ep_correct, (double)ep_count, 0, 0, 0}, global[6];
        double lmax[3] = {ep_seconds, stopping, (double)stop_step}, gmax[3];
        size_t tb = test.n * (size_t)me / (size_t)W, te = test.n * (size_t)(me + 1) / (size_t)W;
        FILE *logits = NULL;
        char lpath[4200];
        if (cfg->save_test_logits && !stopping) {
            /* The last epoch's file stays: the test logits of the trained model, rows [tb, te). */
            snprintf(lpath, sizeof lpath, "%s/test-logits-%09zu-%09zu.f32", run_dir, tb, te);
            if (!(logits = fopen(lpath, "wb"))) log_warn("cannot write %s: %s", lpath, strerror(errno));
        }
        if (!stopping) evaluate(&model, &test, tb, te, cfg, xb, yb, eval_idx, local + 3, logits);
        if (logits) fclose(logits);
        MPI_CHECK(MPI_Allreduce(local, global, 6, MPI_DOUBLE, MPI_SUM, cl->role_comm));
        MPI_CHECK(MPI_Allreduce(lmax, gmax, 3, MPI_DOUBLE, MPI_MAX, cl->role_comm));
        if (gmax[1] > 0) {
            if (!stopping) { /* finished the epoch before the announcement reached it */
                ckpt_worker_state_t st = {.clock = clock,
                                          .epoch = epoch + 1,
                                          .position = 0,
                                          .examples = examples,
                                          .train_seconds = train_seconds};
                save_state(&w, ckpt_dir, (int64_t)gmax[2], &st, 1);
            }
            stopping = 1;
            break;
        }
        if (me == 0) {
            rep.epoch = (uint32_t)epoch + 1;
            rep.step = (uint64_t)clock;
            rep.examples = (uint64_t)global[2];
            rep.loss_sum = global[0];
            rep.correct = (uint64_t)global[1];
            rep.count = (uint64_t)global[2];
            rep.train_seconds = gmax[0];
            rep.test_loss = global[5] > 0 ? global[3] / global[5] : 0;
            rep.test_accuracy = global[5] > 0 ? global[4] / global[5] : 0;
            sched_send(&w, TESSERA__KIND__KIND_EPOCH, &rep);
            sched_drain(&w, 0);
        }
    }
    if (rc) {
        log_error("training failed at clock=%lld: %s", (long long)clock, err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }

    char digest[17];
    if (!be->host_memory) be->ops->to_host(be, params, model.params, n_floats * sizeof(float));
    digest_hex(params, n_floats * sizeof(float), digest);
    if (me == 0 && !stopping) {
        char path[4096];
        snprintf(path, sizeof path, "%s/params.bin", run_dir);
        if (write_file_atomic(path, params, n_floats * sizeof(float)))
            log_error("cannot write %s: %s", path, strerror(errno));
    }
    tessera__report__init(&rep);
    rep.step = (uint64_t)clock;
    rep.examples = examples;
    rep.train_seconds = train_seconds;
    rep.steps_total = (uint64_t)total_steps;
    rep.param_digest = digest;
    sched_send(&w, TESSERA__KIND__KIND_DONE, &rep);
    sched_drain(&w, 1);
    log_info("worker done steps=%lld examples=%llu train_s=%.2f compute_s=%.2f sync_s=%.2f sent_mb=%.1f "
             "received_mb=%.1f",
             (long long)clock, (unsigned long long)examples, train_seconds, compute_s, sync_s,
             (double)pc.bytes_sent / 1e6, (double)pc.bytes_received / 1e6);

    ps_client_free(&pc);
    zmq_close(w.sched);
    zmq_ctx_term(w.zctx);
    shard_map_free(&map);
    if (!be->host_memory) {
        free(params);
        free(grads);
    }
    free(xb);
    free(yb);
    free(perm);
    free(eval_idx);
    dataset_free(&train);
    dataset_free(&test);
    model_free(&model);
    backend_free(be);
    return 0;
}
