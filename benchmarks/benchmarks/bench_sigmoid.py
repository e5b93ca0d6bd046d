"""Sigmoid (binary / multilabel) cross-entropy + accuracy (``fx.sigmoid_cross_entropy``).

Params: backend x workload (E_bce) x dtype x labels (``multihot``: (N, C) targets;
``binary``: the same numbers as one output column, (N*C,)).
"""

from __future__ import annotations

import functools

from .common import (
    BACKENDS,
    DTYPES,
    PARAM_NAMES,
    SIGMOID_LABELS,
    SIGMOID_WORKLOADS,
    Benchmark,
    check_params,
    fastxent,
    inputs,
)


class SigmoidCrossEntropy(Benchmark):
    params = [BACKENDS, SIGMOID_WORKLOADS, DTYPES, SIGMOID_LABELS]
    param_names = PARAM_NAMES

    def setup(self, backend, workload, dtype, labels):
        self.be = check_params(backend, workload, dtype, labels)
        fx = fastxent()
        z, t = inputs(backend, workload, dtype, labels)
        self.call = functools.partial(fx.sigmoid_cross_entropy, z, t)
        self.call()
        self.be.synchronize()

    def time_loss_acc(self, *params):
        self.call()
        self.be.synchronize()

    def peakmem_loss_acc(self, *params):
        self.call()
        self.be.synchronize()


class SigmoidOptions(Benchmark):
    """Each option's cost on E_bce multihot."""

    params = [BACKENDS, ["plain", "validate=False", "pos_weight", "sample_weight", "threshold",
                         "from_logits=False", "reduction=none"]]
    param_names = ["backend", "option"]

    def setup(self, backend, option):
        self.be = check_params(backend, "E_bce", "float32", "multihot")
        fx = fastxent()
        xp = self.be.xp
        z, t = inputs(backend, "E_bce", "float32", "multihot")
        n, c = z.shape
        kw = {
            "plain": {},
            "validate=False": {"validate": False},
            "pos_weight": {"pos_weight": xp.linspace(0.5, 2.0, c, dtype=xp.float32)},
            "sample_weight": {"sample_weight": xp.linspace(0.5, 2.0, n, dtype=xp.float32)},
            "threshold": {"threshold": 0.7},
            "from_logits=False": {"from_logits": False},
            "reduction=none": {"reduction": "none"},
        }[option]
        if option == "from_logits=False":
            z = 1 / (1 + xp.exp(-z))
        self.call = functools.partial(fx.sigmoid_cross_entropy, z, t, **kw)
        self.call()
        self.be.synchronize()

    def time_loss_acc(self, backend, option):
        self.call()
        self.be.synchronize()
