#!/usr/bin/env bash
# Serving soak: `tessera serve` under an open-loop load at 80% of its measured saturation for
# --minutes (default 10), sampling the resident memory of the router and every shard every 10 s.
# Passes when no request failed and memory stayed flat (growth over the second half under 2 MiB per
# process). Results: bench/results/serve_soak.json (with the RSS samples).
# usage: bench/serve_soak.sh [--minutes M] [--fraction F (default 0.8)]
set -euo pipefail
MINUTES=10
FRACTION=0.8
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES="${2:?}"; shift 2 ;;
        --fraction) FRACTION="${2:?}"; shift 2 ;;
        -h|--help) sed -n 2,7p "$0"; exit 0 ;;
        *) echo "serve_soak.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
B="${BUILD_DIR:-build}/bin"
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
W=$(mktemp -d /tmp/tessera-soak.XXXXXX)
SERVE=
cleanup() { [ -n "$SERVE" ] && kill -TERM "$SERVE" 2>/dev/null && wait "$SERVE" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
E="tcp://127.0.0.1:$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

echo "serve_soak: training a model to serve"
"$B/tessera" train --run-dir "$W/train" job.max_steps=300 data.test_limit=1000 --checkpoint-every 300 >"$W/train.log" 2>&1
"$B/tessera" serve --checkpoint "$W/train" --servers 2 --listen "$E" --run-dir "$W/serve" 2>"$W/serve.log" &
SERVE=$!
"$B/tessera" status --endpoint "$E" --wait-ready 60 >/dev/null
"$B/tessera" loadtest --endpoint "$E" --concurrency 64 --duration 10 --json --quiet >"$W/sat.json"
RATE=$($PY -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["throughput_rps"] * float(sys.argv[2])))' \
    "$W/sat.json" "$FRACTION")
DURATION=$($PY -c "import sys; print(int(float(sys.argv[1]) * 60))" "$MINUTES")
echo "serve_soak: saturation $($PY -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["throughput_rps"]))' "$W/sat.json") rps; soaking at $RATE rps for $MINUTES min"
"$B/tessera" loadtest --endpoint "$E" --concurrency 512 --rate "$RATE" --duration "$DURATION" --warmup 0 --json \
    --quiet >"$W/soak.json" &
LOAD=$!
echo "t_s,pid,role,rss_kb" >"$W/rss.csv"
start=$(date +%s)
while kill -0 "$LOAD" 2>/dev/null; do
    t=$(($(date +%s) - start))
    for pid in $(pgrep -f "tessera-router .*--checkpoint $W/train" || true) $(pgrep -f "tessera-ps --serve" || true); do
        role=$(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | awk '{print ($1 ~ /router/) ? "router" : "shard-" $6}') || continue
        rss=$(awk '/^VmRSS/ {print $2}' /proc/"$pid"/status 2>/dev/null) || continue
        echo "$t,$pid,$role,$rss" >>"$W/rss.csv"
    done
    sleep 10
done
wait "$LOAD"
mkdir -p bench/results
cp "$W/rss.csv" bench/results/serve_soak_rss.csv
$PY - "$W/soak.json" "$W/rss.csv" "$RATE" "$MINUTES" bench/results/serve_soak.json <<'PY'
import csv, json, sys, time
soak, rss_csv, rate, minutes, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
r = json.load(open(soak))
rows = list(csv.DictReader(open(rss_csv)))
procs = {}
for row in rows:
    procs.setdefault(row["role"], []).append((int(row["t_s"]), int(row["rss_kb"])))
half = minutes * 60 / 2
growth = {}
for role, s in procs.items():
    second = [kb for t, kb in s if t >= half]
    growth[role] = {"first_kb": s[0][1], "mid_kb": second[0] if second else s[-1][1], "last_kb": s[-1][1],
                    "max_kb": max(kb for _, kb in s),
                    "second_half_growth_kb": (s[-1][1] - second[0]) if second else 0}
failed = sum(r["errors"].values()) + r["timeouts"]
flat = all(g["second_half_growth_kb"] < 2048 for g in growth.values())
res = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "minutes": minutes, "rate_rps": rate,
       "achieved_rps": r["throughput_rps"], "requests": r["ok"] + failed, "failed": failed,
       "client_limited": r.get("client_limited", 0), "latency_us": r["latency_us"], "rss": growth,
       "pass": failed == 0 and flat}
json.dump(res, open(out, "w"), indent=2)
print(f"soak: {res['requests']} requests at {r['throughput_rps']:.0f} rps over {minutes:g} min, failed={failed}, "
      f"p99={r['latency_us']['p99']:.0f} us")
for role, g in sorted(growth.items()):
    print(f"  {role:<8} rss first={g['first_kb']} KiB mid={g['mid_kb']} last={g['last_kb']} "
          f"second-half growth={g['second_half_growth_kb']} KiB")
print("PASS" if res["pass"] else "FAIL", "->", out)
sys.exit(0 if res["pass"] else 1)
PY
