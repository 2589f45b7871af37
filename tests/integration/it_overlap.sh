#!/bin/sh
# Overlapped pushes (net.push_bucket_mb): gradients that are final go to the shards in PUSH_PARTs while
# the backward pass still runs, and the step's push carries the rest; in BSP each part is answered with
# its slices' update as soon as every worker's part is in. The result is bit-identical to one
# push per step for a dense MLP (2 parts a step), a DLRM with embedding tables, a model-parallel layer,
# and a SIGUSR1 stop + resume; SSP still learns. Each shard counts the parts it took. The device path
# (staging, asynchronous copies, table rows and bags by row staged per batch) runs on backend
# cpu-staged and gives the CPU backend's bits.
. "$(dirname "$0")/lib.sh"

shard_sum() { # shard_sum NAME COUNTER: a counter of the shards' last lines, summed
    grep -o "shard stopping .*$2=[0-9]*" "$WORK/$1.log" | sed "s/.*$2=//" | awk '{ s += $1 } END { print s + 0 }'
}
parts_taken() { shard_sum "$1" push_parts; } # the PUSH_PARTs all shards of a job took
same() { # same WHAT A B: params.bin and every test-logits file of runs A and B are identical
    cmp "$WORK/$2/params.bin" "$WORK/$3/params.bin" || fail "$1: parts changed the parameters"
    for f in "$WORK/$2"/test-logits-*.f32; do
        [ -e "$f" ] || continue
        cmp "$f" "$WORK/$3/$(basename "$f")" || fail "$1: parts changed the test logits"
    done
}

A="--servers 3 --workers 2 job.epochs=1 data.train_limit=12000 job.save_test_logits=1"
# shellcheck disable=SC2086
run_job whole $A net.push_bucket_mb=0
# shellcheck disable=SC2086
run_job parts $A net.push_bucket_mb=0.001
grep -q "overlap push_bucket_mb=0.001 parts_per_step=2" "$WORK/parts.log" || fail "expected 2 parts per step"
grep -q "overlap push_bucket_mb=0 parts_per_step=0" "$WORK/whole.log" || fail "bucket 0 should send no parts"
same "dense MLP" whole parts
n=$(parts_taken parts)
steps=$(json "$WORK/parts/summary.json" steps)
# 2 parts a step, 2 workers, each part to the 3 shards that hold some of its tensors
[ "$n" -eq $((steps * 2 * 2 * 3)) ] || fail "the shards took $n parts in $steps steps, expected $((steps * 12))"
[ "$(parts_taken whole)" -eq 0 ] || fail "bucket 0 sent parts"
# BSP: every part is answered with its slices' update (their pull overlaps the rest of the step)
[ "$(shard_sum parts part_replies)" -eq "$n" ] || fail "$(shard_sum parts part_replies) of $n parts answered with parameters"
echo "ok: dense MLP, $n parts in $steps steps: bit-identical to one push per step"

# The device path, without a GPU: backend cpu-staged is the CPU's arithmetic behind separate memory whose
# asynchronous copies land as late as allowed, so reading a gradient bucket before its copy, or
# overwriting parameters before their copy to the device, changes the numbers.
# shellcheck disable=SC2086
run_job staged_parts $A net.push_bucket_mb=0.001 backend.type=cpu-staged
grep -q "overlap push_bucket_mb=0.001 parts_per_step=2 device_copies=async" "$WORK/staged_parts.log" ||
    fail "cpu-staged should copy asynchronously"
same "staged device path with parts" whole staged_parts
# shellcheck disable=SC2086
run_job staged_whole $A net.push_bucket_mb=0 backend.type=cpu-staged
same "staged device path, one push" whole staged_whole
echo "ok: the staged device path (async copies, parameters per shard reply) is bit-identical"

"$TESSERA" datagen ctr --rows 12000 --slots 4 --vocab 500 --seed 5 --out "$WORK/ctr" >/dev/null
C="ctr_dlrm --servers 2 --workers 2 data.dir=$WORK/ctr data.sparse_features=4 job.epochs=1 job.save_test_logits=1"
# shellcheck disable=SC2086
run_job ctr_whole $C "layer emb.features=0-3" net.push_bucket_mb=0
# shellcheck disable=SC2086
run_job ctr_parts $C "layer emb.features=0-3" net.push_bucket_mb=0.001
[ "$(parts_taken ctr_parts)" -gt 0 ] || fail "the DLRM sent no parts"
same "DLRM with tables" ctr_whole ctr_parts
echo "ok: DLRM with embedding tables: bit-identical ($(parts_taken ctr_parts) parts)"
# shellcheck disable=SC2086
run_job ctr_staged $C "layer emb.features=0-3" net.push_bucket_mb=0.001 backend.type=cpu-staged
same "DLRM, staged device path (rows and bags by row staged per batch)" ctr_whole ctr_staged
echo "ok: DLRM on the staged device path: bit-identical"

M="wide_mp --servers 3 --workers 2 data.train_limit=2560 job.epochs=1"
# shellcheck disable=SC2086
run_job mp_whole $M net.push_bucket_mb=0
# shellcheck disable=SC2086
run_job mp_parts $M net.push_bucket_mb=0.001
[ "$(parts_taken mp_parts)" -gt 0 ] || fail "the model-parallel job sent no parts"
same "model-parallel layer" mp_whole mp_parts
echo "ok: model-parallel layer: bit-identical ($(parts_taken mp_parts) parts)"

stop_resume_exact "with parts" 30 job.epochs=2 data.train_limit=6000 data.test_limit=2000 --checkpoint-every 30 \
    net.push_bucket_mb=0.001

# shellcheck disable=SC2086
run_job ssp --servers 2 --workers 2 job.epochs=1 data.train_limit=12000 job.staleness=1 net.push_bucket_mb=0.001
[ "$(parts_taken ssp)" -gt 0 ] || fail "the SSP job sent no parts"
[ "$(shard_sum ssp part_replies)" -eq 0 ] || fail "SSP parts are held for the push, not answered with parameters"
at_least "$(json "$WORK/ssp/summary.json" test_accuracy)" 0.75 "SSP with parts: test_accuracy"
