#!/bin/sh
# A corrupt file in the newest checkpoint is reported clearly and the previous complete checkpoint is
# used; an explicitly named corrupt checkpoint is refused with the file's name.
. "$(dirname "$0")/lib.sh"

ARGS="job.max_steps=300 data.train_limit=24000 data.test_limit=2000 --checkpoint-every 100"
run_job c $ARGS
cp "$WORK/c/params.bin" "$WORK/ref.bin"
head -c 1000 "$WORK/c/checkpoints/step-000000300/shard-1.h5" >"$WORK/trunc.h5"
mv "$WORK/trunc.h5" "$WORK/c/checkpoints/step-000000300/shard-1.h5"
if "$TESSERA" train --run-dir "$WORK/c" $ARGS --resume "$WORK/c/checkpoints/step-000000300" >"$WORK/bad.log" 2>&1; then
    fail "resuming from a named corrupt checkpoint should fail"
fi
grep -q "shard-1.h5: missing or not a readable HDF5 file" "$WORK/bad.log" || { cat "$WORK/bad.log"; fail "unclear error"; }
# Resume from 200 and run to 300 again: the same parameters as before.
run_job c $ARGS --resume auto
grep -q "step-000000300 is unusable, trying the previous one: .*shard-1.h5" "$WORK/c.log" || fail "no corruption warning"
grep -q "resuming from .*step-000000200" "$WORK/c.log" || fail "did not fall back to 200"
cmp "$WORK/ref.bin" "$WORK/c/params.bin" || fail "parameters differ after the fallback"
echo "ok: corrupt checkpoint reported and skipped"
