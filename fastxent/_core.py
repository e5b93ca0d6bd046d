"""The one pipeline behind every entry point: normalise -> launch -> state (+ per-row arrays).

``fx.softmax_cross_entropy``/``sigmoid_cross_entropy``/``evaluate``, the Keras and PyTorch
compatibility layers, :class:`fastxent.Evaluator` and :mod:`fastxent.dask` all call
:func:`softmax_run` / :func:`sigmoid_run`; only the wrapping of results differs.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _validate as V
from ._dispatch import dtype_name, engine_for, shape_of
from ._state import State
from .backends import SigmoidOptions, SoftmaxOptions

__all__ = ["Run", "softmax_run", "sigmoid_run"]


@dataclass
class Run:
    """What one launch produced (arrays on the engine's device)."""

    engine: Any
    like: Any  # the caller's logits: results are wrapped into its library
    rows_shape: tuple
    state: State
    partial: Any
    sparse: bool = True
    opts: Any = None  # the SoftmaxOptions / SigmoidOptions it ran with


def _asarray(engine, x):
    if x is None or (isinstance(x, np.ndarray) and engine.xp is np):
        return x
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    if isinstance(x, np.ndarray):  # a weight given as a Python scalar or list (_plain): copy
        return engine.xp.asarray(x)
    return engine.asarray(x)


def _plain(x):
    """None for a weight given as a plain Python number, list or tuple (it follows the
    arrays to their device), else ``x`` (an array takes part in the device check)."""
    return None if isinstance(x, (numbers.Number, list, tuple)) else x


def _user_array(x):
    """Give lists/scalars a dtype and shape (they are host inputs)."""
    if x is None or (hasattr(x, "shape") and hasattr(x, "dtype")):
        return x
    return np.asarray(x)


def _shape_error(what_a, a, what_b, b, extra=""):
    return ValueError(f"{what_b} shape {tuple(b)} does not match {what_a} shape {tuple(a)}{extra}")


def _eps(float64: bool, eps):
    if eps is not None:
        return float(eps)
    return float(np.finfo(np.float64 if float64 else np.float32).eps)


def softmax_run(logits, labels, *, from_logits=True, label_smoothing=0.0, class_weight=None,
                sample_weight=None, ignore_index=None, top_k=None, validate=True,
                want_rows=False, eps=None, renormalize=False, cw_inside=False,
                topk_any_tie=False, task="multiclass") -> Run:
    """Validate and launch the softmax kernel; raise for bad labels when ``validate``."""
    logits, labels = _user_array(logits), _user_array(labels)
    engine = engine_for(logits, labels, _plain(class_weight), _plain(sample_weight),
                        names=("logits", "labels", "class_weight", "sample_weight"))
    sample_weight, class_weight = _user_array(sample_weight), _user_array(class_weight)
    validate = V.check_flag("validate", validate)
    from_logits = V.check_flag("from_logits", from_logits)
    ls = V.check_unit("label_smoothing", label_smoothing)
    ignore_index = V.check_ignore_index(ignore_index)
    lshape, yshape = shape_of(logits), shape_of(labels)
    ldt, ydt = dtype_name(logits), dtype_name(labels)
    V.check_logits_dtype("logits", logits, ldt)
    if len(lshape) == 0 or lshape[-1] == 0:
        raise ValueError(f"logits shape {lshape} needs a non-empty last (class) axis")
    C = lshape[-1]
    rows_shape = lshape[:-1]
    if yshape == rows_shape:
        sparse = True
    elif yshape == lshape:
        sparse = False
    else:
        raise _shape_error("logits", lshape, "labels", yshape,
                           f": expected {rows_shape} (class ids) or {lshape} (dense labels)")
    V.check_label_dtype("labels", labels, ydt, sparse)
    if not sparse and ignore_index is not None:
        raise ValueError("ignore_index applies to integer class ids only, not to dense labels; "
                         "drop those rows or give them zero sample_weight instead")
    ks = V.check_top_k(top_k, C)
    xp = engine.xp
    n = math.prod(rows_shape)
    # the caller's device and stream (torch CUDA tensors) from the first device operation
    # on: conversions, casts, weight checks and the launch all run on that one stream
    with engine.call_context(logits):
        z = _asarray(engine, logits)
        y = _asarray(engine, labels)
        z2 = z.reshape(n, C)
        if sparse:
            y2 = y.reshape(n)
        else:
            y2 = y.reshape(n, C)
            if V.is_integer_dtype(ydt):
                y2 = y2.astype(xp.float32)
        # weights in the engine's library (torch / JAX GPU weights through DLPack)
        sw = V.check_weight("sample_weight", _asarray(engine, sample_weight), n, xp, validate,
                            rows_shape)
        cw = V.check_weight("class_weight", _asarray(engine, class_weight), C, xp, validate)
        f64 = ldt == "float64"
        side = V.logit_threshold(0.5) if from_logits else 0.5
        opts = SoftmaxOptions(
            dense=not sparse, from_logits=from_logits, label_smoothing=ls, eps=_eps(f64, eps),
            renormalize=bool(renormalize), class_weight=cw, cw_inside=bool(cw_inside),
            sample_weight=sw, ignore_index=ignore_index, ks=ks, topk_any_tie=bool(topk_any_tie),
            thr=V.round_down(side, f64), want_rows=bool(want_rows),
        )
        part = engine.softmax_xent(z2, y2, opts)
        bad = engine.first_bad(part) if validate else -1
        if bad >= 0:
            _raise_bad_label(bad, y2, sparse, C, rows_shape, ignore_index)
    state = State(
        kind="softmax", task=task, n_classes=C, ks=ks,
        weighted=sw is not None or cw is not None, sample_weighted=sw is not None,
        counts=part.counts, exact=part.exact,
        meta={"from_logits": from_logits, "label_smoothing": ls, "cw_inside": bool(cw_inside),
              "renormalize": bool(renormalize), "topk_any_tie": bool(topk_any_tie)},
    )
    return Run(engine, logits, rows_shape, state, part, sparse, opts)


def sigmoid_run(logits, targets, *, from_logits=True, threshold=0.5, pos_weight=None,
                label_smoothing=0.0, sample_weight=None, validate=True, want_rows=False,
                eps=None, log_floor=-math.inf, col_weight=None, want_cat=False,
                task=None) -> Run:
    """Validate and launch the sigmoid kernel; raise for bad targets when ``validate``."""
    logits, targets = _user_array(logits), _user_array(targets)
    engine = engine_for(logits, targets, _plain(pos_weight), _plain(sample_weight),
                        _plain(col_weight),
                        names=("logits", "targets", "pos_weight", "sample_weight", "weight"))
    sample_weight, pos_weight = _user_array(sample_weight), _user_array(pos_weight)
    col_weight = _user_array(col_weight)
    validate = V.check_flag("validate", validate)
    from_logits = V.check_flag("from_logits", from_logits)
    ls = V.check_unit("label_smoothing", label_smoothing)
    thr = V.check_unit("threshold", threshold)
    lshape, tshape = shape_of(logits), shape_of(targets)
    ldt, tdt = dtype_name(logits), dtype_name(targets)
    V.check_logits_dtype("logits", logits, ldt)
    if len(lshape) == 0:
        raise ValueError(f"logits shape {lshape}: sigmoid needs at least one axis (N,)")
    if len(lshape) == 1:
        rows_shape, C = lshape, 1
    else:
        rows_shape, C = lshape[:-1], lshape[-1]
    if C == 0:
        raise ValueError(f"logits shape {lshape} needs a non-empty last axis")
    if not (tshape == lshape or (C == 1 and tshape == rows_shape)):
        raise _shape_error("logits", lshape, "targets", tshape,
                           f": expected {lshape}" + (f" or {rows_shape}" if C == 1 else ""))
    V.check_label_dtype("targets", targets, tdt, sparse=False)
    xp = engine.xp
    n = math.prod(rows_shape)
    # the caller's device and stream (torch CUDA tensors) from the first device operation
    # on: conversions, casts, weight checks and the launch all run on that one stream
    with engine.call_context(logits):
        z2 = _asarray(engine, logits).reshape(n, C)
        t2 = _asarray(engine, targets).reshape(n, C)
        if V.is_integer_dtype(tdt):
            t2 = t2.astype(xp.float32)
        sw = V.check_weight("sample_weight", _asarray(engine, sample_weight), n, xp, validate,
                            rows_shape)
        pw = V.check_weight("pos_weight", _asarray(engine, pos_weight), C, xp, validate)
        colw = V.check_weight("weight", _asarray(engine, col_weight), C, xp, validate)
        f64 = ldt == "float64"
        cut = V.logit_threshold(thr) if from_logits else thr
        opts = SigmoidOptions(
            from_logits=from_logits, label_smoothing=ls, eps=_eps(f64, eps),
            log_floor=float(log_floor), pos_weight=pw, col_weight=colw, sample_weight=sw,
            thr=V.round_down(cut, f64), want_rows=bool(want_rows), want_cat=bool(want_cat),
        )
        part = engine.sigmoid_xent(z2, t2, opts)
        bad = engine.first_bad(part) if validate else -1
        if bad >= 0:
            row = t2[bad]
            j = int(xp.argmax(~((row >= 0) & (row <= 1))))
            raise ValueError(
                f"targets must be in [0, 1]; row {bad} has {float(row[j])!r} at column {j}; "
                "clip them or check that you passed targets, not logits"
            )
    if task is None:
        task = "binary" if C == 1 else "multilabel"
    state = State(
        kind="sigmoid", task=task, n_classes=C, ks=(), weighted=sw is not None,
        sample_weighted=sw is not None, counts=part.counts, exact=part.exact,
        meta={"from_logits": from_logits, "label_smoothing": ls, "threshold": thr},
    )
    return Run(engine, logits, rows_shape, state, part, False, opts)


def _raise_bad_label(bad, y2, sparse, C, rows_shape, ignore_index):
    where = f"row {bad}"
    if len(rows_shape) > 1:
        where += f" (index {tuple(int(i) for i in np.unravel_index(bad, rows_shape))})"
    if sparse:
        v = int(y2[bad])
        ign = f" and is not ignore_index={ignore_index}" if ignore_index is not None else ""
        raise IndexError(
            f"label {v} at {where} is out of range [0, {C}){ign}; class ids must be in "
            f"[0, {C}) (pass ignore_index= to skip padding rows)"
        )
    row = y2[bad]
    xp = np if isinstance(row, np.ndarray) else None
    if xp is None:  # device row: one small copy, we are raising anyway
        row = row.get() if hasattr(row, "get") else np.asarray(row)
    rowf = row.astype(np.float64)
    j = int(np.argmax(~(np.isfinite(rowf) & (rowf >= 0))))
    raise ValueError(
        f"dense labels must be finite and non-negative; {where} has {float(rowf[j])!r} at "
        f"class {j}"
    )
