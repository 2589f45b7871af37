#!/bin/sh
# job.node_reduce on two bandwidth-limited nodes: network namespaces A and B on a bridge (as in
# integration.netns), each node's link limited to RATE (default 200mbit, tc tbf both ways), a shard
# and 2 workers per node. The default MLP trains with and without node_reduce, REPS times each,
# alternating; prints the median examples/s of each and the ratio, and writes
# bench/results/node_reduce.json. Needs root. BUILD_DIR (default build/), RATE, REPS, LIMIT.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
RATE=${RATE:-200mbit}
REPS=${REPS:-3}
LIMIT=${LIMIT:-24000}
OUT=${OUT:-$ROOT/bench/results/node_reduce.json}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
WORK=$(mktemp -d)
. "$ROOT/tests/integration/netns_lib.sh"
trap 'netns_down; rm -rf "$WORK"' EXIT
netns_up "$WORK" "$RATE"
job="$ROOT/examples/fashion_mlp.ini"
run() { # run NAME NODE_REDUCE: prints examples/s
    netns_launch "$WORK/$1.log" "$BUILD_DIR/bin" "$job" --run-dir "$WORK/$1" job.epochs=1 \
        data.train_limit="$LIMIT" job.node_reduce="$2"
    wait $JOB_PID || { tail -20 "$WORK/$1.log" >&2; exit 1; }
    /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["train_examples_per_sec"])' "$WORK/$1/summary.json"
}
plain="" reduced=""
for r in $(seq "$REPS"); do
    plain="$plain $(run "plain$r" 0)"
    reduced="$reduced $(run "reduced$r" 1)"
    echo "rep $r: plain$(echo "$plain" | awk '{print " " $NF}') reduced$(echo "$reduced" | awk '{print " " $NF}') examples/s"
done
sent() { grep -o "worker done .*sent_mb=[0-9.]*" "$WORK/$1.log" | sed 's/.*sent_mb=//' | sort -n | tail -1; }
/usr/bin/python3 - "$RATE" "$plain" "$reduced" "$(sent plain1)" "$(sent reduced1)" "$OUT" <<'PY'
import json, statistics, sys
rate, plain, reduced, sp, sr, out = sys.argv[1:7]
p = [float(x) for x in plain.split()]
r = [float(x) for x in reduced.split()]
res = {"layout": "2 nodes (network namespaces) x (1 shard + 2 workers), examples/fashion_mlp",
       "link_rate": rate, "plain_examples_per_sec": p, "node_reduce_examples_per_sec": r,
       "plain_median": statistics.median(p), "node_reduce_median": statistics.median(r),
       "ratio": statistics.median(r) / statistics.median(p),
       "worker_sent_mb_plain": float(sp), "worker_sent_mb_node_reduce": float(sr)}
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res))
PY
