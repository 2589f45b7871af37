# Shared by the gpu-labelled tests (sourced after tests/integration/lib.sh).

# require_gpus N WHAT: exit 77 (ctest: skipped) unless nvidia-smi lists N GPUs and this build's CUDA
# backend opens; then prints the GPUs. With TESSERA_GPU_EMU=1 (the emu.* tests of a TESSERA_CUDA=EMU
# build) the devices are the host emulator's, TESSERA_CUDA_EMU_DEVICES of them (1).
require_gpus() {
    gpus=0
    if [ "${TESSERA_GPU_EMU:-0}" = 1 ]; then
        gpus=${TESSERA_CUDA_EMU_DEVICES:-1}
        if [ "$gpus" -lt "$1" ]; then
            echo "SKIP: $2 needs $1 emulated device(s); TESSERA_CUDA_EMU_DEVICES=$gpus"
            exit 77
        fi
        "$BUILD_DIR/bin/test_backend_ops" --probe || exit 1
        return 0
    fi
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
