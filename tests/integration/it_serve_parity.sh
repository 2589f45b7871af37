#!/bin/sh
# Served predictions equal the training job's own evaluation: the 10,000 Fashion-MNIST test images,
# sent through `tessera predict`, get the classes and (within 1e-5) the logits the workers computed
# in their final evaluation. Checked twice: `tessera train --serve` (the training shards serve what
# they hold, no reload) and `tessera serve` from the checkpoint that job wrote, with the router
# caching the model and with the shards evaluating the linear layers.
. "$(dirname "$0")/lib.sh"

DATA=/usr/share/datasets/fashion-mnist
E="tcp://127.0.0.1:$(free_port)"

# One epoch is 468 steps per worker: the checkpoint at 468 holds the final parameters.
start_job p --servers 2 job.epochs=1 job.save_test_logits=1 --checkpoint-every 468 --serve --listen "$E"
wait_log p "serving the trained model" 120
"$TESSERA" status --endpoint "$E" --wait-ready 30 >"$WORK/status.json" || fail "train --serve not ready"

compare() { # compare NAME: predictions in $WORK/NAME.jsonl against the training job's logits
    /usr/bin/python3 - "$WORK/p" "$WORK/$1.jsonl" "$1" <<'PY'
import glob, json, sys
import numpy as np
run, pred, name = sys.argv[1:4]
parts = sorted(glob.glob(f"{run}/test-logits-*.f32"))
ref = np.concatenate([np.fromfile(p, dtype="<f4") for p in parts]).reshape(-1, 10)
rows = [json.loads(l) for l in open(pred)]
got = np.array([r["logits"] for r in rows], dtype=np.float32)
assert got.shape == ref.shape == (10000, 10), (got.shape, ref.shape)
assert [r["index"] for r in rows] == list(range(10000)), "rows out of order"
same = (got.argmax(1) == ref.argmax(1)).mean()
err = np.abs(got - ref).max()
assert same == 1.0, f"{name}: classes differ on {(1 - same) * 10000:.0f} rows"
assert err <= 1e-5, f"{name}: logits differ by up to {err}"
print(f"ok: {name}: 10000 classes equal, max |logit difference| = {err:.2e}")
PY
}

"$TESSERA" predict --endpoint "$E" --input "$DATA/t10k-images-idx3-ubyte.gz" --labels "$DATA/t10k-labels-idx1-ubyte.gz" \
    --output "$WORK/live.jsonl" 2>"$WORK/live.err" || { cat "$WORK/live.err" >&2; fail "predict against train --serve"; }
cat "$WORK/live.err"
compare live
acc=$(json "$WORK/p/summary.json" test_accuracy)
grep -q "accuracy=$(printf '%.4f' "$acc")" "$WORK/live.err" || fail "served accuracy differs from the job's $acc"
echo "ok: served accuracy equals the job's test_accuracy $acc"

kill -TERM "$JOB_PID"
wait "$JOB_PID" || true
[ -d "$WORK/p/checkpoints/step-000000468" ] || fail "no checkpoint at step 468"

for cache in 1024 0; do
    start_serve "serve-$cache" "$E" --checkpoint "$WORK/p" --servers 3 serve.cache_mb=$cache
    want=router; [ "$cache" = 0 ] && want=shards
    placement=$(json "$WORK/serve-$cache.status.json" placement)
    [ "$placement" = "$want" ] || fail "placement is $placement, not $want"
    "$TESSERA" predict --endpoint "$E" --input "$DATA/t10k-images-idx3-ubyte.gz" --output "$WORK/ckpt-$cache.jsonl" \
        2>/dev/null || fail "predict against tessera serve (cache_mb=$cache)"
    compare "ckpt-$cache"
    stop_serve
done
