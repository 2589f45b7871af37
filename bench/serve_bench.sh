#!/usr/bin/env bash
# Serving benchmark: `tessera serve` (the router caching the 784-256-128-10 MLP, 2 shards) measured with
# `tessera loadtest` on this machine, in one run:
#   overhead   per-request serving overhead at concurrency 1: end-to-end latency minus the model's
#              compute time (the router reports each batch's compute_us), over TCP and Unix sockets
#   batching   saturated throughput (closed loop, concurrency 64) with dynamic batching (max_batch 64)
#              against batch size 1 (max_batch 1)
#   half load  latency percentiles in an open loop at half the batching throughput
#   shards     overhead at concurrency 1 when the linear layers run on the shards (cache_mb=0)
# Results: bench/results/serve.json.  usage: bench/serve_bench.sh [--seconds S (default 8)]
set -euo pipefail
SECONDS_EACH=8
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_EACH="${2:?}"; shift 2 ;;
        -h|--help) sed -n 2,12p "$0"; exit 0 ;;
        *) echo "serve_bench.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
B="${BUILD_DIR:-build}/bin"
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
W=$(mktemp -d /tmp/tessera-serve-bench.XXXXXX)
SERVE=
cleanup() { [ -n "$SERVE" ] && kill -TERM "$SERVE" 2>/dev/null && wait "$SERVE" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
port() { $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "serve_bench: training a model to serve"
"$B/tessera" train --run-dir "$W/train" job.max_steps=300 data.test_limit=1000 --checkpoint-every 300 >"$W/train.log" 2>&1

serve() { # serve NAME ENDPOINT [serve.k=v ...]
    local name=$1 ep=$2
    shift 2
    "$B/tessera" serve --checkpoint "$W/train" --servers 2 --listen "$ep" --run-dir "$W/$name" "$@" 2>"$W/$name.log" &
    SERVE=$!
    "$B/tessera" status --endpoint "$ep" --wait-ready 60 >/dev/null
}
unserve() { kill -TERM "$SERVE"; wait "$SERVE" || true; SERVE=; }
load() { # load OUT ENDPOINT [loadtest args]
    local out=$1 ep=$2
    shift 2
    "$B/tessera" loadtest --endpoint "$ep" --duration "$SECONDS_EACH" --warmup 1 --json --quiet "$@" >"$W/$out.json"
    $PY - "$W/$out.json" "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_us"]
print(f"  {sys.argv[2]:<14} rps={r['throughput_rps']:9.0f}  p50={l['p50']:7.1f}us  p99={l['p99']:7.1f}us  "
      f"p99.9={l['p999']:7.1f}us  overhead_p50={r['overhead_us']['p50']:6.1f}us  "
      f"batch={r['mean_batch_rows']:.1f}  errors={sum(r['errors'].values())}")
PY
}

E="tcp://127.0.0.1:$(port)"
# The transport floor: a server answering at once, through the same sockets, framing and client.
"$B/tessera-bench-null" "$E" &
SERVE=$!
sleep 0.3
load c1_null "$E" --concurrency 1
load sat_null "$E" --concurrency 64
kill -TERM "$SERVE"; wait "$SERVE" || true; SERVE=
serve batching "$E" serve.max_batch=64
load c1_tcp "$E" --concurrency 1
load sat_batching "$E" --concurrency 64
HALF=$($PY -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["throughput_rps"] / 2))' "$W/sat_batching.json")
load half_load "$E" --concurrency 256 --rate "$HALF"
unserve

IPC="ipc://$W/router.sock"
serve ipc "$IPC"
load c1_ipc "$IPC" --concurrency 1
unserve

serve nobatch "$E" serve.max_batch=1
load sat_batch1 "$E" --concurrency 64
unserve

serve shards "$E" serve.cache_mb=0
load c1_shards "$E" --concurrency 1
unserve

# A model whose compute dominates (bench/wide_mlp.ini, 784-4096-4096-10, 20M parameters, 80 MB):
# batching against batch 1 where batching is meant to pay.
echo "serve_bench: training the wide model for 2 steps"
"$B/tessera" train bench/wide_mlp.ini --run-dir "$W/wide" job.max_steps=2 data.train_limit=2000 data.test_limit=500 \
    --checkpoint-every 2 >"$W/wide.log" 2>&1
serve_wide() { # serve_wide NAME [serve.k=v ...]
    local name=$1
    shift
    "$B/tessera" serve --checkpoint "$W/wide" --servers 2 --listen "$E" --run-dir "$W/$name" "$@" 2>"$W/$name.log" &
    SERVE=$!
    "$B/tessera" status --endpoint "$E" --wait-ready 120 >/dev/null
}
serve_wide wide_batching serve.max_batch=64
load wide_sat_batching "$E" --concurrency 64 --timeout-ms 20000
unserve
serve_wide wide_batch1 serve.max_batch=1
load wide_sat_batch1 "$E" --concurrency 64 --timeout-ms 20000
unserve

mkdir -p bench/results
$PY - "$W" bench/results/serve.json <<'PY'
import json, os, platform, sys, time
w, out = sys.argv[1:3]
r = {k: json.load(open(f"{w}/{k}.json")) for k in
     ["c1_null", "sat_null", "c1_tcp", "c1_ipc", "sat_batching", "half_load", "sat_batch1", "c1_shards", "wide_sat_batching", "wide_sat_batch1"]}
res = {
    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
    "model": "fashion MLP 784-256-128-10, router-cached, 2 shards",
    "overhead_c1_tcp_us": {"p50": r["c1_tcp"]["overhead_us"]["p50"], "mean": r["c1_tcp"]["overhead_us"]["mean"],
                           "latency_p50": r["c1_tcp"]["latency_us"]["p50"]},
    "null_server_c1_latency_us": r["c1_null"]["latency_us"],
    "null_server_saturation_rps": r["sat_null"]["throughput_rps"],
    "router_added_c1_us": r["c1_tcp"]["overhead_us"]["p50"] - r["c1_null"]["latency_us"]["p50"],
    "overhead_c1_ipc_us": {"p50": r["c1_ipc"]["overhead_us"]["p50"], "mean": r["c1_ipc"]["overhead_us"]["mean"],
                           "latency_p50": r["c1_ipc"]["latency_us"]["p50"]},
    "overhead_c1_shards_us": {"p50": r["c1_shards"]["overhead_us"]["p50"],
                              "latency_p50": r["c1_shards"]["latency_us"]["p50"]},
    "saturation_rps_batching": r["sat_batching"]["throughput_rps"],
    "saturation_mean_batch": r["sat_batching"]["mean_batch_rows"],
    "saturation_rps_batch1": r["sat_batch1"]["throughput_rps"],
    "batching_ratio": r["sat_batching"]["throughput_rps"] / r["sat_batch1"]["throughput_rps"],
    "wide_saturation_rps_batching": r["wide_sat_batching"]["throughput_rps"],
    "wide_saturation_mean_batch": r["wide_sat_batching"]["mean_batch_rows"],
    "wide_saturation_rps_batch1": r["wide_sat_batch1"]["throughput_rps"],
    "wide_batching_ratio": r["wide_sat_batching"]["throughput_rps"] / r["wide_sat_batch1"]["throughput_rps"],
    "half_load_rate": r["half_load"]["rate"],
    "half_load_latency_us": r["half_load"]["latency_us"],
    "errors": sum(sum(x["errors"].values()) + x["timeouts"] for x in r.values()),
    "raw": r,
}
json.dump(res, open(out, "w"), indent=2)
print(f"overhead at concurrency 1: {res['overhead_c1_tcp_us']['p50']:.1f} us p50 over TCP, "
      f"{res['overhead_c1_ipc_us']['p50']:.1f} us over Unix sockets (target <= 20 us)")
print(f"  transport floor (null server, same client and wire): {res['null_server_c1_latency_us']['p50']:.1f} us p50; "
      f"the router adds {res['router_added_c1_us']:.1f} us at p50")
print(f"saturation: {res['saturation_rps_batching']:.0f} rps with batching (mean batch {res['saturation_mean_batch']:.1f}) "
      f"vs {res['saturation_rps_batch1']:.0f} rps at batch 1: {res['batching_ratio']:.2f}x (target >= 3x)")
print(f"  wide model (20M parameters): {res['wide_saturation_rps_batching']:.0f} rps with batching (mean batch "
      f"{res['wide_saturation_mean_batch']:.1f}) vs {res['wide_saturation_rps_batch1']:.0f} at batch 1: "
      f"{res['wide_batching_ratio']:.2f}x")
print(f"p99 at half saturation ({res['half_load_rate']:.0f} rps): {res['half_load_latency_us']['p99']:.0f} us "
      f"(target <= 2000 us)")
print(f"errors: {res['errors']}; written to {out}")
PY
