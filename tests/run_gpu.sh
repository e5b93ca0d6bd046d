#!/usr/bin/env bash
# The one command to run on the lent GPU machine (the image has CuPy, Numba and torch but no
# package index): the GPU test suite, then the GPU benchmark table.
#   bash tests/run_gpu.sh            # tests (slow ones included) + benchmark
#   FAST=1 bash tests/run_gpu.sh     # tests without the > 2^31-element cases, no benchmark
#   ENGINE_ONLY=1 bash tests/run_gpu.sh   # step 1 only (engine level), e.g. on a short lease
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import cupy; print('cupy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion())"
marker="gpu"
[ "${FAST:-0}" = "1" ] && marker="gpu and not slow"
# 1. the CUDA engine against the CPU engine (engine level), and the NVRTC compile check
python -m pytest -m "$marker" -q -p no:cacheprovider tests/test_cuda.py "$@"
status=$?
python -m pytest -q -p no:cacheprovider tests/test_nvrtc.py || status=1
# 2. every other suite's CuPy cases (the lib fixture's "cupy" parameter: the public API on
# CuPy arrays against the float64 reference; ~1500 cases, run on 4 processes)
if [ "${ENGINE_ONLY:-0}" != "1" ]; then
    python -m pytest -m "$marker" -q -p no:cacheprovider -n 4 tests --ignore=tests/test_cuda.py \
        "$@" || status=1
fi
if [ "${FAST:-0}" != "1" ] && [ -f benchmarks/gpu_bench.py ]; then
    python benchmarks/gpu_bench.py || status=1
fi
exit $status
