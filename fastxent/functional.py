"""PyTorch drop-in: ``torch.nn.functional`` cross-entropy losses on fastxent's fused kernels.

Replace ``torch.nn.functional.X`` with ``fastxent.functional.X``::

    import fastxent.functional as F
    loss = F.cross_entropy(logits, target)              # same signature, same numbers

Every function runs one fused kernel call through :mod:`fastxent._core` (Numba on the CPU, CUDA
on a GPU: no per-device code here) and returns a value of the caller's library and of the
input's dtype (torch in -> torch out, NumPy in -> NumPy out), with PyTorch's conventions:

* ``cross_entropy``: class-index targets (any integer dtype) or class-probability targets (the
  input's shape, floating point). ``weight`` multiplies every class's term inside the row loss;
  ``reduction="mean"`` divides by the sum of the target classes' weights (class indices) or by
  the number of rows (probabilities); the label-smoothing term is weighted by all class weights;
  an all-ignored mean is NaN. ``ignore_index`` >= 0 with probability targets raises, as in
  PyTorch (negative values are accepted and have no effect there).
* ``binary_cross_entropy_with_logits`` / ``binary_cross_entropy``: element-wise losses;
  ``mean`` is over all elements, ``weight`` multiplies each element (not a weighted mean),
  ``pos_weight`` broadcasts on the last axis; ``binary_cross_entropy`` clamps each log at -100
  and raises for probabilities outside [0, 1].

The class axis is axis 1 for ``(N, C, d1, ...)`` inputs (PyTorch's layout): the input is viewed
with ``moveaxis(1, -1)`` (no copy; the engine reads the strided class axis in row blocks).

Deliberate differences from PyTorch (all raise instead of computing something):
negative or non-finite ``weight``/``pos_weight``; targets outside [0, 1] in the binary losses
(PyTorch only checks them in ``binary_cross_entropy``); negative or non-finite probability
targets in ``cross_entropy``; ``pos_weight`` shapes other than scalar or ``(C,)`` (optionally
with leading 1s); ``weight`` shapes that would broadcast the output beyond the input's shape.
Errors are ``ValueError``/``IndexError``/``TypeError`` where PyTorch raises ``RuntimeError``.
No autograd: results are detached values (use them for evaluation, not for ``backward``).
"""

from __future__ import annotations

import math

import numpy as np

from . import _core
from ._dispatch import dtype_name, engine_for, library, shape_of

__all__ = ["cross_entropy", "binary_cross_entropy_with_logits", "binary_cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")
_FLOATS = ("float16", "bfloat16", "float32", "float64")


# ----------------------------------------------------------------------------- helpers


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction!r} is not a valid value for reduction; "
                         f"use 'mean', 'sum' or 'none'")
    return reduction


def _to_caller(engine, arr, like):
    """Engine array -> the library of ``like``, in ``like``'s dtype (PyTorch returns the
    input's dtype). The cast happens in the caller's library, so bfloat16 works everywhere."""
    out = engine.wrap(arr, like)
    if library(like) == "torch":
        return out if out.dtype == like.dtype else out.to(like.dtype)
    want = getattr(like, "dtype", None)
    if want is not None and getattr(out, "dtype", want) != want:
        out = out.astype(want)
    return out


def _movedim_class_last(engine, x, ndim):
    """(N, C, d1, ...) -> (N, d1, ..., C) as a view of the engine's array (no copy)."""
    a = _core._asarray(engine, x)
    return engine.xp.moveaxis(a, 1, -1) if ndim >= 3 else a


def _reduced(run, reduction, then=None):
    """The run's reduced loss (an engine array), computed on the run's device and stream, with
    ``then(loss)`` (PyTorch's rescaling) applied there too."""
    eng = run.engine
    with eng.call_context(run.like):
        loss = eng.finalize(run.state, "sum" if reduction == "sum" else "mean")["loss"]
        return loss if then is None else then(loss)


# ----------------------------------------------------------------------------- cross_entropy


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """``torch.nn.functional.cross_entropy`` on the fused softmax kernel.

    Parameters
    ----------
    input : array (C,), (N, C) or (N, C, d1, ...), float16/bfloat16/float32/float64
        Unnormalised logits; the class axis is axis 1 (axis 0 for ``(C,)``).
    target : array
        Class indices of shape ``()``, ``(N,)`` or ``(N, d1, ...)`` (any integer dtype), or
        class probabilities of the input's shape (floating point).
    weight : array (C,), optional
        Per-class weights (PyTorch's convention: inside the row loss).
    ignore_index : int
        Class-index targets equal to it count nowhere (default -100). Probability targets:
        must be negative (PyTorch raises otherwise).
    reduction : {"mean", "sum", "none"}
    label_smoothing : float in [0, 1]

    Returns
    -------
    array of the caller's library and the input's dtype: 0-d for ``mean``/``sum``, the target's
    rows shape for ``none``.

    Examples
    --------
    >>> import numpy as np, fastxent.functional as F
    >>> x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], dtype=np.float32)
    >>> round(float(F.cross_entropy(x, np.array([0, 2]))), 4)
    1.4185
    """
    reduction = _check_reduction(reduction)
    x, t = _core._user_array(input), _core._user_array(target)
    xs, ts = shape_of(x), shape_of(t)
    if len(xs) == 0:
        raise ValueError("cross_entropy: input must have at least one dimension (C,)")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise ValueError(f"ignore_index must be an integer, got {ignore_index!r}")
    prob = ts == xs
    if prob:
        if dtype_name(t) not in _FLOATS:
            raise TypeError(
                f"cross_entropy: a target with the input's shape {xs} holds class "
                f"probabilities and must be floating point, got {dtype_name(t)} (PyTorch: "
                f"'Expected floating point type for target with class probabilities')")
        if ignore_index >= 0:
            raise ValueError(
                f"cross_entropy: ignore_index={ignore_index} is not supported for floating "
                f"point (class-probability) targets (PyTorch raises the same); drop those "
                f"rows instead")
        ign = None
    else:
        want = xs[:1] + xs[2:] if len(xs) >= 2 else ()
        if ts != want:
            raise ValueError(
                f"cross_entropy: target shape {ts} does not match input shape {xs}: expected "
                f"{want} (class indices) or {xs} (class probabilities)")
        ign = int(ignore_index)
    engine = engine_for(x, t, weight, names=("input", "target", "weight"))
    z = _movedim_class_last(engine, x, len(xs))
    y = _movedim_class_last(engine, t, len(ts)) if prob else t
    run = _core.softmax_run(
        z, y, from_logits=True, label_smoothing=label_smoothing, class_weight=weight,
        ignore_index=ign, cw_inside=True, want_rows=reduction == "none")
    if reduction == "none":
        out = run.partial.row_loss.reshape(run.rows_shape)
    else:
        out = _reduced(run, reduction)
    return _to_caller(engine, out, x)


# ----------------------------------------------------------------------------- binary losses


def _strip(shape):
    s = tuple(shape)
    while s and s[0] == 1:
        s = s[1:]
    return s


def _bce(x, t, weight, pos_weight, reduction, *, from_logits, name):
    reduction = _check_reduction(reduction)
    x, t = _core._user_array(x), _core._user_array(t)
    weight, pos_weight = _core._user_array(weight), _core._user_array(pos_weight)
    xs, ts = shape_of(x), shape_of(t)
    if ts != xs:
        raise ValueError(f"{name}: target size {ts} must be the same as input size {xs}")
    engine = engine_for(x, t, weight, pos_weight,
                        names=("input", "target", "weight", "pos_weight"))
    xp = engine.xp
    z = _core._asarray(engine, x)
    y = _core._asarray(engine, t)
    if not from_logits and z.size:
        # PyTorch: "all elements of input should be between 0 and 1" (NaN fails too)
        lo, hi = z.min(), z.max()
        if not (bool(lo >= 0) and bool(hi <= 1)):
            raise ValueError(f"{name}: all elements of input should be between 0 and 1 "
                             f"(got min {float(lo)!r}, max {float(hi)!r})")
    numel = math.prod(xs)
    C = xs[-1] if len(xs) >= 1 else 1
    N = numel // C if C else 0

    # weight: (C,)-like -> col_weight; (..., 1)-like over the rows -> sample_weight; else the
    # element-wise layout below
    col_w = row_w = None
    elem_w = None
    if weight is not None:
        ws = shape_of(weight)
        try:
            full = np.broadcast_shapes(ws, xs)
        except ValueError:
            raise ValueError(f"{name}: weight shape {ws} does not broadcast to the input "
                             f"shape {xs}") from None
        if full != xs:
            raise ValueError(f"{name}: weight shape {ws} would broadcast the loss to {full}, "
                             f"beyond the input shape {xs}; fastxent supports weights that "
                             f"broadcast to the input")
        w = _core._asarray(engine, weight)
        wp = (1,) * (len(xs) - len(ws)) + tuple(ws)
        if len(xs) >= 2 and all(d == 1 for d in wp[:-1]):
            col_w = xp.broadcast_to(xp.reshape(w, (-1,)), (C,))
        elif len(xs) >= 2 and wp[-1] == 1:
            row_w = xp.broadcast_to(xp.reshape(w, wp[:-1]), xs[:-1])
        else:
            elem_w = xp.broadcast_to(xp.reshape(w, wp), xs)
    pw = None
    if pos_weight is not None:
        ps = _strip(shape_of(pos_weight))
        if ps not in ((), (1,), (C,)):
            raise ValueError(
                f"{name}: pos_weight shape {shape_of(pos_weight)} is not supported; fastxent "
                f"broadcasts pos_weight on the last axis only: pass a scalar, (1,) or ({C},)")
        pw = xp.reshape(_core._asarray(engine, pos_weight), ps)

    natural = (reduction != "none" and elem_w is None and len(xs) >= 2)
    if natural:
        # rows x C: one launch, per-row means; PyTorch's element sum is C * the row sum
        run = _core.sigmoid_run(
            z, y, from_logits=from_logits, pos_weight=pw, sample_weight=row_w,
            col_weight=col_w, eps=0.0 if not from_logits else None,
            log_floor=-100.0 if not from_logits else -math.inf)
        out = _reduced(run, "sum", lambda s: s * C if reduction == "sum"
                       else (s / N if N else s * math.nan))
        return _to_caller(engine, out, x)

    # element-wise layout: (numel, 1), one row per element, per-element weights as sample
    # weights; a per-column pos_weight is folded in exactly:
    #   pw t sp(-z) + (1-t) sp(z) = s * [t' sp(-z) + (1-t') sp(z)],  s = pw t + 1 - t,
    #   t' = pw t / s   (binary targets: t' = t and s in {pw, 1}, exact)
    z1 = xp.reshape(z, (numel, 1))
    y1 = xp.reshape(y, (numel, 1))
    sw = None
    if elem_w is not None or row_w is not None or col_w is not None:
        w = elem_w if elem_w is not None else (
            xp.broadcast_to(xp.reshape(row_w, xs[:-1] + (1,)), xs) if row_w is not None
            else xp.broadcast_to(col_w, xs))
        sw = xp.reshape(w.astype(xp.float64), (numel,))
    pw_scalar = None
    if pw is not None:
        if pw.shape in ((), (1,)) and sw is None:
            pw_scalar = pw
        else:
            tf = y.astype(xp.float64)
            pwf = xp.broadcast_to(pw.astype(xp.float64), xs)
            s = pwf * tf + (1.0 - tf)
            with np.errstate(invalid="ignore", divide="ignore"):
                tprime = xp.where(s > 0, pwf * tf / xp.where(s > 0, s, 1.0), 0.0)
            y1 = xp.reshape(tprime.astype(xp.float64), (numel, 1))
            s1 = xp.reshape(s, (numel,))
            sw = s1 if sw is None else sw * s1
    run = _core.sigmoid_run(
        z1, y1, from_logits=from_logits, pos_weight=pw_scalar, sample_weight=sw,
        eps=0.0 if not from_logits else None,
        log_floor=-100.0 if not from_logits else -math.inf, want_rows=reduction == "none")
    if reduction == "none":
        out = run.partial.row_loss.reshape(xs)
    else:
        out = _reduced(run, "sum", lambda s: s if reduction == "sum"
                       else (s / numel if numel else s * math.nan))
    return _to_caller(engine, out, x)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None):
    """``torch.nn.functional.binary_cross_entropy_with_logits`` on the fused sigmoid kernel.

    Element loss ``pw * t * softplus(-x) + (1 - t) * softplus(x)``, times ``weight``.

    Parameters
    ----------
    input, target : arrays of one shape (targets in [0, 1]; float, bool or integer)
    weight : array broadcastable to the input's shape, optional
        ``(C,)``/``(1, C)`` runs as a per-column weight and ``(N, 1)``/``(..., 1)`` as a row
        weight in the natural ``rows x C`` launch; any other shape (and ``reduction="none"``)
        runs the element-wise layout (one kernel row per element).
    reduction : {"mean", "sum", "none"}
        ``mean`` is over all elements (weights are not a weighted mean).
    pos_weight : scalar, (1,) or (C,) array, optional
        Multiplies the positive term, broadcast on the last axis.
    """
    return _bce(input, target, weight, pos_weight, reduction, from_logits=True,
                name="binary_cross_entropy_with_logits")


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """``torch.nn.functional.binary_cross_entropy`` on the fused sigmoid kernel.

    Element loss ``-(t * max(log p, -100) + (1 - t) * max(log(1 - p), -100))`` (no epsilon
    clipping, as PyTorch), times ``weight``. Raises ``ValueError`` for probabilities outside
    [0, 1] or NaN (one min/max pass over the input), like PyTorch.
    """
    return _bce(input, target, weight, None, reduction, from_logits=False,
                name="binary_cross_entropy")
