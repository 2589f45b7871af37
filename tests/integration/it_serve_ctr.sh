#!/bin/sh
# Serving a model with embedding tables: a Predict carries dense features and categorical ids, and the
# router resolves the ids' rows on the shards (SPARSE_PULL to each shard that owns some) before it
# runs the model. The served logits of the whole test file equal the training job's own evaluation
# (within 1e-5), whether the training shards serve what they hold (`tessera train --serve`) or
# `tessera serve` loads the job's 2-shard checkpoint onto 3 shards (rows re-placed by hash). Malformed
# ids are answered with errors naming what is wrong, and the server stays up.
. "$(dirname "$0")/lib.sh"

E="tcp://127.0.0.1:$(free_port)"
"$TESSERA" datagen ctr --rows 40000 --slots 4 --vocab 800 --seed 11 --out "$WORK/data" >/dev/null
# 2 epochs of 156 steps per worker: the checkpoint at 312 holds the final parameters and rows.
start_job p ctr_dlrm --servers 2 --workers 2 data.dir="$WORK/data" data.sparse_features=4 \
    "layer emb.features=0-3" job.epochs=2 job.save_test_logits=1 --checkpoint-every 156 --serve --listen "$E"
wait_log p "serving the trained model" 120
"$TESSERA" status --endpoint "$E" --wait-ready 30 >"$WORK/status.json" || fail "train --serve not ready"
[ "$(json "$WORK/status.json" categorical_slots)" = 4 ] || fail "status does not say the model takes 4 ids per row"

compare() { # compare NAME: $WORK/NAME.jsonl against the training job's test logits
    /usr/bin/python3 - "$WORK/p" "$WORK/$1.jsonl" "$1" <<'PY'
import glob, json, sys
import numpy as np
run, pred, name = sys.argv[1:4]
ref = np.concatenate([np.fromfile(p, dtype="<f4") for p in sorted(glob.glob(f"{run}/test-logits-*.f32"))])
rows = [json.loads(l) for l in open(pred)]
got = np.array([r["logits"][0] for r in rows], dtype=np.float32)
assert got.shape == ref.shape and len(ref) > 3000, (got.shape, ref.shape)
assert [r["index"] for r in rows] == list(range(len(ref))), "rows out of order"
err = np.abs(got - ref).max()
assert err <= 1e-5, f"{name}: logits differ by up to {err}"
print(f"ok: {name}: {len(ref)} logits, max |difference| = {err:.2e}")
PY
}

auc=$(json "$WORK/p/summary.json" test_auc)
"$TESSERA" predict --endpoint "$E" --input "$WORK/data/test.tsv" --output "$WORK/live.jsonl" 2>"$WORK/live.err" ||
    { cat "$WORK/live.err" >&2; fail "predict against train --serve"; }
cat "$WORK/live.err"
compare live
grep -q "test_auc=$(printf '%.4f' "$auc")" "$WORK/live.err" || fail "served test_auc differs from the job's $auc"
echo "ok: served test_auc equals the job's $auc"

kill -TERM "$JOB_PID"
wait "$JOB_PID" || true
[ -d "$WORK/p/checkpoints/step-000000312" ] || fail "no checkpoint at step 312"

start_serve serve "$E" --checkpoint "$WORK/p" --servers 3 --replicas 2
"$TESSERA" predict --endpoint "$E" --input "$WORK/data/test.tsv" --output "$WORK/ckpt.jsonl" 2>"$WORK/ckpt.err" ||
    { cat "$WORK/ckpt.err" >&2; fail "predict against tessera serve"; }
compare ckpt
# A replica of shard 2 dies: its rows are answered by the other replica, with the same logits.
victim=$(pgrep -f "tessera-ps --serve .*--shard 2 " | tail -1)
[ -n "$victim" ] || fail "no replica process of shard 2"
kill -9 "$victim"
"$TESSERA" predict --endpoint "$E" --input "$WORK/data/test.tsv" --output "$WORK/failover.jsonl" 2>"$WORK/fo.err" ||
    { cat "$WORK/fo.err" >&2; fail "predict after a replica of shard 2 died"; }
compare failover

# The Python client: ids as uint64, one missing; then malformed requests, answered and survived.
/usr/bin/python3 - "$E" "$BUILD_DIR" "$(dirname "$0")/../../client/python" <<'PY' || fail "Python client checks"
import sys
sys.path[:0] = [sys.argv[3], sys.argv[2] + "/python"]
import numpy as np
import tessera_client as tc
c = tc.Client(sys.argv[1], timeout_ms=10000)
x = np.zeros((3, 13), np.float32)
ids = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [tc.ID_MISSING] * 4], np.uint64)
p = c.predict(x, ids=ids)
assert p.logits.shape == (3, 1), p.logits.shape
# The same row alone gives the same logit: batching does not mix rows' bags.
assert abs(c.predict(x[:1], ids=ids[:1]).logits[0, 0] - p.logits[0, 0]) < 1e-6
def err(**kw):
    try:
        c.predict(**kw)
    except tc.TesseraError as e:
        return e.code_name + ": " + str(e)
    raise AssertionError(f"no error for {kw.keys()}")
e1 = err(x=x)
assert "INVALID_ARGUMENT" in e1 and "categorical ids (U64 [rows, 4])" in e1, e1
e2 = err(x=x, ids=ids[:, :3])
assert "INVALID_ARGUMENT" in e2 and "takes U64 [3, 4]" in e2, e2
e3 = err(x=x, ids=ids[:2])
assert "INVALID_ARGUMENT" in e3 and "ids are U64 [2, 4]" in e3, e3
assert c.predict(x, ids=ids).logits.shape == (3, 1)  # still serving
print("ok: Python client with ids; errors:", e1, "|", e2, sep="\n  ")
PY
stop_serve
for k in 0 1 2; do
    n=$(grep -o "serving shard stopping shard=$k infer_requests=[0-9]*" "$WORK/serve/shard-$k-0.log" | sed 's/.*=//')
    [ "${n:-0}" -gt 0 ] || fail "serving shard $k answered no row requests"
    echo "ok: serving shard $k answered $n SPARSE_PULL requests"
done

# Pre-sized tables (rows = 300): an id beyond them is refused with the row, slot and table named.
"$TESSERA" datagen ctr --rows 20000 --slots 4 --vocab 300 --ids index --seed 9 --out "$WORK/d2" >/dev/null
run_job sized ctr_dlrm --servers 2 --workers 1 data.dir="$WORK/d2" data.sparse_features=4 \
    "layer emb.features=0-3" "layer emb.rows=300" job.epochs=1 --checkpoint-every 100
start_serve serve2 "$E" --checkpoint "$WORK/sized" --servers 2
/usr/bin/python3 - "$E" "$BUILD_DIR" "$(dirname "$0")/../../client/python" <<'PY' || fail "pre-sized tables: checks"
import sys
sys.path[:0] = [sys.argv[3], sys.argv[2] + "/python"]
import numpy as np
import tessera_client as tc
c = tc.Client(sys.argv[1], timeout_ms=10000)
x = np.zeros((2, 13), np.float32)
assert c.predict(x, ids=np.array([[0, 1, 2, 299], [5, 6, 7, 8]], np.uint64)).logits.shape == (2, 1)
try:
    c.predict(x, ids=np.array([[0, 1, 2, 3], [5, 300, 7, 8]], np.uint64))
    raise AssertionError("id 300 of a 300-row table was accepted")
except tc.TesseraError as e:
    assert e.code_name == "INVALID_ARGUMENT" and "row 1, slot 1: id 300 is out of range for table emb.slot1 (rows = 300)" in str(e), e
    print("ok: out-of-range id refused:", e)
PY
stop_serve
