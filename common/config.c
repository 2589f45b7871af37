#include "config.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "check.h"

typedef enum { T_INT, T_LONG, T_U64, T_DOUBLE, T_STR, T_STALENESS } field_type_t;

typedef struct {
    const char *section;
    const char *key;
    field_type_t type;
    size_t offset;
    size_t size; /* T_STR: buffer size */
    double min, max;
} field_t;

#define F(sec, key, type, member, lo, hi)                                                                    \
    { sec, key, type, offsetof(job_config_t, member), sizeof(((job_config_t *)0)->member), lo, hi }

static const field_t fields[] = {
    F("job", "name", T_STR, name, 0, 0),
    F("job", "seed", T_U64, seed, 0, 0),
    F("job", "epochs", T_INT, epochs, 1, 100000),
    F("job", "batch_size", T_INT, batch_size, 1, 1 << 20),
    F("job", "staleness", T_STALENESS, staleness, 0, 1 << 30),
    F("job", "metrics_listen", T_STR, metrics_listen, 0, 0),
    F("job", "max_steps", T_LONG, max_steps, 0, 1e15),
    F("job", "progress_interval_s", T_DOUBLE, progress_interval_s, 0.05, 3600),
    F("job", "save_test_logits", T_INT, save_test_logits, 0, 1),
    F("job", "node_reduce", T_INT, node_reduce, 0, 1),
    F("data", "format", T_STR, data_format, 0, 0),
    F("data", "dir", T_STR, data_dir, 0, 0),
    F("data", "train_images", T_STR, train_images, 0, 0),
    F("data", "train_labels", T_STR, train_labels, 0, 0),
    F("data", "test_images", T_STR, test_images, 0, 0),
    F("data", "test_labels", T_STR, test_labels, 0, 0),
    F("data", "train", T_STR, train_file, 0, 0),
    F("data", "test", T_STR, test_file, 0, 0),
    F("data", "dense_features", T_INT, dense_features, 0, 4096),
    F("data", "sparse_features", T_INT, sparse_features, 0, 4096),
    F("data", "on_error", T_STR, on_error, 0, 0),
    F("ps", "memory_mb", T_DOUBLE, memory_mb, 0, 1e9),
    F("ps", "device", T_STR, ps_device, 0, 0),
    F("data", "train_limit", T_LONG, train_limit, 0, 1e12),
    F("data", "test_limit", T_LONG, test_limit, 0, 1e12),
    F("data", "mean", T_DOUBLE, mean, -1e6, 1e6),
    F("data", "std", T_DOUBLE, std, 1e-9, 1e6),
    F("optimizer", "type", T_STR, opt_type, 0, 0),
    F("optimizer", "lr", T_DOUBLE, lr, 0, 1e6),
    F("optimizer", "beta1", T_DOUBLE, beta1, 0, 0.999999),
    F("optimizer", "beta2", T_DOUBLE, beta2, 0, 0.99999999),
    F("optimizer", "eps", T_DOUBLE, eps, 0, 1),
    F("optimizer", "momentum", T_DOUBLE, momentum, 0, 0.999999),
    F("optimizer", "weight_decay", T_DOUBLE, weight_decay, 0, 1e3),
    F("backend", "type", T_STR, backend, 0, 0),
    F("backend", "threads", T_INT, threads, 1, 1024),
    F("net", "timeout_s", T_DOUBLE, timeout_s, 0.1, 1e6),
    F("net", "max_message_mb", T_LONG, max_message_mb, 1, 1 << 20),
    F("net", "interface", T_STR, interface, 0, 0),
    F("net", "push_bucket_mb", T_DOUBLE, push_bucket_mb, 0, 1e6),
    F("net", "grad_dtype", T_STR, grad_dtype, 0, 0),
    F("net", "param_dtype", T_STR, param_dtype, 0, 0),
    F("net", "local_exchange", T_STR, local_exchange, 0, 0),
    F("checkpoint", "every_steps", T_LONG, ckpt_every_steps, 0, 1e15),
    F("checkpoint", "every_seconds", T_DOUBLE, ckpt_every_seconds, 0, 1e9),
    F("checkpoint", "keep", T_INT, ckpt_keep, 1, 1000000),
    F("checkpoint", "dir", T_STR, ckpt_dir, 0, 0),
    F("checkpoint", "direct_io", T_INT, ckpt_direct_io, 0, 1),
    F("model", "input", T_INT, input_dim, 1, 1 << 28),
    F("serve", "enabled", T_INT, serve_enabled, 0, 1),
    F("serve", "listen", T_STR, serve_listen, 0, 0),
    F("serve", "metrics_listen", T_STR, serve_metrics_listen, 0, 0),
    F("serve", "model", T_STR, serve_model, 0, 0),
    F("serve", "versions", T_STR, serve_versions, 0, 0),
    F("serve", "max_batch", T_INT, serve_max_batch, 1, 1 << 16),
    F("serve", "max_delay_us", T_INT, serve_max_delay_us, 0, 10000000),
    F("serve", "max_queue", T_INT, serve_max_queue, 1, 1 << 24),
    F("serve", "deadline_ms", T_INT, serve_deadline_ms, 1, 86400000),
    F("serve", "cache_mb", T_DOUBLE, serve_cache_mb, 0, 1e9),
    F("serve", "poll_s", T_DOUBLE, serve_poll_s, 0.01, 3600),
    F("serve", "max_request_mb", T_LONG, serve_max_request_mb, 1, 1 << 14),
    F("serve", "replica_timeout_ms", T_INT, serve_replica_timeout_ms, 10, 600000),
    F("serve", "threads", T_INT, serve_threads, 1, 1024),
};
#undef F

void config_defaults(job_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->name, sizeof cfg->name, "job");
    cfg->seed = 1234;
    cfg->epochs = 1;
    cfg->batch_size = 64;
    cfg->staleness = 0;
    cfg->progress_interval_s = 2.0;
    snprintf(cfg->data_format, sizeof cfg->data_format, "idx");
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "/usr/share/datasets/fashion-mnist");
    snprintf(cfg->train_images, sizeof cfg->train_images, "train-images-idx3-ubyte.gz");
    snprintf(cfg->train_labels, sizeof cfg->train_labels, "train-labels-idx1-ubyte.gz");
    snprintf(cfg->test_images, sizeof cfg->test_images, "t10k-images-idx3-ubyte.gz");
    snprintf(cfg->test_labels, sizeof cfg->test_labels, "t10k-labels-idx1-ubyte.gz");
    snprintf(cfg->train_file, sizeof cfg->train_file, "train.tsv");
    snprintf(cfg->test_file, sizeof cfg->test_file, "test.tsv");
    cfg->dense_features = 13;
    cfg->sparse_features = 26;
    snprintf(cfg->on_error, sizeof cfg->on_error, "fail");
    cfg->mean = 0.0;
    cfg->std = 1.0;
    snprintf(cfg->opt_type, sizeof cfg->opt_type, "adam");
    cfg->lr = 1e-3;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->eps = 1e-8;
    cfg->momentum = 0.9;
    snprintf(cfg->backend, sizeof cfg->backend, "cpu");
    snprintf(cfg->ps_device, sizeof cfg->ps_device, "cpu");
    cfg->threads = 1;
    cfg->timeout_s = 300;
    cfg->max_message_mb = 1024;
    cfg->push_bucket_mb = 1;
    snprintf(cfg->grad_dtype, sizeof cfg->grad_dtype, "f32");
    snprintf(cfg->local_exchange, sizeof cfg->local_exchange, "auto");
    snprintf(cfg->param_dtype, sizeof cfg->param_dtype, "f32");
    cfg->ckpt_keep = 3;
    cfg->ckpt_direct_io = 1;
    snprintf(cfg->serve_listen, sizeof cfg->serve_listen, "tcp://127.0.0.1:5555");
    snprintf(cfg->serve_versions, sizeof cfg->serve_versions, "latest");
    cfg->serve_max_batch = 64;
    cfg->serve_max_delay_us = 0;
    cfg->serve_max_queue = 1024;
    cfg->serve_deadline_ms = 10000;
    cfg->serve_cache_mb = 1024;
    cfg->serve_poll_s = 1.0;
    cfg->serve_max_request_mb = 64;
    cfg->serve_replica_timeout_ms = 300;
    cfg->serve_threads = 1;
}

/* Parses `value` into the field; 0 or -TS_EINVAL with a message. */
static int set_field(job_config_t *cfg, const field_t *f, const char *value, char *err, size_t errlen) {
    char *base = (char *)cfg + f->offset;
    char *end = NULL;
    errno = 0;
    switch (f->type) {
    case T_STR:
        if (strlen(value) >= f->size) {
            snprintf(err, errlen, "[%s] %s: value longer than %zu characters", f->section, f->key,
                     f->size - 1);
            return -TS_EINVAL;
        }
        snprintf(base, f->size, "%s", value);
        return 0;
    case T_STALENESS:
        if (!strcasecmp(value, "inf") || !strcasecmp(value, "asp")) {
            *(int *)base = CFG_STALENESS_INF;
            return 0;
        }
        if (!strcasecmp(value, "bsp")) {
            *(int *)base = 0;
            return 0;
        }
        /* fall through: a number */
        __attribute__((fallthrough));
    case T_INT:
    case T_LONG: {
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end != '\0' || v < f->min || v > f->max) {
            snprintf(err, errlen, "[%s] %s: expected an integer in [%.0f, %.0f]%s, got '%s'", f->section,
                     f->key, f->min, f->max, f->type == T_STALENESS ? " or 'inf'" : "", value);
            return -TS_EINVAL;
        }
        if (f->type == T_LONG)
            *(long *)base = (long)v;
        else
            *(int *)base = (int)v;
        return 0;
    }
    case T_U64: {
        unsigned long long v = strtoull(value, &end, 10);
        if (errno || end == value || *end != '\0' || value[0] == '-') {
            snprintf(err, errlen, "[%s] %s: expected an unsigned integer, got '%s'", f->section, f->key,
                     value);
            return -TS_EINVAL;
        }
        *(uint64_t *)base = v;
        return 0;
    }
    case T_DOUBLE: {
        double v = strtod(value, &end);
        if (errno || end == value || *end != '\0' || !isfinite(v) || v < f->min || v > f->max) {
            snprintf(err, errlen, "[%s] %s: expected a number in [%g, %g], got '%s'", f->section, f->key,
                     f->min, f->max, value);
            return -TS_EINVAL;
        }
        *(double *)base = v;
        return 0;
    }
    }
    return -TS_EINVAL;
}

static layer_cfg_t *find_layer(job_config_t *cfg, const char *name) {
    for (int i = 0; i < cfg->n_layers; i++)
        if (!strcmp(cfg->layers[i].name, name)) return &cfg->layers[i];
    return NULL;
}

/* Parses a whole-string integer in [lo, hi] for `[layer NAME] key`. */
static int layer_long(const layer_cfg_t *l, const char *key, const char *value, long long lo, long long hi,
                      long long *out, char *err, size_t errlen) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (errno || end == value || *end || v < lo || v > hi) {
        snprintf(err, errlen, "[layer %s] %s: expected an integer in [%lld, %lld], got '%s'", l->name, key,
                 lo, hi, value);
        return -TS_EINVAL;
    }
    *out = v;
    return 0;
}

static int layer_double(const layer_cfg_t *l, const char *key, const char *value, double *out, char *err,
                        size_t errlen) {
    char *end = NULL;
    errno = 0;
    double v = strtod(value, &end);
    if (errno || end == value || *end || !isfinite(v) || v < 0) {
        snprintf(err, errlen, "[layer %s] %s: expected a non-negative number, got '%s'", l->name, key, value);
        return -TS_EINVAL;
    }
    *out = v;
    return 0;
}

/* `input = a, b`: layer names separated by commas (spaces allowed). */
static int layer_inputs(layer_cfg_t *l, const char *value, char *err, size_t errlen) {
    l->n_inputs = 0;
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strcspn(p, ",");
        size_t len = n;
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0 || len >= sizeof l->inputs[0] || l->n_inputs == CFG_MAX_INPUTS) {
            snprintf(err, errlen,
                     "[layer %s] input: expected up to %d layer names separated by commas, got '%s'", l->name,
                     CFG_MAX_INPUTS, value);
            return -TS_EINVAL;
        }
        memcpy(l->inputs[l->n_inputs], p, len);
        l->inputs[l->n_inputs++][len] = '\0';
        p += n;
        if (*p == ',') p++;
    }
    return 0;
}

/* Sets one key (other than type) of a layer. 0 or -TS_EINVAL with a message. */
static int set_layer_field(layer_cfg_t *l, const char *key, const char *value, char *err, size_t errlen) {
    long long v = 0;
    if (!strcmp(key, "out")) {
        if (layer_long(l, key, value, 1, 1LL << 28, &v, err, errlen)) return -TS_EINVAL;
        l->out = (int)v;
        return 0;
    }
    if (!strcmp(key, "input")) return layer_inputs(l, value, err, errlen);
    if (!strcmp(key, "dim")) {
        if (layer_long(l, key, value, 1, 1 << 16, &v, err, errlen)) return -TS_EINVAL;
        l->dim = (int)v;
        return 0;
    }
    if (!strcmp(key, "rows")) {
        if (layer_long(l, key, value, 0, 1LL << 40, &v, err, errlen)) return -TS_EINVAL;
        l->rows = (uint64_t)v;
        return 0;
    }
    if (!strcmp(key, "features")) { /* A or A-B, inclusive, 0-based */
        char *end = NULL;
        errno = 0;
        long a = strtol(value, &end, 10), b = a;
        if (!errno && end != value && *end == '-') {
            const char *q = end + 1;
            b = strtol(q, &end, 10);
            if (end == q) end = (char *)value;
        }
        if (errno || end == value || *end || a < 0 || b < a || b >= 4096) {
            snprintf(err, errlen, "[layer %s] features: expected a slot A or a range A-B (0-based), got '%s'",
                     l->name, value);
            return -TS_EINVAL;
        }
        l->slot_begin = (int)a;
        l->slot_end = (int)b + 1;
        return 0;
    }
    if (!strcmp(key, "mode")) {
        if (strcmp(value, "sum") && strcmp(value, "mean")) {
            snprintf(err, errlen, "[layer %s] mode: expected sum or mean, got '%s'", l->name, value);
            return -TS_EINVAL;
        }
        snprintf(l->mode, sizeof l->mode, "%s", value);
        return 0;
    }
    if (!strcmp(key, "optimizer")) {
        if (strlen(value) >= sizeof l->optimizer) {
            snprintf(err, errlen, "[layer %s] optimizer: too long", l->name);
            return -TS_EINVAL;
        }
        snprintf(l->optimizer, sizeof l->optimizer, "%s", value);
        return 0;
    }
    if (!strcmp(key, "lr")) return layer_double(l, key, value, &l->lr, err, errlen);
    if (!strcmp(key, "init")) return layer_double(l, key, value, &l->init, err, errlen);
    if (!strcmp(key, "parallel")) {
        if (strcmp(value, "data") && strcmp(value, "model")) {
            snprintf(err, errlen, "[layer %s] parallel: expected data or model, got '%s'", l->name, value);
            return -TS_EINVAL;
        }
        l->model_parallel = !strcmp(value, "model");
        return 0;
    }
    snprintf(
        err, errlen,
        "[layer %s]: unknown key '%s' (known: type, out, input, features, dim, rows, mode, optimizer, lr, "
        "init, parallel)",
        l->name, key);
    return -TS_EINVAL;
}

/* Sets a key of a `[layer NAME]` section, creating the layer on first sight (file order). */
static int set_layer_key(job_config_t *cfg, const char *lname, const char *key, const char *value, char *err,
                         size_t errlen) {
    if (!*lname || strlen(lname) >= sizeof cfg->layers[0].name) {
        snprintf(err, errlen, "[layer %s]: layer name must be 1-%zu characters", lname,
                 sizeof cfg->layers[0].name - 1);
        return -TS_EINVAL;
    }
    layer_cfg_t *l = find_layer(cfg, lname);
    if (!l) {
        if (cfg->n_layers == CFG_MAX_LAYERS) {
            snprintf(err, errlen, "[layer %s]: more than %d layers", lname, CFG_MAX_LAYERS);
            return -TS_EINVAL;
        }
        l = &cfg->layers[cfg->n_layers++];
        memset(l, 0, sizeof *l);
        snprintf(l->name, sizeof l->name, "%s", lname);
    }
    if (!strcmp(key, "type")) {
        if (strlen(value) >= sizeof l->type) {
            snprintf(err, errlen, "[layer %s] type: too long", lname);
            return -TS_EINVAL;
        }
        snprintf(l->type, sizeof l->type, "%s", value);
        return 0;
    }
    return set_layer_field(l, key, value, err, errlen);
}

static int config_set(job_config_t *cfg, const char *section, const char *key, const char *value, char *err,
                      size_t errlen) {
    if (!strncmp(section, "layer ", 6)) return set_layer_key(cfg, section + 6, key, value, err, errlen);
    int known_section = 0;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (strcmp(fields[i].section, section)) continue;
        known_section = 1;
        if (!strcmp(fields[i].key, key)) return set_field(cfg, &fields[i], value, err, errlen);
    }
    if (!known_section)
        snprintf(err, errlen,
                 "unknown section [%s] (known: job, data, optimizer, ps, backend, net, checkpoint, serve, "
                 "model, layer NAME)",
                 section);
    else
        snprintf(err, errlen, "[%s]: unknown key '%s'", section, key);
    return -TS_EINVAL;
}

typedef struct {
    job_config_t *cfg;
    char msg[512];
} parse_ctx_t;

static int on_ini_key(void *user, const char *section, const char *name, const char *value) {
    parse_ctx_t *ctx = user;
    if (!name) return 1; /* section header alone (INI_CALL_HANDLER_ON_NEW_SECTION) */
    return config_set(ctx->cfg, section, name, value, ctx->msg, sizeof ctx->msg) == 0;
}

int config_load(job_config_t *cfg, const char *path, char *err, size_t errlen) {
    parse_ctx_t ctx = {.cfg = cfg, .msg = ""};
    if (strlen(path) >= sizeof cfg->path) {
        snprintf(err, errlen, "job file path too long: %s", path);
        return -TS_EINVAL;
    }
    snprintf(cfg->path, sizeof cfg->path, "%s", path);
    FILE *tf = fopen(path, "rb");
    if (tf) {
        size_t n = fread(cfg->text, 1, sizeof cfg->text - 1, tf);
        cfg->text[n] = '\0';
        fclose(tf);
    }
    int rc = ini_parse(path, on_ini_key, &ctx);
    if (rc == -1) {
        snprintf(err, errlen, "cannot open job file %s: %s", path, strerror(errno));
        return -TS_EIO;
    }
    if (rc == -2) {
        snprintf(err, errlen, "out of memory parsing %s", path);
        return -TS_ENOMEM;
    }
    if (rc > 0) {
        snprintf(err, errlen, "%s:%d: %s", path, rc, ctx.msg[0] ? ctx.msg : "syntax error");
        return -TS_EINVAL;
    }
    return 0;
}

int config_load_text(job_config_t *cfg, const char *text, const char *origin, char *err, size_t errlen) {
    config_defaults(cfg);
    snprintf(cfg->path, sizeof cfg->path, "%s", origin);
    parse_ctx_t ctx = {.cfg = cfg, .msg = ""};
    int rc = ini_parse_string(text, on_ini_key, &ctx);
    if (rc) {
        snprintf(err, errlen, "%s:%d: %s", origin, rc, ctx.msg[0] ? ctx.msg : "syntax error");
        return -TS_EINVAL;
    }
    static const char mark[] = "; override ";
    for (const char *line = strstr(text, mark); line; line = strstr(line + 1, mark)) {
        if (line != text && line[-1] != '\n') continue;
        char assignment[512];
        const char *v = line + sizeof mark - 1;
        size_t n = strcspn(v, "\n");
        if (n >= sizeof assignment) continue;
        memcpy(assignment, v, n);
        assignment[n] = '\0';
        rc = config_apply_override(cfg, assignment, err, errlen);
        if (rc) return rc;
    }
    snprintf(cfg->text, sizeof cfg->text, "%s", text);
    return config_validate(cfg, err, errlen);
}

int config_apply_override(job_config_t *cfg, const char *assignment, char *err, size_t errlen) {
    const char *eq = strchr(assignment, '=');
    const char *dot = NULL; /* the last '.' before '=': `layer NAME.key=value` names a layer */
    for (const char *p = assignment; eq && p < eq; p++)
        if (*p == '.') dot = p;
    if (!eq || !dot || dot == assignment || dot + 1 == eq) {
        snprintf(err, errlen, "override '%s': expected section.key=value (e.g. job.epochs=3)", assignment);
        return -TS_EINVAL;
    }
    char section[64], key[64];
    size_t slen = (size_t)(dot - assignment), klen = (size_t)(eq - dot - 1);
    if (slen >= sizeof section || klen >= sizeof key) {
        snprintf(err, errlen, "override '%s': section or key too long", assignment);
        return -TS_EINVAL;
    }
    memcpy(section, assignment, slen);
    section[slen] = '\0';
    memcpy(key, dot + 1, klen);
    key[klen] = '\0';
    char msg[512];
    int rc = config_set(cfg, section, key, eq + 1, msg, sizeof msg);
    if (rc) snprintf(err, errlen, "override '%s': %s", assignment, msg);
    /* Overrides are part of the job: checkpoints keep them with the file's text. */
    size_t used = strlen(cfg->text);
    if (!rc && used + strlen(assignment) + 16 < sizeof cfg->text)
        snprintf(cfg->text + used, sizeof cfg->text - used, "; override %s\n", assignment);
    return rc;
}

int config_check_serve(const job_config_t *cfg, char *err, size_t errlen) {
    const char *v = cfg->serve_versions;
    char *end = NULL;
    if (!strcmp(v, "latest")) return 0;
    if (!strncmp(v, "latest:", 7)) {
        errno = 0;
        long k = strtol(v + 7, &end, 10);
        if (!errno && end != v + 7 && !*end && k >= 1) return 0;
    } else {
        const char *p = v;
        while (*p) {
            errno = 0;
            long long n = strtoll(p, &end, 10);
            if (errno || end == p || n < 0 || (*end && *end != ',')) break;
            p = *end ? end + 1 : end;
            if (!*p && *end) break; /* a trailing comma */
            if (!*p) return 0;
        }
    }
    snprintf(err, errlen, "[serve] versions '%s': expected latest, latest:K (K >= 1) or steps N,M,...", v);
    return -TS_EINVAL;
}

int config_validate(const job_config_t *cfg, char *err, size_t errlen) {
    static const char *opts[] = {"sgd", "momentum", "adam", "adamw", "adagrad"};
    int ok = 0;
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        ok |= !strcmp(cfg->opt_type, opts[i]);
    if (!ok) {
        snprintf(err, errlen, "%s: [optimizer] type '%s' unknown (sgd, momentum, adam, adamw, adagrad)",
                 cfg->path, cfg->opt_type);
        return -TS_EINVAL;
    }
    const char *dtypes[2][2] = {{"grad_dtype", cfg->grad_dtype}, {"param_dtype", cfg->param_dtype}};
    for (int i = 0; i < 2; i++)
        if (strcmp(dtypes[i][1], "f32") && strcmp(dtypes[i][1], "bf16")) {
            snprintf(err, errlen, "%s: [net] %s '%s' unknown (f32, bf16)", cfg->path, dtypes[i][0],
                     dtypes[i][1]);
            return -TS_EINVAL;
        }
    if (strcmp(cfg->local_exchange, "auto") && strcmp(cfg->local_exchange, "off")) {
        snprintf(err, errlen, "%s: [net] local_exchange '%s' unknown (auto, off)", cfg->path,
                 cfg->local_exchange);
        return -TS_EINVAL;
    }
    if (strcmp(cfg->ps_device, "cpu") && strcmp(cfg->ps_device, "cuda") &&
        strcmp(cfg->ps_device, "cpu-staged")) {
        snprintf(err, errlen, "%s: [ps] device '%s' unknown (cpu, cuda; cpu-staged for tests)", cfg->path,
                 cfg->ps_device);
        return -TS_EINVAL;
    }
    if (strcmp(cfg->backend, "cpu") && strcmp(cfg->backend, "cuda") && strcmp(cfg->backend, "cpu-staged")) {
        snprintf(err, errlen, "%s: [backend] type '%s' unknown (cpu, cuda; cpu-staged for tests)", cfg->path,
                 cfg->backend);
        return -TS_EINVAL;
    }
    if (strcmp(cfg->data_format, "idx") && strcmp(cfg->data_format, "criteo") &&
        strcmp(cfg->data_format, "libsvm")) {
        snprintf(err, errlen, "%s: [data] format '%s' unknown (idx, criteo, libsvm)", cfg->path,
                 cfg->data_format);
        return -TS_EINVAL;
    }
    if (strcmp(cfg->on_error, "fail") && strcmp(cfg->on_error, "skip")) {
        snprintf(err, errlen, "%s: [data] on_error '%s': expected fail or skip", cfg->path, cfg->on_error);
        return -TS_EINVAL;
    }
    if (!strcmp(cfg->data_format, "libsvm") && cfg->sparse_features != 1) {
        snprintf(err, errlen,
                 "%s: [data] libsvm files have one categorical slot (indices above dense_features): set "
                 "sparse_features = 1",
                 cfg->path);
        return -TS_EINVAL;
    }
    if (strcmp(cfg->data_format, "idx") && cfg->input_dim > 0 && cfg->input_dim != cfg->dense_features) {
        snprintf(err, errlen, "%s: [model] input = %d but [data] dense_features = %d", cfg->path,
                 cfg->input_dim, cfg->dense_features);
        return -TS_EINVAL;
    }
    if (!strcmp(cfg->data_format, "idx") && cfg->input_dim <= 0) {
        snprintf(err, errlen, "%s: [model] input must be set", cfg->path);
        return -TS_EINVAL;
    }
    if (config_check_serve(cfg, err, errlen)) return -TS_EINVAL;
    if (cfg->n_layers == 0) {
        snprintf(err, errlen, "%s: no [layer NAME] sections: the model is empty", cfg->path);
        return -TS_EINVAL;
    }
    for (int i = 0; i < cfg->n_layers; i++) {
        const layer_cfg_t *l = &cfg->layers[i];
        if (!l->type[0]) {
            snprintf(err, errlen, "%s: [layer %s] has no type", cfg->path, l->name);
            return -TS_EINVAL;
        }
        if (!strcmp(l->type, "linear") && l->out <= 0) {
            snprintf(err, errlen, "%s: [layer %s] linear needs out = N", cfg->path, l->name);
            return -TS_EINVAL;
        }
        if (l->model_parallel && strcmp(l->type, "linear")) {
            snprintf(err, errlen, "%s: [layer %s] parallel = model is for linear layers only", cfg->path,
                     l->name);
            return -TS_EINVAL;
        }
        if (cfg->node_reduce && l->model_parallel) {
            snprintf(
                err, errlen,
                "%s: [layer %s]: job.node_reduce does not cover model-parallel layers yet (parallel = model)",
                cfg->path, l->name);
            return -TS_EINVAL;
        }
        if (l->model_parallel && cfg->staleness != 0) {
            snprintf(err, errlen,
                     "%s: [layer %s] parallel = model needs job.staleness = 0 (BSP): the shards apply its "
                     "gradients once every worker's backward pass of a step is in",
                     cfg->path, l->name);
            return -TS_EINVAL;
        }
        if (!strcmp(l->type, "embedding_bag")) {
            if (l->dim <= 0 || l->slot_end <= l->slot_begin) {
                snprintf(err, errlen, "%s: [layer %s] embedding_bag needs dim = N and features = A-B",
                         cfg->path, l->name);
                return -TS_EINVAL;
            }
            if (strcmp(cfg->data_format, "idx") && l->slot_end > cfg->sparse_features) {
                snprintf(err, errlen,
                         "%s: [layer %s] features %d-%d: the data has %d categorical slots (0-%d)", cfg->path,
                         l->name, l->slot_begin, l->slot_end - 1, cfg->sparse_features,
                         cfg->sparse_features - 1);
                return -TS_EINVAL;
            }
            int known = !l->optimizer[0];
            for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++)
                known |= !strcmp(l->optimizer, opts[k]);
            if (!known) {
                snprintf(err, errlen,
                         "%s: [layer %s] optimizer '%s' unknown (sgd, momentum, adam, adamw, adagrad)",
                         cfg->path, l->name, l->optimizer);
                return -TS_EINVAL;
            }
        }
    }
    return 0;
}

int config_load_all(job_config_t *cfg, const char *path, int argc, char **argv, char *err, size_t errlen) {
    config_defaults(cfg);
    int rc = config_load(cfg, path, err, errlen);
    for (int i = 0; rc == 0 && i < argc; i++)
        rc = config_apply_override(cfg, argv[i], err, errlen);
    return rc ? rc : config_validate(cfg, err, errlen);
}
