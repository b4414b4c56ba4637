"""Layer: the base class of every fastnn layer, and the per-batch-shape buffer cache."""

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..parameter import Parameter


class Layer:
    """A step of a model with ``forward`` and ``backward``.

    ``forward(X)`` keeps what ``backward`` needs; ``backward(dout)`` returns the gradient with
    respect to the layer's input and accumulates into its parameters' ``grad``.  Outputs are
    written into buffers the layer owns, allocated once per batch shape and reused, so the
    array returned by ``forward``/``backward`` is overwritten by the next call.
    """

    _buffers: "BufferCache"

    #: kernel code when the layer is an elementwise activation that a dense kernel can fuse
    code = None
    alpha = 0.0

    def parameters(self) -> list[Parameter]:
        return []

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def forward(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Inference: the output for ``X``, a fresh array, no state kept.

        ``forward`` runs on a shallow copy with its own buffers, so what the layer keeps for
        ``backward`` is untouched (predict between forward and backward is safe) and calls from
        several threads write nothing they share.  Layers whose forward changes shared arrays
        in place (running statistics, random state) override this.
        """
        clone = copy.copy(self)
        clone._buffers = BufferCache()
        return clone.forward(X).copy()

    def output_dim(self, n_in: int) -> int:
        """Number of output features given ``n_in`` input features."""
        return n_in

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, for repr and saving."""
        return {}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Non-parameter state to save with the model (e.g. BatchNorm1d's running statistics),
        as a dict of name -> ndarray.  Layers without such state return an empty dict."""
        return {}

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_arrays` returned (copied into the layer's own arrays)."""
        if arrays:
            raise ValueError(f"{type(self).__name__} keeps no state arrays, got {sorted(arrays)}")

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class BufferCache:
    """Arrays reused across calls, keyed by name and shape.

    A training loop sees at most two batch shapes (full batches and the last, smaller one), so
    a handful of entries per name is enough; older shapes are dropped past ``max_shapes``.
    """

    __slots__ = ("_arrays", "max_shapes")

    def __init__(self, max_shapes=4):
        self._arrays = {}
        self.max_shapes = max_shapes

    def get(self, name, shape, dtype, zero=False):
        key = (name, shape, np.dtype(dtype))
        arr = self._arrays.get(key)
        if arr is None:
            same = [k for k in self._arrays if k[0] == name]
            if len(same) >= self.max_shapes:
                del self._arrays[same[0]]
            arr = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
            self._arrays[key] = arr
        return arr

    def clear(self):
        self._arrays.clear()
