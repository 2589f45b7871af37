/* The part of NCCL that cuda/nccl.cu uses, for the host emulator (see cuda_runtime.h): a communicator of
 * processes on one machine meets in POSIX shared memory named by the unique id. Collectives are queued on
 * the stream like any operation and, when they run, wait for every rank (a process-shared barrier), so
 * each rank must run them in the same order, as NCCL requires. Reductions add the ranks' values in rank
 * order. As NCCL does, init refuses two ranks on one device. */
#ifndef NCCL_H_
#define NCCL_H_

#include "cuda_runtime.h"

enum ncclResult_t {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
};
enum ncclDataType_t { ncclFloat = 7 };
enum ncclRedOp_t { ncclSum = 0 };
#define NCCL_UNIQUE_ID_BYTES 128
struct ncclUniqueId {
    char internal[NCCL_UNIQUE_ID_BYTES];
};
typedef struct ts_emu_nccl *ncclComm_t;

ncclResult_t ncclGetUniqueId(ncclUniqueId *id);
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
ncclResult_t ncclCommFinalize(ncclComm_t comm);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);
const char *ncclGetErrorString(ncclResult_t r);
ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t count, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t s);
ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t s);

#endif
