/* Job files: INI (parsed by libinih) plus `section.key=value` overrides from the command line. */
#ifndef TESSERA_CONFIG_H
#define TESSERA_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CFG_MAX_LAYERS    64
#define CFG_STR           256
#define CFG_STALENESS_INF (-1)

#define CFG_MAX_INPUTS 8

typedef struct {
    char name[32];
    char type[32]; /* linear, relu, softmax_xent, embedding_bag, concat, dot, sigmoid_bce */
    int out;       /* linear: output features */
    /* Inputs by layer name ("input" = the model's dense input); empty = the previous layer's output. */
    int n_inputs;
    char inputs[CFG_MAX_INPUTS][32];
    /* embedding_bag */
    int slot_begin, slot_end; /* features = A or A-B: categorical slots [slot_begin, slot_end) of the data */
    int dim;                  /* floats per row */
    uint64_t rows;            /* 0: any id, rows created on first touch; N: ids < N, tables pre-sized */
    char mode[8];             /* sum (default) or mean */
    char optimizer[16];       /* the tables' optimizer ("" = the job's [optimizer] type) */
    double lr;                /* its learning rate (0 = the job's) */
    double init;              /* rows start U(-init, init) (0 = 0.05) */
    /* linear: 1 = model-parallel (parallel = model): the weight stays on the shards, which compute the
     * layer's products; 0 = data-parallel (every worker pulls it) */
    int model_parallel;
} layer_cfg_t;

typedef struct {
    char path[CFG_STR];

    /* [job] */
    char name[64];
    uint64_t seed;
    int epochs;
    int batch_size; /* per worker */
    int staleness;  /* 0 = BSP, k = SSP, CFG_STALENESS_INF = ASP */
    long max_steps; /* 0 = no limit; stops the job early (tests) */
    double progress_interval_s;
    int save_test_logits; /* write the test set's logits to RUN_DIR/test-logits-*.f32 at each evaluation */
    int node_reduce;      /* workers of a node reduce gradients among themselves; each pushes a share */

    /* [data] */
    char data_format[16];                         /* idx, criteo or libsvm */
    char train_file[CFG_STR], test_file[CFG_STR]; /* criteo / libsvm, relative to dir */
    int dense_features, sparse_features;          /* criteo / libsvm columns */
    char on_error[8];                             /* malformed lines: fail or skip */
    char data_dir[CFG_STR];
    char train_images[CFG_STR], train_labels[CFG_STR];
    char test_images[CFG_STR], test_labels[CFG_STR];
    long train_limit, test_limit; /* 0 = all */
    double mean, std;

    /* [optimizer] */
    char opt_type[16]; /* sgd, momentum, adam, adamw, adagrad */
    double lr, beta1, beta2, eps, momentum, weight_decay;

    /* [ps] */
    double memory_mb;   /* a shard's budget for parameters and optimizer state (0 = no limit) */
    char ps_device[16]; /* cpu, or cuda: the shard steps its dense slices on a GPU (cpu-staged: tests) */

    /* [backend] */
    char backend[16];
    int threads;

    /* [net] */
    double timeout_s;
    long max_message_mb;
    char interface[32];
    double push_bucket_mb; /* gradients go out in parts of at least this while backward runs (0 = one push) */
    char grad_dtype[8];    /* f32, or bf16: dense gradients cross to the shards rounded to bfloat16 */
    char param_dtype[8];   /* f32, or bf16: workers get parameters rounded to bfloat16 (shards keep f32) */
    char local_exchange[8]; /* auto: shards on a worker's host read and write its exchange region, not the
                               wire; off */

    /* [checkpoint] */
    long ckpt_every_steps;     /* 0 = off */
    double ckpt_every_seconds; /* 0 = off */
    int ckpt_keep;             /* complete checkpoints kept */
    char ckpt_dir[CFG_STR];    /* empty = RUN_DIR/checkpoints */
    int ckpt_direct_io;        /* shard files' large datasets skip the page cache (O_DIRECT) */

    /* [serve]: serving (tessera serve, tessera train --serve) */
    int serve_enabled;                  /* train --serve: the shards serve after training */
    char serve_listen[CFG_STR];         /* the router's client endpoint */
    char serve_metrics_listen[CFG_STR]; /* HOST:PORT of the router's HTTP /metrics, /healthz, /readyz ("" =
                                           none) */
    char metrics_listen[CFG_STR]; /* job.metrics_listen: HOST:PORT of the scheduler's training /metrics */
    char serve_model[64];         /* the served model's name (default: [job] name) */
    char serve_versions[CFG_STR]; /* policy: latest, latest:K, or a list of steps N,M */
    int serve_max_batch;          /* rows per batch */
    int serve_max_delay_us;       /* longest a request waits for a batch to fill (0: run what is queued) */
    int serve_max_queue;          /* requests queued at the router; more get RESOURCE_EXHAUSTED */
    int serve_deadline_ms;        /* a request's deadline when it sets none */
    double serve_cache_mb;        /* dense parameters up to this size are cached at the router */
    double serve_poll_s;          /* how often the checkpoint directory is scanned */
    long serve_max_request_mb;    /* larger requests get RESOURCE_EXHAUSTED */
    int serve_replica_timeout_ms; /* a shard replica silent this long is failed over */
    int serve_threads;            /* BLAS threads of the router and each serving shard */

    /* the job file's text, stored in every checkpoint */
    char text[32768];

    /* [model] and [layer NAME] sections, in file order */
    int input_dim;
    int n_layers;
    layer_cfg_t layers[CFG_MAX_LAYERS];
} job_config_t;

/* Fills `cfg` with the built-in defaults (no layers). */
void config_defaults(job_config_t *cfg);

/* Parses the INI file at `path` on top of the defaults. Returns 0, or -TS_EINVAL / -TS_EIO with a
 * message naming the file, line and key in `err`. */
int config_load(job_config_t *cfg, const char *path, char *err, size_t errlen);

/* Parses job text (as stored in a checkpoint) on top of the defaults, then re-applies the
 * overrides recorded in it (`; override section.key=value` lines) and validates. `origin` names the
 * text in messages. 0 or -TS_EINVAL. */
int config_load_text(job_config_t *cfg, const char *text, const char *origin, char *err, size_t errlen);

/* Applies one `section.key=value` override (e.g. `job.epochs=3`). Returns 0 or -TS_EINVAL. */
int config_apply_override(job_config_t *cfg, const char *assignment, char *err, size_t errlen);

/* Checks cross-field constraints after loading and overrides. Returns 0 or -TS_EINVAL. */
int config_validate(const job_config_t *cfg, char *err, size_t errlen);

/* Checks [serve] versions: `latest`, `latest:K` (K >= 1) or a list of steps `N,M,...`. 0, or -TS_EINVAL
 * with a message. */
int config_check_serve(const job_config_t *cfg, char *err, size_t errlen);

/* Loads `path`, applies `argc` overrides from `argv` and validates: the common start of every program. */
int config_load_all(job_config_t *cfg, const char *path, int argc, char **argv, char *err, size_t errlen);

#endif
