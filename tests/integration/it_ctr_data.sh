#!/bin/sh
# CTR data errors: a malformed line or an id out of range of a pre-sized table stops the job with the
# file and line (data.on_error = fail), or is skipped and counted in summary.json's data_skipped
# (data.on_error = skip). libsvm files train too.
. "$(dirname "$0")/lib.sh"

"$TESSERA" datagen ctr --rows 20000 --slots 4 --vocab 300 --ids index --seed 9 --out "$WORK/d"

expect_fail() { # expect_fail NAME PATTERN ARGS...
    name=$1
    pattern=$2
    shift 2
    if timeout 300 "$TESSERA" train ctr_dlrm --run-dir "$WORK/$name" --servers 2 --workers 2 "$@" \
        >"$WORK/$name.log" 2>&1; then
        fail "$name: expected the job to fail"
    fi
    grep -qE "$pattern" "$WORK/$name.log" || { tail -20 "$WORK/$name.log" >&2; fail "$name: no '$pattern'"; }
    echo "ok: $name -> $(grep -m1 -oE "$pattern" "$WORK/$name.log")"
}

# Malformed lines: a field missing on line 7, a non-integer on line 12, a bad hex id on line 30.
mkdir -p "$WORK/bad"
cp "$WORK/d/test.tsv" "$WORK/bad/test.tsv"
awk -F'\t' -v OFS='\t' 'NR == 7 { NF = NF - 1 } NR == 12 { $3 = "x1" } NR == 30 { $16 = "zz" } { print }' \
    "$WORK/d/train.tsv" >"$WORK/bad/train.tsv"
expect_fail malformed "bad/train.tsv:7: [^ ].*" data.dir="$WORK/bad" data.sparse_features=4 "layer emb.features=0-3" job.epochs=1
run_job skipped ctr_dlrm --servers 2 --workers 2 data.dir="$WORK/bad" data.on_error=skip data.sparse_features=4 "layer emb.features=0-3" job.epochs=1
[ "$(json "$WORK/skipped/summary.json" data_skipped)" = 3 ] ||
    fail "data_skipped = $(json "$WORK/skipped/summary.json" data_skipped), expected 3"
grep -q "train.tsv:12" "$WORK/skipped.log" || fail "the skipped line 12 is not reported"
echo "ok: 3 malformed lines skipped and counted"

# Ids out of range of a pre-sized table: the data has ids < 300, the table 200 rows.
expect_fail range "train.tsv:[0-9]+: categorical slot [0-9]: id [0-9]+ .* out of range for table emb.slot[0-9] \(rows = 200\)" \
    data.dir="$WORK/d" "layer emb.rows=200" data.sparse_features=4 "layer emb.features=0-3" job.epochs=1
run_job range_skip ctr_dlrm --servers 2 --workers 2 data.dir="$WORK/d" data.on_error=skip "layer emb.rows=200" data.sparse_features=4 "layer emb.features=0-3" job.epochs=1
at_least "$(json "$WORK/range_skip/summary.json" data_skipped)" 1 "examples skipped for out-of-range ids"
# With the table large enough the same data trains with nothing skipped.
run_job range_ok ctr_dlrm --servers 2 --workers 2 data.dir="$WORK/d" "layer emb.rows=300" data.sparse_features=4 "layer emb.features=0-3" job.epochs=1
[ "$(json "$WORK/range_ok/summary.json" data_skipped)" = 0 ] || fail "nothing should be skipped with rows = 300"

# libsvm: dense indices 1..13, the categorical ids above them (one slot, weighted bag).
/usr/bin/python3 - "$WORK/d" "$WORK/svm" <<'PY'
import os, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for name in ("train", "test"):
    with open(f"{src}/{name}.tsv") as f, open(f"{dst}/{name}.svm", "w") as g:
        for line in f:
            c = line.rstrip("\n").split("\t")
            feats = [f"{j + 1}:{v}" for j, v in enumerate(c[1:14]) if v]
            feats += [f"{14 + s * 300 + int(v, 16)}:1" for s, v in enumerate(c[14:]) if v]
            g.write(c[0] + " " + " ".join(feats) + "\n")
PY
run_job svm ctr_dlrm --servers 2 --workers 2 data.dir="$WORK/svm" data.format=libsvm data.train=train.svm \
    data.test=test.svm data.sparse_features=1 "layer emb.features=0" job.epochs=1 "layer emb.mode=sum"
at_least "$(json "$WORK/svm/summary.json" test_auc)" 0.7 "test_auc on the libsvm copy"
