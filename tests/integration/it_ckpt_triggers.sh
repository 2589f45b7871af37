#!/bin/sh
# What triggers a checkpoint: a time schedule (with `keep` pruning old ones), SIGUSR2 on demand to
# tessera or to any single rank (the job goes on, its result unchanged), and a stop signal that
# reaches only one rank (a shard, the scheduler, a worker other than 0): the job checkpoints, stops
# with exit 85, and resumes exactly.
. "$(dirname "$0")/lib.sh"

ARGS="job.epochs=2 data.train_limit=24000 data.test_limit=2000"
run_job ref $ARGS

run_job timed $ARGS checkpoint.every_seconds=0.2 checkpoint.keep=2
n=$(grep -c "checkpoint committed" "$WORK/timed.log")
[ "$n" -ge 3 ] || fail "$n time-based checkpoints, expected >= 3 in a run of over a second"
kept=$(ls "$WORK"/timed/checkpoints/step-*/manifest.h5 | wc -l)
[ "$kept" -eq 2 ] || fail "$kept complete checkpoints kept, checkpoint.keep=2"
cmp "$WORK/ref/params.bin" "$WORK/timed/params.bin" || fail "checkpointing changed the result"
echo "ok: $n time-based checkpoints, $kept kept"

start_job usr2 $ARGS
wait_log usr2 "worker 3 training"
sleep 0.2
kill -USR2 $JOB_PID
wait $JOB_PID || fail "SIGUSR2 should not stop the job"
grep -q "checkpoint committed step=" "$WORK/usr2.log" || fail "no checkpoint after SIGUSR2"
cmp "$WORK/ref/params.bin" "$WORK/usr2/params.bin" || fail "an on-demand checkpoint changed the result"
echo "ok: SIGUSR2 -> checkpoint, job continued"

# rank_pid NAME WHO: one rank of that kind (the last: for workers, worker 1, not worker 0)
rank_pid() {
    ranks "$1" | xargs ps -o pid=,args= -p | grep "/$2 " | sort -n | tail -1 | awk '{print $1}'
}

for who in tessera-ps tessera-scheduler tessera-worker; do
    name=usr2-$(echo $who | cut -d- -f2)
    # Frequent reports: a request relayed through the scheduler's acknowledgements reaches worker 0
    # well before the job ends (about 1 s of training in a Release build), even on a loaded machine.
    start_job "$name" $ARGS job.progress_interval_s=0.2
    wait_log "$name" "worker 3 training"
    sleep 0.2
    kill -USR2 "$(rank_pid "$name" $who)"
    wait $JOB_PID || fail "SIGUSR2 to one $who should not stop the job"
    grep -q "checkpoint committed step=" "$WORK/$name.log" || fail "no checkpoint after SIGUSR2 to one $who"
    echo "ok: SIGUSR2 to one $who -> checkpoint, job finished"
done

for who in tessera-ps tessera-scheduler tessera-worker; do
    name=stop-$(echo $who | cut -d- -f2)
    start_job "$name" $ARGS job.progress_interval_s=0.2 # as above
    wait_log "$name" "worker 3 training"
    sleep 0.2
    pid=$(rank_pid "$name" $who)
    [ -n "$pid" ] || fail "no $who rank found"
    kill -TERM "$pid"
    rc=0
    wait $JOB_PID || rc=$?
    [ $rc -eq 85 ] || { tail -5 "$WORK/$name.log" >&2; fail "SIGTERM to one $who: exit $rc, expected 85"; }
    grep -q "checkpoint committed .*stop=1" "$WORK/$name.log" || fail "no stop checkpoint after SIGTERM to $who"
    echo "ok: SIGTERM to one $who -> stop checkpoint, exit 85"
done
run_job stop-ps $ARGS --resume auto
cmp "$WORK/ref/params.bin" "$WORK/stop-ps/params.bin" || fail "resume after a shard's SIGTERM differs"
echo "ok: resumed exactly"
