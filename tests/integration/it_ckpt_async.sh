#!/bin/sh
# Checkpoints of SSP and ASP jobs are clock cuts: at step N every worker's pushes of clocks below N are
# in and none at or past it, although the workers run apart. Each push is one optimizer step in
# SSP/ASP, so every tensor of a cut at N with W workers has taken exactly W * N steps (a push that
# slipped in, or one missing, shows). Scheduled (SSP), on a stop signal with exit 85 and resume (SSP
# and ASP), and on demand (ASP: just past the furthest worker, behind fences on the shards).
. "$(dirname "$0")/lib.sh"

ARGS="--servers 2 --workers 2 data.train_limit=24000 data.test_limit=2000" # 187 steps per epoch
W=2

# check_cuts NAME: every committed checkpoint of the run is a clock cut.
check_cuts() {
    /usr/bin/python3 - "$WORK/$1/checkpoints" $W <<'EOF' || fail "$1: a checkpoint is not a clock cut"
import glob, os, sys
import h5py
root, W = sys.argv[1], int(sys.argv[2])
dirs = sorted(d for d in glob.glob(root + "/step-*") if os.path.exists(d + "/manifest.h5"))
if not dirs:
    sys.exit("no committed checkpoint in " + root)
for d in dirs:
    step = int(h5py.File(d + "/manifest.h5").attrs["step"])
    for f in sorted(glob.glob(d + "/shard-*.h5")):
        h = h5py.File(f)
        steps = {k: int(h[k].attrs["optimizer_steps"]) for k in h.keys() if "optimizer_steps" in h[k].attrs}
        bad = {k: v for k, v in steps.items() if v != W * step}
        if not steps or bad:
            sys.exit("%s: step %d with %d workers, optimizer steps %s" % (f, step, W, bad or "none"))
    for w in range(W):
        ws = int(h5py.File("%s/worker-%d.h5" % (d, w)).attrs["step"])
        if ws != step:
            sys.exit("%s/worker-%d.h5 holds step %d, the cut is %d" % (d, w, ws, step))
print("ok: %d checkpoint(s), each a clock cut (W * step optimizer steps in every tensor): %s"
      % (len(dirs), " ".join(os.path.basename(d) for d in dirs)))
EOF
}

# held NAME: pushes the shards held back for cuts (a cut that held none proves less).
held() {
    grep -o "held_for_cut=[0-9]*" "$WORK/$1.log" | awk -F= '{n += $2} END {print n + 0}'
}

# 1. SSP on a schedule.
run_job ssp $ARGS job.epochs=2 job.staleness=3 --checkpoint-every 50 checkpoint.keep=10
n=$(grep -c "checkpoint committed" "$WORK/ssp.log")
[ "$n" -eq 7 ] || fail "SSP every 50 steps of 374: $n checkpoints committed, expected 7"
check_cuts ssp
h=$(held ssp)
[ "$h" -gt 0 ] || fail "no push was held for a cut: the workers never ran apart, the test proves nothing"
echo "ok: SSP scheduled checkpoints, $h pushes held back for their cuts"

# 2. SSP stop signal: the cut is placed ahead (clock + 1 + staleness), the job exits 85, and the
# resumed run makes exactly the pushes the checkpoint does not hold.
start_job sspstop $ARGS job.epochs=2 job.staleness=2
wait_log sspstop "worker 3 training"
sleep 0.2
kill -USR1 "$JOB_PID"
rc=0
wait "$JOB_PID" || rc=$?
[ $rc -eq 85 ] || { tail -5 "$WORK/sspstop.log" >&2; fail "SSP stop signal: exit $rc, expected 85"; }
step=$(sed -n 's/.*checkpoint committed step=\([0-9]*\).* stop=1 .*/\1/p' "$WORK/sspstop.log")
[ -n "$step" ] || fail "no stop checkpoint committed in the SSP job"
check_cuts sspstop
run_job sspstop $ARGS job.epochs=2 job.staleness=2 --resume auto
pushes=$(grep -o "shard stopping pushes=[0-9]*" "$WORK/sspstop.log" | head -1 | cut -d= -f2)
[ "$pushes" -eq $((W * (374 - step))) ] ||
    fail "resumed from step $step: a shard took $pushes pushes, expected $((W * (374 - step)))"
at_least "$(json "$WORK/sspstop/summary.json" test_accuracy)" 0.80 "SSP stopped at $step and resumed: test_accuracy"

# 3. ASP on demand (SIGUSR2): worker 0 fences the shards (CUT_QUERY) and cuts 2 clocks past the
# furthest worker, not at the end of its epoch (up to 187 steps later).
start_job asp $ARGS job.epochs=6 job.staleness=inf
wait_log asp "epoch 1 done"
kill -USR2 "$JOB_PID"
wait "$JOB_PID" || fail "SIGUSR2 should not stop the ASP job"
line=$(grep "checkpoint requested step=[0-9]* reason=SIGUSR2" "$WORK/asp.log" | head -1)
step=$(echo "$line" | sed -n 's/.*step=\([0-9]*\) .*/\1/p')
at=$(echo "$line" | sed -n 's/.* at=\([0-9]*\).*/\1/p')
[ -n "$step" ] && [ -n "$at" ] || fail "ASP: no checkpoint requested after SIGUSR2"
ee=$(((at / 187 + 1) * 187)) # the end of worker 0's epoch: the cut without fences
# Near the furthest worker (how far ASP workers drift apart varies), and before the epoch's end unless
# the request came within a few steps of it.
{ [ "$step" -le $((at + 100)) ] && { [ "$step" -lt "$ee" ] || [ $((ee - at)) -le 10 ]; }; } ||
    fail "ASP on-demand cut at step $step, asked for at step $at (epoch end $ee): not placed by the fences"
grep -q "checkpoint committed step=$step " "$WORK/asp.log" || fail "ASP checkpoint $step not committed"
check_cuts asp
echo "ok: ASP on-demand checkpoint at step $step, asked for at step $at (the epoch ends at $ee)"

# 4. ASP stop: the fenced cut, the job exits 85, every worker saved the same position (a worker that
# finished the epoch before hearing of a cut at its end saves the state every announced worker saves:
# the epoch, all its steps, its evaluation owed), and the resumed run makes exactly the pushes the
# checkpoint does not hold.
start_job aspstop $ARGS job.epochs=4 job.staleness=inf
wait_log aspstop "epoch 1 done"
kill -USR1 "$JOB_PID"
rc=0
wait "$JOB_PID" || rc=$?
[ $rc -eq 85 ] || { tail -5 "$WORK/aspstop.log" >&2; fail "ASP stop signal: exit $rc, expected 85"; }
step=$(sed -n 's/.*checkpoint committed step=\([0-9]*\).* stop=1 .*/\1/p' "$WORK/aspstop.log")
[ -n "$step" ] || fail "ASP stop: no stop checkpoint committed"
/usr/bin/python3 - "$WORK/aspstop/checkpoints/step-$(printf %09d "$step")" $W <<'PY' || fail "ASP stop: the workers saved different positions"
import sys, h5py
d, W = sys.argv[1], int(sys.argv[2])
pos = {(int(h5py.File("%s/worker-%d.h5" % (d, w)).attrs["epoch"]), int(h5py.File("%s/worker-%d.h5" % (d, w)).attrs["position"])) for w in range(W)}
sys.exit(0 if len(pos) == 1 else "workers saved %s" % sorted(pos))
PY
check_cuts aspstop
timeout 300 "$TESSERA" train --run-dir "$WORK/aspstop" $ARGS job.epochs=4 job.staleness=inf --resume auto \
    >"$WORK/aspstop2.log" 2>&1 || { tail -5 "$WORK/aspstop2.log" >&2; fail "the ASP job did not resume to the end"; }
pushes=$(grep -o "shard stopping pushes=[0-9]*" "$WORK/aspstop2.log" | head -1 | cut -d= -f2)
[ "$pushes" -eq $((W * (748 - step))) ] || fail "ASP resumed from $step: $pushes pushes, expected $((W * (748 - step)))"
echo "ok: ASP stop at step $step: every worker saved the same position; resumed to the end"

# 5. Cuts a step apart, 3 workers, 2 shards: each shard announces each cut once per worker (a worker
# saves its part once, however many shards tell it), a worker that reached the next cut before
# hearing of the last still saves both, and every checkpoint commits; the job ends at once.
run_job every1 --servers 2 --workers 3 data.train_limit=24000 data.test_limit=2000 job.max_steps=60 \
    job.staleness=3 --checkpoint-every 1 checkpoint.keep=100
n=$(grep -c "checkpoint committed" "$WORK/every1.log")
[ "$n" -eq 59 ] || fail "a checkpoint every step of 60 with 3 workers: $n committed, expected 59"
grep -E "abandoned|in flight|no longer has" "$WORK/every1.log" && fail "a checkpoint lost a part"
W=3
check_cuts every1
echo "ok: checkpoints a step apart with 3 workers: all 59 committed, each a clock cut"
