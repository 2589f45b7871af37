#!/bin/sh
# Builds an offline bundle of Tessera's runtime libraries for an air-gapped machine: the Debian 12
# .debs of Open MPI, ZeroMQ, protobuf-c, HDF5, OpenBLAS, libinih, cJSON, xxHash and zlib with every
# dependency a Debian 12 base system lacks, a manifest with sha256s, and install-bundle.sh.
# Runs on a connected Debian 12 machine; installs nothing and needs no root (see README.md).
set -eu

PROG=make-bundle.sh
HERE=$(cd "$(dirname "$0")" && pwd)
SRC_ROOT=$(cd "$HERE/../.." && pwd)

# What Tessera's programs load at run time (CMakeLists.txt, scripts/install-deps.sh), plus Open MPI's
# launcher. zlib1g and libxxhash0 are in every base system (apt needs them) but are named here, so
# they are bundled anyway: they are Tessera's own dependencies and cost 110 kB.
RUNTIME_PKGS="openmpi-bin libopenmpi3 libzmq5 libprotobuf-c1 libhdf5-103-1 libhdf5-hl-100
              libopenblas0-pthread libinih1 libcjson1 libxxhash0 zlib1g libmicrohttpd12"
# Provided by the target instead of the bundle (as virtual packages): a cluster's ssh is configured
# by its admins (keys, Kerberos, ProxyJump), and a bundled one would shadow it on PATH.
HOST_PROVIDES="ssh-client"

usage() {
    cat <<EOF
usage: $PROG [options] OUT.tar

Downloads (apt-get, without installing) the Debian 12 packages of Tessera's runtime libraries and
their dependencies, except the packages every Debian 12 base system has, and writes OUT.tar:
debs/, MANIFEST (package, version, architecture, sha256, file), install-bundle.sh and README.md.
On the air-gapped machine: install-bundle.sh OUT.tar PREFIX, then . PREFIX/env.sh

Base system (excluded) = what apt installs for every Priority: required or Essential: yes package
(roughly debootstrap --variant=minbase): libc6, libgcc-s1, libstdc++6, libzstd1, libgnutls30, ...
The list is written to the bundle as BASE-PACKAGES, the versions the bundle needs of them as
HOST-REQUIREMENTS.

options:
  --with-build DIR  also bundle DIR/bin/tessera{,-ps,-worker,-scheduler,-router} and examples/*.ini;
                    packages their ldd shows outside the list above are added (with a note)
  --with-ctest      also bundle ctest from Debian's cmake, with the libraries it needs beyond the
                    base and the bundle, as PREFIX/bin/ctest (to run a build's tests there)
  --also PKG        bundle PKG too, with its non-base dependencies (repeatable); PKG may be a base
                    package, e.g. libstdc++6 for a target with an older libstdc++
  --cache DIR       keep downloaded .debs (and --update's lists) in DIR and reuse them next time
  --update          refresh the package lists into the cache first (no root needed); without it
                    the system's lists are used (run apt-get update first if they are stale)
  -h, --help        this text

Exit status: 0 on success, 1 on an error, 2 on bad usage, 3 when apt cannot reach the archive.
EOF
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

OUT="" BUILD="" ALSO="" CACHE="" UPDATE=0 CTEST=0
while [ $# -gt 0 ]; do
    case $1 in
        --with-build) [ $# -ge 2 ] || { echo "$PROG: --with-build needs a build directory" >&2; exit 2; }
                      BUILD=$2; shift ;;
        --also) [ $# -ge 2 ] || { echo "$PROG: --also needs a package name" >&2; exit 2; }
                ALSO="$ALSO $2"; shift ;;
        --cache) [ $# -ge 2 ] || { echo "$PROG: --cache needs a directory" >&2; exit 2; }
                 CACHE=$2; shift ;;
        --update) UPDATE=1 ;;
        --with-ctest) CTEST=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "$PROG: unknown option '$1' (see --help)" >&2; exit 2 ;;
        *) [ -z "$OUT" ] || { echo "$PROG: one OUT.tar only ('$OUT' and '$1')" >&2; exit 2; }
           OUT=$1 ;;
    esac
    shift
done
[ -n "$OUT" ] || { usage >&2; exit 2; }

for t in apt-get apt-cache dpkg dpkg-deb sha256sum tar awk sort; do
    command -v "$t" >/dev/null || die "'$t' is missing: this script runs on Debian 12 (bookworm)"
done
# shellcheck disable=SC1091
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] ||
    die "the bundle is made of Debian 12 (bookworm) packages; this machine is ${PRETTY_NAME:-unknown}"
ARCH=$(dpkg --print-architecture)
case $ARCH in
    amd64) TRIPLET=x86_64-linux-gnu ;;
    arm64) TRIPLET=aarch64-linux-gnu ;;
    ppc64el) TRIPLET=powerpc64le-linux-gnu ;;
    *) die "architecture $ARCH is not supported (amd64, arm64, ppc64el)" ;;
esac

if [ -n "$BUILD" ]; then
    [ -d "$BUILD/bin" ] || die "--with-build $BUILD: no bin/ directory there (is it a build directory?)"
    BUILD=$(cd "$BUILD" && pwd)
    for b in tessera tessera-ps tessera-worker tessera-scheduler tessera-router; do
        [ -x "$BUILD/bin/$b" ] || die "--with-build $BUILD: bin/$b is missing; build it first"
    done
fi
case $OUT in /*) ;; *) OUT="$(pwd)/$OUT" ;; esac
[ -d "$(dirname "$OUT")" ] || die "output directory $(dirname "$OUT") does not exist"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tessera-bundle.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [ -z "$CACHE" ]; then
    CACHE="$WORK/cache"
fi
mkdir -p "$CACHE/archives/partial" "$WORK/state" "$WORK/apt-cache" "$WORK/uris/partial"
CACHE=$(cd "$CACHE" && pwd)
: >"$WORK/state/empty"
: >"$WORK/state/extended"

# apt with a private state: its own dpkg status (empty, then the base system), cache and archive
# directory, so the machine's installed packages neither hide nor add anything and nothing is locked.
APT_COMMON="-o Dir::Cache=$WORK/apt-cache -o Dir::State::extended_states=$WORK/state/extended
            -o Debug::NoLocking=true -o APT::Install-Recommends=false -o APT::Install-Suggests=false
            -o APT::Sandbox::User=$(id -un) -o quiet=1"
if [ "$UPDATE" -eq 1 ]; then
    mkdir -p "$CACHE/lists/partial"
    APT_COMMON="$APT_COMMON -o Dir::State::Lists=$CACHE/lists"
    echo "$PROG: updating package lists into $CACHE/lists"
    # shellcheck disable=SC2086
    apt-get $APT_COMMON -o Dir::State::status="$WORK/state/empty" update >"$WORK/update.log" 2>&1 || {
        tail -5 "$WORK/update.log" >&2
        echo "$PROG: apt-get update failed: is the Debian archive reachable?" >&2
        exit 3
    }
fi

# apt_with, aptc_with STATUS ARGS...: apt-get, apt-cache with the private state and dpkg status STATUS.
apt_with() {
    status=$1
    shift
    # shellcheck disable=SC2086
    apt-get $APT_COMMON -o Dir::State::status="$status" "$@"
}
aptc_with() {
    status=$1
    shift
    # shellcheck disable=SC2086
    apt-cache $APT_COMMON -o Dir::State::status="$status" "$@"
}

# pkg_of LIB: the Debian package that owns LIB, or nothing. dpkg knows either the /usr/lib or the /lib
# spelling (merged /usr); try both, and the file the link names.
pkg_of() {
    real=$(readlink -f "$1")
    for p in "$1" "$real" "${1#/usr}" "/usr${1#/usr}" "${real#/usr}" "/usr${real#/usr}"; do
        pkg=$(dpkg -S "$p" 2>/dev/null | head -1 | cut -d: -f1)
        [ -z "$pkg" ] || { echo "$pkg"; return 0; }
    done
    return 0
}

# have_pkg PKG: whether PKG is in the base system or already in the bundle.
have_pkg() {
    grep -q "^$1 " "$WORK/BASE-PACKAGES" || grep -qx "$1" "$WORK/bundle"
}

# has_word WORD LIST...: whether WORD is one of LIST.
has_word() {
    w=$1
    shift
    for x in "$@"; do [ "$x" = "$w" ] && return 0; done
    return 1
}

# 1. The base system: apt's resolution of every required or essential package, on an empty system.
ROOTS=$(aptc_with "$WORK/state/empty" dumpavail |
    awk 'BEGIN { RS = ""; FS = "\n" }
         /(^|\n)Priority: required/ || /(^|\n)Essential: yes/ {
             for (i = 1; i <= NF; i++) if ($i ~ /^Package: /) print substr($i, 10) }' | sort -u)
[ -n "$ROOTS" ] || die "no package lists: run apt-get update (as root) or pass --update"
# shellcheck disable=SC2086
apt_with "$WORK/state/empty" -s install $ROOTS >"$WORK/base.sim" 2>&1 ||
    { tail -5 "$WORK/base.sim" >&2; die "apt cannot resolve the base system"; }
awk '$1 == "Inst" { v = $3; gsub(/[()]/, "", v); print $2, v }' "$WORK/base.sim" | sort >"$WORK/BASE-PACKAGES"
[ -s "$WORK/BASE-PACKAGES" ] || die "the base system resolved to no packages"

# 2. A dpkg status in which exactly the base system is installed, and a stand-in for what the host
# provides (openmpi-bin depends on openssh-client | ssh-client).
# shellcheck disable=SC2046
aptc_with "$WORK/state/empty" show --no-all-versions $(cut -d' ' -f1 "$WORK/BASE-PACKAGES") |
    awk '/^Package: / { print; print "Status: install ok installed"; next } { print }' >"$WORK/state/base"
cat >>"$WORK/state/base" <<EOF

Package: tessera-offline-host
Status: install ok installed
Priority: optional
Architecture: all
Version: 1
Provides: $(echo "$HOST_PROVIDES" | sed 's/ /, /g')
Maintainer: Tessera <tessera@localhost>
Description: what the target machine provides instead of the bundle

EOF

# 3. The runtime packages: apt's resolution against that base.
WANT="$RUNTIME_PKGS $ALSO"
# resolve: the packages apt would add for $WANT, one name a line, into $WORK/bundle.
resolve() {
    # --reinstall makes apt take the named packages that the base already has (zlib1g, ...).
    # shellcheck disable=SC2086
    apt_with "$WORK/state/base" -s --reinstall install $WANT >"$WORK/bundle.sim" 2>&1 ||
        { tail -20 "$WORK/bundle.sim" >&2; die "apt cannot resolve the runtime packages (see above)"; }
    awk '$1 == "Inst" { print $2 }' "$WORK/bundle.sim" | sort >"$WORK/bundle"
}
resolve
# With --with-build, what the binaries load must be in the bundle or the base; add what is not.
if [ -n "$BUILD" ]; then
    for b in tessera tessera-ps tessera-worker tessera-scheduler tessera-router; do
        ldd "$BUILD/bin/$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }
                                  $2 == "=>" && $3 == "not" { print "NOTFOUND " $1 }'
    done | sort -u >"$WORK/build-libs"
    if grep -q '^NOTFOUND' "$WORK/build-libs"; then
        die "the build's binaries miss libraries here: $(grep '^NOTFOUND' "$WORK/build-libs" | cut -d' ' -f2 | tr '\n' ' ')"
    fi
    added=0
    while read -r lib; do
        case "$(readlink -f "$lib")" in
            /usr/local/cuda*)
                # A CUDA build: cudart and cuBLAS come from the GPU machine's own toolkit (or PyTorch's
                # nvidia-* wheels) through LD_LIBRARY_PATH, not from this bundle.
                echo "$PROG: not bundled (CUDA, from the GPU machine's toolkit): $lib" >&2
                continue ;;
        esac
        pkg=$(pkg_of "$lib")
        [ -n "$pkg" ] || die "the build loads $lib, which no Debian package owns: it cannot be bundled"
        have_pkg "$pkg" && continue
        # shellcheck disable=SC2086
        has_word "$pkg" $WANT && continue
        echo "$PROG: note: the build loads $lib, from $pkg, which the list lacks: adding it"
        WANT="$WANT $pkg"
        added=1
    done <"$WORK/build-libs"
    [ "$added" -eq 0 ] || resolve
fi

# The file names, from an empty archive directory so that cached files are listed too.
# shellcheck disable=SC2086
apt_with "$WORK/state/base" -o Dir::Cache::archives="$WORK/uris" -y --reinstall --print-uris install $WANT \
    2>"$WORK/uris.err" | awk -F"'" '/^'"'"'/ { split($3, a, " "); print a[1] }' >"$WORK/files" ||
    die "apt --print-uris failed: $(cat "$WORK/uris.err")"
[ -s "$WORK/files" ] || die "apt lists nothing to download for: $WANT"

echo "$PROG: downloading $(wc -l <"$WORK/files") packages into $CACHE/archives"
# shellcheck disable=SC2086
if ! apt_with "$WORK/state/base" -o Dir::Cache::archives="$CACHE/archives" -y --reinstall -d install $WANT \
    >"$WORK/download.log" 2>&1; then
    tail -5 "$WORK/download.log" >&2
    if grep -q "404 *Not Found" "$WORK/download.log"; then
        die "the package lists are stale: run apt-get update (as root) or pass --update"
    fi
    if grep -qE "Could not resolve|Temporary failure resolving|Failed to fetch|Unable to connect" \
        "$WORK/download.log"; then
        echo "$PROG: cannot download from the Debian archive (network?)" >&2
        exit 3
    fi
    die "apt-get --download-only failed (see above)"
fi

# 4. The bundle directory.
# shellcheck disable=SC2046
aptc_with "$WORK/state/base" show $(awk '$1 == "Inst" { for (i = 3; i <= NF; i++) if ($i ~ /^\(/) {
        print $2 "=" substr($i, 2); break } }' "$WORK/bundle.sim") 2>/dev/null |
    awk '/^Package: / { p = $2 } /^Version: / { v = $2 } /^SHA256: / { print p, v, $2 }' >"$WORK/archive-sums"
B="$WORK/tessera-offline"
mkdir -p "$B/debs"
printf '# package\tversion\tarchitecture\tsha256\tfile\n' >"$B/MANIFEST"
: >"$WORK/alternatives"
: >"$WORK/needs"
while read -r f; do
    deb="$CACHE/archives/$f"
    [ -f "$deb" ] || die "apt reported $f downloaded, but $deb is missing"
    pkg=$(dpkg-deb -f "$deb" Package)
    ver=$(dpkg-deb -f "$deb" Version)
    arch=$(dpkg-deb -f "$deb" Architecture)
    sum=$(sha256sum "$deb" | cut -d' ' -f1)
    # The archive's own checksum (from the signed Release file): a corrupt cache file fails here.
    grep -qxF "$pkg $ver $sum" "$WORK/archive-sums" ||
        die "$f: sha256 $sum is not the archive's for $pkg $ver: corrupt cache? remove $deb"
    cp "$deb" "$B/debs/$f"
    printf '%s\t%s\t%s\t%s\t%s\n' "$pkg" "$ver" "$arch" "$sum" "debs/$f" >>"$B/MANIFEST"

    # update-alternatives links the maintainer scripts would make (mpirun, libopenblas.so.0, ...).
    rm -rf "$WORK/ctl"
    dpkg-deb -e "$deb" "$WORK/ctl"
    if [ -f "$WORK/ctl/postinst" ]; then
        awk '{ if (sub(/\\$/, "")) { line = line $0 " "; next } line = line $0
               n = split(line, t, /[ \t]+/)
               for (i = 1; i <= n; i++) {
                   if (t[i] == "--install" && i + 4 <= n) { print t[i+2], t[i+4], t[i+1], t[i+3]; name = t[i+2]; prio = t[i+4] }
                   if (t[i] == "--slave" && i + 3 <= n) print name, prio, t[i+1], t[i+3]
               }
               line = "" }' "$WORK/ctl/postinst" >>"$WORK/alternatives"
    fi
    # Versions of base packages this one needs (first alternative of each dependency).
    { dpkg-deb -f "$deb" Pre-Depends; dpkg-deb -f "$deb" Depends; } | tr ',' '\n' |
        sed 's/|.*//; s/^ *//; s/ *$//; s/:any//' | grep . >>"$WORK/needs" || true
done <"$WORK/files"

# One link per alternative name: the highest priority, as update-alternatives' auto mode picks.
sort -k1,1 -k2,2nr "$WORK/alternatives" | awk '$1 != last { last = $1; keep = $2 } $2 == keep { print $3, $4 }' |
    sort -u >"$B/ALTERNATIVES"

cp "$WORK/BASE-PACKAGES" "$B/BASE-PACKAGES"
# HOST-REQUIREMENTS: base packages the bundle depends on, with the highest version asked for.
sort -u "$WORK/needs" | while read -r dep; do
    name=${dep%% *}
    grep -q "^$name " "$B/BASE-PACKAGES" || continue
    grep -q "^$name	" "$B/MANIFEST" && continue
    ver=$(echo "$dep" | sed -n 's/.*(>=* *\([^)]*\)).*/\1/p')
    echo "$name ${ver:-0}"
done | sort >"$WORK/reqs"
: >"$B/HOST-REQUIREMENTS"
last="" best=0
while read -r name v; do
    if [ "$name" != "$last" ]; then
        [ -z "$last" ] || echo "$last $best" >>"$B/HOST-REQUIREMENTS"
        last=$name best=0
    fi
    if dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
done <"$WORK/reqs"
[ -z "$last" ] || echo "$last $best" >>"$B/HOST-REQUIREMENTS"
GLIBC_MIN=$(awk '$1 == "libc6" { print $2 }' "$B/HOST-REQUIREMENTS")

if [ -n "$BUILD" ]; then
    mkdir -p "$B/tessera/bin" "$B/tessera/examples"
    for b in tessera tessera-ps tessera-worker tessera-scheduler tessera-router; do
        cp "$BUILD/bin/$b" "$B/tessera/bin/$b"
        printf '%s\t%s\t%s\t%s\t%s\n' "tessera" "$("$BUILD/bin/tessera" version | awk '{ print $2 }')" \
            "$ARCH" "$(sha256sum "$B/tessera/bin/$b" | cut -d' ' -f1)" "tessera/bin/$b" >>"$B/MANIFEST"
        if command -v objdump >/dev/null; then
            objdump -T "$BUILD/bin/$b" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//'
        fi
    done | sort -u >"$WORK/glibc-build"
    while read -r v; do
        if dpkg --compare-versions "$v" gt "${GLIBC_MIN:-0}"; then GLIBC_MIN=$v; fi
    done <"$WORK/glibc-build"
    for e in "$SRC_ROOT"/examples/*.ini; do
        [ -f "$e" ] || continue
        cp "$e" "$B/tessera/examples/"
        printf '%s\t%s\t%s\t%s\t%s\n' "tessera-example" "-" "all" "$(sha256sum "$e" | cut -d' ' -f1)" \
            "tessera/examples/$(basename "$e")" >>"$B/MANIFEST"
    done
fi

# --with-ctest: ctest out of Debian's cmake package and the libraries it loads that are neither in the
# base nor in the bundle, as files in tessera/ctest/{bin,lib,share}, not as packages: install-bundle.sh runs
# it through a wrapper that names those libraries to the loader for ctest alone, so they stay off
# env.sh's LD_LIBRARY_PATH and cannot shadow the host's own libexpat or libarchive for what ctest runs.
# cmake-data (CMake's modules) is left out: ctest runs a build's CTestTestfile.cmake without it.
CTEST_VERSION=none
if [ "$CTEST" -eq 1 ]; then
    # fetch_deb PKG: the candidate .deb of PKG in $CACHE/archives, checked against the archive's sha256.
    fetch_deb() {
        show=$(aptc_with "$WORK/state/base" show --no-all-versions "$1" 2>/dev/null) ||
            die "--with-ctest: apt knows no package $1"
        want=$(echo "$show" | sed -n 's/^SHA256: //p' | head -1)
        ver=$(echo "$show" | sed -n 's/^Version: //p' | head -1)
        for d in "$CACHE/archives/$1"_*.deb; do
            [ -f "$d" ] && [ "$(dpkg-deb -f "$d" Version)" = "$ver" ] &&
                [ "$(sha256sum "$d" | cut -d' ' -f1)" = "$want" ] && { echo "$d"; return 0; }
        done
        rm -rf "$WORK/dl"
        mkdir -p "$WORK/dl"
        if ! (cd "$WORK/dl" && apt_with "$WORK/state/base" download "$1") </dev/null >"$WORK/dl.log" 2>&1; then
            tail -5 "$WORK/dl.log" >&2
            if grep -qE "Could not resolve|Temporary failure resolving|Failed to fetch|Unable to connect" \
                "$WORK/dl.log"; then
                echo "$PROG: cannot download from the Debian archive (network?)" >&2
                exit 3
            fi
            die "apt-get download $1 failed (see above)"
        fi
        for d in "$WORK/dl/$1"_*.deb; do
            [ -f "$d" ] || die "apt-get download $1 wrote no .deb"
            [ "$(sha256sum "$d" | cut -d' ' -f1)" = "$want" ] ||
                die "$1: the downloaded .deb's sha256 is not the archive's"
            mv "$d" "$CACHE/archives/${d##*/}"
            echo "$CACHE/archives/${d##*/}"
        done
    }
    C="$B/tessera/ctest"
    mkdir -p "$C/bin" "$C/lib" "$WORK/ctx"
    deb=$(fetch_deb cmake)
    dpkg-deb -x "$deb" "$WORK/ctx/cmake"
    [ -x "$WORK/ctx/cmake/usr/bin/ctest" ] || die "--with-ctest: ${deb##*/} has no usr/bin/ctest"
    cp "$WORK/ctx/cmake/usr/bin/ctest" "$C/bin/ctest"
    CTEST_VERSION=$(dpkg-deb -f "$deb" Version)
    printf '%s\t%s\t%s\t%s\t%s\n' cmake "$CTEST_VERSION" "$ARCH" "$(sha256sum "$C/bin/ctest" | cut -d' ' -f1)" \
        tessera/ctest/bin/ctest >>"$B/MANIFEST"
    # ctest looks for CMake's modules when it starts (and complains without them); running tests needs none.
    M="share/cmake-$(echo "$CTEST_VERSION" | cut -d. -f1,2)/Modules"
    mkdir -p "$C/$M"
    echo "# Placeholder (make-bundle.sh --with-ctest): ctest needs no CMake modules to run tests." >"$C/$M/CMake.cmake"
    printf '%s\t%s\t%s\t%s\t%s\n' cmake "$CTEST_VERSION" all "$(sha256sum "$C/$M/CMake.cmake" | cut -d' ' -f1)" \
        "tessera/ctest/$M/CMake.cmake" >>"$B/MANIFEST"
    # What ctest loads here, package by package: each one outside the base and the bundle goes in.
    ldd "$C/bin/ctest" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }
                              $2 == "=>" && $3 == "not" { print "NOTFOUND " $1 }' | sort -u >"$WORK/ctest-libs"
    if grep -q '^NOTFOUND' "$WORK/ctest-libs"; then
        die "--with-ctest: ctest's libraries are not all on this machine ($(grep '^NOTFOUND' "$WORK/ctest-libs" |
            cut -d' ' -f2 | tr '\n' ' ')): apt-get install cmake first, or leave --with-ctest out"
    fi
    : >"$WORK/ctest-pkgs"
    while read -r lib; do
        pkg=$(pkg_of "$lib")
        [ -n "$pkg" ] || die "--with-ctest: ctest loads $lib, which no Debian package owns"
        have_pkg "$pkg" && continue
        echo "$pkg" >>"$WORK/ctest-pkgs"
    done <"$WORK/ctest-libs"
    sort -u -o "$WORK/ctest-pkgs" "$WORK/ctest-pkgs"
    while read -r pkg; do
        deb=$(fetch_deb "$pkg")
        rm -rf "$WORK/ctx/p"
        dpkg-deb -x "$deb" "$WORK/ctx/p"
        found=0
        for f in "$WORK/ctx/p/usr/lib/$TRIPLET"/lib*.so.* "$WORK/ctx/p/lib/$TRIPLET"/lib*.so.*; do
            [ -e "$f" ] || [ -L "$f" ] || continue
            cp -P "$f" "$C/lib/"
            found=1
            [ -L "$f" ] && continue
            printf '%s\t%s\t%s\t%s\t%s\n' "$pkg" "$(dpkg-deb -f "$deb" Version)" "$ARCH" \
                "$(sha256sum "$f" | cut -d' ' -f1)" "tessera/ctest/lib/${f##*/}" >>"$B/MANIFEST"
        done
        [ "$found" -eq 1 ] || die "--with-ctest: ${deb##*/} holds no shared library"
    done <"$WORK/ctest-pkgs"
    if command -v objdump >/dev/null; then
        for f in "$C/bin/ctest" "$C"/lib/*; do
            [ -L "$f" ] || objdump -T "$f" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//'
        done | sort -u | while read -r v; do
            if dpkg --compare-versions "$v" gt "${GLIBC_MIN:-0}"; then echo "$v"; fi
        done | sort -V | tail -1 >"$WORK/ctest-glibc"
        [ ! -s "$WORK/ctest-glibc" ] || GLIBC_MIN=$(cat "$WORK/ctest-glibc")
    fi
    echo "$PROG: ctest $CTEST_VERSION bundled, with $(wc -l <"$WORK/ctest-pkgs") library package(s):" \
        "$(tr '\n' ' ' <"$WORK/ctest-pkgs")"
fi

cp "$HERE/install-bundle.sh" "$B/install-bundle.sh"
chmod 755 "$B/install-bundle.sh"
cp "$HERE/README.md" "$B/README.md"
NPKG=$(grep -c '	debs/' "$B/MANIFEST")
cat >"$B/INFO" <<EOF
format=1
made=$(date -u +%Y-%m-%dT%H:%M:%SZ)
debian=${PRETTY_NAME:-bookworm}
architecture=$ARCH
triplet=$TRIPLET
packages=$NPKG
glibc_min=${GLIBC_MIN:-0}
tessera=$([ -n "$BUILD" ] && "$BUILD/bin/tessera" version | awk '{ print $2 }' || echo none)
ctest=$CTEST_VERSION
EOF

tar -cf "$OUT.tmp" -C "$WORK" tessera-offline
mv "$OUT.tmp" "$OUT"
SIZE=$(wc -c <"$OUT")
SUM=$(sha256sum "$OUT" | cut -d' ' -f1)
echo "$SUM  $(basename "$OUT")" >"$OUT.sha256"
echo "$PROG: wrote $OUT: $NPKG packages, $((SIZE / 1048576)).$((SIZE % 1048576 * 10 / 1048576)) MiB ($SIZE bytes), glibc >= ${GLIBC_MIN:-?} on the target"
echo "$PROG: sha256 $SUM (also in $OUT.sha256: compare it on the target)"
if [ "$SIZE" -gt $((64 * 1048576)) ]; then
    echo "$PROG: warning: the bundle is larger than 64 MiB" >&2
fi
