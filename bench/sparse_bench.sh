#!/usr/bin/env bash
# Sparse benchmark: Tessera's sparse pull (SPARSE_PULL -> SPARSE_ROWS) and push (PUSH_PULL with row
# gradients, BSP, one worker) throughput with 1, 2 and 4 shards over tcp://127.0.0.1, against a raw
# ZeroMQ DEALER/ROUTER echo with the same message sizes, in one run of tessera-bench-sparse
# (bench/src/sparse_bench.c; see bench/README.md). Builds it first when needed.
# Results: bench/results/sparse.json.
#
# usage: bench/sparse_bench.sh [tessera-bench-sparse options, e.g. --reps 7 --rounds 400]
#        BUILD_DIR=path/to/build bench/sparse_bench.sh ...
set -euo pipefail
case "${1:-}" in -h|--help) sed -n 2,9p "$0"; exit 0 ;; esac
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
BIN="$BUILD_DIR/bin/tessera-bench-sparse"
OUT_JSON=bench/results/sparse.json

if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    echo "sparse_bench: configuring and building $BUILD_DIR"
    BUILD_DIR="$BUILD_DIR" ./scripts/build.sh >/dev/null
else
    cmake --build "$BUILD_DIR" --target tessera-bench-sparse -j "$(nproc)" >/dev/null
fi
[ -x "$BIN" ] || { echo "sparse_bench.sh: $BIN was not built" >&2; exit 1; }
if pgrep -x ctest >/dev/null 2>&1 || pgrep -x tessera-ps >/dev/null 2>&1; then
    echo "sparse_bench.sh: WARNING: ctest or another Tessera job is running; the figures will be skewed" >&2
fi

mkdir -p "$(dirname "$OUT_JSON")"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
"$BIN" --commit "$COMMIT" --json "$OUT_JSON" "$@"
