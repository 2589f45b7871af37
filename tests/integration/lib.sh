# Shared helpers for the integration tests (sourced). Each test runs real mpirun clusters on loopback.
set -eu

BUILD_DIR=${BUILD_DIR:-$(cd "$(dirname "$0")/../../build" && pwd)}
TESSERA="$BUILD_DIR/bin/tessera"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Open MPI's shared-memory transport wants a writable session directory; keep it per test.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tessera-it.XXXXXX")
export TMPDIR="$WORK"
trap 'rm -rf "$WORK"' EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# run_job NAME [tessera train args...]: runs a job into $WORK/NAME, log in $WORK/NAME.log.
run_job() {
    name=$1
    shift
    mkdir -p "$WORK/$name"
    if ! timeout 600 "$TESSERA" train --run-dir "$WORK/$name" "$@" >"$WORK/$name.log" 2>&1; then
        tail -30 "$WORK/$name.log" >&2
        fail "job $name failed: tessera train $*"
    fi
}

# json FILE KEY: prints one value of a JSON object.
json() {
    /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# at_least VALUE MIN WHAT
at_least() {
    /usr/bin/python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)' "$1" "$2" ||
        fail "$3 = $1, expected >= $2"
    echo "ok: $3 = $1 (>= $2)"
}
