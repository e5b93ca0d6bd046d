"""CUDA engine: launchers of the kernels in ``kernels/*.cu`` (compiled by NVRTC via CuPy).

Same module protocol as :mod:`fastxent.backends.numba_cpu`: ``NAME``, ``softmax_xent``,
``sigmoid_xent``, ``asarray``, ``wrap``, ``call_context``, ``first_bad``, ``finalize``.
Per-row semantics are the CPU engine's (its module docstring); the kernels' header comments
derive the math. Layers: kernels compute, these launchers pick the template instance, grid
and block, allocate and launch; ``fastxent.api`` validates.

No host synchronisation anywhere here except :func:`first_bad` (the single sync that
``validate=True`` pays to raise IndexError). Each launch writes into one freshly zeroed int64
buffer holding ``counts | exact limbs | first_bad | ticket``; the kernel's last block turns
the raw limbs into the canonical form of :mod:`fastxent._state` and decodes first_bad.

Array-type decisions
--------------------
* ``asarray`` returns a ``cupy.ndarray`` (zero-copy). bfloat16 inputs keep CuPy's bfloat16
  dtype, which needs CuPy >= 14 with ``ml_dtypes`` (and NumPy >= 2.1.2): the dtype *is* the
  tag, and the launchers reinterpret the bits as uint16 for the kernels. On an older CuPy a
  bfloat16 input raises TypeError saying so.
* Sparse labels of int32/int64 are read in place; other integer dtypes are cast to int64 (an
  (N,) copy). Integer dense labels / targets are cast to float64 (exact), bool is read as bytes.
* Strided logits and labels are read in place with 64-bit element strides; 16-byte vector
  loads are used when a row is contiguous and 16-byte aligned.

UNVERIFIED: written on a machine without a GPU; the kernels compile with nvcc for sm_90 (all
instantiations, scripts/check_kernels.sh) but have not run. tests/test_cuda.py is the check.
"""

from __future__ import annotations

import contextlib
import functools
import sys

import numpy as np

from .. import _state as S
from .. import config
from . import Partial, SigmoidOptions, SoftmaxOptions

try:
    import cupy
except ImportError as exc:  # pragma: no cover - exercised by tests/test_cuda_dispatch.py
    raise ImportError(
        "fastxent got a GPU array but CuPy is not installed; install the CUDA extra that "
        "matches your driver: pip install fastxent[cuda12] or pip install fastxent[cuda13]"
    ) from exc

from . import _cuda_module as M
from . import _torch_bridge as TB

NAME = "cuda"
xp = cupy                 # the engine's array module (fastxent._core uses it for casts)

MAX_K = 8                 # FX_MAXK in kernels/common.cuh
SMALL_C = 32              # C <= SMALL_C: one thread per row
WARP_C = 8192             # C <= WARP_C: one warp per row; above: one block per row
THREADS = config.CUDA_THREADS_PER_BLOCK   # 256 (kernels declare __launch_bounds__(256))
BLOCKS_PER_SM = 2048 // THREADS           # persistent grid: one full wave of resident threads

# kernel flag bits (kernels/softmax_xent.cu, kernels/sigmoid_xent.cu)
F_FROM_LOGITS, F_CW_INSIDE, F_ANYTIE, F_IGNORE, F_WANT_ROWS = 1, 2, 4, 8, 16
F_WEIGHTED, F_VEC, F_RENORM, F_WANT_CAT = 32, 64, 128, 256

_NULL = np.uint64(0)      # a null pointer argument (kernel params are 8-byte pointers)
_I64, _I32, _F64 = np.int64, np.int32, np.float64


# =========================================================================== array protocol


def _is_bf16(dtype) -> bool:
    return getattr(dtype, "name", str(dtype)) == "bfloat16"


def asarray(x):
    """A device array of any supported library as a ``cupy.ndarray``, without a copy.

    CuPy arrays as they are; torch CUDA tensors, JAX GPU arrays and other DLPack producers
    through DLPack; anything else with ``__cuda_array_interface__`` through CuPy's interface
    import. DLPack comes first: its import orders the producer's pending work before ours,
    while JAX's ``__cuda_array_interface__`` names no stream (a freshly dispatched ``jit``
    output read through it could still be being written).
    """
    if isinstance(x, cupy.ndarray):
        return x
    try:
        if TB.is_torch(x):
            return TB.to_cupy(x)
        if hasattr(x, "__dlpack__"):
            try:
                return cupy.from_dlpack(x)
            except (BufferError, TypeError, ValueError, RuntimeError):
                if not hasattr(x, "__cuda_array_interface__"):
                    raise
        if hasattr(x, "__cuda_array_interface__"):
            return cupy.asarray(x)
    except (BufferError, TypeError, ValueError, RuntimeError) as exc:
        if _is_bf16(getattr(x, "dtype", None)) or "bfloat16" in str(exc):
            raise TypeError(
                "bfloat16 GPU arrays need CuPy >= 14 with ml_dtypes installed (pip install "
                "'cupy-cuda12x>=14' ml_dtypes), or convert with .float()"
            ) from exc
        raise
    raise TypeError(f"cannot read {type(x).__module__}.{type(x).__name__} as a GPU array")


def wrap(arr, like):
    """A CuPy result in the library of ``like`` (the caller's logits), same device."""
    if isinstance(like, cupy.ndarray) or arr is None:
        return arr
    if TB.is_torch(like):
        return TB.from_cupy(arr, like)
    mod = type(like).__module__.split(".")[0]
    if mod in ("jax", "jaxlib"):
        import jax.dlpack

        return jax.dlpack.from_dlpack(arr)
    return arr   # __cuda_array_interface__ producers: a CuPy array reads as one


def call_context(like):
    """Enter the caller's device and stream (torch: its current stream)."""
    if TB.is_torch(like):
        return TB.context(like)
    stack = contextlib.ExitStack()
    if isinstance(like, cupy.ndarray):
        stack.enter_context(like.device)
        return stack
    mod = type(like).__module__.split(".")[0]
    if mod in ("jax", "jaxlib"):
        # JAX runs on its own streams; DLPack import synchronises with them (JAX docs).
        dev = next(iter(like.devices()))
        stack.enter_context(cupy.cuda.Device(dev.id))
        return stack
    cai = getattr(like, "__cuda_array_interface__", None)
    if cai is not None:
        ptr = cai["data"][0]
        if ptr:
            attrs = cupy.cuda.runtime.pointerGetAttributes(ptr)
            stack.enter_context(cupy.cuda.Device(attrs.device))
        stream = cai.get("stream")
        if stream not in (None, 1, 2):   # 1 / 2: legacy / per-thread default stream
            stack.enter_context(cupy.cuda.ExternalStream(stream))
    return stack


def first_bad(partial: Partial) -> int:
    """The one synchronisation of ``validate=True``: the first bad row, or -1."""
    fb = partial.first_bad
    return int(fb.get()) if isinstance(fb, cupy.ndarray) else int(fb)


# =========================================================================== launch helpers


@functools.cache
def _sm_count(device_id: int) -> int:
    return int(cupy.cuda.Device(device_id).attributes["MultiProcessorCount"])


def _grid(n_rows: int, group: int) -> tuple[int, int]:
    """(blocks, threads): a persistent grid of at most one wave of resident blocks."""
    rows_per_block = 1 if group == 0 else THREADS // group
    need = -(-n_rows // rows_per_block)
    cap = _sm_count(cupy.cuda.runtime.getDevice()) * BLOCKS_PER_SM
    return max(1, min(need, cap)), THREADS


def _group(C: int) -> int:
    return 1 if C <= SMALL_C else (32 if C <= WARP_C else 0)


def _kernel_view(a):
    """float16 / bfloat16 / bool as raw words (same strides) for the kernels."""
    name = a.dtype.name
    if name in ("float16", "bfloat16"):
        return a.view(cupy.uint16)
    if name == "bool":
        return a.view(cupy.uint8)
    return a


def _estrides(a) -> tuple[int, int]:
    """Element strides of a 2-D array (64-bit)."""
    s0, s1 = a.strides
    return int(s0 // a.itemsize), int(s1 // a.itemsize)


def _vec_ok(a) -> bool:
    """Rows contiguous and 16-byte aligned: 16-byte vector loads are safe."""
    n, C = a.shape
    s0, s1 = a.strides
    if C > 1 and s1 != a.itemsize:
        return False
    return a.data.ptr % 16 == 0 and (n <= 1 or s0 % 16 == 0)


def _dense_labels(t):
    """Dense labels / targets in a kernel-readable dtype (integers: exact float64 copy)."""
    name = t.dtype.name
    if name in M.DENSE_LABEL_CT:
        return t, name
    return t.astype(cupy.float64), "float64"


def _f64(a):
    return None if a is None else cupy.ascontiguousarray(cupy.asarray(a), dtype=cupy.float64)


def _ptr(a):
    return _NULL if a is None else a


def _state_buffer(nc: int, nq: int):
    """counts (nc,), exact (nq, 68), first_bad (), ticket: one zeroed int64 buffer."""
    size = nc + nq * S.NLIMBS + 2
    buf = cupy.zeros(size, dtype=cupy.int64)
    counts = buf[:nc]
    exact = buf[nc:nc + nq * S.NLIMBS].reshape(nq, S.NLIMBS)
    fb = buf[size - 2:size - 1].reshape(())
    ticket = buf[size - 1:]
    return buf, counts, exact, fb, ticket


def _compute_dtype(dtype):
    return cupy.float64 if dtype.name == "float64" else cupy.float32


# =========================================================================== launchers


def softmax_xent(logits, labels, opts: SoftmaxOptions) -> Partial:
    """Softmax cross-entropy + accuracy + top-k of CuPy ``logits`` (N, C); no host sync."""
    n, C = (int(d) for d in logits.shape)
    ks = tuple(int(k) for k in opts.ks)
    K = len(ks)
    if K > MAX_K:
        raise NotImplementedError(
            f"the CUDA engine computes at most {MAX_K} top-k values per call, got {K}; "
            "split top_k over several calls")
    nq = S.NX + K
    _, counts, exact, fb, ticket = _state_buffer(S.NCOUNTS + K, nq)
    cdt = _compute_dtype(logits.dtype)
    row_loss = row_correct = row_hits = None
    if opts.want_rows:
        row_loss = cupy.zeros(n, dtype=cdt)
        row_correct = cupy.zeros(n, dtype=cupy.bool_)
        row_hits = cupy.zeros((n, K), dtype=cupy.bool_)
    if n == 0:
        fb.fill(-1)
        return Partial(counts, exact, row_loss, row_correct, None, row_hits, fb)

    z = _kernel_view(logits)
    zs0, zs1 = _estrides(logits)
    if opts.dense:
        lab, lname = _dense_labels(labels)
        lab = _kernel_view(lab)
        ls0, ls1 = _estrides(lab)
    else:
        lname = labels.dtype.name
        lab = labels
        if lname not in M.SPARSE_LABEL_CT:
            lab, lname = labels.astype(cupy.int64), "int64"
        ls0, ls1 = int(lab.strides[0] // lab.itemsize), 0
    cw = _f64(opts.class_weight)
    sw = _f64(opts.sample_weight)
    has_sw = sw is not None
    group = _group(C)
    name = M.softmax_name(logits.dtype.name, lname, bool(opts.dense), group, has_sw)
    kern = M.get_function("softmax_xent.cu", name)

    flags = ((F_FROM_LOGITS if opts.from_logits else 0) | (F_CW_INSIDE if opts.cw_inside else 0)
             | (F_ANYTIE if opts.topk_any_tie else 0)
             | (F_IGNORE if opts.ignore_index is not None else 0)
             | (F_WANT_ROWS if opts.want_rows else 0)
             | (F_WEIGHTED if (has_sw or cw is not None) else 0)
             | (F_VEC if _vec_ok(logits) else 0) | (F_RENORM if opts.renormalize else 0))
    kk = list(ks) + [0] * (MAX_K - K)
    blocks, threads = _grid(n, group)
    kern((blocks,), (threads,), (
        # data ptrs
        z, lab, _ptr(cw), _ptr(sw),
        # outputs
        counts, exact, fb, ticket, _ptr(row_loss), _ptr(row_correct), _ptr(row_hits),
        # shapes
        _I64(n), _I64(C),
        # strides (elements)
        _I64(zs0), _I64(zs1), _I64(ls0), _I64(ls1),
        # constants
        _I32(flags), _I64(opts.ignore_index if opts.ignore_index is not None else 0),
        _F64(opts.label_smoothing), _F64(opts.eps), _F64(opts.thr), _F64(config.SUM_TO_ONE_TOL),
        _I32(K), *(_I32(k) for k in kk),
    ))
    return Partial(counts, exact, row_loss, row_correct, None, row_hits, fb)


def sigmoid_xent(logits, targets, opts: SigmoidOptions) -> Partial:
    """Sigmoid cross-entropy + element / exact-match accuracy of CuPy ``logits`` (N, C)."""
    n, C = (int(d) for d in logits.shape)
    _, counts, exact, fb, ticket = _state_buffer(S.NCOUNTS, S.NX)
    cdt = _compute_dtype(logits.dtype)
    row_loss = row_correct = row_elem = None
    if opts.want_rows:
        row_loss = cupy.zeros(n, dtype=cdt)
        row_correct = cupy.zeros(n, dtype=cupy.bool_)
        row_elem = cupy.zeros(n, dtype=cdt)
    if n == 0:
        fb.fill(-1)
        return Partial(counts, exact, row_loss, row_correct, row_elem, None, fb)

    z = _kernel_view(logits)
    zs0, zs1 = _estrides(logits)
    tg, tname = _dense_labels(targets)
    tg = _kernel_view(tg)
    ts0, ts1 = _estrides(tg)
    pw, colw, sw = _f64(opts.pos_weight), _f64(opts.col_weight), _f64(opts.sample_weight)
    has_sw = sw is not None
    group = _group(C)
    name = M.sigmoid_name(logits.dtype.name, tname, group, has_sw)
    kern = M.get_function("sigmoid_xent.cu", name)
    flags = ((F_FROM_LOGITS if opts.from_logits else 0) | (F_WANT_ROWS if opts.want_rows else 0)
             | (F_WEIGHTED if has_sw else 0) | (F_VEC if _vec_ok(logits) else 0)
             | (F_WANT_CAT if opts.want_cat else 0))
    blocks, threads = _grid(n, group)
    kern((blocks,), (threads,), (
        # data ptrs
        z, tg, _ptr(pw), _ptr(colw), _ptr(sw),
        # outputs
        counts, exact, fb, ticket, _ptr(row_loss), _ptr(row_correct), _ptr(row_elem),
        # shapes
        _I64(n), _I64(C),
        # strides (elements)
        _I64(zs0), _I64(zs1), _I64(ts0), _I64(ts1),
        # constants
        _I32(flags), _F64(opts.label_smoothing), _F64(opts.eps), _F64(opts.log_floor),
        _F64(opts.thr), _F64(config.SUM_TO_ONE_TOL),
    ))
    return Partial(counts, exact, row_loss, row_correct, row_elem, None, fb)


# =========================================================================== finalize


def finalize(state: S.State, reduction: str) -> dict:
    """Reduced values as 0-d CuPy arrays computed on the device (no host sync).

    Mirrors :meth:`fastxent._state.State.scalars`; see kernels/finalize.cu for the rounding
    of the quotients of exact sums.
    """
    K = len(state.ks)
    counts = cupy.ascontiguousarray(cupy.asarray(state.counts), dtype=cupy.int64)
    exact = cupy.ascontiguousarray(cupy.asarray(state.exact), dtype=cupy.int64)
    out = cupy.empty(4 + K, dtype=cupy.float64)
    count = cupy.empty((), dtype=cupy.int64)
    kern = M.get_function("finalize.cu", "fx_finalize")
    threads = 32 * (-(-(4 + K) // 32))
    kern((1,), (threads,), (
        counts, exact, out, count,
        _I32(K), _I64(state.n_classes),
        _I32(int(bool(state.weighted))), _I32(int(bool(state.sample_weighted))),
        _I32(1 if reduction == "sum" else 0),
    ))
    return {
        "loss": out[0], "cat": out[1], "elem": out[2], "exact": out[3],
        "topk": [out[4 + j] for j in range(K)],
        "count": count,
    }


def _loaded() -> bool:  # used by tests: the engine module imported cupy, not torch
    return "cupy" in sys.modules
