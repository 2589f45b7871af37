#!/bin/sh
# net.local_exchange (default auto): shards on a worker's host map its exchange region and read the
# gradients and write the parameters there, the messages carrying only descriptors. The result is the
# wire's, bit for bit: BSP with 2 shards and 2 workers, pushes in parts, the staged device path (the
# region pinned through the backend) and SSP; workers say how much crossed in place; a bad value is
# refused by name. (Other hosts and network namespaces keep to the wire: it_netns.sh.)
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

A="--servers 2 --workers 2 job.epochs=1 data.train_limit=12000 data.test_limit=2000"
# shellcheck disable=SC2086
run_job local $A
# shellcheck disable=SC2086
run_job wire $A net.local_exchange=off
[ "$(grep -c "local_exchange worker=[01] shards=2 of=2" "$WORK/local.log")" -eq 2 ] ||
    fail "both workers should have attached to both shards"
[ "$(grep -c "shard local_exchange worker=[01] attached=1" "$WORK/local.log")" -eq 4 ] ||
    fail "both shards should have mapped both workers' regions"
grep -q "local_exchange worker=" "$WORK/wire.log" && fail "net.local_exchange=off attached anyway"
cmp "$WORK/local/params.bin" "$WORK/wire/params.bin" || fail "the local exchange changed the bits"
local_mb() { grep -o "worker done .*local_mb=[0-9.]*" "$WORK/$1.log" | head -1 | sed 's/.*local_mb=//'; }
sent_mb() { grep -o "worker done .*sent_mb=[0-9.]*" "$WORK/$1.log" | head -1 | sed 's/.*sent_mb=//'; }
l=$(local_mb local) s=$(sent_mb local) w=$(local_mb wire)
/usr/bin/python3 -c 'import sys; l, s, w = map(float, sys.argv[1:]); sys.exit(0 if l > s > 0 and w == 0 else 1)' "$l" "$s" "$w" ||
    fail "a local worker moved $l MB in place (sent $s MB in all), a wire one $w MB"
echo "ok: BSP 2x2: bit-identical to the wire; each worker moved $l MB through its region, 0 on the wire run"

# Pushes in parts (replies to parts come through the region too), one worker.
B="bench/deep_mlp.ini --servers 2 --workers 1 job.max_steps=24 net.push_bucket_mb=1"
# shellcheck disable=SC2086
run_job parts $B
# shellcheck disable=SC2086
run_job parts_wire $B net.local_exchange=off
grep -q "parts_per_step=[1-9]" "$WORK/parts.log" || fail "deep_mlp sent no parts"
cmp "$WORK/parts/params.bin" "$WORK/parts_wire/params.bin" || fail "parts through the region differ from the wire"
# The staged device path: the region is the pinned staging buffers; parts copied on the copy stream.
# shellcheck disable=SC2086
run_job staged $B backend.type=cpu-staged
grep -q "local_exchange worker=0 shards=2 of=2" "$WORK/staged.log" || fail "the staged worker did not attach"
grep -q "device_copies=async" "$WORK/staged.log" || fail "the staged worker did not copy asynchronously"
cmp "$WORK/parts/params.bin" "$WORK/staged/params.bin" || fail "the staged device path through the region differs"
echo "ok: parts and the staged device path through the region: bit-identical to the wire"

# SSP: pushes applied one by one, pulls waiting for the slowest, all through the region.
# shellcheck disable=SC2086
run_job ssp $A job.staleness=2
grep -q "local_exchange worker=1 shards=2 of=2" "$WORK/ssp.log" || fail "the SSP workers did not attach"
at_least "$(json "$WORK/ssp/summary.json" test_accuracy)" 0.75 "SSP through the region: test_accuracy"

# bfloat16 on the wire keeps to the wire (the rounding is the point); a bad value is an error.
# shellcheck disable=SC2086
run_job bf16 $A net.grad_dtype=bf16
grep -q "local_exchange worker=" "$WORK/bf16.log" && fail "bf16 gradients went through the region"
if "$TESSERA" train --run-dir "$WORK/bad" $A net.local_exchange=maybe >"$WORK/bad.log" 2>&1; then
    fail "net.local_exchange=maybe was accepted"
fi
grep -q "local_exchange 'maybe' unknown (auto, off)" "$WORK/bad.log" || { cat "$WORK/bad.log" >&2; fail "no clear error for a bad net.local_exchange"; }
echo "ok: bf16 keeps to the wire; a bad value is refused by name"
