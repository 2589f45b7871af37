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

# start_job NAME [tessera train args...]: like run_job, in the background; $JOB_PID is tessera's pid.
start_job() {
    name=$1
    shift
    mkdir -p "$WORK/$name"
    "$TESSERA" train --run-dir "$WORK/$name" "$@" >"$WORK/$name.log" 2>&1 &
    JOB_PID=$!
}

# wait_log NAME PATTERN [SECONDS]: waits until the job's log matches PATTERN (grep -E).
wait_log() {
    for _ in $(seq $((${3:-60} * 20))); do
        grep -qE "$2" "$WORK/$1.log" && return 0
        if [ -n "${JOB_PID:-}" ] && ! kill -0 "$JOB_PID" 2>/dev/null; then # died: say so now
            grep -qE "$2" "$WORK/$1.log" && return 0
            tail -20 "$WORK/$1.log" >&2
            fail "$1's job exited before its log showed '$2'"
        fi
        sleep 0.05
    done
    tail -20 "$WORK/$1.log" >&2
    fail "timed out waiting for '$2' in $1's log"
}

# stop_after NAME PATTERN: once the background job's log matches PATTERN, sends it SIGUSR1 (a stop
# checkpoint) and expects exit 85 ("checkpointed, requeue me").
stop_after() {
    wait_log "$1" "$2"
    kill -USR1 "$JOB_PID"
    rc=0
    wait "$JOB_PID" || rc=$?
    [ $rc -eq 85 ] || fail "a stop signal should exit 85 (checkpointed, requeue), got $rc"
}

# stop_resume_exact WHAT STEP [tessera train args...]: an uninterrupted run, and a run stopped by
# SIGUSR1 once checkpoint STEP is committed and resumed with --resume auto, end bit-identical.
stop_resume_exact() {
    what=$1 step=$2
    shift 2
    run_job ref "$@"
    start_job stopped "$@"
    stop_after stopped "checkpoint committed step=$step"
    run_job stopped "$@" --resume auto
    cmp "$WORK/ref/params.bin" "$WORK/stopped/params.bin" || fail "$what: stop + resume differs from the uninterrupted run"
    echo "ok: $what: SIGUSR1 stop + --resume auto is bit-identical"
}

# ranks NAME: pids of the job's MPI ranks (scheduler, shards, workers).
ranks() {
    pgrep -f "^[^ ]*/tessera-(scheduler|ps|worker) .*--run-dir $WORK/$1( |\$)" || true
}

# kill_random_rank NAME: SIGKILL one rank of the job, chosen at random (a node failure in small).
kill_random_rank() {
    victim=$(ranks "$1" | shuf -n 1)
    if [ -z "$victim" ]; then # say whether the job had ended or was between two launches
        tail -8 "$WORK/$1.log" >&2
        kill -0 "$JOB_PID" 2>/dev/null && echo "(tessera pid $JOB_PID is still running)" >&2
        fail "no rank of $1 to kill"
    fi
    echo "killing $(tr '\0' ' ' </proc/"$victim"/cmdline | cut -d' ' -f1 | xargs basename) pid $victim"
    kill -9 "$victim" 2>/dev/null || true
}

# kill_all_ranks NAME: SIGKILL every rank and mpirun (the whole job dies at once).
kill_all_ranks() {
    for p in $(ranks "$1"); do kill -9 "$p" 2>/dev/null || true; done
}

# free_port: a TCP port on loopback that nothing listens on now.
free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_serve NAME ENDPOINT [tessera serve args...]: starts `tessera serve` in the background (log in
# $WORK/NAME.log, $SERVE_PID) and waits until it is ready.
start_serve() {
    name=$1
    endpoint=$2
    shift 2
    "$TESSERA" serve --listen "$endpoint" --run-dir "$WORK/$name" "$@" >"$WORK/$name.log" 2>&1 &
    SERVE_PID=$!
    if ! "$TESSERA" status --endpoint "$endpoint" --wait-ready 60 >"$WORK/$name.status.json"; then
        tail -20 "$WORK/$name.log" >&2
        fail "tessera serve $name not ready"
    fi
}

# stop_serve: SIGTERM to `tessera serve`, which must stop cleanly.
stop_serve() {
    kill -TERM "$SERVE_PID"
    wait "$SERVE_PID" || fail "tessera serve did not stop cleanly"
}
