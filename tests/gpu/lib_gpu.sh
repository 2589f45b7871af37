# Shared by the gpu-labelled tests (sourced after tests/integration/lib.sh).

# require_gpus N WHAT: exit 77 (ctest: skipped) unless nvidia-smi lists N GPUs and this build's CUDA
# backend opens; then prints the GPUs.
require_gpus() {
    gpus=0
    if command -v nvidia-smi >/dev/null 2>&1; then
        gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    fi
    if [ "$gpus" -lt "$1" ]; then
        echo "SKIP: $2 needs $1 NVIDIA GPU(s); nvidia-smi -L lists $gpus"
        exit 77
    fi
    if ! "$BUILD_DIR/bin/test_backend_ops" --probe >/dev/null 2>&1; then
        echo "SKIP: this build has no usable CUDA backend ($("$BUILD_DIR/bin/test_backend_ops" --probe 2>&1 | tail -1))"
        exit 77
    fi
    nvidia-smi -L
}
