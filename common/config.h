/* Job files: INI (parsed by libinih) plus `section.key=value` overrides from the command line. */
#ifndef TESSERA_CONFIG_H
#define TESSERA_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CFG_MAX_LAYERS    64
#define CFG_STR           256
#define CFG_STALENESS_INF (-1)

typedef struct {
    char name[32];
    char type[32]; /* linear, relu, softmax_xent */
    int out;       /* linear: output features */
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

    /* [data] */
    char data_format[16];
    char data_dir[CFG_STR];
    char train_images[CFG_STR], train_labels[CFG_STR];
    char test_images[CFG_STR], test_labels[CFG_STR];
    long train_limit, test_limit; /* 0 = all */
    double mean, std;

    /* [optimizer] */
    char opt_type[16]; /* sgd, momentum, adam, adamw, adagrad */
    double lr, beta1, beta2, eps, momentum, weight_decay;

    /* [backend] */
    char backend[16];
    int threads;

    /* [net] */
    double timeout_s;
    long max_message_mb;
    char interface[32];

    /* [checkpoint] */
    long ckpt_every_steps;     /* 0 = off */
    double ckpt_every_seconds; /* 0 = off */
    int ckpt_keep;             /* complete checkpoints kept */
    char ckpt_dir[CFG_STR];    /* empty = RUN_DIR/checkpoints */

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

/* Applies one `section.key=value` override (e.g. `job.epochs=3`). Returns 0 or -TS_EINVAL. */
int config_apply_override(job_config_t *cfg, const char *assignment, char *err, size_t errlen);

/* Checks cross-field constraints after loading and overrides. Returns 0 or -TS_EINVAL. */
int config_validate(const job_config_t *cfg, char *err, size_t errlen);

/* Loads `path`, applies `argc` overrides from `argv` and validates: the common start of every program. */
int config_load_all(job_config_t *cfg, const char *path, int argc, char **argv, char *err, size_t errlen);

#endif
