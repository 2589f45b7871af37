#!/bin/sh
# Installs every build, test and run dependency of Tessera on Debian 12 with apt-get.
# Idempotent; run as root. `--bench` also installs what bench/ compares against (PyTorch).
set -eu

BENCH=0
for arg in "$@"; do
    case "$arg" in
        --bench) BENCH=1 ;;
        -h|--help)
            echo "usage: $0 [--bench]   install Tessera's dependencies (Debian 12, root)"
            exit 0 ;;
        *) echo "install-deps.sh: unknown option '$arg'" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: must run as root (apt-get install)" >&2
    exit 1
fi

PKGS="build-essential cmake pkg-config ca-certificates iproute2
      openmpi-bin libopenmpi-dev
      libzmq3-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
      libhdf5-dev hdf5-tools libopenblas-dev zlib1g-dev
      libinih-dev libcjson-dev libxxhash-dev libmicrohttpd-dev libboost-context-dev
      dataset-fashion-mnist
      python3 python3-numpy python3-h5py python3-zmq python3-protobuf python3-prometheus-client
      slurmctld slurmd slurm-client munge"
if [ "$BENCH" -eq 1 ]; then
    PKGS="$PKGS python3-torch"
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-deps.sh: all dependencies present"
    exit 0
fi

echo "install-deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $missing
