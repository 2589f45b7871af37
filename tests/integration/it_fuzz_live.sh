#!/bin/sh
# Garbage sent to a live shard during BSP training gets error replies (or, when oversized, is dropped),
# the shard keeps serving, and training ends with parameters bit-identical to an undisturbed run.
. "$(dirname "$0")/lib.sh"

# Long enough (about 1000 steps) that the job outlives the fuzzing, which takes well under a second.
ARGS="job.epochs=4 data.train_limit=32000 data.test_limit=1000 net.max_message_mb=2"
run_job clean --servers 2 --workers 2 $ARGS
mkdir -p "$WORK/fuzzed"
"$TESSERA" train --run-dir "$WORK/fuzzed" --servers 2 --workers 2 $ARGS >"$WORK/fuzzed.log" 2>&1 &
job=$!
endpoint=""
for _ in $(seq 100); do
    endpoint=$(grep -o 'shard serving shard=1 .*endpoint=tcp://[0-9.]*:[0-9]*' "$WORK/fuzzed.log" | sed 's/.*endpoint=//') || true
    [ -n "$endpoint" ] && break
    sleep 0.1
done
[ -n "$endpoint" ] || { kill $job; fail "shard endpoint not logged"; }
/usr/bin/python3 "$(dirname "$0")/fuzz_shard.py" "$endpoint" 300 >"$WORK/fuzz.out" ||
    { kill $job; cat "$WORK/fuzz.out"; fail "fuzzing failed"; }
cat "$WORK/fuzz.out"
wait $job || { tail -20 "$WORK/fuzzed.log" >&2; fail "training failed while the shard was fuzzed"; }
rejected=$(grep -o 'ps [0-9]* shard stopping .*rejected=[0-9]*' "$WORK/fuzzed.log" | sed 's/.*rejected=//' | sort -n | tail -1)
[ "${rejected:-0}" -ge 300 ] || fail "the fuzzed shard counted ${rejected:-0} rejected messages, expected >= 300"
cmp "$WORK/clean/params.bin" "$WORK/fuzzed/params.bin" || fail "garbage changed the trained parameters"
echo "ok: fuzzed shard kept serving; parameters identical to the undisturbed run"
