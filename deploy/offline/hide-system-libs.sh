#!/bin/sh
# hide-system-libs.sh BUNDLE WORK [--hide DIR]... -- COMMAND...: runs COMMAND on a machine like an
# air-gapped target: in a private mount namespace in which /usr/lib/TRIPLET holds only the files of the
# base system that BUNDLE (make-bundle.sh's tar) lists in BASE-PACKAGES, and /usr/share/openmpi,
# /etc/openmpi and each DIR are empty; then checks that the system's Open MPI can no longer start.
# WORK is a scratch directory (left with the file list). Needs root, or unprivileged user namespaces.
# Exit status: COMMAND's; 77 when no mount namespace can be made here; 1 when the hiding fails.
set -eu
[ $# -ge 4 ] || { echo "usage: $0 BUNDLE WORK [--hide DIR]... -- COMMAND..." >&2; exit 2; }
BUNDLE=$1 W=$2
shift 2
HIDE=${HIDE_SYSTEM_LIBS_DIRS:-}
while [ $# -gt 0 ] && [ "$1" != -- ]; do
    if [ "$1" != --hide ] || [ $# -lt 2 ]; then
        echo "$0: expected --hide DIR or --, got '$1'" >&2
        exit 2
    fi
    HIDE="$HIDE $2"
    shift 2
done
[ $# -ge 2 ] || { echo "$0: no COMMAND after --" >&2; exit 2; }
shift

if [ "${HIDE_SYSTEM_LIBS_INSIDE:-}" != 1 ]; then
    T=$(tar -xOf "$BUNDLE" tessera-offline/INFO | sed -n 's/^triplet=//p')
    tar -xOf "$BUNDLE" tessera-offline/BASE-PACKAGES | cut -d' ' -f1 | while read -r pkg; do
        dpkg -L "$pkg" 2>/dev/null || true
    done | sed -n "s#^\(/usr\)\{0,1\}/lib/$T/##p" | sort -u >"$W/base-files"
    grep -qx 'libc.so.6' "$W/base-files" || { echo "$0: the base file list has no libc.so.6" >&2; exit 1; }
    set -- "$0" "$BUNDLE" "$W" -- "$@"
    export HIDE_SYSTEM_LIBS_INSIDE=1 HIDE_SYSTEM_LIBS_TRIPLET="$T" HIDE_SYSTEM_LIBS_DIRS="$HIDE"
    if unshare --mount --propagation private true 2>/dev/null; then
        exec unshare --mount --propagation private sh "$@"
    elif unshare --user --map-root-user --mount --propagation private true 2>/dev/null; then
        exec unshare --user --map-root-user --mount --propagation private sh "$@"
    fi
    echo "$0: no mount namespace can be made here" >&2
    exit 77
fi

# Inside the namespace: the mounts vanish with it.
unset HIDE_SYSTEM_LIBS_INSIDE HIDE_SYSTEM_LIBS_DIRS
L=/usr/lib/$HIDE_SYSTEM_LIBS_TRIPLET
mkdir -p "$W/ns/real" "$W/ns/view" "$W/ns/empty"
mount --bind "$L" "$W/ns/real"
mount -o remount,bind,ro "$W/ns/real"
mount -t tmpfs tmpfs "$W/ns/view"
while read -r f; do
    s="$W/ns/real/$f"
    if [ -d "$s" ] && [ ! -L "$s" ]; then
        mkdir -p "$W/ns/view/$f"
    elif [ -e "$s" ] || [ -L "$s" ]; then
        case $f in */*) mkdir -p "$W/ns/view/${f%/*}" ;; esac
        ln -s "$s" "$W/ns/view/$f"
    fi
done <"$W/base-files"
mount --bind "$W/ns/view" "$L"
for d in /usr/share/openmpi /etc/openmpi $HIDE; do
    if [ -d "$d" ]; then mount --bind "$W/ns/empty" "$d"; fi
done
# Proof that the hiding works: the system's Open MPI can no longer start.
if [ -x /usr/bin/orterun ] && /usr/bin/orterun --version >/dev/null 2>&1; then
    echo "FAIL: the system's orterun still runs: its libraries are not hidden" >&2
    exit 1
fi
exec "$@"
