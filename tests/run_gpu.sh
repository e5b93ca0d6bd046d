#!/usr/bin/env bash
# The one command to run on the lent GPU machine (the image has CuPy, Numba and torch but no
# package index): the GPU test suite, then the GPU benchmark table.
#   bash tests/run_gpu.sh            # tests (slow ones included) + benchmark
#   FAST=1 bash tests/run_gpu.sh     # tests without the > 2^31-element cases, no benchmark
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import cupy; print('cupy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion())"
marker="gpu"
[ "${FAST:-0}" = "1" ] && marker="gpu and not slow"
python -m pytest -m "$marker" -q -p no:cacheprovider tests/test_cuda.py "$@"
status=$?
if [ "${FAST:-0}" != "1" ] && [ -f benchmarks/gpu_bench.py ]; then
    python benchmarks/gpu_bench.py || status=1
fi
exit $status
