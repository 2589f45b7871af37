/* Small helpers: clocks, the seeded RNG, deterministic parameter initialisation, files. */
#ifndef TESSERA_UTIL_H
#define TESSERA_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Monotonic seconds. */
double now_s(void);
/* Wall-clock seconds since the epoch (for timestamps others read, such as process_start_time_seconds). */
double unix_s(void);

/* xoshiro256** seeded through splitmix64: fast, good, and reproducible across platforms. */
typedef struct {
    uint64_t s[4];
} rng_t;

void rng_seed(rng_t *r, uint64_t seed);
uint64_t rng_next(rng_t *r);
/* Uniform in [0, n) without modulo bias. */
uint64_t rng_below(rng_t *r, uint64_t n);
/* Fisher-Yates shuffle of `n` indices. */
void rng_shuffle_u32(rng_t *r, uint32_t *a, size_t n);

/* A seed for one purpose, derived by hashing (seed, a, b) with xxHash. */
uint64_t seed_derive(uint64_t seed, uint64_t a, uint64_t b);

/* Fills `out[i]`, i in [0, n), with U(-bound, bound) values that depend only on
 * (seed, tensor, first + i): a shard can initialise any row block without the rest of the tensor. */
void init_uniform(float *out, size_t n, uint64_t seed, uint32_t tensor, uint64_t first, float bound);

/* xxh64 of `n` bytes, as 16 hex digits into `hex` (17 bytes). */
void digest_hex(const void *data, size_t n, char hex[17]);

/* mkdir -p. Returns 0 or -TS_EIO with errno set. */
int mkdir_p(const char *path);

/* Writes `n` bytes to `path` through a temporary file and rename, so readers never see a partial
 * file. Returns 0 or -TS_EIO. */
int write_file_atomic(const char *path, const void *data, size_t n);

/* Command-line numbers, checked: the whole of `s` is an integer (a number) in [min, max]. 0, or -1 after
 * printing "CMD: OPT takes ..." to stderr. */
int cli_parse_long(const char *cmd, const char *opt, const char *s, long min, long max, long *out);
int cli_parse_double(const char *cmd, const char *opt, const char *s, double min, double max, double *out);

/* A subcommand's arguments for getopt_long: args[0] = cmd, then argv[0..argc), then NULL (args must
 * hold argc + 2), and getopt reset to start over. Returns argc + 1, the count to give getopt_long. */
int cli_getopt_args(const char *cmd, int argc, char **argv, char **args);

/* bfloat16: the top half of a float32. bf16_from_f32 rounds to nearest, ties to even (NaN stays NaN);
 * f32_from_bf16 is exact. */
void bf16_from_f32(uint16_t *dst, const float *src, size_t n);
void f32_from_bf16(float *dst, const uint16_t *src, size_t n);

#endif
