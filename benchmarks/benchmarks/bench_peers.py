"""The peers, on the same generated arrays as the fastxent benchmarks (same params).

One class per peer; each calls the peer's builder in ``fastxent.bench`` (one definition of
each peer for ``fastxent bench`` and asv, loss + accuracy as a user computes them):
NumPy naive, SciPy logsumexp, PyTorch eager, torch.compile, JAX jit, Keras 3 (CPU and GPU);
Liger-Kernel and naive CuPy (GPU). ``ReadLimit`` is a plain parallel reduction over the same
bytes: the floor for any method that reads the inputs once. A peer that is not installed, or
that does not do a workload (e.g. SciPy top-5), raises NotImplementedError in setup: ``n/a``.

Compare ``bench_peers.<Peer>.time_loss_acc`` with ``bench_softmax.SoftmaxCrossEntropy
.time_loss_acc`` / ``bench_sigmoid.SigmoidCrossEntropy.time_loss_acc`` at the same params.
Note: torch's OpenMP threads keep spinning after a torch call; asv runs each benchmark in its
own process, so the fastxent timings here are not affected by the torch ones.
"""

from __future__ import annotations

from .common import (
    BACKENDS,
    DTYPES,
    PARAM_NAMES,
    SIGMOID_WORKLOADS,
    SOFTMAX_LABELS,
    SOFTMAX_WORKLOADS,
    Benchmark,
    check_params,
    inputs,
    ncores,
    optional,
)


class _Peer(Benchmark):
    peer = ""   # a key of fastxent.bench.PEERS
    params = [BACKENDS, SOFTMAX_WORKLOADS + SIGMOID_WORKLOADS, DTYPES,
              SOFTMAX_LABELS + ["multihot"]]
    param_names = PARAM_NAMES

    def setup(self, backend, workload, dtype, labels):
        self.be = check_params(backend, workload, dtype, labels)
        bench = optional("fastxent.bench")
        peer = bench.PEERS[self.peer]
        if self.be.device not in peer.devices:
            raise NotImplementedError(f"{self.peer} does not run on {self.be.device}")
        if peer.torch:
            torch = optional("torch")
            torch.set_num_threads(ncores())
        z, lab = inputs(backend, workload, dtype, labels)
        topk = (1, 5) if labels == "top5" else ()
        # builders raise NotImplementedError for a missing peer or a job it does not do
        self.fn, self.sync = peer.build(self.be.device, labels, topk, z, lab)
        self.time_loss_acc(backend, workload, dtype, labels)   # warm-up (and compile)

    def time_loss_acc(self, backend, workload, dtype, labels):
        self.sync(self.fn())
        self.be.synchronize()

    def peakmem_loss_acc(self, backend, workload, dtype, labels):
        self.sync(self.fn())
        self.be.synchronize()


# host-only and GPU-only peers list only their backend (fewer n/a rows, fewer processes)
_CPU_PARAMS = [["numba"], [w for w in _Peer.params[1] if w != "C_16kx128k"], ["float32"],
               _Peer.params[3]]
_GPU_PARAMS = [["cuda"], [w for w in _Peer.params[1] if w != "C_8kx32k"], DTYPES,
               _Peer.params[3]]


class NumpyNaive(_Peer):
    peer = "numpy naive"
    params = _CPU_PARAMS


class ScipyLogsumexp(_Peer):
    peer = "scipy logsumexp"
    params = _CPU_PARAMS


class TorchEager(_Peer):
    peer = "torch eager"


class TorchCompile(_Peer):
    peer = "torch.compile"
    timeout = 1200     # a cold inductor cache compiles for ~30 s per shape on 2 cores


class JaxJit(_Peer):
    peer = "jax jit"


class Keras(_Peer):
    peer = "keras"


class LigerKernel(_Peer):
    peer = "liger-kernel"
    params = _GPU_PARAMS


class CupyNaive(_Peer):
    peer = "cupy naive"
    params = _GPU_PARAMS


class ReadLimit(Benchmark):
    """A parallel sum over the bytes of the same logits and labels (Numba prange / CuPy)."""

    params = _Peer.params
    param_names = PARAM_NAMES

    def setup(self, backend, workload, dtype, labels):
        self.be = check_params(backend, workload, dtype, labels)
        bench = optional("fastxent.bench")
        self.fn = bench.read_limit_fn(self.be.device, inputs(backend, workload, dtype, labels))
        self.time_read(backend, workload, dtype, labels)

    def time_read(self, backend, workload, dtype, labels):
        self.fn()
        self.be.synchronize()
