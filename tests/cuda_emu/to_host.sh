#!/bin/sh
# to_host.sh IN.cu OUT.cc: the CUDA source as C++ for the host emulator (cuda_runtime.h here): each
# `kernel<<<grid, block[, smem[, stream]]>>>(` launch becomes `ts_emu_launch(kernel, grid, block, ...)(`
# and `extern __shared__ T name[];` becomes a pointer to the launch's dynamic shared memory. A launch
# must sit on one line, as clang-format leaves the ones in cuda/.
set -eu
in=$1
out=$2
{
    printf '#line 1 "%s"\n' "$in"
    sed -e 's/\([A-Za-z_][A-Za-z0-9_]*\(<[^<>]*>\)\{0,1\}\)<<<\(.*\)>>>(/ts_emu_launch(\1, \3)(/' \
        -e 's/extern __shared__ \([A-Za-z_][A-Za-z0-9_]*\) \([A-Za-z_][A-Za-z0-9_]*\)\[\];/\1 *\2 = (\1 *)ts_emu_dynamic_smem();/' \
        "$in"
} >"$out.tmp"
if grep -n '<<<\|__shared__.*\[\];' "$out.tmp" | grep -v '^1:' | grep -v '//\|/\*' >&2; then
    echo "to_host.sh: $in: a launch or dynamic shared array above was not rewritten" >&2
    rm -f "$out.tmp"
    exit 1
fi
mv "$out.tmp" "$out"
