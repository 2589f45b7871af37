#!/bin/sh
# Exact resume (BSP): a run in which a random rank is SIGKILLed mid-training, relaunched by
# --max-restarts from its newest checkpoint, ends with parameters bit-identical to an uninterrupted
# run. So does a run stopped by SIGUSR1 (exit 85, "requeue me") and resumed with --resume auto.
. "$(dirname "$0")/lib.sh"

ARGS="job.epochs=2 data.train_limit=24000 data.test_limit=2000 --checkpoint-every 60"
run_job ref $ARGS

start_job killed $ARGS --max-restarts 2
# Killed once the first checkpoint (step 60 of 374) is on disk: its log line can come late through
# mpirun, and the job trains in about 1.5 s, so waiting for the line of step 120 once found it done.
for _ in $(seq 1200); do
    [ -e "$WORK/killed/checkpoints/latest" ] && break
    sleep 0.05
done
[ -e "$WORK/killed/checkpoints/latest" ] || fail "no checkpoint committed in 60 s"
sleep "$(shuf -i 0-30 -n 1 | sed 's/^/0./')"
kill_random_rank killed
wait $JOB_PID || { tail -20 "$WORK/killed.log" >&2; fail "the restarted job failed"; }
grep -q "restart 1 of 2 after failure" "$WORK/killed.log" || fail "no restart logged"
step=$(grep -o "resuming from [^ ]*step-[0-9]*" "$WORK/killed.log" | head -1 | sed 's/.*step-0*//')
[ -n "$step" ] && [ "$step" -ge 60 ] || fail "did not resume from a checkpoint at or after step 60 (got '$step')"
echo "resumed from step $step"
cmp "$WORK/ref/params.bin" "$WORK/killed/params.bin" || fail "resumed parameters differ from the uninterrupted run"
echo "ok: killed rank, restarted, bit-identical"

start_job stopped $ARGS
stop_after stopped "checkpoint committed step=60"
grep -q "checkpoint committed step=[0-9]* .*stop=1" "$WORK/stopped.log" || fail "no stop checkpoint"
run_job stopped $ARGS --resume auto
cmp "$WORK/ref/params.bin" "$WORK/stopped/params.bin" || fail "stop + resume differs from the uninterrupted run"
echo "ok: SIGUSR1 -> checkpoint, exit 85; --resume auto -> bit-identical"
