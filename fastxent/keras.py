"""Keras 3 drop-in: ``keras.losses`` / ``keras.metrics`` functions on fastxent's fused kernels.

Replace ``keras.losses.X`` (or ``keras.metrics.X``) with ``fastxent.keras.X``::

    import fastxent.keras as fk
    per_sample = fk.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)

Same argument names, defaults and per-sample return shapes as Keras 3, and Keras's numbers:
``from_logits=False`` by default; probabilities are divided by their sum over the class axis and
clipped to ``[1e-7, 1 - 1e-7]`` (Keras's default ``keras.config.epsilon()``, hard-coded here so
that importing this module never imports Keras); ``label_smoothing`` (binary: towards 0.5);
``ignore_class``; ``axis``; ``in_top_k``'s tie rule (a class tied with the k-th score is a
hit); ``binary_accuracy``'s strict ``>``. Losses come back in ``y_pred``'s dtype and library,
accuracies as float32 (Keras's ``floatx``) in ``y_pred``'s library. NumPy, torch, CuPy and JAX
inputs run through :mod:`fastxent._core` on the engine that holds them (no per-device code).

``axis`` other than the last is handled with a ``moveaxis`` view (no copy; the engine reads
the strided class axis in row blocks).

Deliberate differences from Keras (documented, all rare):

* Bad labels raise instead of computing: dense labels that are negative or non-finite in the
  categorical losses, binary targets outside [0, 1]. Out-of-range ids in
  ``sparse_categorical_crossentropy`` raise ``IndexError`` as in Keras; in the accuracies they
  are misses (0.0), as in ``keras.ops.in_top_k``'s own docstring example (Keras's torch backend
  reads out of bounds there, or wraps ``-1`` to the last class).
* ``k > C`` in the top-k accuracies raises ``ValueError`` (torch raises ``RuntimeError``).
* A class whose target weight is exactly 0 contributes 0 to the loss, even when its logit is
  ``-inf`` (Keras: ``0 * -inf = NaN``).
* ``sparse_categorical_crossentropy(..., ignore_class=...)`` returns 0 for ignored entries as
  Keras does, but cannot attach Keras's mask to the result; reduce with
  ``sum(loss) / count(valid)`` yourself.
* ``categorical_accuracy`` / ``top_k_categorical_accuracy`` need ``y_true`` of ``y_pred``'s
  shape.
* ``binary_accuracy`` (element-wise result in Keras 3: nothing to reduce) and
  ``sparse_top_k_categorical_accuracy(from_sorted_ids=True)`` (no scores to read) are small
  element-wise array expressions in the caller's array module, not kernel calls.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from . import _core
from ._dispatch import dtype_name, engine_for, library, shape_of

__all__ = [
    "categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy",
    "categorical_accuracy", "sparse_categorical_accuracy", "binary_accuracy",
    "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy",
]

# keras.config.epsilon() default (keras/src/backend/config.py: _EPSILON = 1e-7). Hard-coded so
# that `import fastxent.keras` does not import Keras; a changed keras.config.epsilon() is not
# followed.
EPSILON = 1e-7

_FLOATS = ("float16", "bfloat16", "float32", "float64")


# ----------------------------------------------------------------------------- helpers


def _same_shape_pair(y_true, y_pred):
    """(y_pred, y_true, shape) for the dense losses, which need both of one shape (Keras's
    message)."""
    yp, yt = _pred(y_pred), _core._user_array(y_true)
    ps, ts = shape_of(yp), shape_of(yt)
    if ts != ps:
        raise ValueError(f"Arguments `target` and `output` must have the same shape. "
                         f"Received: target.shape={ts}, output.shape={ps}")
    return yp, yt, ps


def _pred(y):
    """Keras converts Python lists/scalars to floatx (float32); arrays keep their dtype."""
    if y is None or (hasattr(y, "shape") and hasattr(y, "dtype")):
        return y
    return np.asarray(y, dtype=np.float32)


def _axis(axis, ndim):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"`axis` must be of type `int`. Received: axis={axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of bounds for an array of dimension {ndim}")
    return int(axis) % ndim


def _out(engine, arr, like, dtype=None):
    """Engine array -> ``like``'s library; dtype ``like.dtype`` (losses) or ``dtype``."""
    out = engine.wrap(arr, like)
    if library(like) == "torch":
        import torch

        want = like.dtype if dtype is None else getattr(torch, dtype)
        return out if out.dtype == want else out.to(want)
    want = like.dtype if dtype is None else np.dtype(dtype)
    if getattr(out, "dtype", want) != want:
        out = out.astype(want)
    return out


def _int_ids(engine, y, exact):
    """Class ids as an integer engine array. Float ids: ``exact`` (accuracies, where Keras
    compares by value) maps non-integral values to -1 (never equal to an argmax); otherwise
    truncate toward zero like torch's ``.long()``."""
    a = _core._asarray(engine, y)
    name = dtype_name(a)
    xp = engine.xp
    if name.startswith(("int", "uint")):
        return a
    if name == "bool":
        return a.astype(xp.int64)
    f = a.astype(xp.float64)
    with np.errstate(invalid="ignore"):
        ok = xp.isfinite(f)
        i = xp.where(ok, f, 0.0).astype(xp.int64)
        if exact:
            i = xp.where(ok & (i == f), i, -1)
    return i


def _nan_rows(engine, run):
    """Rows the kernel could not score (NaN loss: NaN predictions, infinite logits, bad
    labels); Keras's argmax/top-k rules are re-applied to them only (usually none)."""
    xp = engine.xp
    idx = xp.nonzero(xp.isnan(run.partial.row_loss))[0]
    return idx if int(idx.size) else None


def _keras_in_top_k(xp, z, ty, k):
    """torch's topk puts NaN first: target hit iff it is not NaN and fewer than k scores are
    greater than it or NaN (the k-th score tied with it counts)."""
    zt = xp.take_along_axis(z, ty[:, None], axis=-1)[:, 0]
    above = xp.sum((z > zt[:, None]) | xp.isnan(z), axis=-1)
    return (~xp.isnan(zt)) & (above < k)


# ----------------------------------------------------------------------------- losses


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """``keras.losses.categorical_crossentropy``: per-sample loss, shape ``y_pred.shape``
    without ``axis``.

    >>> import fastxent.keras as fk
    >>> fk.categorical_crossentropy([[0, 1, 0], [0, 0, 1]],
    ...                             [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]).round(4)
    array([0.0513, 2.3026], dtype=float32)
    """
    if isinstance(axis, bool):
        raise ValueError(f"`axis` must be of type `int`. Received: axis={axis} of type "
                         f"{type(axis)}")
    yp, yt, ps = _same_shape_pair(y_true, y_pred)
    if len(ps) < 1:
        raise ValueError("Arguments `target` and `output` must be at least rank 1.")
    if ps[-1] == 1:
        warnings.warn(
            "In loss categorical_crossentropy, expected y_pred.shape to be (batch_size, "
            f"num_classes) with num_classes > 1. Received: y_pred.shape={ps}. Consider using "
            "'binary_crossentropy' if you only have 2 classes.", SyntaxWarning, stacklevel=2)
    ax = _axis(axis, len(ps))
    ls = float(label_smoothing)
    engine = engine_for(yp, yt, names=("y_pred", "y_true"))
    z, t = yp, yt
    if ax != len(ps) - 1:
        xp = engine.xp
        z = xp.moveaxis(_core._asarray(engine, yp), ax, -1)
        t = xp.moveaxis(_core._asarray(engine, yt), ax, -1)
        if ls and ps[-1] != ps[ax]:
            # Keras smooths with num_classes = shape[-1], whatever the axis
            t = t.astype(xp.float64) * (1.0 - ls) + ls / ps[-1]
            ls = 0.0
    run = _core.softmax_run(z, t, from_logits=from_logits, label_smoothing=ls, want_rows=True,
                            eps=EPSILON, renormalize=not from_logits)
    return _out(engine, run.partial.row_loss.reshape(run.rows_shape), yp)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None,
                                    axis=-1):
    """``keras.losses.sparse_categorical_crossentropy``: per-sample loss, 0 where
    ``y_true == ignore_class``.

    >>> import fastxent.keras as fk
    >>> fk.sparse_categorical_crossentropy([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]).round(4)
    array([0.0513, 2.3026], dtype=float32)
    """
    yp, yt = _pred(y_pred), _core._user_array(y_true)
    ps = shape_of(yp)
    if len(ps) < 1:
        raise ValueError("Argument `output` must be at least rank 1.")
    ax = _axis(axis, len(ps))
    engine = engine_for(yp, yt, names=("y_pred", "y_true"))
    xp = engine.xp
    t = _int_ids(engine, yt, exact=False)
    ts = tuple(t.shape)
    if len(ts) == len(ps) and ts[ax] == 1:
        t = xp.squeeze(t, axis=ax)
        ts = tuple(t.shape)
    want = ps[:ax] + ps[ax + 1:]
    if ts != want:
        raise ValueError("Arguments `target` and `output` must have the same shape up until "
                         f"the last dimension: target.shape={ts}, output.shape={ps}")
    z = yp if ax == len(ps) - 1 else xp.moveaxis(_core._asarray(engine, yp), ax, -1)
    run = _core.softmax_run(z, t, from_logits=from_logits, ignore_index=ignore_class,
                            want_rows=True, eps=EPSILON, renormalize=not from_logits)
    return _out(engine, run.partial.row_loss.reshape(run.rows_shape), yp)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """``keras.losses.binary_crossentropy``: element-wise BCE averaged over ``axis``.

    Targets are smoothed towards 0.5; probabilities are clipped to ``[1e-7, 1 - 1e-7]``. A 1-D
    input gives a 0-d result (the mean over its only axis), as in Keras.

    >>> import fastxent.keras as fk
    >>> fk.binary_crossentropy([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]]).round(3)
    array([0.916, 0.714], dtype=float32)
    """
    yp, yt, ps = _same_shape_pair(y_true, y_pred)
    if len(ps) < 1:
        raise ValueError("binary_crossentropy needs at least one axis to average over")
    ax = _axis(axis, len(ps))
    engine = engine_for(yp, yt, names=("y_pred", "y_true"))
    xp = engine.xp
    z, t = yp, yt
    if len(ps) == 1:
        z = xp.reshape(_core._asarray(engine, yp), (1, ps[0]))
        t = xp.reshape(_core._asarray(engine, yt), (1, ps[0]))
    elif ax != len(ps) - 1:
        z = xp.moveaxis(_core._asarray(engine, yp), ax, -1)
        t = xp.moveaxis(_core._asarray(engine, yt), ax, -1)
    run = _core.sigmoid_run(z, t, from_logits=from_logits, label_smoothing=label_smoothing,
                            want_rows=True, eps=EPSILON)
    rows = () if len(ps) == 1 else run.rows_shape
    return _out(engine, run.partial.row_loss.reshape(rows), yp)


# ----------------------------------------------------------------------------- accuracies


def categorical_accuracy(y_true, y_pred):
    """``keras.metrics.categorical_accuracy``: 1.0 where the first argmax of ``y_pred`` is
    the first argmax of ``y_true``; float32, shape ``y_pred.shape[:-1]``."""
    yp, yt = _pred(y_pred), _core._user_array(y_true)
    ps, ts = shape_of(yp), shape_of(yt)
    if ts != ps:
        raise ValueError(f"categorical_accuracy: y_true shape {ts} must equal y_pred shape "
                         f"{ps} (one-hot or score rows); use sparse_categorical_accuracy for "
                         f"class ids")
    engine = engine_for(yp, yt, names=("y_pred", "y_true"))
    run = _core.softmax_run(yp, yt, from_logits=True, want_rows=True, validate=False)
    ok = run.partial.row_correct
    bad = _nan_rows(engine, run)
    if bad is not None:  # Keras: argmax with NaN as the maximum, labels taken as they are
        xp = engine.xp
        n, C = len(ok), ps[-1]
        z = xp.reshape(_core._asarray(engine, yp), (n, C))[bad]
        y = xp.reshape(_core._asarray(engine, yt), (n, C))[bad]
        ok = ok.copy()
        ok[bad] = xp.argmax(z, axis=-1) == xp.argmax(y, axis=-1)
    return _out(engine, ok.astype(engine.xp.float32).reshape(run.rows_shape), yp, "float32")


def sparse_categorical_accuracy(y_true, y_pred):
    """``keras.metrics.sparse_categorical_accuracy``: 1.0 where the first argmax of
    ``y_pred`` equals ``y_true`` (compared by value: 2.0 matches class 2, 2.5 nothing);
    float32 of ``y_true``'s shape with a trailing 1 squeezed."""
    yp, yt = _pred(y_pred), _core._user_array(y_true)
    ps = shape_of(yp)
    engine = engine_for(yp, yt, names=("y_pred", "y_true"))
    xp = engine.xp
    t = _int_ids(engine, yt, exact=True)
    ts = tuple(t.shape)
    if len(ts) == len(ps) and ts[-1] == 1:
        t = xp.squeeze(t, axis=-1)
        ts = tuple(t.shape)
    if ts != ps[:-1]:
        raise ValueError(f"sparse_categorical_accuracy: y_true shape {shape_of(yt)} does not "
                         f"match y_pred shape {ps}: expected {ps[:-1]} or {ps[:-1] + (1,)}")
    run = _core.softmax_run(yp, t, from_logits=True, want_rows=True, validate=False)
    ok = run.partial.row_correct
    bad = _nan_rows(engine, run)
    if bad is not None:
        n, C = len(ok), ps[-1]
        z = xp.reshape(_core._asarray(engine, yp), (n, C))[bad]
        ok = ok.copy()
        ok[bad] = xp.argmax(z, axis=-1) == xp.reshape(t, (n,))[bad]
    return _out(engine, ok.astype(xp.float32).reshape(ts), yp, "float32")


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """``keras.metrics.binary_accuracy``: element-wise ``y_true == (y_pred > threshold)``,
    compared by value (a soft target such as 0.7 never matches), float32.

    Keras 3 returns one value per element (no mean over the last axis), so there is nothing
    for a kernel to reduce: this is one element-wise expression in the caller's array module.
    The threshold is a float32 scalar (Keras converts it to floatx), compared in ``y_pred``'s
    dtype (float16/bfloat16: the threshold rounded to it), as torch's promotion does.
    """
    yp, yt = _pred(y_pred), _core._user_array(y_true)
    engine = engine_for(yp, yt, names=("y_pred", "y_true"))
    xp = engine.xp
    p = _core._asarray(engine, yp)
    t = _core._asarray(engine, yt)
    # keras.losses.loss.squeeze_or_expand_to_same_rank(y_true, y_pred): ranks that differ by
    # one with a trailing 1 are aligned (a rank-1 partner is expanded, otherwise squeezed)
    tr, pr = t.ndim, p.ndim
    if tr == pr + 1 and t.shape[-1] == 1:
        if pr == 1:
            p = p[:, None]
        else:
            t = xp.squeeze(t, axis=-1)
    if pr == tr + 1 and p.shape[-1] == 1:
        if tr == 1:
            t = t[:, None]
        else:
            p = xp.squeeze(p, axis=-1)
    thr = np.float32(threshold)
    name = dtype_name(p)
    if name == "float16":
        thr = np.float32(np.float16(thr))
    elif name == "bfloat16":
        import ml_dtypes

        thr = np.float32(ml_dtypes.bfloat16(thr))
    if name in ("float16", "bfloat16", "bool") or name.startswith(("int", "uint")):
        p = p.astype(xp.float32 if name in ("float16", "bfloat16") else xp.float64)
    pos = p > (thr if name == "float32" else float(thr))
    tname = dtype_name(t)
    if tname == "bfloat16":
        t = t.astype(xp.float32)
    eq = t == pos.astype(t.dtype)
    return _out(engine, eq.astype(xp.float32), yp, "float32")


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """``keras.metrics.top_k_categorical_accuracy``: 1.0 where the first argmax of ``y_true``
    is among the top ``k`` scores, a class tied with the k-th score counting as a hit
    (``keras.ops.in_top_k``); float32, shape ``y_pred.shape[:-1]``."""
    yp, yt = _pred(y_pred), _core._user_array(y_true)
    ps, ts = shape_of(yp), shape_of(yt)
    if ts != ps:
        raise ValueError(f"top_k_categorical_accuracy: y_true shape {ts} must equal y_pred "
                         f"shape {ps}; use sparse_top_k_categorical_accuracy for class ids")
    engine = engine_for(yp, yt, names=("y_pred", "y_true"))
    run = _core.softmax_run(yp, yt, from_logits=True, top_k=k, topk_any_tie=True,
                            want_rows=True, validate=False)
    hit = run.partial.row_hits[:, 0]
    bad = _nan_rows(engine, run)
    if bad is not None:
        xp = engine.xp
        n, C = len(hit), ps[-1]
        z = xp.reshape(_core._asarray(engine, yp), (n, C))[bad]
        y = xp.reshape(_core._asarray(engine, yt), (n, C))[bad]
        hit = hit.copy()
        hit[bad] = _keras_in_top_k(xp, z, xp.argmax(y, axis=-1), k)
    return _out(engine, hit.astype(engine.xp.float32).reshape(run.rows_shape), yp, "float32")


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5, from_sorted_ids=False):
    """``keras.metrics.sparse_top_k_categorical_accuracy``: 1.0 where ``y_true`` is among the
    top ``k`` scores (ties at the k-th score count); float32 of ``y_true``'s shape.

    ``from_sorted_ids=True``: ``y_pred`` holds class ids sorted by score; a hit is
    ``y_true`` among its first ``k`` columns (an element-wise expression, no scores to read).
    Ids are truncated to integers as Keras does (``int32`` conversion).
    """
    yp, yt = _pred(y_pred), _core._user_array(y_true)
    ps, ts = shape_of(yp), shape_of(yt)
    engine = engine_for(yp, yt, names=("y_pred", "y_true"))
    xp = engine.xp
    rows = math.prod(ps[:-1]) if len(ps) >= 1 else 0
    if len(ps) < 1 or math.prod(ts) != rows:
        raise ValueError(f"sparse_top_k_categorical_accuracy: y_true shape {ts} does not "
                         f"match y_pred shape {ps}: expected {ps[:-1]} (or any shape with "
                         f"{rows} entries)")
    if from_sorted_ids:
        p = xp.reshape(_core._asarray(engine, yp), (rows, ps[-1]))[:, :k]
        t = xp.reshape(_core._asarray(engine, yt), (rows, 1))
        hit = xp.any(t.astype(p.dtype) == p, axis=1)
        return _out(engine, hit.astype(xp.float32).reshape(ts), yp, "float32")
    t = xp.reshape(_int_ids(engine, yt, exact=False), ps[:-1])
    run = _core.softmax_run(yp, t, from_logits=True, top_k=k, topk_any_tie=True,
                            want_rows=True, validate=False)
    hit = run.partial.row_hits[:, 0]
    bad = _nan_rows(engine, run)
    if bad is not None:
        C = ps[-1]
        z = xp.reshape(_core._asarray(engine, yp), (rows, C))[bad]
        ty = xp.reshape(t, (rows,))[bad]
        valid = (ty >= 0) & (ty < C)
        hit = hit.copy()
        hit[bad] = valid & _keras_in_top_k(xp, z, xp.where(valid, ty, 0), k)
    return _out(engine, hit.astype(xp.float32).reshape(ts), yp, "float32")
