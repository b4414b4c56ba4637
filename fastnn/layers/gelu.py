"""GELU activation (exact erf form or torch's tanh approximation)."""

from typing import Any

import numpy as np

from fastnn import kernels as K

from .._threads import pick
from ._base import BufferCache, Layer
from ._inputs import layer_grad, layer_input

APPROXIMATIONS = ("none", "tanh")


class GELU(Layer):
    """Gaussian error linear unit, ``x * Phi(x)`` with Phi the standard normal CDF.

    Parameters
    ----------
    approximate : {"none", "tanh"}
        "none" (default) uses erf exactly; "tanh" uses
        0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as ``torch.nn.GELU``.

    Notes
    -----
    Its derivative needs the input, so the layer keeps X and is not fused into a dense stage.
    Shapes: X (n, m) -> (n, m).
    """

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in APPROXIMATIONS:
            raise ValueError(f"approximate must be one of {APPROXIMATIONS}, got {approximate!r}")
        self.approximate = approximate
        self._tanh = approximate == "tanh"
        self._buffers = BufferCache()
        self._X: np.ndarray | None = None
        self._A: np.ndarray | None = None

    def forward(self, X: np.ndarray) -> np.ndarray:
        X = layer_input(X, "GELU")
        A = self._buffers.get("out", X.shape, X.dtype)
        pick(K.gelu_forward, K.gelu_forward_parallel, X.size)(X, self._tanh, A)
        self._X, self._A = X, A
        return A

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._X is None:
            raise RuntimeError("GELU.backward called before forward")
        X = self._X
        dout = layer_grad(dout, X.shape, X.dtype, "GELU")
        dX = self._buffers.get("dX", X.shape, X.dtype)
        pick(K.gelu_backward, K.gelu_backward_parallel, X.size)(X, dout, self._tanh, dX)
        return dX

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = layer_input(X, "GELU")
        A = np.empty_like(X)
        pick(K.gelu_forward, K.gelu_forward_parallel, X.size)(X, self._tanh, A)
        return A

    def get_config(self) -> dict[str, Any]:
        return {"approximate": self.approximate}
