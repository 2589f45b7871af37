#include "data_ctr.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "check.h"

#define READ_CHUNK (1 << 18)
#define MAX_WARN   5 /* skipped lines logged one by one */

/* Lines of a plain or gzip file, split in place in one buffer that holds at most one line plus a chunk. */
typedef struct {
    gzFile f;
    const char *path;
    char *buf;
    size_t cap, start, scan, end; /* unread bytes [start, end); no '\n' in [start, scan) */
    int eof;
    uint64_t lineno; /* of the line last returned */
} line_reader_t;

static int reader_open(line_reader_t *r, const char *path, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    r->path = path;
    errno = 0;
    r->f = gzopen(path, "rb");
    if (!r->f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno ? errno : ENOMEM));
        return -TS_EIO;
    }
    gzbuffer(r->f, READ_CHUNK);
    r->cap = (size_t)CTR_MAX_LINE + 2 + READ_CHUNK;
    r->buf = malloc(r->cap);
    if (!r->buf) {
        gzclose(r->f);
        r->f = NULL;
        snprintf(err, errlen, "%s: out of memory for the line buffer", path);
        return -TS_ENOMEM;
    }
    return 0;
}

static void reader_close(line_reader_t *r) {
    if (r->f) gzclose(r->f);
    free(r->buf);
    memset(r, 0, sizeof *r);
}

/* The next line, NUL-terminated in place without its '\n' and a trailing '\r', valid until the next
 * call. Returns 1 with *line and *len, 0 at the end of the file, or -TS_EIO (read error, corrupt or
 * truncated gzip) / -TS_EINVAL (a line longer than CTR_MAX_LINE) with a message. */
static int reader_next(line_reader_t *r, char **line, size_t *len, char *err, size_t errlen) {
    for (;;) {
        char *nl = memchr(r->buf + r->scan, '\n', r->end - r->scan);
        size_t stop = nl ? (size_t)(nl - r->buf) : r->end;
        if (stop - r->start > CTR_MAX_LINE) {
            snprintf(err, errlen, "%s:%llu: line longer than %d bytes", r->path,
                     (unsigned long long)r->lineno + 1, CTR_MAX_LINE);
            return -TS_EINVAL;
        }
        if (nl || (r->eof && r->start < r->end)) {
            *line = r->buf + r->start;
            *len = stop - r->start;
            r->buf[stop] = '\0'; /* cap leaves a byte past `end` for the last line's terminator */
            if (*len && (*line)[*len - 1] == '\r') (*line)[--*len] = '\0';
            r->start = r->scan = nl ? stop + 1 : r->end;
            r->lineno++;
            return 1;
        }
        if (r->eof) return 0;
        if (r->start) {
            memmove(r->buf, r->buf + r->start, r->end - r->start);
            r->end -= r->start;
            r->start = 0;
        }
        r->scan = r->end;
        int got = gzread(r->f, r->buf + r->end, (unsigned)(r->cap - 1 - r->end)), zerr = Z_OK;
        /* A truncated gzip stream reads as an early end with Z_BUF_ERROR pending, not as -1. */
        const char *msg = got <= 0 ? gzerror(r->f, &zerr) : NULL;
        if (got < 0 || zerr != Z_OK) {
            snprintf(err, errlen, "%s: read error after line %llu: %s", r->path,
                     (unsigned long long)r->lineno, zerr == Z_ERRNO ? strerror(errno) : msg);
            return -TS_EIO;
        }
        if (got == 0) r->eof = 1;
        r->end += (size_t)got;
    }
}

/* Copies at most 40 bytes of s[0..n) into out for a message: non-printable bytes become '?'. */
static const char *quote(const char *s, size_t n, char *out, size_t outlen) {
    size_t k = 0, show = n > 40 ? 40 : n;
    for (size_t i = 0; i < show && k + 1 < outlen; i++)
        out[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[k] = '\0';
    if (show < n && k + 4 < outlen) snprintf(out + k, outlen - k, "...");
    return out;
}

/* Parses s[0..n) as a decimal integer with an optional sign. 0, -1 (not an integer) or -2 (outside
 * int64_t). */
static int parse_int64(const char *s, size_t n, int64_t *out) {
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    if (i == n) return -1;
    uint64_t v = 0;
    int range = 0;
    for (; i < n; i++) {
        unsigned dig = (unsigned)(s[i] - '0');
        if (dig > 9) return -1;
        if (v > (UINT64_C(9223372036854775808) - dig) / 10) range = 1;
        v = v * 10 + dig;
    }
    if (range || (!neg && v > INT64_MAX)) return -2;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* Parses s[0..n), 1 to 16 hex digits. 0 or -1. */
static int parse_hex64(const char *s, size_t n, uint64_t *out) {
    if (n == 0 || n > 16) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        unsigned dig;
        if (c >= '0' && c <= '9')
            dig = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            dig = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            dig = (unsigned)(c - 'A' + 10);
        else
            return -1;
        v = v << 4 | dig;
    }
    *out = v;
    return 0;
}

/* Parses the whole NUL-terminated s as a finite number. 0 or -1. */
static int parse_finite(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v) || (errno == ERANGE && fabs(v) > 1.0)) return -1;
    *out = v;
    return 0;
}

/* The arrays being filled and their capacities (in examples, and in ids). */
typedef struct {
    ctr_dataset_t *d;
    size_t cap_rows, cap_ids, n_ids;
} builder_t;

static int grow_array(void **p, size_t count, size_t elem) {
    size_t bytes;
    if (__builtin_mul_overflow(count, elem, &bytes)) return -1;
    void *q = realloc(*p, bytes ? bytes : 1);
    if (!q) return -1;
    *p = q;
    return 0;
}

/* Makes room for example d->n. 0 or -TS_ENOMEM. */
static int reserve_row(builder_t *b) {
    ctr_dataset_t *d = b->d;
    if (d->n < b->cap_rows) return 0;
    size_t cap = b->cap_rows ? b->cap_rows * 2 : 1024, slots;
    if (__builtin_mul_overflow(cap, (size_t)d->n_slots, &slots) ||
        grow_array((void **)&d->dense, cap, sizeof(float) * (size_t)d->n_dense) ||
        grow_array((void **)&d->label, cap, sizeof *d->label) ||
        grow_array((void **)&d->line, cap, sizeof *d->line) ||
        grow_array((void **)&d->bag_off, slots + 1, sizeof *d->bag_off))
        return -TS_ENOMEM;
    b->cap_rows = cap;
    return 0;
}

/* Makes room for `more` ids after the current ones. 0 or -TS_ENOMEM. */
static int reserve_ids(builder_t *b, size_t more) {
    ctr_dataset_t *d = b->d;
    if (b->n_ids + more <= b->cap_ids && d->ids) return 0;
    size_t cap = b->cap_ids ? b->cap_ids : 4096;
    while (cap < b->n_ids + more)
        cap *= 2;
    if (grow_array((void **)&d->ids, cap, sizeof *d->ids) ||
        (d->wts && grow_array((void **)&d->wts, cap, sizeof *d->wts)))
        return -TS_ENOMEM;
    b->cap_ids = cap;
    return 0;
}

/* Writes "FIELD: <fmt with the quoted text>" into why, FIELD being `prefix` followed by `index` when
 * index >= 0 (I3, C7, feature 2): built only here, since most lines are fine. Returns -TS_EINVAL. */
static int fail(char *why, size_t whylen, const char *prefix, long index, const char *fmt, const char *text,
                size_t n) {
    char field[48], q[64];
    if (index >= 0)
        snprintf(field, sizeof field, "%s%ld", prefix, index);
    else
        snprintf(field, sizeof field, "%s", prefix);
    snprintf(why, whylen, fmt, field, quote(text, n, q, sizeof q));
    return -TS_EINVAL;
}

/* Parses one Criteo line into example d->n (room reserved), appending its ids. 0, or -TS_EINVAL with
 * the reason in `why` (the example and ids are then not counted), or -TS_ENOMEM. */
static int parse_criteo(builder_t *b, char *s, size_t len, char *why, size_t whylen) {
    ctr_dataset_t *d = b->d;
    const int D = d->n_dense, S = d->n_slots, want = 1 + D + S;
    if (len == 0) {
        snprintf(why, whylen, "empty line");
        return -TS_EINVAL;
    }
    long fields = 1;
    for (const char *p = s; (p = memchr(p, '\t', (size_t)(s + len - p))); p++)
        fields++;
    if (fields != want) {
        snprintf(why, whylen, "expected %d tab-separated fields (label, %d integer, %d categorical), got %ld",
                 want, D, S, fields);
        return -TS_EINVAL;
    }
    if (reserve_ids(b, (size_t)S)) return -TS_ENOMEM;
    const size_t i = d->n;
    const char *p = s, *end = s + len;
    float *dense = d->dense + i * (size_t)D;
    uint64_t *off = d->bag_off + i * (size_t)S, nid = b->n_ids;
    for (int f = 0; f < want; f++) {
        const char *q = memchr(p, '\t', (size_t)(end - p));
        if (!q) q = end;
        size_t n = (size_t)(q - p);
        if (f == 0) {
            if (n != 1 || (p[0] != '0' && p[0] != '1'))
                return fail(why, whylen, "label", -1, "%s: expected 0 or 1, got '%s'", p, n);
            d->label[i] = p[0] - '0';
        } else if (f <= D) {
            int64_t x = 0;
            int bad = n ? parse_int64(p, n, &x) : 0;
            if (bad)
                return fail(
                    why, whylen, "I", f,
                    bad == -2 ? "%s: integer out of range: '%s'" : "%s: expected an integer, got '%s'", p, n);
            dense[f - 1] = x > 0 ? (float)log1p((double)x) : 0.0f;
        } else {
            uint64_t id;
            if (n) {
                if (parse_hex64(p, n, &id))
                    return fail(why, whylen, "C", f - D,
                                n > 16 ? "%s: more than 16 hex digits in '%s'"
                                       : "%s: expected hex digits, got '%s'",
                                p, n);
                d->ids[nid++] = id;
            }
            off[f - D] = nid;
        }
        p = q + 1;
    }
    b->n_ids = nid;
    return 0;
}

/* Parses one libsvm line into example d->n (room reserved), as parse_criteo. */
static int parse_libsvm(builder_t *b, char *s, size_t len, char *why, size_t whylen) {
    ctr_dataset_t *d = b->d;
    const size_t i = d->n;
    char *hash = memchr(s, '#', len);
    if (hash) {
        *hash = '\0';
        len = (size_t)(hash - s);
    }
    float *dense = d->dense + i * (size_t)d->n_dense;
    for (int j = 0; j < d->n_dense; j++)
        dense[j] = 0.0f;
    const size_t first = b->n_ids;
    char *p = s, *end = s + len;
    for (int tok = 0;; tok++) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p == end) {
            if (tok == 0) {
                snprintf(why, whylen, hash ? "no label before the comment" : "empty line");
                return -TS_EINVAL;
            }
            break;
        }
        char *q = p;
        while (q < end && *q != ' ' && *q != '\t')
            q++;
        size_t n = (size_t)(q - p);
        *q = '\0';
        if (tok == 0) {
            double y;
            if (parse_finite(p, &y))
                return fail(why, whylen, "label", -1, "%s: expected a number, got '%s'", p, n);
            d->label[i] = y > 0;
        } else {
            char *colon = memchr(p, ':', n);
            uint64_t idx = 0;
            int bad = !colon || colon == p;
            for (char *c = p; !bad && c < colon; c++) {
                unsigned dig = (unsigned)(*c - '0');
                bad = dig > 9 || idx > (UINT64_MAX - dig) / 10;
                idx = idx * 10 + dig;
            }
            if (bad || idx == 0)
                return fail(why, whylen, "feature ", tok,
                            "%s: expected INDEX:VALUE with a positive integer index, got '%s'", p, n);
            double v;
            if (parse_finite(colon + 1, &v))
                return fail(why, whylen, "feature ", tok, "%s: expected a finite value after ':', got '%s'",
                            p, n);
            if (idx <= (uint64_t)d->n_dense) {
                dense[idx - 1] = (float)v;
            } else {
                if (reserve_ids(b, 1)) {
                    b->n_ids = first;
                    return -TS_ENOMEM;
                }
                d->ids[b->n_ids] = idx;
                d->wts[b->n_ids++] = (float)v;
            }
        }
        if (q == end) break;
        p = q + 1;
    }
    d->bag_off[i + 1] = b->n_ids;
    return 0;
}

/* Checks the options. 0 or -TS_EINVAL with a message. */
static int check_opts(const ctr_read_opts_t *o, const char *path, int *libsvm, char *err, size_t errlen) {
    if (!o || !o->format || (strcmp(o->format, "criteo") && strcmp(o->format, "libsvm"))) {
        snprintf(err, errlen, "%s: unknown data format '%s' (criteo or libsvm)", path,
                 o && o->format ? o->format : "(none)");
        return -TS_EINVAL;
    }
    *libsvm = !strcmp(o->format, "libsvm");
    if (o->n_dense < 0 || o->n_dense > (1 << 20) || o->n_slots < 0 || o->n_slots > (1 << 16)) {
        snprintf(err, errlen, "%s: implausible shape: %d dense features, %d slots", path, o->n_dense,
                 o->n_slots);
        return -TS_EINVAL;
    }
    if (*libsvm && o->n_slots != 1) {
        snprintf(err, errlen, "%s: libsvm data has exactly 1 slot, not %d", path, o->n_slots);
        return -TS_EINVAL;
    }
    if (o->n_parts > 1 && (o->part < 0 || o->part >= o->n_parts)) {
        snprintf(err, errlen, "%s: part %d of %d does not exist", path, o->part, o->n_parts);
        return -TS_EINVAL;
    }
    if (o->limit < 0) {
        snprintf(err, errlen, "%s: negative limit %ld", path, o->limit);
        return -TS_EINVAL;
    }
    return 0;
}

/* Gives back the unused tail of the geometrically grown arrays. Failure to shrink is harmless. */
static void shrink(builder_t *b) {
    ctr_dataset_t *d = b->d;
    size_t n = d->n ? d->n : 1;
    grow_array((void **)&d->dense, n, sizeof(float) * (size_t)d->n_dense);
    grow_array((void **)&d->label, n, sizeof *d->label);
    grow_array((void **)&d->line, n, sizeof *d->line);
    grow_array((void **)&d->bag_off, d->n * (size_t)d->n_slots + 1, sizeof *d->bag_off);
    grow_array((void **)&d->ids, b->n_ids ? b->n_ids : 1, sizeof *d->ids);
    if (d->wts) grow_array((void **)&d->wts, b->n_ids ? b->n_ids : 1, sizeof *d->wts);
}

int ctr_load(ctr_dataset_t *d, const char *path, const ctr_read_opts_t *o, char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    int libsvm = 0;
    int rc = check_opts(o, path, &libsvm, err, errlen);
    if (rc) return rc;
    snprintf(d->path, sizeof d->path, "%s", path);
    d->n_dense = o->n_dense;
    d->n_slots = o->n_slots;
    builder_t b = {.d = d};
    line_reader_t r;
    if ((rc = reader_open(&r, path, err, errlen))) return rc;
    if (libsvm && !(d->wts = malloc(sizeof *d->wts))) rc = -TS_ENOMEM;
    if (!rc) rc = reserve_row(&b);
    if (!rc) rc = reserve_ids(&b, 1);
    if (!rc) d->bag_off[0] = 0;

    char *s;
    size_t len;
    char why[512];
    int parts = o->n_parts > 1 ? o->n_parts : 1;
    while (!rc && (o->limit == 0 || d->n_read < (size_t)o->limit)) {
        int got = reader_next(&r, &s, &len, err, errlen);
        if (got <= 0) {
            rc = got;
            break;
        }
        if ((rc = reserve_row(&b))) break;
        rc = libsvm ? parse_libsvm(&b, s, len, why, sizeof why) : parse_criteo(&b, s, len, why, sizeof why);
        if (rc == -TS_EINVAL && o->skip_bad) {
            if (d->skipped++ < MAX_WARN)
                log_warn("%s:%llu: %s (line skipped)", path, (unsigned long long)r.lineno, why);
            b.n_ids = d->bag_off[d->n * (size_t)d->n_slots];
            rc = 0;
            continue;
        }
        if (rc == -TS_EINVAL) snprintf(err, errlen, "%s:%llu: %s", path, (unsigned long long)r.lineno, why);
        if (rc) break;
        if ((d->n_read++ % (size_t)parts) != (size_t)(parts > 1 ? o->part : 0)) {
            b.n_ids = d->bag_off[d->n * (size_t)d->n_slots]; /* another part's: parsed, not kept */
            continue;
        }
        d->line[d->n++] = r.lineno;
    }
    if (rc == -TS_ENOMEM)
        snprintf(err, errlen, "%s:%llu: out of memory after %zu examples", path, (unsigned long long)r.lineno,
                 d->n);
    if (!rc && d->n == 0) {
        if (d->n_read)
            snprintf(err, errlen, "%s: none of its %zu examples is part %d of %d", path, d->n_read, o->part,
                     parts);
        else
            snprintf(err, errlen, "%s: no examples (%zu malformed lines skipped)", path, d->skipped);
        rc = -TS_EINVAL;
    }
    if (!rc && d->skipped)
        log_warn("%s: skipped %zu malformed lines, kept %zu examples", path, d->skipped, d->n);
    reader_close(&r);
    if (rc) {
        ctr_dataset_free(d);
        return rc;
    }
    shrink(&b);
    return 0;
}

void ctr_dataset_free(ctr_dataset_t *d) {
    if (!d) return;
    free(d->dense);
    free(d->label);
    free(d->bag_off);
    free(d->ids);
    free(d->wts);
    free(d->line);
    memset(d, 0, sizeof *d);
}
