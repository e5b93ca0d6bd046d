"""Streaming, mergeable evaluation: :class:`Evaluator`.

An evaluator keeps the exact partial state of :mod:`fastxent._state` (a few int64 counts and
wide fixed-point sums), never the predictions. Because every sum is an integer sum, the result
of any chunking of the rows, in any merge order, on any number of processes, is *bitwise* the
result of the one-shot :func:`fastxent.evaluate` call on the same device.

Accumulation
------------
Each ``update`` runs the fused kernel on the batch (the same launch as the one-shot call) and
adds the batch's canonical limbs to the running limbs *raw*, with one vector addition on the
array's device: no carry, no host round trip, so on a GPU the state stays on the device and no
update synchronises (except ``validate=True``, which costs the one synchronisation the core
pays to raise on a bad label: pass ``validate=False`` for a sync-free stream). A canonical
limb is below ``2**32``, so ``k`` raw additions stay below ``k * 2**32``; the carries are
propagated (on the device) every ``2**20`` additions and whenever a canonical state is needed
(``result``, ``state_dict``), far from the int64 limit.

Task resolution (``task="auto"``)
---------------------------------
Decided on the first batch that decides it, with :func:`fastxent.evaluate`'s rules: one
output column -> binary; integer class ids -> multiclass; dense rows that all sum to 1 ->
multiclass, otherwise multilabel. A zero-row batch of dense labels decides nothing (it is
remembered, and an evaluator that only ever saw such batches reports what ``evaluate`` reports
on zero rows). After that the stream must stay consistent, and a later batch that contradicts
the decision raises ``ValueError`` rather than warn: a one-shot call would have decided
differently on the whole data, so the numbers could not match it. That happens when dense rows
that all summed to 1 (multiclass) are followed by a row that does not (pass
``task="multilabel"``; a multilabel stream whose first batch holds only single-positive rows,
e.g. a batch of one row, is otherwise decided multiclass), or when the label form changes
(class ids vs dense rows). Explicit tasks that contradict the labels warn with
:class:`fastxent.TaskMismatchWarning` from ``result()``, exactly as ``evaluate`` does, from the
label statistics of all rows seen.
"""

from __future__ import annotations

import copy
import math
import numbers
import sys
import warnings
from typing import Any

import numpy as np

from . import _core
from . import _state as S
from . import _validate as V
from ._dispatch import dtype_name, engine_for, is_device, library, shape_of
from ._result import Metrics, TaskMismatchWarning

__all__ = ["Evaluator", "EVALUATOR_STATE_VERSION"]

EVALUATOR_STATE_VERSION = 1
_FORMAT = "fastxent.Evaluator"
_TASKS = ("auto", "multiclass", "binary", "multilabel")
_RAW_LIMIT = 1 << 20  # carry the raw limbs after this many raw additions (|limb| < 2**52)
_ARRAY_OPTIONS = ("class_weight", "pos_weight")


def _carry(exact) -> None:
    """Canonicalise raw limbs in place (NumPy or CuPy; device ops only, no sync): every limb
    but the top one in [0, 2**32), the same integer."""
    if isinstance(exact, np.ndarray):
        # whole-array passes until no limb carries (two or three for sums of raw limbs):
        # ~10 us, where the limb-by-limb loop took 200-500 us at an evaluator's first result
        low = exact[:, :-1]
        while True:
            c = low >> S.LIMB_BITS
            if not c.any():
                return
            low -= c << S.LIMB_BITS
            exact[:, 1:] += c
    for j in range(S.NLIMBS - 1):
        c = exact[:, j] >> S.LIMB_BITS
        exact[:, j] -= c << S.LIMB_BITS
        exact[:, j + 1] += c


def _jsonable_option(name: str, value: Any) -> Any:
    """An option as a plain JSON value (for state_dict and for comparing evaluators)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if name == "top_k":
        return [int(k) for k in value]
    arr = value
    if hasattr(arr, "get") and not isinstance(arr, np.ndarray):  # CuPy
        arr = arr.get()
    elif library(arr) == "torch":
        arr = arr.detach().cpu().numpy()
    arr = np.asarray(arr, dtype=np.float64)
    return arr.tolist()


class AutoTaskChanged(ValueError):
    """A stream with task='auto' that resolved 'multiclass' from dense rows that all summed
    to 1 met rows that do not: on the whole data ``fx.evaluate`` decides 'multilabel'. The
    command line catches it and streams the file again as multilabel."""


class Evaluator:
    """Accumulate loss and accuracy over batches; mergeable, checkpointable, exact.

    Parameters
    ----------
    task : {"auto", "multiclass", "binary", "multilabel"}
        As in :func:`fastxent.evaluate`; ``"auto"`` is decided by the first batch (see the
        module docstring for what happens when a later batch contradicts it).
    reduction : {"mean", "sum"}
        Applies to the loss. ``"none"`` (per-row values) is not meaningful for a streaming
        evaluator and raises ``ValueError``: call :func:`fastxent.evaluate` per batch instead.
    **options
        The options of :func:`fastxent.softmax_cross_entropy` (multiclass) or
        :func:`fastxent.sigmoid_cross_entropy` (binary, multilabel), except ``sample_weight``,
        which is per batch: pass it to :meth:`update`.

    Examples
    --------
    >>> import numpy as np, fastxent as fx
    >>> rng = np.random.default_rng(0)
    >>> z = rng.standard_normal((1000, 10), dtype=np.float32); y = rng.integers(0, 10, 1000)
    >>> ev = fx.Evaluator(top_k=5)
    >>> for i in range(0, 1000, 128):
    ...     ev.update(z[i:i + 128], y[i:i + 128])
    >>> m = ev.result()
    >>> float(m.loss) == float(fx.evaluate(z, y, top_k=5).loss), int(m.count), len(ev)
    (True, 1000, 1000)
    """

    def __init__(self, task: str = "auto", *, reduction: str = "mean", **options: Any):
        if task not in _TASKS:
            raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
        reduction = V.check_reduction(reduction)
        if reduction == "none":
            raise ValueError(
                "reduction='none' (per-row values) is not meaningful for a streaming Evaluator, "
                "which keeps no rows; use reduction='mean' or 'sum', or call fx.evaluate(..., "
                "reduction='none') on each batch")
        if "sample_weight" in options:
            raise TypeError("sample_weight is per batch: pass it to Evaluator.update(logits, "
                            "labels, sample_weight=...), not to the constructor")
        from .api import _split_options

        for k in options:  # unknown names fail now, task-specific ones once the task is known
            _split_options("multiclass" if k not in ("threshold", "pos_weight") else "binary",
                           {k: options[k]})
        if task != "auto":
            _split_options(task, options)
        self._requested = task
        self._reduction = reduction
        self._options = dict(options)
        self._options_json = {k: _jsonable_option(k, v) for k, v in options.items()}
        self.reset()

    # ------------------------------------------------------------------ public properties
    @property
    def task(self) -> str | None:
        """The task in use: the one asked, or the one ``"auto"`` resolved (None until then)."""
        return self._task

    @property
    def requested_task(self) -> str:
        return self._requested

    @property
    def reduction(self) -> str:
        return self._reduction

    @property
    def options(self) -> dict:
        return dict(self._options)

    @property
    def count(self) -> int:
        """Rows that counted so far (ignored rows excluded); synchronises a GPU state."""
        if self._counts is None:
            return 0
        c = self._counts[S.ROWS]
        return int(c.get() if hasattr(c, "get") and not isinstance(c, np.generic) else c)

    @property
    def rows_seen(self) -> int:
        """Rows passed to :meth:`update` (ignored rows included); no synchronisation."""
        return self._rows

    def __len__(self) -> int:
        return self._rows

    def __repr__(self) -> str:
        task = self._task if self._task is not None else "auto (unresolved)"
        return (f"Evaluator(task={task!r}, rows_seen={self._rows}, updates={self._updates}, "
                f"reduction={self._reduction!r}, options={self._options_json!r})")

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget every row (options and the asked task stay)."""
        self._task = None if self._requested == "auto" else self._requested
        self._form = None        # "sparse" or "dense" once known
        self._auto_dense = False  # task came from "auto" on dense labels
        self._template = None    # State without arrays: metadata that must agree
        self._counts = None      # int64 (NCOUNTS + K,) on the batches' device
        self._exact = None       # int64 (NX + K, NLIMBS) raw limbs
        self._raw = 0            # raw additions since the last carry (+1 per merge side)
        self._engine = None
        self._like = None        # zero-size array of the batches' library/device
        self._pending = None     # a zero-row dense batch seen while task is unresolved
        self._rows = 0
        self._updates = 0
        self._fast = None        # _FastPath for later host batches like the first one

    # ------------------------------------------------------------------ update
    def update(self, logits, labels, sample_weight=None) -> None:
        """Add a batch of rows (any number, zero included) to the running state."""
        fast = self._fast
        if fast is not None and sample_weight is None:
            n = fast.run(logits, labels, self._counts, self._exact)
            if n >= 0:
                self._rows += n
                self._updates += 1
                self._added_raw(1)
                return
        logits = _core._user_array(logits)
        labels = _core._user_array(labels)
        sample_weight = _core._user_array(sample_weight)
        lshape, yshape = shape_of(logits), shape_of(labels)
        n_rows = self._rows_of(lshape)
        if self._template is not None and self._template.sample_weighted != (
                sample_weight is not None):
            if n_rows == 0:  # an empty batch cannot disagree: give it the matching form
                rows_shape = lshape if len(lshape) <= 1 else lshape[:-1]
                sample_weight = (np.zeros(rows_shape, dtype=np.float64)
                                 if self._template.sample_weighted else None)
                if sample_weight is not None and is_device(logits):
                    sample_weight = engine_for(logits).xp.asarray(sample_weight)
            else:
                had = "with" if self._template.sample_weighted else "without"
                raise ValueError(
                    f"earlier batches were given {had} sample_weight; pass sample_weight for "
                    f"every batch or for none (use ones for batches without weights)")
        task = self._task
        if task is None:
            task = self._decide(logits, labels, lshape, yshape)
            if task is None:  # zero-row dense batch: nothing to learn, nothing to add
                if self._pending is None:
                    self._pending = (self._small_copy(logits), self._small_copy(labels))
                self._updates += 1
                return
        try:
            run = self._launch(task, logits, labels, sample_weight, lshape, yshape)
        except (IndexError, ValueError) as exc:
            if "row " in str(exc) and self._rows:
                raise type(exc)(f"{exc} [row numbers are within this batch; the batch starts "
                                f"at stream row {self._rows}]") from exc
            raise
        with run.engine.call_context(run.like):  # the state's arithmetic on the batch's stream
            self._absorb(run, task)
        self._rows += n_rows
        self._updates += 1

    @staticmethod
    def _rows_of(lshape) -> int:
        if len(lshape) <= 1:
            return int(lshape[0]) if lshape else 0
        return math.prod(lshape[:-1])

    @staticmethod
    def _small_copy(x):
        """A zero-row copy keeping library, device, dtype and trailing shape."""
        z = x[:0]
        if library(z) == "torch":
            return z.clone()
        return z.copy() if hasattr(z, "copy") else z

    def _decide(self, logits, labels, lshape, yshape) -> str | None:
        """``evaluate``'s task rules on one batch; None for a zero-row dense batch."""
        from .api import _binary_shaped

        integer = V.is_integer_dtype(dtype_name(labels))
        if _binary_shaped(lshape, yshape):
            return "binary"
        if integer and len(lshape) >= 1 and yshape == lshape[:-1]:
            return "multiclass"
        if yshape == lshape and len(lshape) >= 2:
            if math.prod(lshape[:-1]) == 0:
                return None
            return "dense-auto"
        return "multiclass"  # softmax_run names the shape mismatch

    def _launch(self, task, logits, labels, sample_weight, lshape, yshape):
        if task == "dense-auto":
            return self._launch_dense_auto(logits, labels, sample_weight)
        opts = self._task_options(task, logits)
        if task == "multiclass":
            return _core.softmax_run(logits, labels, sample_weight=sample_weight, **opts)
        integer = V.is_integer_dtype(dtype_name(labels))
        sparse_shape = len(lshape) >= 1 and yshape == lshape[:-1]
        from .api import _binary_shaped

        if integer and sparse_shape and not _binary_shaped(lshape, yshape):
            raise ValueError(
                f"task={task!r} needs targets with the logits' shape {lshape}; integer class "
                f"ids of shape {yshape} mean task='multiclass' (or one-hot encode them)")
        return _core.sigmoid_run(logits, labels, sample_weight=sample_weight, want_cat=True,
                                 task=task, **opts)

    def _task_options(self, task, logits) -> dict:
        from .api import _split_options

        opts = dict(_split_options(task, self._options))
        opts.pop("reduction", None)
        if is_device(logits):  # host weight options follow the batches to the device
            xp = engine_for(logits).xp
            for k in _ARRAY_OPTIONS:
                v = opts.get(k)
                if v is not None and not is_device(v) and not isinstance(v, numbers.Real):
                    opts[k] = xp.asarray(np.asarray(v, dtype=np.float64))
        return opts

    def _launch_dense_auto(self, logits, labels, sample_weight):
        """As ``evaluate``'s dense auto path on the first deciding batch: guess from the first
        row, confirm with the kernel's label statistics, rerun the other kernel if wrong."""
        from . import config

        engine = engine_for(logits, labels, names=("logits", "labels"))
        y = _core._asarray(engine, labels)
        first = y.reshape(-1, shape_of(labels)[-1])[:1]
        first = np.asarray(first.get() if hasattr(first, "get") else first, dtype=np.float64)
        guess_multiclass = first.size == 0 or abs(float(first.sum()) - 1.0) <= \
            config.SUM_TO_ONE_TOL
        order = ("multiclass", "multilabel") if guess_multiclass else ("multilabel", "multiclass")
        deferred = None  # options that do not fit the guess: only an error if the labels need it
        for attempt, task in enumerate(order):
            try:
                opts = self._task_options(task, logits)
            except ValueError as exc:
                if attempt == 1:
                    raise
                deferred = exc
                continue
            if task == "multiclass":
                run = _core.softmax_run(logits, labels, sample_weight=sample_weight, **opts)
            else:
                run = _core.sigmoid_run(logits, labels, sample_weight=sample_weight,
                                        want_cat=True, task="multilabel", **opts)
            from .api import label_stats

            st = label_stats(run)
            fits = (task == "multiclass") == (st["sum1"] == st["seen"])
            if not fits and deferred is not None:
                raise deferred
            if fits or attempt == 1:
                self._auto_dense = True
                return run
        raise AssertionError("unreachable")  # pragma: no cover

    def _absorb(self, run, task) -> None:
        st = run.state
        form = "sparse" if run.sparse else "dense"
        if self._form is not None and form != self._form:
            raise ValueError(
                f"this batch has {'class ids' if form == 'sparse' else 'dense label rows'} but "
                f"earlier batches had {'class ids' if self._form == 'sparse' else 'dense rows'}; "
                "keep one label form for the whole stream")
        if self._template is not None:
            why = self._template.compatible(st)
            if why is not None:
                raise ValueError(f"batch {self._updates} does not match the earlier batches: "
                                 f"{why}")
        if self._task is None:
            self._task = st.task
            self._pending = None
        if self._auto_dense and st.kind == "softmax" and isinstance(st.counts, np.ndarray):
            self._check_auto_dense(st.counts)  # host state: check this batch now (free)
        on_device = not isinstance(st.counts, np.ndarray)
        if self._like is None or (on_device and isinstance(self._counts, np.ndarray)):
            # results follow the batches' library and device (a loaded host state moves to
            # the device of the first GPU batch, once)
            self._engine = run.engine
            self._like = self._small_copy(run.like) if library(run.like) != "numpy" else \
                np.empty(0, dtype=np.float64)
            if self._counts is not None and on_device:
                cupy = sys.modules["cupy"]
                with st.counts.device:
                    self._counts = cupy.asarray(self._counts)
                    self._exact = cupy.asarray(self._exact)
        if self._template is None:
            self._template = S.State(kind=st.kind, task=st.task, n_classes=st.n_classes,
                                     ks=st.ks, weighted=st.weighted,
                                     sample_weighted=st.sample_weighted, meta=dict(st.meta))
            self._form = form
            self._fast = _FastPath.of(run, self._options.get("validate", True))
            self._counts = st.counts.copy()
            self._exact = st.exact.copy()
            self._raw = 1
            return
        self._add_arrays(st.counts, st.exact, 1)

    def _add_arrays(self, counts, exact, raw) -> None:
        counts, exact = self._to_my_device(counts), self._to_my_device(exact)
        self._counts += counts
        self._exact += exact
        self._added_raw(raw)

    def _added_raw(self, raw) -> None:
        """``raw`` more raw additions went into ``_exact``: carry before the limbs can grow
        past 2**52."""
        self._raw += raw
        if self._raw >= _RAW_LIMIT:
            _carry(self._exact)
            self._raw = 1

    def _to_my_device(self, a):
        mine = isinstance(self._counts, np.ndarray)
        theirs = isinstance(a, np.ndarray)
        if mine and theirs:
            return a
        if mine:  # device -> host (merging a GPU evaluator into a CPU one)
            return a.get()
        cupy = sys.modules["cupy"]
        if theirs:
            with self._counts.device:
                return cupy.asarray(a)
        if a.device != self._counts.device:  # another GPU: through the host
            with self._counts.device:
                return cupy.asarray(a.get())
        return a

    def _check_auto_dense(self, counts) -> None:
        c = counts.get() if not isinstance(counts, np.ndarray) else counts
        seen, sum1 = int(c[S.SEEN]), int(c[S.SUM1])
        if sum1 != seen:
            raise AutoTaskChanged(
                f"Evaluator(task='auto') resolved task 'multiclass' from the first batch (every "
                f"dense label row summed to 1), but {seen - sum1} later row(s) do not sum to 1 "
                f"(multi-hot or soft multilabel targets): on the whole data fx.evaluate would "
                f"decide 'multilabel', so the streamed numbers could not match. Pass "
                f"task='multilabel' (or task='multiclass') explicitly")

    # ------------------------------------------------------------------ merge
    def merge(self, other: Evaluator) -> Evaluator:
        """Add ``other``'s rows into this evaluator (exact, any order); returns ``self``."""
        if not isinstance(other, Evaluator):
            raise TypeError(f"can only merge another Evaluator, got {type(other).__name__}")
        if other is self:
            other = copy.deepcopy(other)
        self._check_same_config(other._requested, other._reduction, other._options_json)
        if other._template is None:  # nothing counted there
            if self._template is None and self._pending is None:
                self._pending = other._pending
            self._rows += other._rows
            self._updates += other._updates
            return self
        if self._template is None:
            self._adopt(other)
            return self
        if self._task != other._task:
            raise ValueError(
                f"cannot merge evaluators that resolved different tasks ({self._task!r} vs "
                f"{other._task!r}); on the whole data these labels need one explicit task=")
        if self._form != other._form:
            raise ValueError("cannot merge evaluators fed different label forms "
                             f"({self._form} vs {other._form})")
        why = self._template.compatible(other._template)
        if why is not None:
            raise ValueError(f"cannot merge evaluator states: {why}")
        self._auto_dense = self._auto_dense or other._auto_dense
        self._add_arrays(other._counts, other._exact, other._raw)
        self._rows += other._rows
        self._updates += other._updates
        return self

    def _adopt(self, other: Evaluator) -> None:
        rows, updates = self._rows + other._rows, self._updates + other._updates
        for k in ("_task", "_form", "_auto_dense", "_template", "_raw", "_engine", "_like"):
            setattr(self, k, getattr(other, k))
        self._counts = other._counts.copy()
        self._exact = other._exact.copy()
        self._pending = None
        self._rows, self._updates = rows, updates

    def _check_same_config(self, requested, reduction, options_json) -> None:
        if requested != self._requested:
            raise ValueError(f"evaluators were created with different tasks ({self._requested!r} "
                             f"vs {requested!r})")
        if reduction != self._reduction:
            raise ValueError(f"evaluators use different reductions ({self._reduction!r} vs "
                             f"{reduction!r})")
        if options_json != self._options_json:
            keys = sorted(set(options_json) | set(self._options_json))
            diff = [k for k in keys if options_json.get(k) != self._options_json.get(k)]
            raise ValueError(f"evaluators were created with different options: {diff} "
                             f"({ {k: self._options_json.get(k) for k in diff} } vs "
                             f"{ {k: options_json.get(k) for k in diff} })")

    # ------------------------------------------------------------------ results
    def state(self) -> S.State | None:
        """The canonical exact state (on the batches' device), or None before any row."""
        if self._template is None:
            return None
        if self._raw > 1:
            _carry(self._exact)
            self._raw = 1
        return S.State(kind=self._template.kind, task=self._template.task,
                       n_classes=self._template.n_classes, ks=self._template.ks,
                       weighted=self._template.weighted,
                       sample_weighted=self._template.sample_weighted,
                       counts=self._counts.copy(), exact=self._exact.copy(),
                       meta=dict(self._template.meta))

    def result(self) -> Metrics:
        """:class:`fastxent.Metrics` of every row so far, identical to the one-shot call.

        Values are 0-d arrays of the batches' library and device (NumPy for host batches;
        a GPU result does not synchronise unless a mismatch check needs the label counts).
        Warns with :class:`fastxent.TaskMismatchWarning` as :func:`fastxent.evaluate` does.
        """
        if self._template is None:
            if self._pending is not None:  # only zero-row dense batches: evaluate's answer
                from .api import evaluate

                z, y = self._pending
                return evaluate(z, y, task=self._requested, reduction=self._reduction,
                                **self._options)
            raise ValueError("Evaluator.result() before any update(): no rows, and the task "
                             "and number of classes are unknown")
        from .api import metrics_from_run

        engine, like = self._engine, self._like
        if engine is None:  # loaded from a state_dict, no batch since: a host state
            from .backends import get_backend

            engine, like = get_backend("numba"), np.empty(0, dtype=np.float64)
        with engine.call_context(like):  # the batches' device and (current) stream
            st = self.state()
            if self._auto_dense and st.kind == "softmax":
                self._check_auto_dense(st.counts)
            self._warn_mismatch(st)
        run = _core.Run(engine, like, (), st, None, self._form == "sparse")
        return metrics_from_run(run, self._reduction)

    def _warn_mismatch(self, st: S.State) -> None:
        """The warnings of ``evaluate`` (same conditions, same text), over all rows."""
        from .api import _fmt

        if st.kind == "softmax":
            if self._form != "dense":
                return
            from .api import _not_one_class_text

            text = _not_one_class_text(st.label_stats(), st)
            if text is not None:
                warnings.warn(text, TaskMismatchWarning, stacklevel=3)
            return
        C = st.n_classes
        if C < 2:
            return
        ls = st.label_stats()
        if ls["seen"] > 0 and ls["onehot"] == ls["seen"]:
            sc = st.scalars()
            task = st.task
            warnings.warn(
                f"task={task!r} but every label row is exactly one-hot: the element-wise binary "
                f"accuracy {_fmt(sc['elem'])} counts the {C - 1} easy zeros of each row, while "
                f"the categorical accuracy (argmax) is {_fmt(sc['cat'])}; this is the "
                f"'binary_crossentropy on one-hot labels' trap: use task='multiclass' for "
                f"single-label classification", TaskMismatchWarning, stacklevel=3)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """A plain, versioned, JSON-serialisable snapshot (``json.dumps`` works on it).

        Holds the configuration, the resolved task and the exact state (sums as decimal
        strings of integers); never any prediction. A GPU state is copied to the host.
        """
        st = self.state()
        pending = None
        if st is None and self._pending is not None:
            z, y = self._pending
            pending = {"logits": [dtype_name(z), list(shape_of(z))],
                       "labels": [dtype_name(y), list(shape_of(y))]}
        return {
            "format": _FORMAT,
            "version": EVALUATOR_STATE_VERSION,
            "requested_task": self._requested,
            "task": self._task,
            "reduction": self._reduction,
            "options": copy.deepcopy(self._options_json),
            "label_form": self._form,
            "auto_dense": self._auto_dense,
            "rows_seen": self._rows,
            "updates": self._updates,
            "state": None if st is None else st.to_dict(),
            "pending_empty": pending,
        }

    def load_state_dict(self, state: dict) -> None:
        """Replace this evaluator's rows with a :meth:`state_dict` snapshot.

        The snapshot must come from an evaluator with the same task, reduction and options
        (``ValueError`` names what differs); :meth:`from_state_dict` rebuilds one instead.
        The state is loaded on the host; later GPU batches move it to their device.
        """
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError("not a fastxent Evaluator state_dict (missing format "
                             f"{_FORMAT!r})")
        if state.get("version") != EVALUATOR_STATE_VERSION:
            raise ValueError(
                f"Evaluator state_dict version {state.get('version')!r} is not supported (this "
                f"fastxent reads version {EVALUATOR_STATE_VERSION})")
        self._check_same_config(state["requested_task"], state["reduction"], state["options"])
        self.reset()
        self._task = state["task"]
        self._form = state["label_form"]
        self._auto_dense = bool(state["auto_dense"])
        self._rows = int(state["rows_seen"])
        self._updates = int(state["updates"])
        pend = state.get("pending_empty")
        if pend is not None:
            (zdt, zsh), (ydt, ysh) = pend["logits"], pend["labels"]
            self._pending = (np.zeros(zsh, dtype=_np_dtype(zdt)),
                             np.zeros(ysh, dtype=_np_dtype(ydt)))
        if state["state"] is not None:
            st = S.State.from_dict(state["state"])
            self._template = S.State(kind=st.kind, task=st.task, n_classes=st.n_classes,
                                     ks=st.ks, weighted=st.weighted,
                                     sample_weighted=st.sample_weighted, meta=dict(st.meta))
            self._counts, self._exact, self._raw = st.counts, st.exact, 1

    @classmethod
    def from_state_dict(cls, state: dict) -> Evaluator:
        """A new evaluator with the snapshot's task, reduction and options, then its rows.

        Array options (``class_weight``, ``pos_weight``) come back as NumPy float64.
        """
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"not a fastxent Evaluator state_dict (missing format {_FORMAT!r})")
        opts = {}
        for k, v in state.get("options", {}).items():
            opts[k] = np.asarray(v, dtype=np.float64) if (k in _ARRAY_OPTIONS
                                                         and isinstance(v, list)) else v
            if k == "top_k" and isinstance(v, list):
                opts[k] = tuple(v)
        ev = cls(state["requested_task"], reduction=state["reduction"], **opts)
        ev._options_json = copy.deepcopy(state["options"])
        ev.load_state_dict(state)
        return ev

    # pickling (Dask): plain attributes, the engine module by name
    def __getstate__(self):
        d = self.__dict__.copy()
        d["_engine"] = None if self._engine is None else self._engine.NAME
        d["_fast"] = None  # rebuilt by the next full update
        return d

    def __setstate__(self, d):
        eng = d.get("_engine")
        if eng is not None:
            from .backends import get_backend

            d["_engine"] = get_backend(eng)
        self.__dict__.update(d)


def _host_array(x) -> bool:
    """NumPy arrays and their subclasses (np.memmap: the CLI's chunks) except np.matrix."""
    return isinstance(x, np.ndarray) and not isinstance(x, np.matrix)


class _FastPath:
    """The launch of later batches that look exactly like the first one: host arrays
    (NumPy, np.memmap) with the first batch's logits dtype and trailing shape, labels of one
    dtype, no sample weights, on the CPU engine (sparse softmax, binary, multilabel). It skips
    the validation of options and shapes already checked (the options are fixed for the
    stream), and runs the engine's launch plan for the stream (built once from the options
    the first batch ran with), which adds a contiguous batch's state straight into the
    evaluator's arrays; batches split across threads run as the engine's stream jobs
    (``numba_cpu._run_job``). On these machines a 64k x 10 update spends ~5 us of Python
    before its job and ~1 us after it (the full path: ~90 us warm, ~250 us with the caches
    cold). Any other batch, and any batch with a bad label (so that the full path raises
    its message; nothing of it is added), takes the full path (``run`` returns -1)."""

    __slots__ = ("engine", "opts", "ldt", "ndim", "C", "ydt", "validate", "softmax", "cast",
                 "plan")

    @classmethod
    def of(cls, run, validate):
        # dense softmax batches (auto on one-hot rows) keep the full path: each batch's label
        # statistics are checked against the task (_check_auto_dense)
        if (run.engine.NAME != "numba" or not _host_array(run.like)
                or run.state.sample_weighted or run.opts is None or run.opts.want_rows
                or (run.state.kind == "softmax" and not run.sparse)):
            return None
        return cls(run, bool(validate))

    def __init__(self, run, validate):
        self.engine, self.opts = run.engine, run.opts
        self.ldt, self.ndim, self.C = run.like.dtype, run.like.ndim, run.state.n_classes
        self.ydt = None  # the labels' dtype, from the first batch seen here
        self.cast = False
        self.validate = validate
        self.softmax = run.state.kind == "softmax"
        self.plan = run.engine.stream_plan(run.state.kind, run.opts, self.C, self.ldt)

    def _labels_ok(self, labels) -> bool:
        if self.ydt is None:  # the full path's dtype check, once
            name = dtype_name(labels)
            try:
                V.check_label_dtype("labels", labels, name, sparse=self.softmax)
            except TypeError:
                return False
            self.ydt, self.cast = labels.dtype, not self.softmax and V.is_integer_dtype(name)
        return labels.dtype == self.ydt

    def run(self, logits, labels, counts, exact) -> int:
        """Add the batch into ``counts`` / ``exact`` (raw limbs) and return its row count; -1
        (nothing added) if it must take the full path."""
        if (not (type(logits) is np.ndarray or _host_array(logits))
                or not (type(labels) is np.ndarray or _host_array(labels))
                or logits.dtype != self.ldt or logits.ndim != self.ndim):
            return -1
        C = self.C
        if self.softmax:
            if logits.shape[-1] != C or labels.shape != logits.shape[:-1]:
                return -1
        elif logits.ndim == 1:
            if labels.shape != logits.shape:
                return -1
        elif logits.ndim == 0 or logits.shape[-1] != C or not (
                labels.shape == logits.shape or (C == 1 and labels.shape == logits.shape[:-1])):
            return -1
        if (self.ydt is None or labels.dtype != self.ydt) and not self._labels_ok(labels):
            return -1
        if logits.ndim == 2:  # the common (n, C) batch: no reshapes
            n, z = logits.shape[0], logits
        else:
            n = logits.size // C
            z = logits.reshape(n, C)
        if self.softmax:
            y = labels if labels.ndim == 1 else labels.reshape(n)
        else:
            y = labels.reshape(n, C)
            y = y.astype(np.float32) if self.cast else y
        fb = self.plan.add_into(z, y, counts, exact, self.validate)
        if fb is None:  # another layout (strided, other label dtype): the engine's call
            part = (self.engine.softmax_xent if self.softmax else self.engine.sigmoid_xent)(
                z, y, self.opts)
            fb = part.first_bad
            if not (self.validate and fb >= 0):
                counts += part.counts
                exact += part.exact
        return -1 if self.validate and fb >= 0 else n


def _np_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)
