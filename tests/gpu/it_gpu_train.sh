#!/bin/sh
# End-to-end training on the CUDA backend (label gpu): the default Fashion-MNIST MLP and the DLRM on
# generated click data train on the GPU (parameters and activations on the device, rows of the tables
# staged per batch) and reach the CPU run's test accuracy / AUC. Exit 77 (skipped) without a GPU or
# without a CUDA build.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/lib_gpu.sh"

require_gpus 1 "training on the GPU"

A="--servers 1 --workers 1 job.epochs=2 data.train_limit=30000"
# shellcheck disable=SC2086
run_job cpu $A
# shellcheck disable=SC2086
run_job gpu $A backend.type=cuda
c=$(json "$WORK/cpu/summary.json" test_accuracy)
g=$(json "$WORK/gpu/summary.json" test_accuracy)
echo "fashion_mlp test_accuracy cpu=$c cuda=$g examples/s cpu=$(json "$WORK/cpu/summary.json" train_examples_per_sec) cuda=$(json "$WORK/gpu/summary.json" train_examples_per_sec)"
/usr/bin/python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= 0.01 else 1)' "$c" "$g" ||
    fail "CUDA accuracy $g is not within 0.01 of the CPU's $c"

"$TESSERA" datagen ctr --rows 200000 --slots 8 --vocab 2000 --seed 3 --out "$WORK/data" >/dev/null
for b in cpu cuda; do
    run_job "ctr-$b" ctr_dlrm --servers 2 --workers 2 data.dir="$WORK/data" job.epochs=1 backend.type=$b
done
c=$(json "$WORK/ctr-cpu/summary.json" test_auc)
g=$(json "$WORK/ctr-cuda/summary.json" test_auc)
echo "ctr_dlrm test_auc cpu=$c cuda=$g"
/usr/bin/python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= 0.005 else 1)' "$c" "$g" ||
    fail "CUDA test_auc $g is not within 0.005 of the CPU's $c"
echo "ok: the CUDA backend trains both models to the CPU's results"
