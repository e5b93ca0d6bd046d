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
    """A Fortran-ordered input is copied one block of rows at a time: each copy at most
    CPU_BLOCK_BYTES, never two alive at once, and never the whole array.

    Copies are counted where the launcher lays them out (``_row_buffer``), on this test's
    thread only: the process may hold other threads that call fastxent (an earlier test's
    Dask or Evaluator threads), and CI twice saw one more block-sized array than this call
    makes, first in tracemalloc's peak (which sees every thread) and then in this count
    before it was limited to the caller's thread."""
    import threading
    import weakref

    from fastxent.backends import numba_cpu as K

    z, y, _ = data
    block = 4 << 20
    monkeypatch.setattr(config, "CPU_BLOCK_BYTES", block)
    zf = np.asfortranarray(z)
    me = threading.get_ident()
    copies, alive = [], [0]
    row_buffer = K._row_buffer

    def counted(a):  # every block the launcher lays out for the kernels, on this thread
        if (threading.get_ident() == me and a.nbytes >= 1 << 20
                and not np.shares_memory(a, zf)):
            alive[0] += 1
            copies.append((a.nbytes, alive[0]))
            weakref.finalize(a, lambda: alive.__setitem__(0, alive[0] - 1))
        return row_buffer(a)

    monkeypatch.setattr(K, "_row_buffer", counted)
    peak = _peak(lambda: fx.softmax_cross_entropy(zf, y))
    threads = sorted(t.name for t in threading.enumerate())
    assert len(copies) >= 2 * (z.nbytes // block)  # warm-up and measured call, block by block
    assert max(n for n, _ in copies) <= block
    assert max(a for _, a in copies) == 1, f"two blocks alive at once; threads: {threads}"
    assert peak < z.nbytes // 4, peak  # never the whole array
