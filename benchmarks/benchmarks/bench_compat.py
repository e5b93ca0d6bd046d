"""Drop-in layers beside the libraries they replace, same inputs, same call.

* ``fastxent.keras`` vs ``keras.losses`` / ``keras.metrics`` (Keras 3 signatures
  ``(y_true, y_pred)``; Keras gets its backend's tensors, converted outside the timing):
  categorical_crossentropy, sparse_categorical_crossentropy, binary_crossentropy,
  categorical_accuracy, sparse_categorical_accuracy, binary_accuracy,
  top_k_categorical_accuracy, sparse_top_k_categorical_accuracy.
* ``fastxent.functional`` vs ``torch.nn.functional`` on torch CPU tensors: cross_entropy,
  binary_cross_entropy_with_logits, binary_cross_entropy.

Skipped (NotImplementedError in setup) when fastxent's layer or the library is missing.
"""

from __future__ import annotations

from .common import Benchmark, host_inputs, ncores, optional

# function -> (label kind, keyword arguments, inputs are probabilities)
KERAS_FUNCS = {
    "categorical_crossentropy": ("onehot", {"from_logits": True}, False),
    "sparse_categorical_crossentropy": ("sparse", {"from_logits": True}, False),
    "binary_crossentropy": ("multihot", {"from_logits": True}, False),
    "categorical_accuracy": ("onehot", {}, False),
    "sparse_categorical_accuracy": ("sparse", {}, False),
    "binary_accuracy": ("multihot", {"threshold": 0.5}, True),
    "top_k_categorical_accuracy": ("onehot", {"k": 5}, False),
    "sparse_top_k_categorical_accuracy": ("sparse", {"k": 5}, False),
}
TORCH_FUNCS = {
    "cross_entropy": ("sparse", {}, False),
    "binary_cross_entropy_with_logits": ("multihot", {}, False),
    "binary_cross_entropy": ("multihot", {}, True),
}
# softmax functions run on B (ImageNet-like), sigmoid ones on E_bce
_WORKLOAD = {"sparse": "B_256kx1000", "onehot": "D_dense", "multihot": "E_bce"}


def _arrays(kind: str, probs: bool):
    import numpy as np

    z, lab = host_inputs(_WORKLOAD[kind], kind)
    if probs:
        z = 1 / (1 + np.exp(-z))
    return z, lab


class KerasCompat(Benchmark):
    params = [["fastxent", "keras"], list(KERAS_FUNCS)]
    param_names = ["impl", "function"]

    def setup(self, impl, function):
        kind, kw, probs = KERAS_FUNCS[function]
        z, lab = _arrays(kind, probs)
        if impl == "fastxent":
            mod = optional("fastxent.keras")
        else:
            optional("fastxent.bench")._keras()        # pick an installed Keras backend
            keras = optional("keras")
            mod = keras.losses if function.endswith("crossentropy") else keras.metrics
            z, lab = keras.ops.convert_to_tensor(z), keras.ops.convert_to_tensor(lab)
            if keras.backend.backend() == "torch":
                optional("torch").set_num_threads(ncores())
        f = getattr(mod, function)
        self.call = lambda: f(lab, z, **kw)
        self.call()

    def time_call(self, impl, function):
        self.call()


class FunctionalCompat(Benchmark):
    params = [["fastxent", "torch"], list(TORCH_FUNCS)]
    param_names = ["impl", "function"]

    def setup(self, impl, function):
        torch = optional("torch")
        torch.set_num_threads(ncores())
        mod = optional("fastxent.functional" if impl == "fastxent" else "torch.nn.functional")
        kind, kw, probs = TORCH_FUNCS[function]
        z, lab = _arrays(kind, probs)
        zt, lt = torch.from_numpy(z), torch.from_numpy(lab)
        f = getattr(mod, function)
        self.call = lambda: f(zt, lt, **kw)
        self.call()

    def time_call(self, impl, function):
        self.call()
