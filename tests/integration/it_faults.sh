#!/bin/sh
# Fault injection: random ranks killed at random times during one run with --max-restarts; the run
# finishes with the result of an uninterrupted run (BSP: the very same parameters, so the same
# accuracy). KILLS (default 2) and EPOCHS (default 2) make the long version (label `slow`).
. "$(dirname "$0")/lib.sh"

KILLS=${KILLS:-2}
EPOCHS=${EPOCHS:-2}
ARGS="job.epochs=$EPOCHS data.train_limit=24000 data.test_limit=2000 --checkpoint-every 40"
run_job ref $ARGS
start_job f $ARGS --max-restarts $((KILLS + 1))
for i in $(seq "$KILLS"); do
    wait_log f "restart $((i - 1)) of|job started" 60
    n0=$(grep -c "checkpoint committed" "$WORK/f.log" || true)
    # wait for one more checkpoint in this attempt, then a random delay, then a random rank
    for _ in $(seq 400); do
        [ "$(grep -c "checkpoint committed" "$WORK/f.log" || true)" -gt "$n0" ] && break
        sleep 0.05
    done
    sleep "0.$(shuf -i 0-40 -n 1)"
    kill_random_rank f
    wait_log f "restart $i of" 60
done
wait $JOB_PID || { tail -20 "$WORK/f.log" >&2; fail "the job did not survive $KILLS kills"; }
restarts=$(grep -c "tessera: restart [0-9]* of" "$WORK/f.log")
[ "$restarts" -eq "$KILLS" ] || fail "$restarts restarts logged, expected $KILLS"
a=$(json "$WORK/ref/summary.json" test_accuracy)
b=$(json "$WORK/f/summary.json" test_accuracy)
[ "$a" = "$b" ] || fail "accuracy $b after $KILLS kills, $a uninterrupted"
cmp "$WORK/ref/params.bin" "$WORK/f/params.bin" || fail "parameters differ after $KILLS kills"
echo "ok: $KILLS random kills, $restarts restarts, accuracy $b = uninterrupted $a"
