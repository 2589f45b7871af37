#!/bin/sh
# Mistakes are reported clearly, before or during launch, and nothing hangs.
. "$(dirname "$0")/lib.sh"

expect_error() { # expect_error PATTERN CMD...
    pattern=$1
    shift
    if timeout 120 "$@" >"$WORK/err.log" 2>&1; then fail "expected failure: $*"; fi
    grep -q -- "$pattern" "$WORK/err.log" || { cat "$WORK/err.log" >&2; fail "no '$pattern' in the output of: $*"; }
    echo "ok: $* -> $(grep -m1 -- "$pattern" "$WORK/err.log")"
}

printf '[job]\nepochs = 3\nbatch_sise = 64\n' >"$WORK/typo.ini"
expect_error "typo.ini:3: \[job\]: unknown key 'batch_sise'" "$TESSERA" train "$WORK/typo.ini"
expect_error "job 'no_such_job' not found" "$TESSERA" train no_such_job
expect_error "optimizer.lr=fast" "$TESSERA" train optimizer.lr=fast
expect_error "unknown option '--bogus'" "$TESSERA" train --bogus
expect_error "\-\-workers needs a positive integer" "$TESSERA" train --workers 0
expect_error "\[backend\] type 'tpu' unknown (cpu, cuda; cpu-staged for tests)" "$TESSERA" train backend.type=tpu
expect_error "\[ps\] device 'tpu' unknown (cpu, cuda; cpu-staged for tests)" "$TESSERA" train ps.device=tpu
# Shards asked to step on a GPU where there is none: each says why, and the job stops.
expect_error "ps.device = cuda: backend 'cuda': no CUDA device is visible\|ps.device = cuda: backend 'cuda' is not available in this build" \
    "$TESSERA" train --run-dir "$WORK/r1" ps.device=cuda
# The CUDA backend without a GPU (or in a build without CUDA): every worker says why, and the job stops.
expect_error "backend 'cuda': no CUDA device is visible\|backend 'cuda' is not available in this build" \
    "$TESSERA" train --run-dir "$WORK/r0" backend.type=cuda
# A data directory without the files: every worker says which file, and the job stops.
expect_error "cannot open $WORK/nodata/train-images-idx3-ubyte.gz" \
    "$TESSERA" train --run-dir "$WORK/r" data.dir="$WORK/nodata"
# A truncated data file is named as such.
mkdir -p "$WORK/trunc"
cp /usr/share/datasets/fashion-mnist/*.gz "$WORK/trunc/"
head -c 100000 /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz >"$WORK/trunc/train-images-idx3-ubyte.gz"
expect_error "train-images-idx3-ubyte.gz: truncated" "$TESSERA" train --run-dir "$WORK/r2" data.dir="$WORK/trunc"
# Launching the programs by hand with a wrong role mix explains the launch line.
expect_error "a job needs exactly 1 scheduler" mpirun --oversubscribe -np 2 "$BUILD_DIR/bin/tessera-worker" \
    "$BUILD_DIR/../examples/fashion_mlp.ini"
