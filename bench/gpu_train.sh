#!/bin/sh
# GPU training throughput, Tessera against PyTorch on the same GPU, same model and batch: Tessera trains
# JOB (default bench/wide_mlp.ini, 784-4096-4096-10, Adam) with one CUDA worker and SERVERS shards on
# this machine (every step pushes and pulls the parameters through the shards, as training does, with
# the push overlapping the backward pass: through shared memory with net.local_exchange = auto, the
# default, over ZeroMQ with TRAIN_ARGS=net.local_exchange=off); PyTorch trains the same MLP with its data already on the GPU (bench/torch_mlp_gpu.py).
# Writes bench/results/gpu_train.json (or RESULT) with both examples/s and the ratio. Needs a GPU and
# a CUDA build (BUILD_DIR, default build/).
#   BATCH       examples per step (default: the job's batch_size); the shard exchange costs the same
#               per step at any batch, so the ratio depends on it
#   STEPS       steps of each system (default 300)
#   SERVERS     Tessera's shards on this machine (default 4: the optimizer step and the exchange are
#               split across them, one core each)
#   TRAIN_ARGS  section.key=value overrides for Tessera's job, e.g. "data.dir=/data/fashion-mnist"
#   PYTHON      the Python with PyTorch (default python3)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
JOB=${JOB:-$ROOT/bench/wide_mlp.ini}
STEPS=${STEPS:-300}
SERVERS=${SERVERS:-4}
PY=${PYTHON:-python3}
RESULT=${RESULT:-$ROOT/bench/results/gpu_train.json}
"$BUILD_DIR/bin/test_backend_ops" --probe >/dev/null || { echo "gpu_train.sh: no usable CUDA backend" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
RUN=$(mktemp -d)
trap 'rm -rf "$RUN"' EXIT
batch=${BATCH:-$(sed -n 's/^batch_size *= *\([0-9]*\).*/\1/p' "$JOB")}
# job.epochs=STEPS: every epoch has at least one step, so job.max_steps is what stops the run.
# shellcheck disable=SC2086
"$BUILD_DIR/bin/tessera" train "$JOB" --servers "$SERVERS" --workers 1 --run-dir "$RUN/t" backend.type=cuda \
    job.batch_size="$batch" job.max_steps="$STEPS" job.epochs="$STEPS" ${TRAIN_ARGS:-} >"$RUN/t.log" 2>&1 ||
    { tail -20 "$RUN/t.log" >&2; exit 1; }
tessera=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["train_examples_per_sec"])' "$RUN/t/summary.json")
torch_json=$("$PY" "$ROOT/bench/torch_mlp_gpu.py" --job "$JOB" --batch "$batch" --steps "$STEPS")
"$PY" - "$tessera" "$torch_json" "$RESULT" "$SERVERS" <<'PY'
import json, sys
t, p, out, servers = float(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
r = {"device": p["device"], "layers": p["layers"], "batch": p["batch"], "steps": p["steps"], "servers": servers,
     "tessera_examples_per_sec": t, "pytorch_examples_per_sec": p["examples_per_sec"],
     "ratio": t / p["examples_per_sec"]}
json.dump(r, open(out, "w"), indent=1)
print(json.dumps(r))
PY
