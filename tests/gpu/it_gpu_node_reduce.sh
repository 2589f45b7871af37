#!/bin/sh
# job.node_reduce on GPU workers (label gpu): two workers of one node, one GPU each, reduce-scatter
# their gradients and all-gather their parameters between the GPUs through NCCL (the log must say so)
# and reach the test accuracy of the same job without node_reduce. Exit 77 (skipped) without 2 GPUs or
# without a usable CUDA build. Then the DLRM, whose parameters must be the plain run's bits.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/lib_gpu.sh"

require_gpus 2 "node_reduce over NCCL"

A="--servers 2 --workers 2 job.epochs=1 data.train_limit=12000 backend.type=cuda"
# shellcheck disable=SC2086
run_job plain $A
# shellcheck disable=SC2086
run_job reduced $A job.node_reduce=1
n=$(grep -c "node_reduce via nccl" "$WORK/reduced.log" || true)
[ "$n" -eq 2 ] || { grep "node_reduce" "$WORK/reduced.log" >&2; fail "$n of 2 workers reduced via NCCL"; }
p=$(json "$WORK/plain/summary.json" test_accuracy)
r=$(json "$WORK/reduced/summary.json" test_accuracy)
same=no
cmp -s "$WORK/plain/params.bin" "$WORK/reduced/params.bin" && same=yes
echo "fashion_mlp on 2 GPUs test_accuracy plain=$p node_reduce=$r params_bit_identical=$same"
/usr/bin/python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= 0.01 else 1)' "$p" "$r" ||
    fail "node_reduce via NCCL reached $r, the plain GPU run $p"
# The DLRM: row gradients summed per id across the node, dense ones through NCCL; one node, so the
# parameters are the plain run's bits.
"$TESSERA" datagen ctr --rows 20000 --slots 8 --vocab 2000 --seed 3 --out "$WORK/data" >/dev/null
C="ctr_dlrm --servers 2 --workers 2 data.dir=$WORK/data job.epochs=1 backend.type=cuda"
# shellcheck disable=SC2086
run_job ctr-plain $C
# shellcheck disable=SC2086
run_job ctr-reduced $C job.node_reduce=1
n=$(grep -c "node_reduce via nccl" "$WORK/ctr-reduced.log" || true)
[ "$n" -eq 2 ] || fail "DLRM: $n of 2 workers reduced via NCCL"
cmp "$WORK/ctr-plain/params.bin" "$WORK/ctr-reduced/params.bin" || fail "DLRM: node_reduce via NCCL differs from the plain run"
echo "ok: node_reduce via NCCL on 2 GPUs matches the plain run (MLP within 0.01, DLRM bit for bit)"
