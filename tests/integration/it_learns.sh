#!/bin/sh
# 1 scheduler + 2 shards + 2 workers on loopback learn Fashion-MNIST in one epoch (BSP), and the run
# directory holds summary.json, metrics.csv and params.bin; the progress line is printed.
. "$(dirname "$0")/lib.sh"

run_job learns --servers 2 --workers 2 job.epochs=1 job.progress_interval_s=0.5
S="$WORK/learns/summary.json"
at_least "$(json "$S" test_accuracy)" 0.80 "test_accuracy after 1 epoch"
for k in test_accuracy train_examples_per_sec epochs steps wall_s workers servers staleness; do
    json "$S" "$k" >/dev/null || fail "summary.json lacks $k"
done
[ "$(json "$S" workers)" = 2 ] && [ "$(json "$S" servers)" = 2 ] || fail "workers/servers in summary"
[ "$(json "$S" steps)" = 468 ] || fail "steps = $(json "$S" steps), expected 468 (30000 / 64 per worker)"
[ "$(wc -l <"$WORK/learns/metrics.csv")" -eq 2 ] || fail "metrics.csv should have a header and one row"
head -1 "$WORK/learns/metrics.csv" | grep -q '^epoch,step,train_loss,train_accuracy,test_loss,test_accuracy' ||
    fail "metrics.csv header"
[ "$(stat -c %s "$WORK/learns/params.bin")" -eq $((235146 * 4)) ] || fail "params.bin size"
grep -q 'progress epoch=1/1 step=[0-9]*/468 loss=[0-9.]* acc=[0-9.]* examples_per_s=[0-9]* eta=' "$WORK/learns.log" ||
    fail "no progress line in the log"
grep -q "tessera: running: .*mpiexec\|tessera: running: .*mpirun" "$WORK/learns.log" || fail "mpirun command line not printed"
grep -q "tessera: finished: test_accuracy=" "$WORK/learns.log" || fail "final accuracy not printed"
echo "ok: cluster learns"
