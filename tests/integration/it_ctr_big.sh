#!/bin/sh
# examples/ctr_dlrm_big: 26 pre-sized tables (2.6M rows) larger than one shard's budget
# (ps.memory_mb = 160) train on 4 shards, each holding its hashed share; with 2 shards the job stops at
# start with an error naming the budget, the size needed and the shard count that fits.
. "$(dirname "$0")/lib.sh"

"$TESSERA" datagen ctr --rows 100000 --slots 26 --vocab 100000 --ids index --seed 7 --out "$WORK/data"

if timeout 300 "$TESSERA" train ctr_dlrm_big --run-dir "$WORK/few" --servers 2 --workers 2 \
    data.dir="$WORK/data" >"$WORK/few.log" 2>&1; then
    fail "the big example should not fit 2 shards of 160 MB"
fi
grep -E "budget is 160.0 MB \(ps.memory_mb\).*needs [0-9.]+ MB in all.*use at least [0-9]+ shards" "$WORK/few.log" ||
    { tail -20 "$WORK/few.log" >&2; fail "no clear budget error with 2 shards"; }

run_job big ctr_dlrm_big --servers 4 --workers 2 data.dir="$WORK/data"
total=0
for mb in $(grep -o "shard sparse tables=26 rows=[0-9]* memory_mb=[0-9.]*" "$WORK/big.log" | sed 's/.*memory_mb=//'); do
    at_least 160 "$mb" "a shard's memory (MB) within the 160 MB budget"
    total=$(/usr/bin/python3 -c "print($total + $mb)")
done
at_least "$total" 300 "the 4 shards' memory together (MB), more than one shard's budget"
auc=$(json "$WORK/big/summary.json" test_auc)
at_least "$auc" 0.75 "test_auc of the big example after one epoch"
