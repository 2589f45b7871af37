#!/bin/sh
# One GPU session in one call (see bench/README.md, "A GPU session"): on a GPU machine that has a CUDA
# toolkit and PyTorch but neither network nor Debian's libraries, with the folder that
# bench/gpu_session_prepare.sh made (.gpu: the offline bundle of a CUDA build, the CTest files and GPU
# programs of that build, Fashion-MNIST), run from the repository root:
#
#     sh bench/gpu_session.sh
#
# It installs the bundle into GPU_PREFIX (default /tmp/prefix), finds the CUDA libraries the build
# needs (cudart, cuBLAS, NCCL: CUDA toolkit, system, PyTorch's nvidia/*/lib), prints the GPUs and
# versions, then runs, each part with its own time limit inside GPU_SESSION_BUDGET_S (default 480 s):
#   1. ctest -L gpu --output-on-failure on the build's own CTest files (paths rewritten to here)
#   2. tessera-bench-cuda-bw
#   3. bench/gpu_train.sh at several batches (GPU_TRAIN_RUNS, "BATCH:STEPS[:TAG+TAG] ...": tag bf16
#      sends gradients and parameters as bfloat16 (net.grad_dtype/param_dtype), psgpu has the shards
#      step on the GPU (ps.device=cuda; they then map the worker's device memory, CUDA IPC), wire sends
#      every byte over ZeroMQ (net.local_exchange=off; without it the worker and the shards on this
#      machine exchange through shared memory))
#   4. compute-sanitizer --tool memcheck over the op test, with what time is left
# A part that fails does not stop the others. Everything goes to OUT (default .gpu/out): log.txt (all
# of it), summary.txt, gpu.txt, ctest.txt, cuda_bw.txt, gpu_train.json, gpu_train.txt, sanitizer.txt.
# Exit status: 0 all passed, 1 a part failed, 2 the session could not start, 3 no usable GPU.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIT=${GPU_KIT:-$ROOT/.gpu}
OUT=${OUT:-$KIT/out}
mkdir -p "$OUT"

# Everything goes to OUT/log.txt; the console gets the sections, one line per result and the summary.
# Into files, never pipes: a process that a part leaves behind cannot keep the session from ending.
exec 3>&1 >"$OUT/log.txt" 2>&1 </dev/null

PREFIX=${GPU_PREFIX:-/tmp/prefix}
BUDGET=${GPU_SESSION_BUDGET_S:-480}
RUNS=${GPU_TRAIN_RUNS:-64:100 256:100 4096:40 16384:20 4096:40:wire 64:100:psgpu 4096:40:psgpu 16384:20:psgpu 4096:40:bf16}
START=$(date +%s)
W=$(mktemp -d "${TMPDIR:-/tmp}/gpu-session.XXXXXX")
trap 'rm -rf "$W"' EXIT
SUMMARY="$W/summary"
: >"$SUMMARY"
FAILED=0

# say TEXT: into the log and onto the console; section NAME: a header in both.
say() {
    echo "gpu_session: $*"
    echo "gpu_session: $*" >&3
}
section() {
    h=$(printf '===== %s (t=%ss) =====' "$1" "$(($(date +%s) - START))")
    printf '\n%s\n' "$h"
    echo "$h" >&3
}
# result PART STATUS TEXT: one line of the summary.
result() {
    printf '%-10s %-6s %s\n' "$1" "$2" "$3" >>"$SUMMARY"
    say "$1: $2 $3"
    [ "$2" != FAIL ] || FAILED=$((FAILED + 1))
}
# slot WANT [RESERVE]: seconds a part may take: WANT, or what is left of the budget less RESERVE
# (default 10) for the parts after it; 0 when nothing is left.
slot() {
    left=$((START + BUDGET - $(date +%s) - ${2:-10}))
    [ "$left" -gt 0 ] || left=0
    if [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}
if command -v timeout >/dev/null; then
    limit() { t=$1; shift; timeout -k 10 "$t" "$@"; }
else
    limit() { shift; "$@"; }
    say "warning: no 'timeout' here: the parts run without their time limits"
fi
# run_to FILE SECONDS COMMAND...: runs COMMAND with a limit, its output into FILE and then the log;
# sets RC.
run_to() {
    f=$1 t=$2
    shift 2
    RC=0
    if [ "$t" -le 0 ]; then
        echo "out of time: not run: $*" >"$f"
        RC=124
    else
        limit "$t" "$@" >"$f" 2>&1 </dev/null || RC=$?
    fi
    cat "$f"
    if [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then say "stopped after its limit of ${t}s"; fi
}

# 0. The kit.
section "kit"
BUNDLE=""
for b in "$KIT/bundle.tar.gz" "$KIT/bundle.tar"; do [ -f "$b" ] && BUNDLE=$b && break; done
if [ -z "$BUNDLE" ] || [ ! -d "$KIT/build/bin" ]; then
    say "no bundle in $KIT: run bench/gpu_session_prepare.sh on the build machine and carry .gpu"
    exit 2
fi
say "repository $ROOT, kit $KIT, output $OUT, prefix $PREFIX, budget ${BUDGET}s"
cat "$KIT/KIT-INFO" 2>/dev/null || true
uname -a
PY=$(command -v python3 || true)
ORIG_LD=${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# 1. The CUDA libraries the build loads (its ldd, recorded in CUDA-LIBS), found on this machine.
section "CUDA libraries"
SITES=""
if [ -n "$PY" ]; then
    SITES=$(limit 30 "$PY" -c 'import site, sys
print("\n".join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))' 2>/dev/null || true)
fi
# find_lib SONAME: the first directory that holds it.
find_lib() {
    for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda-*/lib64 /usr/local/cuda-*/lib \
        /usr/local/cuda*/targets/*/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 \
        /usr/local/nvidia/lib; do
        [ -e "$d/$1" ] && { echo "$d"; return 0; }
    done
    for s in $SITES; do
        [ -d "$s/nvidia" ] || continue
        f=$(find "$s/nvidia" -maxdepth 3 -name "$1" 2>/dev/null | head -1)
        [ -n "$f" ] && { dirname "$f"; return 0; }
    done
    return 1
}
CUDA_DIRS="" MISSING=""
NEED=$(cat "$KIT/CUDA-LIBS" 2>/dev/null || true)
for lib in $NEED libcuda.so.1; do
    if d=$(find_lib "$lib"); then
        say "$lib: $d"
        case $d in /usr/lib/x86_64-linux-gnu | /usr/lib64) continue ;; esac # the loader searches these
        case ":$CUDA_DIRS:" in *":$d:"*) ;; *) CUDA_DIRS="${CUDA_DIRS:+$CUDA_DIRS:}$d" ;; esac
    elif ldconfig -p 2>/dev/null | grep -q " $lib "; then
        say "$lib: in the loader's cache"
    else
        say "$lib: NOT FOUND"
        MISSING="$MISSING $lib"
    fi
done
if [ -n "$CUDA_DIRS" ]; then
    LD_LIBRARY_PATH="$CUDA_DIRS${ORIG_LD:+:$ORIG_LD}"
    export LD_LIBRARY_PATH
fi

# 2. Install the bundle (its own check runs ldd on every program, so the CUDA directories come first).
section "install"
ok_install=1
if [ -f "$KIT/bundle.tar.sha256" ] && [ "${BUNDLE%.gz}" != "$BUNDLE" ]; then
    gzip -dc "$BUNDLE" >"$W/bundle.tar"
    sum=$(sha256sum "$W/bundle.tar" | cut -d' ' -f1)
    if grep -q "^$sum " "$KIT/bundle.tar.sha256"; then say "bundle sha256 $sum: as made"; else
        say "bundle sha256 $sum differs from $(cut -d' ' -f1 "$KIT/bundle.tar.sha256"): corrupt in transit?"
    fi
    BUNDLE="$W/bundle.tar"
fi
rm -rf "$PREFIX"
run_to "$W/install.txt" 150 sh "$ROOT/deploy/offline/install-bundle.sh" "$BUNDLE" "$PREFIX"
if [ "$RC" -ne 0 ]; then
    say "install-bundle.sh failed (exit $RC): once more with --force --no-check"
    run_to "$W/install2.txt" 150 sh "$ROOT/deploy/offline/install-bundle.sh" --force --no-check \
        "$BUNDLE" "$PREFIX"
    [ "$RC" -eq 0 ] || ok_install=0
fi
rm -f "$W/bundle.tar"
if [ "$ok_install" -eq 1 ] && [ -f "$PREFIX/env.sh" ]; then
    # shellcheck disable=SC1091
    . "$PREFIX/env.sh"
    result install ok "bundle in $PREFIX${MISSING:+ (CUDA libraries not found:$MISSING)}"
else
    result install FAIL "install-bundle.sh failed (see log.txt)"
fi

# The build directory the tests and benchmarks use: the kit's, with the bundle's programs, and the
# CTest files' paths (the build machine's) rewritten to this tree.
B="$W/build"
cp -R "$KIT/build" "$B"
cp "$PREFIX"/bin/tessera* "$B/bin/" 2>/dev/null || true
chmod 755 "$B"/bin/*
old_src=$(sed -n 's/^src=//p' "$KIT/build/PATHS")
old_build=$(sed -n 's/^build=//p' "$KIT/build/PATHS")
re() { printf '%s\n' "$1" | sed 's/[]|.*^$[\\]/\\&/g'; }
rep() { printf '%s\n' "$1" | sed 's/[|&\\]/\\&/g'; }
CAP=${GPU_CTEST_TEST_TIMEOUT:-200}
find "$B" -name CTestTestfile.cmake | while read -r f; do
    sed -e "s|$(re "$old_build")|@BUILD_DIR@|g" -e "s|$(re "$old_src")|$(rep "$ROOT")|g" \
        -e "s|@BUILD_DIR@|$(rep "$B")|g" "$f" |
        awk -v cap="$CAP" '{ while (match($0, /TIMEOUT "[0-9]+"/)) {
                                 v = substr($0, RSTART + 9, RLENGTH - 10) + 0
                                 $0 = substr($0, 1, RSTART - 1) "TIMEOUT_ \"" (v > cap ? cap : v) "\"" \
                                      substr($0, RSTART + RLENGTH) }
                             gsub(/TIMEOUT_ "/, "TIMEOUT \""); print }' >"$f.new"
    mv "$f.new" "$f"
done

# The tests read Fashion-MNIST from /usr/share/datasets and run /usr/bin/python3 (standard library).
DATA=/usr/share/datasets/fashion-mnist
if [ ! -f "$DATA/train-images-idx3-ubyte.gz" ]; then
    if mkdir -p /usr/share/datasets 2>/dev/null && rm -f "$DATA" 2>/dev/null &&
        ln -s "$KIT/data/fashion-mnist" "$DATA" 2>/dev/null; then
        say "$DATA -> $KIT/data/fashion-mnist ($(cat "$KIT/data/fashion-mnist/COUNT" 2>/dev/null || echo ?) training images)"
    else
        say "cannot link $DATA (not root?): gpu.train will miss its data"
    fi
fi
if [ ! -x /usr/bin/python3 ] && [ -n "$PY" ]; then
    if ln -s "$PY" /usr/bin/python3 2>/dev/null; then say "/usr/bin/python3 -> $PY"; else
        say "no /usr/bin/python3 and cannot link it: the tests' checks will fail"
    fi
fi
# PyTorch runs with the machine's own libraries, not the bundle's (gpu_train.sh calls PYTHON).
cat >"$W/python" <<EOF
#!/bin/sh
LD_LIBRARY_PATH='$ORIG_LD'
[ -n "\$LD_LIBRARY_PATH" ] && export LD_LIBRARY_PATH || unset LD_LIBRARY_PATH
exec '${PY:-python3}' "\$@"
EOF
chmod 755 "$W/python"

# 3. The GPU and the versions.
section "GPU"
GPU_OK=0
{
    if command -v nvidia-smi >/dev/null; then
        limit 30 nvidia-smi -L || true
        limit 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm \
            --format=csv || true
        limit 30 nvidia-smi | sed -n 's/.*\(Driver Version: *[0-9.]*\).*\(CUDA Version: *[0-9.]*\).*/\1  \2/p' || true
    else
        echo "no nvidia-smi"
    fi
    if command -v nvcc >/dev/null; then nvcc --version | tail -2; fi
    for c in /usr/local/cuda*/version.json; do [ -f "$c" ] && grep -m1 -A1 '"cuda"' "$c" | tr -d '\n ' && echo; done
    limit 90 "$W/python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
    "available", torch.cuda.is_available())' 2>&1 | tail -1 || true
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    ldd "$B/bin/tessera-worker" 2>&1 | grep -E 'cuda|cublas|nccl|not found' || true
    probe=$("$B/bin/test_backend_ops" --probe 2>&1) && echo "CUDA backend: $probe" ||
        echo "CUDA backend: NOT usable: $probe"
} >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
if probe=$("$B/bin/test_backend_ops" --probe 2>&1); then
    GPU_OK=1
    result gpu ok "$(nvidia-smi -L 2>/dev/null | head -1 | cut -c1-80)"
else
    NOGPU=$(echo "$probe" | tail -1 | sed 's/^SKIP: //' | cut -c1-120)
    result gpu FAIL "no GPU: $NOGPU"
fi
# why TEXT [SHORT]: why a part failed: TEXT, or "no GPU" (and SHORT) on a machine without one.
why() { if [ "$GPU_OK" -eq 1 ]; then echo "$1"; else echo "no GPU${2:+ ($2)}"; fi; }

# 4. ctest -L gpu.
section "ctest -L gpu"
# The bundle's ctest, else this machine's; GPU_SESSION_CTEST=PATH picks one, =none runs the tests directly.
CTEST=""
for c in ${GPU_SESSION_CTEST:-"$PREFIX/bin/ctest" "$(command -v ctest || true)"}; do
    [ "$c" != none ] && [ -x "$c" ] && "$c" --version >/dev/null 2>&1 && CTEST=$c && break
done
if [ -z "$CTEST" ]; then
    echo "no ctest here: the gpu tests are run one by one instead" | tee "$OUT/ctest.txt"
    n=0 pass=0 skip=0 fail=""
    for tc in "gpu.backend_ops:$B/bin/test_backend_ops" "gpu.train:$ROOT/tests/gpu/it_gpu_train.sh" \
        "gpu.node_reduce:$ROOT/tests/gpu/it_gpu_node_reduce.sh"; do
        n=$((n + 1))
        run_to "$W/t.txt" "$(slot "$CAP" 60)" env BUILD_DIR="$B" "${tc#*:}"
        cat "$W/t.txt" >>"$OUT/ctest.txt"
        case $RC in
            0) pass=$((pass + 1)) st=Passed ;;
            77) skip=$((skip + 1)) st=Skipped ;;
            *) fail="$fail ${tc%%:*}" st="Failed (exit $RC)" ;;
        esac
        echo "$n/3 ${tc%%:*}: $st" | tee -a "$OUT/ctest.txt"
    done
    line="$pass passed, $(echo "$fail" | wc -w) failed, $skip skipped (no ctest: run one by one)"
    echo "$line" | tee -a "$OUT/ctest.txt"
    if [ -z "$fail" ]; then result ctest ok "$line"; else result ctest FAIL "$(why "$line:$fail" "$line")"; fi
else
    say "$CTEST ($("$CTEST" --version | head -1)) in $B, each test at most ${CAP}s"
    cd "$B"
    run_to "$OUT/ctest.txt" "$(slot 260 60)" "$CTEST" -L gpu --output-on-failure
    cd "$ROOT"
    line=$(grep -E 'tests passed|tests failed' "$OUT/ctest.txt" | tail -1)
    skipped=$(sed -n 's/^[[:space:]]*[0-9]* - \([^ ]*\) (Skipped)$/\1/p' "$OUT/ctest.txt" | tr '\n' ' ')
    [ -n "$line" ] || line="no summary (exit $RC)"
    if [ "$RC" -eq 0 ]; then
        result ctest ok "$line${skipped:+; skipped: $skipped}"
    else
        result ctest FAIL "$(why "$line${skipped:+; skipped: $skipped}" "$line")"
    fi
fi

# 5. The bandwidth of the memory-bound kernels.
section "tessera-bench-cuda-bw"
t=$(slot 90 60)
if [ "$t" -lt 10 ]; then
    echo "out of time" >"$OUT/cuda_bw.txt"
    result cuda_bw FAIL "out of time"
else
    run_to "$OUT/cuda_bw.txt" "$t" "$B/bin/tessera-bench-cuda-bw"
    if [ "$RC" -eq 0 ]; then
        result cuda_bw ok "$(awk '/%$/ { p = $NF + 0; if (/^cudaMemcpy/) { c = $(NF - 1); next }
                                         n++; if (n == 1 || p < lo) lo = p; if (n == 1 || p > hi) hi = p }
                                END { printf "cudaMemcpy D2D %s GB/s; %d ops at %.0f-%.0f%% of it", c, n, lo, hi }' \
            "$OUT/cuda_bw.txt")"
    else
        result cuda_bw FAIL "$(why "exit $RC: $(tail -1 "$OUT/cuda_bw.txt" | cut -c1-100)" "exit $RC")"
    fi
fi

# 6. Tessera against PyTorch on the GPU, at several batches.
section "bench/gpu_train.sh"
: >"$OUT/gpu_train.txt"
: >"$W/runs"
for r in $RUNS; do
    batch=${r%%:*} rest=${r#*:}
    steps=${rest%%:*} tags="" extra=""
    [ "$rest" = "$steps" ] || tags=${rest#*:}
    case "+$tags+" in *+bf16+*) extra="net.grad_dtype=bf16 net.param_dtype=bf16" ;; esac
    case "+$tags+" in *+psgpu+*) extra="$extra ps.device=cuda" ;; esac
    case "+$tags+" in *+wire+*) extra="$extra net.local_exchange=off" ;; esac
    label=$batch
    [ -z "$tags" ] || label="$batch-$tags"
    t=$(slot 120 5)
    if [ "$t" -lt 20 ]; then
        echo "batch $label: out of time" | tee -a "$OUT/gpu_train.txt"
        echo "$label skipped out-of-time" >>"$W/runs"
        continue
    fi
    echo "--- batch $label, $steps steps (at most ${t}s)" | tee -a "$OUT/gpu_train.txt"
    run_to "$W/run.txt" "$t" env BUILD_DIR="$B" BATCH="$batch" STEPS="$steps" PYTHON="$W/python" \
        RESULT="$W/gt-$label.json" TRAIN_ARGS="data.dir=$KIT/data/fashion-mnist data.test_limit=2000 $extra" \
        sh "$ROOT/bench/gpu_train.sh"
    cat "$W/run.txt" >>"$OUT/gpu_train.txt"
    if [ "$RC" -eq 0 ] && [ -s "$W/gt-$label.json" ]; then
        echo "$label ok $W/gt-$label.json" >>"$W/runs"
    else
        echo "$label failed exit-$RC" >>"$W/runs"
    fi
done
NIMG=$(cat "$KIT/data/fashion-mnist/COUNT" 2>/dev/null || echo 0)
"$W/python" - "$W/runs" "$OUT/gpu_train.json" "$NIMG" >"$W/gt.txt" 2>&1 <<'PY' || true
import json, sys
runs, failed = [], []
for line in open(sys.argv[1]):
    label, status, what = line.split()
    tags = label.split("-")[1].split("+") if "-" in label else []
    if status == "ok":
        runs.append(dict(json.load(open(what)), tags=tags, label=label))
    else:
        failed.append({"batch": int(label.split("-")[0]), "tags": tags, "why": what})
json.dump({"job": "bench/wide_mlp.ini", "train_images": int(sys.argv[3]), "runs": runs, "failed": failed},
          open(sys.argv[2], "w"), indent=1)
for r in runs:
    print("batch %-11s tessera %10.0f ex/s  pytorch %10.0f ex/s  ratio %.3f" % (
        r["label"], r["tessera_examples_per_sec"], r["pytorch_examples_per_sec"], r["ratio"]))
PY
cat "$W/gt.txt"
n_ok=$(grep -c ' ok ' "$W/runs" || true)
n_all=$(wc -l <"$W/runs")
ratios=$(awk '$1 == "batch" { printf "%s%s=%s", n++ ? " " : "", $2, $NF }' "$W/gt.txt")
if [ "$n_ok" -eq "$n_all" ] && [ "$n_all" -gt 0 ]; then
    result gpu_train ok "$n_ok of $n_all batches; Tessera/PyTorch examples/s at batch: $ratios"
else
    line="$n_ok of $n_all batches ran${ratios:+ (batch=ratio $ratios)}; failed:"
    line="$line $(grep -v ' ok ' "$W/runs" | cut -d' ' -f1,3 | tr '\n' ' ')"
    result gpu_train FAIL "$(why "$line" "$n_ok of $n_all batches ran")"
fi

# 7. compute-sanitizer's memcheck over the op test, when the machine has it and time is left (it
#    reads device memory accesses; a timeout is reported, not failed: the test is long under it).
section "compute-sanitizer"
if ! command -v compute-sanitizer >/dev/null; then
    echo "no compute-sanitizer on PATH" >"$OUT/sanitizer.txt"
    result sanitizer skip "no compute-sanitizer on PATH"
else
    t=$(slot 120 5)
    run_to "$OUT/sanitizer.txt" "$t" compute-sanitizer --tool memcheck --error-exitcode 9 "$B/bin/test_backend_ops"
    case $RC in
        0) result sanitizer ok "memcheck: $(grep -o 'ERROR SUMMARY: [0-9]* errors' "$OUT/sanitizer.txt" | tail -1)" ;;
        124 | 137) result sanitizer skip "memcheck did not finish in ${t}s (no error seen before)" ;;
        *) result sanitizer FAIL "$(why "exit $RC: $(grep -m1 -E 'Invalid|ERROR|FAIL' "$OUT/sanitizer.txt" | cut -c1-120)" "exit $RC")" ;;
    esac
fi

# 8. Summary.
section "summary"
cp "$SUMMARY" "$OUT/summary.txt"
echo "wall ${BUDGET}s budget, used $(($(date +%s) - START))s" >>"$OUT/summary.txt"
cat "$OUT/summary.txt"
cat "$OUT/summary.txt" >&3
ls -la "$OUT"
if [ "$GPU_OK" -eq 0 ]; then
    say "no usable GPU, nothing was measured: $NOGPU"
    exit 3
fi
[ "$FAILED" -eq 0 ] || exit 1
exit 0
