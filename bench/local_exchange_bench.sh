#!/bin/sh
# The local exchange on one host (net.local_exchange): shards map each worker's exchange region and
# read gradients and write parameters in place, against the same job with net.local_exchange=off
# (every byte through ZeroMQ over TCP loopback, Tessera's wire path; ps-lite and BytePS are not
# installed here, and BytePS's own co-located mode is this, shared memory). JOB (default
# bench/wide_mlp.ini: 20M parameters, 80 MB each way per worker per step) trains STEPS steps with
# WORKERS workers and SERVERS shards, REPS times each way, alternating; prints the median examples/s of
# each, the ratio, and the median time a worker waited for its exchange per step (sync_s / steps), and
# writes OUT (default bench/results/local_exchange.json). BUILD_DIR (default build/), EXTRA (more
# section.key=value overrides for both).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
JOB=${JOB:-$ROOT/bench/wide_mlp.ini}
STEPS=${STEPS:-40}
REPS=${REPS:-3}
WORKERS=${WORKERS:-1}
SERVERS=${SERVERS:-2}
OUT=${OUT:-$ROOT/bench/results/local_exchange.json}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
: >"$W/runs"
for r in $(seq "$REPS"); do
    for mode in auto off; do
        # shellcheck disable=SC2086
        "$BUILD_DIR/bin/tessera" train "$JOB" --servers "$SERVERS" --workers "$WORKERS" --run-dir "$W/$mode$r" \
            job.max_steps="$STEPS" job.epochs="$STEPS" net.local_exchange="$mode" ${EXTRA:-} >"$W/$mode$r.log" 2>&1 ||
            { tail -20 "$W/$mode$r.log" >&2; exit 1; }
        eps=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["train_examples_per_sec"])' "$W/$mode$r/summary.json")
        sync=$(grep -o "worker done steps=[0-9]* .*sync_s=[0-9.]*" "$W/$mode$r.log" | head -1 |
            sed 's/.*steps=\([0-9]*\) .*sync_s=\([0-9.]*\)/\2 \1/')
        echo "$mode $eps $sync" >>"$W/runs"
        echo "run $r $mode: $eps examples/s, worker 0 waited ${sync% *} s in ${sync#* } steps"
    done
done
/usr/bin/python3 - "$W/runs" "$OUT" "$JOB" "$STEPS" "$WORKERS" "$SERVERS" "${EXTRA:-}" <<'PY'
import json, os, statistics, subprocess, sys
runs, out, job, steps, workers, servers, extra = sys.argv[1:]
by = {"auto": [], "off": []}
for line in open(runs):
    mode, eps, sync, n = line.split()
    by[mode].append((float(eps), float(sync) / int(n) * 1e3))
med = {m: statistics.median(e for e, _ in v) for m, v in by.items()}
wait = {m: statistics.median(s for _, s in v) for m, v in by.items()}
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
r = {"benchmark": "local_exchange", "job": os.path.relpath(job), "steps": int(steps), "workers": int(workers),
     "servers": int(servers), "extra": extra, "cores": os.cpu_count(), "commit": commit,
     "local_examples_per_sec": [e for e, _ in by["auto"]], "wire_examples_per_sec": [e for e, _ in by["off"]],
     "local_median": med["auto"], "wire_median": med["off"], "ratio": med["auto"] / med["off"],
     "local_wait_ms_per_step": wait["auto"], "wire_wait_ms_per_step": wait["off"]}
json.dump(r, open(out, "w"), indent=1)
print("local %.0f examples/s, wire %.0f: %.2fx; worker wait per step %.1f ms local, %.1f ms wire" %
      (med["auto"], med["off"], r["ratio"], wait["auto"], wait["off"]))
PY
