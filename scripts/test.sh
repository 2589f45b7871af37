#!/bin/sh
# Installs everything, builds, and runs the tests with ctest. Arguments go to ctest; by default every
# test except those labelled `slow` (use `./scripts/test.sh -L slow` for those, or `--all` for all).
# Tests labelled `gpu` report "skipped" where no GPU is visible. Without arguments it then builds
# build-emu/ (-DTESSERA_CUDA=EMU: the CUDA code on the host emulator of tests/cuda_emu) and runs its
# emu.* tests, the gpu tests' checks on the CPU; TESSERA_TEST_EMU=0 leaves them out.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
./scripts/install-deps.sh
./scripts/build.sh
cd "${BUILD_DIR:-$ROOT/build}"
if [ "${1:-}" = "--all" ]; then
    shift
    exec ctest --output-on-failure "$@"
elif [ $# -gt 0 ]; then
    exec ctest --output-on-failure "$@"
fi
rc=0
ctest --output-on-failure -LE slow || rc=$?
if [ "${TESSERA_TEST_EMU:-1}" != 0 ]; then
    EMU_DIR=${EMU_BUILD_DIR:-$ROOT/build-emu}
    BUILD_DIR=$EMU_DIR "$ROOT/scripts/build.sh" -DTESSERA_CUDA=EMU >"$ROOT/build-emu.log" 2>&1 ||
        { tail -30 "$ROOT/build-emu.log"; echo "test.sh: the emulator build failed (build-emu.log)"; exit 1; }
    (cd "$EMU_DIR" && ctest --output-on-failure -L emu) || rc=$?
fi
exit $rc
