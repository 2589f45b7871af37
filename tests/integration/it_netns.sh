#!/bin/sh
# Two nodes on one machine: network namespaces A and B on a bridge, each with its own address, reached
# by mpirun through an agent that runs orted inside them (`ip netns exec`). Node A runs the scheduler,
# a shard and 2 workers; node B a shard and 2 workers, with job.node_reduce (one pusher per node,
# shards reached over the bridge). Killing every process of node B is a node failure: the job dies,
# is relaunched from its newest checkpoint, and ends bit-identical to an uninterrupted run.
# Needs root and `ip netns` (exit 77, skipped, otherwise).
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] && command -v ip >/dev/null || { echo "SKIP: needs root and iproute2"; exit 77; }
ID=$$
NA="tsa$ID" NB="tsb$ID" BR="tsbr$ID"
NET="10.$((ID % 200 + 20)).$((ID / 200 % 250))"
cleanup() {
    for ns in $NA $NB; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    ip link del "$BR" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
if ! ip netns add "$NA" 2>/dev/null || ! ip netns add "$NB" 2>/dev/null ||
    ! ip link add "$BR" type bridge 2>/dev/null; then
    echo "SKIP: cannot create network namespaces and a bridge here"
    exit 77
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
done
A="$NET.11" B="$NET.12"
AGENT="$WORK/agent.sh"
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

job="$(dirname "$0")/../../examples/fashion_mlp.ini"
bin="$BUILD_DIR/bin"
O="job.epochs=2 job.node_reduce=1"
launch() { # launch NAME [--resume DIR]: the job in the background; $JOB_PID is mpirun's pid
    name=$1
    shift
    mkdir -p "$WORK/$name"
    r="--run-dir $WORK/$name $* $O"
    # shellcheck disable=SC2086
    mpirun --allow-run-as-root --oversubscribe --bind-to none --mca plm_rsh_agent "$AGENT" \
        --mca oob_tcp_if_include "$NET.0/24" --mca btl self,tcp --mca btl_tcp_if_include "$NET.0/24" \
        -np 1 --host "$A" "$bin/tessera-scheduler" "$job" $r : -np 1 --host "$A" "$bin/tessera-ps" "$job" $r : \
        -np 1 --host "$B" "$bin/tessera-ps" "$job" $r : -np 2 --host "$A:2" "$bin/tessera-worker" "$job" $r : \
        -np 2 --host "$B:2" "$bin/tessera-worker" "$job" $r >>"$WORK/$name.log" 2>&1 &
    JOB_PID=$!
}

launch ref checkpoint.every_steps=100
wait $JOB_PID || { grep -v "^\[" "$WORK/ref.log" | grep -iE "error|usage|unknown" | head -5 >&2; tail -5 "$WORK/ref.log" >&2; fail "the 2-node job failed"; }
grep -q "node_reduce node=1 of=2 local=1 of=2" "$WORK/ref.log" || fail "the workers did not see 2 nodes of 2"
grep -q "shard serving shard=1 of=2 .*endpoint=tcp://$B:" "$WORK/ref.log" || fail "shard 1 is not on node B's address"
acc=$(json "$WORK/ref/summary.json" test_accuracy)
at_least "$acc" 0.84 "2-node test_accuracy"

launch failed checkpoint.every_steps=100
wait_log failed "checkpoint committed step=200" 120
sleep "$(shuf -i 0-30 -n 1 | sed 's/^/0./')"
echo "node failure: killing every process of node B ($(ip netns pids "$NB" | wc -l) processes)"
for p in $(ip netns pids "$NB"); do kill -9 "$p" 2>/dev/null || true; done
if wait $JOB_PID; then fail "the job should die with its node"; fi
latest=$(cat "$WORK/failed/checkpoints/latest")
echo "relaunching from $latest"
launch failed checkpoint.every_steps=100 --resume "$WORK/failed/checkpoints/$latest"
wait $JOB_PID || { tail -20 "$WORK/failed.log" >&2; fail "the relaunched job failed"; }
cmp "$WORK/ref/params.bin" "$WORK/failed/params.bin" || fail "resumed after a node failure: parameters differ"
echo "ok: node B killed, relaunched from $latest, bit-identical to the uninterrupted 2-node run"
