#!/bin/sh
# Two nodes on one machine (tests/integration/netns_lib.sh): network namespaces A and B on a bridge,
# reached by mpirun through an agent that runs orted inside them. Node A runs the scheduler, a shard
# and 2 workers; node B a shard and 2 workers, with job.node_reduce (one pusher per node, shards
# reached over the bridge). Killing every process of node B is a node failure: the job dies, is
# relaunched from its newest checkpoint, and ends bit-identical to an uninterrupted run. Needs root
# and `ip netns` (exit 77, skipped, otherwise).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netns_lib.sh"

[ "$(id -u)" -eq 0 ] && command -v ip >/dev/null || { echo "SKIP: needs root and iproute2"; exit 77; }
trap 'netns_down; rm -rf "$WORK"' EXIT
rc=0
netns_up "$WORK" || rc=$?
[ $rc -eq 0 ] || exit $rc

job="$(dirname "$0")/../../examples/fashion_mlp.ini"
launch() { # launch NAME ARGS...
    name=$1
    shift
    mkdir -p "$WORK/$name"
    netns_launch "$WORK/$name.log" "$BUILD_DIR/bin" "$job" --run-dir "$WORK/$name" job.epochs=2 job.node_reduce=1 \
        checkpoint.every_steps=100 "$@"
}

launch ref
wait $JOB_PID || { grep -iE "error|usage" "$WORK/ref.log" | head -5 >&2; tail -5 "$WORK/ref.log" >&2; fail "the 2-node job failed"; }
grep -q "node_reduce node=1 of=2 local=1 of=2" "$WORK/ref.log" || fail "the workers did not see 2 nodes of 2"
grep -q "shard serving shard=1 of=2 .*endpoint=tcp://$B:" "$WORK/ref.log" || fail "shard 1 is not on node B's address"
at_least "$(json "$WORK/ref/summary.json" test_accuracy)" 0.84 "2-node test_accuracy"

launch failed
wait_log failed "checkpoint committed step=200" 120
sleep "$(shuf -i 0-30 -n 1 | sed 's/^/0./')"
echo "node failure: killing every process of node B ($(ip netns pids "$NB" | wc -l) processes)"
netns_kill "$NB"
if wait $JOB_PID; then fail "the job should die with its node"; fi
latest=$(cat "$WORK/failed/checkpoints/latest")
echo "relaunching from $latest"
launch failed --resume "$WORK/failed/checkpoints/$latest"
wait $JOB_PID || { tail -20 "$WORK/failed.log" >&2; fail "the relaunched job failed"; }
cmp "$WORK/ref/params.bin" "$WORK/failed/params.bin" || fail "resumed after a node failure: parameters differ"
echo "ok: node B killed, relaunched from $latest, bit-identical to the uninterrupted 2-node run"

# Without node_reduce each worker attaches its exchange region to the shard of its own node only
# (net.local_exchange), and reaches the other node's over the bridge: the result is still the plain
# one-host run's, bit for bit.
launch mixed job.node_reduce=0 job.epochs=1 checkpoint.every_steps=0
wait $JOB_PID || { tail -20 "$WORK/mixed.log" >&2; fail "the 2-node job without node_reduce failed"; }
[ "$(grep -c "local_exchange worker=[0-3] shards=1 of=2" "$WORK/mixed.log")" -eq 4 ] ||
    fail "each worker should have attached to its own node's shard only"
grep -q "attached=0 device=0 why=the worker runs on another host or network namespace" "$WORK/mixed.log" ||
    fail "a shard did not say why it keeps another node's worker on the wire"
run_job onehost --servers 2 --workers 4 job.epochs=1
cmp "$WORK/onehost/params.bin" "$WORK/mixed/params.bin" || fail "2 nodes, regions on one side: parameters differ"
echo "ok: 2 nodes: each worker exchanges through its own node's shard's mapping and over the bridge with the other; bit-identical to one host"
