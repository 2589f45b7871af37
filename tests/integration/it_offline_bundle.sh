#!/bin/sh
# deploy/offline: make-bundle.sh downloads the runtime .debs (needs the Debian archive: SKIP without
# it), install-bundle.sh installs them into a temporary prefix, and the prefix must run Tessera on
# its own. "On its own" is checked on a stand-in for the target: a mount namespace in which
# /usr/lib/<triplet> holds only the base system's files (every other system library is hidden, so
# a fallback to one fails instead of passing) and /usr/share/openmpi, /etc/openmpi are empty. There
# the bundle is installed, ldd must resolve every library of tessera-*, orterun and orted into the
# prefix or the base, the prefix's mpirun runs 2 ranks, a fake second node whose "ssh" gives a clean
# environment starts orted through env.sh's launch agent, and `tessera train` trains and checkpoints.
# Also: a corrupted .deb is refused, and a non-root ar + tar install gives the same files.
. "$(dirname "$0")/lib.sh"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OFF="$ROOT/deploy/offline"
skip() {
    echo "SKIP: $*"
    exit 77
}
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    skip "no apt-get/dpkg-deb: not Debian"
fi
for b in tessera tessera-ps tessera-worker tessera-scheduler tessera-router; do
    [ -x "$BUILD_DIR/bin/$b" ] || fail "$BUILD_DIR/bin/$b is missing (BUILD_DIR=$BUILD_DIR)"
done
[ -d /usr/share/datasets/fashion-mnist ] || fail "Fashion-MNIST is missing: run ./scripts/install-deps.sh"

for s in make-bundle.sh install-bundle.sh; do
    "$OFF/$s" --help | grep -q "^usage: $s" || fail "$s --help"
    rc=0
    "$OFF/$s" --no-such-option >/dev/null 2>&1 || rc=$?
    [ "$rc" -eq 2 ] || fail "$s --no-such-option: exit $rc, expected 2"
done

# 1. Make the bundle; downloaded .debs are kept in the build directory for the next run.
BUNDLE="$WORK/tessera-offline.tar"
rc=0
"$OFF/make-bundle.sh" --with-build "$BUILD_DIR" --cache "$BUILD_DIR/offline-cache" "$BUNDLE" \
    >"$WORK/make.log" 2>&1 || rc=$?
cat "$WORK/make.log"
[ "$rc" -ne 3 ] || skip "apt cannot reach the Debian archive"
[ "$rc" -eq 0 ] || fail "make-bundle.sh failed (exit $rc)"
size=$(wc -c <"$BUNDLE")
[ "$size" -le $((64 * 1048576)) ] || fail "the bundle is $size bytes, over 64 MiB"
echo "ok: bundle of $size bytes"
tar -tf "$BUNDLE" >"$WORK/bundle.list"
for f in MANIFEST INFO BASE-PACKAGES ALTERNATIVES install-bundle.sh README.md tessera/bin/tessera-worker; do
    grep -qx "tessera-offline/$f" "$WORK/bundle.list" || fail "the bundle lacks $f"
done
tar -xOf "$BUNDLE" tessera-offline/MANIFEST >"$WORK/MANIFEST"
for p in openmpi-bin libopenmpi3 libzmq5 libprotobuf-c1 libhdf5-103-1 libopenblas0-pthread libinih1 \
    libcjson1 libxxhash0 zlib1g libpmix2 libucx0 libsodium23; do
    grep -q "^$p	" "$WORK/MANIFEST" || fail "MANIFEST lacks $p"
done
for p in libc6 libgcc-s1 libstdc++6 openssh-client; do
    ! grep -q "^$p	" "$WORK/MANIFEST" || fail "the bundle carries $p, which the target provides"
done

# 2. A machine like the target, for what follows: a mount namespace in which /usr/lib/<triplet>
# holds only the base system's files and /usr/share/openmpi, /etc/openmpi are empty.
T=$(tar -xOf "$BUNDLE" tessera-offline/INFO | sed -n 's/^triplet=//p')
rc=0
"$OFF/hide-system-libs.sh" "$BUNDLE" "$WORK" -- true || rc=$?
case $rc in
    0) hidden() { "$OFF/hide-system-libs.sh" "$BUNDLE" "$WORK" -- "$@"; } ;;
    77)
        hidden() { "$@"; }
        echo "NOTE: no mount namespace here: system libraries stay visible; only resolved paths are checked" ;;
    *) fail "cannot hide the system's libraries (hide-system-libs.sh exit $rc)" ;;
esac

# 3. Install there (dpkg-deb; its own check runs against the base only). Then as a user that is
# not root, with the ar + tar unpacker: the same files.
P="$WORK/prefix"
hidden "$OFF/install-bundle.sh" "$BUNDLE" "$P" || fail "install-bundle.sh failed"
[ -f "$P/env.sh" ] || fail "no $P/env.sh"
NR="$WORK/nonroot"
mkdir -m 777 "$NR"
chmod 711 "$WORK"
chmod 644 "$BUNDLE"
as_user=""
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null && id nobody >/dev/null 2>&1; then
    as_user="setpriv --reuid=nobody --regid=$(id -g nobody) --clear-groups"
fi
$as_user env TESSERA_OFFLINE_UNPACK=ar "$OFF/install-bundle.sh" --no-check "$BUNDLE" "$NR/prefix" >/dev/null ||
    fail "install-bundle.sh with ar${as_user:+, as nobody,} failed"
(cd "$P" && find . ! -name env.sh ! -path './libexec/*' | sort) >"$WORK/files.dpkg"
(cd "$NR/prefix" && find . ! -name env.sh ! -path './libexec/*' | sort) >"$WORK/files.ar"
cmp -s "$WORK/files.dpkg" "$WORK/files.ar" || fail "ar + tar unpacked other files than dpkg-deb"
rm -rf "$NR"
echo "ok: dpkg-deb and ar + tar${as_user:+ (as nobody)} unpack the same $(wc -l <"$WORK/files.dpkg") files"

# 4. A bundle with one altered .deb is refused before anything is unpacked.
mkdir "$WORK/bad"
tar -xf "$BUNDLE" -C "$WORK/bad"
for victim in "$WORK"/bad/tessera-offline/debs/libzmq5_*.deb; do victim=${victim##*/}; done
printf 'x' >>"$WORK/bad/tessera-offline/debs/$victim"
tar -cf "$WORK/bad.tar" -C "$WORK/bad" tessera-offline
rm -rf "$WORK/bad"
rc=0
"$OFF/install-bundle.sh" "$WORK/bad.tar" "$WORK/prefix-bad" >"$WORK/bad.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a corrupted bundle was installed"
grep -q "$victim.*sha256 mismatch" "$WORK/bad.log" || { cat "$WORK/bad.log"; fail "no sha256 mismatch named"; }
[ ! -e "$WORK/prefix-bad/usr" ] || fail "a corrupted bundle was partly unpacked"
rm -f "$WORK/bad.tar"
echo "ok: a corrupted .deb is refused"

# 5. The prefix alone, on the target-like machine.
cat >"$WORK/fake-ssh" <<'EOF'
#!/bin/sh
# ssh to a node that does not exist: drops the options and the host name and runs the command here
# in an empty environment, as a remote non-interactive shell that never sourced env.sh would.
while [ $# -gt 0 ]; do case $1 in -*) shift ;; *) break ;; esac; done
shift
echo "$*" >>"$(dirname "$0")/fake-ssh.log"
exec env -i HOME=/ PATH=/usr/bin:/bin TMPDIR="$(dirname "$0")" sh -c "$*"
EOF
chmod 755 "$WORK/fake-ssh"
printf '%s slots=1\ntessera-fake-node slots=1\n' "$(hostname)" >"$WORK/hostfile"

cat >"$WORK/inside.sh" <<'EOF'
set -eu
W=$1 P=$2 T=$3 BUILD_DIR=$4
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
. "$P/env.sh"
[ "$(command -v mpirun)" = "$P/usr/bin/mpirun" ] || fail "mpirun is $(command -v mpirun), not the prefix's"

# ldd: every library resolves, into the prefix or the base system's directory.
for f in "$P"/bin/tessera* "$P/usr/bin/orterun" "$P/usr/bin/orted"; do
    out=$(ldd "$f") || fail "ldd $f failed"
    if echo "$out" | grep -q 'not found'; then
        echo "$out" >&2
        fail "${f##*/}: libraries not found"
    fi
    echo "$out" | awk '$2 == "=>" { print $3 }' | while read -r lib; do
        case $lib in
            "$P"/*) ;;
            /usr/local/cuda*) ;; # a CUDA build: the GPU machine's toolkit provides these, not the bundle
            /lib/"$T"/*|/usr/lib/"$T"/*)
                grep -qx "${lib##*/}" "$W/base-files" || fail "${f##*/} loads $lib: a system library outside the base" ;;
            *) fail "${f##*/} loads $lib, outside the prefix and the base" ;;
        esac
    done
done
for b in tessera tessera-ps tessera-worker tessera-scheduler tessera-router; do
    cmp -s "$P/bin/$b" "$BUILD_DIR/bin/$b" || fail "the prefix's $b is not the build's"
done
echo "ok: every library of tessera-*, orterun and orted is in the prefix or the base"

# A 2-rank job from the prefix's mpirun.
mpirun -np 2 --oversubscribe sh -c 'echo "rank=$OMPI_COMM_WORLD_RANK host=$(hostname)"' >"$W/hello.out" 2>&1 ||
    { cat "$W/hello.out" >&2; fail "mpirun -np 2 failed"; }
[ "$(grep -c '^rank=[01] ' "$W/hello.out")" -eq 2 ] || { cat "$W/hello.out" >&2; fail "mpirun -np 2 output"; }
! grep -qi 'help file\|Sorry!' "$W/hello.out" || { cat "$W/hello.out" >&2; fail "Open MPI did not find its help files"; }
mpirun -np 2 --oversubscribe tessera version >"$W/version.out" 2>&1 || fail "mpirun tessera version"
[ "$(grep -c '^tessera ' "$W/version.out")" -eq 2 ] || { cat "$W/version.out" >&2; fail "tessera version x2"; }
echo "ok: mpirun from the prefix runs 2 ranks"

# A second "node": orted is started through the launch agent, in a clean environment.
: >"$W/fake-ssh.log"
OMPI_MCA_plm_rsh_agent="$W/fake-ssh" mpirun -np 2 --hostfile "$W/hostfile" --map-by node \
    sh -c 'echo "rank=$OMPI_COMM_WORLD_RANK parent=$(cat /proc/$PPID/comm)"' >"$W/remote.out" 2>&1 ||
    { cat "$W/remote.out" >&2; fail "mpirun on two nodes failed"; }
grep -q "libexec/tessera-offline/orted " "$W/fake-ssh.log" || fail "orted was not started through the launch agent"
grep -q '^rank=1 parent=orted' "$W/remote.out" || { cat "$W/remote.out" >&2; fail "rank 1 did not run under orted"; }
echo "ok: a second node's orted starts from a clean environment"

# Training with checkpoints (HDF5, ZeroMQ, OpenBLAS, MPI), launched with the prefix's mpirun.
# env.sh names the prefix's mpirun (TESSERA_MPIRUN) and the bundled job files (TESSERA_EXAMPLES_DIR).
tessera train fashion_mlp --servers 1 --workers 1 --run-dir "$W/run" --checkpoint-every 400 \
    job.epochs=1 >"$W/train.log" 2>&1 || { tail -20 "$W/train.log" >&2; fail "tessera train failed"; }
grep -q "running: [^ ]*/usr/bin/mpirun " "$W/train.log" || fail "tessera train did not use the prefix's mpirun"
EOF

rc=0
hidden sh "$WORK/inside.sh" "$WORK" "$P" "$T" "$BUILD_DIR" || rc=$?
[ "$rc" -eq 0 ] || fail "the prefix is not self-sufficient (see above)"
at_least "$(json "$WORK/run/summary.json" test_accuracy)" 0.75 "test_accuracy of 1 epoch trained from the prefix"
ls -d "$WORK"/run/checkpoints/step-* >/dev/null 2>&1 || fail "no checkpoint written from the prefix"
echo "ok: the offline prefix runs Tessera on its own"
