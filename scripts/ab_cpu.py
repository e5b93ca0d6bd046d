"""A/B a CPU kernel change: the Numba engine of a git revision against the working tree's, on the
same arrays, in one process, calls alternating (old, new, old, new, ...), so that the drift of a
shared machine hits both alike.

The old engine is ``git show REV:fastxent/backends/numba_cpu.py`` written for the run into
``fastxent/backends/_ab_old.py``, with REV's ``_numba_math.py`` (the exp/log polynomials, bit
casts) beside it as ``_ab_old_math.py`` when it differs from the working tree's (both
git-ignored, removed at exit). Other helpers (``_state``, ``_jit``) are the working tree's.

Printed per workload: the median of ``--repeat`` samples of each, old / new, and whether
the two gave the same counts, and the same exact loss sum bit for bit.

Run:  PYTHONPATH=. python scripts/ab_cpu.py HEAD~1 [--workload E_bce D_dense] [--threads 1 2]
      [--rows-div 4] [--chunk 65536] [--dtype float64] [--smoothing 0.1] [--probs]

``--chunk R`` times a stream of engine calls on R-row slices instead of one call (the
per-call overhead that streaming pays); "same" then compares the streams' summed states.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time

import numba as nb
import numpy as np

from fastxent.backends import SigmoidOptions, SoftmaxOptions
from fastxent.backends import numba_cpu as new

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compute_floor import WORKLOADS as _MAIN  # noqa: E402  (the five CPU workloads)

# name: (rows, classes, labels): the CPU workloads of shared/BENCHMARKS.md, the small-C tile
# kernels' other two forms on A's shape (bench's "one-hot" variant), and multi-hot rows of
# other lengths
WORKLOADS = dict(_MAIN, A_4Mx10_onehot=(4_194_304, 10, "onehot"),
                 A_4Mx10_multihot=(4_194_304, 10, "multihot"),
                 # a trained model's logits: 95% of rows confident (loss ~1e-7), 5% wrong
                 # (loss ~16): tiles whose losses span more than 23 binades
                 A_4Mx10_trained=(4_194_304, 10, "trained"),
                 A_4Mx10_onehot_trained=(4_194_304, 10, "onehot-trained"),
                 # A's bytes at other small class counts
                 A_C2=(20_971_520, 2, "sparse"), A_C3=(13_981_013, 3, "sparse"),
                 A_C5=(8_388_608, 5, "sparse"), A_C16=(2_621_440, 16, "sparse"),
                 A_C12=(3_495_253, 12, "sparse"),
                 # B's bytes at mid-size class counts (the plain sparse kernel's range)
                 B_C33=(2_033_601, 33, "sparse"), B_C100=(671_088, 100, "sparse"),
                 B_C200=(335_544, 200, "sparse"),
                 # top-5 accuracy beside the loss (the rank counted in the exp pass)
                 B_256kx1000_top5=(262_144, 1000, "sparse-top5"),
                 C_8kx32k_top5=(8192, 32768, "sparse-top5"),
                 # the sigmoid kernels' other row sizes (E_bce's bytes: C = 40, 500, 1000)
                 E_multihot_C40=(2_621_440, 40, "multihot"),
                 E_multihot_C500=(209_715, 500, "multihot"),
                 E_multihot_C1000=(104_857, 1000, "multihot"))
_DIR = os.path.dirname(new.__file__)
_OLD = os.path.join(_DIR, "_ab_old.py")
_OLD_MATH = os.path.join(_DIR, "_ab_old_math.py")


def _show(rev: str, name: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:fastxent/backends/{name}"],
                          check=True, capture_output=True, text=True).stdout


def load_old(rev: str):
    src = _show(rev, "numba_cpu.py")
    math_src = _show(rev, "_numba_math.py")
    with open(os.path.join(_DIR, "_numba_math.py")) as f:
        if f.read() != math_src:
            with open(_OLD_MATH, "w") as g:
                g.write(math_src)
            src = src.replace("from ._numba_math import", "from ._ab_old_math import")
    with open(_OLD, "w") as f:
        f.write(src)
    return importlib.import_module("fastxent.backends._ab_old")


def make(rows, C, labels, rng):
    z = rng.standard_normal((rows, C), dtype=np.float32)
    if labels == "multihot":
        return z, (rng.random((rows, C), dtype=np.float32) < 0.3).astype(np.float32)
    y = rng.integers(0, C, rows)
    if labels.endswith("trained"):
        z[np.arange(rows), y] += 16.0
        wrong = rng.random(rows) < 0.05
        y[wrong] = (y[wrong] + 1) % C
    if labels in ("sparse", "trained", "sparse-top5"):
        return z, y
    t = np.zeros((rows, C), np.float32)
    t[np.arange(rows), y] = 1.0
    return z, t


_SOFTMAX_OPTS: dict = {}  # --smoothing / --probs: the softmax calls' other options


def call(mod, labels, z, lab, chunk=0):
    if chunk:  # a stream of engine calls, their states added as the Evaluator adds them
        part = call(mod, labels, z[:chunk], lab[:chunk])
        counts, exact = part.counts.copy(), part.exact.copy()
        for i in range(chunk, z.shape[0], chunk):
            part = call(mod, labels, z[i:i + chunk], lab[i:i + chunk])
            counts += part.counts
            exact += part.exact
        return part._replace(counts=counts, exact=exact)
    if labels == "multihot":
        return mod.sigmoid_xent(z, lab, SigmoidOptions())
    ks = (5,) if labels.endswith("top5") else ()
    return mod.softmax_xent(z, lab, SoftmaxOptions(dense=labels.startswith("onehot"), ks=ks,
                                                   **_SOFTMAX_OPTS))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", help="the git revision whose numba_cpu.py is the old engine")
    ap.add_argument("--workload", nargs="+", default=list(_MAIN), choices=list(WORKLOADS))
    ap.add_argument("--threads", nargs="+", type=int, default=[nb.config.NUMBA_NUM_THREADS])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--rows-div", type=int, default=1, help="divide the rows (quick runs)")
    ap.add_argument("--chunk", type=int, default=0, help="rows per call (0: one call)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                    help="the predictions' dtype")
    ap.add_argument("--smoothing", type=float, default=0.0,
                    help="softmax label smoothing (the kernels' sums path)")
    ap.add_argument("--probs", action="store_true",
                    help="softmax on probabilities (the rows' softmax) instead of logits")
    a = ap.parse_args(argv)
    _SOFTMAX_OPTS.update(label_smoothing=a.smoothing, from_logits=not a.probs)
    try:
        old = load_old(a.rev)
        rng = np.random.default_rng(0)
        for w in a.workload:
            rows, C, labels = WORKLOADS[w]
            z, lab = make(max(1, rows // a.rows_div), C, labels, rng)
            if a.probs and labels != "multihot":
                z = np.exp(z - z.max(axis=1, keepdims=True))
                z /= z.sum(axis=1, keepdims=True)
            z = z.astype(a.dtype, copy=False)
            po, pn = call(old, labels, z, lab, a.chunk), call(new, labels, z, lab, a.chunk)
            same = (f"same counts: {np.array_equal(po.counts, pn.counts)}, "
                    f"same loss bits: {np.array_equal(po.exact, pn.exact)}")
            for T in a.threads:
                nb.set_num_threads(T)
                ts = {"old": [], "new": []}
                for _ in range(a.repeat):
                    for name, mod in (("old", old), ("new", new)):
                        t0 = time.perf_counter()
                        call(mod, labels, z, lab, a.chunk)
                        ts[name].append(time.perf_counter() - t0)
                o, n = np.median(ts["old"]), np.median(ts["new"])
                by = f", {a.chunk:,}-row calls" if a.chunk else ""
                print(f"{w} ({z.shape[0]:,} x {C:,}{by}, {T} thread{'s' if T > 1 else ''}): "
                      f"old {o * 1e3:.1f} ms, new {n * 1e3:.1f} ms, old/new {o / n:.2f}x, "
                      f"{same}", flush=True)
    finally:
        for path in (_OLD, _OLD_MATH):
            if os.path.exists(path):
                os.remove(path)


if __name__ == "__main__":
    main()
