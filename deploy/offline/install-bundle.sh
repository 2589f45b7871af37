#!/bin/sh
# Installs a bundle from make-bundle.sh into PREFIX on a machine without network: checks the sha256s
# in its MANIFEST, unpacks every .deb (dpkg-deb -x, or ar + tar), makes the update-alternatives links
# (mpirun, libopenblas.so.0, ...), and writes PREFIX/env.sh. Needs no root and no Debian: a glibc
# Linux with tar and sha256sum, and dpkg-deb or ar (binutils). See README.md.
set -eu

PROG=install-bundle.sh

usage() {
    cat <<EOF
usage: $PROG [options] BUNDLE.tar PREFIX

Verifies BUNDLE.tar's packages against its MANIFEST, unpacks them into PREFIX and writes
PREFIX/env.sh; afterwards, in every shell (and batch script) that runs Tessera:
    . PREFIX/env.sh
    mpirun -np 2 hostname

PREFIX must be empty, missing, or an earlier install of a bundle; use the same path on every node
(a shared file system), since env.sh and Open MPI's remote launcher name it.

options:
  --force      install even when the host's glibc is older than the bundle needs, or PREFIX
               holds other files
  --no-check   skip the check that every program and library in PREFIX finds its libraries
  -h, --help   this text

Environment: TESSERA_OFFLINE_UNPACK=dpkg-deb|ar picks the unpacker (default: dpkg-deb if present).
EOF
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

BUNDLE="" PREFIX="" FORCE=0 CHECK=1
while [ $# -gt 0 ]; do
    case $1 in
        --force) FORCE=1 ;;
        --no-check) CHECK=0 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "$PROG: unknown option '$1' (see --help)" >&2; exit 2 ;;
        *) if [ -z "$BUNDLE" ]; then BUNDLE=$1
           elif [ -z "$PREFIX" ]; then PREFIX=$1
           else echo "$PROG: too many arguments: '$1' (see --help)" >&2; exit 2
           fi ;;
    esac
    shift
done
if [ -z "$BUNDLE" ] || [ -z "$PREFIX" ]; then
    usage >&2
    exit 2
fi
[ -f "$BUNDLE" ] || die "bundle $BUNDLE: no such file"

for t in tar awk sed; do
    command -v "$t" >/dev/null || die "'$t' is missing"
done
if command -v sha256sum >/dev/null; then
    sha256() { sha256sum "$1" | cut -d' ' -f1; }
elif command -v openssl >/dev/null; then
    sha256() { openssl dgst -sha256 -r "$1" | cut -d' ' -f1; }
else
    die "neither sha256sum nor openssl is here: cannot verify the bundle"
fi
UNPACK=${TESSERA_OFFLINE_UNPACK:-}
if [ -z "$UNPACK" ]; then
    if command -v dpkg-deb >/dev/null; then UNPACK="dpkg-deb"; else UNPACK="ar"; fi
fi
case $UNPACK in
    dpkg-deb) command -v dpkg-deb >/dev/null || die "TESSERA_OFFLINE_UNPACK=dpkg-deb, but dpkg-deb is missing" ;;
    ar) command -v ar >/dev/null || die "neither dpkg-deb nor ar (binutils) is here: cannot unpack .deb files" ;;
    *) die "TESSERA_OFFLINE_UNPACK=$UNPACK: expected dpkg-deb or ar" ;;
esac

mkdir -p "$PREFIX" || die "cannot create $PREFIX"
PREFIX=$(cd "$PREFIX" && pwd -P)
case $PREFIX in
    *[!A-Za-z0-9/._+-]*) die "PREFIX $PREFIX has characters (spaces, quotes) that env.sh and Open MPI cannot carry" ;;
esac
MARK="$PREFIX/share/tessera-offline/INFO"
if [ -n "$(ls -A "$PREFIX")" ] && [ ! -f "$MARK" ] && [ "$FORCE" -eq 0 ]; then
    die "$PREFIX is not empty and holds no earlier bundle: use an empty directory (or --force)"
fi

TMP=$(mktemp -d "$PREFIX/.install.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
tar -xf "$BUNDLE" -C "$TMP" || die "$BUNDLE: not a readable tar file"
B="$TMP/tessera-offline"
if [ ! -f "$B/MANIFEST" ] || [ ! -f "$B/INFO" ]; then
    die "$BUNDLE: no tessera-offline/MANIFEST or INFO: not a bundle from make-bundle.sh"
fi

info() { sed -n "s/^$1=//p" "$B/INFO"; }
TRIPLET=$(info triplet)
GLIBC_MIN=$(info glibc_min)
[ -n "$TRIPLET" ] || die "$BUNDLE: INFO names no triplet"

# glibc cannot be bundled (it is tied to its loader): the host's must be new enough.
host_glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $2 }') || host_glibc=""
if [ -z "$host_glibc" ]; then
    echo "$PROG: warning: cannot tell the host's glibc version; the bundle needs glibc >= $GLIBC_MIN" >&2
elif [ "$(printf '%s\n%s\n' "$GLIBC_MIN" "$host_glibc" | sort -t. -k1,1n -k2,2n -k3,3n | head -1)" != "$GLIBC_MIN" ]; then
    if [ "$FORCE" -eq 1 ]; then
        echo "$PROG: warning: host glibc $host_glibc < $GLIBC_MIN, which the bundle needs (--force)" >&2
    else
        die "the host's glibc is $host_glibc; the bundle's libraries need >= $GLIBC_MIN (Debian 12 has 2.36)"
    fi
fi

# 1. Every file the MANIFEST names, with its sha256; and nothing unnamed in debs/.
bad=0
n=0
ndeb=0
while IFS='	' read -r pkg ver _arch sum file; do
    case $pkg in '#'*|'') continue ;; esac
    n=$((n + 1))
    if [ ! -f "$B/$file" ]; then
        echo "$PROG: $file ($pkg $ver) is in the MANIFEST but not in the bundle" >&2
        bad=$((bad + 1))
    elif [ "$(sha256 "$B/$file")" != "$sum" ]; then
        echo "$PROG: $file ($pkg $ver): sha256 mismatch (expected $sum): the bundle is corrupt" >&2
        bad=$((bad + 1))
    fi
done <"$B/MANIFEST"
for f in "$B"/debs/*.deb; do
    ndeb=$((ndeb + 1))
    grep -q "	debs/${f##*/}\$" "$B/MANIFEST" || { echo "$PROG: debs/${f##*/} is not in the MANIFEST" >&2; bad=$((bad + 1)); }
done
[ "$bad" -eq 0 ] || die "$bad problem(s) with $BUNDLE: nothing was installed"
echo "$PROG: verified $n files against the MANIFEST"

# 2. Unpack.
unpack_ar() {
    d="$TMP/ar"
    rm -rf "$d"
    mkdir -p "$d"
    (cd "$d" && ar x "$1") || return 1
    for data in "$d"/data.tar*; do
        case $data in
            *.xz) dec="xz -dc" ;;
            *.zst) dec="zstd -dc" ;;
            *.gz) dec="gzip -dc" ;;
            *.bz2) dec="bzip2 -dc" ;;
            *.tar) dec="cat" ;;
            *) echo "$PROG: $1: unknown member ${data##*/}" >&2; return 1 ;;
        esac
        command -v "${dec%% *}" >/dev/null || { echo "$PROG: $1 needs '${dec%% *}' to unpack" >&2; return 1; }
        $dec "$data" | tar -xf - -C "$PREFIX" || return 1
        return 0
    done
    echo "$PROG: $1 has no data.tar member" >&2
    return 1
}
for f in "$B"/debs/*.deb; do
    if [ "$UNPACK" = dpkg-deb ]; then
        dpkg-deb -x "$f" "$PREFIX" || die "dpkg-deb -x ${f##*/} failed"
    else
        unpack_ar "$f" || die "cannot unpack ${f##*/} with ar + tar"
    fi
done
echo "$PROG: unpacked $ndeb packages into $PREFIX ($UNPACK)"

# 3. The links update-alternatives would make, as absolute links into PREFIX.
while read -r link target; do
    [ -n "$link" ] || continue
    if [ -e "$PREFIX$target" ]; then
        [ -e "$PREFIX$link" ] && [ ! -L "$PREFIX$link" ] && continue
        mkdir -p "$(dirname "$PREFIX$link")"
        ln -sfn "$PREFIX$target" "$PREFIX$link"
    fi
done <"$B/ALTERNATIVES"

# 4. Tessera's own files, if the bundle has them.
if [ -d "$B/tessera/bin" ]; then
    mkdir -p "$PREFIX/bin" "$PREFIX/share/tessera/examples"
    cp "$B"/tessera/bin/* "$PREFIX/bin/"
    chmod 755 "$PREFIX"/bin/tessera*
    cp "$B"/tessera/examples/* "$PREFIX/share/tessera/examples/" 2>/dev/null || true
fi
L="$PREFIX/usr/lib/$TRIPLET"
LIBS="$PREFIX/usr/lib/$TRIPLET:$PREFIX/lib/$TRIPLET:$L/openblas-pthread:$L/openmpi/lib"
# ctest (make-bundle.sh --with-ctest): PREFIX/bin/ctest runs it through the loader with its own
# libraries and the prefix's for ctest alone; the tests it starts get the caller's LD_LIBRARY_PATH.
if [ -x "$B/tessera/ctest/bin/ctest" ]; then
    case $TRIPLET in
        x86_64-linux-gnu) LDSO=/lib64/ld-linux-x86-64.so.2 ;;
        aarch64-linux-gnu) LDSO=/lib/ld-linux-aarch64.so.1 ;;
        powerpc64le-linux-gnu) LDSO=/lib64/ld64.so.2 ;;
        *) die "no loader known for $TRIPLET (ctest)" ;;
    esac
    CT="$PREFIX/libexec/tessera-offline/ctest"
    rm -rf "$CT"
    mkdir -p "$CT" "$PREFIX/bin"
    cp -RP "$B/tessera/ctest/." "$CT/"
    cat >"$PREFIX/bin/ctest" <<EOF
#!/bin/sh
# ctest from Debian's cmake (make-bundle.sh --with-ctest; written by $PROG).
exec $LDSO --library-path "$CT/lib:$LIBS\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" "$CT/bin/ctest" "\$@"
EOF
    chmod 755 "$PREFIX/bin/ctest"
fi

# 5. env.sh, and the launcher Open MPI runs on other nodes, whose shells have not sourced it.
cat >"$PREFIX/env.sh" <<EOF
# Tessera offline runtime (written by $PROG). Source it: . $PREFIX/env.sh
# Puts the bundled Open MPI, ZeroMQ, HDF5, OpenBLAS, ... (and Tessera, if bundled) first.
TESSERA_OFFLINE_PREFIX=$PREFIX
export TESSERA_OFFLINE_PREFIX
case ":\${PATH:-}:" in
    *":$PREFIX/usr/bin:"*) ;;
    *) PATH="$PREFIX/bin:$PREFIX/usr/bin\${PATH:+:\$PATH}" ;;
esac
case ":\${LD_LIBRARY_PATH:-}:" in
    *":$PREFIX/usr/lib/$TRIPLET:"*) ;;
    *) LD_LIBRARY_PATH="$LIBS\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" ;;
esac
export PATH LD_LIBRARY_PATH
# Open MPI was built for /usr: OPAL_PREFIX relocates its plugins and help files; its sysconfdir
# (/etc/openmpi) is absolute, so it is named too, which also keeps a host's Open MPI config out.
OPAL_PREFIX=$PREFIX/usr
OPAL_SYSCONFDIR=$PREFIX/etc/openmpi
# PMIx (Open MPI's process manager interface) has its own prefix and a config naming /usr.
PMIX_PREFIX=$L/pmix2
PMIX_MCA_mca_base_component_path=$L/pmix2/lib/pmix
HWLOC_PLUGINS_PATH=$L/hwloc
FI_PROVIDER_PATH=$L/libfabric
# mpirun starts orted on other nodes through ssh or srun; this wrapper sources this file first.
OMPI_MCA_orte_launch_agent=$PREFIX/libexec/tessera-offline/orted
# For a hand-run mpirun, as tessera train passes it (README, "By hand with mpirun").
OMPI_MCA_rtc_hwloc_vmhole=none
export OPAL_PREFIX OPAL_SYSCONFDIR PMIX_PREFIX PMIX_MCA_mca_base_component_path HWLOC_PLUGINS_PATH \\
    FI_PROVIDER_PATH OMPI_MCA_orte_launch_agent OMPI_MCA_rtc_hwloc_vmhole
# tessera train: this mpirun, and the bundled job files by name (tessera train ctr_dlrm).
TESSERA_MPIRUN=$PREFIX/usr/bin/mpirun
export TESSERA_MPIRUN
if [ -d "$PREFIX/share/tessera/examples" ]; then
    TESSERA_EXAMPLES_DIR=$PREFIX/share/tessera/examples
    export TESSERA_EXAMPLES_DIR
fi
EOF
mkdir -p "$PREFIX/libexec/tessera-offline"
cat >"$PREFIX/libexec/tessera-offline/orted" <<EOF
#!/bin/sh
# Open MPI's launch agent (orte_launch_agent): remote shells have not sourced env.sh.
. $PREFIX/env.sh
exec $PREFIX/usr/bin/orted "\$@"
EOF
chmod 755 "$PREFIX/libexec/tessera-offline/orted"

mkdir -p "$PREFIX/share/tessera-offline"
for f in MANIFEST INFO BASE-PACKAGES HOST-REQUIREMENTS ALTERNATIVES README.md install-bundle.sh; do
    [ -f "$B/$f" ] && cp "$B/$f" "$PREFIX/share/tessera-offline/"
done

# 6. Does everything find its libraries? Programs Tessera needs must; a plugin that does not is
# only reported (Open MPI skips plugins it cannot load).
if [ "$CHECK" -eq 1 ]; then
    if ! command -v ldd >/dev/null; then
        echo "$PROG: warning: no ldd here: the libraries were not checked" >&2
    else
        (
            # shellcheck disable=SC1091
            . "$PREFIX/env.sh"
            : >"$TMP/ldd.bad"
            find "$PREFIX/bin" "$PREFIX/usr/bin" "$PREFIX/usr/lib" "$PREFIX/lib" -type f 2>/dev/null |
                while read -r f; do
                    [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
                    # Plugin systems (UCX, ...) load a module's siblings from its own directory.
                    out=$(LD_LIBRARY_PATH="${f%/*}:$LD_LIBRARY_PATH" ldd "$f" 2>&1) || continue # static, foreign
                    echo "$out" | grep -E 'not found|version .* not found' | sed "s|^|${f#"$PREFIX"/}: |" >>"$TMP/ldd.bad" || true
                done
            must=$(grep -E '^(bin/tessera|usr/bin/(orterun|orted)|usr/lib/[^/]*/(openblas-pthread/)?lib(mpi|open-pal|open-rte|zmq|hdf5|openblas))' \
                "$TMP/ldd.bad" || true)
            if [ -n "$must" ]; then
                echo "$must" >&2
                echo "$PROG: the programs above find these libraries neither in the bundle nor on this" \
                    "host; the bundle expects the host to have what $PREFIX/share/tessera-offline/HOST-REQUIREMENTS" \
                    "lists (make-bundle.sh --also PKG bundles one)" >&2
                exit 1
            fi
            if [ -s "$TMP/ldd.bad" ]; then
                echo "$PROG: note: $(cut -d: -f1 "$TMP/ldd.bad" | sort -u | wc -l) optional plugin(s) cannot load here, e.g.:"
                head -3 "$TMP/ldd.bad"
            fi
            if [ -x "$PREFIX/bin/ctest" ] && ! "$PREFIX/bin/ctest" --version >"$TMP/ctest.out" 2>&1; then
                cat "$TMP/ctest.out" >&2
                echo "$PROG: the bundled ctest does not start (see above)" >&2
                exit 1
            fi
            echo "$PROG: every program finds its libraries"
        ) || die "check failed (install kept in $PREFIX; --no-check skips the check)"
    fi
fi
cp "$B/INFO" "$MARK"
echo "$PROG: installed into $PREFIX; use it with: . $PREFIX/env.sh"
