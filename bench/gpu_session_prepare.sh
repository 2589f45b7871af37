#!/bin/sh
# Prepares a GPU session (see bench/README.md, "A GPU session"), on this machine (Debian 12, CUDA
# toolkit, no GPU needed): builds a CUDA-enabled Release tree, and fills the git-ignored folder .gpu
# with what bench/gpu_session.sh needs on a GPU machine that has neither network nor Debian's
# libraries:
#   bundle.tar.gz (+ bundle.tar.sha256)  deploy/offline bundle of the build, with ctest (--with-ctest)
#   build/   the build's CTest files, test_backend_ops, tessera-bench-cuda-bw, PATHS (this machine's)
#   data/fashion-mnist/   the first N training images (what the gpu tests use) and the test set
#   CUDA-LIBS   the CUDA libraries the build loads (found on the GPU machine, not carried)
#   KIT-INFO
# Then checks that the working tree and .gpu together stay under the 64 MiB a call may carry, and
# prints the carry list and the command. With --check it also runs bench/gpu_session.sh here, on a
# copy of the tree at another path where the system's non-base libraries are hidden: every part must
# fail soft ("no GPU") and ctest must report the gpu tests as skipped.
set -eu

PROG=gpu_session_prepare.sh
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIT="$ROOT/.gpu"
LIMIT=$((64 * 1048576))

usage() {
    cat <<EOF
usage: bench/$PROG [options]

Builds BUILD_DIR (default build-gpu) with -DTESSERA_CUDA=ON -DCMAKE_BUILD_TYPE=Release, writes .gpu/
(offline bundle, CTest files, GPU programs, Fashion-MNIST subset) and prints what to carry and run.

options:
  --build-dir DIR    the build directory (default: \$BUILD_DIR or build-gpu)
  --no-build         use DIR as it is (it must hold a CUDA build)
  --cache DIR        keep downloaded .debs there (default DIR/offline-cache)
  --train-images N   training images carried (default 30000, what the gpu tests use; 60000 is all)
  --check            afterwards, run bench/gpu_session.sh here (no GPU) in a copy of the tree, with
                     the non-base system libraries hidden, and check that it fails soft
  -h, --help         this text
EOF
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

BUILD=${BUILD_DIR:-$ROOT/build-gpu} DO_BUILD=1 CACHE="" NTRAIN=30000 CHECK=0
while [ $# -gt 0 ]; do
    case $1 in
        --build-dir) [ $# -ge 2 ] || { echo "$PROG: --build-dir needs a directory" >&2; exit 2; }
                     BUILD=$2; shift ;;
        --no-build) DO_BUILD=0 ;;
        --cache) [ $# -ge 2 ] || { echo "$PROG: --cache needs a directory" >&2; exit 2; }
                 CACHE=$2; shift ;;
        --train-images) [ $# -ge 2 ] || { echo "$PROG: --train-images needs a number" >&2; exit 2; }
                        NTRAIN=$2; shift ;;
        --check) CHECK=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$PROG: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case $NTRAIN in '' | *[!0-9]*) die "--train-images $NTRAIN: not a number" ;; esac
if [ "$NTRAIN" -lt 1000 ] || [ "$NTRAIN" -gt 60000 ]; then die "--train-images: 1000 to 60000"; fi
case $BUILD in /*) ;; *) BUILD="$(pwd)/$BUILD" ;; esac
CACHE=${CACHE:-$BUILD/offline-cache}
FM=/usr/share/datasets/fashion-mnist
[ -f "$FM/train-images-idx3-ubyte.gz" ] || die "no Fashion-MNIST in $FM: apt-get install dataset-fashion-mnist"
command -v python3 >/dev/null || die "python3 is needed (to cut the data set)"

# 1. The build.
if [ "$DO_BUILD" -eq 1 ]; then
    echo "$PROG: building $BUILD (CUDA, Release)"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA=ON >"$BUILD.configure.log" 2>&1 ||
        { tail -20 "$BUILD.configure.log" >&2; die "cmake configure failed (log: $BUILD.configure.log)"; }
    rm -f "$BUILD.configure.log"
    cmake --build "$BUILD" -j "$(nproc)" --target tessera tessera-ps tessera-worker tessera-scheduler \
        tessera-router test_backend_ops tessera-bench-cuda-bw || die "the build failed"
fi
for b in tessera tessera-ps tessera-worker tessera-scheduler tessera-router test_backend_ops tessera-bench-cuda-bw; do
    [ -x "$BUILD/bin/$b" ] || die "$BUILD/bin/$b is missing (tessera-bench-cuda-bw exists only in a CUDA build)"
done
[ -f "$BUILD/tests/CTestTestfile.cmake" ] || die "$BUILD has no tests/CTestTestfile.cmake (BUILD_TESTING off?)"
grep -q 'gpu.backend_ops' "$BUILD/tests/CTestTestfile.cmake" || die "$BUILD's CTest files have no gpu tests"

# The CUDA libraries the programs load dynamically: the GPU machine has them (toolkit or PyTorch's
# nvidia-* wheels), so they are found there, never carried. A static cudart shows no libcudart here.
for b in tessera-worker test_backend_ops tessera-bench-cuda-bw; do
    ldd "$BUILD/bin/$b"
done | awk '$2 == "=>" { print $1 }' | grep -E '^lib(cudart|cublas|cublasLt|nccl|nvrtc|nvJitLink|cusparse|cufft|curand|cusolver|cudnn)[.]so' |
    sort -u >"$BUILD/cuda-libs.names" || true
if grep -q '^libcudart' "$BUILD/cuda-libs.names"; then
    echo "$PROG: the build loads these CUDA libraries (from the GPU machine): $(tr '\n' ' ' <"$BUILD/cuda-libs.names")"
else
    echo "$PROG: no dynamic libcudart (cudart linked statically); CUDA libraries:" \
        "$(tr '\n' ' ' <"$BUILD/cuda-libs.names")"
fi

# 2. .gpu: git-ignored (.gitignore names it), made afresh except the data when its size is the same.
grep -qx '/\{0,1\}\.gpu/\{0,1\}' "$ROOT/.gitignore" 2>/dev/null ||
    die ".gpu is not in .gitignore: add a line '.gpu/' (it must not be committed)"
rm -rf "$KIT/build" "$KIT/bundle.tar" "$KIT/bundle.tar.gz" "$KIT/bundle.tar.sha256" "$KIT/out" "$KIT/CUDA-LIBS" \
    "$KIT/KIT-INFO"
mkdir -p "$KIT/build/bin" "$KIT/data"
mv "$BUILD/cuda-libs.names" "$KIT/CUDA-LIBS"

echo "$PROG: making the offline bundle"
"$ROOT/deploy/offline/make-bundle.sh" --with-build "$BUILD" --with-ctest --cache "$CACHE" "$KIT/bundle.tar"
# The .debs inside are compressed already; the programs and ctest are not.
gzip -6 "$KIT/bundle.tar"

# The CTest files (absolute paths of this machine, rewritten there) and the GPU-only programs; the
# bundle's tessera* are copied into build/bin there.
(cd "$BUILD" && find . -name CTestTestfile.cmake ! -path './offline-cache/*' ! -path '*/CMakeFiles/*') |
    while read -r f; do
        mkdir -p "$KIT/build/$(dirname "$f")"
        cp "$BUILD/$f" "$KIT/build/$f"
    done
cp "$BUILD/bin/test_backend_ops" "$BUILD/bin/tessera-bench-cuda-bw" "$KIT/build/bin/"
printf 'src=%s\nbuild=%s\n' "$ROOT" "$BUILD" >"$KIT/build/PATHS"

# Fashion-MNIST: the first N training images and labels (the gpu tests take data.train_limit=30000,
# the first ones, so their results are those of the whole file) and the whole test set.
D="$KIT/data/fashion-mnist"
if [ "$(cat "$D/COUNT" 2>/dev/null)" != "$NTRAIN" ]; then
    rm -rf "$D"
    mkdir -p "$D"
    python3 - "$FM" "$D" "$NTRAIN" <<'PY'
import gzip, struct, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for name, dims in (("train-images-idx3-ubyte.gz", 3), ("train-labels-idx1-ubyte.gz", 1)):
    with gzip.open(f"{src}/{name}") as f:
        head = f.read(4 + 4 * dims)
        shape = struct.unpack(">" + "I" * dims, head[4:])
        assert head[:4] == bytes([0, 0, 8, dims]) and shape[0] >= n, name
        row = 1
        for d in shape[1:]:
            row *= d
        body = f.read(n * row)
    with gzip.open(f"{dst}/{name}", "wb", compresslevel=9) as g:
        g.write(head[:4] + struct.pack(">" + "I" * dims, n, *shape[1:]) + body)
PY
    cp "$FM/t10k-images-idx3-ubyte.gz" "$FM/t10k-labels-idx1-ubyte.gz" "$D/"
    echo "$NTRAIN" >"$D/COUNT"
fi

cat >"$KIT/KIT-INFO" <<EOF
made $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname) from $ROOT, build $BUILD ($("$BUILD/bin/tessera" version))
cuda libraries needed: $(tr '\n' ' ' <"$KIT/CUDA-LIBS")
fashion-mnist: $NTRAIN training images, 10000 test images
EOF

# 3. What travels: the working tree (tracked and untracked files git does not ignore, shared/) and .gpu.
tree=0
if command -v git >/dev/null && git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    tree=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null |
        awk '{ s += $1 } END { print s + 0 }')
else
    echo "$PROG: warning: no git here: the working tree's size is not counted" >&2
fi
shared=0
[ ! -d "$ROOT/shared" ] || shared=$(du -sb "$ROOT/shared" | cut -f1)
kit=$(du -sb "$KIT" | cut -f1)
total=$((tree + shared + kit))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo
echo "$PROG: sizes: working tree $(mib "$tree")$([ "$shared" -eq 0 ] || echo " + shared/ $(mib "$shared")")" \
    "+ .gpu $(mib "$kit") = $(mib "$total") of 64 MiB"
du -sb "$KIT"/* | while read -r s p; do echo "    $(mib "$s")  ${p#"$ROOT"/}"; done
if [ "$total" -gt "$LIMIT" ]; then
    die "$(mib "$total") is over the 64 MiB a call carries: use --train-images with fewer images, or trim the tree"
fi
[ "$total" -le $((LIMIT - 4 * 1048576)) ] || echo "$PROG: warning: less than 4 MiB to spare" >&2

# 4. --check: the session here, without a GPU, as the GPU machine would see the tree.
if [ "$CHECK" -eq 1 ]; then
    echo
    echo "$PROG: --check: bench/gpu_session.sh on a copy of the tree, non-base libraries hidden"
    C=$(mktemp -d "${TMPDIR:-/tmp}/gpu-session-check.XXXXXX")
    trap 'rm -rf "$C"' EXIT
    mkdir -p "$C/tree" "$C/out"
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
        tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$C/tree"
    cp -R "$KIT" "$C/tree/.gpu"
    # Only the base system's libraries, and no Open MPI files, Fashion-MNIST or CMake modules.
    rc=0
    # shellcheck disable=SC2016 # $1 expands in the inner shell
    "$ROOT/deploy/offline/hide-system-libs.sh" "$KIT/bundle.tar.gz" "$C" --hide /usr/share/cmake-3.25 \
        --hide /usr/share/datasets -- \
        sh -c 'cd "$1/tree" && OUT="$1/out" GPU_PREFIX="$1/prefix" sh bench/gpu_session.sh' sh "$C" || rc=$?
    echo "gpu_session.sh exit $rc"
    [ "$rc" -ne 77 ] || die "--check needs a mount namespace (unshare --mount, as root)"
    fail() {
        tail -40 "$C/out/log.txt" >&2 || true
        echo "$PROG: --check FAILED: $*" >&2
        exit 1
    }
    [ "$rc" -eq 3 ] || fail "gpu_session.sh exited $rc, expected 3 (no GPU)"
    for f in log.txt summary.txt gpu.txt ctest.txt cuda_bw.txt gpu_train.json gpu_train.txt sanitizer.txt; do
        [ -s "$C/out/$f" ] || fail "no $f in OUT"
    done
    n=$(find "$C/out" -type f | wc -l)
    [ "$n" -le 8 ] || fail "$n files in OUT, at most 8 come back"
    grep -q '100% tests passed, 0 tests failed out of 3' "$C/out/ctest.txt" || fail "ctest did not run the 3 gpu tests"
    [ "$(grep -c '(Skipped)' "$C/out/ctest.txt")" -eq 3 ] || fail "ctest did not skip the 3 gpu tests"
    grep -q "libexec/tessera-offline/ctest\|$C/prefix/bin/ctest" "$C/out/log.txt" || fail "the bundle's ctest was not used"
    for p in cuda_bw gpu_train; do
        grep -q "^$p *FAIL.*no GPU" "$C/out/summary.txt" || fail "$p did not fail with 'no GPU'"
    done
    grep -q '^install *ok' "$C/out/summary.txt" || fail "the bundle did not install"
    echo "$PROG: --check passed: the session installs, runs ctest -L gpu (3 skipped) and fails soft without a GPU"
    sed 's/^/    /' "$C/out/summary.txt"
fi

cat <<EOF

$PROG: ready. On the GPU machine, from the repository root (one call of the device tool):
    command:   sh bench/gpu_session.sh
    carry:     [".gpu"]
    timeout_s: 600   (the session keeps within GPU_SESSION_BUDGET_S=480 s)
Results come back in \$OUT: log.txt summary.txt gpu.txt ctest.txt cuda_bw.txt gpu_train.json gpu_train.txt sanitizer.txt
EOF
