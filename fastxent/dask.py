"""Evaluate Dask arrays chunk by chunk on any Dask scheduler, tree-reducing exact states.

>>> import dask.array as da, fastxent.dask as fxd          # doctest: +SKIP
>>> z = da.random.standard_normal((10**7, 100), chunks=(2**17, -1)).astype("float32")
>>> y = da.random.randint(0, 100, size=10**7, chunks=2**17)
>>> m = fxd.evaluate(z, y, top_k=5)                       # same numbers as fx.evaluate

How it runs
-----------
Each block pair (a row range of ``logits`` with the matching rows of ``labels`` and
``sample_weight``) runs the fused kernel into a :class:`fastxent.Evaluator` on the worker that
holds it (NumPy blocks on the CPU engine, CuPy blocks on the CUDA engine). The evaluators, a
few KB each whatever the block size, are merged in a tree (``split_every`` at a time) and the
last one gives :class:`fastxent.Metrics`. The merge is exact, so the numbers are bitwise those
of the in-memory call on the same device, whatever the chunking or the number of workers.

Chunking rules
--------------
* The class (last) axis of ``logits`` must be one chunk: a split class axis raises
  ``ValueError`` naming the fix (``logits.rechunk({-1: -1})``), because a row's loss needs all
  its classes; we do not rechunk silently (a rechunk moves data between workers).
* Leading axes may be chunked any way, including uneven and empty chunks. ``labels`` and
  ``sample_weight`` are rechunked to the row chunks of ``logits`` when they differ (cheap for
  class ids; for dense labels chunk them like ``logits``).
* NumPy or CuPy inputs are accepted too (wrapped as one chunk per call of ``dask.array``'s
  default chunking).

``task="auto"`` with dense labels: each block decides for itself as ``fx.evaluate`` would;
when some blocks' rows all sum to 1 and others' do not, the whole data is multilabel (as the
one-shot call decides), and the blocks are evaluated a second time with
``task="multilabel"`` (the only case that costs a second pass).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from ._result import Metrics
from .evaluator import Evaluator

__all__ = ["evaluate", "partial_states"]

_CONFLICT = "conflict"


def _block_eval(task, reduction, options, index, z, y, sw):
    """One block pair -> an Evaluator (runs on a worker)."""
    ev = Evaluator(task, reduction=reduction, **options)
    try:
        ev.update(z, y, sample_weight=sw)
    except (IndexError, ValueError) as exc:
        raise type(exc)(f"{exc} [in Dask block {index}; row numbers are within the block]") \
            from exc
    return ev


def _merge_many(*parts):
    """Merge a group of block results; a task conflict (dense auto) is passed up as a marker."""
    parts = [p for p in parts if p is not None]
    if any(isinstance(p, str) for p in parts):
        return _CONFLICT
    tasks = {p.task for p in parts if p.task is not None}
    if len(tasks) > 1:
        return _CONFLICT
    out = parts[0]
    for p in parts[1:]:
        out.merge(p)
    return out


def _as_dask(x, class_axis: bool):
    """Dask arrays as they are; NumPy / CuPy arrays wrapped (class axis kept whole)."""
    import dask.array as da

    if x is None or isinstance(x, da.Array):
        return x
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        x = np.asarray(x)
    chunks = ("auto",) * (x.ndim - 1) + (-1,) if class_axis and x.ndim >= 2 else "auto"
    return da.from_array(x, chunks=chunks, asarray=False)


def _row_chunks(logits):
    """The chunks of the leading (row) axes; raises for a split class axis."""
    if logits.ndim == 0:
        raise ValueError(f"logits shape {logits.shape} needs at least one axis")
    if logits.ndim == 1:  # binary scores (N,): no class axis
        return logits.chunks
    if len(logits.chunks[-1]) > 1:
        raise ValueError(
            f"the class axis of logits (shape {logits.shape}) is split into "
            f"{len(logits.chunks[-1])} chunks {logits.chunks[-1]}: every row needs all its "
            f"classes in one block. Rechunk it first: logits = logits.rechunk({{-1: -1}}) "
            f"(and keep row chunks small enough for that)")
    return logits.chunks[:-1]


def _align(x, chunks, full_shape):
    """Rechunk ``x`` (labels / sample_weight) to ``chunks`` (it must have that shape)."""
    if x is None:
        return None
    if tuple(x.shape) != tuple(full_shape):
        return x  # shape errors are named by the kernel's validation on the first block
    if x.chunks != tuple(chunks):
        x = x.rechunk(chunks)
    return x


def partial_states(logits, labels, *, task="auto", sample_weight=None, reduction="mean",
                   split_every=8, **options):
    """The lazy, tree-reduced :class:`fastxent.Evaluator` (a ``dask.delayed`` object).

    Compute it (``dask.compute``, or ``client.compute`` on a cluster) to get the merged
    evaluator, or the string ``"conflict"`` when ``task="auto"`` met dense blocks of both
    kinds (see the module docstring). :func:`evaluate` handles that case for you.
    """
    import dask

    logits = _as_dask(logits, True)
    labels = _as_dask(labels, True)
    sample_weight = _as_dask(sample_weight, False)
    rchunks = _row_chunks(logits)
    rows_shape = tuple(logits.shape) if logits.ndim == 1 else tuple(logits.shape[:-1])
    nlead = len(rchunks)
    if tuple(labels.shape) == rows_shape:
        labels = _align(labels, rchunks, rows_shape)
    elif tuple(labels.shape) == tuple(logits.shape):
        labels = _align(labels, logits.chunks, logits.shape)
    else:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match logits shape "
            f"{tuple(logits.shape)}: expected {rows_shape} (class ids) or "
            f"{tuple(logits.shape)} (dense labels)")
    if sample_weight is not None:
        if tuple(sample_weight.shape) != rows_shape:
            raise ValueError(f"sample_weight has shape {tuple(sample_weight.shape)}, expected "
                             f"{rows_shape}")
        sample_weight = _align(sample_weight, rchunks, rows_shape)
    # validate the options here (a bad option fails before anything is scheduled)
    Evaluator(task, reduction=reduction, **options)

    zb = logits.to_delayed()
    yb = labels.to_delayed()
    wb = sample_weight.to_delayed() if sample_weight is not None else None
    block_eval = dask.delayed(_block_eval, pure=True)
    parts = []
    for idx in itertools.product(*(range(len(c)) for c in rchunks)):
        z = zb[idx + (0,)] if logits.ndim > nlead else zb[idx]
        y = yb[idx] if labels.ndim == nlead else yb[idx + (0,)]
        w = wb[idx] if wb is not None else None
        parts.append(block_eval(task, reduction, options, idx, z, y, w))
    merge = dask.delayed(_merge_many, pure=True)
    split_every = max(2, int(split_every))
    while len(parts) > 1:
        parts = [merge(*parts[i:i + split_every]) for i in range(0, len(parts), split_every)]
    return parts[0] if parts else None


def evaluate(logits, labels, *, task="auto", sample_weight=None, reduction="mean",
             split_every=8, compute_kwargs: dict | None = None, **options: Any) -> Metrics:
    """:func:`fastxent.evaluate` for Dask arrays chunked along rows; same numbers.

    Parameters
    ----------
    logits : dask.array.Array, shape (..., C) (binary: (N,) or (N, 1))
        NumPy or CuPy blocks; the class (last) axis must be a single chunk.
    labels : dask.array.Array
        Class ids of the rows' shape, or dense labels of the logits' shape.
    task : {"auto", "multiclass", "binary", "multilabel"}
    sample_weight : dask.array.Array of the rows' shape, optional
    reduction : {"mean", "sum"}
        ``"none"`` raises ``ValueError`` (per-row values: use ``dask.array.map_blocks`` with
        ``fx.evaluate(..., reduction="none")``).
    split_every : int
        Fan-in of the merge tree.
    compute_kwargs : dict, optional
        Passed to ``dask.compute`` (e.g. ``{"scheduler": "threads"}``). With a
        ``dask.distributed.Client`` active, the cluster computes.
    **options
        As :func:`fastxent.evaluate` (``top_k``, ``ignore_index``, ``class_weight``, ...).

    Returns
    -------
    Metrics
        In the blocks' library (NumPy or CuPy), computed on the client from the merged state;
        a task mismatch warns on the client with :class:`fastxent.TaskMismatchWarning`.
    """
    import dask

    kw = dict(compute_kwargs or {})
    lazy = partial_states(logits, labels, task=task, sample_weight=sample_weight,
                          reduction=reduction, split_every=split_every, **options)
    if lazy is None:  # a zero-size leading axis gives no blocks at all
        return _empty_result(logits, labels, task, sample_weight, reduction, options)
    (ev,) = dask.compute(lazy, **kw)
    if isinstance(ev, str):  # dense auto: some blocks sum to 1, others do not -> multilabel
        lazy = partial_states(logits, labels, task="multilabel", sample_weight=sample_weight,
                              reduction=reduction, split_every=split_every, **options)
        (ev,) = dask.compute(lazy, **kw)
    return ev.result()


def _empty_result(logits, labels, task, sample_weight, reduction, options):
    from .api import evaluate as _evaluate

    z = np.zeros(tuple(logits.shape), dtype=logits.dtype)
    y = np.zeros(tuple(labels.shape), dtype=labels.dtype)
    sw = None if sample_weight is None else np.zeros(tuple(sample_weight.shape))
    n = math.prod(z.shape)
    assert n == 0
    return _evaluate(z, y, task=task, sample_weight=sw, reduction=reduction, **options)
