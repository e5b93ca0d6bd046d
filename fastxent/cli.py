"""The ``fastxent`` command line: ``fastxent evaluate`` and ``fastxent bench``.

``fastxent evaluate PREDICTIONS LABELS`` streams ``.npy`` files through memory maps in chunks of
``--batch-rows`` rows into a :class:`fastxent.Evaluator`: the pages of a chunk are released
(``madvise(MADV_DONTNEED)``) once it is evaluated, so the peak memory is about one chunk
whatever the file size. ``.npz`` members (``file.npz:name``) cannot be memory-mapped (they sit
in a zip archive) and are read whole. The numbers are those of the in-memory
``fx.evaluate`` call, bitwise. A progress bar (rows/s, ETA) is drawn on stderr when stderr is
a terminal and tqdm is installed; never when piped.

Exit status: 0 on success, 1 on bad data (the message names the problem), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import mmap
import os
import sys
import time
import warnings
from typing import Any

import numpy as np

__all__ = ["main"]

DEFAULT_CHUNK_BYTES = 32 << 20  # --batch-rows default: rows of predictions in 32 MiB
_PRED_NAMES = ("logits", "predictions", "preds", "probs", "probabilities", "scores", "y_pred")
_LABEL_NAMES = ("labels", "targets", "y_true", "y", "target", "label")
EXAMPLE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                            "digits_weak_logreg.npz")


class CliError(Exception):
    """A problem with the user's files or options: printed as one line, exit status 1."""


# --------------------------------------------------------------------------- loading


def _split_spec(spec: str) -> tuple[str, str | None]:
    """``file.npz:name`` -> (``file.npz``, ``name``); anything else -> (spec, None)."""
    if ":" in spec:
        head, tail = spec.rsplit(":", 1)
        if head.lower().endswith(".npz") and tail:
            return head, tail
    return spec, None


def load_array(spec: str, role: str) -> tuple[np.ndarray, str]:
    """Open ``spec`` (``.npy`` memory-mapped, ``.npz[:name]`` read whole); (array, description)."""
    path, name = _split_spec(spec)
    if not os.path.exists(path):
        raise CliError(f"{role} file {path!r} does not exist")
    low = path.lower()
    if low.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as f:
                names = list(f.files)
                if not names:
                    raise CliError(f"{path!r} holds no arrays")
                if name is None:
                    prefer = _PRED_NAMES if role == "predictions" else _LABEL_NAMES
                    name = next((n for n in prefer if n in names), None)
                    if name is None:
                        name = names[0] if role == "predictions" or len(names) == 1 \
                            else names[min(1, len(names) - 1)]
                elif name not in names:
                    raise CliError(f"{path!r} has no array {name!r}; it has {names}")
                arr = f[name]
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {path!r}: {exc}") from exc
        return arr, f"{path}:{name}"
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path!r} as a .npy file: {exc}") from exc
    if not isinstance(arr, np.ndarray):
        raise CliError(f"{path!r} is not a single array (.npy) file")
    return arr, path


class _Releaser:
    """Drop the pages of a memory-mapped array that were already evaluated from this process.

    Only for C-ordered ``np.memmap`` arrays read along axis 0; a no-op otherwise (in-memory
    arrays, Fortran order, platforms without ``madvise``).
    """

    def __init__(self, arr: np.ndarray):
        self.mm = None
        mm = getattr(arr, "_mmap", None)
        if (mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED")
                or not arr.flags.c_contiguous or arr.ndim == 0):
            return
        self.mm = mm
        self.base = int(arr.offset) % mmap.ALLOCATIONGRANULARITY  # data start in the map
        self.row_bytes = arr.strides[0] if arr.shape[0] > 0 else 0
        self.done = 0  # bytes of the map already released

    def upto(self, row: int) -> None:
        if self.mm is None:
            return
        end = (self.base + row * self.row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > self.done:
            try:
                self.mm.madvise(mmap.MADV_DONTNEED, self.done, end - self.done)
            except (OSError, ValueError):  # pragma: no cover - exotic file systems
                self.mm = None
                return
            self.done = end


# --------------------------------------------------------------------------- streaming


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional (pip install fastxent[progress])
        return None
    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        width = 0
    # a terminal that reports no size (some ptys) gets 80 columns, not an empty bar
    sizing = {"dynamic_ncols": True} if width > 0 else {"ncols": 80, "nrows": 24}
    return tqdm(total=total, unit="rows", unit_scale=True, file=sys.stderr, leave=False,
                desc="fastxent", **sizing)


def stream_evaluate(logits, labels, *, task="auto", batch_rows=None, device="cpu",
                    progress=False, **options) -> tuple[Any, list[str], dict]:
    """Feed ``logits`` / ``labels`` to an Evaluator in chunks along axis 0.

    Returns (Metrics, mismatch warning texts, info dict with rows, chunks, seconds, task).
    """
    from ._result import TaskMismatchWarning
    from .evaluator import AutoTaskChanged, Evaluator

    if logits.ndim == 0 or labels.ndim == 0:
        raise CliError(f"predictions {logits.shape} and labels {labels.shape} need a row axis")
    if labels.shape[:1] != logits.shape[:1]:
        raise CliError(f"labels shape {labels.shape} does not match predictions shape "
                       f"{logits.shape} (the first axis must be the same)")
    per = math.prod(logits.shape[1:-1]) if logits.ndim > 2 else 1
    n0 = logits.shape[0]
    rows_total = n0 * per
    if batch_rows is None:
        row_bytes = max(1, logits.itemsize * (logits.shape[-1] if logits.ndim > 1 else 1) * per)
        step = max(1, DEFAULT_CHUNK_BYTES // row_bytes)
    else:
        if batch_rows < 1:
            raise CliError(f"--batch-rows must be >= 1, got {batch_rows}")
        step = max(1, batch_rows // per)
    put = _device_put(device)
    t0 = time.perf_counter()

    def run(task):
        ev = Evaluator(task, **options)
        rel = [_Releaser(logits), _Releaser(labels)]
        bar = _progress(rows_total, progress)
        chunks = 0
        try:
            for r0 in range(0, max(n0, 1), step):
                r1 = min(n0, r0 + step)
                ev.update(put(logits[r0:r1]), put(labels[r0:r1]))
                for r in rel:
                    r.upto(r1)
                chunks += 1
                if bar is not None:
                    bar.update((r1 - r0) * per)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", TaskMismatchWarning)
                m = ev.result()
                m.as_dict()  # synchronise a GPU result inside the timing
        finally:
            if bar is not None:
                bar.close()
        return m, caught, chunks

    try:
        m, caught, chunks = run(task)
    except AutoTaskChanged:
        # the first chunk's dense rows all summed to 1, later ones do not: on the whole file
        # fx.evaluate decides multilabel, so the file is streamed again as that
        m, caught, chunks = run("multilabel")
    seconds = time.perf_counter() - t0
    texts = []
    for w in caught:
        if issubclass(w.category, TaskMismatchWarning):
            texts.append(str(w.message))
        else:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    info = {"rows": rows_total, "chunks": chunks, "batch_rows": step * per,
            "seconds": seconds, "task": m.task}
    return m, texts, info


def _device_put(device: str):
    if device == "cpu":
        return lambda a: a
    try:
        import cupy
    except ImportError as exc:
        raise CliError("--device gpu needs CuPy: pip install fastxent[cuda12] (or [cuda13])") \
            from exc
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise CliError("--device gpu: no CUDA device is visible")
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise CliError(f"--device gpu: no usable CUDA device ({exc})") from exc
    return lambda a: cupy.asarray(np.ascontiguousarray(a))


# --------------------------------------------------------------------------- output


def _num(v):
    """JSON-safe number: NaN / inf -> None."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _metrics_json(m) -> dict:
    return {
        "task": m.task,
        "count": int(m.count),
        "loss": _num(m.loss),
        "accuracy": _num(m.accuracy),
        "top_k_accuracy": {str(k): _num(v) for k, v in m.top_k_accuracy.items()},
        "exact_match": None if m.exact_match is None else _num(m.exact_match),
    }


def _fmt(v) -> str:
    v = float(v)
    return f"{v:.6f}" if math.isfinite(v) else str(v)


def _metric_lines(m, indent: str = "") -> list[str]:
    kind = "" if m.task == "multiclass" else " (element-wise)"
    out = [f"{indent}rows counted   {int(m.count):,}",
           f"{indent}loss           {_fmt(m.loss)}",
           f"{indent}accuracy       {_fmt(m.accuracy)}{kind}"]
    for k, v in m.top_k_accuracy.items():
        out.append(f"{indent}{f'top-{k} accuracy':<14} {_fmt(v)}")
    if m.exact_match is not None:
        out.append(f"{indent}exact match    {_fmt(m.exact_match)}")
    return out


def _describe(arr, where) -> dict:
    return {"path": where, "shape": list(arr.shape), "dtype": arr.dtype.name}


# --------------------------------------------------------------------------- commands


def _options_from(args) -> dict:
    opts: dict = {}
    if args.from_probs:
        opts["from_logits"] = False
    if args.top_k:
        opts["top_k"] = tuple(args.top_k)
    if args.ignore_index is not None:
        opts["ignore_index"] = args.ignore_index
    return opts


def cmd_evaluate(args) -> int:
    if args.example:
        if args.predictions or args.labels:
            raise CliError("--example takes no PREDICTIONS / LABELS files")
        return cmd_example(args)
    if not args.predictions:
        raise CliError("give PREDICTIONS and LABELS files (or --example); see "
                       "fastxent evaluate --help")
    logits, zwhere = load_array(args.predictions, "predictions")
    if args.labels is None:
        if not _split_spec(args.predictions)[0].lower().endswith(".npz"):
            raise CliError("LABELS is missing (it may be omitted only when PREDICTIONS is an "
                           ".npz holding both arrays)")
        labels, ywhere = load_array(_split_spec(args.predictions)[0], "labels")
        if ywhere == zwhere:
            raise CliError(f"{zwhere} is one array; name the labels: FILE.npz:NAME")
    else:
        labels, ywhere = load_array(args.labels, "labels")
    opts = _options_from(args)
    progress = sys.stderr.isatty() and not args.no_progress
    m, texts, info = stream_evaluate(logits, labels, task=args.task, batch_rows=args.batch_rows,
                                     device=args.device, progress=progress, **opts)
    source = "detected" if args.task == "auto" else "asked"
    if args.json:
        out = {"predictions": _describe(logits, zwhere), "labels": _describe(labels, ywhere),
               **_metrics_json(m), "task_source": source, "device": args.device,
               "rows": info["rows"], "batch_rows": info["batch_rows"],
               "chunks": info["chunks"], "seconds": info["seconds"], "warnings": texts}
        print(json.dumps(out, indent=2))
        return 0
    rate = info["rows"] / info["seconds"] if info["seconds"] > 0 else float("inf")
    lines = [f"predictions    {zwhere}  {tuple(logits.shape)} {logits.dtype.name}",
             f"labels         {ywhere}  {tuple(labels.shape)} {labels.dtype.name}",
             f"task           {m.task} ({source})",
             *_metric_lines(m),
             f"time           {info['seconds']:.3f} s, {info['chunks']} chunk(s) of "
             f"<= {info['batch_rows']:,} rows ({rate / 1e6:.2f} M rows/s, {args.device})"]
    print("\n".join(lines))
    for t in texts:
        print(f"warning: TaskMismatchWarning: {t}")
    return 0


def cmd_example(args) -> int:
    if not os.path.exists(EXAMPLE_FILE):  # pragma: no cover - broken install
        raise CliError(f"the example data set is missing ({EXAMPLE_FILE}); rebuild it with "
                       "python scripts/make_example_data.py")
    with np.load(EXAMPLE_FILE) as f:
        logits, labels = f["logits"], f["labels"]
    C = logits.shape[1]
    # what a Keras model with a softmax output layer hands to binary_crossentropy and to
    # binary_accuracy: probabilities, compared with one-hot labels element by element
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
    onehot = np.eye(C, dtype=np.float32)[labels]
    opts = _options_from(args)
    opts.pop("from_logits", None)
    mc, mc_w, _ = stream_evaluate(logits, labels, task="auto", batch_rows=args.batch_rows,
                                  device=args.device, progress=False, **opts)
    bi, bi_w, _ = stream_evaluate(probs, onehot, task="binary", batch_rows=args.batch_rows,
                                  device=args.device, progress=False, from_logits=False)
    about = {
        "data": "scikit-learn's bundled handwritten digits (UCI optical digits, 8x8 images)",
        "split": f"{logits.shape[0]} held-out test images, {C} classes",
        "model": "multinomial logistic regression (softmax) on 4 deliberately weak features "
                 "(ink per image quadrant); logits = its decision function",
        "file": EXAMPLE_FILE,
        "rebuild": "python scripts/make_example_data.py",
    }
    if args.json:
        print(json.dumps({"example": about,
                          "multiclass": {**_metrics_json(mc), "task_source": "detected",
                                         "warnings": mc_w},
                          "binary_on_onehot": {**_metrics_json(bi), "task_source": "asked",
                                               "warnings": bi_w}}, indent=2))
        return 0
    right = int(round(float(mc.accuracy) * int(mc.count)))
    lines = [
        "fastxent example: a real model's predictions on a real data set",
        f"  data   {about['data']}, {about['split']}",
        f"  model  {about['model']}",
        f"  file   {about['file']} (rebuild: {about['rebuild']})",
        "",
        f"1) fastxent evaluate (task detected from the integer labels: {mc.task})",
        *_metric_lines(mc, "     "),
        f"     -> the model names the right digit for {right} of {int(mc.count)} images.",
        "",
        "2) the same model scored as Keras scores it when compiled with",
        "   loss='binary_crossentropy', metrics=['accuracy'] on one-hot labels: its softmax",
        "   probabilities vs the one-hot rows, element by element",
        "   (task='binary', from_logits=False)",
        *_metric_lines(bi, "     "),
        f"     -> {float(bi.accuracy):.1%} 'accuracy' for a model that is right "
        f"{float(mc.accuracy):.1%} of the time:",
        f"        every row also scores its {C - 1} easy zeros.",
    ]
    print("\n".join(lines))
    for t in mc_w + bi_w:
        print(f"\nwarning: TaskMismatchWarning: {t}")
    return 0


def cmd_bench(argv: list[str]) -> int:
    try:
        from . import bench
    except ModuleNotFoundError as exc:
        if exc.name != "fastxent.bench":
            raise
        print("fastxent bench: the benchmark module (fastxent.bench) is not part of this "
              "installation yet; see benchmarks/ in the source tree", file=sys.stderr)
        return 2
    return int(bench.main(argv) or 0)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastxent",
        description="Fused cross-entropy + accuracy: evaluate prediction files, benchmark.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"fastxent {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    e = sub.add_parser(
        "evaluate", help="loss and accuracy of a predictions file against a labels file",
        description="Loss and the accuracy that fits the labels, streamed from .npy files "
                    "(memory-mapped, chunk by chunk) or read from .npz members "
                    "(FILE.npz:NAME). Same numbers as fastxent.evaluate in memory.",
        epilog="examples:\n  fastxent evaluate --example\n"
               "  fastxent evaluate logits.npy labels.npy --top-k 1 5\n"
               "  fastxent evaluate run.npz:logits run.npz:labels --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("predictions", nargs="?", metavar="PREDICTIONS",
                   help="logits (or probabilities with --from-probs): .npy or FILE.npz[:NAME]")
    e.add_argument("labels", nargs="?", metavar="LABELS",
                   help="class ids (rows' shape) or dense labels (predictions' shape)")
    e.add_argument("--task", default="auto",
                   choices=("auto", "multiclass", "binary", "multilabel"),
                   help="default: detected from the labels, as fastxent.evaluate does")
    e.add_argument("--from-probs", action="store_true",
                   help="PREDICTIONS are probabilities, not logits")
    e.add_argument("--top-k", type=int, nargs="+", metavar="K", help="also top-K accuracy")
    e.add_argument("--ignore-index", type=int, metavar="K",
                   help="rows whose class id is K count nowhere (e.g. -100)")
    e.add_argument("--batch-rows", type=int, metavar="N",
                   help=f"rows per chunk (default: as many as fit in "
                        f"{DEFAULT_CHUNK_BYTES >> 20} MiB of predictions)")
    e.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="gpu: stream each chunk through the CUDA engine (needs CuPy)")
    e.add_argument("--json", action="store_true", help="one JSON object on stdout")
    e.add_argument("--no-progress", action="store_true",
                   help="no progress bar even on a terminal")
    e.add_argument("--example", action="store_true",
                   help="run on the small real data set shipped with fastxent")
    sub.add_parser("bench", add_help=False,
                   help="the fused kernels beside NumPy / PyTorch / JAX (fastxent bench --help)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return cmd_bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return cmd_evaluate(args)
    except BrokenPipeError:  # `fastxent evaluate ... | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except CliError as exc:
        print(f"fastxent: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, IndexError) as exc:  # the library's validation messages
        print(f"fastxent: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
