"""CUDA engine plumbing that runs without a GPU (and without CuPy).

* the kernel sources are package resources and assemble into self-contained NVRTC sources
  whose ``#line`` markers point at the real files;
* the dtype table names a template instance for every supported dtype pair;
* a GPU input without CuPy raises ImportError naming the extra to install;
* stand-in objects exposing ``__cuda_array_interface__`` are routed to the CUDA engine, and
  mixing them with host arrays raises TypeError naming both.
"""

from __future__ import annotations

import importlib
import re
import sys

import numpy as np
import pytest

from fastxent.backends import _cuda_module as M

INSTALL_HINT = re.compile(r"fastxent\[cuda12\].*\[cuda13\]|fastxent\[cuda13\]")


# ------------------------------------------------------------------------------ sources


def test_sources_are_package_resources():
    root = M.kernels_dir()
    for name in M.SOURCES + M.HEADERS:
        assert (root / name).is_file(), f"kernel source {name} missing from {root}"


@pytest.mark.parametrize("name", M.SOURCES)
def test_source_assembly_inlines_includes_with_line_markers(name):
    src = M.source(name)
    assert not re.search(r'^\s*#\s*include\s+"', src, flags=re.M), "local include left in"
    assert "#pragma once" not in src
    markers = re.findall(r'^#line (\d+) "([^"]+)"$', src, flags=re.M)
    assert markers[0] == ("1", str(M.kernels_dir() / name))
    files = {f.rsplit("/", 1)[-1] for _, f in markers}
    assert "common.cuh" in files and name in files
    # after each inlined header the includer resumes on the line after its #include
    lines = src.splitlines()
    for line in lines:
        m = re.match(r'^#line (\d+) "(.+)"$', line)
        if m and int(m.group(1)) > 1:
            original = (M.kernels_dir() / m.group(2).rsplit("/", 1)[-1]).read_text().splitlines()
            assert '#include "' in original[int(m.group(1)) - 2]


def test_name_expressions_cover_the_dtype_table():
    names = set()
    for t in M.LOGITS_CT:
        for g in (1, 32, 0):
            for sw in (False, True):
                for lab in M.SPARSE_LABEL_CT:
                    names.add(M.softmax_name(t, lab, False, g, sw))
                for lab in M.DENSE_LABEL_CT:
                    names.add(M.softmax_name(t, lab, True, g, sw))
                    names.add(M.sigmoid_name(t, lab, g, sw))
    assert M.softmax_name("bfloat16", "int64", False, 0, False) == \
        "softmax_xent<fx_bf16, long long, false, 0, false>"
    assert M.sigmoid_name("float16", "bool", 32, True) == \
        "sigmoid_xent<fx_f16, unsigned char, 32, true>"
    assert len(names) == 4 * 3 * 2 * (2 + 5 + 5)


# ------------------------------------------------------------------------------ no CuPy


@pytest.fixture
def no_cupy(monkeypatch):
    """Pretend CuPy is not installed (and forget a previously imported CUDA engine)."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.delitem(sys.modules, "fastxent.backends.cupy_cuda", raising=False)
    yield
    sys.modules.pop("fastxent.backends.cupy_cuda", None)


def test_engine_without_cupy_names_the_extra(no_cupy):
    with pytest.raises(ImportError, match=INSTALL_HINT):
        importlib.import_module("fastxent.backends.cupy_cuda")
    from fastxent.backends import get_backend

    with pytest.raises(ImportError, match=INSTALL_HINT):
        get_backend("cuda")


class FakeDeviceArray:
    """A stand-in GPU array: only ``__cuda_array_interface__`` (v3), shape and dtype."""

    def __init__(self, shape, dtype):
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.__cuda_array_interface__ = {
            "shape": self.shape, "typestr": self.dtype.str, "data": (0xDEAD0000, True),
            "version": 3, "strides": None, "stream": None,
        }


def _api():
    fx = importlib.import_module("fastxent")
    if not hasattr(fx, "softmax_cross_entropy"):
        pytest.skip("fastxent public API not written yet")
    return fx


def test_device_standin_routes_to_cuda_engine(no_cupy):
    fx = _api()
    z = FakeDeviceArray((4, 3), np.float32)
    y = FakeDeviceArray((4,), np.int64)
    with pytest.raises(ImportError, match=INSTALL_HINT):
        fx.softmax_cross_entropy(z, y)
    t = FakeDeviceArray((4, 3), np.float32)
    with pytest.raises(ImportError, match=INSTALL_HINT):
        fx.sigmoid_cross_entropy(z, t)


def test_mixed_host_and_device_inputs_raise_type_error_naming_both():
    fx = _api()
    z = FakeDeviceArray((4, 3), np.float32)
    y = np.zeros(4, dtype=np.int64)
    with pytest.raises(TypeError) as ei:
        fx.softmax_cross_entropy(z, y)
    msg = str(ei.value)
    assert "FakeDeviceArray" in msg and "numpy" in msg, msg
    with pytest.raises(TypeError) as ei:
        fx.softmax_cross_entropy(np.zeros((4, 3), np.float32), FakeDeviceArray((4,), np.int64))
    msg = str(ei.value)
    assert "FakeDeviceArray" in msg and "numpy" in msg, msg


class FakeDLPackArray(FakeDeviceArray):
    """A stand-in DLPack producer (JAX-like): ``__dlpack_device__`` says (kDLCUDA=2, index)."""

    def __init__(self, shape, dtype, index):
        super().__init__(shape, dtype)
        self._index = index

    def __dlpack_device__(self):
        return (2, self._index)


def test_device_keys_compare_across_libraries(no_cupy):
    """A DLPack producer and an interface-only object on GPU 0 are one device (they once gave
    keys (2, 0) and ("cuda", None) and raised 'different GPUs'); two GPUs still raise."""
    fx = _api()
    z = FakeDLPackArray((4, 3), np.float32, 0)
    with pytest.raises(ImportError, match=INSTALL_HINT):  # routed to the CUDA engine: no TypeError
        fx.softmax_cross_entropy(z, FakeDeviceArray((4,), np.int64))
    with pytest.raises(ImportError, match=INSTALL_HINT):
        fx.softmax_cross_entropy(z, FakeDLPackArray((4,), np.int64, 0))
    with pytest.raises(TypeError, match="different GPUs"):
        fx.softmax_cross_entropy(z, FakeDLPackArray((4,), np.int64, 1))


def test_plain_python_weights_follow_device_inputs(no_cupy):
    """A weight given as a Python number or list goes with GPU logits (it is copied to their
    device), where it once raised "host and device mixed"; a NumPy array weight still does."""
    fx = _api()
    z, t = FakeDeviceArray((4, 3), np.float32), FakeDeviceArray((4, 3), np.float32)
    with pytest.raises(ImportError, match=INSTALL_HINT):  # routed to the CUDA engine
        fx.sigmoid_cross_entropy(z, t, pos_weight=2.0)
    with pytest.raises(ImportError, match=INSTALL_HINT):  # a NumPy scalar is a number too
        fx.sigmoid_cross_entropy(z, t, pos_weight=np.float32(2.0))
    with pytest.raises(ImportError, match=INSTALL_HINT):
        fx.softmax_cross_entropy(z, FakeDeviceArray((4,), np.int64), class_weight=[1, 2, 3])
    with pytest.raises(TypeError, match="pos_weight"):
        fx.sigmoid_cross_entropy(z, t, pos_weight=np.full(3, 2.0))


def test_import_fastxent_does_not_import_cupy_or_torch():
    import subprocess

    code = ("import sys, fastxent; "
            "bad = [m for m in ('cupy', 'torch', 'numba.cuda') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_float32_call_does_not_import_ml_dtypes():
    """ml_dtypes is for bfloat16 arrays, whose maker has imported it; importing it takes
    ~1.4 s here (ml_dtypes 0.7), which a float32 user's first call must not pay."""
    import subprocess

    code = ("import sys, numpy as np, fastxent as fx; "
            "fx.evaluate(np.zeros((4, 3), np.float32), np.zeros(4, np.int64)); "
            "fx.evaluate(np.zeros((4, 3), np.float16), np.zeros((4, 3), np.float32)); "
            "assert 'ml_dtypes' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------ exact sums
# The integer parts of the kernels (ExactAcc, the last-block canonicalisation, fx_finalize's
# quotients) are plain C++: compiled here for the host with g++ and a few stand-ins for CUDA
# intrinsics, they are checked against Python's exact integers without a GPU.

_STUBS = r"""
#include <cstring>
#include <cmath>
#include <cstdio>
#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(x)
#define __restrict__
struct uint4 { unsigned x, y, z, w; };
struct dim3 { unsigned x, y, z; };
static dim3 threadIdx{0, 0, 0}, blockDim{1, 1, 1}, gridDim{1, 1, 1}, blockIdx{0, 0, 0};
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline long long __double_as_longlong(double d) { long long i; memcpy(&i, &d, 8); return i; }
inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, 8); return d; }
inline double __hiloint2double(int hi, int lo) { return __longlong_as_double(((long long)hi << 32) | (unsigned)lo); }
template <class T> T __ldg(const T* p) { return *p; }
template <class T> T __ldcg(const T* p) { return *p; }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { auto o = *p; *p += v; return o; }
inline unsigned atomicAdd(unsigned* p, unsigned v) { auto o = *p; *p += v; return o; }
inline void __threadfence() {}
inline void __syncthreads() {}
template <class T> T __shfl_xor_sync(unsigned, T v, int) { return v; }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64); }
inline float __expf(float x) { return expf(x); }
using std::isfinite; using std::isnan;
"""

_MAIN = r"""
int main() {
    static long long exact[FX_NLIMBS] = {0};
    ExactAcc acc; acc.zero();
    double v; long long n = 0;
    while (scanf("%lf", &v) == 1) { acc.add(v, exact); ++n; }
    for (int k = 0; k < 4; ++k) {                               // block_flush's limb split
        exact[31 + k] += acc.c[k] & 0xffffffffLL;
        exact[32 + k] += acc.c[k] >> 32;
    }
    unsigned int ticket = 0; long long fb = 0;
    last_block_epilogue(exact, 1, &fb, &ticket);
    for (int j = 0; j < FX_NLIMBS; ++j) printf("%lld ", exact[j]);
    long long counts[S_NCOUNTS] = {0}; counts[S_ROWS] = n;
    double out[4]; long long cnt;
    fx_finalize(counts, exact, out, &cnt, 0, 1, 0, 0, 0);      // mean
    printf("\n%a\n", out[0]);
    fx_finalize(counts, exact, out, &cnt, 0, 1, 0, 0, 1);      // sum
    printf("%a\n%lld\n", out[0], fb);
}
"""


@pytest.fixture(scope="module")
def exact_harness(tmp_path_factory):
    import shutil
    import subprocess

    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler")
    d = tmp_path_factory.mktemp("exact")
    root = M.kernels_dir()
    src = (_STUBS + f'#include "{root / "common.cuh"}"\n#include "{root / "finalize.cu"}"\n' + _MAIN)
    (d / "t.cpp").write_text(src)
    subprocess.run([cxx, "-std=c++17", "-O1", "-w", str(d / "t.cpp"), "-o", str(d / "t")],
                   check=True)
    return str(d / "t")


def _random_values(rng, mode, n):
    if mode == 0:
        return [float(rng.uniform(0, 1) * 10.0 ** rng.integers(-20, 20)) for _ in range(n)]
    if mode == 1:
        return [float(np.float32(rng.normal(0, 5))) for _ in range(n)]
    if mode == 2:   # few significant bits: quotients that land on rounding midpoints
        return [float(rng.integers(0, 2**20)) * 2.0 ** int(rng.integers(-60, 60)) for _ in range(n)]
    return [float(rng.uniform(-1, 1) * 10.0 ** rng.integers(-300, 300)) for _ in range(n)]


def test_exact_sum_and_device_finalize_on_host(exact_harness):
    import subprocess
    from fractions import Fraction

    from fastxent._state import limbs_to_int, ratio

    rng = np.random.default_rng(2024)
    cases = [[1.0, 2.5, 1e-30, -3.75, 1e20, 5e-324, 1e300, -1e300, 3 * 2.0**-1074],
             [0.0], [1.0, 2.0**53, 1.0], [2.0**44, -(2.0**44)], [1e-9 / 3, 1e-9 / 7]]
    cases += [_random_values(rng, i % 4, int(rng.integers(1, 50))) for i in range(120)]
    for vals in cases:
        out = subprocess.run([exact_harness], input="\n".join(repr(v) for v in vals),
                             capture_output=True, text=True, check=True).stdout.split("\n")
        limbs = np.array([int(x) for x in out[0].split()], dtype=np.int64)
        assert ((limbs[:-1] >= 0) & (limbs[:-1] < 2**32)).all(), "not canonical"
        total = limbs_to_int(limbs)
        assert Fraction(total, 2**1075) == sum(Fraction(v) for v in vals), vals
        assert float.fromhex(out[1]) == ratio(total, len(vals) * 2**1075), vals
        assert float.fromhex(out[2]) == ratio(total, 2**1075), vals
        assert int(out[3]) == -1
