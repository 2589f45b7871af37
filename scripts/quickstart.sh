#!/bin/sh
# Installs everything, builds, and trains the default job (Fashion-MNIST MLP, 2 shards + 2 workers,
# BSP, 10 epochs), then prints the final test accuracy. Run as root on Debian 12.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
./scripts/install-deps.sh
./scripts/build.sh
RUN_DIR=${RUN_DIR:-runs/quickstart}
./build/bin/tessera train --servers 2 --workers 2 --run-dir "$RUN_DIR" "$@"
acc=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test_accuracy"])' "$RUN_DIR/summary.json")
echo "quickstart: final test accuracy $acc (run directory $RUN_DIR)"
