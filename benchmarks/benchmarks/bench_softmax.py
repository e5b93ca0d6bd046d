"""Softmax cross-entropy + accuracy (``fx.softmax_cross_entropy``, ``fx.evaluate``).

Params: backend x workload x dtype x labels (BENCHMARKS.md's names). ``time_loss_acc`` is the
whole job a user runs (loss and accuracy in one call); ``peakmem_loss_acc`` the host RSS.
GPU device memory is ``bench_overhead.GpuPeakMemory.track_gpu_peak_bytes``.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from .common import (
    BACKENDS,
    DTYPES,
    PARAM_NAMES,
    SOFTMAX_LABELS,
    SOFTMAX_WORKLOADS,
    Benchmark,
    check_params,
    fastxent,
    host_inputs,
    inputs,
)


class SoftmaxCrossEntropy(Benchmark):
    params = [BACKENDS, SOFTMAX_WORKLOADS, DTYPES, SOFTMAX_LABELS]
    param_names = PARAM_NAMES

    def setup(self, backend, workload, dtype, labels):
        self.be = check_params(backend, workload, dtype, labels)
        fx = fastxent()
        z, lab = inputs(backend, workload, dtype, labels)
        top = (1, 5) if labels == "top5" else None
        self.call = functools.partial(fx.softmax_cross_entropy, z, lab, top_k=top)
        m = self.call()              # warm-up: JIT / NVRTC compile excluded from the timing
        assert isinstance(m, fx.Metrics)
        self.be.synchronize()

    def time_loss_acc(self, *params):
        self.call()
        self.be.synchronize()

    def peakmem_loss_acc(self, *params):
        self.call()
        self.be.synchronize()


class SoftmaxOptions(Benchmark):
    """Each option's cost on B_256kx1000 (the generic kernels) and A_4Mx10 (the tile
    kernels) with sparse labels (plain = the reference line)."""

    params = [BACKENDS, ["B_256kx1000", "A_4Mx10"],
              ["plain", "validate=False", "ignore_index", "class_weight", "sample_weight",
               "label_smoothing", "top_k=5", "from_logits=False", "reduction=none"]]
    param_names = ["backend", "workload", "option"]

    def setup(self, backend, workload, option):
        self.be = check_params(backend, workload, "float32", "sparse")
        fx = fastxent()
        xp = self.be.xp
        z, y = inputs(backend, workload, "float32", "sparse")
        n, c = z.shape
        kw = {
            "plain": {},
            "validate=False": {"validate": False},
            "ignore_index": {"ignore_index": 0},
            "class_weight": {"class_weight": xp.linspace(0.5, 2.0, c, dtype=xp.float32)},
            "sample_weight": {"sample_weight": xp.linspace(0.5, 2.0, n, dtype=xp.float32)},
            "label_smoothing": {"label_smoothing": 0.1},
            "top_k=5": {"top_k": 5},
            "from_logits=False": {"from_logits": False},
            "reduction=none": {"reduction": "none"},
        }[option]
        if option == "from_logits=False":   # probabilities: a softmax of the same logits
            zh, _ = host_inputs(workload, "sparse")
            p = np.exp(zh - zh.max(1, keepdims=True))   # new arrays: the cache is untouched
            p /= p.sum(1, keepdims=True)
            z = self.be.asarray(p)
        self.call = functools.partial(fx.softmax_cross_entropy, z, y, **kw)
        self.call()
        self.be.synchronize()

    def time_loss_acc(self, backend, workload, option):
        self.call()
        self.be.synchronize()


class Evaluate(Benchmark):
    """``fx.evaluate``: task detection on top of the kernels.

    ``auto`` on dense labels checks that the rows sum to 1 (one extra pass over the labels);
    ``mismatch`` asks ``task="multilabel"`` on one-hot rows and pays for the second accuracy
    that the ``fx.TaskMismatchWarning`` reports.
    """

    params = [BACKENDS, ["A_4Mx10", "D_dense", "E_bce"], ["auto", "explicit", "mismatch"]]
    param_names = ["backend", "workload", "task"]

    def setup(self, backend, workload, task):
        labels = {"E_bce": "multihot", "D_dense": "onehot"}.get(workload, "sparse")
        self.be = check_params(backend, workload, "float32", labels)
        if task == "mismatch" and workload != "D_dense":
            raise NotImplementedError("the mismatch case needs one-hot rows (D_dense)")
        fx = self.fx = fastxent()
        z, lab = inputs(backend, workload, "float32", labels)
        explicit = "multilabel" if workload == "E_bce" else "multiclass"
        t = {"auto": "auto", "explicit": explicit, "mismatch": "multilabel"}[task]
        self.call = functools.partial(fx.evaluate, z, lab, task=t)
        self.time_evaluate(backend, workload, task)

    def time_evaluate(self, backend, workload, task):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", self.fx.TaskMismatchWarning)
            self.call()
        self.be.synchronize()


class CpuFloat64(Benchmark):
    """Float64 predictions on the CPU (what scikit-learn's ``predict_proba`` and
    ``decision_function`` return): logits and probabilities, softmax on B_256kx1000 (sparse
    labels) and sigmoid on E_bce (multi-hot). The kernels' float64 exp and log are their own
    vectorisable polynomials, not libm calls (README, "What bounds the CPU kernels")."""

    params = [["B_256kx1000", "E_bce"], ["logits", "probabilities"]]
    param_names = ["workload", "predictions"]

    def setup(self, workload, predictions):
        labels = "multihot" if workload == "E_bce" else "sparse"
        self.be = check_params("numba", workload, "float32", labels)
        fx = fastxent()
        zh, lab = host_inputs(workload, labels)
        z = zh.astype(np.float64)                    # a new array: the cache is untouched
        if predictions == "probabilities":
            if labels == "sparse":
                z = np.exp(z - z.max(1, keepdims=True))
                z /= z.sum(1, keepdims=True)
            else:
                z = 1.0 / (1.0 + np.exp(-z))
        f = fx.softmax_cross_entropy if labels == "sparse" else fx.sigmoid_cross_entropy
        self.call = functools.partial(f, z, lab, from_logits=predictions == "logits")
        self.call()

    def time_loss_acc(self, workload, predictions):
        self.call()
