#!/bin/sh
# job.node_reduce: the workers of a node reduce their gradients among themselves (MPI collectives) and
# each pushes only its share of the shards. On one node of 2 workers BSP ends bit-identical to the
# plain run while each worker sends half as much to the shards; on 2 nodes of 2 workers (ranks told
# apart with TESSERA_TEST_NODE, so they talk over the machine's address as across nodes) it learns
# what the plain 4-worker run learns; nodes with different worker counts are refused. Models with
# embedding tables too: their row gradients are merged per node.
. "$(dirname "$0")/lib.sh"

A="--servers 2 --workers 2 job.epochs=1 data.train_limit=12000"
# shellcheck disable=SC2086
run_job plain $A
# shellcheck disable=SC2086
run_job reduced $A job.node_reduce=1
cmp "$WORK/plain/params.bin" "$WORK/reduced/params.bin" || fail "node_reduce on one node should be bit-identical"
sent() { grep -o "worker done .*sent_mb=[0-9.]*" "$WORK/$1.log" | head -1 | sed 's/.*sent_mb=//'; }
p=$(sent plain) r=$(sent reduced)
/usr/bin/python3 -c 'import sys; p, r = map(float, sys.argv[1:]); sys.exit(0 if r <= 0.6 * p else 1)' "$p" "$r" ||
    fail "a reducing worker sent $r MB to the shards, the plain one $p MB"
echo "ok: one node: bit-identical, each worker sends $r MB instead of $p MB"
# Device memory (backend cpu-staged): the device path, NCCL's contracts carried out over MPI, and the
# host path a device backend takes without NCCL: the same bits as the plain run.
# shellcheck disable=SC2086
run_job reduced_dev $A job.node_reduce=1 backend.type=cpu-staged
[ "$(grep -c "node_reduce via mpi-staged" "$WORK/reduced_dev.log")" -eq 2 ] || fail "the staged workers did not take the device path"
cmp "$WORK/plain/params.bin" "$WORK/reduced_dev/params.bin" || fail "node_reduce's device path changed the bits"
# shellcheck disable=SC2086
TESSERA_TEST_NO_NCCL=1 run_job reduced_host $A job.node_reduce=1 backend.type=cpu-staged
grep -q "TESSERA_TEST_NO_NCCL is set" "$WORK/reduced_host.log" || fail "the fallback was not taken"
cmp "$WORK/plain/params.bin" "$WORK/reduced_host/params.bin" || fail "node_reduce's host path on device memory changed the bits"
echo "ok: one node, device memory: the device path and the host fallback are bit-identical"

# With embedding tables: each shard's owner merges the node's row gradients per id (in worker order)
# and pushes them with its dense share; on one node every test logit stays bit-identical.
"$TESSERA" datagen ctr --rows 20000 --slots 4 --vocab 500 --seed 5 --out "$WORK/ctr" >/dev/null
C="ctr_dlrm --servers 2 --workers 2 data.dir=$WORK/ctr data.sparse_features=4 job.epochs=1 job.save_test_logits=1"
# shellcheck disable=SC2086
run_job ctr_plain $C "layer emb.features=0-3"
# shellcheck disable=SC2086
run_job ctr_reduced $C "layer emb.features=0-3" job.node_reduce=1
for f in "$WORK"/ctr_plain/test-logits-*.f32; do
    cmp "$f" "$WORK/ctr_reduced/$(basename "$f")" || fail "node_reduce with tables changed the test logits"
done
cmp "$WORK/ctr_plain/params.bin" "$WORK/ctr_reduced/params.bin" || fail "node_reduce with tables changed the dense part"
echo "ok: with tables, one node: bit-identical test logits ($(json "$WORK/ctr_reduced/summary.json" test_auc))"
# shellcheck disable=SC2086
run_job ctr_reduced_dev $C "layer emb.features=0-3" job.node_reduce=1 backend.type=cpu-staged
cmp "$WORK/ctr_plain/params.bin" "$WORK/ctr_reduced_dev/params.bin" || fail "node_reduce's device path with tables changed the bits"
echo "ok: with tables, device path (cpu-staged): bit-identical"

# Two nodes of two workers, launched by hand: tessera train has no per-rank environment.
job="$(dirname "$0")/../../examples/fashion_mlp.ini"
B="$BUILD_DIR/bin"
launch() { # launch NAME NODE_B_WORKERS OVERRIDES...
    name=$1 nb=$2
    shift 2
    mkdir -p "$WORK/$name"
    mpiexec --allow-run-as-root --oversubscribe --bind-to none \
        -np 1 "$B/tessera-scheduler" "$job" --run-dir "$WORK/$name" "$@" : \
        -np 2 "$B/tessera-ps" "$job" --run-dir "$WORK/$name" "$@" : \
        -np 2 -x TESSERA_TEST_NODE=a "$B/tessera-worker" "$job" --run-dir "$WORK/$name" "$@" : \
        -np "$nb" -x TESSERA_TEST_NODE=b "$B/tessera-worker" "$job" --run-dir "$WORK/$name" "$@" \
        >"$WORK/$name.log" 2>&1
}
O="job.epochs=1 data.train_limit=12000"
# shellcheck disable=SC2086
run_job plain4 --servers 2 --workers 4 $O
# shellcheck disable=SC2086
launch two 2 $O job.node_reduce=1 || { tail -20 "$WORK/two.log" >&2; fail "the 2-node job failed"; }
grep -q "node_reduce node=1 of=2 local=1 of=2" "$WORK/two.log" || fail "the workers did not see 2 nodes of 2"
a=$(json "$WORK/plain4/summary.json" test_accuracy)
b=$(json "$WORK/two/summary.json" test_accuracy)
/usr/bin/python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= 0.01 else 1)' "$a" "$b" ||
    fail "2 nodes with node_reduce reached $b, 4 plain workers $a"
echo "ok: 2 nodes x 2 workers: test_accuracy $b (plain 4 workers: $a)"

rc=0
# shellcheck disable=SC2086
launch uneven 1 $O job.node_reduce=1 || rc=$?
[ $rc -ne 0 ] || fail "nodes of 2 and 1 workers should be refused"
grep -q "job.node_reduce needs the same number of workers on every node; nodes have 1 to 2" "$WORK/uneven.log" ||
    { tail -5 "$WORK/uneven.log" >&2; fail "no clear error for uneven nodes"; }
echo "ok: uneven nodes refused"
