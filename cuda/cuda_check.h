/* Check wrappers for CUDA, cuBLAS and NCCL calls: a failure is logged with the call, the file and the line.
 * The backend's ops return nothing, so a failure inside one (a lost device, a bad launch, an illegal
 * address) is fatal: CUDA_CHECK and CUBLAS_CHECK abort. CUDA_TRY and CUBLAS_TRY write the failure into a
 * caller's message buffer instead and evaluate to -1 (0 on success), for opening the device. */
#ifndef TESSERA_CUDA_CHECK_H
#define TESSERA_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

extern "C" {
#include "log.h"
}

static inline void cuda_check(cudaError_t e, const char *call, const char *file, int line) {
    if (e == cudaSuccess) return;
    log_error("CUDA call failed call=%s file=%s line=%d error=%s msg=\"%s\"", call, file, line,
              cudaGetErrorName(e), cudaGetErrorString(e));
    abort();
}

static inline void cublas_check(cublasStatus_t s, const char *call, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return;
    log_error("cuBLAS call failed call=%s file=%s line=%d error=%s", call, file, line,
              cublasGetStatusString(s));
    abort();
}

static inline int cuda_try(cudaError_t e, const char *call, const char *file, int line, char *err,
                           size_t errlen) {
    if (e == cudaSuccess) return 0;
    snprintf(err, errlen, "backend 'cuda': %s failed: %s (%s:%d)", call, cudaGetErrorString(e), file, line);
    (void)cudaGetLastError(); /* clear a non-sticky error so later calls do not report it */
    return -1;
}

static inline int cublas_try(cublasStatus_t s, const char *call, const char *file, int line, char *err,
                             size_t errlen) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    snprintf(err, errlen, "backend 'cuda': %s failed: %s (%s:%d)", call, cublasGetStatusString(s), file,
             line);
    return -1;
}

#define CUDA_CHECK(call)   cuda_check((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cublas_check((call), #call, __FILE__, __LINE__)
/* After a kernel launch: catches a bad launch configuration at once; faults inside the kernel surface
 * at the next synchronising call. */
#define CUDA_CHECK_LAUNCH()           cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
#define CUDA_TRY(call, err, errlen)   cuda_try((call), #call, __FILE__, __LINE__, (err), (errlen))
#define CUBLAS_TRY(call, err, errlen) cublas_try((call), #call, __FILE__, __LINE__, (err), (errlen))

/* NCCL's, for the files that include <nccl.h> before this header (cuda/nccl.cu): the rest of cuda/
 * builds without NCCL installed. NCCL_CHECK aborts; NCCL_TRY writes the failure into a message buffer
 * and evaluates to -1 (0 on success), for opening the communicator. */
#ifdef NCCL_H_
static inline void nccl_check(ncclResult_t r, const char *call, const char *file, int line) {
    if (r == ncclSuccess) return;
    log_error("NCCL call failed call=%s file=%s line=%d error=\"%s\"", call, file, line,
              ncclGetErrorString(r));
    abort();
}

static inline int nccl_try(ncclResult_t r, const char *call, const char *file, int line, char *err,
                           size_t errlen) {
    if (r == ncclSuccess) return 0;
    snprintf(err, errlen, "nccl: %s failed: %s (%s:%d)", call, ncclGetErrorString(r), file, line);
    return -1;
}

#define NCCL_CHECK(call)            nccl_check((call), #call, __FILE__, __LINE__)
#define NCCL_TRY(call, err, errlen) nccl_try((call), #call, __FILE__, __LINE__, (err), (errlen))
#endif

#endif
