#!/bin/sh
# bfloat16 on the wire: net.grad_dtype = bf16 sends dense gradients to the shards rounded to bfloat16
# (half the bytes up), which widen them exactly and sum and step in float32; net.param_dtype = bf16
# sends workers their parameters rounded to bfloat16 (half the bytes down) while the shards keep the
# float32 masters. Each learns what the float32 run learns; BSP stays reproducible bit for bit (across
# runs, shard counts, one push or parts, the staged device path, a stop + resume); the DLRM (row
# gradients and rows stay float32) trains; SSP learns; a bad value is refused.
. "$(dirname "$0")/lib.sh"

mb() { # mb NAME sent|received: megabytes the workers sent or received, summed
    grep -o "worker done .*$2_mb=[0-9.]*" "$WORK/$1.log" | sed "s/.*$2_mb=//" | awk '{ s += $1 } END { print s }'
}
close() { # close WHAT A B: two accuracies (or AUCs) within 0.01
    /usr/bin/python3 -c "import sys; sys.exit(abs($2 - $3) > 0.01)" || fail "$1: $2 against f32 $3, more than 0.01 apart"
}
half() { # half WHAT A B: A is about half of B
    r=$(/usr/bin/python3 -c "print(round($2 / $3, 3))")
    /usr/bin/python3 -c "import sys; sys.exit(not 0.45 <= $r <= 0.55)" || fail "$1: $r of the f32 bytes, expected about half"
    echo "$r"
}

A="--servers 2 --workers 2 job.epochs=1 data.train_limit=24000 data.test_limit=4000"
# shellcheck disable=SC2086
run_job f32 $A
# shellcheck disable=SC2086
run_job bf16 $A net.grad_dtype=bf16
grep -q "grad_dtype=bf16" "$WORK/bf16.log" || fail "the worker does not report grad_dtype=bf16"
a32=$(json "$WORK/f32/summary.json" test_accuracy)
a16=$(json "$WORK/bf16/summary.json" test_accuracy)
close "bf16 gradients: test_accuracy" "$a16" "$a32"
at_least "$a16" 0.80 "bf16 test_accuracy"
ratio=$(half "bf16 gradients: bytes sent" "$(mb bf16 sent)" "$(mb f32 sent)")
echo "ok: bf16 gradients: test_accuracy $a16 (f32 $a32), workers sent $ratio of the bytes"
# shellcheck disable=SC2086
run_job p16 $A net.param_dtype=bf16
ap=$(json "$WORK/p16/summary.json" test_accuracy)
close "bf16 parameters: test_accuracy" "$ap" "$a32"
ratio=$(half "bf16 parameters: bytes received" "$(mb p16 received)" "$(mb f32 received)")
cmp "$WORK/f32/params.bin" "$WORK/p16/params.bin" >/dev/null && fail "bf16 parameters left the result unchanged"
# params.bin holds the shards' float32 masters, not the rounded copies the workers trained on.
exact=$(/usr/bin/python3 -c "import numpy as n; p = n.fromfile('$WORK/p16/params.bin', n.uint32); print(round(float(n.mean(p & 0xffff != 0)), 3))")
at_least "$exact" 0.9 "bf16 parameters: params.bin values with float32 bits below bfloat16's"
echo "ok: bf16 parameters: test_accuracy $ap (f32 $a32), workers received $ratio of the bytes"

cmp "$WORK/f32/params.bin" "$WORK/bf16/params.bin" >/dev/null && fail "bf16 left the result unchanged: not rounded?"
# Two runs with different shard counts (so different messages and orders of arrival) end identical.
# shellcheck disable=SC2086
run_job both $A net.grad_dtype=bf16 net.param_dtype=bf16
# shellcheck disable=SC2086
run_job both1 --servers 1 --workers 2 job.epochs=1 data.train_limit=24000 data.test_limit=4000 net.grad_dtype=bf16 net.param_dtype=bf16
cmp "$WORK/both/params.bin" "$WORK/both1/params.bin" || fail "bf16 both ways: 1 shard differs from 2 shards"
echo "ok: bf16 BSP is bit-identical across runs and shard counts (and differs from f32)"

# Parts (the push overlapping the backward pass) and the staged device path round the same values.
B="bench/deep_mlp.ini --servers 2 --workers 1 job.max_steps=24 net.grad_dtype=bf16 net.param_dtype=bf16"
cd "$(dirname "$0")/../.."
# shellcheck disable=SC2086
run_job whole $B net.push_bucket_mb=0
# shellcheck disable=SC2086
run_job parts $B net.push_bucket_mb=1
grep -q "parts_per_step=[1-9]" "$WORK/parts.log" || fail "deep_mlp sent no parts"
cmp "$WORK/whole/params.bin" "$WORK/parts/params.bin" || fail "bf16 parts differ from one push"
# shellcheck disable=SC2086
run_job staged $B net.push_bucket_mb=1 backend.type=cpu-staged
grep -q "grad_rounding=device" "$WORK/staged.log" || fail "the staged device path did not round on the device"
grep -q "grad_rounding=host" "$WORK/whole.log" || fail "the CPU backend does not say it rounds on the host"
grep -q "param_widening=device" "$WORK/staged.log" || fail "the staged device path did not widen the parameters on the device"
grep -q "param_widening=host" "$WORK/whole.log" || fail "the CPU backend does not say it widens on the host"
cmp "$WORK/whole/params.bin" "$WORK/staged/params.bin" || fail "bf16 on the staged device path differs"
echo "ok: bf16 with parts and on the staged device path (rounded on the device): bit-identical to one push"

stop_resume_exact "bf16 stop + resume" 100 $A net.grad_dtype=bf16 net.param_dtype=bf16 --checkpoint-every 100

"$TESSERA" datagen ctr --rows 12000 --slots 4 --vocab 500 --seed 5 --out "$WORK/ctr" >/dev/null
C="ctr_dlrm --servers 2 --workers 2 data.dir=$WORK/ctr data.sparse_features=4 job.epochs=1"
# shellcheck disable=SC2086
run_job ctr32 $C "layer emb.features=0-3"
# shellcheck disable=SC2086
run_job ctr16 $C "layer emb.features=0-3" net.grad_dtype=bf16 net.param_dtype=bf16
u32=$(json "$WORK/ctr32/summary.json" test_auc)
u16=$(json "$WORK/ctr16/summary.json" test_auc)
close "DLRM with bf16: test_auc" "$u16" "$u32"
echo "ok: DLRM with bf16 both ways (rows stay f32): test_auc $u16 (f32 $u32)"

# shellcheck disable=SC2086
run_job ssp $A job.staleness=2 net.grad_dtype=bf16 net.param_dtype=bf16
at_least "$(json "$WORK/ssp/summary.json" test_accuracy)" 0.75 "SSP bf16 test_accuracy"

if "$TESSERA" train $A net.param_dtype=fp8 >"$WORK/bad.log" 2>&1; then fail "param_dtype=fp8 accepted"; fi
grep -q "param_dtype 'fp8' unknown (f32, bf16)" "$WORK/bad.log" || fail "unclear param_dtype error"
echo "ok: an unknown dtype is refused with a reason"
