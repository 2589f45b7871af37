#define _GNU_SOURCE /* O_DIRECT */
#include "ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "log.h"
#include "util.h"

#ifndef TESSERA_VERSION
#define TESSERA_VERSION "unknown"
#endif

/* HDF5 calls return a negative value on failure; the macro records the call and jumps to `fail`. */
#define H5_CHECK(call)                                                                                       \
    do {                                                                                                     \
        if ((call) < 0) {                                                                                    \
            snprintf(err, errlen, "%s: HDF5 call failed: %s (%s:%d)", path, #call, __FILE__, __LINE__);      \
            goto fail;                                                                                       \
        }                                                                                                    \
    } while (0)

static void h5_quiet(void) {
    static int done;
    if (!done) H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* we report errors ourselves */
    done = 1;
}

int ckpt_slot_names(const char *opt_type, const char *names[2]) {
    if (!strcmp(opt_type, "momentum")) {
        names[0] = "momentum_buffer";
        return 1;
    }
    if (!strcmp(opt_type, "adagrad")) {
        names[0] = "sum";
        return 1;
    }
    if (!strcmp(opt_type, "adam") || !strcmp(opt_type, "adamw")) {
        names[0] = "exp_avg";
        names[1] = "exp_avg_sq";
        return 2;
    }
    return 0;
}

void ckpt_root(const char *run_dir, const job_config_t *cfg, char *out, size_t n) {
    if (cfg->ckpt_dir[0])
        snprintf(out, n, "%s", cfg->ckpt_dir);
    else
        snprintf(out, n, "%s/checkpoints", run_dir);
}

void ckpt_step_dir(const char *root, int64_t step, char *out, size_t n) {
    snprintf(out, n, "%s/step-%09lld", root, (long long)step);
}

static herr_t attr_write(hid_t obj, const char *name, hid_t type, int n, const void *v) {
    hsize_t dims[1] = {(hsize_t)n};
    hid_t sp = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    hid_t a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static herr_t attr_i64(hid_t obj, const char *name, int64_t v) {
    return attr_write(obj, name, H5T_NATIVE_INT64, 1, &v);
}
static herr_t attr_f64(hid_t obj, const char *name, double v) {
    return attr_write(obj, name, H5T_NATIVE_DOUBLE, 1, &v);
}

static herr_t attr_str(hid_t obj, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    herr_t rc = H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0
                    ? -1
                    : attr_write(obj, name, t, 1, &v);
    H5Tclose(t);
    return rc;
}

static herr_t attr_read(hid_t obj, const char *name, hid_t type, void *out) {
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    herr_t rc = H5Aread(a, type, out);
    H5Aclose(a);
    return rc;
}

/* Reads a variable-length string attribute into a fixed buffer. */
static herr_t attr_read_str(hid_t obj, const char *name, char *out, size_t n) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    char *v = NULL;
    herr_t rc = attr_read(obj, name, t, &v);
    H5Tclose(t);
    if (rc >= 0 && v) snprintf(out, n, "%s", v);
    if (v) H5free_memory(v);
    return rc;
}

/* fsync a file by name, then rename it into place: the file is durable before it is visible. */
static int commit_file(const char *tmp, const char *final_path) {
    int fd = open(tmp, O_RDONLY);
    if (fd < 0) return -TS_EIO;
    int rc = fsync(fd);
    close(fd);
    if (rc || rename(tmp, final_path)) return -TS_EIO;
    return 0;
}

/* Shard files' large datasets bypass HDF5's write path and the page cache (checkpoint.direct_io = 1,
 * the default): HDF5 allocates them (contiguous, at 4 KiB-aligned offsets, never filled) while it
 * writes the file's structure, and once it has closed the file their bytes go from the caller's memory
 * to the disk with O_DIRECT. A shard's writer then costs the training next to no CPU or memory
 * bandwidth, where copying into the page cache and writing it back competes with it for both. Each
 * extent's last partial 4 KiB block, data not 4 KiB-aligned in memory, and filesystems that refuse
 * O_DIRECT (tmpfs) take ordinary writes to the same offsets; the fsync before the rename covers all. */
#define RAW_ALIGN     4096
#define RAW_MIN_BYTES ((size_t)64 << 10)
#define RAW_CHUNK     ((size_t)64 << 20)

typedef struct {
    haddr_t off;
    const char *data;
    size_t bytes;
} raw_extent_t;

typedef struct {
    hid_t dcpl; /* early allocation, no fill; H5P_DEFAULT when direct I/O is off */
    raw_extent_t *ext;
    int n, cap;
    uint64_t direct_bytes; /* written with O_DIRECT (raw_flush) */
} raw_plan_t;

static void raw_plan_init(raw_plan_t *p, int direct) {
    memset(p, 0, sizeof *p);
    p->dcpl = H5P_DEFAULT;
    if (!direct) return;
    hid_t d = H5Pcreate(H5P_DATASET_CREATE);
    if (d < 0) return;
    if (H5Pset_layout(d, H5D_CONTIGUOUS) < 0 || H5Pset_alloc_time(d, H5D_ALLOC_TIME_EARLY) < 0 ||
        H5Pset_fill_time(d, H5D_FILL_TIME_NEVER) < 0) {
        H5Pclose(d);
        return;
    }
    p->dcpl = d;
}

static void raw_plan_free(raw_plan_t *p) {
    if (p->dcpl != H5P_DEFAULT) H5Pclose(p->dcpl);
    free(p->ext);
    memset(p, 0, sizeof *p);
}

/* The file access list of a file written through `p`: large datasets at aligned offsets. */
static hid_t raw_fapl(const raw_plan_t *p) {
    if (!p || p->dcpl == H5P_DEFAULT) return H5P_DEFAULT;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0 && H5Pset_alignment(fapl, RAW_MIN_BYTES, RAW_ALIGN) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

static int pwrite_all(int fd, const char *data, size_t n, off_t off) {
    while (n) {
        ssize_t w = pwrite(fd, data, n < RAW_CHUNK ? n : RAW_CHUNK, off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (!w) errno = EIO;
            return -1;
        }
        data += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

/* Writes the extents `p` deferred into `tmp` (closed by HDF5). 0, or -1 with a message. */
static int raw_flush(raw_plan_t *p, const char *tmp, char *err, size_t errlen) {
    if (!p->n) return 0;
    int fd = open(tmp, O_WRONLY | O_CLOEXEC), dfd = open(tmp, O_WRONLY | O_DIRECT | O_CLOEXEC), rc = -1;
    int refused = dfd < 0 ? errno : 0;
    if (fd < 0) {
        snprintf(err, errlen, "cannot reopen %s: %s", tmp, strerror(errno));
        goto out;
    }
    for (int i = 0; i < p->n; i++) {
        const raw_extent_t *e = &p->ext[i];
        size_t direct = 0;
        if (dfd >= 0 && (uintptr_t)e->data % RAW_ALIGN == 0) direct = e->bytes & ~(size_t)(RAW_ALIGN - 1);
        if (direct && pwrite_all(dfd, e->data, direct, (off_t)e->off)) {
            if (errno != EINVAL && errno != EOPNOTSUPP && errno != ENOTSUP) {
                snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
                goto out;
            }
            refused = errno; /* opened, then refused: the whole extent again, through the page cache */
            close(dfd);
            dfd = -1;
            direct = 0;
        }
        p->direct_bytes += direct;
        if (pwrite_all(fd, e->data + direct, e->bytes - direct, (off_t)(e->off + direct))) {
            snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
            goto out;
        }
    }
    rc = 0;
    static int told;
    if (refused && !told) {
        told = 1;
        log_info("checkpoint direct I/O not usable for %s (%s): writing through the page cache", tmp,
                 strerror(refused));
    }
out:
    if (fd >= 0) close(fd);
    if (dfd >= 0) close(dfd);
    return rc;
}

/* Creates `path`.tmp (into `tmp`) for writing, laid out for `raw` (NULL: an ordinary file). Returns the
 * file, or -1 with a message. */
static hid_t h5_create_tmp(const char *path, const raw_plan_t *raw, char *tmp, size_t n, char *err,
                           size_t errlen) {
    snprintf(tmp, n, "%s.tmp", path);
    hid_t fapl = raw_fapl(raw);
    hid_t f = fapl < 0 ? -1 : H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (fapl > 0) H5Pclose(fapl);
    if (f < 0) snprintf(err, errlen, "cannot create %s", tmp);
    return f;
}

/* Closes `f` (written to `tmp`), writes what `raw` deferred (NULL: nothing) and commits the file under
 * `path` (fsync, then rename); on any failure removes the .tmp. 0 or -TS_EIO with a message. */
static int h5_commit(hid_t f, raw_plan_t *raw, const char *tmp, const char *path, char *err, size_t errlen) {
    if (H5Fclose(f) < 0) {
        snprintf(err, errlen, "%s: HDF5 could not finish the file", tmp);
        unlink(tmp);
        return -TS_EIO;
    }
    if (raw && raw_flush(raw, tmp, err, errlen)) {
        unlink(tmp);
        return -TS_EIO;
    }
    if (commit_file(tmp, path)) {
        int e = errno;
        snprintf(err, errlen, "cannot commit %s: %s", path, strerror(e));
        unlink(tmp);
        return -TS_EIO;
    }
    return 0;
}

/* The attributes every Tessera HDF5 file carries. Returns < 0 on failure. */
static herr_t write_common_attrs(hid_t f, const job_config_t *cfg, int64_t step) {
    if (attr_str(f, "tessera_version", TESSERA_VERSION) < 0 || attr_i64(f, "step", step) < 0 ||
        attr_str(f, "job", cfg->text) < 0 || attr_str(f, "job_name", cfg->name) < 0 ||
        attr_str(f, "optimizer", cfg->opt_type) < 0)
        return -1;
    return 0;
}

/* A dataset `name` under `loc` of `type` with the given shape, written from `data`; through `raw`
 * (deferred: `data` must stay valid until h5_commit) when it is large and stored as it is in memory.
 * < 0 on failure. */
static herr_t write_dataset(hid_t loc, raw_plan_t *raw, const char *name, hid_t file_type, hid_t mem_type,
                            int rank, const hsize_t *dims, const void *data) {
    size_t bytes = H5Tget_size(mem_type);
    for (int i = 0; i < rank; i++)
        bytes *= (size_t)dims[i];
    int defer =
        raw && raw->dcpl != H5P_DEFAULT && bytes >= RAW_MIN_BYTES && H5Tequal(file_type, mem_type) > 0;
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    if (sp < 0) return -1;
    hid_t d = H5Dcreate2(loc, name, file_type, sp, H5P_DEFAULT, defer ? raw->dcpl : H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = d < 0 ? -1 : 0;
    haddr_t off = defer && d >= 0 ? H5Dget_offset(d) : HADDR_UNDEF;
    if (off != HADDR_UNDEF && off % RAW_ALIGN == 0) {
        if (raw->n == raw->cap) {
            raw->cap = raw->cap ? 2 * raw->cap : 16;
            raw->ext = XREALLOC(raw->ext, (size_t)raw->cap * sizeof *raw->ext);
        }
        raw->ext[raw->n++] = (raw_extent_t){off, data, bytes};
    } else if (!rc) {
        rc = H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    }
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    return rc;
}

/* Writes table `t` as group NAME under `tables` (layout in ckpt.h); *bytes gets its size. */
static herr_t write_table(hid_t tables, raw_plan_t *raw, const ckpt_table_t *t, uint64_t *bytes) {
    const char *names[3] = {"param", NULL, NULL};
    int n_slots = 1 + ckpt_slot_names(t->optimizer, names + 1);
    hid_t g = H5Gcreate2(tables, t->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
    int64_t dim = t->dim;
    herr_t rc = attr_i64(g, "dim", dim) < 0 || attr_write(g, "rows", H5T_NATIVE_UINT64, 1, &t->rows) < 0 ||
                        attr_str(g, "optimizer", t->optimizer) < 0
                    ? -1
                    : 0;
    /* Empty datasets keep the layout uniform: a reader never needs to ask whether one exists. */
    static const uint64_t no_id = 0;
    static const int64_t no_step = 0;
    static const float no_row = 0;
    hsize_t n[1] = {t->n}, nd[2] = {t->n, (hsize_t)t->dim};
    if (!rc)
        rc = write_dataset(g, raw, "ids", H5T_STD_U64LE, H5T_NATIVE_UINT64, 1, n, t->n ? t->ids : &no_id);
    if (!rc)
        rc =
            write_dataset(g, raw, "steps", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, n, t->n ? t->steps : &no_step);
    for (int k = 0; !rc && k < n_slots; k++)
        rc = write_dataset(g, raw, names[k], H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, nd,
                           t->n ? t->slot[k] : &no_row);
    H5Gclose(g);
    *bytes = t->n * (16 + (uint64_t)n_slots * (uint64_t)t->dim * sizeof(float));
    return rc < 0 ? -1 : 0;
}

/* Reads dataset `name` of `loc`, which must have `rank` dims equal to `dims`, into `out`. < 0 on failure
 * or a shape mismatch. */
static herr_t read_dataset(hid_t loc, const char *name, hid_t mem_type, int rank, const hsize_t *dims,
                           void *out) {
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t sp = H5Dget_space(d);
    hsize_t got[2] = {0, 0};
    herr_t rc =
        sp < 0 || H5Sget_simple_extent_ndims(sp) != rank || H5Sget_simple_extent_dims(sp, got, NULL) < 0 ? -1
                                                                                                         : 0;
    for (int i = 0; !rc && i < rank; i++)
        if (got[i] != dims[i]) rc = -1;
    if (!rc && dims[0] > 0) rc = H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(d);
    return rc < 0 ? -1 : 0;
}

void ckpt_table_free(ckpt_table_t *t) {
    if (!t) return;
    free(t->ids);
    free(t->steps);
    for (int k = 0; k < 3; k++)
        free(t->slot[k]);
    memset(t->slot, 0, sizeof t->slot);
    t->ids = NULL;
    t->steps = NULL;
    t->n = 0;
}

int ckpt_read_table(const char *step_dir, int file, const char *name, int dim, const char *optimizer,
                    int max_slots, ckpt_table_t *out, char *err, size_t errlen) {
    h5_quiet();
    memset(out, 0, sizeof *out);
    out->name = name;
    out->dim = dim;
    char path[4200], where[400];
    snprintf(path, sizeof path, "%s/shard-%d.h5", step_dir, file);
    snprintf(where, sizeof where, "tables/%s", name);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), g = -1, d = -1, sp = -1;
    if (f < 0) {
        snprintf(err, errlen, "cannot open %s (missing or corrupt)", path);
        return -TS_EIO;
    }
    if (H5Lexists(f, "tables", H5P_DEFAULT) <= 0 || H5Lexists(f, where, H5P_DEFAULT) <= 0) {
        snprintf(err, errlen, "%s holds no table %s: the checkpoint was written by a model without it", path,
                 name);
        H5Fclose(f);
        return -TS_EINVAL;
    }
    g = H5Gopen2(f, where, H5P_DEFAULT);
    H5_CHECK(g);
    int64_t fdim = 0;
    H5_CHECK(attr_read(g, "dim", H5T_NATIVE_INT64, &fdim));
    H5_CHECK(attr_read(g, "rows", H5T_NATIVE_UINT64, &out->rows));
    H5_CHECK(attr_read_str(g, "optimizer", out->optimizer, sizeof out->optimizer));
    if (fdim != dim) {
        snprintf(err, errlen, "%s: table %s has rows of %lld floats, the model's have %d", path, name,
                 (long long)fdim, dim);
        H5Gclose(g);
        H5Fclose(f);
        return -TS_EINVAL;
    }
    if (strcmp(out->optimizer, optimizer)) {
        snprintf(err, errlen,
                 "%s: table %s was trained with optimizer %s but the job says %s: its state cannot "
                 "carry over",
                 path, name, out->optimizer, optimizer);
        H5Gclose(g);
        H5Fclose(f);
        return -TS_EINVAL;
    }
    d = H5Dopen2(g, "ids", H5P_DEFAULT);
    H5_CHECK(d);
    sp = H5Dget_space(d);
    H5_CHECK(sp);
    hsize_t n = 0;
    H5_CHECK(H5Sget_simple_extent_dims(sp, &n, NULL));
    H5Sclose(sp);
    H5Dclose(d);
    sp = d = -1;
    out->n = n;
    const char *names[3] = {"param", NULL, NULL};
    int state = ckpt_slot_names(optimizer, names + 1);
    int n_slots = 1 + (state < max_slots ? state : max_slots);
    size_t cnt = n ? (size_t)n : 1;
    out->ids = XMALLOC(cnt * sizeof *out->ids);
    out->steps = XMALLOC(cnt * sizeof *out->steps);
    hsize_t n1[1] = {n}, nd[2] = {n, (hsize_t)dim};
    H5_CHECK(read_dataset(g, "ids", H5T_NATIVE_UINT64, 1, n1, out->ids));
    H5_CHECK(read_dataset(g, "steps", H5T_NATIVE_INT64, 1, n1, out->steps));
    for (int k = 0; k < n_slots; k++) {
        out->slot[k] = XMALLOC(cnt * (size_t)dim * sizeof(float));
        H5_CHECK(read_dataset(g, names[k], H5T_NATIVE_FLOAT, 2, nd, out->slot[k]));
    }
    H5Gclose(g);
    H5Fclose(f);
    return 0;
fail:
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    if (g >= 0) H5Gclose(g);
    H5Fclose(f);
    ckpt_table_free(out);
    return -TS_EIO;
}

int ckpt_write_shard(const char *step_dir, int shard, int n_shards, int64_t step, const job_config_t *cfg,
                     const ckpt_slice_t *slices, int n_slices, const ckpt_table_t *tables, int n_tables,
                     uint64_t *bytes, uint64_t *direct_bytes, char *err, size_t errlen) {
    h5_quiet();
    char path[4200], tmp[4210];
    snprintf(path, sizeof path, "%s/shard-%d.h5", step_dir, shard);
    const char *slot_names[3] = {"param", NULL, NULL};
    int n_slots = 1 + ckpt_slot_names(cfg->opt_type, slot_names + 1);
    raw_plan_t raw;
    raw_plan_init(&raw, cfg->ckpt_direct_io);
    hid_t f = h5_create_tmp(path, &raw, tmp, sizeof tmp, err, errlen), g = -1;
    if (f < 0) {
        raw_plan_free(&raw);
        return -TS_EIO;
    }
    H5_CHECK(write_common_attrs(f, cfg, step));
    H5_CHECK(attr_i64(f, "shard", shard));
    H5_CHECK(attr_i64(f, "n_shards", n_shards));
    uint64_t total = 0;
    for (int i = 0; i < n_slices; i++) {
        const ckpt_slice_t *s = &slices[i];
        g = H5Gcreate2(f, s->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5_CHECK(g);
        uint64_t shape[2] = {s->rows, s->cols};
        H5_CHECK(attr_write(g, "logical_shape", H5T_NATIVE_UINT64, 2, shape));
        H5_CHECK(attr_write(g, "row_begin", H5T_NATIVE_UINT64, 1, &s->row_begin));
        H5_CHECK(attr_write(g, "row_end", H5T_NATIVE_UINT64, 1, &s->row_end));
        H5_CHECK(attr_i64(g, "optimizer_steps", s->steps));
        hsize_t dims[2] = {s->row_end - s->row_begin, s->cols};
        for (int k = 0; k < n_slots; k++) {
            H5_CHECK(
                write_dataset(g, &raw, slot_names[k], H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dims, s->slot[k]));
            total += dims[0] * dims[1] * sizeof(float);
        }
        H5Gclose(g);
        g = -1;
    }
    if (n_tables > 0) {
        g = H5Gcreate2(f, "tables", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5_CHECK(g);
        for (int i = 0; i < n_tables; i++) {
            uint64_t tb = 0;
            H5_CHECK(write_table(g, &raw, &tables[i], &tb));
            total += tb;
        }
        H5Gclose(g);
        g = -1;
    }
    /* Test hook (tests/integration/it_ckpt_write_kill.sh): hold the written file before it is
     * committed, so a test can kill the job mid-write. */
    const char *delay = getenv("TESSERA_TEST_CKPT_WRITE_DELAY_MS");
    long delay_ms = delay ? strtol(delay, NULL, 10) : 0;
    if (delay_ms > 0 && delay_ms < 600000) usleep((useconds_t)delay_ms * 1000);
    int rc = h5_commit(f, &raw, tmp, path, err, errlen);
    uint64_t direct = raw.direct_bytes;
    raw_plan_free(&raw);
    if (rc) return -TS_EIO;
    if (bytes) *bytes = total;
    if (direct_bytes) *direct_bytes = direct;
    return 0;
fail:
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    raw_plan_free(&raw);
    unlink(tmp);
    return -TS_EIO;
}

int ckpt_write_worker(const char *step_dir, int worker, const ckpt_worker_state_t *st, char *err,
                      size_t errlen) {
    h5_quiet();
    char path[4200], tmp[4210];
    snprintf(path, sizeof path, "%s/worker-%d.h5", step_dir, worker);
    hid_t f = h5_create_tmp(path, NULL, tmp, sizeof tmp, err, errlen);
    if (f < 0) return -TS_EIO;
    H5_CHECK(attr_str(f, "tessera_version", TESSERA_VERSION));
    H5_CHECK(attr_i64(f, "worker", worker));
    H5_CHECK(attr_i64(f, "step", st->clock));
    H5_CHECK(attr_i64(f, "epoch", st->epoch));
    H5_CHECK(attr_i64(f, "position", st->position));
    H5_CHECK(attr_i64(f, "examples", (int64_t)st->examples));
    H5_CHECK(attr_f64(f, "train_seconds", st->train_seconds));
    return h5_commit(f, NULL, tmp, path, err, errlen);
fail:
    H5Fclose(f);
    unlink(tmp);
    return -TS_EIO;
}

int ckpt_read_worker(const char *step_dir, int worker, ckpt_worker_state_t *st, char *err, size_t errlen) {
    h5_quiet();
    char path[4200];
    snprintf(path, sizeof path, "%s/worker-%d.h5", step_dir, worker);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        snprintf(err, errlen, "cannot open %s (missing or not HDF5)", path);
        return -TS_EIO;
    }
    int64_t clock = 0, epoch = 0, pos = 0, ex = 0;
    memset(st, 0, sizeof *st);
    H5_CHECK(attr_read(f, "step", H5T_NATIVE_INT64, &clock));
    H5_CHECK(attr_read(f, "epoch", H5T_NATIVE_INT64, &epoch));
    H5_CHECK(attr_read(f, "position", H5T_NATIVE_INT64, &pos));
    H5_CHECK(attr_read(f, "examples", H5T_NATIVE_INT64, &ex));
    H5_CHECK(attr_read(f, "train_seconds", H5T_NATIVE_DOUBLE, &st->train_seconds));
    st->clock = clock;
    st->epoch = (int)epoch;
    st->position = pos;
    st->examples = (uint64_t)ex;
    H5Fclose(f);
    return 0;
fail:
    H5Fclose(f);
    return -TS_EIO;
}

int ckpt_write_manifest(const char *root, const ckpt_manifest_t *m, const job_config_t *cfg, char *err,
                        size_t errlen) {
    h5_quiet();
    char dir[4096], path[4200], tmp[4210];
    ckpt_step_dir(root, m->step, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/manifest.h5", dir);
    hid_t f = h5_create_tmp(path, NULL, tmp, sizeof tmp, err, errlen);
    if (f < 0) return -TS_EIO;
    H5_CHECK(write_common_attrs(f, cfg, m->step));
    H5_CHECK(attr_i64(f, "n_shards", m->n_shards));
    H5_CHECK(attr_i64(f, "n_workers", m->n_workers));
    H5_CHECK(attr_i64(f, "unix_time", m->unix_time));
    H5_CHECK(attr_i64(f, "stopped", m->stopped));
    H5_CHECK(attr_str(f, "complete", "true"));
    if (h5_commit(f, NULL, tmp, path, err, errlen)) return -TS_EIO;
    /* The step directory's entry must be durable before `latest` names it. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    char latest[4200], name[64];
    snprintf(latest, sizeof latest, "%s/latest", root);
    int len = snprintf(name, sizeof name, "step-%09lld\n", (long long)m->step);
    if (write_file_atomic(latest, name, (size_t)len)) {
        snprintf(err, errlen, "cannot write %s: %s", latest, strerror(errno));
        return -TS_EIO;
    }
    return 0;
fail:
    H5Fclose(f);
    unlink(tmp);
    return -TS_EIO;
}

int ckpt_read_manifest(const char *step_dir, ckpt_manifest_t *m, char *err, size_t errlen) {
    h5_quiet();
    char path[4200];
    snprintf(path, sizeof path, "%s/manifest.h5", step_dir);
    memset(m, 0, sizeof *m);
    struct stat st;
    if (stat(path, &st)) {
        snprintf(err, errlen, "%s: no manifest (the checkpoint is incomplete)", step_dir);
        return -TS_EIO;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        snprintf(err, errlen, "%s: not a readable HDF5 file (corrupt?)", path);
        return -TS_EIO;
    }
    int64_t step = 0, s = 0, w = 0, t = 0, stopped = 0;
    H5_CHECK(attr_read(f, "step", H5T_NATIVE_INT64, &step));
    H5_CHECK(attr_read(f, "n_shards", H5T_NATIVE_INT64, &s));
    H5_CHECK(attr_read(f, "n_workers", H5T_NATIVE_INT64, &w));
    H5_CHECK(attr_read(f, "unix_time", H5T_NATIVE_INT64, &t));
    H5_CHECK(attr_read(f, "stopped", H5T_NATIVE_INT64, &stopped));
    attr_read_str(f, "tessera_version", m->version, sizeof m->version);
    attr_read_str(f, "optimizer", m->optimizer, sizeof m->optimizer);
    H5Fclose(f);
    if (s < 1 || w < 1 || step < 0) {
        snprintf(err, errlen, "%s: implausible manifest (step %lld, %lld shards, %lld workers)", path,
                 (long long)step, (long long)s, (long long)w);
        return -TS_EIO;
    }
    m->step = step;
    m->n_shards = (int)s;
    m->n_workers = (int)w;
    m->unix_time = t;
    m->stopped = (int)stopped;
    return 0;
fail:
    H5Fclose(f);
    return -TS_EIO;
}

int ckpt_read_job(const char *step_dir, job_config_t *cfg, char *err, size_t errlen) {
    h5_quiet();
    char path[4200], origin[4300];
    snprintf(path, sizeof path, "%s/manifest.h5", step_dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        snprintf(err, errlen, "%s: no readable manifest", step_dir);
        return -TS_EIO;
    }
    char *text = XCALLOC(1, sizeof cfg->text);
    herr_t rc = attr_read_str(f, "job", text, sizeof cfg->text);
    H5Fclose(f);
    int out = 0;
    if (rc < 0 || !text[0]) {
        snprintf(err, errlen, "%s: the manifest holds no job", path);
        out = -TS_EIO;
    } else {
        snprintf(origin, sizeof origin, "%s (job)", path);
        out = config_load_text(cfg, text, origin, err, errlen);
    }
    free(text);
    return out;
}

int ckpt_read_rows(const char *step_dir, int n_files, const char *name, uint64_t cols, int slot,
                   uint64_t row_begin, uint64_t row_end, float *out, long *steps, char *err, size_t errlen) {
    h5_quiet();
    uint64_t covered = 0;
    char path[4200] = "";
    for (int k = 0; k < n_files && covered < row_end - row_begin; k++) {
        snprintf(path, sizeof path, "%s/shard-%d.h5", step_dir, k);
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), g = -1, d = -1, fs = -1, ms = -1;
        if (f < 0) {
            snprintf(err, errlen, "cannot open %s (missing or corrupt)", path);
            return -TS_EIO;
        }
        if (H5Lexists(f, name, H5P_DEFAULT) <= 0) { /* this shard held no rows of the tensor */
            H5Fclose(f);
            continue;
        }
        char slot_name[32] = "param";
        if (slot > 0) {
            char opt[16] = "";
            const char *names[2] = {0};
            attr_read_str(f, "optimizer", opt, sizeof opt);
            if (slot > ckpt_slot_names(opt, names)) {
                snprintf(err, errlen, "%s: written with optimizer '%s', which has no slot %d", path, opt,
                         slot);
                H5Fclose(f);
                return -TS_EINVAL;
            }
            snprintf(slot_name, sizeof slot_name, "%s", names[slot - 1]);
        }
        uint64_t rb = 0, re = 0, shape[2] = {0, 0};
        int64_t st = 0;
        g = H5Gopen2(f, name, H5P_DEFAULT);
        H5_CHECK(g);
        H5_CHECK(attr_read(g, "row_begin", H5T_NATIVE_UINT64, &rb));
        H5_CHECK(attr_read(g, "row_end", H5T_NATIVE_UINT64, &re));
        H5_CHECK(attr_read(g, "logical_shape", H5T_NATIVE_UINT64, shape));
        H5_CHECK(attr_read(g, "optimizer_steps", H5T_NATIVE_INT64, &st));
        if (shape[1] != cols) {
            snprintf(err, errlen, "%s: tensor %s has %llu columns, the model has %llu", path, name,
                     (unsigned long long)shape[1], (unsigned long long)cols);
            goto fail;
        }
        uint64_t lo = rb > row_begin ? rb : row_begin, hi = re < row_end ? re : row_end;
        if (lo < hi) {
            d = H5Dopen2(g, slot_name, H5P_DEFAULT);
            H5_CHECK(d);
            fs = H5Dget_space(d);
            hsize_t start[2] = {lo - rb, 0}, count[2] = {hi - lo, cols};
            H5_CHECK(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL));
            ms = H5Screate_simple(2, count, NULL);
            H5_CHECK(H5Dread(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, out + (lo - row_begin) * cols));
            covered += hi - lo;
            if (steps) *steps = st;
        }
        if (ms >= 0) H5Sclose(ms);
        if (fs >= 0) H5Sclose(fs);
        if (d >= 0) H5Dclose(d);
        H5Gclose(g);
        H5Fclose(f);
        continue;
    fail:
        if (ms >= 0) H5Sclose(ms);
        if (fs >= 0) H5Sclose(fs);
        if (d >= 0) H5Dclose(d);
        if (g >= 0) H5Gclose(g);
        H5Fclose(f);
        return -TS_EIO;
    }
    if (covered != row_end - row_begin) {
        snprintf(err, errlen, "%s: rows %llu-%llu of tensor %s are in none of the %d shard files", step_dir,
                 (unsigned long long)row_begin, (unsigned long long)row_end, name, n_files);
        return -TS_EINVAL;
    }
    return 0;
}

/* Opens `path` and checks its `step` attribute. */
static int check_file_step(const char *path, int64_t step, char *err, size_t errlen) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        snprintf(err, errlen, "%s: missing or not a readable HDF5 file (corrupt?)", path);
        return -TS_EIO;
    }
    int64_t s = -1;
    herr_t rc = attr_read(f, "step", H5T_NATIVE_INT64, &s);
    H5Fclose(f);
    if (rc < 0 || s != step) {
        snprintf(err, errlen, "%s: step attribute %lld, expected %lld", path, (long long)s, (long long)step);
        return -TS_EIO;
    }
    return 0;
}

int ckpt_validate(const char *step_dir, char *err, size_t errlen) {
    ckpt_manifest_t m;
    int rc = ckpt_read_manifest(step_dir, &m, err, errlen);
    char path[4200];
    for (int k = 0; !rc && k < m.n_shards; k++) {
        snprintf(path, sizeof path, "%s/shard-%d.h5", step_dir, k);
        rc = check_file_step(path, m.step, err, errlen);
    }
    for (int w = 0; !rc && w < m.n_workers; w++) {
        snprintf(path, sizeof path, "%s/worker-%d.h5", step_dir, w);
        rc = check_file_step(path, m.step, err, errlen);
    }
    return rc;
}

static int cmp_entry_desc(const void *a, const void *b) {
    int64_t x = ((const ckpt_entry_t *)a)->step, y = ((const ckpt_entry_t *)b)->step;
    return (x < y) - (x > y);
}

int ckpt_list(const char *root, ckpt_entry_t **out, int *n) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(root);
    if (!d) return errno == ENOENT ? 0 : -TS_EIO;
    int cap = 16;
    ckpt_entry_t *v = XCALLOC((size_t)cap, sizeof *v);
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end = NULL;
        if (strncmp(e->d_name, "step-", 5)) continue;
        long long step = strtoll(e->d_name + 5, &end, 10);
        if (!end || *end || step < 0) continue;
        if (*n == cap) {
            cap *= 2;
            ckpt_entry_t *nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) break;
            v = nv;
        }
        ckpt_entry_t *c = &v[(*n)++];
        memset(c, 0, sizeof *c);
        c->step = step;
        snprintf(c->dir, sizeof c->dir, "%s/%s", root, e->d_name);
        char path[4400];
        snprintf(path, sizeof path, "%s/manifest.h5", c->dir);
        struct stat st;
        c->complete = stat(path, &st) == 0;
        if (c->complete) c->unix_time = (int64_t)st.st_mtime;
        DIR *sd = opendir(c->dir);
        struct dirent *f;
        while (sd && (f = readdir(sd))) {
            snprintf(path, sizeof path, "%s/%s", c->dir, f->d_name);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                c->bytes += (uint64_t)st.st_size;
                if (!c->complete && st.st_mtime > c->unix_time) c->unix_time = (int64_t)st.st_mtime;
            }
        }
        if (sd) closedir(sd);
    }
    closedir(d);
    qsort(v, (size_t)*n, sizeof *v, cmp_entry_desc);
    *out = v;
    return 0;
}

int ckpt_find_latest(const char *root, char *out, size_t n, char *err, size_t errlen) {
    ckpt_entry_t *v;
    int count;
    if (ckpt_list(root, &v, &count)) {
        snprintf(err, errlen, "cannot read checkpoint directory %s: %s", root, strerror(errno));
        return -TS_EIO;
    }
    int rc = -TS_EINVAL;
    for (int i = 0; i < count; i++) {
        char why[1024];
        if (!v[i].complete) {
            log_warn("checkpoint %s is incomplete (no manifest): skipped", v[i].dir);
            continue;
        }
        if (ckpt_validate(v[i].dir, why, sizeof why)) {
            log_warn("checkpoint %s is unusable, trying the previous one: %s", v[i].dir, why);
            continue;
        }
        snprintf(out, n, "%s", v[i].dir);
        rc = 0;
        break;
    }
    if (rc) snprintf(err, errlen, "no complete checkpoint under %s", root);
    free(v);
    return rc;
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4400];
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d) closedir(d);
    if (rmdir(dir)) log_warn("cannot remove old checkpoint %s: %s", dir, strerror(errno));
}

void ckpt_prune(const char *root, int keep) {
    ckpt_entry_t *v;
    int count, complete_seen = 0;
    if (keep < 1) keep = 1;
    if (ckpt_list(root, &v, &count)) return;
    for (int i = 0; i < count; i++) {
        if (v[i].complete) {
            if (++complete_seen > keep) remove_dir(v[i].dir);
        } else if (complete_seen > 0) {
            remove_dir(v[i].dir); /* an abandoned attempt older than a complete checkpoint */
        }
    }
    free(v);
}

typedef struct {
    FILE *out;
    int shard;
    const char *path;
} inspect_ctx_t;

static herr_t print_table(hid_t loc, const char *name, const H5L_info_t *info, void *data) {
    (void)info;
    inspect_ctx_t *c = data;
    hid_t g = H5Gopen2(loc, name, H5P_DEFAULT);
    if (g < 0) return 0;
    int64_t dim = 0;
    uint64_t rows = 0;
    hsize_t n = 0;
    char opt[16] = "";
    attr_read(g, "dim", H5T_NATIVE_INT64, &dim);
    attr_read(g, "rows", H5T_NATIVE_UINT64, &rows);
    attr_read_str(g, "optimizer", opt, sizeof opt);
    hid_t d = H5Dopen2(g, "ids", H5P_DEFAULT);
    if (d >= 0) {
        hid_t sp = H5Dget_space(d);
        if (sp >= 0) H5Sget_simple_extent_dims(sp, &n, NULL);
        if (sp >= 0) H5Sclose(sp);
        H5Dclose(d);
    }
    char size[48];
    if (rows)
        snprintf(size, sizeof size, "%llux%lld", (unsigned long long)rows, (long long)dim);
    else
        snprintf(size, sizeof size, "dynamic x%lld", (long long)dim);
    fprintf(c->out, "  %-20s %-12s shard %-3d holds %8llu rows (sparse, %s)\n", name, size, c->shard,
            (unsigned long long)n, opt);
    H5Gclose(g);
    return 0;
}

static herr_t print_tensor(hid_t loc, const char *name, const H5L_info_t *info, void *data) {
    (void)info;
    inspect_ctx_t *c = data;
    if (!strcmp(name, "tables")) {
        hid_t t = H5Gopen2(loc, name, H5P_DEFAULT);
        if (t >= 0) {
            H5Literate(t, H5_INDEX_NAME, H5_ITER_INC, NULL, print_table, data);
            H5Gclose(t);
        }
        return 0;
    }
    hid_t g = H5Gopen2(loc, name, H5P_DEFAULT);
    if (g < 0) return 0;
    uint64_t shape[2] = {0, 0}, rb = 0, re = 0;
    int64_t steps = 0;
    attr_read(g, "logical_shape", H5T_NATIVE_UINT64, shape);
    attr_read(g, "row_begin", H5T_NATIVE_UINT64, &rb);
    attr_read(g, "row_end", H5T_NATIVE_UINT64, &re);
    attr_read(g, "optimizer_steps", H5T_NATIVE_INT64, &steps);
    char slots[128] = "";
    static const char *names[] = {"param", "exp_avg", "exp_avg_sq", "momentum_buffer", "sum"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (H5Lexists(g, names[i], H5P_DEFAULT) > 0) {
            size_t len = strlen(slots);
            snprintf(slots + len, sizeof slots - len, "%s%s", len ? " " : "", names[i]);
        }
    char shp[48];
    snprintf(shp, sizeof shp, "%llux%llu", (unsigned long long)shape[0], (unsigned long long)shape[1]);
    fprintf(c->out, "  %-20s %-12s shard %-3d rows %7llu-%-7llu steps %-7lld %s\n", name, shp, c->shard,
            (unsigned long long)rb, (unsigned long long)re, (long long)steps, slots);
    H5Gclose(g);
    return 0;
}

int ckpt_inspect(const char *dir, FILE *out) {
    h5_quiet();
    char root[4096], sub[4096], path[4400], step_dir[4096] = "", err[1024];
    struct stat st;
    snprintf(path, sizeof path, "%s/manifest.h5", dir);
    int is_step = stat(path, &st) == 0;
    snprintf(sub, sizeof sub, "%s/checkpoints", dir);
    if (is_step) snprintf(step_dir, sizeof step_dir, "%s", dir);
    snprintf(root, sizeof root, "%s", stat(sub, &st) == 0 && S_ISDIR(st.st_mode) ? sub : dir);
    if (!is_step) {
        ckpt_entry_t *v;
        int n;
        if (ckpt_list(root, &v, &n) || n == 0) {
            fprintf(out, "no checkpoints under %s\n", root);
            if (n == 0) free(v);
            return 1;
        }
        char latest[64] = "";
        snprintf(path, sizeof path, "%s/latest", root);
        FILE *lf = fopen(path, "r");
        if (lf) {
            if (!fgets(latest, sizeof latest, lf)) latest[0] = '\0';
            latest[strcspn(latest, "\n")] = '\0';
            fclose(lf);
        }
        fprintf(out, "checkpoints in %s (latest: %s)\n", root, latest[0] ? latest : "none");
        fprintf(out, "  %-12s %-20s %-11s %s\n", "step", "time (UTC)", "state", "size");
        for (int i = 0; i < n; i++) {
            char when[32];
            time_t t = (time_t)v[i].unix_time;
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
            fprintf(out, "  %-12lld %-20s %-11s %.2f MB\n", (long long)v[i].step, when,
                    v[i].complete ? "complete" : "incomplete", (double)v[i].bytes / 1e6);
        }
        if (ckpt_find_latest(root, step_dir, sizeof step_dir, err, sizeof err)) {
            fprintf(out, "%s\n", err);
            free(v);
            return 1;
        }
        free(v);
    }
    ckpt_manifest_t m;
    if (ckpt_read_manifest(step_dir, &m, err, sizeof err)) {
        fprintf(out, "%s\n", err);
        return 1;
    }
    if (ckpt_validate(step_dir, err, sizeof err)) fprintf(out, "warning: %s\n", err);
    fprintf(out, "\n%s: step %lld, %d shards, %d workers, tessera %s%s\n", step_dir, (long long)m.step,
            m.n_shards, m.n_workers, m.version, m.stopped ? ", taken to stop the job" : "");
    for (int k = 0; k < m.n_shards; k++) {
        snprintf(path, sizeof path, "%s/shard-%d.h5", step_dir, k);
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f < 0) {
            fprintf(out, "  %s: cannot open\n", path);
            continue;
        }
        inspect_ctx_t c = {out, k, path};
        H5Literate(f, H5_INDEX_NAME, H5_ITER_INC, NULL, print_tensor, &c);
        H5Fclose(f);
    }
    return 0;
}

int ckpt_set_aside(const char *root, int64_t keep_step, char *moved_to, size_t n) {
    ckpt_entry_t *v;
    int count, moved = 0;
    if (ckpt_list(root, &v, &count)) return -TS_EIO;
    char dest[4096] = "", path[4400];
    for (int i = 0; i < count; i++) {
        if (keep_step >= 0 && v[i].step <= keep_step) continue;
        if (!dest[0]) {
            char stamp[32];
            time_t t = time(NULL);
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
            snprintf(dest, sizeof dest, "%s/abandoned-%s-%d", root, stamp, (int)getpid());
            if (mkdir_p(dest)) {
                free(v);
                return -TS_EIO;
            }
        }
        const char *base = strrchr(v[i].dir, '/') ? strrchr(v[i].dir, '/') + 1 : v[i].dir;
        snprintf(path, sizeof path, "%s/%s", dest, base);
        if (rename(v[i].dir, path)) {
            free(v);
            return -TS_EIO;
        }
        moved++;
    }
    free(v);
    char latest[4200], name[64];
    snprintf(latest, sizeof latest, "%s/latest", root);
    if (keep_step >= 0) {
        int len = snprintf(name, sizeof name, "step-%09lld\n", (long long)keep_step);
        if (moved && write_file_atomic(latest, name, (size_t)len)) return -TS_EIO;
    } else if (moved) {
        unlink(latest);
    }
    if (moved_to) snprintf(moved_to, n, "%s", dest);
    return moved;
}
