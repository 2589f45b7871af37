#!/bin/sh
# Configures and builds Tessera into build/ (or $BUILD_DIR). Extra arguments go to cmake's configure
# step, e.g. -DTESSERA_CUDA=OFF.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE:-RelWithDebInfo} "$@"
cmake --build "$BUILD_DIR" -j "$(nproc)"
