"""``fastxent bench``: fastxent beside every installed peer, on the same arrays, in one process.

Usage::

    fastxent bench [--device cpu|gpu] [--workload NAME ...] [--repeat N] [--quick | --full]
                   [--json] [--plot FILE.png]
    python -m fastxent.bench ...                      # the same, without the console script

For each workload of ``shared/BENCHMARKS.md`` (same names) it generates one set of arrays
(fixed seed), then times, on those arrays, loss + accuracy together (the whole job a user
runs):

* **read limit**: a plain parallel reduction over the same bytes (a Numba ``prange`` sum over
  the predictions and the labels on the CPU, a CuPy sum on the GPU). Nothing that reads the
  inputs once can beat it; ``% read`` is ``read-limit time / method time``.
* **fastxent** (the public API, ``validate=True``: the checks a user gets by default);
* the peers that are importable: NumPy (naive: max, exp, sum, log, gather, argmax), SciPy
  (``logsumexp`` / ``log_softmax`` / ``log_expit``), PyTorch eager (``F.cross_entropy`` +
  ``(argmax == y).float().mean()``), ``torch.compile`` of the same function, JAX ``jit``
  (optax when installed), Keras 3 (``keras.losses`` + ``keras.metrics`` on its backend's
  tensors), and on the GPU Liger-Kernel and naive CuPy. Each peer's loss and accuracy are
  compared with fastxent's (``check`` column): every row of the table did the same job.

Printed per workload: median time per call (for the read limit its fastest sample: a bound),
effective GB/s (predictions + labels read once / time), share of the read limit, and
time / fastxent (> 1: fastxent is faster). A summary gives fastxent against the best peer and
against each peer.

Sizes
-----
``--full`` uses BENCHMARKS.md's sizes (CPU: several minutes on 2 cores; the slow peers take
seconds per call there). The default keeps each workload's columns and cuts its rows so that
every workload still reads 50-70 MB (far beyond the caches: the read limit stays a memory
limit) and the whole run finishes in under a minute on 2 cores once ``torch.compile``'s disk
cache is warm (its first compile on a fresh machine takes ~30 s and is not timed). ``--quick``
is a smoke test (tiny arrays, no ``torch.compile`` / Keras / JAX compile), a few seconds. On
the GPU the default is the full size. The sizes used are printed and in the JSON.

Threads and order
-----------------
Everything runs on the cores this process may use: Numba's default, and
``torch.set_num_threads`` to the same count. PyTorch's OpenMP workers keep spinning for a while
after each torch call and slow down whatever runs next (BENCHMARKS.md measured Numba 2x slower
right after torch). So the run has two phases: first fastxent, the read limit and the peers
that do not use torch (torch is not even imported), then the torch-based peers (torch eager,
torch.compile, Keras on torch); in the second phase fastxent is timed once more right after
the torch peers, reported as ``fastxent (after torch)``. Both figures are shown; ratios use
the first.

GPU (``--device gpu``) uses CuPy arrays, CUDA events around each call on the current stream
(torch and CuPy both use the legacy default stream), and the GPU peers. It was written on a
machine without a GPU: UNVERIFIED until run on one.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["Workload", "WORKLOADS", "main", "run", "peer_names"]

# ----------------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    """One row of the workload table of ``shared/BENCHMARKS.md``.

    ``full`` is BENCHMARKS.md's (rows, classes); ``default`` and ``quick`` keep the classes
    and cut the rows. ``labels``: ``sparse`` (int64 ids), ``onehot`` (float32), ``top5``
    (sparse, also top-5 accuracy), ``multihot`` (float32 0/1, sigmoid).
    """

    key: str            # unique: name, or name/variant
    name: str           # BENCHMARKS.md's name
    device: str         # "cpu" | "gpu"
    labels: str
    full: tuple[int, int]
    default: tuple[int, int]
    quick: tuple[int, int]
    in_default: bool = True       # part of the default selection (else --full / --workload)

    @property
    def kind(self) -> str:
        return "sigmoid" if self.labels == "multihot" else "softmax"

    @property
    def topk(self) -> tuple[int, ...]:
        return (1, 5) if self.labels == "top5" else ()

    def shape(self, size: str) -> tuple[int, int]:
        return getattr(self, size)


def _w(key, device, labels, full, default, quick, in_default=True):
    return Workload(key, key.split("/")[0], device, labels, full, default, quick, in_default)


# Default rows: CPU arrays of 50-70 MB read per call (beyond L3), chosen so that the slowest
# peers (SciPy: ~50 ns per element on E_bce, ~70 ns per row on A) keep the whole default run
# under a minute on 2 cores.
WORKLOADS: tuple[Workload, ...] = (
    # CPU
    _w("A_4Mx10", "cpu", "sparse", (4_194_304, 10), (1_048_576, 10), (65_536, 10)),
    _w("A_4Mx10/onehot", "cpu", "onehot", (4_194_304, 10), (1_048_576, 10), (65_536, 10), False),
    _w("B_256kx1000", "cpu", "sparse", (262_144, 1000), (16_384, 1000), (1024, 1000)),
    _w("B_256kx1000/onehot", "cpu", "onehot", (262_144, 1000), (16_384, 1000), (1024, 1000),
       False),
    _w("B_256kx1000/top5", "cpu", "top5", (262_144, 1000), (16_384, 1000), (1024, 1000), False),
    _w("C_8kx32k", "cpu", "sparse", (8192, 32_768), (512, 32_768), (32, 32_768)),
    _w("D_dense", "cpu", "onehot", (262_144, 1000), (8192, 1000), (1024, 1000)),
    _w("E_bce", "cpu", "multihot", (1_048_576, 100), (65_536, 100), (8192, 100)),
    _w("S_256x1000", "cpu", "sparse", (256, 1000), (256, 1000), (256, 1000)),
    # GPU: the default is the full size (a GPU reads 1 GB in well under a millisecond)
    _w("A_4Mx10", "gpu", "sparse", (4_194_304, 10), (4_194_304, 10), (262_144, 10)),
    _w("B_256kx1000", "gpu", "sparse", (262_144, 1000), (262_144, 1000), (16_384, 1000)),
    _w("B_256kx1000/top5", "gpu", "top5", (262_144, 1000), (262_144, 1000), (16_384, 1000),
       False),
    _w("C_16kx128k", "gpu", "sparse", (16_384, 131_072), (16_384, 131_072), (512, 131_072)),
    _w("D_dense", "gpu", "onehot", (262_144, 1000), (262_144, 1000), (16_384, 1000)),
    _w("E_bce", "gpu", "multihot", (1_048_576, 100), (1_048_576, 100), (65_536, 100)),
    _w("S_256x1000", "gpu", "sparse", (256, 1000), (256, 1000), (256, 1000)),
)

MIN_LIMIT_BYTES = 32 << 20   # below this "% of the read limit" is not reported (cache-resident)

SEED = 20261122  # BENCHMARKS.md's date: every run, here and in asv, draws the same arrays
# a pause before each workload's first timings: the previous workload's peers (JAX's and
# NumPy's thread pools) may still hold the cores for a while after their last call; a
# 0.1 ms call timed right after E_bce's peers (S_256x1000) measured 1.0-1.3 ms in two full
# runs and 0.13-0.14 ms in others
SETTLE_S = 0.5


_T0 = time.perf_counter()


def _progress(msg: str) -> None:
    print(f"[fastxent bench {time.perf_counter() - _T0:5.1f}s] {msg}", file=sys.stderr,
          flush=True)


# ----------------------------------------------------------------------------------- inputs


def make_inputs_numpy(rows: int, classes: int, labels: str, seed_key: str):
    """Host inputs: float32 logits ~ 3 N(0, 1) and the labels of kind ``labels``.

    The same generator (seeded by ``SEED`` and the workload name) feeds the asv suite, so
    ``fastxent bench`` and ``asv run`` time the same numbers.
    """
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


def _to_gpu(z, lab, dtype: str):
    import cupy

    zg, lg = cupy.asarray(z), cupy.asarray(lab)
    if dtype == "bfloat16":
        import ml_dtypes

        zg = zg.astype(ml_dtypes.bfloat16)   # CuPy >= 14 with ml_dtypes
    elif dtype == "float16":
        zg = zg.astype(cupy.float16)
    return zg, lg


def _nbytes(*arrays) -> int:
    return sum(int(a.nbytes) for a in arrays)


# ----------------------------------------------------------------------------------- read limit

_READ_KERNEL = None


def _read_kernel():
    """A Numba ``prange`` sum of uint32 words: a plain parallel read, vectorised by LLVM."""
    global _READ_KERNEL
    if _READ_KERNEL is None:
        import numba

        @numba.njit("uint64(uint32[::1])", parallel=True, cache=True, nogil=True)
        def read_u32(x):  # pragma: no cover - compiled
            acc = numba.uint64(0)
            for i in numba.prange(x.size):
                acc += x[i]
            return acc

        _READ_KERNEL = read_u32
    return _READ_KERNEL


def _build_read_limit(device, labels, topk, z, lab):
    return read_limit_fn(device, (z, lab)), _nosync


def read_limit_fn(device: str, arrays):
    """A zero-argument callable that reads every byte of ``arrays`` once (no writes)."""
    if device == "gpu":
        import cupy

        views = [cupy.asarray(a).reshape(-1).view(cupy.uint8) for a in arrays]
        views = [v.view(cupy.float32) if v.size % 4 == 0 else v for v in views]
        return lambda: [v.sum() for v in views]
    kern = _read_kernel()
    views = []
    for a in arrays:
        b = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        views.append(b[: b.size - b.size % 4].view(np.uint32))
    return lambda: [kern(v) for v in views]


# ----------------------------------------------------------------------------------- methods
#
# Every method is built by a function ``build_<peer>(device, labels, topk, z, lab)`` returning
# ``(fn, sync)`` or raising ``NotImplementedError(reason)``: ``fn()`` does the whole job and
# returns (loss, accuracy[, top5]); ``sync(out)`` waits for it (JAX, GPU). The asv suite
# (benchmarks/benchmarks/bench_peers.py) uses these same builders: one definition per peer.


def _nosync(out):
    return out


def _import(name: str):
    """Import an optional peer, or NotImplementedError (the asv way to say 'not here')."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install raising anything
        raise NotImplementedError(
            f"{name} is not importable ({type(exc).__name__}: {exc})") from None


def build_fastxent(device, labels, topk, z, lab):
    import fastxent as fx

    if labels == "multihot":
        return (lambda: _fx_out(fx.sigmoid_cross_entropy(z, lab), None)), _sync_for(device)
    top = topk or None
    return (lambda: _fx_out(fx.softmax_cross_entropy(z, lab, top_k=top), topk)), _sync_for(device)


def _fx_out(m, topk):
    if topk:
        return m.loss, m.accuracy, m.top_k_accuracy[5]
    return m.loss, m.accuracy


def _sync_for(device):
    if device == "gpu":
        return lambda out: out  # CUDA events around the call do the waiting
    return _nosync


def build_numpy(device, labels, topk, z, lab):
    if device != "cpu":
        raise NotImplementedError("NumPy runs on the CPU")

    if labels == "multihot":
        def f():
            loss = (np.maximum(z, 0) - z * lab + np.log1p(np.exp(-np.abs(z)))).mean()
            return loss, ((z > 0) == (lab > 0.5)).mean()
        return f, _nosync

    rows = np.arange(z.shape[0])

    def f():
        m = z.max(1, keepdims=True)
        lse = np.log(np.exp(z - m).sum(1)) + m[:, 0]
        am = z.argmax(1)
        if labels == "onehot":
            return (lse - (z * lab).sum(1)).mean(), (am == lab.argmax(1)).mean()
        loss = (lse - z[rows, lab]).mean()
        if topk:
            top = np.argpartition(-z, 4, axis=1)[:, :5]
            return loss, (am == lab).mean(), (top == lab[:, None]).any(1).mean()
        return loss, (am == lab).mean()
    return f, _nosync


def build_scipy(device, labels, topk, z, lab):
    if device != "cpu":
        raise NotImplementedError("SciPy runs on the CPU")
    special = _import("scipy.special")
    if labels == "multihot":
        def f():
            loss = -(lab * special.log_expit(z) + (1 - lab) * special.log_expit(-z)).mean()
            return loss, ((z > 0) == (lab > 0.5)).mean()
        return f, _nosync
    if topk:
        raise NotImplementedError("SciPy has no top-k")
    rows = np.arange(z.shape[0])

    def f():
        if labels == "onehot":
            loss = -(lab * special.log_softmax(z, axis=1)).sum(1).mean()
            return loss, (z.argmax(1) == lab.argmax(1)).mean()
        loss = (special.logsumexp(z, axis=1) - z[rows, lab]).mean()
        return loss, (z.argmax(1) == lab).mean()
    return f, _nosync


def _torch():
    torch = _import("torch")
    return torch


def _torch_fn(labels, topk):
    """The reference torch job (eager; torch.compile compiles this same function)."""
    import torch.nn.functional as F

    if labels == "multihot":
        def f(a, t):
            return (F.binary_cross_entropy_with_logits(a, t),
                    ((a > 0) == (t > 0.5)).float().mean())
    elif labels == "onehot":
        def f(a, t):
            return F.cross_entropy(a, t), (a.argmax(1) == t.argmax(1)).float().mean()
    elif topk:
        def f(a, y):
            top = a.topk(5, dim=1).indices
            return (F.cross_entropy(a, y), (a.argmax(1) == y).float().mean(),
                    (top == y[:, None]).any(1).float().mean())
    else:
        def f(a, y):
            return F.cross_entropy(a, y), (a.argmax(1) == y).float().mean()
    return f


def _as_torch(x):
    torch = _torch()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if torch.is_tensor(x):
        return x
    try:
        return torch.from_dlpack(x)
    except Exception:
        if str(x.dtype) != "bfloat16":
            raise
        # a CuPy without DLPack bfloat16 export: share the bits as uint16, relabel in torch
        import cupy

        return torch.from_dlpack(x.view(cupy.uint16)).view(torch.bfloat16)


def _torch_inputs(device, z, lab):
    torch = _torch()
    if device == "gpu" and not torch.cuda.is_available():
        raise NotImplementedError("torch has no CUDA here")
    return _as_torch(z), _as_torch(lab)


def build_torch(device, labels, topk, z, lab):
    zt, lt = _torch_inputs(device, z, lab)
    f = _torch_fn(labels, topk)
    return (lambda: f(zt, lt)), _sync_for(device)


def build_torch_compile(device, labels, topk, z, lab):
    torch = _torch()
    zt, lt = _torch_inputs(device, z, lab)
    if not hasattr(torch, "compile"):
        raise NotImplementedError("torch.compile needs torch >= 2.0")
    fc = torch.compile(_torch_fn(labels, topk))
    try:
        fc(zt, lt)   # compile now, outside any timing
    except Exception as exc:  # no C++ compiler, no triton, ...
        raise NotImplementedError(f"torch.compile failed: {type(exc).__name__}: {exc}") from None
    return (lambda: fc(zt, lt)), _sync_for(device)


def build_jax(device, labels, topk, z, lab):
    jax = _import("jax")
    jnp = _import("jax.numpy")
    want = "gpu" if device == "gpu" else "cpu"
    try:
        dev = jax.devices(want)[0]
    except RuntimeError:
        raise NotImplementedError(f"JAX has no {want} device") from None
    try:
        optax = importlib.import_module("optax")
    except ImportError:
        optax = None
    to_host = (lambda a: np.asarray(a.get())) if device == "gpu" else np.asarray
    zj = jax.device_put(to_host(z) if device == "gpu" else z, dev)
    lj = jax.device_put(to_host(lab) if device == "gpu" else lab, dev)

    if labels == "multihot":
        def f(a, t):
            if optax is not None:
                loss = optax.sigmoid_binary_cross_entropy(a, t).mean()
            else:
                loss = (jnp.maximum(a, 0) - a * t + jnp.log1p(jnp.exp(-jnp.abs(a)))).mean()
            return loss, ((a > 0) == (t > 0.5)).mean()
    elif labels == "onehot":
        def f(a, t):
            if optax is not None:
                loss = optax.softmax_cross_entropy(a, t).mean()
            else:
                loss = -(t * jax.nn.log_softmax(a, axis=1)).sum(1).mean()
            return loss, (a.argmax(1) == t.argmax(1)).mean()
    else:
        def f(a, y):
            if optax is not None:
                loss = optax.softmax_cross_entropy_with_integer_labels(a, y).mean()
            else:
                loss = (jax.nn.logsumexp(a, axis=1)
                        - jnp.take_along_axis(a, y[:, None], 1)[:, 0]).mean()
            acc = (a.argmax(1) == y).mean()
            if topk:
                top = jax.lax.top_k(a, 5)[1]
                return loss, acc, (top == y[:, None]).any(1).mean()
            return loss, acc
    fj = jax.jit(f)
    jax.block_until_ready(fj(zj, lj))  # compile outside timing
    return (lambda: fj(zj, lj)), jax.block_until_ready


def _keras():
    """Import Keras 3 on an installed backend.

    KERAS_BACKEND wins; else keras.json's backend if it is installed (Keras writes
    ``"tensorflow"`` there on its first import, installed or not); else the first installed of
    jax, torch, tensorflow.
    """
    if "keras" not in sys.modules and "KERAS_BACKEND" not in os.environ:
        cfg = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")),
                           "keras.json")
        try:
            with open(cfg) as fh:
                configured = json.load(fh).get("backend")
        except (OSError, ValueError):
            configured = None
        if configured is None or importlib.util.find_spec(configured) is None:
            for b in ("jax", "torch", "tensorflow"):
                if importlib.util.find_spec(b) is not None:
                    os.environ["KERAS_BACKEND"] = b
                    break
    return _import("keras")


def build_keras(device, labels, topk, z, lab):
    keras = _keras()
    backend = keras.backend.backend()
    if device == "gpu" and backend != "torch":
        raise NotImplementedError(f"GPU Keras: set up here for the torch backend, not {backend}")
    ops, losses, metrics = keras.ops, keras.losses, keras.metrics
    if device == "gpu":
        zk, lk = _torch_inputs(device, z, lab)
    else:
        zk, lk = ops.convert_to_tensor(z), ops.convert_to_tensor(lab)

    if labels == "multihot":
        def f(t, a):
            return (ops.mean(losses.binary_crossentropy(t, a, from_logits=True)),
                    ops.mean(metrics.binary_accuracy(t, a, threshold=0.0)))
    elif labels == "onehot":
        def f(t, a):
            return (ops.mean(losses.categorical_crossentropy(t, a, from_logits=True)),
                    ops.mean(metrics.categorical_accuracy(t, a)))
    else:
        def f(y, a):
            out = (ops.mean(losses.sparse_categorical_crossentropy(y, a, from_logits=True)),
                   ops.mean(metrics.sparse_categorical_accuracy(y, a)))
            if topk:
                out += (ops.mean(metrics.sparse_top_k_categorical_accuracy(y, a, k=5)),)
            return out
    if backend == "jax":
        import jax

        fj = jax.jit(f)
        jax.block_until_ready(fj(lk, zk))
        return (lambda: fj(lk, zk)), jax.block_until_ready
    return (lambda: f(lk, zk)), _sync_for(device)


def build_liger(device, labels, topk, z, lab):
    if device != "gpu":
        raise NotImplementedError("Liger-Kernel is a GPU (Triton) kernel")
    if labels != "sparse":
        raise NotImplementedError("Liger's cross-entropy takes sparse labels, top-1 only")
    mod = _import("liger_kernel.transformers.functional")
    zt, lt = _torch_inputs(device, z, lab)
    ce = mod.liger_cross_entropy
    try:
        ce(zt, lt, return_token_accuracy=True)
        return (lambda: ce(zt, lt, return_token_accuracy=True)), _sync_for(device)
    except TypeError:
        raise NotImplementedError("this Liger-Kernel has no return_token_accuracy") from None


def build_cupy(device, labels, topk, z, lab):
    if device != "gpu":
        raise NotImplementedError("naive CuPy runs on the GPU")
    cupy = _import("cupy")
    if z.dtype != cupy.float32:
        raise NotImplementedError("naive CuPy is timed in float32 only")
    if labels == "multihot":
        def f():
            loss = (cupy.maximum(z, 0) - z * lab + cupy.log1p(cupy.exp(-cupy.abs(z)))).mean()
            return loss, ((z > 0) == (lab > 0.5)).mean()
        return f, _sync_for(device)
    if topk:
        raise NotImplementedError("naive CuPy: no top-k here")

    def f():
        m = z.max(1, keepdims=True)
        lse = cupy.log(cupy.exp(z - m).sum(1)) + m[:, 0]
        if labels == "onehot":
            return (lse - (z * lab).sum(1)).mean(), (z.argmax(1) == lab.argmax(1)).mean()
        loss = (lse - cupy.take_along_axis(z, lab[:, None], 1)[:, 0]).mean()
        return loss, (z.argmax(1) == lab).mean()
    return f, _sync_for(device)


@dataclass(frozen=True)
class Peer:
    build: object          # build_<peer>(device, labels, topk, z, lab) -> (fn, sync)
    devices: tuple         # where it runs
    torch: bool            # uses torch (timed in the second phase, see the module doc)
    slow_start: bool       # compiles or imports for long: left out by --quick


PEERS: dict[str, Peer] = {
    "numpy naive": Peer(build_numpy, ("cpu",), False, False),
    "scipy logsumexp": Peer(build_scipy, ("cpu",), False, False),
    "jax jit": Peer(build_jax, ("cpu", "gpu"), False, True),
    "torch eager": Peer(build_torch, ("cpu", "gpu"), True, False),
    "torch.compile": Peer(build_torch_compile, ("cpu", "gpu"), True, True),
    "keras": Peer(build_keras, ("cpu", "gpu"), True, True),
    "liger-kernel": Peer(build_liger, ("gpu",), True, False),
    "cupy naive": Peer(build_cupy, ("gpu",), False, False),
}


def peer_names() -> list[str]:
    return list(PEERS)


def _keras_uses_torch() -> bool:
    b = os.environ.get("KERAS_BACKEND")
    if b is None and "keras" in sys.modules:
        b = sys.modules["keras"].backend.backend()
    return b in (None, "torch")  # unknown: put it in the torch phase, to be safe


# ----------------------------------------------------------------------------------- timing


@dataclass
class Timing:
    samples_ms: list[float]
    number: int                      # calls per sample (tiny workloads loop inside a sample)
    out: tuple = field(default=(), repr=False)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)


def time_cpu(fn, sync, repeat: int, min_sample_s: float = 0.005) -> Timing:
    """Median-able samples of wall time per call; tiny calls loop inside a sample."""
    t0 = time.perf_counter()
    out = sync(fn())                          # warm-up: JIT, caches, page faults
    once = time.perf_counter() - t0
    if once < 1.0:
        # the first call may include a compile or a load from Numba's disk cache (0.1-0.5 s):
        # size the samples on a second one. (Re-measuring only below min_sample_s timed
        # fastxent's S_256x1000 as 3 single calls, cache load included in the first.)
        t0 = time.perf_counter()
        out = sync(fn())
        once = time.perf_counter() - t0
    number = max(1, min(10_000, int(min_sample_s / max(once, 1e-9))))
    if once > 0.1:                            # slow peers: 3 samples are enough to show it
        repeat = min(repeat, 3)
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            out = sync(fn())
        samples.append((time.perf_counter() - t0) / number * 1e3)
    return Timing(samples, number, out)


def time_gpu(fn, sync, repeat: int, min_sample_ms: float = 1.0) -> Timing:
    """CUDA events on the current CuPy stream around ``number`` calls (UNVERIFIED here).

    CuPy and torch both queue on the legacy default stream, so the events bracket their
    kernels. A peer on other streams (JAX) is waited for by its ``sync`` inside the bracket.
    """
    import cupy

    stream = cupy.cuda.get_current_stream()
    for _ in range(3):                     # warm-up: NVRTC, autotuning, allocator pools
        sync(fn())
    _sync_all()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record(stream)
    sync(fn())
    end.record(stream)
    end.synchronize()
    once = cupy.cuda.get_elapsed_time(start, end)
    number = max(1, min(1000, int(min_sample_ms / max(once, 1e-6))))
    samples = []
    out = ()
    for _ in range(max(repeat, 10)):
        start.record(stream)
        for _ in range(number):
            out = sync(fn())
        end.record(stream)
        end.synchronize()
        samples.append(cupy.cuda.get_elapsed_time(start, end) / number)
    _sync_all()
    return Timing(samples, number, out)


def _sync_all():
    if "cupy" in sys.modules:
        sys.modules["cupy"].cuda.get_current_stream().synchronize()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def _as_float(v) -> float:
    if v is None:
        return math.nan
    if hasattr(v, "item"):
        try:
            return float(v.item())
        except Exception:
            pass
    if hasattr(v, "get"):   # CuPy
        return float(v.get())
    return float(np.asarray(v))


def _agreement(out, ref, labels) -> tuple[bool, str]:
    """Compare a peer's (loss, acc[, top5]) with fastxent's: same job, same numbers?"""
    if not out or not ref:
        return False, "no output"
    vals = [_as_float(v) for v in out[:3]]
    refs = [_as_float(v) for v in ref[:3]]
    loss, lref = vals[0], refs[0]
    rel = abs(loss - lref) / max(abs(lref), 1e-30)
    notes = []
    # float32 peers sum millions of float32 terms in float32: 1e-3 relative is their noise
    if not rel <= 1e-3:
        notes.append(f"loss {loss:.6g} vs {lref:.6g}")
    for name, v, r in zip(("acc", "top5"), vals[1:], refs[1:], strict=False):
        if not abs(v - r) <= 1e-5:
            notes.append(f"{name} {v:.6g} vs {r:.6g}")
    return not notes, "; ".join(notes) or "ok"


# ----------------------------------------------------------------------------------- running


def _machine(device: str) -> dict:
    info = {
        "device": device,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cores_available": _ncores(),
        "numpy": np.__version__,
    }
    for mod in ("numba", "scipy", "torch", "jax", "keras", "cupy", "liger_kernel"):
        if mod in sys.modules:
            info[mod] = getattr(sys.modules[mod], "__version__", "?")
    if "numba" in sys.modules:
        import numba

        info["numba_threads"] = numba.get_num_threads()
        info["numba_threading_layer"] = _threading_layer()
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    if device == "gpu" and "cupy" in sys.modules:
        cupy = sys.modules["cupy"]
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return info


def _threading_layer() -> str:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return "?"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _ncores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _select(device: str, names: list[str] | None, size: str) -> list[Workload]:
    mine = [w for w in WORKLOADS if w.device == device]
    if not names:
        return [w for w in mine if w.in_default or size == "full"]
    if names == ["all"]:
        return mine
    out = []
    for n in names:
        hit = [w for w in mine if w.key == n]
        if not hit:
            keys = ", ".join(w.key for w in mine)
            raise SystemExit(f"fastxent bench: unknown {device} workload {n!r}; one of: {keys}")
        out += hit
    return out


class _Inputs:
    """Arrays per workload, generated once; kept between the two phases when they are small."""

    KEEP_BYTES = 2 << 30

    def __init__(self, device: str, size: str, dtype: str):
        self.device, self.size, self.dtype = device, size, dtype
        self.cache: dict[str, tuple] = {}

    def get(self, w: Workload):
        if w.key in self.cache:
            return self.cache[w.key]
        rows, classes = w.shape(self.size)
        labels = "sparse" if w.labels == "top5" else w.labels
        base = "B_256kx1000" if w.name == "D_dense" else w.name   # D is B with one-hot labels
        z, lab = make_inputs_numpy(rows, classes, labels, base)
        if self.device == "gpu":
            z, lab = _to_gpu(z, lab, self.dtype if w.kind == "softmax" else "float32")
        return z, lab

    def keep(self, w: Workload, arrays):
        if sum(_nbytes(*a) for a in self.cache.values()) + _nbytes(*arrays) <= self.KEEP_BYTES:
            self.cache[w.key] = arrays

    def drop(self):
        self.cache.clear()


def _measure(name, builder, w, z, lab, device, repeat, ref) -> dict:
    rec = {"method": name}
    try:
        fn, sync = builder(device, w.labels, w.topk, z, lab)
        timer = time_gpu if device == "gpu" else time_cpu
        t = timer(fn, sync, repeat)
    except NotImplementedError as exc:
        rec["skipped"] = str(exc)
        return rec
    except Exception as exc:  # a peer that breaks must not take the run down
        rec["error"] = f"{type(exc).__name__}: {exc}"
        _progress(f"  {name} failed on {w.key}: {rec['error']}")
        return rec
    # a method's figure is its median sample; the read limit is a bound: its fastest sample
    best = name == "read limit"
    rec.update(time_ms=min(t.samples_ms) if best else t.median_ms,
               stat="min" if best else "median", samples_ms=t.samples_ms,
               calls_per_sample=t.number)
    if ref is None:
        rec["out"] = t.out
    else:
        ok, note = _agreement(t.out, ref, w.labels)
        rec.update(agrees=ok, check=note)
    return rec


def run(device: str = "cpu", workloads: list[str] | None = None, repeat: int = 5,
        size: str = "default", dtype: str = "float32", peers: list[str] | None = None,
        quick_peers: bool = False) -> dict:
    """Run the comparison and return the results as a JSON-able dict (see module doc)."""
    global _T0
    _T0 = time.perf_counter()
    if device == "gpu":
        _import("cupy")
    sel = _select(device, workloads, size)
    ncores = _ncores()
    peer_list = [p for p in (peers or list(PEERS)) if p in PEERS and device in PEERS[p].devices]
    if quick_peers:
        peer_list = [p for p in peer_list if not PEERS[p].slow_start]
    keras_torch = _keras_uses_torch()
    phase1 = [p for p in peer_list if not (PEERS[p].torch or (p == "keras" and keras_torch))]
    phase2 = [p for p in peer_list if p not in phase1]
    if device == "gpu":            # no CPU thread interference on the GPU: one phase
        phase1, phase2 = peer_list, []
    inputs = _Inputs(device, size, dtype)
    results = {w.key: {"workload": w.key, "name": w.name, "labels": w.labels,
                       "rows": w.shape(size)[0], "classes": w.shape(size)[1],
                       "dtype": dtype if (device == "gpu" and w.kind == "softmax") else "float32",
                       "methods": []} for w in sel}
    refs: dict[str, tuple] = {}

    def one_workload(w, peers_here, phase):
        z, lab = inputs.get(w)
        res = results[w.key]
        res["bytes"] = _nbytes(z, lab)
        if phase == 1:
            _progress(f"{w.key}: {res['rows']:,} x {res['classes']:,} {w.labels}, "
                      f"{res['bytes'] / 1e6:.0f} MB")
            time.sleep(SETTLE_S)
            lim = _measure("read limit", _build_read_limit, w, z, lab, device, repeat, None)
            lim.pop("out", None)
            res["methods"].append(lim)
            fx = _measure("fastxent", build_fastxent, w, z, lab, device, repeat, None)
            refs[w.key] = fx.pop("out", ())
            res["fastxent_values"] = [_as_float(v) for v in refs[w.key]]
            res["methods"].append(fx)
        for p in peers_here:
            _progress(f"  {w.key}: {p}")
            res["methods"].append(_measure(p, PEERS[p].build, w, z, lab, device, repeat,
                                           refs.get(w.key)))
        if phase == 2:
            again = _measure("fastxent (after torch)", build_fastxent, w, z, lab, device,
                             repeat, refs.get(w.key))
            res["methods"].append(again)
        if phase == 1 and phase2:
            inputs.keep(w, (z, lab))
        del z, lab

    _progress(f"device {device}, {len(sel)} workloads, {size} sizes, repeat {repeat}, "
              f"{ncores} cores; peers: {', '.join(peer_list) or 'none'}")
    for w in sel:
        one_workload(w, phase1, 1)
    if phase2:
        try:
            torch = _torch()
            torch.set_num_threads(ncores)
        except NotImplementedError as exc:
            _progress(f"torch peers skipped: {exc}")
            for w in sel:
                for p in phase2:
                    results[w.key]["methods"].append({"method": p, "skipped": str(exc)})
            phase2 = []
        for w in sel if phase2 else []:
            one_workload(w, phase2, 2)
    inputs.drop()
    for res in results.values():
        _derive(res)
    return {
        "command": "fastxent bench",
        "size": size,
        "repeat": repeat,
        "machine": _machine(device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "workloads": list(results.values()),
        "summary": [_summary(r) for r in results.values()],
    }


def _derive(res: dict) -> None:
    """GB/s, % of the read limit, time / fastxent for each measured method."""
    times = {m["method"]: m["time_ms"] for m in res["methods"] if "time_ms" in m}
    lim, fx = times.get("read limit"), times.get("fastxent")
    for m in res["methods"]:
        t = m.get("time_ms")
        if t is None:
            continue
        m["gb_per_s"] = res["bytes"] / (t * 1e-3) / 1e9
        # inputs that fit in cache have no memory-read limit to speak of (S_256x1000, --quick)
        m["pct_read_limit"] = 100.0 * lim / t if lim and res["bytes"] >= MIN_LIMIT_BYTES else None
        m["vs_fastxent"] = t / fx if fx else None


def _is_peer(name: str) -> bool:
    return name in PEERS


def _summary(res: dict) -> dict:
    meas = {m["method"]: m for m in res["methods"] if "time_ms" in m}
    fx = meas.get("fastxent")
    peers = {k: v["time_ms"] for k, v in meas.items() if _is_peer(k)}
    out = {"workload": res["workload"], "fastxent_ms": fx and fx["time_ms"],
           "fastxent_after_torch_ms": meas.get("fastxent (after torch)", {}).get("time_ms"),
           "pct_read_limit": fx and fx["pct_read_limit"],
           "read_limit_gb_per_s": meas.get("read limit", {}).get("gb_per_s"),
           "peers_ms": peers}
    if fx and peers:
        best = min(peers, key=peers.get)
        out.update(best_peer=best, best_peer_ms=peers[best],
                   speedup_vs_best_peer=peers[best] / fx["time_ms"],
                   speedup_vs_peer={k: v / fx["time_ms"] for k, v in peers.items()})
    return out


# ----------------------------------------------------------------------------------- output


def _fmt_ms(t) -> str:
    if t is None:
        return "-"
    if t >= 100:
        return f"{t:,.0f}"
    if t >= 1:
        return f"{t:.1f}"
    return f"{t:.3f}"


def _fmt_shape(res) -> str:
    return f"{res['rows']:,} x {res['classes']:,}"


def format_tables(report: dict) -> str:
    mach = report["machine"]
    head = [f"fastxent bench: {mach['device']}, {mach['cpu']}, {mach['cores_available']} cores"
            + (f", GPU {mach['gpu']}" if "gpu" in mach else ""),
            "  " + ", ".join(f"{k} {mach[k]}" for k in
                             ("python", "numpy", "numba", "scipy", "torch", "jax", "keras",
                              "cupy", "liger_kernel") if k in mach),
            f"  threads: numba {mach.get('numba_threads', '?')} "
            f"({mach.get('numba_threading_layer', '?')}), torch {mach.get('torch_threads', '-')}; "
            f"sizes: {report['size']}; median of {report['repeat']} samples (read limit: "
            f"fastest); "
            f"loss + accuracy per call; {report['date']}", ""]
    lines = head
    hdr = f"{'method':<24}{'median ms':>11}{'GB/s':>9}{'% read':>8}{'/ fastxent':>12}  check"
    for res in report["workloads"]:
        lines.append(f"{res['workload']}  ({_fmt_shape(res)}, {res['labels']} labels, "
                     f"{res['dtype']}, {res['bytes'] / 1e6:,.0f} MB read)")
        lines.append(hdr)
        for m in res["methods"]:
            if "time_ms" not in m:
                why = m.get("skipped") or m.get("error", "")
                if "skipped" in m and "not importable" in why:
                    why = "not installed"
                lines.append(f"  {m['method']:<22}{'':>11}  -- {why[:70]}")
                continue
            pct = m.get("pct_read_limit")
            vs = m.get("vs_fastxent")
            is_lim = m["method"] == "read limit"
            lines.append(
                f"  {m['method']:<22}{_fmt_ms(m['time_ms']):>11}{m['gb_per_s']:>9.1f}"
                f"{(f'{pct:.0f}%' if pct is not None else '-'):>8}"
                f"{('' if is_lim or vs is None else f'{vs:.2f}'):>12}  "
                f"{'' if is_lim else m.get('check', 'ref')}")
        lines.append("")
    lines += _format_summary(report)
    return "\n".join(lines)


def _format_summary(report: dict) -> list[str]:
    peers = []
    for s in report["summary"]:
        for p in s["peers_ms"]:
            if p not in peers:
                peers.append(p)
    lines = ["Summary: fastxent speed-up = peer time / fastxent time (> 1: fastxent faster)",
             f"{'workload':<20}{'fastxent ms':>12}{'after torch':>12}{'% read':>8}"
             f"{'best peer':>18}{'x best':>8}" + "".join(f"{p[:13]:>15}" for p in peers)]
    for s in report["summary"]:
        pct = s.get("pct_read_limit")
        line = (f"{s['workload']:<20}{_fmt_ms(s['fastxent_ms']):>12}"
                f"{_fmt_ms(s['fastxent_after_torch_ms']):>12}"
                f"{(f'{pct:.0f}%' if pct is not None else '-'):>8}")
        if "best_peer" in s:
            line += f"{s['best_peer'][:17]:>18}{s['speedup_vs_best_peer']:>7.2f}x"
            line += "".join(f"{s['speedup_vs_peer'][p]:>14.2f}x" if p in s["speedup_vs_peer"]
                            else f"{'-':>15}" for p in peers)
        lines.append(line)
    return lines


def plot(report: dict, path: str) -> None:
    """Grouped bars: effective GB/s per method and workload (log scale), read limit marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("fastxent bench --plot needs matplotlib: "
                         "pip install 'fastxent[plot]'") from None
    wls = [r for r in report["workloads"] if any("time_ms" in m for m in r["methods"])]
    methods = []
    for r in wls:
        for m in r["methods"]:
            if "time_ms" in m and m["method"] not in ("read limit", *methods):
                methods.append(m["method"])
    cmap = plt.get_cmap("tab10")
    colors = {m: cmap(i % 10) for i, m in enumerate(methods)}
    hatches = {"fastxent": "", "fastxent (after torch)": "//"}
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(wls) + 3), 5.5), dpi=110)
    for j, m in enumerate(methods):
        xs, ys = [], []
        for i, r in enumerate(wls):
            hit = [x for x in r["methods"] if x["method"] == m and "time_ms" in x]
            if hit:
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(hit[0]["gb_per_s"])
        ax.bar(xs, ys, width, label=m, color=colors[m], hatch=hatches.get(m, ""),
               edgecolor="black" if m.startswith("fastxent") else "none", linewidth=0.6)
    for i, r in enumerate(wls):
        lim = [x for x in r["methods"] if x["method"] == "read limit" and "gb_per_s" in x]
        if lim and r["bytes"] >= MIN_LIMIT_BYTES:   # cache-resident inputs: no memory limit
            ax.hlines(lim[0]["gb_per_s"], i - 0.42, i + 0.42, colors="black",
                      linestyles="dashed", linewidth=1.2,
                      label="read limit (parallel sum, same arrays)" if i == 0 else None)
    s_by = {s["workload"]: s for s in report["summary"]}
    for i, r in enumerate(wls):
        s = s_by.get(r["workload"], {})
        if "speedup_vs_best_peer" in s:
            x = s["speedup_vs_best_peer"]
            r = x if x >= 1 else 1 / x
            r = f"{r:.2f}" if r < 1.2 else f"{r:.1f}"
            verdict = f"{r}x faster" if x >= 1 else f"{r}x slower"
            ax.annotate(f"fastxent {verdict}\nthan {s['best_peer']}", (i, 1),
                        xycoords=("data", "axes fraction"), xytext=(0, -3),
                        textcoords="offset points", ha="center", va="top", fontsize=7.5,
                        color="black" if x >= 1 else "firebrick")
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * 6)  # headroom for the verdicts above the bars and limits
    ax.set_xticks(range(len(wls)))
    ax.set_xticklabels([f"{r['workload']}\n{_fmt_shape(r)}\n{r['labels']}, {r['dtype']}"
                        for r in wls], fontsize=8)
    ax.set_ylabel("effective throughput, GB/s (log scale)\n"
                  "= bytes of predictions + labels / median time per call")
    ax.set_xlabel("workload (rows x classes, labels, dtype)")
    mach = report["machine"]
    where = mach.get("gpu") or f"{mach['cpu']}, {mach['cores_available']} cores"
    ax.set_title(f"fastxent bench ({report['size']} sizes): loss + accuracy, higher is better\n"
                 f"{where}; {report['date']}", fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastxent bench",
        description="Time fastxent and every installed peer (NumPy, SciPy, PyTorch eager, "
                    "torch.compile, JAX, Keras; on the GPU Liger-Kernel and CuPy) on the same "
                    "arrays, loss + accuracy per call, beside a measured memory-read limit.")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--workload", nargs="+", metavar="NAME",
                   help="workload names of BENCHMARKS.md (e.g. A_4Mx10 B_256kx1000/onehot), "
                        "or 'all'; default: the six main ones")
    p.add_argument("--repeat", type=int, default=None, metavar="N",
                   help="timed samples per method (median reported); default 5, --quick 3")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="smoke test: tiny arrays, peers that need no long compile")
    size.add_argument("--full", action="store_true",
                      help="BENCHMARKS.md's sizes and label variants (minutes on a CPU)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="logits dtype of the softmax workloads (GPU only; the CPU times float32)")
    p.add_argument("--peers", nargs="+", metavar="PEER", choices=list(PEERS),
                   help=f"only these peers (default: all installed): {', '.join(PEERS)}")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--plot", metavar="FILE.png", help="write a bar chart (needs matplotlib)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fastxent bench``; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.device == "cpu" and args.dtype != "float32":
        raise SystemExit("fastxent bench: --dtype applies to --device gpu (the CPU times float32)")
    size = "quick" if args.quick else "full" if args.full else "default"
    if args.device == "gpu" and size == "default":
        size = "full"
    repeat = args.repeat or (3 if args.quick else 5)
    if repeat < 1:
        raise SystemExit("fastxent bench: --repeat must be >= 1")
    if args.device == "gpu":
        try:
            importlib.import_module("cupy")
        except ImportError:
            raise SystemExit("fastxent bench --device gpu needs CuPy: pip install "
                             "'fastxent[cuda12]' (or [cuda13])") from None
    report = run(args.device, args.workload, repeat, size, args.dtype, args.peers,
                 quick_peers=args.quick)
    if args.json:
        print(json.dumps(report, indent=1, default=_json_default))
    else:
        print(format_tables(report))
    if args.plot:
        plot(report, args.plot)
        _progress(f"chart written to {args.plot}")
    return 0


def _json_default(o):
    if isinstance(o, (np.generic,)):
        return o.item()
    if is_dataclass_instance(o):
        return asdict(o)
    return str(o)


def is_dataclass_instance(o) -> bool:
    return hasattr(o, "__dataclass_fields__") and not isinstance(o, type)


if __name__ == "__main__":
    sys.exit(main())
