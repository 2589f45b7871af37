#!/bin/sh
# Bounded staleness (SSP, s=2) and asynchronous (ASP) runs finish and learn, and what they report is
# the shards' final model: every worker's last evaluation (its test logits) is params.bin's forward
# pass, although each worker trained on its own view of the parameters.
. "$(dirname "$0")/lib.sh"

run_job ssp --servers 2 --workers 2 job.epochs=1 job.staleness=2 job.save_test_logits=1
run_job asp --servers 2 --workers 2 job.epochs=1 job.staleness=inf job.save_test_logits=1
[ "$(json "$WORK/ssp/summary.json" consistency)" = ssp ] || fail "ssp run not reported as ssp"
[ "$(json "$WORK/asp/summary.json" consistency)" = asp ] || fail "asp run not reported as asp"
[ "$(json "$WORK/asp/summary.json" staleness)" = inf ] || fail "asp staleness not inf"
at_least "$(json "$WORK/ssp/summary.json" test_accuracy)" 0.80 "SSP test_accuracy"
at_least "$(json "$WORK/asp/summary.json" test_accuracy)" 0.80 "ASP test_accuracy"

for run in ssp asp; do
    /usr/bin/python3 - "$WORK/$run" <<'PY' || fail "$run: a worker's test logits are not params.bin's"
import glob, gzip, sys, numpy as np
run = sys.argv[1]
p = np.fromfile(f"{run}/params.bin", dtype="<f4")
shapes = [(256, 784), (256,), (128, 256), (128,), (10, 128), (10,)]  # examples/fashion_mlp.ini
ts, off = [], 0
for s in shapes:
    n = int(np.prod(s))
    ts.append(p[off:off + n].reshape(s))
    off += n
assert off == p.size, f"params.bin holds {p.size} floats, the model {off}"
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
    x = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 784)
x = ((x.astype(np.float32) / 255) - np.float32(0.2860)) / np.float32(0.3530)
h = np.maximum(x @ ts[0].T + ts[1], 0)
h = np.maximum(h @ ts[2].T + ts[3], 0)
z = h @ ts[4].T + ts[5]
files = sorted(glob.glob(f"{run}/test-logits-*.f32"))
assert len(files) == 2, f"expected one test-logits file per worker, got {files}"
for fn in files:
    a, b = (int(v) for v in fn.rsplit("/", 1)[1][len("test-logits-"):-len(".f32")].split("-"))
    got = np.fromfile(fn, dtype="<f4").reshape(b - a, 10)
    d = float(np.abs(got - z[a:b]).max())
    assert d < 1e-3, f"{fn}: max |logit - params.bin's| = {d}"
    print(f"ok: rows {a}-{b}: the worker's logits are params.bin's (max diff {d:.2g})")
PY
done
