"""Kernels loaded from Numba's on-disk cache give the bits of a fresh compile.

The kernels call small helpers that LLVM inlines into their row loops. A helper refactor can
make the code loaded from the cache differ from what the first process compiled (it
happened to the plain sigmoid loop once, and to the sparse kernel's blocked row pass while
it was a cached ``jit_inline`` function: the loss changed in its last bits on the second
run), so that a user's first and later processes disagree. Two processes on an empty cache
directory, the first compiling and writing it, the second loading it, must print the same
loss bits and counts for each kernel family, and for the stream jobs (the compiled wrappers
that call the kernels from a worker's loop).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_CODE = r"""
import numpy as np
import fastxent as fx
from fastxent.backends import numba_cpu

rng = np.random.default_rng(0)
out = []
def show(m):
    out.append(f"{float(m.loss).hex()} {float(m.accuracy).hex()} {int(m.count)}")

for C in (10, 300):  # the small-C tile kernel and the row kernel
    z = (rng.standard_normal((3000, C)) * 3).astype(np.float32)
    z[5, 1] = -np.inf
    y = rng.integers(0, C, 3000)
    show(fx.softmax_cross_entropy(z, y, top_k=3))
    show(fx.softmax_cross_entropy(z, np.eye(C, dtype=np.float32)[y]))  # dense labels
    t = (rng.random((3000, C)) < 0.1).astype(np.float32)
    show(fx.sigmoid_cross_entropy(z, t))  # small C: tile kernel; C = 300: the lean kernel
    show(fx.sigmoid_cross_entropy(z, t, sample_weight=rng.random(3000)))  # the row kernel
    show(fx.softmax_cross_entropy(z, y))  # C = 300: the plain sparse kernel
z = (rng.standard_normal((300, 5000)) * 3).astype(np.float32)  # rows of five 4 KB blocks
z[3, 7] = -np.inf  # the float64 slow row (its bits once differed from the cache)
y = rng.integers(0, 5000, 300)
show(fx.softmax_cross_entropy(z, y))  # the blocked row pass: the plain kernel's
# and the general kernel's (class weights), ranked
show(fx.softmax_cross_entropy(z, y, top_k=2, class_weight=np.linspace(0.5, 2, 5000)))
numba_cpu._WAKE = numba_cpu._SMALL = 0  # an Evaluator's batches as stream jobs
z = (rng.standard_normal((8000, 10)) * 3).astype(np.float32)
for y in (rng.integers(0, 10, 8000), (rng.random((8000, 10)) < 0.2).astype(np.float32)):
    ev = fx.Evaluator(top_k=2) if y.ndim == 1 else fx.Evaluator(task="multilabel")
    for i in range(0, 8000, 2000):
        ev.update(z[i:i + 2000], y[i:i + 2000])
    show(ev.result())
print("\n".join(out))
"""


@pytest.mark.skipif(os.environ.get("FASTXENT_NUMBA_CACHE", "1") == "0",
                    reason="Numba's on-disk cache is disabled")
def test_kernels_from_the_cache_give_the_bits_of_a_fresh_compile(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path),
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs = [subprocess.run([sys.executable, "-c", _CODE], env=env, capture_output=True,
                           text=True, timeout=600, check=True).stdout for _ in range(2)]
    assert any(tmp_path.rglob("*.nbc")), "the first run wrote no cache"
    assert runs[0].splitlines() == runs[1].splitlines()
    assert len(runs[0].splitlines()) == 14
