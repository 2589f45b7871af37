#!/bin/sh
# End-to-end training on the CUDA backend (label gpu): the default Fashion-MNIST MLP and the DLRM on
# generated click data train on the GPU (parameters and activations on the device, rows of the tables
# staged per batch) and reach the CPU run's test accuracy / AUC. GPU runs repeat bit for bit (the
# embedding backward pass sums each row in bag order; cuBLAS is deterministic on one GPU), and a
# SIGUSR1 stop + --resume auto on the GPU ends bit-identical to the uninterrupted GPU run. Shards that
# step their slices on the device (ps.device) give the CPU shards' bits, and checkpoint and resume
# their optimizer state exactly, and serve what they trained; the exchange through the pinned shared
# region (on cuda: the worker's device memory, CUDA IPC) gives the wire's bits.
# Exit 77
# (skipped) without a GPU or without a CUDA build.
# TESSERA_GPU_TEST_BACKEND=cpu-staged runs the same script without a GPU (integration.gpu_train_staged:
# the device path on the CPU's arithmetic); TESSERA_GPU_TEST_CTR_ROWS sizes the click data (200000) and
# TESSERA_GPU_TEST_TRAIN_LIMIT the Fashion-MNIST runs (30000 examples).
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/lib_gpu.sh"

BE=${TESSERA_GPU_TEST_BACKEND:-cuda}
ROWS=${TESSERA_GPU_TEST_CTR_ROWS:-200000}
LIMIT=${TESSERA_GPU_TEST_TRAIN_LIMIT:-30000}
[ "$BE" != cuda ] || require_gpus 1 "training on the GPU"

# Buckets of 100 KiB: the MLP's gradient leaves in parts (copied to pinned memory on the copy stream
# while the backward pass runs), which the default 1 MiB would not split (one part: layers 2 and 3).
A="--servers 1 --workers 1 job.epochs=2 data.train_limit=$LIMIT net.push_bucket_mb=0.1"
# shellcheck disable=SC2086
run_job cpu $A
# shellcheck disable=SC2086
run_job gpu $A backend.type=$BE
c=$(json "$WORK/cpu/summary.json" test_accuracy)
g=$(json "$WORK/gpu/summary.json" test_accuracy)
echo "fashion_mlp test_accuracy cpu=$c $BE=$g examples/s cpu=$(json "$WORK/cpu/summary.json" train_examples_per_sec) $BE=$(json "$WORK/gpu/summary.json" train_examples_per_sec)"
/usr/bin/python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= 0.01 else 1)' "$c" "$g" ||
    fail "$BE accuracy $g is not within 0.01 of the CPU's $c"

# bfloat16 on the wire both ways from a device worker: learns what float32 learns.
# shellcheck disable=SC2086
run_job bf16 $A backend.type=$BE net.grad_dtype=bf16 net.param_dtype=bf16
grep -q "grad_rounding=device" "$WORK/bf16.log" || fail "the $BE worker did not round its gradients on the device"
grep -q "param_widening=device" "$WORK/bf16.log" || fail "the $BE worker did not widen its parameters on the device"
b=$(json "$WORK/bf16/summary.json" test_accuracy)
echo "fashion_mlp test_accuracy $BE f32=$g bf16=$b"
/usr/bin/python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= 0.01 else 1)' "$g" "$b" ||
    fail "$BE with bfloat16 on the wire reached $b, float32 $g"

# Shards stepping on the device: the optimizer kernel rounds like the CPU, so the bits are the same.
# shellcheck disable=SC2086
run_job psdev $A backend.type=$BE ps.device=$BE
grep -q "device=$BE" "$WORK/psdev.log" || fail "the shards do not report device=$BE"
grep -q "parts_per_step=[1-9]" "$WORK/gpu.log" || fail "the $BE run sent no gradient parts"
cmp "$WORK/gpu/params.bin" "$WORK/psdev/params.bin" || fail "shards on $BE differ from shards on the CPU"
echo "ok: shards stepping on $BE give the CPU shards' bits"

# The worker's pinned staging buffers are its exchange region, which the shards map (they pin their
# mapping too when they step on the device); on cuda the shards map the worker's device memory instead
# (CUDA IPC). Over the wire instead the bits are the same.
grep -q "local_exchange worker=0 shards=1 of=1" "$WORK/psdev.log" || fail "the $BE worker did not attach its region"
grep -q "could not be pinned" "$WORK/psdev.log" && fail "an exchange region could not be pinned"
if [ "$BE" = cuda ]; then # CUDA IPC: the shard steps from the worker's device memory and writes it
    grep -q "device_shards=1 " "$WORK/psdev.log" || fail "the shard did not map the worker's device region"
    grep -q "attached=0 device=0 why=detached" "$WORK/psdev.log" || fail "the worker did not detach its device region"
fi
# shellcheck disable=SC2086
run_job psdev_wire $A backend.type=$BE ps.device=$BE net.local_exchange=off
cmp "$WORK/psdev/params.bin" "$WORK/psdev_wire/params.bin" || fail "$BE: the local exchange differs from the wire"
# Mixed: shard 1 refuses the device region (it maps the host one), shard 0 maps the device region.
# shellcheck disable=SC2086
TESSERA_TEST_NO_DEVICE_REGION=1 run_job mixed --servers 2 --workers 1 job.epochs=1 data.train_limit=3000 \
    net.push_bucket_mb=0.1 backend.type=$BE ps.device=$BE
# shellcheck disable=SC2086
run_job mixed_wire --servers 2 --workers 1 job.epochs=1 data.train_limit=3000 net.push_bucket_mb=0.1 \
    backend.type=$BE ps.device=$BE net.local_exchange=off
if [ "$BE" = cuda ]; then
    grep -q "device_shards=1 " "$WORK/mixed.log" || fail "mixed: not one shard on the device region"
fi
cmp "$WORK/mixed/params.bin" "$WORK/mixed_wire/params.bin" || fail "$BE: device and host regions mixed differ from the wire"

# SSP steps each push as it comes, from the same memory: with one worker, the wire's bits again.
S="--servers 2 --workers 1 job.epochs=1 data.train_limit=3000 job.staleness=2 backend.type=$BE ps.device=$BE"
# shellcheck disable=SC2086
run_job ssp_local $S
# shellcheck disable=SC2086
run_job ssp_wire $S net.local_exchange=off
cmp "$WORK/ssp_local/params.bin" "$WORK/ssp_wire/params.bin" || fail "$BE, SSP: the local exchange differs from the wire"
echo "ok: $BE worker and shards: the local exchange gives the wire's bits (BSP and SSP)"

# The shards that stepped on the device serve what they trained (`train --serve`): the served test
# accuracy is the job's own (their host copies of the parameters are brought up to date for it).
DATA=/usr/share/datasets/fashion-mnist
E="tcp://127.0.0.1:$(free_port)"
# shellcheck disable=SC2086
start_job served $A job.epochs=1 backend.type=$BE ps.device=$BE --serve --listen "$E"
wait_log served "serving the trained model" 300
"$TESSERA" predict --endpoint "$E" --input "$DATA/t10k-images-idx3-ubyte.gz" --labels "$DATA/t10k-labels-idx1-ubyte.gz" \
    --output "$WORK/served.jsonl" 2>"$WORK/served.err" || { cat "$WORK/served.err" >&2; fail "predict against train --serve"; }
kill -TERM "$JOB_PID"
wait "$JOB_PID" || true
acc=$(json "$WORK/served/summary.json" test_accuracy)
grep -q "accuracy=$(printf '%.4f' "$acc")" "$WORK/served.err" ||
    fail "$BE shards served accuracy $(grep -o 'accuracy=[0-9.]*' "$WORK/served.err"), the job's is $acc"
echo "ok: shards stepping on $BE serve the trained model (accuracy $acc)"

# Exact resume on the device (workers and shards): stop at a checkpoint, resume, compare with an
# uninterrupted run.
stop_resume_exact "$BE" 100 --servers 2 --workers 1 job.epochs=2 data.train_limit=12000 --checkpoint-every 100 \
    net.push_bucket_mb=0.1 backend.type="$BE" ps.device="$BE"

"$TESSERA" datagen ctr --rows "$ROWS" --slots 8 --vocab 2000 --seed 3 --out "$WORK/data" >/dev/null
for b in cpu "$BE" "$BE-again"; do
    run_job "ctr-$b" ctr_dlrm --servers 2 --workers 2 data.dir="$WORK/data" job.epochs=1 backend.type="${b%-again}"
done
run_job ctr-psdev ctr_dlrm --servers 2 --workers 2 data.dir="$WORK/data" job.epochs=1 backend.type="$BE" \
    ps.device="$BE"
cmp "$WORK/ctr-$BE/params.bin" "$WORK/ctr-psdev/params.bin" || fail "DLRM: shards on $BE differ from the CPU's"
[ "$BE" != cuda ] || [ "$(grep -c "device_shards=2 " "$WORK/ctr-psdev.log")" = 2 ] ||
    fail "DLRM: the 2 shards did not map both workers' device regions"
c=$(json "$WORK/ctr-cpu/summary.json" test_auc)
g=$(json "$WORK/ctr-$BE/summary.json" test_auc)
echo "ctr_dlrm test_auc cpu=$c $BE=$g"
/usr/bin/python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= 0.005 else 1)' "$c" "$g" ||
    fail "$BE test_auc $g is not within 0.005 of the CPU's $c"
cmp "$WORK/ctr-$BE/params.bin" "$WORK/ctr-$BE-again/params.bin" || fail "$BE: two DLRM runs differ"
echo "ok: $BE: two DLRM runs are bit-identical"
echo "ok: the $BE backend trains both models to the CPU's results"
