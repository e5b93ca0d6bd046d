"""The CUDA sources compile under NVRTC, the run-time compiler CuPy hands them to on a GPU.

No GPU is needed: NVRTC turns source into PTX on any machine. ``scripts/check_kernels.sh``
compiles the same files with nvcc, whose host headers define what NVRTC's do not (``NAN``
came from the host ``math.h``, so every kernel compiled under nvcc and none under NVRTC);
this test compiles exactly what the engine would: ``_cuda_module.source()`` (includes
inlined), ``config.CUDA_NVRTC_OPTIONS``, and name expressions built by the launcher's own
``softmax_name`` / ``sigmoid_name``. It uses the NVRTC library of the ``nvidia-cuda-nvrtc``
wheel (the test extra installs it on Linux x86-64) through ctypes, and skips without it.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os

import pytest

from fastxent import config
from fastxent.backends import _cuda_module as M


def _libnvrtc():
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations) if spec else []
    for root in roots:
        for pattern in ("cu*/lib/libnvrtc.so*", "cuda_nvrtc/lib/libnvrtc.so*"):
            for path in sorted(glob.glob(os.path.join(root, pattern)), reverse=True):
                if "builtins" not in path:
                    try:
                        return ctypes.CDLL(path)
                    except OSError:  # a broken or foreign install: skip, do not fail collection
                        return None
    return None


NVRTC = _libnvrtc()
pytestmark = pytest.mark.skipif(NVRTC is None, reason="NVRTC (nvidia-cuda-nvrtc) not installed")

ARCH = "compute_90"  # Hopper, the lent machines' chips (PTX: no GPU, no ptxas needed)


def _check(rc, what, prog=None):
    if rc != 0:
        NVRTC.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise RuntimeError(f"{what}: {NVRTC.nvrtcGetErrorString(rc).decode()}")


def nvrtc_compile(src: str, fname: str, names: list[str]) -> dict[str, str]:
    """Compile ``src`` with the engine's options; return {name expression: lowered name}, or
    raise with NVRTC's log."""
    prog = ctypes.c_void_p()
    _check(NVRTC.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), fname.encode(), 0,
                                    None, None), "nvrtcCreateProgram")
    try:
        for name in names:
            _check(NVRTC.nvrtcAddNameExpression(prog, name.encode()), "nvrtcAddNameExpression")
        opts = [o.encode() for o in (*config.CUDA_NVRTC_OPTIONS, f"-arch={ARCH}")]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = NVRTC.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        NVRTC.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        NVRTC.nvrtcGetProgramLog(prog, log)
        if rc != 0:
            raise AssertionError(f"NVRTC failed on {fname}:\n{log.value.decode(errors='replace')}")
        lowered = {}
        for name in names:
            out = ctypes.c_char_p()
            _check(NVRTC.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(out)),
                   f"nvrtcGetLoweredName({name})")
            lowered[name] = out.value.decode()
        return lowered
    finally:
        NVRTC.nvrtcDestroyProgram(ctypes.byref(prog))


LOGITS = list(M.LOGITS_CT)


# NVRTC takes ~2.5 s per instantiation here, so the lists below cover what NVRTC can get wrong
# where nvcc does not (a header, macro or intrinsic missing from NVRTC's environment) without
# the full product, which scripts/check_kernels.sh compiles with nvcc (FX_INSTANTIATE): every
# pair of the layout switches (dense, row group, sample weights) once; every logits type with
# sparse and with dense labels; every label type.
_LAYOUTS = [(False, 0, False), (False, 1, True), (False, 32, True),
            (True, 0, True), (True, 1, False), (True, 32, False)]
# (logits, sparse label, dense label): each non-float32 type with both label kinds
_TYPES = [("float64", "int32", "float64"), ("float16", "int64", "bool"),
          ("bfloat16", "int64", "bfloat16"), ("float32", "int64", "float16")]


def _softmax_names():
    names = [M.softmax_name("float32", "float32" if dense else "int64", dense, group, sw)
             for dense, group, sw in _LAYOUTS]
    for logits, sparse, dense in _TYPES:
        if logits != "float32":
            names.append(M.softmax_name(logits, sparse, False, 32, False))
        names.append(M.softmax_name(logits, dense, True, 32, False))
    return names


def _sigmoid_names():
    names = [M.sigmoid_name("float32", "float32", group, sw)
             for group in (0, 1, 32) for sw in (False, True)]
    names += [M.sigmoid_name(logits, dense, 32, False) for logits, _, dense in _TYPES]
    return names


def test_lists_cover_every_type_and_layout():
    """The reduced lists still name every logits and label type and every layout switch."""
    soft = _softmax_names()
    for ct in (*M.LOGITS_CT.values(), *M.DENSE_LABEL_CT.values(), *M.SPARSE_LABEL_CT.values()):
        assert any(f"<{ct}," in n or f", {ct}," in n for n in soft), ct
    for dense, group, sw in _LAYOUTS:
        assert any(n.endswith(f"{str(dense).lower()}, {group}, {str(sw).lower()}>")
                   for n in soft)
    sig = _sigmoid_names()
    for ct in (*M.LOGITS_CT.values(), *M.DENSE_LABEL_CT.values()):
        assert any(f"<{ct}," in n or f", {ct}," in n for n in sig), ct


@pytest.mark.parametrize("fname,names", [
    ("softmax_xent.cu", _softmax_names()),
    ("sigmoid_xent.cu", _sigmoid_names()),
    ("finalize.cu", []),
], ids=["softmax", "sigmoid", "finalize"])
def test_sources_compile_under_nvrtc(fname, names):
    lowered = nvrtc_compile(M.source(fname), fname, names)
    assert set(lowered) == set(names)
    assert all(v.startswith("_Z") for v in lowered.values())  # mangled kernels exist
