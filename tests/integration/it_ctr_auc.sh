#!/bin/sh
# The DLRM example on generated click data (Zipf ids, a planted logistic model) reaches a test AUC
# within 0.01 of the planted model's own, with its tables on 2 shards; and BSP stays bit-identical
# across shard counts with sparse tables (rows are placed by hash, summed in worker order).
. "$(dirname "$0")/lib.sh"

"$TESSERA" datagen ctr --rows 1000000 --slots 8 --vocab 2000 --seed 3 --out "$WORK/data"
run_job dlrm ctr_dlrm --servers 2 --workers 2 data.dir="$WORK/data"
truth=$(json "$WORK/data/truth.json" test_auc)
auc=$(json "$WORK/dlrm/summary.json" test_auc)
logloss=$(json "$WORK/dlrm/summary.json" test_logloss)
echo "planted test_auc=$truth trained test_auc=$auc test_logloss=$logloss"
/usr/bin/python3 -c 'import sys; t, a = map(float, sys.argv[1:]); sys.exit(0 if abs(t - a) <= 0.01 else 1)' \
    "$truth" "$auc" || fail "test_auc $auc is not within 0.01 of the planted model's $truth"
echo "ok: |$auc - $truth| <= 0.01"
grep -q "shard stopping.*sparse_rows=[1-9]" "$WORK/dlrm.log" || fail "the shards hold no sparse rows"

# BSP with sparse tables: 1 and 3 shards end with the same parameters as 2 (dense digest), and the
# same test metrics.
"$TESSERA" datagen ctr --rows 20000 --slots 4 --vocab 500 --seed 5 --out "$WORK/small"
for s in 1 2 3; do
    run_job "exact$s" ctr_dlrm --servers $s --workers 2 data.dir="$WORK/small" \
        data.sparse_features=4 "layer emb.features=0-3" job.epochs=1
done
d1=$(json "$WORK/exact1/summary.json" param_digest)
for s in 2 3; do
    d=$(json "$WORK/exact$s/summary.json" param_digest)
    [ "$d" = "$d1" ] || fail "BSP with $s shards ended with digest $d, 1 shard with $d1"
    [ "$(json "$WORK/exact$s/summary.json" test_auc)" = "$(json "$WORK/exact1/summary.json" test_auc)" ] ||
        fail "test_auc differs between 1 and $s shards"
done
echo "ok: 1, 2 and 3 shards end bit-identical (digest $d1)"
