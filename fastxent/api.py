"""Public entry points: fused cross-entropy + accuracy, and task detection.

Every function validates its arguments, dispatches to the engine that holds the arrays (Numba
on the CPU, CUDA on a GPU) and returns :class:`fastxent.Metrics` in the caller's library.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np

from . import _core
from . import _state as S
from . import _validate as V
from ._dispatch import dtype_name, shape_of
from ._result import Metrics, TaskMismatchWarning

__all__ = ["softmax_cross_entropy", "sigmoid_cross_entropy", "evaluate", "metrics_from_run"]

_TASKS = ("auto", "multiclass", "binary", "multilabel")
_SOFTMAX_ONLY = ("class_weight", "ignore_index", "top_k")
_SIGMOID_ONLY = ("threshold", "pos_weight")
_COMMON = ("from_logits", "label_smoothing", "sample_weight", "reduction", "validate")


def label_stats(run: _core.Run) -> dict:
    """The run's label statistics, read on its device and stream (a GPU run: one small
    synchronising copy, ordered after the kernel that wrote them)."""
    with run.engine.call_context(run.like):
        return run.state.label_stats()


def metrics_from_run(run: _core.Run, reduction: str) -> Metrics:
    """Turn a launch into :class:`Metrics` (reduced values stay on the engine's device)."""
    eng, like = run.engine, run.like
    with eng.call_context(like):
        vals = eng.finalize(run.state, reduction)
    w = lambda v: eng.wrap(v, like)  # noqa: E731
    softmax = run.state.kind == "softmax"
    if reduction == "none":
        loss = w(run.partial.row_loss.reshape(run.rows_shape))
        correct = w(run.partial.row_correct.reshape(run.rows_shape))
    else:
        loss, correct = w(vals["loss"]), None
    return Metrics(
        loss=loss,
        accuracy=w(vals["cat"] if softmax else vals["elem"]),
        top_k_accuracy={k: w(v) for k, v in zip(run.state.ks, vals["topk"], strict=True)},
        exact_match=None if softmax else w(vals["exact"]),
        count=w(vals["count"]),
        task=run.state.task,
        correct=correct,
    )


def softmax_cross_entropy(logits, labels, *, from_logits=True, label_smoothing=0.0,
                          class_weight=None, sample_weight=None, ignore_index=None, top_k=None,
                          reduction="mean", validate=True) -> Metrics:
    """Softmax cross-entropy and accuracy (top-1 and top-k) in one pass over ``logits``.

    Parameters
    ----------
    logits : array, shape (..., C), float16/bfloat16/float32/float64
        Scores; the class axis is last, leading axes are rows. NumPy, CuPy, torch, JAX.
    labels : array
        Integer class ids of shape ``logits.shape[:-1]`` (sparse), or dense labels of
        ``logits.shape`` (one-hot or a distribution per row; float or bool).
    from_logits : bool
        ``False`` when ``logits`` are probabilities (clipped to ``[eps, 1-eps]``, not
        renormalised; ``eps = finfo(compute dtype).eps``).
    label_smoothing : float in [0, 1]
        Targets become ``(1 - ls) * t + ls / C`` (loss only).
    class_weight : array (C,), optional
        Row weight ``w_i = sample_weight_i * class_weight[y_i]`` for the loss.
    sample_weight : array of the rows' shape, optional
        Weights both the loss and the accuracy.
    ignore_index : int, optional
        Rows whose (sparse) label equals it count nowhere.
    top_k : int or sequence of int, optional
        Also report top-k accuracy for each k (ranked by score, then index).
    reduction : {"mean", "sum", "none"}
        Applies to the loss; ``"none"`` also returns per-row ``correct``.
    validate : bool
        ``False`` skips the checks that cost a synchronisation: a bad label then gives a NaN
        row instead of an exception.

    Returns
    -------
    Metrics
        ``loss``, ``accuracy``, ``top_k_accuracy``, ``count``, ``task="multiclass"``.

    Raises
    ------
    IndexError
        A label outside ``[0, C)`` that is not ``ignore_index`` (first bad row named).
    ValueError
        Shapes that do not match, bad options, weights of the wrong length, bad dense labels.
    TypeError
        Integer logits, float class ids, unsupported dtypes, mixed host/device inputs.

    See Also
    --------
    sigmoid_cross_entropy, evaluate, Evaluator

    Examples
    --------
    >>> import numpy as np, fastxent as fx
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], dtype=np.float32)
    >>> m = fx.softmax_cross_entropy(logits, np.array([0, 2]))
    >>> round(float(m.loss), 4), float(m.accuracy), int(m.count)
    (1.4185, 0.5, 2)
    """
    key = None
    if (type(logits) is np.ndarray and type(labels) is np.ndarray and from_logits is True
            and validate is True and class_weight is None and sample_weight is None
            and ignore_index is None and type(label_smoothing) is float
            and label_smoothing == 0.0 and (top_k is None or type(top_k) is int)
            and type(reduction) is str and ONE_SHOT_FAST):
        key = _one_shot_key(logits, labels, top_k, reduction)
        m = _one_shot(key, logits, labels, reduction)
        if m is not None:
            return m
    reduction = V.check_reduction(reduction)
    run = _core.softmax_run(
        logits, labels, from_logits=from_logits, label_smoothing=label_smoothing,
        class_weight=class_weight, sample_weight=sample_weight, ignore_index=ignore_index,
        top_k=top_k, validate=validate, want_rows=reduction == "none")
    if key is not None:
        _one_shot_prime(key, run)
    return metrics_from_run(run, reduction)


# ------------------------------------------------------------------- the one-shot fast path
#
# A call of ``softmax_cross_entropy`` (or ``evaluate`` on integer class ids) or of
# ``sigmoid_cross_entropy`` with NumPy arrays and default options spent ~50-65 us in Python
# before and after its kernel (validation, launch, results): on a 32 x 10 batch torch eager
# took 18-22 us, fastxent ~52-60. A later call like an earlier one (same logits dtype and C,
# labels dtype and top_k) skips what the earlier one checked: it runs the launch of an
# Evaluator's fast path (``evaluator._FastPath``, built from the earlier call's run, per
# thread) into zeroed state arrays and reads the results from them (~31-37 us). Any batch it
# does not take (another shape or layout, a bad label) runs the full path, which raises the
# full path's errors.

ONE_SHOT_FAST = True  # tests turn it off to compare with the full path
_ONE_SHOT_KEEP = 8  # (dtype, C, labels dtype, top_k) combinations kept per thread


class _OneShots(threading.local):
    def __init__(self):
        self.paths = {}


_ONE_SHOTS = _OneShots()


def _one_shot_key(logits, labels, top_k, reduction):
    """The fast path's key for a softmax call on class ids, or None (the full path)."""
    if (logits.ndim != 2 or labels.ndim != 1 or reduction not in ("mean", "sum")
            or logits.dtype not in (np.float32, np.float64)
            or labels.dtype not in (np.int64, np.int32)):
        return None
    return "softmax", logits.dtype, logits.shape[1], labels.dtype, top_k


def _sigmoid_key(logits, targets, reduction):
    """The fast path's key for a sigmoid call, or None (the full path): (N,) or (N, C)
    logits; the targets' dtype and number of axes (binary: (N,) or (N, 1))."""
    if (logits.ndim not in (1, 2) or reduction not in ("mean", "sum")
            or logits.dtype not in (np.float32, np.float64)
            or targets.dtype not in (np.float32, np.float64, np.bool_)):
        return None
    return "sigmoid", logits.dtype, logits.shape[1:], targets.dtype, targets.ndim


def _one_shot(key, logits, labels, reduction):
    """The call's Metrics through the kept launch for ``key``, or None (the full path: no
    key, none kept, or a batch the launch does not take)."""
    entry = None if key is None else _ONE_SHOTS.paths.get(key)
    if entry is None or logits.shape[0] == 0 or entry[4] != entry[0].engine.plan_globals():
        return None
    fast, template, counts, exact, _ = entry
    counts.fill(0)
    exact.fill(0)
    if fast.run(logits, labels, counts, exact) < 0:
        return None
    from .evaluator import _carry

    _carry(exact)
    st = S.State(kind=template.kind, task=template.task, n_classes=template.n_classes,
                 ks=template.ks, counts=counts, exact=exact, meta=template.meta)
    return metrics_from_run(_core.Run(fast.engine, logits, (), st, None), reduction)


def _one_shot_prime(key, run):
    """Keep the launch of ``run`` (a default call that took the full path) for ``key``."""
    paths = _ONE_SHOTS.paths
    if run.engine.NAME != "numba" or run.state.weighted:
        return
    kept = paths.get(key)
    now = run.engine.plan_globals()
    if kept is not None and kept[4] == now:
        return
    from .evaluator import _FastPath

    fast = _FastPath.of(run, True)
    if fast is None:
        return
    if len(paths) >= _ONE_SHOT_KEEP:
        paths.clear()
    paths[key] = (fast, run.state, np.zeros_like(run.state.counts),
                  np.zeros_like(run.state.exact), now)


def sigmoid_cross_entropy(logits, targets, *, from_logits=True, threshold=0.5, pos_weight=None,
                          label_smoothing=0.0, sample_weight=None, reduction="mean",
                          validate=True) -> Metrics:
    """Sigmoid (binary / multilabel) cross-entropy, element-wise and exact-match accuracy.

    Parameters
    ----------
    logits : array, shape (N,), (N, 1) or (..., C)
        Binary scores (one column) or multilabel scores.
    targets : array of the logits' shape (binary: also (N,))
        Values in [0, 1] (float, bool or integer 0/1).
    from_logits : bool
        ``False`` when ``logits`` are probabilities (clipped to ``[eps, 1-eps]``).
    threshold : float in [0, 1]
        An element is predicted positive iff its probability is ``> threshold`` (decided on
        the logit, exactly); the target is positive iff ``t > 0.5``.
    pos_weight : array (C,) or scalar, optional
        Multiplies the positive term (PyTorch's definition).
    label_smoothing : float in [0, 1]
        Targets become ``(1 - ls) * t + ls / 2``.
    sample_weight : array of the rows' shape, optional
    reduction : {"mean", "sum", "none"}
        The per-row loss is the mean over the row's labels; ``mean`` is over rows.
    validate : bool
        ``False`` skips the target range check (a bad row becomes NaN).

    Returns
    -------
    Metrics
        ``loss``, ``accuracy`` (element-wise), ``exact_match``, ``count``,
        ``task`` ``"binary"`` (one column) or ``"multilabel"``.

    Examples
    --------
    >>> import numpy as np, fastxent as fx
    >>> z = np.array([[2.0, -1.0], [-0.5, 0.3]], dtype=np.float32)
    >>> t = np.array([[1, 0], [1, 1]], dtype=np.float32)
    >>> m = fx.sigmoid_cross_entropy(z, t)
    >>> float(m.accuracy), float(m.exact_match)
    (0.75, 0.5)
    """
    key = None
    if (type(logits) is np.ndarray and type(targets) is np.ndarray and from_logits is True
            and validate is True and pos_weight is None and sample_weight is None
            and type(label_smoothing) is float and label_smoothing == 0.0
            and type(threshold) is float and threshold == 0.5 and type(reduction) is str
            and ONE_SHOT_FAST):
        key = _sigmoid_key(logits, targets, reduction)
        m = _one_shot(key, logits, targets, reduction)
        if m is not None:
            return m
    reduction = V.check_reduction(reduction)
    run = _core.sigmoid_run(
        logits, targets, from_logits=from_logits, threshold=threshold, pos_weight=pos_weight,
        label_smoothing=label_smoothing, sample_weight=sample_weight, validate=validate,
        want_rows=reduction == "none")
    if key is not None:
        _one_shot_prime(key, run)
    return metrics_from_run(run, reduction)


# ----------------------------------------------------------------------------- evaluate


def _split_options(task: str, options: dict) -> dict:
    allowed = _COMMON + (_SOFTMAX_ONLY if task == "multiclass" else _SIGMOID_ONLY)
    for k in options:
        if k not in _COMMON + _SOFTMAX_ONLY + _SIGMOID_ONLY:
            raise TypeError(f"evaluate() got an unexpected option {k!r}")
        if k not in allowed and options[k] is not None:
            raise ValueError(f"option {k!r} does not apply to task {task!r}")
    return {k: v for k, v in options.items() if k in allowed}


def _binary_shaped(lshape, yshape) -> bool:
    if len(lshape) == 1:
        return yshape == lshape
    return lshape[-1] == 1 and yshape in (lshape, lshape[:-1])


def _fmt(v) -> str:
    return f"{float(v):.4f}"


def evaluate(logits, labels, *, task="auto", **options) -> Metrics:
    """Loss and the accuracy that fits the labels, picking softmax or sigmoid.

    ``task="auto"``: integer class ids -> multiclass; one output column -> binary; dense rows
    that all sum to 1 (one-hot included) -> multiclass; other dense labels -> multilabel.
    An explicit ``task`` that contradicts the labels computes what was asked and warns with
    :class:`TaskMismatchWarning`, naming both accuracies (e.g. ``binary``/``multilabel`` on
    one-hot rows: the element-wise accuracy that ``binary_crossentropy`` reports vs the
    categorical accuracy).

    ``**options`` are those of :func:`softmax_cross_entropy` (multiclass) or
    :func:`sigmoid_cross_entropy` (binary, multilabel).

    Examples
    --------
    >>> import numpy as np, fastxent as fx
    >>> z = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], dtype=np.float32)
    >>> fx.evaluate(z, np.eye(3, dtype=np.float32)[[0, 2]]).task
    'multiclass'
    """
    key = None
    if (task in ("auto", "multiclass") and type(logits) is np.ndarray
            and type(labels) is np.ndarray and logits.ndim == 2 and logits.shape[1] > 1
            and ONE_SHOT_FAST and options.keys() <= {"top_k", "reduction"}):
        # integer class ids of an (N, C > 1) batch: multiclass, the softmax call's fast path
        top_k = options.get("top_k")
        reduction = options.get("reduction", "mean")
        if (top_k is None or type(top_k) is int) and type(reduction) is str:
            key = _one_shot_key(logits, labels, top_k, reduction)
            m = _one_shot(key, logits, labels, reduction)
            if m is not None:
                return m
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
    logits = _core._user_array(logits)
    labels = _core._user_array(labels)
    lshape, yshape = shape_of(logits), shape_of(labels)
    ydt = dtype_name(labels)
    integer = V.is_integer_dtype(ydt)
    sparse_shape = len(lshape) >= 1 and yshape == lshape[:-1]
    binary_shape = _binary_shaped(lshape, yshape)
    reduction = V.check_reduction(options.get("reduction", "mean"))

    if task == "auto":
        if binary_shape:
            task = "binary"  # one output column: (N,) or (N, 1) logits
        elif integer and sparse_shape:
            task = "multiclass"
        elif yshape == lshape and len(lshape) >= 2:
            # options that only one task accepts say which task is meant
            soft = [k for k in _SOFTMAX_ONLY if options.get(k) is not None]
            sig = [k for k in _SIGMOID_ONLY if options.get(k) is not None]
            if soft and sig:
                raise ValueError(f"options {soft} (multiclass) and {sig} (multilabel) cannot "
                                 "be combined; pass task= explicitly")
            if soft or sig:
                task = "multiclass" if soft else "multilabel"
            else:
                return _evaluate_dense_auto(logits, labels, options, reduction)
        else:
            task = "multiclass"  # softmax_run names the shape mismatch

    if task == "multiclass":
        opts = _split_options(task, options)
        run = _core.softmax_run(logits, labels, want_rows=reduction == "none",
                                **{k: v for k, v in opts.items() if k != "reduction"})
        if not run.sparse:
            text = _not_one_class_text(label_stats(run), run.state)
            if text is not None:
                warnings.warn(text, TaskMismatchWarning, stacklevel=2)
        elif key is not None:
            _one_shot_prime(key, run)
        return metrics_from_run(run, reduction)

    # binary / multilabel
    if integer and sparse_shape and not binary_shape:
        raise ValueError(
            f"task={task!r} needs targets with the logits' shape {lshape}; integer class ids of "
            f"shape {yshape} mean task='multiclass' (or one-hot encode them)")
    opts = _split_options(task, options)
    run = _core.sigmoid_run(logits, labels, want_rows=reduction == "none", want_cat=True,
                            task=task, **{k: v for k, v in opts.items() if k != "reduction"})
    _warn_if_onehot(run, task)
    return metrics_from_run(run, reduction)


def _not_one_class_text(ls: dict, state) -> str | None:
    """The warning for task='multiclass' on 0/1 label rows that are not all one class per row
    (some with several positives, or none), or None. One text for evaluate and Evaluator."""
    if not (ls["seen"] > 0 and ls["binary"] == ls["seen"] and ls["sum1"] < ls["seen"]):
        return None
    sc = state.scalars()
    k = ls["seen"] - ls["sum1"]
    return (f"task='multiclass' but {k} of the {ls['seen']} label rows are 0/1 rows without "
            f"exactly one positive (multi-hot, or empty): categorical accuracy "
            f"{_fmt(sc['cat'])} scores one class per row, while the multilabel element-wise "
            f"accuracy is {_fmt(sc['elem'])} and the exact-match accuracy "
            f"{_fmt(sc['exact'])}; use task='multilabel' for multilabel targets")


def _warn_if_onehot(run, task):
    C = run.state.n_classes
    if C < 2:
        return
    st = label_stats(run)
    if st["seen"] > 0 and st["onehot"] == st["seen"]:
        sc = run.state.scalars()
        warnings.warn(
            f"task={task!r} but every label row is exactly one-hot: the element-wise binary "
            f"accuracy {_fmt(sc['elem'])} counts the {C - 1} easy zeros of each row, while the "
            f"categorical accuracy (argmax) is {_fmt(sc['cat'])}; this is the "
            f"'binary_crossentropy on one-hot labels' trap: use task='multiclass' for "
            f"single-label classification", TaskMismatchWarning, stacklevel=3)


def _evaluate_dense_auto(logits, labels, options, reduction):
    """Dense labels, task unknown: guess from the first row, confirm with the kernel's label
    statistics, and run the other kernel only if the guess was wrong."""
    from ._dispatch import engine_for

    engine = engine_for(logits, labels, names=("logits", "labels"))
    y = _core._asarray(engine, labels)
    first = y.reshape(-1, shape_of(labels)[-1])[:1]
    first = np.asarray(first.get() if hasattr(first, "get") else first, dtype=np.float64)
    guess_multiclass = first.size == 0 or abs(float(first.sum()) - 1.0) <= _sum1_tol()
    order = ("multiclass", "multilabel") if guess_multiclass else ("multilabel", "multiclass")
    for attempt, task in enumerate(order):
        opts = _split_options(task, options)
        kw = {k: v for k, v in opts.items() if k != "reduction"}
        if task == "multiclass":
            run = _core.softmax_run(logits, labels, want_rows=reduction == "none", **kw)
        else:
            run = _core.sigmoid_run(logits, labels, want_rows=reduction == "none",
                                    task="multilabel", **kw)
        st = label_stats(run)
        all_sum1 = st["sum1"] == st["seen"]
        if (task == "multiclass") == all_sum1 or attempt == 1:
            return metrics_from_run(run, reduction)
    raise AssertionError("unreachable")  # pragma: no cover


def _sum1_tol() -> float:
    from . import config

    return config.SUM_TO_ONE_TOL

