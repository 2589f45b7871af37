/* CTR readers: Criteo TSV (values, missing fields, the log transform, bags, line numbers, CRLF, gzip,
 * long lines), libsvm (labels, dense indices, weighted ids, comments), each kind of malformed line
 * (named by PATH:LINE and field), skip_bad, limit, and files that cannot be read. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "data_ctr.h"
#include "expect.h"

static char dir[64];

static const char *tmp_path(const char *name) {
    static char path[4][128];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s/%s", dir, name);
    return path[k];
}

static const char *write_text(const char *name, const char *text) {
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    EXPECT(f != NULL, "cannot create %s", path);
    if (!f) return path;
    fputs(text, f);
    fclose(f);
    return path;
}

static const char *write_gz(const char *name, const char *text, size_t n) {
    const char *path = tmp_path(name);
    gzFile f = gzopen(path, "wb");
    EXPECT(f != NULL, "cannot create %s", path);
    if (!f) return path;
    EXPECT(gzwrite(f, text, (unsigned)n) == (int)n, "gzwrite");
    gzclose(f);
    return path;
}

static ctr_read_opts_t criteo(int dense, int slots) {
    return (ctr_read_opts_t){.format = "criteo", .n_dense = dense, .n_slots = slots};
}

/* Expects ctr_load to fail with `rc` and a message that contains PATH:LINE: and `needle`. */
static void expect_error(const char *text, const ctr_read_opts_t *o, int rc, long line, const char *needle) {
    const char *path = write_text("bad.txt", text);
    ctr_dataset_t d;
    char err[1024] = "", where[256];
    int got = ctr_load(&d, path, o, err, sizeof err);
    if (line > 0)
        snprintf(where, sizeof where, "%s:%ld: ", path, line);
    else
        snprintf(where, sizeof where, "%s", path);
    EXPECT(got == rc, "rc %d, want %d (%s)", got, rc, err);
    EXPECT(strstr(err, where) && strstr(err, needle), "error '%s' lacks '%s' or '%s'", err, where, needle);
    EXPECT(d.n == 0 && !d.dense && !d.ids && !d.bag_off, "dataset not empty after an error");
    fprintf(stderr, "error as expected: %s\n", err);
}

/* The valid Criteo text below: 3 integer and 2 categorical columns. */
static const char criteo_text[] = "1\t5\t\t-3\tdeadbeef\t\n"
                                  "0\t0\t100\t7\t\t0123456789ABCDEF\r\n"
                                  "1\t\t\t\tffffffffffffffff\t1"; /* no final newline */

static void check_criteo(const ctr_dataset_t *d, size_t n) {
    EXPECT(d->n == n && d->n_dense == 3 && d->n_slots == 2 && d->skipped == 0, "n %zu", d->n);
    if (d->n != n) return;
    const float want_dense[9] = {(float)log1p(5.0), 0, 0, 0, (float)log1p(100.0), (float)log1p(7.0), 0, 0, 0};
    const int32_t want_label[3] = {1, 0, 1};
    const uint64_t want_off[7] = {0, 1, 1, 1, 2, 3, 4};
    const uint64_t want_ids[4] = {0xdeadbeefu, 0x0123456789abcdefull, 0xffffffffffffffffull, 1};
    for (size_t i = 0; i < n; i++) {
        EXPECT(d->label[i] == want_label[i], "label[%zu] %d", i, d->label[i]);
        EXPECT(d->line[i] == i + 1, "line[%zu] %llu", i, (unsigned long long)d->line[i]);
        for (int j = 0; j < 3; j++)
            EXPECT(d->dense[i * 3 + j] == want_dense[i * 3 + j], "dense[%zu][%d] %g", i, j,
                   d->dense[i * 3 + j]);
    }
    for (size_t k = 0; k <= n * 2; k++)
        EXPECT(d->bag_off[k] == want_off[k], "bag_off[%zu] %llu", k, (unsigned long long)d->bag_off[k]);
    for (size_t k = 0; k < d->bag_off[n * 2]; k++)
        EXPECT(d->ids[k] == want_ids[k], "ids[%zu] %llx", k, (unsigned long long)d->ids[k]);
    EXPECT(d->wts == NULL, "criteo has no weights");
}

static void test_criteo_valid(void) {
    ctr_read_opts_t o = criteo(3, 2);
    ctr_dataset_t d;
    char err[1024] = "";
    const char *path = write_text("ok.tsv", criteo_text);
    EXPECT(ctr_load(&d, path, &o, err, sizeof err) == 0, "load: %s", err);
    check_criteo(&d, 3);
    EXPECT(!strcmp(d.path, path), "path '%s'", d.path);
    ctr_dataset_free(&d);
    EXPECT(d.n == 0 && d.dense == NULL, "free zeroes");
    ctr_dataset_free(&d);
    ctr_dataset_free(NULL);

    path = write_gz("ok.tsv.gz", criteo_text, sizeof criteo_text - 1);
    EXPECT(ctr_load(&d, path, &o, err, sizeof err) == 0, "gzip load: %s", err);
    check_criteo(&d, 3);
    ctr_dataset_free(&d);

    o.limit = 2;
    EXPECT(ctr_load(&d, write_text("ok.tsv", criteo_text), &o, err, sizeof err) == 0, "limit: %s", err);
    EXPECT(d.n == 2 && d.bag_off[4] == 2, "limit 2: n %zu", d.n);
    ctr_dataset_free(&d);
}

/* A line longer than a read chunk is read whole; one over CTR_MAX_LINE is an error. */
static void test_long_lines(void) {
    const int D = 120000; /* "1\t12345..." : about 720 KB per line */
    size_t n = 2 * (2 + (size_t)D * 6) + 1;
    char *text = malloc(n), *p = text;
    for (int line = 0; line < 2; line++) {
        p += snprintf(p, 3, "%d", line);
        for (int j = 0; j < D; j++)
            p += snprintf(p, 8, "\t%05d", j % 100000);
        *p++ = '\n';
    }
    *p = '\0';
    const char *path = write_gz("long.tsv.gz", text, (size_t)(p - text));
    ctr_read_opts_t o = criteo(D, 0);
    ctr_dataset_t d;
    char err[1024] = "";
    EXPECT(ctr_load(&d, path, &o, err, sizeof err) == 0, "long lines: %s", err);
    EXPECT(d.n == 2 && d.label[0] == 0 && d.label[1] == 1, "n %zu", d.n);
    if (d.n == 2)
        EXPECT(d.dense[D + 777] == (float)log1p(777.0) &&
                   d.dense[D - 1] == (float)log1p((double)(D - 1) - 100000),
               "values of the long lines");
    ctr_dataset_free(&d);

    memset(text, 'x', (size_t)CTR_MAX_LINE + 10);
    text[CTR_MAX_LINE + 10] = '\0';
    char *two = malloc((size_t)CTR_MAX_LINE + 64);
    snprintf(two, (size_t)CTR_MAX_LINE + 64, "0\t1\t2\t3\ta\tb\n%s\n", text);
    expect_error(two, &(ctr_read_opts_t){.format = "criteo", .n_dense = 3, .n_slots = 2, .skip_bad = 1},
                 -TS_EINVAL, 2, "line longer than");
    free(two);
    free(text);
}

static void test_criteo_errors(void) {
    ctr_read_opts_t o = criteo(3, 2);
    const char *good = "1\t1\t2\t3\ta\tb\n";
    char text[512];
#define BAD(line2, needle)                                                                                   \
    do {                                                                                                     \
        snprintf(text, sizeof text, "%s%s\n%s", good, line2, good);                                          \
        expect_error(text, &o, -TS_EINVAL, 2, needle);                                                       \
    } while (0)
    BAD("1\t1\t2", "expected 6 tab-separated fields (label, 3 integer, 2 categorical), got 3");
    BAD("1\t1\t2\t3\ta\tb\t", "got 7");
    BAD("", "empty line");
    BAD("\r", "empty line");
    BAD("2\t1\t2\t3\ta\tb", "label: expected 0 or 1, got '2'");
    BAD("\t1\t2\t3\ta\tb", "label: expected 0 or 1, got ''");
    BAD("1\t1\t1.5\t3\ta\tb", "I2: expected an integer, got '1.5'");
    BAD("1\t1\t2\t 3\ta\tb", "I3: expected an integer, got ' 3'");
    BAD("1\t99999999999999999999\t2\t3\ta\tb", "I1: integer out of range: '99999999999999999999'");
    BAD("1\t-9223372036854775809\t2\t3\ta\tb", "I1: integer out of range");
    BAD("1\t-\t2\t3\ta\tb", "I1: expected an integer, got '-'");
    BAD("1\t1\t2\t3\txyz\tb", "C1: expected hex digits, got 'xyz'");
    BAD("1\t1\t2\t3\ta\t0x1f", "C2: expected hex digits, got '0x1f'");
    BAD("1\t1\t2\t3\ta\t12345678901234567", "C2: more than 16 hex digits in '12345678901234567'");
#undef BAD
    expect_error("", &o, -TS_EINVAL, 0, ": no examples");
    expect_error("0\t1\t2\t3\ta\tb\n", &(ctr_read_opts_t){.format = "csv", .n_dense = 3, .n_slots = 2},
                 -TS_EINVAL, 0, "unknown data format 'csv'");

    ctr_dataset_t d;
    char err[1024] = "";
    EXPECT(ctr_load(&d, "/nonexistent/dir/train.tsv", &o, err, sizeof err) == -TS_EIO &&
               strstr(err, "/nonexistent/dir/train.tsv"),
           "missing file: %s", err);

    /* A truncated gzip file: the good lines before the cut are no excuse. */
    char *big = malloc(10000 * 32 + 1), *p = big;
    for (int i = 0; i < 10000; i++)
        p += snprintf(p, 32, "%d\t%d\t%d\t%d\t%x\t%x\n", i % 2, i, i * 7 % 13, i % 5, i * 2654435761u, i);
    const char *path = write_gz("trunc.tsv.gz", big, (size_t)(p - big));
    FILE *f = fopen(path, "rb");
    long size = 0;
    if (f) {
        fseek(f, 0, SEEK_END);
        size = ftell(f);
        fclose(f);
    }
    EXPECT(size > 100 && truncate(path, size / 2) == 0, "truncate %s", path);
    EXPECT(ctr_load(&d, path, &o, err, sizeof err) == -TS_EIO && strstr(err, path), "truncated gzip: %s",
           err);
    fprintf(stderr, "error as expected: %s\n", err);
    free(big);
}

static void test_skip_bad(void) {
    ctr_read_opts_t o = criteo(3, 2);
    o.skip_bad = 1;
    const char *text = "1\t1\t2\t3\ta\tb\n"
                       "1\t1\t2\t3\tc\tzz\n" /* C1 parses before C2 fails: its id must not stay */
                       "0\t4\t\t6\t\td\n"
                       "\n"
                       "7\t1\t2\t3\ta\tb\n"
                       "1\t\t\t\te\tf\n";
    ctr_dataset_t d;
    char err[1024] = "";
    EXPECT(ctr_load(&d, write_text("skip.tsv", text), &o, err, sizeof err) == 0, "skip_bad: %s", err);
    EXPECT(d.n == 3 && d.skipped == 3, "n %zu skipped %zu", d.n, d.skipped);
    if (d.n == 3) {
        EXPECT(d.line[0] == 1 && d.line[1] == 3 && d.line[2] == 6, "lines %llu %llu %llu",
               (unsigned long long)d.line[0], (unsigned long long)d.line[1], (unsigned long long)d.line[2]);
        const uint64_t off[7] = {0, 1, 2, 2, 3, 4, 5}, ids[5] = {0xa, 0xb, 0xd, 0xe, 0xf};
        for (int k = 0; k < 7; k++)
            EXPECT(d.bag_off[k] == off[k], "bag_off[%d] %llu", k, (unsigned long long)d.bag_off[k]);
        for (int k = 0; k < 5; k++)
            EXPECT(d.ids[k] == ids[k], "ids[%d] %llx", k, (unsigned long long)d.ids[k]);
        EXPECT(d.label[1] == 0 && d.dense[3] == (float)log1p(4.0) && d.dense[4] == 0, "row 3's values");
    }
    ctr_dataset_free(&d);

    o.limit = 2; /* counts examples kept, not lines */
    EXPECT(ctr_load(&d, write_text("skip.tsv", text), &o, err, sizeof err) == 0, "skip_bad limit: %s", err);
    EXPECT(d.n == 2 && d.skipped == 1 && d.line[1] == 3, "n %zu skipped %zu", d.n, d.skipped);
    ctr_dataset_free(&d);

    expect_error("x\n\n", &o, -TS_EINVAL, 0, "no examples (2 malformed lines skipped)");
}

/* Parts: worker p of P keeps the valid examples whose index is p mod P (malformed lines skipped do not
 * count), with the right lines, bags and ids; n_read counts them all. */
static void test_parts(void) {
    ctr_read_opts_t o = criteo(3, 2);
    o.skip_bad = 1;
    const char *text = "1\t1\t2\t3\ta\tb\n"
                       "bad line\n"
                       "0\t4\t\t6\t\td\n"
                       "1\t\t\t\te\tf\n"
                       "0\t1\t1\t1\t10\t\n";
    const char *path = write_text("parts.tsv", text);
    ctr_dataset_t d;
    char err[1024] = "";
    const unsigned long long lines[2][2] = {{1, 4}, {3, 5}};
    const uint64_t first_id[2] = {0xa, 0xd};
    for (int p = 0; p < 2; p++) {
        o.part = p;
        o.n_parts = 2;
        EXPECT(ctr_load(&d, path, &o, err, sizeof err) == 0, "part %d: %s", p, err);
        EXPECT(d.n == 2 && d.n_read == 4 && d.skipped == 1, "part %d: n %zu n_read %zu skipped %zu", p, d.n,
               d.n_read, d.skipped);
        if (d.n == 2) {
            EXPECT(d.line[0] == lines[p][0] && d.line[1] == lines[p][1], "part %d: lines %llu %llu", p,
                   (unsigned long long)d.line[0], (unsigned long long)d.line[1]);
            EXPECT(d.ids[0] == first_id[p], "part %d: first id %llx", p, (unsigned long long)d.ids[0]);
            EXPECT(d.bag_off[4] == (p == 0 ? 4u : 2u), "part %d: %llu ids", p,
                   (unsigned long long)d.bag_off[4]);
        }
        ctr_dataset_free(&d);
    }
    o.part = 2;
    expect_error(text, &o, -TS_EINVAL, 0, "part 2 of 2 does not exist");
    o.part = 4;
    o.n_parts = 5;
    expect_error(text, &o, -TS_EINVAL, 0, "none of its 4 examples is part 4 of 5");
}

static void test_libsvm(void) {
    ctr_read_opts_t o = {.format = "libsvm", .n_dense = 2, .n_slots = 1};
    const char *text = "1 1:0.5 7:2 3:1.5 # a comment: 9:9\n"
                       "-1\n"
                       "+1 2:-3e-1\t10:1\n"
                       "0.0  2:4 #\r\n"
                       "1.0 18446744073709551615:0.25 ";
    ctr_dataset_t d;
    char err[1024] = "";
    EXPECT(ctr_load(&d, write_text("ok.svm", text), &o, err, sizeof err) == 0, "libsvm: %s", err);
    EXPECT(d.n == 5 && d.n_slots == 1 && d.wts != NULL, "n %zu", d.n);
    if (d.n == 5 && d.wts) {
        const int32_t label[5] = {1, 0, 1, 0, 1};
        const float dense[10] = {0.5f, 0, 0, 0, 0, -0.3f, 0, 4, 0, 0};
        const uint64_t off[6] = {0, 2, 2, 3, 3, 4};
        const uint64_t ids[4] = {7, 3, 10, UINT64_MAX};
        const float wts[4] = {2, 1.5f, 1, 0.25f};
        for (int i = 0; i < 5; i++)
            EXPECT(d.label[i] == label[i] && d.line[i] == (uint64_t)i + 1, "label[%d] %d", i, d.label[i]);
        for (int k = 0; k < 10; k++)
            EXPECT(d.dense[k] == dense[k], "dense[%d] %g", k, d.dense[k]);
        for (int k = 0; k < 6; k++)
            EXPECT(d.bag_off[k] == off[k], "bag_off[%d] %llu", k, (unsigned long long)d.bag_off[k]);
        for (int k = 0; k < 4; k++)
            EXPECT(d.ids[k] == ids[k] && d.wts[k] == wts[k], "id %d: %llu %g", k,
                   (unsigned long long)d.ids[k], d.wts[k]);
    }
    ctr_dataset_free(&d);

    const char *good = "1 1:1 5:1\n";
    char line[256];
#define BAD(line2, needle)                                                                                   \
    do {                                                                                                     \
        snprintf(line, sizeof line, "%s%s\n%s", good, line2, good);                                          \
        expect_error(line, &o, -TS_EINVAL, 2, needle);                                                       \
    } while (0)
    BAD("", "empty line");
    BAD("   ", "empty line");
    BAD("# only a comment", "no label before the comment");
    BAD("yes 1:1", "label: expected a number, got 'yes'");
    BAD("nan 1:1", "label: expected a number");
    BAD("1 0:1", "feature 1: expected INDEX:VALUE with a positive integer index, got '0:1'");
    BAD("1 3:1 a:1", "feature 2: expected INDEX:VALUE");
    BAD("1 :1", "feature 1: expected INDEX:VALUE");
    BAD("1 -3:1", "feature 1: expected INDEX:VALUE");
    BAD("1 3", "feature 1: expected INDEX:VALUE");
    BAD("1 18446744073709551616:1", "feature 1: expected INDEX:VALUE");
    BAD("1 3:", "feature 1: expected a finite value after ':', got '3:'");
    BAD("1 3:1x", "feature 1: expected a finite value");
    BAD("1 3:inf", "feature 1: expected a finite value");
    BAD("1 4:1e999", "feature 1: expected a finite value");
#undef BAD
    expect_error(good, &(ctr_read_opts_t){.format = "libsvm", .n_dense = 2, .n_slots = 2}, -TS_EINVAL, 0,
                 "exactly 1 slot");
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/tessera-test-ctr-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_criteo_valid();
    test_long_lines();
    test_criteo_errors();
    test_skip_bad();
    test_parts();
    test_libsvm();
    const char *names[] = {"ok.tsv",       "ok.tsv.gz", "long.tsv.gz", "bad.txt",
                           "trunc.tsv.gz", "skip.tsv",  "ok.svm",      "parts.tsv"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        unlink(tmp_path(names[i]));
    rmdir(dir);
    EXPECT_DONE();
}
