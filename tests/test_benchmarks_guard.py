"""Guards for the benchmarks: every public name is benchmarked, and ``fastxent bench`` runs.

* NumPy-style guard: each name in ``fastxent.__all__`` (and each public function of
  ``fastxent.keras`` / ``fastxent.functional`` / ``fastxent.dask`` where importable) must
  appear as a word in the asv suite's sources (``benchmarks/benchmarks/*.py``).
* The asv suite's workload table matches ``fastxent.bench``'s full sizes and both draw the same
  arrays (so ``asv run`` and ``fastxent bench`` time the same numbers).
* Smoke test: ``fastxent.bench.main(["--quick", "--json"])`` runs and prints parseable JSON.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest

import fastxent

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "benchmarks"

# names that are not operations, with the reason they need no benchmark of their own
NOT_BENCHMARKED = {
    "__version__": "a string",
}

pytestmark = pytest.mark.skipif(not SUITE.is_dir(), reason="benchmarks/ not in this checkout "
                                "(installed package without the source tree)")


def _suite_text() -> str:
    return "\n".join(p.read_text() for p in sorted(SUITE.glob("*.py")))


def _missing(names, text):
    return sorted(n for n in names
                  if n not in NOT_BENCHMARKED and not re.search(rf"\b{re.escape(n)}\b", text))


def test_every_public_name_is_benchmarked():
    missing = _missing(fastxent.__all__, _suite_text())
    assert not missing, (f"fastxent.__all__ names without a benchmark in {SUITE}: {missing}; "
                         "add one (or a reason to NOT_BENCHMARKED)")


def _public_functions(modname: str) -> list[str]:
    try:
        mod = importlib.import_module(modname)
    except ImportError:
        return []
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n, v in vars(mod).items()
                 if not n.startswith("_") and inspect.isfunction(v)
                 and v.__module__ == mod.__name__]
    return [n for n in names if callable(getattr(mod, n, None))]


@pytest.mark.parametrize("modname", ["fastxent.keras", "fastxent.functional", "fastxent.dask"])
def test_compat_layers_are_benchmarked(modname):
    if importlib.util.find_spec(modname) is None:
        pytest.skip(f"{modname} does not exist in this checkout")
    names = _public_functions(modname)
    if not names:
        pytest.skip(f"{modname} is not importable here (an optional dependency is missing)")
    missing = _missing(names, _suite_text())
    assert not missing, f"{modname} functions without a benchmark: {missing}"


def _load_common():
    spec = importlib.util.spec_from_file_location("_fx_asv_common", SUITE / "common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_suite_and_cli_share_workloads_and_inputs():
    from fastxent import bench

    common = _load_common()
    assert common.SEED == bench.SEED
    for w in bench.WORKLOADS:
        rows, classes, backends = common.WORKLOADS[w.name]
        assert (rows, classes) == w.full, w.key
        assert ("cuda" if w.device == "gpu" else "numba") in backends, w.key
    for labels in ("sparse", "onehot", "multihot"):
        a = common.make_inputs_numpy(64, 7, labels, "B_256kx1000")
        b = bench.make_inputs_numpy(64, 7, labels, "B_256kx1000")
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


def test_bench_quick_json(capsys):
    from fastxent import bench

    rc = bench.main(["--quick", "--json", "--repeat", "2"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["size"] == "quick" and report["machine"]["device"] == "cpu"
    names = {w["workload"] for w in report["workloads"]}
    assert {"A_4Mx10", "B_256kx1000", "C_8kx32k", "D_dense", "E_bce", "S_256x1000"} <= names
    for w in report["workloads"]:
        meas = {m["method"]: m for m in w["methods"] if "time_ms" in m}
        assert meas["fastxent"]["time_ms"] > 0 and meas["read limit"]["time_ms"] > 0
        assert meas["numpy naive"]["agrees"], (w["workload"], meas["numpy naive"]["check"])
    s = report["summary"][0]
    assert s["best_peer"] in bench.PEERS and s["speedup_vs_best_peer"] > 0


def test_time_cpu_sizes_its_samples_after_the_first_call():
    """A first call that compiles (or loads Numba's cache) must not set how many calls a
    sample holds: with it, a 0.1 ms call was timed as three single calls."""
    import time

    from fastxent.bench import time_cpu

    calls = []

    def fn():
        time.sleep(0.2 if not calls else 0.0)  # the first call "compiles"
        calls.append(1)
        return 0

    t = time_cpu(fn, lambda out: out, repeat=5)
    assert len(t.samples_ms) == 5
    assert t.number > 1
    assert max(t.samples_ms) < 100  # no sample holds the compiling call
