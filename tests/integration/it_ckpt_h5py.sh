#!/bin/sh
# Checkpoints are plain HDF5: h5py (Debian's python3-h5py) opens them, and the tensors reassembled from
# the shard files equal the trained parameters.
. "$(dirname "$0")/lib.sh"

run_job h --servers 3 job.max_steps=200 data.train_limit=24000 data.test_limit=2000 --checkpoint-every 200
/usr/bin/python3 - "$WORK/h" <<'PY'
import sys, h5py, numpy as np
run = sys.argv[1]
step = f"{run}/checkpoints/step-000000200"
with h5py.File(f"{step}/manifest.h5", "r") as m:
    assert m.attrs["step"] == 200 and m.attrs["n_shards"] == 3 and m.attrs["n_workers"] == 2, dict(m.attrs)
    assert "[layer fc1]" in m.attrs["job"], "job text missing"
params = np.fromfile(f"{run}/params.bin", dtype="<f4")
order = [("fc1.weight", (256, 784)), ("fc1.bias", (256, 1)), ("fc2.weight", (128, 256)),
         ("fc2.bias", (128, 1)), ("fc3.weight", (10, 128)), ("fc3.bias", (10, 1))]
off = 0
for name, shape in order:
    full = np.full(shape, np.nan, dtype=np.float32)
    for k in range(3):
        with h5py.File(f"{step}/shard-{k}.h5", "r") as f:
            assert f.attrs["n_shards"] == 3 and f.attrs["optimizer"] == "adam"
            if name not in f:
                continue
            g = f[name]
            assert tuple(g.attrs["logical_shape"]) == shape
            assert g.attrs["optimizer_steps"] == 200
            rb, re = int(g.attrs["row_begin"]), int(g.attrs["row_end"])
            full[rb:re] = g["param"][()]
            assert g["exp_avg"].shape == g["param"].shape and g["exp_avg_sq"].shape == g["param"].shape
    n = shape[0] * shape[1]
    trained = params[off:off + n].reshape(shape)
    off += n
    assert not np.isnan(full).any(), f"{name}: rows missing from the shard files"
    assert np.array_equal(full, trained), f"{name}: checkpoint differs from the trained parameters"
    print(f"ok: {name} {shape} equal")
assert off == params.size
with h5py.File(f"{step}/worker-0.h5", "r") as w:
    assert w.attrs["step"] == 200
print("ok: h5py reads the checkpoint; tensors equal the trained parameters")
PY
