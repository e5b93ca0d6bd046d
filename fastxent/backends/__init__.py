"""Engines (backends) and the one interface they share.

Every engine module exports the same two launchers::

    softmax_xent(logits, labels, opts: SoftmaxOptions) -> Partial
    sigmoid_xent(logits, targets, opts: SigmoidOptions) -> Partial

``logits`` is a 2-D ``(N, C)`` array of the engine's library (NumPy for ``numba_cpu``, CuPy
for ``cupy_cuda``), dtype float16, bfloat16, float32 or float64, with any strides (the engine
handles layout). ``labels`` is a 1-D integer ``(N,)`` array of class ids, or a 2-D ``(N, C)``
dense array (float16/bfloat16/float32/float64/bool) for ``opts.dense``; sigmoid ``targets``
are always 2-D dense. The API layer has validated shapes, dtypes and options; the engine only
computes. It never raises on label *values*: it records the first bad row in
``Partial.first_bad`` and makes that row's loss NaN.

Per-row semantics are written once, in ``tests/reference.py`` (the float64 oracle) and in the
docstrings of :mod:`fastxent.backends.numba_cpu`; the CUDA engine must match them.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["SoftmaxOptions", "SigmoidOptions", "Partial", "get_backend", "BACKENDS"]


@dataclass(frozen=True)
class SoftmaxOptions:
    """Everything a softmax launcher needs besides the arrays.

    dense : labels are (N, C) distributions instead of (N,) ids.
    from_logits : predictions are logits (else probabilities, used as given).
    label_smoothing : ``t' = (1 - ls) * t + ls / C``.
    eps : probabilities are clipped to ``[eps, 1 - eps]`` before the log (``from_logits=False``).
    renormalize : Keras: divide probabilities by their row sum before clipping.
    class_weight : float64 (C,) on the engine's device, or None.
    cw_inside : PyTorch convention: class weights multiply every class's term inside the row
        loss (``-sum_c cw_c t'_c log p_c``) and the loss denominator is ``sw_i * cw[y_i]``
        (sparse) or ``sw_i`` (dense). Default (False): the row weight is
        ``w_i = sw_i * cw[y_i]`` (dense: ``sw_i * sum_c t_c cw_c``) applied to the whole row.
    sample_weight : float64 (N,) on the engine's device, or None.
    ignore_index : int or None (sparse only).
    ks : the top-k values asked (each 1 <= k <= C).
    topk_any_tie : Keras ``in_top_k``: hit iff fewer than k classes score strictly higher
        (a tie at the k-th score counts); default ranks by (score desc, index asc).
    thr : element-wise threshold in the compute dtype for the dense "binary accuracy" side
        count (ELEM/EXACT): predicted positive iff ``x > thr`` where x is the logit (or the
        probability when not from_logits). Already rounded down to the compute dtype.
    want_rows : also return per-row loss / correct / top-k hits.
    """

    dense: bool = False
    from_logits: bool = True
    label_smoothing: float = 0.0
    eps: float = 1.1920928955078125e-07
    renormalize: bool = False
    class_weight: Any = None
    cw_inside: bool = False
    sample_weight: Any = None
    ignore_index: int | None = None
    ks: tuple[int, ...] = ()
    topk_any_tie: bool = False
    thr: float = 0.0
    want_rows: bool = False


@dataclass(frozen=True)
class SigmoidOptions:
    """Everything a sigmoid launcher needs besides the arrays.

    from_logits : predictions are logits (else probabilities).
    label_smoothing : ``t' = (1 - ls) * t + ls / 2``.
    eps : probabilities clipped to ``[eps, 1 - eps]`` (``from_logits=False``); 0 disables.
    log_floor : each log term is floored here (PyTorch ``binary_cross_entropy``: -100);
        ``-inf`` disables.
    pos_weight : float64 (C,) multiplying the positive term, or None.
    col_weight : float64 (C,) multiplying each element's loss, or None.
    sample_weight : float64 (N,) or None; row weight for the loss mean and the accuracies.
    thr : predicted positive iff ``x > thr`` (x logit or probability, thr rounded down to the
        compute dtype); targets positive iff ``t > 0.5``.
    want_rows : also return per-row loss / exact-match / element accuracy.
    want_cat : also count rows whose first argmax of z equals the first argmax of t (CAT), for
        the task-mismatch warning.
    """

    from_logits: bool = True
    label_smoothing: float = 0.0
    eps: float = 1.1920928955078125e-07
    log_floor: float = float("-inf")
    pos_weight: Any = None
    col_weight: Any = None
    sample_weight: Any = None
    thr: float = 0.0
    want_rows: bool = False
    want_cat: bool = False


class Partial(NamedTuple):
    """What a launcher returns; arrays live on the engine's device.

    counts, exact : the canonical state arrays (see :mod:`fastxent._state`).
    row_loss : (N,) weighted per-row loss (compute dtype) or None; ignored rows hold 0.
    row_correct : (N,) bool: softmax CAT-correct, sigmoid exact-match; or None.
    row_elem : (N,) compute dtype: share of correct elements (sigmoid) or None.
    row_hits : (N, K) bool top-k hits or None.
    first_bad : int (CPU) or 0-d int64 device array (GPU): first row with a bad label, -1 if none.
    """

    counts: Any
    exact: Any
    row_loss: Any = None
    row_correct: Any = None
    row_elem: Any = None
    row_hits: Any = None
    first_bad: Any = -1


# name -> module path; loaded on first use so that `import fastxent` stays light.
BACKENDS = {
    "numba": "fastxent.backends.numba_cpu",
    "cuda": "fastxent.backends.cupy_cuda",
}


def get_backend(name: str):
    """Import and return the engine module ``name`` (``"numba"`` or ``"cuda"``)."""
    mod = sys.modules.get(BACKENDS.get(name, ""))  # already imported: skip importlib (~5 us)
    if mod is not None:
        return mod
    try:
        path = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    return importlib.import_module(path)
