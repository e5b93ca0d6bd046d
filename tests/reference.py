"""Naive float64 reference implementations of fastxent's losses and accuracies.

Written from ``shared/SPEC.md`` and the "Semantics" section of README.md, importing nothing from
fastxent. Clarity over speed: every row is handled on its own, in float64, with plain NumPy.
Inputs in float16 / bfloat16 / float32 are widened *exactly* to float64 first, so the reference
of a low-precision input is the exact answer for the rounded values the implementation sees.

Both functions return a plain dict::

    loss            float (mean/sum) or float64 array of the rows' shape (reduction="none")
    accuracy        float (NaN when no row counted)
    top_k_accuracy  {k: float}
    exact_match     float (sigmoid) or None (softmax)
    count           int
    correct         bool array of the rows' shape (reduction="none"), else None
    task            "multiclass" / "binary" / "multilabel"

Accuracy-like values are computed from exact sums (``fractions.Fraction``) and rounded once, so
they can be compared with ``==`` against an implementation that divides exact counts.
"""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np

__all__ = [
    "widen",
    "compute_dtype",
    "eps_for",
    "as_ks",
    "topk_rank",
    "ref_softmax",
    "ref_sigmoid",
]

BF16 = np.dtype(ml_dtypes.bfloat16)


def widen(x) -> np.ndarray:
    """``x`` as a float64 array (exact for every float16/bfloat16/float32/int/bool input)."""
    a = np.asarray(x)
    if a.dtype == BF16:
        return a.astype(np.float32).astype(np.float64)  # bf16 -> f32 is exact
    return a.astype(np.float64)


def compute_dtype(dtype) -> np.dtype:
    """float64 for float64 predictions, float32 for every narrower float."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def eps_for(dtype) -> float:
    """The probability clip ``eps = finfo(compute dtype).eps`` as a Python float."""
    return float(np.finfo(compute_dtype(dtype)).eps)


def as_ks(top_k) -> tuple[int, ...]:
    if top_k is None:
        return ()
    if isinstance(top_k, (int, np.integer)):
        return (int(top_k),)
    return tuple(dict.fromkeys(int(k) for k in top_k))  # de-duplicated, order kept


def topk_rank(row: np.ndarray, y: int) -> int:
    """Rank of class ``y`` by (score descending, index ascending): 0 is the top class."""
    zy = row[y]
    return int(np.count_nonzero(row > zy) + np.count_nonzero(row[:y] == zy))


def _ratio(num: Fraction, den: Fraction) -> float:
    """Correctly rounded num/den; NaN for a zero denominator."""
    if den == 0:
        return float("nan")
    return float(Fraction(num) / Fraction(den))


def _reduce_loss(weighted_losses: list[float], weights: list[float], reduction: str) -> float:
    """mean = sum(w * l) / sum(w); sum = sum(w * l); both over counted rows."""
    wl = np.asarray(weighted_losses, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        total = float(np.sum(wl)) if wl.size else 0.0
        if reduction == "sum":
            return total
        if wl.size == 0:
            return float("nan")
        den = float(np.sum(w))
        if den == 0.0:
            return float("nan")
        return total / den


def _row_weight_product(w: float, loss: float) -> float:
    with np.errstate(invalid="ignore", over="ignore"):
        return float(np.float64(w) * np.float64(loss))


# --------------------------------------------------------------------------------------------
# softmax cross-entropy
# --------------------------------------------------------------------------------------------


def ref_softmax(
    logits,
    labels,
    *,
    from_logits=True,
    label_smoothing=0.0,
    class_weight=None,
    sample_weight=None,
    ignore_index=None,
    top_k=None,
    reduction="mean",
):
    """Softmax cross-entropy, argmax accuracy and top-k accuracy of ``logits`` vs ``labels``.

    ``labels`` of shape ``logits.shape[:-1]`` are class ids ("sparse"); labels of the logits'
    shape are per-class targets ("dense").
    """
    z_in = np.asarray(logits)
    lab_in = np.asarray(labels)
    C = z_in.shape[-1]
    row_shape = z_in.shape[:-1]
    n = int(np.prod(row_shape, dtype=np.int64))
    z = widen(z_in).reshape(n, C)
    dense = lab_in.shape == z_in.shape
    if dense:
        t_all = widen(lab_in).reshape(n, C)
    else:
        assert lab_in.shape == row_shape, (lab_in.shape, z_in.shape)
        y_all = lab_in.reshape(n)
    eps = eps_for(z_in.dtype)
    ls = float(label_smoothing)
    ks = as_ks(top_k)
    cw = None if class_weight is None else widen(class_weight).reshape(C)
    sw = None if sample_weight is None else widen(sample_weight).reshape(n)

    per_row_loss = np.zeros(n, dtype=np.float64)
    per_row_correct = np.zeros(n, dtype=bool)
    weighted_losses, loss_weights = [], []
    acc_num, acc_den = Fraction(0), Fraction(0)
    topk_num = {k: Fraction(0) for k in ks}
    count = 0

    for i in range(n):
        row = z[i]
        if dense:
            t = t_all[i]
            y = int(np.argmax(t))  # first maximal label
        else:
            y = int(y_all[i])
            if ignore_index is not None and y == int(ignore_index):
                continue
            t = np.zeros(C, dtype=np.float64)
            t[y] = 1.0
        count += 1
        s_w = 1.0 if sw is None else float(sw[i])

        # loss weight
        if cw is None:
            w = s_w
        elif dense:
            w = s_w * float(np.sum(t * cw))
        else:
            w = s_w * float(cw[y])

        # smoothed target; classes with target exactly 0 contribute exactly 0
        t_s = (1.0 - ls) * t + ls / C
        nz = t_s != 0.0
        has_nan = bool(np.isnan(row).any())
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            if has_nan:
                loss = float("nan")
            elif from_logits:
                m = np.max(row)
                log_s = np.log(np.sum(np.exp(row - m)))  # NaN when m is +-inf
                # lse - z_c = (m - z_c) + log(sum exp(z - m)), no cancellation for big offsets
                terms = t_s[nz] * ((m - row[nz]) + log_s)
                loss = float(np.sum(terms))
            else:
                logp = np.log(np.clip(row[nz], eps, 1.0 - eps))
                loss = float(-np.sum(t_s[nz] * logp))

        correct = (not has_nan) and int(np.argmax(row)) == y
        per_row_correct[i] = correct
        wl = _row_weight_product(w, loss)
        per_row_loss[i] = wl
        weighted_losses.append(wl)
        loss_weights.append(w)
        acc_num += Fraction(s_w) * int(correct)
        acc_den += Fraction(s_w)
        for k in ks:
            hit = (not has_nan) and topk_rank(row, y) < k
            topk_num[k] += Fraction(s_w) * int(hit)

    out = {
        "count": count,
        "accuracy": _ratio(acc_num, acc_den) if count else float("nan"),
        "top_k_accuracy": {
            k: (_ratio(topk_num[k], acc_den) if count else float("nan")) for k in ks
        },
        "exact_match": None,
        "task": "multiclass",
        "correct": None,
    }
    if reduction == "none":
        out["loss"] = per_row_loss.reshape(row_shape)
        out["correct"] = per_row_correct.reshape(row_shape)
    else:
        out["loss"] = _reduce_loss(weighted_losses, loss_weights, reduction)
    return out


# --------------------------------------------------------------------------------------------
# sigmoid (binary / multilabel) cross-entropy
# --------------------------------------------------------------------------------------------


def _threshold_logit(threshold: float) -> float:
    thr = float(threshold)
    with np.errstate(divide="ignore"):
        return float(np.log(np.float64(thr) / np.float64(1.0 - thr)))


def ref_sigmoid(
    logits,
    targets,
    *,
    from_logits=True,
    threshold=0.5,
    pos_weight=None,
    label_smoothing=0.0,
    sample_weight=None,
    reduction="mean",
):
    """Sigmoid cross-entropy (mean over each row's labels), element-wise accuracy, exact match.

    Binary input: logits of shape ``(N,)`` (or ``(N, 1)``) are N rows of one label each.
    """
    z_in = np.asarray(logits)
    t_in = np.asarray(targets)
    assert t_in.shape == z_in.shape, (t_in.shape, z_in.shape)
    if z_in.ndim == 1:
        C = 1
        row_shape = z_in.shape
    else:
        C = z_in.shape[-1]
        row_shape = z_in.shape[:-1]
    n = int(np.prod(row_shape, dtype=np.int64))
    z = widen(z_in).reshape(n, C)
    t = widen(t_in).reshape(n, C)
    eps = eps_for(z_in.dtype)
    ls = float(label_smoothing)
    pw = None if pos_weight is None else widen(pos_weight).reshape(C)
    sw = None if sample_weight is None else widen(sample_weight).reshape(n)
    thr_logit = _threshold_logit(threshold)

    per_row_loss = np.zeros(n, dtype=np.float64)
    per_row_correct = np.zeros(n, dtype=bool)
    weighted_losses, loss_weights = [], []
    elem_num, exact_num, den = Fraction(0), Fraction(0), Fraction(0)

    for i in range(n):
        zi, ti = z[i], t[i]
        ts = (1.0 - ls) * ti + ls / 2.0
        s_w = 1.0 if sw is None else float(sw[i])
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            if from_logits:
                soft = np.log1p(np.exp(-np.abs(zi)))
                if pw is None:
                    elem = np.maximum(zi, 0.0) - zi * ts + soft
                else:
                    log_sig = -(soft + np.maximum(-zi, 0.0))
                    log_one_minus = -(soft + np.maximum(zi, 0.0))
                    elem = -(pw * ts * log_sig + (1.0 - ts) * log_one_minus)
                pred = zi > thr_logit
            else:
                p = np.clip(zi, eps, 1.0 - eps)
                pos = 1.0 if pw is None else pw
                elem = -(pos * ts * np.log(p) + (1.0 - ts) * np.log(1.0 - p))
                pred = zi > float(threshold)
            loss = float(np.sum(elem) / C)
        right = (pred == (ti > 0.5)) & ~np.isnan(zi)
        n_right = int(np.count_nonzero(right))
        row_ok = n_right == C
        per_row_correct[i] = row_ok
        wl = _row_weight_product(s_w, loss)
        per_row_loss[i] = wl
        weighted_losses.append(wl)
        loss_weights.append(s_w)
        elem_num += Fraction(s_w) * n_right
        exact_num += Fraction(s_w) * int(row_ok)
        den += Fraction(s_w)

    out = {
        "count": n,
        "accuracy": _ratio(elem_num, den * C) if n else float("nan"),
        "exact_match": _ratio(exact_num, den) if n else float("nan"),
        "top_k_accuracy": {},
        "task": "binary" if C == 1 else "multilabel",
        "correct": None,
    }
    if reduction == "none":
        out["loss"] = per_row_loss.reshape(row_shape)
        out["correct"] = per_row_correct.reshape(row_shape)
    else:
        out["loss"] = _reduce_loss(weighted_losses, loss_weights, reduction)
    return out
