#include "cluster.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "check.h"

typedef struct {
    int role;
    int port;
    char node[96]; /* hostname + network namespace: ranks with equal node talk over loopback */
    char ip[INET_ADDRSTRLEN];
} peer_info_t;

const char *role_name(role_t role) {
    switch (role) {
    case ROLE_SCHEDULER: return "scheduler";
    case ROLE_PS: return "ps";
    case ROLE_WORKER: return "worker";
    }
    return "?";
}

/* IPv4 address of `iface`, or of the first up, non-loopback interface when iface is empty. */
static int local_ip(const char *iface, char ip[INET_ADDRSTRLEN]) {
    struct ifaddrs *ifs = NULL;
    snprintf(ip, INET_ADDRSTRLEN, "127.0.0.1");
    if (getifaddrs(&ifs)) return iface[0] ? -TS_EIO : 0;
    int found = 0;
    for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP)) continue;
        if (iface[0] ? strcmp(i->ifa_name, iface) != 0 : (i->ifa_flags & IFF_LOOPBACK) != 0) continue;
        inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, ip, INET_ADDRSTRLEN);
        found = 1;
    }
    freeifaddrs(ifs);
    return (iface[0] && !found) ? -TS_EINVAL : 0;
}

static void node_key(char *out, size_t n) {
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    struct stat st;
    unsigned long long ns = stat("/proc/self/ns/net", &st) == 0 ? (unsigned long long)st.st_ino : 0;
    /* Test hook: TESSERA_TEST_NODE makes ranks of one machine count as different nodes (they then talk
     * over the machine's address, as across nodes). */
    const char *test_node = getenv("TESSERA_TEST_NODE");
    snprintf(out, n, "%s/%llu%s%s", host, ns, test_node ? "/" : "", test_node ? test_node : "");
}

int cluster_bootstrap(cluster_t *c, role_t role, void *router, const char *iface, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->role = role;
    c->role_comm = MPI_COMM_NULL;
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &c->world_rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &c->world_size));

    peer_info_t me = {.role = role, .port = 0};
    node_key(me.node, sizeof me.node);
    int local_rc = local_ip(iface, me.ip);
    if (local_rc == 0 && router) {
        char ep[CLUSTER_ENDPOINT_LEN];
        size_t len = sizeof ep;
        if (ZMQ_CHECK(zmq_bind(router, "tcp://*:*")) < 0 ||
            ZMQ_CHECK(zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, ep, &len)) < 0) {
            local_rc = -TS_EIO;
        } else {
            const char *colon = strrchr(ep, ':');
            me.port = colon ? (int)strtol(colon + 1, NULL, 10) : 0;
        }
    }
    /* Everyone learns whether anyone failed locally, so all ranks stop together with a message. */
    int any_fail = local_rc != 0, global_fail = 0;
    MPI_CHECK(MPI_Allreduce(&any_fail, &global_fail, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    if (global_fail) {
        if (local_rc == -TS_EINVAL)
            snprintf(err, errlen, "network interface '%s' has no IPv4 address", iface);
        else if (local_rc)
            snprintf(err, errlen, "cannot bind a ZeroMQ socket on all interfaces");
        else
            snprintf(err, errlen, "another rank failed to bootstrap");
        return local_rc ? local_rc : -TS_EIO;
    }

    peer_info_t *all = XCALLOC((size_t)c->world_size, sizeof *all);
    MPI_CHECK(MPI_Allgather(&me, sizeof me, MPI_BYTE, all, sizeof me, MPI_BYTE, MPI_COMM_WORLD));

    int n_sched = 0;
    for (int r = 0; r < c->world_size; r++) {
        if (all[r].role == ROLE_SCHEDULER) n_sched++;
        if (all[r].role == ROLE_PS) c->n_ps++;
        if (all[r].role == ROLE_WORKER) c->n_workers++;
    }
    if (n_sched != 1 || c->n_ps < 1 || c->n_workers < 1) {
        snprintf(
            err, errlen,
            "a job needs exactly 1 scheduler, >= 1 ps and >= 1 worker; got %d, %d and %d "
            "(launch: mpirun -np 1 tessera-scheduler JOB : -np S tessera-ps JOB : -np W tessera-worker JOB)",
            n_sched, c->n_ps, c->n_workers);
        free(all);
        return -TS_EINVAL;
    }
    c->ps_endpoints = XCALLOC((size_t)c->n_ps, sizeof *c->ps_endpoints);
    int ps_i = 0, idx[3] = {0, 0, 0};
    for (int r = 0; r < c->world_size; r++) {
        const char *host = strcmp(all[r].node, me.node) ? all[r].ip : "127.0.0.1";
        if (r == c->world_rank) {
            c->index = idx[all[r].role];
            if (all[r].port)
                snprintf(c->self_endpoint, sizeof c->self_endpoint, "tcp://%s:%d", me.ip, all[r].port);
        }
        idx[all[r].role]++;
        if (all[r].role == ROLE_SCHEDULER) {
            c->sched_rank = r;
            snprintf(c->sched_endpoint, sizeof c->sched_endpoint, "tcp://%s:%d", host, all[r].port);
        } else if (all[r].role == ROLE_PS) {
            snprintf(c->ps_endpoints[ps_i++], CLUSTER_ENDPOINT_LEN, "tcp://%s:%d", host, all[r].port);
        }
    }
    /* Worker nodes, in the order of their first worker: seen[i] is node i's first worker. */
    int *seen = XCALLOC((size_t)c->world_size, sizeof *seen);
    for (int r = 0; r < c->world_size; r++) {
        if (all[r].role != ROLE_WORKER) continue;
        int i = 0;
        while (i < c->n_worker_nodes && strcmp(all[seen[i]].node, all[r].node))
            i++;
        if (i == c->n_worker_nodes) seen[c->n_worker_nodes++] = r;
        if (r == c->world_rank) c->node_index = i;
    }
    free(seen);
    for (int r = 0; r < c->world_size && role == ROLE_WORKER; r++)
        if (all[r].role == ROLE_WORKER && !strcmp(all[r].node, me.node)) {
            if (r < c->world_rank) c->node_local++;
            c->node_size++;
        }
    free(all);
    MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, (int)role, c->world_rank, &c->role_comm));
    return 0;
}

void cluster_free(cluster_t *c) {
    if (!c) return;
    if (c->role_comm != MPI_COMM_NULL) MPI_Comm_free(&c->role_comm);
    free(c->ps_endpoints);
    memset(c, 0, sizeof *c);
    c->role_comm = MPI_COMM_NULL;
}

void cluster_pick_device(const cluster_t *c) {
    MPI_Comm node;
    int local = 0;
    MPI_CHECK(MPI_Comm_split_type(c->role_comm, MPI_COMM_TYPE_SHARED, c->index, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_rank(node, &local));
    MPI_CHECK(MPI_Comm_free(&node));
    char dev[16];
    snprintf(dev, sizeof dev, "%d", local);
    setenv("TESSERA_CUDA_DEVICE", dev, 0);
}
