#!/bin/sh
# Dense model parallelism (examples/wide_mp: fc1 is 4096 x 784 with `parallel = model`, 36.8 MB with
# Adam against a 16 MB shard budget). On 3 shards it trains without any process holding the matrix:
# the workers' parameters leave it out, and they receive less per step than the matrix itself (a
# data-parallel worker pulls all of it every step). It learns what the data-parallel run of the same
# job learns; BSP stays bit-exact (the same run twice; a stop with exit 85 and a resume); 2 shards stop
# at start with the budget error; serving evaluates fc1 on the shards.
. "$(dirname "$0")/lib.sh"

A="wide_mp --servers 3 --workers 2 data.train_limit=12800 data.test_limit=2000 job.save_test_logits=1"
# shellcheck disable=SC2086
run_job mp $A
grep -q "params=45066 model_parallel_layers=1 model_parallel_params=3211264" "$WORK/mp.log" ||
    fail "the workers' parameters should leave out fc1's 3,211,264 weights"
for r in $(grep -o "worker done steps=[0-9]* .*received_mb=[0-9.]*" "$WORK/mp.log" | sed 's/.*steps=\([0-9]*\) .*received_mb=\([0-9.]*\)/\1:\2/'); do
    /usr/bin/python3 -c 'import sys; s, mb = map(float, sys.argv[1].split(":")); sys.exit(0 if mb / s < 12.8 else 1)' "$r" ||
        fail "a worker received ${r#*:} MB in ${r%%:*} steps: as much as pulling fc1 (12.8 MB, 10^6 bytes) each step"
done
echo "ok: workers hold none of fc1 and receive less than it per step"
# shellcheck disable=SC2086
run_job dp $A "layer fc1.parallel=data"
mp=$(json "$WORK/mp/summary.json" test_accuracy)
dp=$(json "$WORK/dp/summary.json" test_accuracy)
echo "test_accuracy model-parallel=$mp data-parallel=$dp"
at_least "$mp" 0.75 "model-parallel test_accuracy"
/usr/bin/python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= 0.01 else 1)' "$mp" "$dp" ||
    fail "model-parallel ($mp) and data-parallel ($dp) runs should learn the same"

# shellcheck disable=SC2086
run_job again $A
for f in "$WORK"/mp/test-logits-*.f32; do
    cmp "$f" "$WORK/again/$(basename "$f")" || fail "two BSP runs of the model-parallel job differ"
done
echo "ok: the same model-parallel run twice: bit-identical test logits"

# shellcheck disable=SC2086
start_job stopped $A --checkpoint-every 10
stop_after stopped "checkpoint committed step=20"
# shellcheck disable=SC2086
run_job stopped $A --checkpoint-every 10 --resume auto
cmp "$WORK/mp/params.bin" "$WORK/stopped/params.bin" || fail "stop + resume: local parameters differ"
for f in "$WORK"/mp/test-logits-*.f32; do
    cmp "$f" "$WORK/stopped/$(basename "$f")" || fail "stop + resume: test logits differ"
done
echo "ok: stop (exit 85) and resume: bit-identical, fc1's rows restored from the checkpoint"

# A narrow layer: evaluation batches (1000 rows) make frames of x larger than the layer's weight.
run_job narrow wide_mp --servers 3 --workers 2 "layer fc1.out=256" data.train_limit=2560 data.test_limit=2000 \
    net.timeout_s=30
echo "ok: a 256-wide model-parallel layer evaluates 1000-row batches"

rc=0
"$TESSERA" train --run-dir "$WORK/two" wide_mp --servers 2 --workers 2 >"$WORK/two.log" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "2 shards of 16 MB cannot hold fc1 with its Adam state"
grep -q "budget is 16.0 MB (ps.memory_mb).*the model needs 37.3 MB in all.*use at least 3 shards" "$WORK/two.log" ||
    { grep error "$WORK/two.log" | head -3 >&2; fail "no budget error naming the size and the shards needed"; }
echo "ok: 2 shards refused: $(grep -o 'needs [0-9.]* MB with.*' "$WORK/two.log" | head -1)"

E="tcp://127.0.0.1:$(free_port)"
start_serve serve "$E" --checkpoint "$WORK/stopped" --servers 3
[ "$(json "$WORK/serve.status.json" placement)" = shards ] || fail "fc1 should be evaluated on the shards"
"$TESSERA" predict --endpoint "$E" --input /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \
    --labels /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz --limit 2000 --output /dev/null \
    2>"$WORK/pred.err" || { cat "$WORK/pred.err" >&2; fail "predict"; }
grep -q "accuracy=$(printf '%.4f' "$mp")" "$WORK/pred.err" || fail "served accuracy $(cat "$WORK/pred.err") is not $mp"
stop_serve
echo "ok: served from the shards with the job's accuracy $mp"
