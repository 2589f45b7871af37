/* MPI bootstrap: roles, indices within roles, and the ZeroMQ endpoints of the scheduler and shards,
 * exchanged once with MPI_Allgather. After this MPI only carries collectives among workers. */
#ifndef TESSERA_CLUSTER_H
#define TESSERA_CLUSTER_H

#include <mpi.h>

#define CLUSTER_ENDPOINT_LEN 128

typedef enum { ROLE_SCHEDULER = 0, ROLE_PS = 1, ROLE_WORKER = 2 } role_t;

typedef struct {
    int world_rank, world_size;
    role_t role;
    int index; /* position among the ranks of the same role, in world-rank order */
    int n_ps, n_workers;
    int sched_rank;                           /* world rank of the scheduler */
    char self_endpoint[CLUSTER_ENDPOINT_LEN]; /* where this rank's ROUTER is reachable (TCP) */
    char sched_endpoint[CLUSTER_ENDPOINT_LEN];
    char (*ps_endpoints)[CLUSTER_ENDPOINT_LEN]; /* n_ps entries */
    MPI_Comm role_comm;                         /* the ranks of my role */
    /* Workers by node (equal node keys: hostname + network namespace), nodes in order of their first
     * worker: how many nodes have workers, and for a worker its node's index, its index among the
     * node's workers and their count. */
    int n_worker_nodes;
    int node_index, node_local, node_size;
} cluster_t;

const char *role_name(role_t role);

/* Collective over MPI_COMM_WORLD. `router` is this rank's bound-to-nothing-yet ROUTER socket (NULL
 * for workers): it is bound to every interface (tcp, wildcard address, ephemeral port) and its address
 * published. Peers on the same node and network namespace are reached over 127.0.0.1; others at the address
 * of `iface` (or the first non-loopback IPv4 interface when `iface` is empty). Returns 0, or -TS_EINVAL
 * (wrong role counts) / -TS_EIO with a message; errors are the same on all ranks where the cause is global.
 */
int cluster_bootstrap(cluster_t *c, role_t role, void *router, const char *iface, char *err, size_t errlen);
void cluster_free(cluster_t *c);

/* One GPU per rank of a node: unless TESSERA_CUDA_DEVICE is set already, sets it to this rank's index
 * among the ranks of its role on its node (the CUDA backend takes it modulo the GPUs it sees).
 * Collective over c->role_comm. */
void cluster_pick_device(const cluster_t *c);

#endif
