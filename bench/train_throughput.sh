#!/usr/bin/env bash
# Training throughput: Tessera (2 workers + 2 PS shards, BSP, via mpirun) vs a
# PyTorch DistributedDataParallel peer (2 CPU processes, gloo over loopback) on
# the same job (examples/fashion_mlp.ini), the same machine, in the same run.
#
# Each configuration is run --runs times (default 3), interleaved, and the median
# examples/s is reported.  PyTorch runs with 1 and 2 threads per process; the
# better median is the peer figure.  Results go to bench/results/train_throughput.json.
#
# --model wide runs bench/wide_mlp.ini instead (784-4096-4096-10, 20M parameters: the
# gradients and parameters crossing each step, 80 MB each way per worker, dominate)
# for --steps steps (default 60); results go to bench/results/train_throughput_wide.json.
#
# usage: bench/train_throughput.sh [--epochs N] [--runs R] [--model default|wide] [--steps N]
#        BUILD_DIR=path/to/build bench/train_throughput.sh ...
set -euo pipefail

EPOCHS=3
RUNS=3
MODEL=default
STEPS=60
usage() { echo "usage: $0 [--epochs N (default 3)] [--runs R (default 3, >= 2)] [--model default|wide] [--steps N (wide: default 60)]   (env BUILD_DIR, default build)"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --epochs) EPOCHS="${2:?--epochs needs a value}"; shift 2 ;;
        --epochs=*) EPOCHS="${1#*=}"; shift ;;
        --runs) RUNS="${2:?--runs needs a value}"; shift 2 ;;
        --runs=*) RUNS="${1#*=}"; shift ;;
        --model) MODEL="${2:?--model needs a value}"; shift 2 ;;
        --model=*) MODEL="${1#*=}"; shift ;;
        --steps) STEPS="${2:?--steps needs a value}"; shift 2 ;;
        --steps=*) STEPS="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "train_throughput.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
case "$EPOCHS" in ''|*[!0-9]*|0) echo "train_throughput.sh: --epochs must be a positive integer" >&2; exit 2 ;; esac
case "$RUNS" in ''|*[!0-9]*|0|1) echo "train_throughput.sh: --runs must be an integer >= 2" >&2; exit 2 ;; esac
case "$STEPS" in ''|*[!0-9]*|0) echo "train_throughput.sh: --steps must be a positive integer" >&2; exit 2 ;; esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY=/usr/bin/python3
BUILD_DIR="${BUILD_DIR:-build}"
B="$BUILD_DIR/bin"
OUT_DIR=bench/results
case "$MODEL" in
    default)
        JOB=examples/fashion_mlp.ini
        TESSERA_ARGS=("job.epochs=$EPOCHS")
        TORCH_ARGS=(--epochs "$EPOCHS")
        OUT_JSON="$OUT_DIR/train_throughput.json" ;;
    wide)
        JOB=bench/wide_mlp.ini
        EPOCHS=1
        TESSERA_ARGS=("job.max_steps=$STEPS")
        TORCH_ARGS=(--epochs 1 --max-steps "$STEPS" --hidden 4096,4096 --lr 1e-4)
        OUT_JSON="$OUT_DIR/train_throughput_wide.json" ;;
    *) echo "train_throughput.sh: --model must be default or wide, not '$MODEL'" >&2; exit 2 ;;
esac

die() { echo "train_throughput.sh: $*" >&2; exit 1; }

# --- preconditions ------------------------------------------------------------
[ -x "$PY" ] || die "$PY not found (install with ./scripts/install-deps.sh)"
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    die "PyTorch (python3-torch) is missing: install with ./scripts/install-deps.sh --bench"
fi
command -v mpirun >/dev/null 2>&1 || die "mpirun not found (install with ./scripts/install-deps.sh)"
for b in tessera-scheduler tessera-ps tessera-worker; do
    [ -x "$B/$b" ] || die "$B/$b not found: build Tessera first (or set BUILD_DIR)"
done
[ -f "$JOB" ] || die "$JOB not found"

if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tessera-bench.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
RAW="$TMP/raw.tsv"   # system <TAB> threads <TAB> run <TAB> examples_per_sec <TAB> test_accuracy
: > "$RAW"

run_tessera() {  # $1 = run index
    local dir="$TMP/tessera-run$1" log="$TMP/tessera-run$1.log"
    mkdir -p "$dir"
    if ! mpirun --oversubscribe \
            -np 1 "$B/tessera-scheduler" "$JOB" --run-dir "$dir" "${TESSERA_ARGS[@]}" : \
            -np 2 "$B/tessera-ps"        "$JOB" --run-dir "$dir" "${TESSERA_ARGS[@]}" : \
            -np 2 "$B/tessera-worker"    "$JOB" --run-dir "$dir" "${TESSERA_ARGS[@]}" \
            > "$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "Tessera run $1 failed (log above)"
    fi
    [ -f "$dir/summary.json" ] || { tail -n 30 "$log" >&2; die "Tessera run $1 wrote no summary.json"; }
    "$PY" -c 'import json,sys
s = json.load(open(sys.argv[1]))
print("tessera\t0\t%s\t%r\t%r" % (sys.argv[2], float(s["train_examples_per_sec"]), float(s["test_accuracy"])))' \
        "$dir/summary.json" "$1" >> "$RAW"
}

run_torch() {  # $1 = threads, $2 = run index
    local log="$TMP/torch-t$1-run$2.log" line
    if ! "$PY" bench/ddp_baseline.py "${TORCH_ARGS[@]}" --threads "$1" --json > "$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "PyTorch DDP run (threads=$1, run $2) failed (log above)"
    fi
    line="$(grep '^{' "$log" | tail -n 1)"
    [ -n "$line" ] || { tail -n 30 "$log" >&2; die "PyTorch DDP run printed no JSON"; }
    printf '%s' "$line" | "$PY" -c 'import json,sys
r = json.load(sys.stdin)
print("pytorch\t%d\t%s\t%r\t%r" % (r["threads"], sys.argv[1], float(r["examples_per_sec"]), float(r["test_accuracy"])))' \
        "$2" >> "$RAW"
}

echo "train_throughput: job=$JOB ${TESSERA_ARGS[*]} runs=$RUNS (interleaved) cores=$(nproc) build=$BUILD_DIR"
for r in $(seq 1 "$RUNS"); do
    echo "  run $r/$RUNS: tessera";            run_tessera "$r"
    echo "  run $r/$RUNS: pytorch threads=1";  run_torch 1 "$r"
    echo "  run $r/$RUNS: pytorch threads=2";  run_torch 2 "$r"
done

mkdir -p "$OUT_DIR"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
CPU="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || true)"
TORCH_VER="$("$PY" -c 'import torch; print(torch.__version__)')"

"$PY" - "$RAW" "$OUT_JSON" "$EPOCHS" "$RUNS" "$COMMIT" "$CPU" "$(nproc)" "$TORCH_VER" "$JOB" "${TESSERA_ARGS[*]}" <<'EOF'
import json, statistics, sys, time
raw, out, epochs, runs, commit, cpu, cores, torch_ver, job, job_args = sys.argv[1:11]
rows = [l.rstrip("\n").split("\t") for l in open(raw) if l.strip()]

def collect(system, threads):
    rs = [r for r in rows if r[0] == system and int(r[1]) == threads]
    eps = [float(r[3]) for r in rs]
    acc = [float(r[4]) for r in rs]
    return {"runs_examples_per_sec": [round(x, 1) for x in eps],
            "runs_test_accuracy": acc,
            "median_examples_per_sec": round(statistics.median(eps), 1),
            "median_test_accuracy": statistics.median(acc)}

tess = collect("tessera", 0)
t1 = collect("pytorch", 1)
t2 = collect("pytorch", 2)
best_threads, best = max(((1, t1), (2, t2)), key=lambda p: p[1]["median_examples_per_sec"])
ratio = tess["median_examples_per_sec"] / best["median_examples_per_sec"]

res = {
    "benchmark": "train_throughput",
    "job": job, "job_overrides": job_args,
    "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "commit": commit, "cpu": cpu, "cores": int(cores),
    "epochs": int(epochs), "runs_per_config": int(runs), "statistic": "median",
    "metric": "training examples/s over all workers, training step time only",
    "tessera": dict(tess, workers=2, servers=2, consistency="bsp", backend="cpu, 1 BLAS thread/worker"),
    "pytorch_ddp_threads1": dict(t1, processes=2, backend="gloo", torch_version=torch_ver),
    "pytorch_ddp_threads2": dict(t2, processes=2, backend="gloo", torch_version=torch_ver),
    "peer_best": {"config": "pytorch_ddp_threads%d" % best_threads, "threads": best_threads,
                  "median_examples_per_sec": best["median_examples_per_sec"],
                  "median_test_accuracy": best["median_test_accuracy"]},
    "ratio_tessera_over_pytorch": round(ratio, 3),
    "ratio_tessera_over_pytorch_threads1": round(tess["median_examples_per_sec"] / t1["median_examples_per_sec"], 3),
    "ratio_tessera_over_pytorch_threads2": round(tess["median_examples_per_sec"] / t2["median_examples_per_sec"], 3),
}
with open(out, "w") as f:
    json.dump(res, f, indent=2)
    f.write("\n")

print()
print("Training throughput, %s %s, median of %s runs each (%s cores, %s)" % (job, job_args, runs, cores, cpu or "cpu?"))
print("%-30s %14s %10s   %s" % ("system", "examples/s", "test_acc", "runs (examples/s)"))
def line(name, d):
    print("%-30s %14.0f %10.4f   %s" % (name, d["median_examples_per_sec"], d["median_test_accuracy"],
                                       " ".join("%.0f" % x for x in d["runs_examples_per_sec"])))
line("tessera (2 workers, 2 shards)", tess)
line("pytorch ddp, 1 thread/proc", t1)
line("pytorch ddp, 2 threads/proc", t2)
print()
print("peer figure: pytorch ddp, %d thread(s)/proc = %.0f examples/s" % (best_threads, best["median_examples_per_sec"]))
print("ratio tessera/pytorch = %.2fx  (vs 1 thread: %.2fx, vs 2 threads: %.2fx)" % (
    ratio, res["ratio_tessera_over_pytorch_threads1"], res["ratio_tessera_over_pytorch_threads2"]))
print("wrote %s" % out)
EOF
