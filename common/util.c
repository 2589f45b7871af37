#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "check.h"

double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double unix_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void rng_seed(rng_t *r, uint64_t seed) {
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t rng_next(rng_t *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t rng_below(rng_t *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do
        x = rng_next(r);
    while (x >= limit);
    return x % n;
}

void rng_shuffle_u32(rng_t *r, uint32_t *a, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rng_below(r, i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

uint64_t seed_derive(uint64_t seed, uint64_t a, uint64_t b) {
    uint64_t key[2] = {a, b};
    return XXH64(key, sizeof key, seed);
}

void init_uniform(float *out, size_t n, uint64_t seed, uint32_t tensor, uint64_t first, float bound) {
    for (size_t i = 0; i < n; i++) {
        uint64_t h = seed_derive(seed, tensor, first + i);
        float u = (float)(h >> 40) * (1.0f / 16777216.0f); /* 24 bits -> [0, 1) exactly */
        out[i] = (2.0f * u - 1.0f) * bound;
    }
}

void digest_hex(const void *data, size_t n, char hex[17]) {
    snprintf(hex, 17, "%016llx", (unsigned long long)XXH64(data, n, 0));
}

int mkdir_p(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -TS_EIO;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) && errno != EEXIST) return -TS_EIO;
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST) return -TS_EIO;
    return 0;
}

int write_file_atomic(const char *path, const void *data, size_t n) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp) return -TS_EIO;
    FILE *f = fopen(tmp, "wb");
    if (!f) return -TS_EIO;
    int ok = fwrite(data, 1, n, f) == n;
    ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -TS_EIO;
    }
    return 0;
}

int cli_parse_long(const char *cmd, const char *opt, const char *s, long min, long max, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "%s: %s takes an integer from %ld to %ld, not '%s'\n", cmd, opt, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_double(const char *cmd, const char *opt, const char *s, double min, double max, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < min || v > max) {
        fprintf(stderr, "%s: %s takes a number from %g to %g, not '%s'\n", cmd, opt, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_getopt_args(const char *cmd, int argc, char **argv, char **args) {
    args[0] = (char *)cmd;
    for (int i = 0; i < argc; i++)
        args[i + 1] = argv[i];
    args[argc + 1] = NULL;
    optind = 0; /* glibc: full reset, whatever ran getopt before */
    return argc + 1;
}

/* Loops over bits, kept simple so the compiler vectorises them. */
void bf16_from_f32(uint16_t *restrict dst, const float *restrict src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], sizeof u);
        uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        int nan = (u & 0x7fffffffu) > 0x7f800000u;
        dst[i] = (uint16_t)(nan ? (u >> 16) | 0x40u : rounded);
    }
}

void f32_from_bf16(float *restrict dst, const uint16_t *restrict src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, sizeof u);
    }
}
