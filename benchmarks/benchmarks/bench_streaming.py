"""Streaming and distributed evaluation against the one-shot call, same arrays.

* ``fx.Evaluator``: ``update()`` over row chunks, then ``result()`` (exact state: the numbers
  equal the one-shot call's); ``one-shot`` is ``fx.evaluate`` on the whole array.
* ``StreamingMerge.time_merge``: one evaluator per chunk (as on separate workers), then
  ``merge()`` them all and ``result()``.
* ``fastxent.dask.evaluate`` / ``fastxent.dask.partial_states``: the same arrays as a Dask
  array chunked along rows, the synchronous scheduler (kernel + tree reduction cost, no
  cluster); ``partial_states`` stops at the merged evaluator.
"""

from __future__ import annotations

from .common import BACKENDS, Benchmark, check_params, fastxent, inputs, optional

CHUNKS = ["one-shot", 65_536, 8192, 1024]


class _Chunked(Benchmark):
    param_names = ["backend", "workload", "chunk_rows"]

    def setup(self, backend, workload, chunk_rows):
        self.be = check_params(backend, workload, "float32", "sparse")
        fx = self.fx = fastxent()
        self.z, self.y = inputs(backend, workload, "float32", "sparse")
        if chunk_rows != "one-shot":
            try:
                _ = fx.Evaluator
            except (AttributeError, ImportError) as exc:   # lazily imported; may be missing
                raise NotImplementedError(f"fx.Evaluator unavailable: {exc}") from None
            if chunk_rows >= self.z.shape[0]:
                raise NotImplementedError("chunk as large as the array: that is one-shot")
        self.run(chunk_rows)      # warm-up

    def chunks(self, chunk_rows):
        for i in range(0, self.z.shape[0], chunk_rows):
            yield self.z[i:i + chunk_rows], self.y[i:i + chunk_rows]


class Streaming(_Chunked):
    """``Evaluator.update`` over chunks then ``result()``, against the one-shot call."""

    params = [BACKENDS, ["A_4Mx10", "B_256kx1000"], CHUNKS]

    def run(self, chunk_rows):
        if chunk_rows == "one-shot":
            self.fx.evaluate(self.z, self.y, task="multiclass")
        else:
            ev = self.fx.Evaluator(task="multiclass")
            for zc, yc in self.chunks(chunk_rows):
                ev.update(zc, yc)
            ev.result()
        self.be.synchronize()

    def time_evaluate(self, backend, workload, chunk_rows):
        self.run(chunk_rows)


class StreamingMerge(_Chunked):
    """One evaluator per chunk (as on separate workers), ``merge()`` d, then ``result()``."""

    params = [BACKENDS, ["A_4Mx10", "B_256kx1000"], CHUNKS[1:]]

    def run(self, chunk_rows):
        evs = []
        for zc, yc in self.chunks(chunk_rows):
            ev = self.fx.Evaluator(task="multiclass")
            ev.update(zc, yc)
            evs.append(ev)
        total = evs[0]
        for ev in evs[1:]:
            total.merge(ev)
        total.result()
        self.be.synchronize()

    def time_merge(self, backend, workload, chunk_rows):
        self.run(chunk_rows)


class DaskEvaluate(Benchmark):
    params = [["A_4Mx10", "B_256kx1000"], [262_144, 16_384]]
    param_names = ["workload", "chunk_rows"]

    def setup(self, workload, chunk_rows):
        check_params("numba", workload, "float32", "sparse")
        da = optional("dask.array")
        self.dask = optional("dask")
        self.fxd = optional("fastxent.dask")
        z, y = inputs("numba", workload, "float32", "sparse")
        if chunk_rows >= z.shape[0]:
            raise NotImplementedError("one chunk: nothing distributed")
        self.z = da.from_array(z, chunks=(chunk_rows, z.shape[1]))
        self.y = da.from_array(y, chunks=(chunk_rows,))
        self.time_evaluate(workload, chunk_rows)

    def time_evaluate(self, workload, chunk_rows):
        with self.dask.config.set(scheduler="synchronous"):
            m = self.fxd.evaluate(self.z, self.y)
            float(m.loss)        # a lazy result would otherwise time nothing

    def time_partial_states(self, workload, chunk_rows):
        with self.dask.config.set(scheduler="synchronous"):
            self.dask.compute(self.fxd.partial_states(self.z, self.y, task="multiclass"))
