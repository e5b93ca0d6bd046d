"""Find, assemble and compile the CUDA sources of ``kernels/`` (NVRTC through CuPy).

Sources are package resources: the wheel carries the top-level ``kernels/`` folder as
``fastxent/kernels`` (pyproject force-include); a source checkout (``PYTHONPATH=.``) falls
back to the repository's ``kernels/`` beside the package. Local ``#include "x.cuh"`` lines are
inlined here, each piece preceded by ``#line 1 "<path>"`` (and the includer resumed with its
own ``#line``), so NVRTC needs no include path and its errors point at the real file and line.

Compilation is lazy and cached per (device, source file, kernel name): a RawModule is built
with just the name expression(s) asked for, because instantiating the full dtype table of one
file at once costs NVRTC minutes (``scripts/check_kernels.sh`` compiles every instantiation
offline with nvcc). CuPy also caches the compiled binaries on disk (``~/.cupy/kernel_cache``),
so a second process pays no NVRTC time. The names come from the dtype tables below, the one
place that maps NumPy dtypes to the C++ template arguments.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from pathlib import Path

from .. import config

__all__ = [
    "SOURCES", "LOGITS_CT", "SPARSE_LABEL_CT", "DENSE_LABEL_CT",
    "kernels_dir", "source", "softmax_name", "sigmoid_name", "get_function",
]

SOURCES = ("softmax_xent.cu", "sigmoid_xent.cu", "finalize.cu")
HEADERS = ("common.cuh", "rowgroup.cuh")

# dtype name -> C++ storage type (float16 / bfloat16 / bool travel as raw 16/8-bit words)
LOGITS_CT = {"float32": "float", "float64": "double", "float16": "fx_f16", "bfloat16": "fx_bf16"}
SPARSE_LABEL_CT = {"int32": "int", "int64": "long long"}
DENSE_LABEL_CT = {**LOGITS_CT, "bool": "unsigned char"}

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def kernels_dir():
    """The folder (a ``Traversable``) holding the CUDA sources."""
    res = importlib.resources.files("fastxent") / "kernels"
    if res.is_dir() and (res / "common.cuh").is_file():
        return res
    repo = Path(__file__).resolve().parents[2] / "kernels"
    if (repo / "common.cuh").is_file():
        return repo
    raise FileNotFoundError(
        "fastxent CUDA kernel sources not found: neither the package resource "
        "'fastxent/kernels' nor the source checkout's 'kernels/' exists; reinstall fastxent"
    )


@functools.cache
def source(name: str) -> str:
    """Self-contained source of ``name`` with local includes inlined and #line markers."""
    root = kernels_dir()
    seen: set[str] = set()

    def expand(fname: str) -> list[str]:
        path = root / fname
        shown = str(path)
        out = [f'#line 1 "{shown}"']
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            m = _INCLUDE.match(line)
            if m:
                inc = m.group(1)
                if inc not in seen:
                    seen.add(inc)
                    out.extend(expand(inc))
                out.append(f'#line {lineno + 1} "{shown}"')
            elif line.strip() == "#pragma once":
                out.append("")
            else:
                out.append(line)
        return out

    seen.add(name)
    return "\n".join(expand(name)) + "\n"


def _b(v: bool) -> str:
    return "true" if v else "false"


def softmax_name(logits_dtype: str, label_dtype: str, dense: bool, group: int, sw: bool) -> str:
    """Name expression of one softmax_xent instantiation (dtype names as in the tables)."""
    L = (DENSE_LABEL_CT if dense else SPARSE_LABEL_CT)[label_dtype]
    return f"softmax_xent<{LOGITS_CT[logits_dtype]}, {L}, {_b(dense)}, {group}, {_b(sw)}>"


def sigmoid_name(logits_dtype: str, target_dtype: str, group: int, sw: bool) -> str:
    lt, tt = LOGITS_CT[logits_dtype], DENSE_LABEL_CT[target_dtype]
    return f"sigmoid_xent<{lt}, {tt}, {group}, {_b(sw)}>"


@functools.cache
def _module(device_id: int, fname: str, name: str):
    import cupy

    opts = tuple(config.CUDA_NVRTC_OPTIONS)
    with cupy.cuda.Device(device_id):
        if "<" in name:
            return cupy.RawModule(code=source(fname), options=opts, name_expressions=(name,))
        return cupy.RawModule(code=source(fname), options=opts)


def get_function(fname: str, name: str):
    """The compiled kernel ``name`` of source ``fname`` on the current device (cached)."""
    import cupy

    dev = cupy.cuda.runtime.getDevice()
    return _module(dev, fname, name).get_function(name)
