"""What bounds the CPU kernels: the read limit beside the transcendental compute floor.

For each CPU workload of ``shared/BENCHMARKS.md`` (full sizes) this times, on the same arrays,
in one process, with every Numba thread:

* **read**: a parallel sum over the predictions and labels (what ``fastxent bench`` calls the
  read limit);
* **exp floor**: a parallel loop that does nothing but fastxent's own vectorised float32
  polynomial ``exp`` (at the kernels' vector width) once per prediction (sigmoid: ``exp``
  and ``log1p``, the element loss's two transcendentals) and sums the results, with no
  max, no labels, no per-row work. Any kernel that evaluates each element's exponential once
  with these polynomials needs at least this long; it reads the predictions too, so it is
  ``max(read, compute)``, not their sum;
* **fastxent**: the public call ``fastxent bench`` times.

Printed: median of ``--repeat`` samples (the two bounds: fastest sample), and fastxent's share
of each bound. A kernel at 100% of the exp floor is compute-bound by the polynomial, whatever
the read limit says.

Run:  PYTHONPATH=. python scripts/compute_floor.py [--repeat 7] [--workload A_4Mx10 ...]
"""

from __future__ import annotations

import argparse
import time

import numba as nb
import numpy as np

import fastxent as fx
from fastxent.backends._numba_math import fexp_nonpos, flog1p_unit, wide_vectors

_FM = {"reassoc", "contract", "arcp", "nsz"}
# name: (rows, classes, labels)
WORKLOADS = {
    "A_4Mx10": (4_194_304, 10, "sparse"),
    "B_256kx1000": (262_144, 1000, "sparse"),
    "C_8kx32k": (8192, 32768, "sparse"),
    "D_dense": (262_144, 1000, "onehot"),
    "E_bce": (1_048_576, 100, "multihot"),
}


@nb.njit(fastmath=_FM, error_model="numpy")
def _exp_term(x):  # pragma: no cover - compiled
    return fexp_nonpos(-(x if x > np.float32(0.0) else -x))


@nb.njit(fastmath=_FM, error_model="numpy")
def _exp_log1p_term(x):  # pragma: no cover - compiled
    return flog1p_unit(fexp_nonpos(-(x if x > np.float32(0.0) else -x)))


def _floor_kernel(term):
    """A parallel sum of ``term(x)`` over every element, 64k-element blocks per thread."""

    @nb.njit(parallel=True, fastmath=_FM, error_model="numpy", nogil=True)
    def floor(z):  # pragma: no cover - compiled
        n = z.size
        nblk = (n + 65535) // 65536
        acc = 0.0
        for b in nb.prange(nblk):
            wide_vectors()  # as the kernels (lowered into the outlined loop body)
            lo = b * 65536
            hi = min(n, lo + 65536)
            zb = z[lo:hi]
            s = np.float32(0.0)
            for k in range(hi - lo):
                s += term(zb[k])
            acc += s
        return acc

    return floor


_exp_floor = _floor_kernel(_exp_term)
_exp_log1p_floor = _floor_kernel(_exp_log1p_term)


@nb.njit(parallel=True, nogil=True)
def _read(x):  # pragma: no cover - compiled
    acc = np.uint64(0)
    for i in nb.prange(x.size):
        acc += x[i]
    return acc


def _words(a):
    b = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return b[: b.size - b.size % 4].view(np.uint32)


def _time(f, repeat):
    f()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return ts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--workload", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"numba {nb.__version__}, {nb.get_num_threads()} threads, float32, "
          f"{args.repeat} samples ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print(f"{'workload':<13} {'read ms':>8} {'floor ms':>9} {'fastxent':>9} "
          f"{'% read':>7} {'% floor':>8} {'floor/read':>10}")
    for name in args.workload:
        _one(name, args.repeat, rng)


def _one(name, repeat, rng):
    """Time read, floor and fastxent on one workload's arrays and print its line."""
    n, C, kind = WORKLOADS[name]
    z = rng.standard_normal((n, C), dtype=np.float32)
    if kind == "sparse":
        lab = rng.integers(0, C, n)
    elif kind == "onehot":
        lab = np.zeros((n, C), np.float32)
        lab[np.arange(n), rng.integers(0, C, n)] = 1.0
    else:
        lab = (rng.random((n, C)) < 0.1).astype(np.float32)
    if kind == "multihot":
        def call():
            return fx.sigmoid_cross_entropy(z, lab)
        floor = _exp_log1p_floor
    else:
        def call():
            return fx.softmax_cross_entropy(z, lab)
        floor = _exp_floor
    zf = z.reshape(-1)
    words = [_words(z), _words(lab)]
    t_read, t_floor, t_fx = [], [], []
    _time(call, 1)
    for _ in range(repeat):  # interleaved: all three see the same machine load
        t_read += _time(lambda: [_read(w) for w in words], 1)
        t_floor += _time(lambda: floor(zf), 1)
        t_fx += _time(call, 1)
    r, f, m = min(t_read) * 1e3, min(t_floor) * 1e3, float(np.median(t_fx)) * 1e3
    print(f"{name:<13} {r:8.1f} {f:9.1f} {m:9.1f} {100 * r / m:6.0f}% "
          f"{100 * f / m:7.0f}% {f / r:10.2f}")

if __name__ == "__main__":
    main()
