#!/bin/sh
# Checkpoint edge cases: a stop checkpoint that cannot be written fails the job (it must not look
# finished); an unwritable checkpoint directory is refused at start; SSP refuses checkpoints; a
# different optimizer cannot resume; starting afresh or rewinding in a run directory sets the newer
# checkpoints aside instead of pruning or overwriting them.
. "$(dirname "$0")/lib.sh"

ARGS="job.max_steps=200 data.train_limit=24000 data.test_limit=2000"
touch "$WORK/file"

start_job failstop job.epochs=4 data.train_limit=24000 data.test_limit=2000 checkpoint.dir="$WORK/file/ck"
wait_log failstop "worker 3 training"
sleep 0.5
kill -USR1 $JOB_PID
rc=0
wait $JOB_PID || rc=$?
[ $rc -ne 0 ] && [ $rc -ne 85 ] || fail "a failed stop checkpoint exited $rc"
grep -q "asked to stop, but its checkpoint [0-9]* failed" "$WORK/failstop.log" || fail "no message about the failed stop checkpoint"
echo "ok: failed stop checkpoint -> exit $rc with a message"

if "$TESSERA" train --run-dir "$WORK/nowrite" $ARGS --checkpoint-every 50 checkpoint.dir="$WORK/file/ck" >"$WORK/nw.log" 2>&1; then
    fail "checkpoints into an unwritable directory should stop the job at start"
fi
grep -q "cannot write checkpoints to $WORK/file/ck" "$WORK/nw.log" || fail "unclear error for an unwritable checkpoint dir"
echo "ok: unwritable checkpoint directory refused at start"

run_job lin $ARGS --checkpoint-every 50 checkpoint.keep=10
if "$TESSERA" train --run-dir "$WORK/other" $ARGS optimizer.type=momentum --resume "$WORK/lin" >"$WORK/opt.log" 2>&1; then
    fail "resuming Adam state into momentum accepted"
fi
grep -q "trained with optimizer adam but the job says momentum" "$WORK/opt.log" || fail "unclear optimizer mismatch"
echo "ok: optimizer mismatch refused"

# Rewind to 100: 150 and 200 are set aside, latest points at 100, and the new 150/200 are fresh.
run_job lin $ARGS --checkpoint-every 50 checkpoint.keep=10 --resume "$WORK/lin/checkpoints/step-000000100"
grep -q "moved 2 checkpoint(s) newer than the one resumed" "$WORK/lin.log" || fail "rewind did not set newer checkpoints aside"
[ "$(ls -d "$WORK"/lin/checkpoints/abandoned-*/step-* | wc -l)" -eq 2 ] || fail "abandoned checkpoints missing"
[ "$(cat "$WORK/lin/checkpoints/latest")" = step-000000200 ] || fail "latest should name the new step 200"
# Fresh start in the same directory: everything earlier is set aside, nothing is pruned.
run_job lin job.max_steps=60 data.train_limit=24000 data.test_limit=2000 --checkpoint-every 50
grep -q "moved 4 checkpoint(s) of an earlier start" "$WORK/lin.log" || fail "fresh start did not set old checkpoints aside"
[ "$(cat "$WORK/lin/checkpoints/latest")" = step-000000050 ] || fail "latest should name the fresh step 50"
echo "ok: rewind and fresh start keep the other timeline aside"
