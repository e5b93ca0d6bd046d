"""Every engine module exports the same functions with the same parameters (the interface of
``fastxent.backends``), checked on the sources, so that it holds without a GPU: the CUDA
launcher once took ``want_cat`` as an extra keyword while the API passed it in the options, so
the GPU never counted it, and nothing here could see that."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BACKENDS = Path(__file__).resolve().parents[1] / "fastxent" / "backends"
PROTOCOL = ("softmax_xent", "sigmoid_xent", "asarray", "wrap", "call_context", "first_bad",
            "finalize")
ENGINES = ("numba_cpu.py", "cupy_cuda.py")


def _signatures(fname: str) -> dict[str, list[str]]:
    tree = ast.parse((BACKENDS / fname).read_text(encoding="utf-8"))
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in PROTOCOL:
            a = node.args
            out[node.name] = ([x.arg for x in a.posonlyargs + a.args]
                              + ["*" + x.arg for x in a.kwonlyargs]
                              + (["*args"] if a.vararg else []) + (["**kw"] if a.kwarg else []))
    return out


@pytest.mark.parametrize("name", PROTOCOL)
def test_engines_share_each_signature(name):
    sigs = {f: _signatures(f) for f in ENGINES}
    for f, s in sigs.items():
        assert name in s, f"{f} does not define {name}()"
    first = sigs[ENGINES[0]][name]
    for f in ENGINES[1:]:
        assert sigs[f][name] == first, f"{f}.{name}{sigs[f][name]} != {ENGINES[0]}.{name}{first}"
