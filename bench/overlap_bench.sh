#!/bin/sh
# Across a bandwidth-limited link: network namespaces A and B on a bridge
# (tests/integration/netns_lib.sh), each link limited to RATE (default 1gbit, tc tbf both ways); the
# scheduler and 2 shards on node A, one worker on node B, so every gradient and parameter crosses the
# link. bench/deep_mlp.ini (784-1024x4-10, 15.8 MB of parameters, 3 parts a step at 1 MB) trains STEPS
# steps in two configurations, REPS times each, alternating; prints the median examples/s of each and
# the ratio, and writes a JSON result. The peer is Tessera's own baseline configuration (BytePS is not
# installed here). COMPARE picks the pair:
#   overlap (default): one push per step (net.push_bucket_mb=0) against parts (BUCKET_MB, default 1);
#                      bench/results/overlap.json
#   grad_dtype:        float32 gradients against bfloat16 (net.grad_dtype=bf16), both with parts;
#                      bench/results/bf16_grads.json
#   bf16:              float32 both ways against bfloat16 gradients and parameters
#                      (net.grad_dtype=bf16 net.param_dtype=bf16), both with parts;
#                      bench/results/bf16_both.json
# Needs root. BUILD_DIR (default build/), RATE, REPS, STEPS, BUCKET_MB, COMPARE, OUT.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
RATE=${RATE:-1gbit}
REPS=${REPS:-3}
STEPS=${STEPS:-40}
BUCKET_MB=${BUCKET_MB:-1}
COMPARE=${COMPARE:-overlap}
case $COMPARE in
overlap)
    BASE="net.push_bucket_mb=0" NEW="net.push_bucket_mb=$BUCKET_MB" BASE_NAME=one_push NEW_NAME=parts
    OUT=${OUT:-$ROOT/bench/results/overlap.json}
    ;;
grad_dtype)
    BASE="net.push_bucket_mb=$BUCKET_MB" NEW="net.push_bucket_mb=$BUCKET_MB net.grad_dtype=bf16"
    BASE_NAME=f32 NEW_NAME=bf16_grads
    OUT=${OUT:-$ROOT/bench/results/bf16_grads.json}
    ;;
bf16)
    BASE="net.push_bucket_mb=$BUCKET_MB" NEW="net.push_bucket_mb=$BUCKET_MB net.grad_dtype=bf16 net.param_dtype=bf16"
    BASE_NAME=f32 NEW_NAME=bf16_both
    OUT=${OUT:-$ROOT/bench/results/bf16_both.json}
    ;;
*)
    echo "COMPARE=$COMPARE: overlap, grad_dtype or bf16" >&2
    exit 2
    ;;
esac
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
WORK=$(mktemp -d)
. "$ROOT/tests/integration/netns_lib.sh"
trap 'netns_down; rm -rf "$WORK"' EXIT
netns_up "$WORK" "$RATE"
job="$ROOT/bench/deep_mlp.ini"
bin="$BUILD_DIR/bin"
run() { # run NAME SETTINGS: prints examples/s
    name=$1
    # shellcheck disable=SC2086
    set -- --run-dir "$WORK/$1" job.max_steps="$STEPS" data.train_limit=16000 data.test_limit=1000 $2
    mpirun --allow-run-as-root --oversubscribe --bind-to none --mca plm_rsh_agent "$AGENT" \
        --mca oob_tcp_if_include "$NET.0/24" --mca btl self,tcp --mca btl_tcp_if_include "$NET.0/24" \
        -np 1 --host "$A" "$bin/tessera-scheduler" "$job" "$@" : -np 2 --host "$A:2" "$bin/tessera-ps" "$job" "$@" : \
        -np 1 --host "$B" "$bin/tessera-worker" "$job" "$@" >"$WORK/$name.log" 2>&1 ||
        { tail -20 "$WORK/$name.log" >&2; exit 1; }
    /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["train_examples_per_sec"])' "$WORK/$name/summary.json"
}
base="" new=""
for r in $(seq "$REPS"); do
    base="$base $(run "base$r" "$BASE")"
    new="$new $(run "new$r" "$NEW")"
    echo "rep $r: $BASE_NAME$(echo "$base" | awk '{print " " $NF}') $NEW_NAME$(echo "$new" | awk '{print " " $NF}') examples/s"
done
pps=$(grep -o "parts_per_step=[0-9]*" "$WORK/new1.log" | sed 's/.*=//')
sent() { grep -o "sent_mb=[0-9.]*" "$WORK/$1.log" | head -1 | sed 's/.*=//'; }
/usr/bin/python3 - "$RATE" "$BUCKET_MB" "$pps" "$base" "$new" "$OUT" "$BASE_NAME" "$NEW_NAME" "$BASE" "$NEW" \
    "$(sent base1)" "$(sent new1)" <<'PY'
import json, statistics, sys
rate, bucket, pps, base, new, out, bn, nn, bs, ns, bmb, nmb = sys.argv[1:13]
b = [float(x) for x in base.split()]
n = [float(x) for x in new.split()]
res = {"layout": "node A: scheduler + 2 shards; node B: 1 worker (network namespaces); bench/deep_mlp.ini",
       "link_rate": rate, "push_bucket_mb": float(bucket), "parts_per_step": int(pps),
       bn + "_settings": bs, nn + "_settings": ns,
       bn + "_examples_per_sec": b, nn + "_examples_per_sec": n,
       bn + "_median": statistics.median(b), nn + "_median": statistics.median(n),
       bn + "_worker_sent_mb": float(bmb), nn + "_worker_sent_mb": float(nmb),
       "ratio": statistics.median(n) / statistics.median(b)}
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res))
PY
