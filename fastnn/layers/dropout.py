"""Dropout: inverted dropout in training, the identity in inference."""

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from fastnn import kernels as K
from fastnn.kernels.dropout import threshold_of

from .._threads import pick
from .._validation import check_number
from ._base import BufferCache, Layer
from ._inputs import layer_grad, layer_input


class Dropout(Layer):
    """Zeroes each element with probability ``p`` in training and scales the rest by 1 / (1 - p),
    so ``predict`` (inference) is the identity.

    The mask is a hash of (seed, call counter, element index), computed inside the kernel: a
    given seed gives the same masks in the same order on every run, serial or parallel, and
    backward recomputes the mask rather than storing it.

    Parameters
    ----------
    p : float in [0, 1]
        Drop probability (``p=1`` outputs zeros).
    seed : int >= 0 or None
        Makes the masks reproducible; None draws a seed from the operating system.

    Notes
    -----
    Shapes: X (n, m) -> (n, m).
    """

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        self.p = check_number(p, "p", low=0.0, high=1.0)
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
        ):
            raise TypeError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        entropy = np.random.SeedSequence().entropy if seed is None else seed
        assert isinstance(entropy, int)
        self._seed = np.uint64(int(entropy) % 2**64)
        self._counter = 0
        self._threshold = threshold_of(self.p)
        self._scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
        self._buffers = BufferCache()
        self._A: np.ndarray | None = None
        self._call: np.uint64 | None = None

    def forward(self, X: np.ndarray) -> np.ndarray:
        """Training forward: X * mask / (1 - p) with a fresh mask per call."""
        X = layer_input(X, "Dropout")
        A = self._buffers.get("out", X.shape, X.dtype)
        self._call = np.uint64(self._counter)
        self._counter += 1
        pick(K.dropout_forward, K.dropout_forward_parallel, X.size)(
            X, self._seed, self._call, self._threshold, self._scale, A
        )
        self._A = A
        return A

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dX = dout * mask / (1 - p), with the mask of the last forward."""
        if self._A is None:
            raise RuntimeError("Dropout.backward called before forward")
        dout = layer_grad(dout, self._A.shape, self._A.dtype, "Dropout")
        dX = self._buffers.get("dX", dout.shape, dout.dtype)
        pick(K.dropout_backward, K.dropout_backward_parallel, dout.size)(
            dout, self._seed, self._call, self._threshold, self._scale, dX
        )
        return dX

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Inference: the identity (a copy of X); uses no mask and changes no state."""
        return np.array(layer_input(X, "Dropout"), copy=True)

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p, "seed": self.seed}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The effective seed and the call counter, so a restored model continues the same
        sequence of masks."""
        return {"rng_state": np.array([self._seed, self._counter], dtype=np.uint64)}

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        extra = set(arrays) - {"rng_state"}
        if extra:
            raise ValueError(f"Dropout: unexpected state arrays {sorted(extra)}")
        if "rng_state" in arrays:
            state = np.asarray(arrays["rng_state"])
            if state.shape != (2,):
                raise ValueError(f"Dropout: rng_state must have shape (2,), got {state.shape}")
            self._seed = np.uint64(state[0])
            self._counter = int(state[1])
