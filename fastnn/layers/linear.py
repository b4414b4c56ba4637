"""Linear: the dense layer ``Z = X @ W + b``."""

import numpy as np

from fastnn.kernels import (
    IDENTITY,
    dense_backward,
    dense_backward_parallel,
    dense_forward,
    dense_forward_parallel,
)

from .._threads import pick
from .._validation import check_dtype, check_fits_in_memory, check_positive_int
from ..parameter import Parameter
from ._base import BufferCache, Layer
from ._inputs import layer_grad, layer_input

INITS = ("he", "glorot", "lecun")


class Linear(Layer):
    """Fully connected layer: ``forward(X) = X @ weight + bias``.

    Parameters
    ----------
    n_in, n_out : int
        Input and output features.  ``weight`` has shape (n_in, n_out), ``bias`` (n_out,).
    bias : bool
        Learn an additive bias (initialised to zero).
    init : {"he", "glorot", "lecun"}
        "he": normal with std sqrt(2 / n_in) (for ReLU networks, the default);
        "glorot": uniform in +-sqrt(6 / (n_in + n_out)) (for tanh/sigmoid);
        "lecun": normal with std sqrt(1 / n_in).
    dtype : float32 or float64
    seed : int, numpy Generator or None
        Makes the initial weights reproducible.
    """

    def __init__(self, n_in, n_out, *, bias=True, init="he", dtype=np.float32, seed=None):
        self.n_in = check_positive_int(n_in, "n_in")
        self.n_out = check_positive_int(n_out, "n_out")
        # the float64 initial draw, the weights and their gradient
        check_fits_in_memory(
            self.n_in * self.n_out * 16, f"Linear(n_in={self.n_in}, n_out={self.n_out})"
        )
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.init = init
        self.dtype = check_dtype(dtype)
        self.seed = seed
        try:
            rng = np.random.default_rng(seed)
        except (TypeError, ValueError) as exc:
            raise type(exc)(
                f"seed must be None, a non-negative integer or a numpy Generator, got {seed!r}"
            ) from None
        shape = (self.n_in, self.n_out)
        if init == "he":
            W = rng.standard_normal(shape) * np.sqrt(2.0 / self.n_in)
        elif init == "lecun":
            W = rng.standard_normal(shape) * np.sqrt(1.0 / self.n_in)
        else:
            limit = np.sqrt(6.0 / (self.n_in + self.n_out))
            W = rng.uniform(-limit, limit, shape)
        self.weight = Parameter(W.astype(self.dtype), name="weight")
        self.bias = Parameter(np.zeros(self.n_out, self.dtype), name="bias") if bias else None
        self._buffers = BufferCache()
        self._X = None

    # -- helpers shared with Sequential's fused stages ------------------------------------
    def _b(self):
        if self.bias is not None:
            return self.bias.data
        return self._buffers.get("zero_bias", (self.n_out,), self.dtype, zero=True)

    def _db(self):
        if self.bias is not None:
            return self.bias.grad
        return self._buffers.get("scratch_db", (self.n_out,), self.dtype)

    def forward_act(self, X, code, alpha, out):
        """out = f(X @ W + b) with the activation fused (``code`` from fastnn.kernels)."""
        kernel = pick(dense_forward, dense_forward_parallel, out.size)
        kernel(X, self.weight.data, self._b(), code, alpha, out)
        return out

    def backward_masked(self, X, dZ, beta, prev_code, prev_alpha, dX):
        """Accumulate (beta=1) or overwrite (beta=0) dW, db from ``dZ``; write into ``dX`` (if it
        has rows) the input gradient times the derivative of the activation that made X."""
        kernel = pick(dense_backward, dense_backward_parallel, X.size + dZ.size)
        kernel(
            X, self.weight.data, dZ, beta, self.weight.grad, self._db(), prev_code, prev_alpha, dX
        )
        return dX

    # -- layer API -------------------------------------------------------------------------
    def parameters(self):
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def output_dim(self, n_in):
        return self.n_out

    def forward(self, X):
        X = layer_input(X, "Linear", self.n_in, self.dtype)
        self._X = X
        out = self._buffers.get("out", (X.shape[0], self.n_out), self.dtype)
        return self.forward_act(X, IDENTITY, 0.0, out)

    def backward(self, dZ):
        if self._X is None:
            raise RuntimeError("Linear.backward called before forward")
        X = self._X
        dX = self._buffers.get("dX", X.shape, self.dtype)
        dZ = layer_grad(dZ, (X.shape[0], self.n_out), self.dtype, "Linear")
        return self.backward_masked(X, dZ, 1.0, IDENTITY, 0.0, dX)

    def get_config(self):
        return {
            "n_in": self.n_in,
            "n_out": self.n_out,
            "bias": self.bias is not None,
            "init": self.init,
            "dtype": self.dtype.name,
        }
