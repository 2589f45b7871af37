#!/bin/sh
# A real single-node Slurm from Debian's packages (munge, slurmctld, slurmd), configured in a
# temporary directory: deploy/slurm/train.sbatch is submitted, the job is forced to requeue mid-run
# (scontrol requeue: SIGTERM, then a restart), and it must resume from its checkpoint and finish with
# the parameters of an uninterrupted run.
. "$(dirname "$0")/lib.sh"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
for b in munged slurmctld slurmd sbatch scontrol; do
    command -v $b >/dev/null || fail "$b is missing: run ./scripts/install-deps.sh"
done
[ "$(id -u)" -eq 0 ] || fail "the Slurm test starts daemons and needs root"

HOST=$(hostname -s)
S="$WORK/slurm"
mkdir -p "$S/state" "$S/spool"
PORT=$((20000 + $$ % 20000))
cat >"$S/slurm.conf" <<CONF
ClusterName=tessera-test
SlurmctldHost=$HOST
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
KillWait=5
MinJobAge=600
JobRequeue=1
NodeName=$HOST CPUs=2 State=UNKNOWN
PartitionName=test Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$S/slurm.conf"

# munge: reuse a running daemon, else start one (as the munge user, as packaged)
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged || fail "cannot start munged"
    sleep 0.5
fi
munge -n | unmunge >/dev/null || fail "munge does not work"

slurmctld -D -c -f "$SLURM_CONF" >"$S/slurmctld.out" 2>&1 &
CTLD=$!
slurmd -D -f "$SLURM_CONF" -N "$HOST" >"$S/slurmd.out" 2>&1 &
SLURMD=$!
cleanup_slurm() {
    kill "$SLURMD" "$CTLD" 2>/dev/null
    wait "$SLURMD" "$CTLD" 2>/dev/null
}
trap 'cleanup_slurm; rm -rf "$WORK"' EXIT

for _ in $(seq 200); do
    sinfo -h -o %t 2>/dev/null | grep -qE '^idle' && break
    sleep 0.1
done
sinfo -h -o "%P %t %N" | grep -q idle || { tail -20 "$S/slurmctld.log" "$S/slurmd.log" >&2; fail "the Slurm node did not come up"; }
echo "ok: slurmctld and slurmd up: $(sinfo -h -o '%P %t %N')"

ARGS="job.epochs=2 data.train_limit=24000 data.test_limit=2000"
run_job ref $ARGS --checkpoint-every 60

JOBID=$(cd "$WORK" && sbatch --parsable --output="$WORK/slurm-%j.out" \
    --export=ALL,TESSERA="$TESSERA",RUN_DIR="$WORK/run",CHECKPOINT_EVERY=60,TERM_GRACE=3 \
    "$ROOT/deploy/slurm/train.sbatch" $ARGS) || fail "sbatch failed"
OUT="$WORK/slurm-$JOBID.out"
echo "submitted job $JOBID"
for _ in $(seq 1200); do
    grep -q "checkpoint committed step=120" "$OUT" 2>/dev/null && break
    sleep 0.05
done
grep -q "checkpoint committed step=120" "$OUT" || { cat "$OUT" >&2; scontrol show job "$JOBID" >&2; fail "the job did not checkpoint"; }
scontrol requeue "$JOBID" || fail "scontrol requeue failed"
echo "requeued job $JOBID mid-run"
# A requeued job is held back (BeginTime) for a while; let it start at once.
for _ in $(seq 600); do
    scontrol show job "$JOBID" | grep -q "JobState=PENDING" && break
    sleep 0.1
done
scontrol update JobId="$JOBID" StartTime=now || true

state=""
for _ in $(seq 1800); do
    state=$(scontrol show job "$JOBID" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
    [ "$state" = COMPLETED ] || [ "$state" = FAILED ] || [ "$state" = CANCELLED ] && break
    sleep 0.1
done
cat "$OUT"
[ "$state" = COMPLETED ] || { scontrol show job "$JOBID" >&2; fail "job ended $state"; }
scontrol show job "$JOBID" | grep -q "Restarts=1" || fail "the job did not restart"
grep -q "restart 1 on" "$OUT" || fail "no second start in the job output"
grep -q "resuming from .*step-" "$OUT" || fail "the requeued job did not resume from a checkpoint"
step=$(grep -o "resuming from [^ ]*step-[0-9]*" "$OUT" | head -1 | sed 's/.*step-0*//')
if [ $((step % 60)) -ne 0 ]; then
    echo "ok: the requeue's SIGTERM made the job write a stop checkpoint (step $step) before it ended"
else
    echo "note: resumed from the scheduled checkpoint at step $step (the stop checkpoint did not finish)"
fi
cmp "$WORK/ref/params.bin" "$WORK/run/params.bin" || fail "requeued job's parameters differ from the uninterrupted run"
echo "ok: Slurm requeue mid-run; resumed from its checkpoint; bit-identical to the uninterrupted run"
