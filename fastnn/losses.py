"""Losses: a value (mean over the batch) from ``forward`` and its gradient from ``backward``.

``forward(output, target, sample_weight=None)`` checks its arguments and returns a Python
float; ``backward()`` returns the gradient of that mean with respect to ``output`` (a buffer
the loss owns).  Classification losses take integer labels directly, or one-hot / probability
rows.  With ``sample_weight`` (n,) every loss is the weighted mean sum_i w_i l_i / sum_i w_i of
its per-sample values l_i (class-weighted labels: see SoftmaxCrossEntropy).  The unweighted
case runs the original fused kernels; weights, label smoothing and the extra losses run the
``*_weighted`` kernels.
"""

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fastnn import kernels as K

from ._threads import pick
from ._validation import check_labels, check_number, check_targets, check_X
from .layers._base import BufferCache


class Loss:
    """Base class of the losses: the mean over a batch, and its gradient.

    ``forward(output, target, sample_weight=None)`` checks its arguments (shapes, dtypes, NaN,
    target values), computes the loss in one kernel call and returns it as a Python float;
    the same call writes the gradient of that mean with respect to ``output`` into a buffer the
    loss owns, which ``backward()`` returns (overwritten by the next ``forward``).

    A loss of your own subclasses ``Loss`` and implements ``_forward(output, target,
    sample_weight)`` on checked arrays: fill ``self._grad_buffer(output)`` with the gradient
    and return the loss value.  Override ``check_target_values`` to reject targets the loss
    cannot take, ``get_config`` to make it saveable, and set ``classification = True`` when the
    targets are class labels (``fit`` then reports accuracy).
    """

    #: True when targets are class labels (enables accuracy in fit)
    classification = False

    def __init__(self) -> None:
        self._buffers = BufferCache()
        self._grad = None

    def forward(self, output, target, sample_weight=None):
        """Mean loss of ``output`` (n, k) against ``target``; optional per-sample weights (n,)."""
        output = check_X(output, "output", dtype=_float_dtype(output))
        target = self.check_target(target, output)
        sw = check_sample_weight(sample_weight, output.shape[0], output.dtype)
        return self._forward(output, target, sw)

    def check_target(self, target, output):
        T = check_targets(target, output.shape[1], "target", output.shape[0], output.dtype)
        self.check_target_values(T, "target")
        return T

    def check_target_values(self, T, name):
        """Raise ValueError when checked real targets ``T`` hold values the loss cannot take
        (fit calls it too, with the argument's name)."""

    def labels_of(self, T):
        """Integer labels for fit's accuracy from checked real targets ``T``, or None."""
        return None

    def _forward(self, output, target, sample_weight=None):
        """Kernel call on checked arrays; ``sample_weight`` is None or (n,) of output's dtype."""
        raise NotImplementedError

    def backward(self):
        """The gradient of the last ``forward``'s mean loss with respect to its ``output``."""
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._grad

    def _grad_buffer(self, output):
        self._grad = self._buffers.get("grad", output.shape, output.dtype)
        return self._grad

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _float_dtype(a):
    dt = getattr(a, "dtype", None)
    return dt if dt in (np.float32, np.float64) else np.float64


def check_sample_weight(sample_weight, n_samples, dtype, name="sample_weight"):
    """None, or per-sample weights as a C-contiguous (n_samples,) array of ``dtype``: finite,
    non-negative, not all zero."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array, got dtype {w.dtype}")
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(
            f"{name} must have shape ({n_samples},) (one weight per sample), got {w.shape}"
        )
    w = np.ascontiguousarray(w, dtype=dtype)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} contains NaN or inf; every weight must be finite")
    if np.any(w < 0):
        raise ValueError(f"{name} must be >= 0, got a minimum of {w.min()}")
    if not np.any(w > 0):
        raise ValueError(f"{name} is all zeros; at least one sample must have a positive weight")
    return w


def _check_weight_vector(weight, name):
    """A 1-D non-negative finite float64 vector (class weights, pos_weight), or None."""
    if weight is None:
        return None
    w = np.asarray(weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array, got dtype {w.dtype}")
    w = np.atleast_1d(w).astype(np.float64)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {np.shape(weight)}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{name} must hold finite values >= 0")
    return w


class _Vectors:
    """Per-(dtype, length) copies of a weight vector (or ones), and the empty "no sample
    weights" array the weighted kernels take: made once, not per batch."""

    def __init__(self, values, name, what):
        self.values, self.name, self.what = values, name, what
        self._cache = {}

    def get(self, k, dtype):
        key = (k, np.dtype(dtype))
        arr = self._cache.get(key)
        if arr is None:
            if self.values is None:
                arr = np.ones(k, dtype)
            elif self.values.shape[0] == 1 and self.what == "outputs":
                arr = np.full(k, self.values[0], dtype)
            elif self.values.shape[0] != k:
                raise ValueError(
                    f"{self.name} has {self.values.shape[0]} entries but the output has {k} "
                    f"{self.what}"
                )
            else:
                arr = self.values.astype(dtype)
            self._cache[key] = arr
        return arr


_EMPTY = {
    np.dtype(np.float32): np.empty(0, np.float32),
    np.dtype(np.float64): np.empty(0, np.float64),
}


def _sw(sample_weight, dtype):
    return _EMPTY[np.dtype(dtype)] if sample_weight is None else sample_weight


#: how far a probability row's sum may be from 1 (float32 rows of ~1000 classes round to 1e-5)
ROW_SUM_TOLERANCE = 1e-4


class _ClassificationLoss(Loss):
    classification = True

    def check_target(self, target, output):
        target_arr = np.asarray(target)
        if target_arr.ndim == 2:
            T = check_targets(target_arr, output.shape[1], "target", output.shape[0], output.dtype)
            self.check_target_values(T, "target")
            return T
        return check_labels(target_arr, output.shape[1], "target", output.shape[0])

    def check_target_values(self, T, name):
        """2-D targets must be probability rows: non-negative, each summing to 1 (within
        ROW_SUM_TOLERANCE); a cross-entropy of anything else is not a loss (negative targets
        drove it to -8.3 and training to nonsense)."""
        low = T.min()
        if low < 0:
            raise ValueError(
                f"{name} must hold probability rows (one-hot or class probabilities: values "
                f">= 0, each row summing to 1) for {type(self).__name__}; got a value of {low:g}"
            )
        sums = T.sum(axis=1, dtype=np.float64)
        worst = int(np.argmax(np.abs(sums - 1.0)))
        if abs(sums[worst] - 1.0) > ROW_SUM_TOLERANCE:
            raise ValueError(
                f"{name} must hold probability rows (one-hot or class probabilities: values "
                f">= 0, each row summing to 1) for {type(self).__name__}; row {worst} sums to "
                f"{sums[worst]:.6g}"
            )


class SoftmaxCrossEntropy(_ClassificationLoss):
    """Softmax + cross-entropy on logits, fused: stable for any logits, gradient (P - T) / n.

    Targets are integer labels (n,) or rows of class probabilities (n, k), e.g. one-hot;
    ``forward(Z, target, sample_weight=None)`` takes Z (n, k) logits.

    Parameters
    ----------
    weight : array (k,), optional
        Per-class weights, as ``torch.nn.CrossEntropyLoss(weight=...)``.  With integer labels
        the loss is normalised by the weights of the samples' classes:
        sum_i w[y_i] l_i / sum_i w[y_i] (with sample weights s_i: sum_i s_i w[y_i] l_i /
        sum_i s_i w[y_i]).  With probability rows each term -T_ij log P_ij is multiplied by
        w[j] and the loss is divided by n (or sum_i s_i), as torch does.
    label_smoothing : float in [0, 1]
        eps: the target becomes (1 - eps) * onehot + eps / k (torch's definition).  With class
        weights and labels, the smoothing term is sum_j w[j] (-log P_ij) * eps / k, under the
        same normaliser sum_i w[y_i] (torch).
    """

    def __init__(self, weight: ArrayLike | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.weight = _check_weight_vector(weight, "weight")
        self.label_smoothing = check_number(label_smoothing, "label_smoothing", low=0.0, high=1.0)
        self._class_weight = _Vectors(self.weight, "weight", "classes")

    def _forward(self, Z, target, sample_weight=None):
        dZ = self._grad_buffer(Z)
        plain = self.weight is None and self.label_smoothing == 0.0
        if plain and sample_weight is None:
            if target.ndim == 1:
                kernel = pick(K.softmax_xent_labels, K.softmax_xent_labels_parallel, Z.size)
            else:
                kernel = pick(K.softmax_xent_targets, K.softmax_xent_targets_parallel, Z.size)
            return float(kernel(Z, target, dZ))
        cw = self._class_weight.get(Z.shape[1], Z.dtype)
        sw = _sw(sample_weight, Z.dtype)
        if target.ndim == 1:
            kernel = pick(
                K.softmax_xent_labels_weighted, K.softmax_xent_labels_weighted_parallel, Z.size
            )
        else:
            kernel = pick(
                K.softmax_xent_targets_weighted, K.softmax_xent_targets_weighted_parallel, Z.size
            )
        return float(kernel(Z, target, cw, sw, self.label_smoothing, dZ))

    def get_config(self) -> dict[str, Any]:
        return {
            "weight": None if self.weight is None else self.weight.tolist(),
            "label_smoothing": self.label_smoothing,
        }


class CrossEntropy(_ClassificationLoss):
    """Cross-entropy on probabilities (after a Softmax layer), clipped to [eps, 1] so log(0)
    never happens.  Targets are one-hot / probability rows or integer labels.

    ``weight`` (k,): per-class weights with the same normalisation as
    :class:`SoftmaxCrossEntropy` (labels: divided by the sum of the samples' class weights;
    probability rows: divided by n).
    """

    def __init__(self, eps: float = 1e-8, weight: ArrayLike | None = None) -> None:
        super().__init__()
        self.eps = check_number(eps, "eps", low=0.0, high=1.0, low_open=True)
        self.weight = _check_weight_vector(weight, "weight")
        self._class_weight = _Vectors(self.weight, "weight", "classes")

    def _forward(self, P, target, sample_weight=None):
        dP = self._grad_buffer(P)
        if self.weight is None and sample_weight is None:
            if target.ndim == 1:
                kernel = pick(K.cross_entropy_labels, K.cross_entropy_labels_parallel, P.size)
            else:
                kernel = pick(K.cross_entropy_targets, K.cross_entropy_targets_parallel, P.size)
            return float(kernel(P, target, self.eps, dP))
        cw = self._class_weight.get(P.shape[1], P.dtype)
        sw = _sw(sample_weight, P.dtype)
        if target.ndim == 1:
            kernel = pick(
                K.cross_entropy_labels_weighted, K.cross_entropy_labels_weighted_parallel, P.size
            )
        else:
            kernel = pick(
                K.cross_entropy_targets_weighted, K.cross_entropy_targets_weighted_parallel, P.size
            )
        return float(kernel(P, target, cw, sw, self.eps, dP))

    def get_config(self) -> dict[str, Any]:
        return {"eps": self.eps, "weight": None if self.weight is None else self.weight.tolist()}


class MSELoss(Loss):
    """Mean squared error over every element: mean((output - target)^2)."""

    def _forward(self, Y, T, sample_weight=None):
        dY = self._grad_buffer(Y)
        if sample_weight is None:
            return float(pick(K.mse, K.mse_parallel, Y.size)(Y, T, dY))
        return float(pick(K.mse_weighted, K.mse_weighted_parallel, Y.size)(Y, T, sample_weight, dY))


class HuberLoss(Loss):
    """Huber loss (torch.nn.HuberLoss): quadratic for small errors, linear for large ones.

    Per element, with ``d = output - target``: ``0.5 d^2`` if ``|d| < delta``, else
    ``delta (|d| - delta/2)``; the loss is the mean over all elements (n * k).

    Parameters
    ----------
    delta : float > 0
    """

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        self.delta = check_number(delta, "delta", low=0.0, low_open=True)

    def _forward(self, Y, T, sample_weight=None):
        dY = self._grad_buffer(Y)
        kernel = pick(K.huber, K.huber_parallel, Y.size)
        return float(kernel(Y, T, self.delta, _sw(sample_weight, Y.dtype), dY))

    def get_config(self) -> dict[str, Any]:
        return {"delta": self.delta}


class BCEWithLogits(Loss):
    """Sigmoid + binary cross-entropy on logits, fused (torch.nn.BCEWithLogitsLoss).

    Binary: output (n, 1) with targets (n,) or (n, 1).  Multi-label: output (n, k) with
    targets (n, k).  Targets are 0/1 labels or probabilities in [0, 1].  Per element
    l = -[pw t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))], computed as
    pw t softplus(-z) + (1 - t) softplus(z) with ``softplus(z) = max(z, 0) + log1p(exp(-|z|))``,
    finite for logits of any size; the loss is the mean over all elements.

    Parameters
    ----------
    pos_weight : float or array (k,), optional
        Weight of the positive term per output column (pw > 1 raises recall).
    """

    def __init__(self, pos_weight: ArrayLike | None = None) -> None:
        super().__init__()
        self.pos_weight = _check_weight_vector(pos_weight, "pos_weight")
        self._pos_weight = _Vectors(self.pos_weight, "pos_weight", "outputs")

    def check_target_values(self, T, name):
        if T.size and (T.min() < 0 or T.max() > 1):
            raise ValueError(
                f"{name} must hold 0/1 labels or probabilities in [0, 1], got values in "
                f"[{T.min():g}, {T.max():g}]"
            )

    def labels_of(self, T):
        """A binary classifier (one output, 0/1 targets) records accuracy: logit > 0 is a
        prediction of 1."""
        if T.shape[1] == 1 and np.all((T == 0) | (T == 1)):
            return np.ascontiguousarray(T[:, 0], dtype=np.int64)
        return None

    def _forward(self, Z, T, sample_weight=None):
        dZ = self._grad_buffer(Z)
        pw = self._pos_weight.get(Z.shape[1], Z.dtype)
        kernel = pick(K.bce_with_logits, K.bce_with_logits_parallel, Z.size)
        return float(kernel(Z, T, pw, _sw(sample_weight, Z.dtype), dZ))

    def get_config(self) -> dict[str, Any]:
        return {"pos_weight": None if self.pos_weight is None else self.pos_weight.tolist()}


LOSSES = {
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "cross_entropy": CrossEntropy,
    "mse": MSELoss,
    "huber": HuberLoss,
    "bce_with_logits": BCEWithLogits,
}
