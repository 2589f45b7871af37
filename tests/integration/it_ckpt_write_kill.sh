#!/bin/sh
# A job killed while shard files are being written leaves the previous complete checkpoint valid, and
# a restart uses it (the half-written one is reported incomplete and skipped).
. "$(dirname "$0")/lib.sh"

ARGS="job.max_steps=300 data.train_limit=24000 data.test_limit=2000 --checkpoint-every 100"
run_job ref $ARGS
start_job w $ARGS
wait_log w "checkpoint committed step=100"
kill_all_ranks w
wait $JOB_PID 2>/dev/null || true

# Resume, and die while checkpoint 200 is being written (the test hook holds each shard file open).
TESSERA_TEST_CKPT_WRITE_DELAY_MS=4000 start_job w $ARGS --resume auto
wait_log w "checkpoint requested step=200"
sleep 1
ls "$WORK/w/checkpoints/step-000000200/"
[ ! -e "$WORK/w/checkpoints/step-000000200/manifest.h5" ] || fail "checkpoint 200 committed despite the delay"
kill_all_ranks w
wait $JOB_PID 2>/dev/null || true
[ "$(cat "$WORK/w/checkpoints/latest")" = "step-000000100" ] || fail "latest moved past the complete checkpoint"
"$TESSERA" ckpt inspect "$WORK/w" | tee "$WORK/inspect.txt"
grep -q "200 .* incomplete" "$WORK/inspect.txt" || fail "inspect does not show 200 as incomplete"

run_job w $ARGS --resume auto
grep -q "checkpoint .*step-000000200 is incomplete (no manifest): skipped" "$WORK/w.log" || fail "no warning about 200"
grep -q "resuming from .*step-000000100" "$WORK/w.log" || fail "did not resume from 100"
cmp "$WORK/ref/params.bin" "$WORK/w/params.bin" || fail "parameters differ from the uninterrupted run"
echo "ok: kill during the write; previous checkpoint used; bit-identical"
