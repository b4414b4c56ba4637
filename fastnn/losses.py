"""Losses: a value (mean over the batch) from ``forward`` and its gradient from ``backward``.

``forward(output, target)`` checks its arguments and returns a Python float; ``backward()``
returns the gradient of that mean with respect to ``output`` (a buffer the loss owns).
Classification losses take integer labels directly, or one-hot / probability rows.
"""

import numpy as np

from fastnn import kernels as K

from ._threads import pick
from ._validation import check_labels, check_number, check_targets, check_X
from .layers._base import BufferCache


class Loss:
    #: True when targets are class labels (enables accuracy in fit)
    classification = False

    def __init__(self):
        self._buffers = BufferCache()
        self._grad = None

    def forward(self, output, target):
        output = check_X(output, "output", dtype=_float_dtype(output))
        target = self.check_target(target, output)
        return self._forward(output, target)

    def check_target(self, target, output):
        return check_targets(target, output.shape[1], "target", output.shape[0], output.dtype)

    def _forward(self, output, target):
        raise NotImplementedError

    def backward(self):
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._grad

    def _grad_buffer(self, output):
        self._grad = self._buffers.get("grad", output.shape, output.dtype)
        return self._grad

    def get_config(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _float_dtype(a):
    dt = getattr(a, "dtype", None)
    return dt if dt in (np.float32, np.float64) else np.float64


class _ClassificationLoss(Loss):
    classification = True

    def check_target(self, target, output):
        target_arr = np.asarray(target)
        if target_arr.ndim == 2:
            return check_targets(
                target_arr, output.shape[1], "target", output.shape[0], output.dtype
            )
        return check_labels(target_arr, output.shape[1], "target", output.shape[0])


class SoftmaxCrossEntropy(_ClassificationLoss):
    """Softmax + cross-entropy on logits, fused: stable for any logits, gradient (P - T) / n.

    Targets are integer labels (n,) or rows of class probabilities (n, k), e.g. one-hot.
    """

    def _forward(self, Z, target):
        dZ = self._grad_buffer(Z)
        if target.ndim == 1:
            kernel = pick(K.softmax_xent_labels, K.softmax_xent_labels_parallel, Z.size)
        else:
            kernel = pick(K.softmax_xent_targets, K.softmax_xent_targets_parallel, Z.size)
        return float(kernel(Z, target, dZ))


class CrossEntropy(_ClassificationLoss):
    """Cross-entropy on probabilities (after a Softmax layer), clipped to [eps, 1] so log(0)
    never happens.  Targets are one-hot / probability rows or integer labels."""

    def __init__(self, eps=1e-8):
        super().__init__()
        self.eps = check_number(eps, "eps", low=0.0, high=1.0, low_open=True)

    def _forward(self, P, target):
        dP = self._grad_buffer(P)
        if target.ndim == 1:
            kernel = pick(K.cross_entropy_labels, K.cross_entropy_labels_parallel, P.size)
        else:
            kernel = pick(K.cross_entropy_targets, K.cross_entropy_targets_parallel, P.size)
        return float(kernel(P, target, self.eps, dP))

    def get_config(self):
        return {"eps": self.eps}


class MSELoss(Loss):
    """Mean squared error over every element: mean((output - target)^2)."""

    def _forward(self, Y, T):
        dY = self._grad_buffer(Y)
        return float(pick(K.mse, K.mse_parallel, Y.size)(Y, T, dY))


LOSSES = {
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "cross_entropy": CrossEntropy,
    "mse": MSELoss,
}
