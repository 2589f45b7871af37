#!/bin/sh
# Fault injection: random ranks killed at random times during one run with --max-restarts; the run
# finishes with the result of an uninterrupted run (BSP: the very same parameters, so the same
# accuracy). KILLS (default 2) and EPOCHS (default 3) make the long version (label `slow`).
. "$(dirname "$0")/lib.sh"

KILLS=${KILLS:-2}
EPOCHS=${EPOCHS:-3}
ARGS="job.epochs=$EPOCHS data.train_limit=24000 data.test_limit=2000 --checkpoint-every 40"
run_job ref $ARGS
start_job f $ARGS --max-restarts $((KILLS + 1))
for i in $(seq "$KILLS"); do
    # Kill i comes after a checkpoint at step >= 80 i (so the run is never over before the last kill),
    # then a random delay, at a random rank.
    for _ in $(seq 1200); do
        # only this attempt's lines: those after the last "tessera: running:"
        last=$(awk '/tessera: running:/ {n = NR} {line[NR] = $0} END {for (i = n; i <= NR; i++) print line[i]}' \
            "$WORK/f.log" | grep -o "checkpoint committed step=[0-9]*" | sed 's/.*=//' | sort -n | tail -1)
        [ "${last:-0}" -ge $((80 * i)) ] && break
        sleep 0.05
    done
    sleep "0.0$(shuf -i 0-9 -n 1)"
    kill_random_rank f
    wait_log f "restart $i of" 60
    for _ in $(seq 1200); do # the relaunch has printed its command line: a new attempt is under way
        [ "$(grep -c "tessera: running:" "$WORK/f.log")" -gt "$i" ] && break
        sleep 0.05
    done
done
wait $JOB_PID || { tail -20 "$WORK/f.log" >&2; fail "the job did not survive $KILLS kills"; }
restarts=$(grep -c "tessera: restart [0-9]* of" "$WORK/f.log")
[ "$restarts" -eq "$KILLS" ] || fail "$restarts restarts logged, expected $KILLS"
a=$(json "$WORK/ref/summary.json" test_accuracy)
b=$(json "$WORK/f/summary.json" test_accuracy)
[ "$a" = "$b" ] || fail "accuracy $b after $KILLS kills, $a uninterrupted"
cmp "$WORK/ref/params.bin" "$WORK/f/params.bin" || fail "parameters differ after $KILLS kills"
echo "ok: $KILLS random kills, $restarts restarts, accuracy $b = uninterrupted $a"
