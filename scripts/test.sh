#!/bin/sh
# Installs everything, builds, and runs the tests with ctest. Arguments go to ctest; by default every
# test except those labelled `slow` (use `./scripts/test.sh -L slow` for those, or `--all` for all).
# Tests labelled `gpu` report "skipped" where no GPU is visible.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
./scripts/install-deps.sh
./scripts/build.sh
cd "${BUILD_DIR:-$ROOT/build}"
if [ "${1:-}" = "--all" ]; then
    shift
    exec ctest --output-on-failure "$@"
elif [ $# -eq 0 ]; then
    exec ctest --output-on-failure -LE slow
else
    exec ctest --output-on-failure "$@"
fi
