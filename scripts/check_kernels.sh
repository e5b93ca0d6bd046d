#!/usr/bin/env bash
# Compile every CUDA source in kernels/ for sm_90 with every template instantiation the
# engine can ask for (FX_INSTANTIATE), so that a syntax or type error cannot land unnoticed.
# --ptx stops before ptxas (machine code): front end and NVVM catch every syntax and type
# error in ~1 min, where assembling all instantiations took ~15 min. CI (.ci/run) calls this;
# without nvcc it says so and exits 0 (the GPU path is then untested).
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-$(command -v nvcc || true)}"
if [ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
if [ -z "$NVCC" ]; then
    echo "check_kernels: nvcc not found; CUDA kernels NOT compiled (skipped)"
    exit 0
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# one nvcc per source, run side by side (the sources are independent; on 2 cores this takes
# the time of the largest, ~1 min, instead of the sum, ~1.5 min)
pids=()
for src in kernels/*.cu; do
    name="$(basename "$src" .cu)"
    # -Werror all-warnings: warnings in kernels are bugs here. --resource-usage prints
    # registers / spills per kernel when compiled with -c instead of --ptx (METHOD.md).
    "$NVCC" -arch=sm_90 -std=c++17 -DFX_INSTANTIATE -Ikernels --Werror all-warnings \
        --ptx "$src" -o "$out/$name.ptx" 2>"$out/$name.log" &
    pids+=("$!")
done
status=0
i=0
for src in kernels/*.cu; do
    name="$(basename "$src" .cu)"
    if wait "${pids[$i]}"; then
        echo "check_kernels: ok   $src"
    else
        echo "check_kernels: FAIL $src"
        cat "$out/$name.log"
        status=1
    fi
    i=$((i + 1))
done
exit $status
