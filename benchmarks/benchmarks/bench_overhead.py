"""Fixed costs: dispatch latency at tiny N, cold import, first call (JIT / NVRTC), GPU memory.

* ``Dispatch.time_*``: one call on 1 x 10 and 256 x 1000 (S_256x1000) inputs -- validation,
  dispatch, result wrapping; what a per-batch call in a training loop pays.
* ``timeraw_import_fastxent``: ``import fastxent`` in a fresh interpreter (imports no engine).
* ``timeraw_first_call_numba``: import + first call in a fresh interpreter, kernels from
  Numba's disk cache (what a user pays after the first run); ``..._nocache``: the JIT compile
  itself (``FASTXENT_NUMBA_CACHE=0``).
* ``CudaFirstCall.timeraw_first_call_cuda``: CuPy import + NVRTC compile + first launch.
* ``GpuPeakMemory.track_gpu_peak_bytes``: bytes the CuPy pool grows by during one call (asv's
  ``peakmem_*`` sees host RSS only).
"""

from __future__ import annotations

import functools

import numpy as np

from .common import (
    BACKENDS,
    DTYPES,
    PARAM_NAMES,
    SIGMOID_LABELS,
    SIGMOID_WORKLOADS,
    SOFTMAX_LABELS,
    SOFTMAX_WORKLOADS,
    Backend,
    Benchmark,
    check_params,
    fastxent,
    inputs,
    optional,
)


class Dispatch(Benchmark):
    params = [BACKENDS, ["1x10", "256x1000"]]
    param_names = ["backend", "shape"]

    def setup(self, backend, shape):
        self.be = Backend.get(backend)
        self.fx = fx = fastxent()
        n, c = map(int, shape.split("x"))
        rng = np.random.default_rng(0)
        self.z = self.be.asarray(rng.standard_normal((n, c), dtype=np.float32))
        self.y = self.be.asarray(rng.integers(0, c, n))
        self.t = self.be.asarray((rng.random((n, c)) < 0.3).astype(np.float32))
        fx.softmax_cross_entropy(self.z, self.y)
        fx.sigmoid_cross_entropy(self.z, self.t)
        fx.evaluate(self.z, self.y)
        self.be.synchronize()

    def time_softmax(self, backend, shape):
        self.fx.softmax_cross_entropy(self.z, self.y)
        self.be.synchronize()

    def time_softmax_no_validate(self, backend, shape):
        self.fx.softmax_cross_entropy(self.z, self.y, validate=False)
        self.be.synchronize()

    def time_sigmoid(self, backend, shape):
        self.fx.sigmoid_cross_entropy(self.z, self.t)
        self.be.synchronize()

    def time_evaluate(self, backend, shape):
        self.fx.evaluate(self.z, self.y)
        self.be.synchronize()

    def time_float_of_result(self, backend, shape):
        float(self.fx.softmax_cross_entropy(self.z, self.y).loss)


def timeraw_import_fastxent():
    return "import fastxent"


_FIRST_CALL_SETUP = """
import numpy as np
rng = np.random.default_rng(0)
z = rng.standard_normal((1000, 100), dtype=np.float32)
y = rng.integers(0, 100, 1000)
t = (rng.random((1000, 100)) < 0.3).astype(np.float32)
"""
_FIRST_CALL = """
import fastxent as fx
fx.softmax_cross_entropy(z, y)
fx.sigmoid_cross_entropy(z, t)
"""


def timeraw_first_call_numba():
    return _FIRST_CALL, _FIRST_CALL_SETUP


def timeraw_first_call_numba_nocache():
    # the JIT compile of every kernel the two calls need (warns: non-default setting)
    return _FIRST_CALL, "import os, warnings\nos.environ['FASTXENT_NUMBA_CACHE'] = '0'\n" \
        "warnings.simplefilter('ignore')\n" + _FIRST_CALL_SETUP


timeraw_first_call_numba.timeout = 600
timeraw_first_call_numba_nocache.timeout = 900
timeraw_first_call_numba_nocache.repeat = (1, 3, 60.0)
timeraw_first_call_numba_nocache.number = 1


class CudaFirstCall:
    timeout = 900
    repeat = (1, 3, 60.0)
    number = 1

    def setup(self):
        Backend.get("cuda")

    def timeraw_first_call_cuda(self):
        return """
import cupy as cp
import fastxent as fx
z = cp.random.standard_normal((1000, 100), dtype=cp.float32)
y = cp.random.randint(0, 100, 1000)
float(fx.softmax_cross_entropy(z, y).loss)
"""


class GpuPeakMemory(Benchmark):
    params = [["cuda"], SOFTMAX_WORKLOADS + SIGMOID_WORKLOADS, DTYPES,
              SOFTMAX_LABELS + SIGMOID_LABELS]
    param_names = PARAM_NAMES

    def setup(self, backend, workload, dtype, labels):
        self.be = check_params(backend, workload, dtype, labels)
        fx = fastxent()
        z, lab = inputs(backend, workload, dtype, labels)
        if workload in SIGMOID_WORKLOADS:
            self.call = functools.partial(fx.sigmoid_cross_entropy, z, lab)
        else:
            top = (1, 5) if labels == "top5" else None
            self.call = functools.partial(fx.softmax_cross_entropy, z, lab, top_k=top)
        self.call()
        self.be.synchronize()

    def track_gpu_peak_bytes(self, backend, workload, dtype, labels):
        cupy = optional("cupy")
        pool = cupy.get_default_memory_pool()
        self.be.synchronize()
        pool.free_all_blocks()
        before = pool.total_bytes()
        self.call()
        self.be.synchronize()
        return pool.total_bytes() - before

    track_gpu_peak_bytes.unit = "bytes"
