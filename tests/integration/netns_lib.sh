# Two "nodes" on one machine (sourced by it_netns.sh and bench/node_reduce_bench.sh): network namespaces
# NA and NB on a bridge, each with its own address (A, B), and an mpirun agent (AGENT) that runs
# commands inside them, as ssh would on other hosts. Needs root. netns_up returns 77 when namespaces
# or bridges cannot be made here; netns_down removes everything (kill every process of the nodes).

# netns_up DIR [RATE]: sets NA NB BR NET A B AGENT; RATE (e.g. 200mbit) limits each node's link (tc tbf).
netns_up() {
    ID=$$
    NA="tsa$ID" NB="tsb$ID" BR="tsbr$ID"
    NET="10.$((ID % 200 + 20)).$((ID / 200 % 250))"
    if ! ip netns add "$NA" 2>/dev/null || ! ip netns add "$NB" 2>/dev/null ||
        ! ip link add "$BR" type bridge 2>/dev/null; then
        echo "SKIP: cannot create network namespaces and a bridge here"
        return 77
    fi
    ip addr add "$NET.1/24" dev "$BR"
    ip link set "$BR" up
    i=10
    for ns in $NA $NB; do
        i=$((i + 1))
        ip link add "v$ns" type veth peer name eth0 netns "$ns"
        ip link set "v$ns" master "$BR" up
        ip netns exec "$ns" ip addr add "$NET.$i/24" dev eth0
        ip netns exec "$ns" ip link set eth0 up
        ip netns exec "$ns" ip link set lo up
        if [ -n "${2:-}" ]; then # both directions of the node's link: its eth0 and the bridge port
            ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$2" burst 256kb latency 50ms
            tc qdisc add dev "v$ns" root tbf rate "$2" burst 256kb latency 50ms
        fi
    done
    A="$NET.11" B="$NET.12"
    # Links come up asynchronously: wait for every end, at most 10 s, before the first mpirun.
    for _ in $(seq 100); do
        up=1
        for ns in $NA $NB; do
            [ "$(cat "/sys/class/net/v$ns/operstate" 2>/dev/null)" = up ] || up=0
            [ "$(ip netns exec "$ns" cat /sys/class/net/eth0/operstate 2>/dev/null)" = up ] || up=0
        done
        [ "$(cat "/sys/class/net/$BR/operstate" 2>/dev/null)" = up ] || up=0
        [ $up -eq 1 ] && break
        sleep 0.1
    done
    AGENT="$1/agent.sh"
    cat >"$AGENT" <<AG
#!/bin/sh
# mpirun's remote shell: HOST CMD... runs CMD in that host's network namespace.
host=\$1
shift
case \$host in
    $A) ns=$NA ;;
    $B) ns=$NB ;;
    *) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" sh -c "\$*"
AG
    chmod +x "$AGENT"
}

netns_kill() { # netns_kill NS: SIGKILL every process of the node
    for p in $(ip netns pids "$1" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
}

netns_down() {
    for ns in ${NA:-} ${NB:-}; do
        netns_kill "$ns"
        ip netns del "$ns" 2>/dev/null || true
    done
    [ -z "${BR:-}" ] || ip link del "$BR" 2>/dev/null || true
}

# netns_launch LOG BIN JOB ARGS...: mpirun in the background ($JOB_PID) with the scheduler, a shard and
# 2 workers on node A, a shard and 2 workers on node B; ARGS go to every program.
netns_launch() {
    log=$1 bin=$2 job=$3
    shift 3
    # rtc_hwloc_vmhole none, as tessera train passes it (why: client/tessera.c, cmd_train).
    mpirun --allow-run-as-root --oversubscribe --bind-to none --mca plm_rsh_agent "$AGENT" \
        --mca rtc_hwloc_vmhole none --mca oob_tcp_if_include "$NET.0/24" \
        --mca btl self,tcp --mca btl_tcp_if_include "$NET.0/24" \
        -np 1 --host "$A" "$bin/tessera-scheduler" "$job" "$@" : -np 1 --host "$A" "$bin/tessera-ps" "$job" "$@" : \
        -np 1 --host "$B" "$bin/tessera-ps" "$job" "$@" : -np 2 --host "$A:2" "$bin/tessera-worker" "$job" "$@" : \
        -np 2 --host "$B:2" "$bin/tessera-worker" "$job" "$@" >>"$log" 2>&1 &
    JOB_PID=$!
}
