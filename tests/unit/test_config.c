/* Job files: the example parses; overrides apply; mistakes name the file, line and key. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "expect.h"

static const char *write_tmp(const char *text) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/tessera-test-config-%d.ini", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void expect_error(const char *text, const char *needle) {
    job_config_t c;
    char err[1024] = "";
    int rc = config_load_all(&c, write_tmp(text), 0, NULL, err, sizeof err);
    EXPECT(rc == -TS_EINVAL, "expected an error containing '%s'", needle);
    EXPECT(strstr(err, needle) != NULL, "error '%s' does not mention '%s'", err, needle);
    fprintf(stderr, "error as expected: %s\n", err);
}

int main(int argc, char **argv) {
    EXPECT(argc == 2, "usage: test_config EXAMPLES_DIR");
    if (argc != 2) EXPECT_DONE();
    char path[1024];
    snprintf(path, sizeof path, "%s/fashion_mlp.ini", argv[1]);
    job_config_t c;
    char err[1024] = "";
    char *over[] = {"job.epochs=3", "optimizer.lr=0.01", "job.staleness=inf", "layer fc1.out=64"};
    EXPECT(config_load_all(&c, path, 4, over, err, sizeof err) == 0, "load: %s", err);
    EXPECT(c.epochs == 3 && c.batch_size == 64, "epochs %d batch %d", c.epochs, c.batch_size);
    EXPECT_NEAR(c.lr, 0.01, 1e-12);
    EXPECT(c.staleness == CFG_STALENESS_INF, "staleness %d", c.staleness);
    EXPECT(c.n_layers == 6 && !strcmp(c.layers[0].type, "linear") && c.layers[0].out == 64, "layers");
    EXPECT(!strcmp(c.layers[5].type, "softmax_xent"), "loss last");

    expect_error("[job]\nepochs = ten\n", ":2: [job] epochs: expected an integer");
    expect_error("[job]\nname = x\nbogus = 1\n", ":3: [job]: unknown key 'bogus'");
    expect_error("[jobs]\nname = x\n", "unknown section [jobs]");
    expect_error("[job]\nstaleness = -3\n", "staleness");
    expect_error("[model]\ninput = 4\n", "no [layer NAME] sections");
    expect_error("[model]\ninput = 4\n[layer a]\ntype = linear\n", "linear needs out");
    expect_error("[model]\ninput = 4\n[optimizer]\ntype = rmsprop\n[layer a]\ntype = relu\n", "rmsprop");
    expect_error("[job]\nthis line has no equals sign\n", ":2:");
    expect_error(
        "[model]\ninput = 4\n[layer a]\ntype = relu\nparallel = model\n[layer l]\ntype = softmax_xent\n",
        "parallel = model is for linear layers only");
    expect_error(
        "[job]\nstaleness = 2\n[model]\ninput = 4\n[layer a]\ntype = linear\nout = 3\nparallel = model\n"
        "[layer l]\ntype = softmax_xent\n",
        "parallel = model needs job.staleness = 0");
    expect_error("[model]\ninput = 4\n[layer a]\ntype = linear\nout = 3\nparallel = rows\n",
                 "expected data or model");

    char *bad[] = {"epochs=3"};
    EXPECT(config_load_all(&c, path, 1, bad, err, sizeof err) == -TS_EINVAL &&
               strstr(err, "section.key=value"),
           "override without section: %s", err);
    char *bad2[] = {"optimizer.lr=fast"};
    EXPECT(config_load_all(&c, path, 1, bad2, err, sizeof err) == -TS_EINVAL &&
               strstr(err, "optimizer.lr=fast"),
           "bad override value: %s", err);
    EXPECT(config_load_all(&c, "/nonexistent/job.ini", 0, NULL, err, sizeof err) == -TS_EIO &&
               strstr(err, "/nonexistent/job.ini"),
           "missing file: %s", err);
    /* [serve] versions policies. */
    const char *good_pol[] = {"latest", "latest:1", "latest:3", "100", "100,300,0"};
    const char *bad_pol[] = {"", "latest:", "latest:0", "latest:x", "newest", "1,,2", "3,", "-1", "1.5"};
    for (size_t i = 0; i < sizeof good_pol / sizeof *good_pol; i++) {
        config_defaults(&c);
        snprintf(c.serve_versions, sizeof c.serve_versions, "%s", good_pol[i]);
        EXPECT(config_check_serve(&c, err, sizeof err) == 0, "policy '%s' refused: %s", good_pol[i], err);
    }
    for (size_t i = 0; i < sizeof bad_pol / sizeof *bad_pol; i++) {
        config_defaults(&c);
        snprintf(c.serve_versions, sizeof c.serve_versions, "%s", bad_pol[i]);
        EXPECT(config_check_serve(&c, err, sizeof err) == -TS_EINVAL && strstr(err, "[serve] versions"),
               "policy '%s' accepted", bad_pol[i]);
    }
    unlink(write_tmp(""));
    EXPECT_DONE();
}
