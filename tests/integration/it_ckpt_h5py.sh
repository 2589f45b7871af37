#!/bin/sh
# Checkpoints are plain HDF5: h5py (Debian's python3-h5py) opens them, and the tensors reassembled from
# the shard files equal the trained parameters.
. "$(dirname "$0")/lib.sh"

# Twice: with checkpoint.direct_io = 1 (the default: the large datasets are written with O_DIRECT after
# HDF5 has laid out the file) and = 0 (HDF5 writes everything through the page cache).
for mode in 1 0; do
run_job "h$mode" --servers 3 job.max_steps=200 data.train_limit=24000 data.test_limit=2000 --checkpoint-every 200 \
    checkpoint.direct_io=$mode
/usr/bin/python3 - "$WORK/h$mode" "$mode" "$WORK/h$mode.log" <<'PY'
import os, re, sys, h5py, numpy as np
run, mode, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = [l for l in open(log) if "checkpoint slice written" in l]
assert len(lines) == 3, f"expected 3 shards' 'checkpoint slice written' lines, got {len(lines)}"
direct = [int(re.search(r"direct_bytes=(\d+)", l).group(1)) for l in lines]
total = [int(re.search(r" bytes=(\d+)", l).group(1)) for l in lines]
refused = "direct I/O refused" in open(log).read()
try:  # does this filesystem take O_DIRECT writes at all? (tmpfs before Linux 6.6 does not)
    import mmap
    block = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT wants
    fd = os.open(f"{run}/probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
    try:
        os.pwrite(fd, block, 0)
    finally:
        os.close(fd)
    takes_direct = True
except OSError:
    takes_direct = False
os.unlink(f"{run}/probe") if os.path.exists(f"{run}/probe") else None
if mode == 0:
    assert direct == [0, 0, 0], f"direct_io=0 wrote {direct} bytes with O_DIRECT"
elif takes_direct:
    # fc1's and fc2's slices (and their Adam slots) are over 64 KiB: all but each extent's last block
    assert all(d > 0.75 * t for d, t in zip(direct, total)), f"direct {direct} of {total} bytes"
    assert not refused, "direct I/O reported refused on a filesystem that takes O_DIRECT"
else:
    assert direct == [0, 0, 0] and refused, f"O_DIRECT unavailable here, yet direct={direct} refused={refused}"
print(f"ok: direct_io={mode}: {sum(direct)} of {sum(total)} bytes with O_DIRECT (filesystem takes it: {takes_direct})")
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
done
cmp "$WORK/h1/params.bin" "$WORK/h0/params.bin" || fail "direct_io changed the training"
echo "ok: both write paths give the same run"
