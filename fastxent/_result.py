"""The result object returned by every fastxent entry point, and the warning it may carry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Metrics", "TaskMismatchWarning", "Task", "Reduction"]

Task = Literal["multiclass", "binary", "multilabel"]
Reduction = Literal["mean", "sum", "none"]


class TaskMismatchWarning(UserWarning):
    """The task asked for contradicts the labels (e.g. ``binary_crossentropy`` on one-hot rows).

    The message names both accuracies: the one the asked task reports and the one that the
    labels' real structure implies.
    """


@dataclass(frozen=True, eq=False)
class Metrics:
    """Loss and accuracy of one evaluation, in the caller's array library and device.

    Attributes
    ----------
    loss : array
        ``reduction="mean"``/``"sum"``: 0-d float64. ``reduction="none"``: the weighted per-row
        loss, shape ``logits.shape[:-1]`` (``(N,)`` for binary), float32 (float64 for float64
        input); ignored rows hold 0.
    accuracy : array
        0-d float64. Softmax: share of rows whose first maximal logit is the label (dense: the
        first maximal label). Sigmoid: share of elements with ``(p > threshold) == (t > 0.5)``.
        Weighted by ``sample_weight`` only.
    top_k_accuracy : dict
        ``{k: 0-d float64}`` for every ``k`` asked with ``top_k=``; empty otherwise.
    exact_match : array or None
        Sigmoid: 0-d float64 share of rows whose every label is right. Softmax: ``None``.
    count : array
        0-d int64: rows that counted (ignored rows excluded).
    task : str
        ``"multiclass"``, ``"binary"`` or ``"multilabel"``.
    correct : array or None
        With ``reduction="none"``: per-row correctness (softmax: argmax; sigmoid: the whole row
        right), bool, ``False`` for ignored rows. Otherwise ``None``.
    """

    loss: Any
    accuracy: Any
    top_k_accuracy: dict = field(default_factory=dict)
    exact_match: Any = None
    count: Any = None
    task: Task = "multiclass"
    correct: Any = None

    def as_dict(self) -> dict:
        """Plain Python numbers (synchronises a GPU result); per-row arrays are left out."""
        out: dict = {"task": self.task, "count": int(self.count)}
        if getattr(self.loss, "ndim", 0) == 0:
            out["loss"] = float(self.loss)
        out["accuracy"] = float(self.accuracy)
        if self.exact_match is not None:
            out["exact_match"] = float(self.exact_match)
        for k, v in self.top_k_accuracy.items():
            out[f"top_{k}_accuracy"] = float(v)
        return out

    def __repr__(self) -> str:
        def fmt(v: Any) -> str:
            if v is None:
                return "None"
            if getattr(v, "ndim", 0) != 0:
                return f"<{type(v).__name__} shape={tuple(v.shape)}>"
            try:
                return f"{float(v):.6g}"
            except (TypeError, ValueError):  # pragma: no cover - exotic array types
                return repr(v)

        topk = ", ".join(f"{k}: {fmt(v)}" for k, v in self.top_k_accuracy.items())
        parts = [f"task={self.task!r}", f"loss={fmt(self.loss)}", f"accuracy={fmt(self.accuracy)}"]
        if topk:
            parts.append(f"top_k_accuracy={{{topk}}}")
        if self.exact_match is not None:
            parts.append(f"exact_match={fmt(self.exact_match)}")
        parts.append(f"count={fmt(self.count) if self.count is None else int(self.count)}")
        if self.correct is not None:
            parts.append(f"correct={fmt(self.correct)}")
        return f"Metrics({', '.join(parts)})"
