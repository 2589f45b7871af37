#!/bin/sh
# Overlapped pushes (net.push_bucket_mb) across a bandwidth-limited link: network namespaces A and B on
# a bridge (tests/integration/netns_lib.sh), each link limited to RATE (default 1gbit, tc tbf both
# ways); the scheduler and 2 shards on node A, one worker on node B, so every gradient and parameter
# crosses the link. bench/deep_mlp.ini (784-1024x4-10, 15.8 MB of parameters, 3 parts a step at 1 MB)
# trains STEPS steps with one push per step (net.push_bucket_mb=0) and with parts, REPS times each,
# alternating; prints the median examples/s of each and the ratio and writes
# bench/results/overlap.json. The peer is Tessera's own one-push path (BytePS is not installed here).
# Needs root. BUILD_DIR (default build/), RATE, REPS, STEPS, BUCKET_MB.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
RATE=${RATE:-1gbit}
REPS=${REPS:-3}
STEPS=${STEPS:-40}
BUCKET_MB=${BUCKET_MB:-1}
OUT=${OUT:-$ROOT/bench/results/overlap.json}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
WORK=$(mktemp -d)
. "$ROOT/tests/integration/netns_lib.sh"
trap 'netns_down; rm -rf "$WORK"' EXIT
netns_up "$WORK" "$RATE"
job="$ROOT/bench/deep_mlp.ini"
bin="$BUILD_DIR/bin"
run() { # run NAME BUCKET_MB: prints examples/s
    set -- "$1" "$2" --run-dir "$WORK/$1" job.max_steps="$STEPS" data.train_limit=16000 data.test_limit=1000 \
        net.push_bucket_mb="$2"
    name=$1
    shift 2
    mpirun --allow-run-as-root --oversubscribe --bind-to none --mca plm_rsh_agent "$AGENT" \
        --mca oob_tcp_if_include "$NET.0/24" --mca btl self,tcp --mca btl_tcp_if_include "$NET.0/24" \
        -np 1 --host "$A" "$bin/tessera-scheduler" "$job" "$@" : -np 2 --host "$A:2" "$bin/tessera-ps" "$job" "$@" : \
        -np 1 --host "$B" "$bin/tessera-worker" "$job" "$@" >"$WORK/$name.log" 2>&1 ||
        { tail -20 "$WORK/$name.log" >&2; exit 1; }
    /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["train_examples_per_sec"])' "$WORK/$name/summary.json"
}
whole="" parts=""
for r in $(seq "$REPS"); do
    whole="$whole $(run "whole$r" 0)"
    parts="$parts $(run "parts$r" "$BUCKET_MB")"
    echo "rep $r: one push$(echo "$whole" | awk '{print " " $NF}') parts$(echo "$parts" | awk '{print " " $NF}') examples/s"
done
pps=$(grep -o "parts_per_step=[0-9]*" "$WORK/parts1.log" | sed 's/.*=//')
/usr/bin/python3 - "$RATE" "$BUCKET_MB" "$pps" "$whole" "$parts" "$OUT" <<'PY'
import json, statistics, sys
rate, bucket, pps, whole, parts, out = sys.argv[1:7]
w = [float(x) for x in whole.split()]
p = [float(x) for x in parts.split()]
res = {"layout": "node A: scheduler + 2 shards; node B: 1 worker (network namespaces); bench/deep_mlp.ini",
       "link_rate": rate, "push_bucket_mb": float(bucket), "parts_per_step": int(pps),
       "one_push_examples_per_sec": w, "parts_examples_per_sec": p,
       "one_push_median": statistics.median(w), "parts_median": statistics.median(p),
       "ratio": statistics.median(p) / statistics.median(w)}
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res))
PY
