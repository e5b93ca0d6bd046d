"""Shared pieces of the fastxent asv suite (NumPy's / SciPy's layout).

* ``WORKLOADS``: the workload table of ``shared/BENCHMARKS.md`` (same names, same sizes), so
  ``asv run`` lines up with the peers' figures measured there and with ``fastxent bench``.
* ``FASTXENT_BENCH_SIZE=small`` (CI, smoke runs) divides the rows by 64 (names unchanged; the
  size used is in each benchmark's ``pretty_name`` note in README). Default ``full``.
* Inputs come from ``@lru_cache`` generators with fixed seeds (the formula of
  ``fastxent.bench.make_inputs_numpy``: the same numbers in both tools).
* ``Backend``: ``numba`` (NumPy arrays) or ``cuda`` (CuPy arrays) with ``synchronize()``;
  ``Backend.get`` raises ``NotImplementedError`` where the backend is missing, which is how asv
  skips a benchmark (shown as ``n/a``).
* ``check_params`` skips the parameter combinations that do not exist (e.g. the GPU-sized
  ``C_16kx128k`` on the CPU, bfloat16 on the CPU, top-5 with one-hot labels).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import zlib

import numpy as np

SEED = 20261122          # the date of BENCHMARKS.md; fastxent.bench uses the same seed

SIZE = os.environ.get("FASTXENT_BENCH_SIZE", "full").strip().lower()
if SIZE not in ("full", "small"):
    raise ValueError(f"FASTXENT_BENCH_SIZE={SIZE!r}: use 'full' (default) or 'small'")
SMALL_DIVISOR = 64

# name -> (rows, classes, backends it runs on). BENCHMARKS.md: C is 16k x 128k on the GPU and
# 8k x 32k on the CPU; D is B's shape with one-hot labels; E is the sigmoid workload.
WORKLOADS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "A_4Mx10": (4_194_304, 10, ("numba", "cuda")),
    "B_256kx1000": (262_144, 1000, ("numba", "cuda")),
    "C_16kx128k": (16_384, 131_072, ("cuda",)),
    "C_8kx32k": (8192, 32_768, ("numba",)),
    "S_256x1000": (256, 1000, ("numba", "cuda")),
    "D_dense": (262_144, 1000, ("numba", "cuda")),
    "E_bce": (1_048_576, 100, ("numba", "cuda")),
}
SOFTMAX_WORKLOADS = ["A_4Mx10", "B_256kx1000", "C_16kx128k", "C_8kx32k", "S_256x1000", "D_dense"]
SIGMOID_WORKLOADS = ["E_bce"]

BACKENDS = ["numba", "cuda"]
DTYPES = ["float32", "bfloat16"]              # bfloat16: GPU only (BENCHMARKS.md)
SOFTMAX_LABELS = ["sparse", "onehot", "top5"]
SIGMOID_LABELS = ["multihot", "binary"]
PARAM_NAMES = ["backend", "workload", "dtype", "labels"]


def shape(workload: str) -> tuple[int, int]:
    """(rows, classes) of a workload at the configured size."""
    rows, classes, _ = WORKLOADS[workload]
    if SIZE == "small" and workload != "S_256x1000":
        rows = max(256, rows // SMALL_DIVISOR)
    return rows, classes


@contextlib.contextmanager
def safe_import():
    """``with safe_import(): import x`` -- a missing optional module leaves the name unset."""
    try:
        yield
    except ImportError:
        pass


def optional(name: str):
    """The module, or raise NotImplementedError (asv: skip this benchmark)."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install raising anything else
        raise NotImplementedError(f"{name} not importable: {exc}") from None


def ncores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


class Backend:
    """Where the arrays live: ``numba`` (NumPy) or ``cuda`` (CuPy), with ``synchronize``."""

    def __init__(self, name: str, xp):
        self.name, self.xp = name, xp

    @classmethod
    @functools.cache
    def get(cls, name: str) -> Backend:
        if name == "numba":
            optional("numba")
            return cls("numba", np)
        if name == "cuda":
            cupy = optional("cupy")
            try:
                if cupy.cuda.runtime.getDeviceCount() < 1:
                    raise NotImplementedError("no CUDA device")
            except cupy.cuda.runtime.CUDARuntimeError as exc:
                raise NotImplementedError(f"no CUDA device: {exc}") from None
            return cls("cuda", cupy)
        raise ValueError(name)

    @property
    def device(self) -> str:
        """The device name that ``fastxent.bench``'s peer builders take."""
        return "gpu" if self.name == "cuda" else "cpu"

    def asarray(self, a: np.ndarray, dtype: str | None = None):
        if dtype == "bfloat16":
            import ml_dtypes

            a = a.astype(ml_dtypes.bfloat16)
        elif dtype not in (None, "float32"):
            a = a.astype(dtype)
        if self.name == "cuda":
            return self.xp.asarray(a)
        return a

    def synchronize(self) -> None:
        """Wait for queued GPU work (CuPy's stream, and torch's if torch is in use)."""
        if self.name != "cuda":
            return
        self.xp.cuda.get_current_stream().synchronize()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.synchronize()


def check_params(backend: str, workload: str, dtype: str, labels: str) -> Backend:
    """The Backend, or NotImplementedError for combinations that are not benchmarked."""
    be = Backend.get(backend)
    if backend not in WORKLOADS[workload][2]:
        raise NotImplementedError(f"{workload} is not a {backend} workload")
    if dtype != "float32" and backend != "cuda":
        raise NotImplementedError("the CPU is benchmarked in float32 (BENCHMARKS.md)")
    if workload == "E_bce":
        if labels not in SIGMOID_LABELS:
            raise NotImplementedError("E_bce takes multihot / binary targets")
        if dtype != "float32":
            raise NotImplementedError("E_bce is float32")
        return be
    if labels not in SOFTMAX_LABELS:
        raise NotImplementedError(f"{workload} is a softmax workload")
    if workload == "D_dense" and labels != "onehot":
        raise NotImplementedError("D_dense is the one-hot workload")
    if labels == "onehot" and workload not in ("A_4Mx10", "B_256kx1000", "D_dense"):
        raise NotImplementedError("one-hot labels: A, B, D only")
    if labels == "top5" and workload not in ("B_256kx1000", "C_16kx128k", "C_8kx32k"):
        raise NotImplementedError("top-5: B and C only")
    if workload == "B_256kx1000" and labels == "onehot":
        raise NotImplementedError("B with one-hot labels is D_dense")
    return be


def make_inputs_numpy(rows: int, classes: int, labels: str, seed_key: str):
    """float32 logits ~ 3 N(0, 1) and labels (``fastxent.bench.make_inputs_numpy``'s formula)."""
    rng = np.random.default_rng([SEED, zlib.crc32(seed_key.encode())])
    z = rng.standard_normal((rows, classes), dtype=np.float32)
    z *= 3
    if labels == "multihot":
        t = (rng.random((rows, classes), dtype=np.float32) < 0.3).astype(np.float32)
        return z, t
    y = rng.integers(0, classes, rows, dtype=np.int64)
    if labels == "onehot":
        t = np.zeros((rows, classes), dtype=np.float32)
        t[np.arange(rows), y] = 1
        return z, t
    return z, y


@functools.lru_cache(maxsize=2)
def host_inputs(workload: str, labels: str):
    """NumPy (logits, labels) for a workload; cached (asv runs many params per process)."""
    rows, classes = shape(workload)
    kind = {"top5": "sparse", "binary": "multihot"}.get(labels, labels)
    key = "B_256kx1000" if workload == "D_dense" else workload
    z, lab = make_inputs_numpy(rows, classes, kind, key)
    if labels == "binary":                 # one output column: (N*C,) logits and targets
        z, lab = z.reshape(-1), lab.reshape(-1)
    return z, lab


@functools.lru_cache(maxsize=2)
def inputs(backend: str, workload: str, dtype: str, labels: str):
    """(logits, labels) on the backend, logits in ``dtype``; cached."""
    be = Backend.get(backend)
    z, lab = host_inputs(workload, labels)
    out = be.asarray(z, dtype), be.asarray(lab)
    be.synchronize()
    return out


def fastxent():
    """``import fastxent`` (asv imports the installed package of the commit under test)."""
    return importlib.import_module("fastxent")


class Benchmark:
    """Base class: generous timeouts for the full sizes; a few samples of big calls."""

    timeout = 600
    # asv picks ``number`` from sample_time; big calls then run once per sample
    sample_time = 0.05
    min_run_count = 2
    repeat = (3, 10, 20.0)
    warmup_time = 0.0   # setup already made one warm-up call (JIT / NVRTC excluded)
