"""Time each fastxent compat function against the library function it replaces (CPU).

    KERAS_BACKEND=torch python scripts/bench_compat.py [--sizes 262144x1000,4194304x10]
        [--repeat 3] [--only keras|torch]

Inputs are torch CPU tensors (Keras runs on its torch backend; fastxent reads them zero-copy).
Each cell: median wall time of ``--repeat`` calls after one warm-up call, both libraries in the
same process on the same inputs. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _time(fn, repeat):
    fn()  # warm-up (JIT, caches, allocator)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _cases(N, C, which):
    import fastxent.functional as F
    import fastxent.keras as fk

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(N, C, generator=g)
    probs = torch.rand(N, C, generator=g) + 1e-3       # unnormalised; both renormalise
    ids = torch.randint(0, C, (N,), generator=g)
    onehot = torch.zeros(N, C)
    onehot[torch.arange(N), ids] = 1.0
    bin_t = (torch.rand(N, C, generator=g) > 0.5).float()
    sig = torch.sigmoid(logits)
    k = min(5, C)
    out = []
    if which in (None, "keras"):
        import keras

        L, M = keras.losses, keras.metrics
        out += [
            ("keras categorical_crossentropy", lambda: L.categorical_crossentropy(onehot, probs),
             lambda: fk.categorical_crossentropy(onehot, probs)),
            ("keras categorical_crossentropy(from_logits)",
             lambda: L.categorical_crossentropy(onehot, logits, from_logits=True),
             lambda: fk.categorical_crossentropy(onehot, logits, from_logits=True)),
            ("keras sparse_categorical_crossentropy",
             lambda: L.sparse_categorical_crossentropy(ids, probs),
             lambda: fk.sparse_categorical_crossentropy(ids, probs)),
            ("keras sparse_categorical_crossentropy(from_logits)",
             lambda: L.sparse_categorical_crossentropy(ids, logits, from_logits=True),
             lambda: fk.sparse_categorical_crossentropy(ids, logits, from_logits=True)),
            ("keras binary_crossentropy", lambda: L.binary_crossentropy(bin_t, sig),
             lambda: fk.binary_crossentropy(bin_t, sig)),
            ("keras categorical_accuracy", lambda: M.categorical_accuracy(onehot, logits),
             lambda: fk.categorical_accuracy(onehot, logits)),
            ("keras sparse_categorical_accuracy",
             lambda: M.sparse_categorical_accuracy(ids, logits),
             lambda: fk.sparse_categorical_accuracy(ids, logits)),
            ("keras binary_accuracy", lambda: M.binary_accuracy(bin_t, sig),
             lambda: fk.binary_accuracy(bin_t, sig)),
            (f"keras top_k_categorical_accuracy(k={k})",
             lambda: M.top_k_categorical_accuracy(onehot, logits, k=k),
             lambda: fk.top_k_categorical_accuracy(onehot, logits, k=k)),
            (f"keras sparse_top_k_categorical_accuracy(k={k})",
             lambda: M.sparse_top_k_categorical_accuracy(ids, logits, k=k),
             lambda: fk.sparse_top_k_categorical_accuracy(ids, logits, k=k)),
        ]
    if which in (None, "torch"):
        import torch.nn.functional as TF

        soft = torch.softmax(probs, dim=1)
        out += [
            ("torch cross_entropy (class ids)", lambda: TF.cross_entropy(logits, ids),
             lambda: F.cross_entropy(logits, ids)),
            ("torch cross_entropy (ids, label_smoothing=0.1)",
             lambda: TF.cross_entropy(logits, ids, label_smoothing=0.1),
             lambda: F.cross_entropy(logits, ids, label_smoothing=0.1)),
            ("torch cross_entropy (probabilities)", lambda: TF.cross_entropy(logits, soft),
             lambda: F.cross_entropy(logits, soft)),
            ("torch binary_cross_entropy_with_logits",
             lambda: TF.binary_cross_entropy_with_logits(logits, bin_t),
             lambda: F.binary_cross_entropy_with_logits(logits, bin_t)),
            ("torch binary_cross_entropy", lambda: TF.binary_cross_entropy(sig, bin_t),
             lambda: F.binary_cross_entropy(sig, bin_t)),
        ]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="262144x1000,4194304x10")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["keras", "torch"], default=None)
    a = ap.parse_args()
    import numba

    print(f"torch {torch.__version__}, threads: torch {torch.get_num_threads()}, "
          f"numba {numba.get_num_threads()}; median of {a.repeat} after 1 warm-up\n")
    print("| function | N x C | library (s) | fastxent (s) | speed-up |")
    print("|---|---|---:|---:|---:|")
    for size in a.sizes.split(","):
        N, C = (int(v) for v in size.lower().split("x"))
        for name, lib_fn, fx_fn in _cases(N, C, a.only):
            t_lib = _time(lib_fn, a.repeat)
            gc.collect()
            t_fx = _time(fx_fn, a.repeat)
            gc.collect()
            print(f"| {name} | {N:,} x {C:,} | {t_lib:.3f} | {t_fx:.3f} | "
                  f"{t_lib / t_fx:.1f}x |", flush=True)
        gc.collect()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
