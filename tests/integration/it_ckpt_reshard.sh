#!/bin/sh
# Resharding: a checkpoint written by 2 shards is resumed by 3 (and by 1); training continues from
# the same parameters and optimizer state, so BSP ends bit-identical to the uninterrupted 2-shard run.
# A different worker count resumes too (the data partition changes, so only learning is checked).
. "$(dirname "$0")/lib.sh"

ARGS="job.max_steps=300 data.train_limit=24000 data.test_limit=2000"
run_job ref --servers 2 $ARGS
run_job part --servers 2 job.max_steps=200 data.train_limit=24000 data.test_limit=2000 --checkpoint-every 200
for s in 3 1; do
    rm -rf "$WORK/r$s" && mkdir -p "$WORK/r$s"
    run_job "r$s" --servers $s $ARGS --resume "$WORK/part/checkpoints/step-000000200"
    grep -q "shard restored checkpoint=.*step-000000200 step=200 written_by_shards=2" "$WORK/r$s.log" ||
        fail "shards did not restore from the 2-shard checkpoint"
    cmp "$WORK/ref/params.bin" "$WORK/r$s/params.bin" || fail "2 -> $s shards: parameters differ"
    echo "ok: 2 -> $s shards, bit-identical"
done
run_job w1 --servers 2 --workers 1 $ARGS --resume "$WORK/part"
grep -q "resuming with 1 workers from a checkpoint of 2" "$WORK/w1.log" || fail "no message about the worker change"
at_least "$(json "$WORK/w1/summary.json" test_accuracy)" 0.75 "test_accuracy after resuming with 1 worker"
