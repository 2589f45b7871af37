/* A worker's exchange region (net.local_exchange): a shared-memory file holding its parameters and
 * gradients in the model's flat layout, which shards on the same host map and read and write in place
 * of sending the bytes over ZeroMQ (proto/tessera.proto, KIND_ATTACH). */
#ifndef TESSERA_XREGION_H
#define TESSERA_XREGION_H

#include <stddef.h>

#define XREGION_PATH_LEN 64
#define XREGION_KEY_LEN  96

typedef struct {
    void *base;
    size_t bytes;
    int fd;                      /* the creator's file (-1 for a mapping opened from a path) */
    char path[XREGION_PATH_LEN]; /* where others open it: /proc/<pid>/fd/<fd> */
    int pinned;                  /* its user registered it with a device (cudaHostRegister) */
} xregion_t;

/* The region of a model of n_floats: parameters at float 0, gradients from the next 4 KiB boundary. */
size_t xregion_grads_offset(size_t n_floats); /* in floats */
size_t xregion_bytes(size_t n_floats);

/* Creates a zero-filled region of `bytes` (memfd_create), mapped read-write. 0, or -TS_EIO with a
 * message. */
int xregion_create(xregion_t *r, size_t bytes, char *err, size_t errlen);

/* Maps the region at `path`, which must hold exactly `bytes`. 0, or -TS_EIO / -TS_EINVAL with a
 * message saying what failed. */
int xregion_open(xregion_t *r, const char *path, size_t bytes, char *err, size_t errlen);

/* Unmaps (and, for the creator, closes) it; safe on a zeroed region. */
void xregion_close(xregion_t *r);

/* Where this process runs: the kernel's boot id and the inode of its network namespace. Two processes
 * with the same key are on one host and one "node" (a network namespace stands for a node in tests). */
void xregion_host_key(char key[XREGION_KEY_LEN]);

#endif
