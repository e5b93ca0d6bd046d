"""No (N, C) temporary: the extra memory of a call is a small fraction of its input.

tracemalloc sees NumPy's allocations; the kernels allocate only per-thread state (a few
hundred KB) and, with reduction="none", O(N) per-row arrays. Strided layouts are copied one
bounded block at a time.
"""

import tracemalloc

import numpy as np
import pytest

import fastxent as fx
from fastxent import config

N, C = 4096, 4096  # 64 MiB of float32 logits


def _peak(f):
    f()  # compile / warm up outside the measurement
    tracemalloc.start()
    try:
        f()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((N, C), dtype=np.float32)
    y = rng.integers(0, C, N)
    t = np.zeros((N, C), np.float32)
    t[np.arange(N), y] = 1
    return z, y, t


@pytest.mark.parametrize("call", ["sparse", "dense", "sigmoid", "sparse-none"])
def test_no_n_by_c_temporary(data, call):
    z, y, t = data
    f = {
        "sparse": lambda: fx.softmax_cross_entropy(z, y, top_k=(1, 5)),
        "dense": lambda: fx.softmax_cross_entropy(z, t),
        "sigmoid": lambda: fx.sigmoid_cross_entropy(z, t),
        "sparse-none": lambda: fx.softmax_cross_entropy(z, y, reduction="none"),
    }[call]
    assert _peak(f) < 0.02 * z.nbytes


def test_strided_layout_copies_one_bounded_block(data, monkeypatch):
    z, y, _ = data
    monkeypatch.setattr(config, "CPU_BLOCK_BYTES", 4 << 20)
    zf = np.asfortranarray(z)
    peak = _peak(lambda: fx.softmax_cross_entropy(zf, y))
    assert peak < 2 * (4 << 20), peak  # one 4 MiB block (+ small state), never the whole array
