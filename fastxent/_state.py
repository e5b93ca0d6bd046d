"""The partial state every engine produces: a few int64 counts and exact sums.

Why exact sums
--------------
Every sum across rows is accumulated *exactly*: each row contributes a float64 value (its
weighted loss, its sample weight, ...) and the engines add those values without rounding into a
wide fixed-point integer. Integer addition is associative, so the state, and therefore every
reported number, is independent of the thread count, of how rows were cut into batches or Dask
chunks, and of the order in which partial states are merged. Bitwise reproducibility comes by
construction, and the reduced loss is the correctly rounded quotient of two exact sums.

Canonical layout (shared by the CPU and CUDA engines)
-----------------------------------------------------
``counts``: int64 vector of length ``NCOUNTS + K`` (K = number of top-k values asked):

======== ===================================================================================
slot     meaning (over *counted* rows unless said otherwise)
======== ===================================================================================
ROWS     rows counted (not ignored)
SEEN     rows seen, ignored ones included
CAT      rows whose first argmax of the predictions is the label (dense: first argmax of t;
         sigmoid: counted over one-hot label rows only, for the one-hot-trap warning)
ELEM     elements with ``(pred > threshold) == (target > 0.5)`` (sigmoid, and softmax dense)
EXACT    rows whose every element is right in that element-wise sense
ONEHOT   rows (seen) whose dense labels are all 0/1 with exactly one 1
SUM1     rows (seen) whose dense labels sum to 1 within ``config.SUM_TO_ONE_TOL``
BINARY   rows (seen) whose dense labels are all exactly 0 or 1
NANLOSS  counted rows whose weighted loss is NaN (kept out of the exact loss sum)
POSINF   counted rows whose weighted loss is +inf
NEGINF   counted rows whose weighted loss is -inf
TOPK+j   rows whose label ranks within the top ``ks[j]``
======== ===================================================================================

``exact``: int64 matrix ``(NX + K, NLIMBS)``; row ``q`` holds the exact sum
``S_q = sum_j exact[q, j] * 2**(32*j - SCALE_BITS)``. Canonical form: limbs ``0..NLIMBS-2`` in
``[0, 2**32)``, the last limb signed (two's complement of the whole). ``SCALE_BITS = 1075``
makes every finite float64, subnormals included, an integer multiple of ``2**-SCALE_BITS``.

======== ===================================================================================
X_LOSS   sum of w_i * loss_i over counted rows with a finite weighted loss
X_W      sum of w_i (loss weights); only when ``weighted``
X_SW     sum of sample_weight_i; only when ``sample_weighted``
X_CAT    sum of sw_i * cat_correct_i; only when ``sample_weighted``
X_ELEM   sum of sw_i * elem_correct_i / C; only when ``sample_weighted``
X_EXACT  sum of sw_i * exact_i; only when ``sample_weighted``
X_TOPK+j sum of sw_i * hit_{k_j, i}; only when ``sample_weighted``
======== ===================================================================================

Engines may accumulate internally however they like (the CPU engine bins by exponent) as long
as they return this canonical form. Arrays live on the engine's device (NumPy or CuPy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["State", "STATE_VERSION"]

STATE_VERSION = 1

# counts slots
ROWS, SEEN, CAT, ELEM, EXACT, ONEHOT, SUM1, BINARY, NANLOSS, POSINF, NEGINF = range(11)
NCOUNTS = 11
TOPK = NCOUNTS  # TOPK + j

# exact-sum rows
X_LOSS, X_W, X_SW, X_CAT, X_ELEM, X_EXACT = range(6)
NX = 6
X_TOPK = NX

LIMB_BITS = 32
SCALE_BITS = 1075
NLIMBS = 68  # 68 * 32 = 2176 bits: 2**1024 * 2**64 rows fit with room to spare
_LIMB_MASK = (1 << LIMB_BITS) - 1


def limbs_to_int(row) -> int:
    """Exact integer ``S`` (value times ``2**SCALE_BITS``) of one canonical or raw limb row."""
    total = 0
    for j in row.nonzero()[0].tolist():  # not np.flatnonzero: 2.0 against 3.4 us a row
        total += int(row[j]) << (LIMB_BITS * j)
    return total


def int_to_limbs(value: int, out) -> None:
    """Write the canonical limbs of integer ``value`` into the int64 vector ``out``."""
    for j in range(NLIMBS - 1):
        out[j] = value & _LIMB_MASK
        value >>= LIMB_BITS
    if not (-(1 << 63) <= value < (1 << 63)):  # pragma: no cover - needs > 2**2100 rows
        raise OverflowError("fastxent exact accumulator overflow")
    out[NLIMBS - 1] = value


def ratio(num: int, den: int) -> float:
    """Correctly rounded ``num / den`` of two exact integers (NaN for 0/0, +-inf on overflow)."""
    if den == 0:
        return math.nan if num == 0 else math.copysign(math.inf, num)
    try:
        return num / den
    except OverflowError:
        return math.copysign(math.inf, num) * math.copysign(1, den)


@dataclass
class State:
    """Mergeable partial result of one or more kernel calls (see the module docstring)."""

    kind: str  # "softmax" or "sigmoid"
    task: str
    n_classes: int
    ks: tuple[int, ...] = ()
    weighted: bool = False
    sample_weighted: bool = False
    counts: Any = None
    exact: Any = None
    meta: dict = field(default_factory=dict)  # options that must agree to merge

    # -- construction -------------------------------------------------------------------
    @staticmethod
    def shapes(n_topk: int) -> tuple[tuple[int], tuple[int, int]]:
        return (NCOUNTS + n_topk,), (NX + n_topk, NLIMBS)

    @classmethod
    def zeros(cls, xp=np, **kw) -> State:
        cs, es = cls.shapes(len(kw.get("ks", ())))
        return cls(counts=xp.zeros(cs, dtype=xp.int64), exact=xp.zeros(es, dtype=xp.int64), **kw)

    # -- merging ------------------------------------------------------------------------
    def compatible(self, other: State) -> str | None:
        """``None`` when ``other`` can be merged into ``self``, else the reason."""
        for name in ("kind", "task", "n_classes", "ks", "weighted", "sample_weighted", "meta"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                return f"{name} differs ({a!r} vs {b!r})"
        return None

    def merged(self, other: State) -> State:
        """A new state holding the exact sum of both (on the host)."""
        why = self.compatible(other)
        if why is not None:
            raise ValueError(f"cannot merge evaluator states: {why}")
        a, b = self.to_host(), other.to_host()
        exact = np.zeros_like(a.exact)
        for q in range(exact.shape[0]):
            int_to_limbs(limbs_to_int(a.exact[q]) + limbs_to_int(b.exact[q]), exact[q])
        return replace(a, counts=a.counts + b.counts, exact=exact)

    def to_host(self) -> State:
        if isinstance(self.counts, np.ndarray):
            return self
        return replace(self, counts=self.counts.get(), exact=self.exact.get())

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (exact sums as decimal strings of the scaled integers)."""
        h = self.to_host()
        return {
            "version": STATE_VERSION,
            "kind": h.kind,
            "task": h.task,
            "n_classes": int(h.n_classes),
            "ks": list(h.ks),
            "weighted": bool(h.weighted),
            "sample_weighted": bool(h.sample_weighted),
            "meta": dict(h.meta),
            "counts": [int(c) for c in h.counts],
            "exact": [str(limbs_to_int(row)) for row in h.exact],
        }

    @classmethod
    def from_dict(cls, d: dict) -> State:
        if d.get("version") != STATE_VERSION:
            raise ValueError(
                f"state version {d.get('version')!r} is not supported (this fastxent writes "
                f"version {STATE_VERSION}); re-run the evaluation with matching versions"
            )
        ks = tuple(int(k) for k in d["ks"])
        st = cls.zeros(
            kind=d["kind"], task=d["task"], n_classes=int(d["n_classes"]), ks=ks,
            weighted=bool(d["weighted"]), sample_weighted=bool(d["sample_weighted"]),
            meta=dict(d.get("meta", {})),
        )
        if len(d["counts"]) != st.counts.shape[0] or len(d["exact"]) != st.exact.shape[0]:
            raise ValueError("corrupt state: counts/exact lengths do not match ks")
        st.counts[:] = np.asarray(d["counts"], dtype=np.int64)
        for q, s in enumerate(d["exact"]):
            int_to_limbs(int(s), st.exact[q])
        return st

    # -- results ------------------------------------------------------------------------
    def label_stats(self) -> dict:
        """Host ints describing the dense labels seen (for task detection)."""
        c = self.to_host().counts
        return {k: int(c[i]) for k, i in
                (("seen", SEEN), ("onehot", ONEHOT), ("sum1", SUM1), ("binary", BINARY))}

    def scalars(self) -> dict:
        """Reduced values as Python floats/ints, computed exactly on the host.

        Keys: count, loss_mean, loss_sum, cat, elem, exact, topk (list), with the accuracy-like
        values as fractions over counted rows (weighted by sample weights when given).
        """
        h = self.to_host()
        c, x = h.counts, h.exact
        n = int(c[ROWS])
        scale = 1 << SCALE_BITS
        s_loss = limbs_to_int(x[X_LOSS])
        nan, pinf, ninf = int(c[NANLOSS]), int(c[POSINF]), int(c[NEGINF])
        if nan or (pinf and ninf):
            loss_sum = math.nan
        elif pinf or ninf:
            loss_sum = math.inf if pinf else -math.inf
        else:
            loss_sum = ratio(s_loss, scale)
        if h.weighted:
            den_loss = limbs_to_int(x[X_W])
        else:
            den_loss = n * scale
        if math.isfinite(loss_sum):
            loss_mean = ratio(s_loss, den_loss)
        elif math.isnan(loss_sum) or den_loss == 0:
            loss_mean = math.nan
        else:
            loss_mean = loss_sum if den_loss > 0 else -loss_sum
        if n == 0:
            loss_mean = math.nan
        out = {"count": n, "loss_sum": loss_sum, "loss_mean": loss_mean}
        if h.sample_weighted:
            den = limbs_to_int(x[X_SW])
            frac = lambda q: ratio(limbs_to_int(x[q]), den) if n else math.nan  # noqa: E731
            out["cat"], out["elem"], out["exact"] = frac(X_CAT), frac(X_ELEM), frac(X_EXACT)
            out["topk"] = [frac(X_TOPK + j) for j in range(len(h.ks))]
        else:
            frac_c = lambda v, d=n: ratio(int(v), d) if n else math.nan  # noqa: E731
            out["cat"], out["exact"] = frac_c(c[CAT]), frac_c(c[EXACT])
            out["elem"] = frac_c(c[ELEM], n * max(h.n_classes, 1))
            out["topk"] = [frac_c(c[TOPK + j]) for j in range(len(h.ks))]
        return out
