#define _GNU_SOURCE
#include "xregion.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

#define XREGION_ALIGN 4096
#define XREGION_NAME  "tessera-exchange"
/* Its size is fixed once made: a shard mapping it cannot have it shrink under its reads (SIGBUS). */
#define XREGION_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

size_t xregion_grads_offset(size_t n_floats) {
    size_t a = XREGION_ALIGN / sizeof(float);
    return (n_floats + a - 1) / a * a;
}

size_t xregion_bytes(size_t n_floats) {
    return (xregion_grads_offset(n_floats) + xregion_grads_offset(n_floats ? n_floats : 1)) * sizeof(float);
}

int xregion_create(xregion_t *r, size_t bytes, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    r->fd = memfd_create(XREGION_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (r->fd < 0) {
        snprintf(err, errlen, "memfd_create: %s", strerror(errno));
        return -TS_EIO;
    }
    if (ftruncate(r->fd, (off_t)bytes) || fcntl(r->fd, F_ADD_SEALS, XREGION_SEALS)) {
        snprintf(err, errlen, "cannot size and seal the exchange region (%zu bytes): %s", bytes,
                 strerror(errno));
        close(r->fd);
        r->fd = -1;
        return -TS_EIO;
    }
    r->base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
    if (r->base == MAP_FAILED) {
        snprintf(err, errlen, "cannot map the exchange region (%zu bytes): %s", bytes, strerror(errno));
        r->base = NULL;
        close(r->fd);
        r->fd = -1;
        return -TS_EIO;
    }
    r->bytes = bytes;
    snprintf(r->path, sizeof r->path, "/proc/%ld/fd/%d", (long)getpid(), r->fd);
    return 0;
}

int xregion_open(xregion_t *r, const char *path, size_t bytes, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    r->fd = -1;
    /* Only what xregion_create made: a peer must not have a shard map (and write) any file it names. The
     * file is first only located (O_PATH: nothing of it runs, a device or a pipe neither opens nor
     * blocks), then checked by the name its descriptor has here, so that the peer cannot swap another
     * in between, and only then opened for reading and writing, through that descriptor. */
    int at = open(path, O_PATH | O_CLOEXEC);
    if (at < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -TS_EIO;
    }
    char self[64], target[128] = "";
    snprintf(self, sizeof self, "/proc/self/fd/%d", at);
    ssize_t n = readlink(self, target, sizeof target - 1);
    struct stat st;
    int is_region = n > 0 && !strncmp(target, "/memfd:" XREGION_NAME, strlen("/memfd:" XREGION_NAME));
    if (!is_region || fstat(at, &st) || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a Tessera exchange region", path);
        close(at);
        return -TS_EINVAL;
    }
    int fd = open(self, O_RDWR | O_CLOEXEC);
    close(at);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -TS_EIO;
    }
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || (seals & XREGION_SEALS) != XREGION_SEALS) {
        snprintf(err, errlen, "%s is not sealed to its size (a region another build made?)", path);
        close(fd);
        return -TS_EINVAL;
    }
    if ((size_t)st.st_size != bytes) {
        snprintf(err, errlen, "%s holds %lld bytes; the model's region is %zu", path, (long long)st.st_size,
                 bytes);
        close(fd);
        return -TS_EINVAL;
    }
    r->base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd); /* the mapping keeps the file */
    if (r->base == MAP_FAILED) {
        snprintf(err, errlen, "cannot map %s: %s", path, strerror(errno));
        r->base = NULL;
        return -TS_EIO;
    }
    r->bytes = bytes;
    snprintf(r->path, sizeof r->path, "%s", path);
    return 0;
}

void xregion_close(xregion_t *r) {
    if (r->base) munmap(r->base, r->bytes);
    if (r->fd > 0) close(r->fd);
    memset(r, 0, sizeof *r);
    r->fd = -1;
}

void xregion_host_key(char key[XREGION_KEY_LEN]) {
    char boot[64] = "?";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (!fgets(boot, sizeof boot, f)) snprintf(boot, sizeof boot, "?");
        fclose(f);
    }
    boot[strcspn(boot, "\n")] = 0;
    /* The network namespace says which host; the pid namespace, whether /proc/PID names the same process
     * (containers of one pod share the first, not the second). */
    struct stat st;
    unsigned long long net = stat("/proc/self/ns/net", &st) ? 0 : (unsigned long long)st.st_ino;
    unsigned long long pid = stat("/proc/self/ns/pid", &st) ? 0 : (unsigned long long)st.st_ino;
    snprintf(key, XREGION_KEY_LEN, "%s/net:%llu/pid:%llu", boot, net, pid);
}
