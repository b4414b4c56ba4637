"""BatchNorm1d and LayerNorm: normalisation layers with learnable scale and shift."""

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from fastnn import kernels as K

from .._threads import pick
from .._validation import (
    check_dtype,
    check_fits_in_memory,
    check_number,
    check_positive_int,
)
from ..parameter import Parameter
from ._base import BufferCache, Layer
from ._inputs import layer_grad, layer_input


class _Norm(Layer):
    """Shared parts: the affine parameters (or fixed ones/zeros) and their gradients."""

    def _init_affine(self, n, affine, dtype):
        self.dtype = check_dtype(dtype)
        check_fits_in_memory(n * 8 * self.dtype.itemsize, f"{type(self).__name__} of {n} features")
        self._buffers = BufferCache()
        if affine:
            self.weight = Parameter(np.ones(n, self.dtype), name="weight")
            self.bias = Parameter(np.zeros(n, self.dtype), name="bias")
        else:
            self.weight = self.bias = None
            self._one = np.ones(n, self.dtype)
            self._zero = np.zeros(n, self.dtype)
            self._scratch = np.zeros((2, n), self.dtype)

    def parameters(self) -> list[Parameter]:
        return [] if self.weight is None else [self.weight, self.bias]

    def _gamma_beta(self):
        if self.weight is None:
            return self._one, self._zero
        return self.weight.data, self.bias.data

    def _grads(self):
        """Where backward accumulates d gamma and d beta (scratch when not affine)."""
        if self.weight is None:
            self._scratch[...] = 0
            return self._scratch[0], self._scratch[1]
        return self.weight.grad, self.bias.grad


class BatchNorm1d(_Norm):
    """Batch normalisation over the samples of a batch, per feature (torch.nn.BatchNorm1d).

    Training (``forward``, ``fit``): Y = gamma * (X - mean_B) / sqrt(var_B + eps) + beta with the
    batch's mean and biased variance, and the running statistics move towards them:
    running = (1 - momentum) * running + momentum * batch, using the unbiased batch variance
    for ``running_var``.  Inference (``predict``) normalises with the running statistics and
    changes nothing.

    Parameters
    ----------
    num_features : int
        m, the number of features (columns).
    eps : float
        Added to the variance.
    momentum : float in [0, 1] or None
        Weight of the new batch in the running statistics; None gives the cumulative average
        over all batches seen (as torch).
    affine : bool
        Learn ``weight`` (gamma, init 1) and ``bias`` (beta, init 0), each of shape (m,).
    dtype : float32 or float64
        Of the parameters and running statistics; must match the model's.

    Notes
    -----
    Shapes: X (n, m) -> (n, m); training needs n >= 2 (a variance of one sample is undefined).
    State (``state_arrays``): running_mean (m,), running_var (m,), num_batches_tracked ().
    """

    #: fewest samples a training batch may have (fit checks every batch before it starts)
    min_train_batch = 2

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        *,
        dtype: DTypeLike = np.float32,
    ) -> None:
        self.num_features = check_positive_int(num_features, "num_features")
        self.eps = check_number(eps, "eps", low=0.0, low_open=True)
        self.momentum = (
            None if momentum is None else check_number(momentum, "momentum", low=0.0, high=1.0)
        )
        self.affine = bool(affine)
        self._init_affine(self.num_features, self.affine, dtype)
        m = self.num_features
        self.running_mean = np.zeros(m, self.dtype)
        self.running_var = np.ones(m, self.dtype)
        self.num_batches_tracked = 0
        self._work = np.empty((2, m), np.float64)
        self._Xhat = None

    def forward(self, X: np.ndarray) -> np.ndarray:
        """Training forward with batch statistics; updates the running statistics."""
        X = layer_input(X, "BatchNorm1d", self.num_features, self.dtype)
        n, m = X.shape
        if n < 2:
            raise ValueError(
                "BatchNorm1d needs at least 2 samples per batch in training (got 1): the batch "
                "variance of one sample is undefined. Choose a batch_size that does not leave a "
                "last batch of one sample, or use LayerNorm."
            )
        self.num_batches_tracked += 1
        momentum = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        mean = self._buffers.get("mean", (m,), X.dtype)
        invstd = self._buffers.get("invstd", (m,), X.dtype)
        Xhat = self._buffers.get("Xhat", X.shape, X.dtype)
        Y = self._buffers.get("out", X.shape, X.dtype)
        gamma, beta = self._gamma_beta()
        pick(K.batchnorm_forward_train, K.batchnorm_forward_train_parallel, X.size)(
            X,
            gamma,
            beta,
            self.eps,
            momentum,
            self.running_mean,
            self.running_var,
            self._work,
            mean,
            invstd,
            Xhat,
            Y,
        )
        self._Xhat, self._invstd, self._A = Xhat, invstd, Y
        return Y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dX through the batch statistics; accumulates into weight.grad and bias.grad."""
        if self._Xhat is None:
            raise RuntimeError("BatchNorm1d.backward called before forward")
        Xhat = self._Xhat
        dout = layer_grad(dout, Xhat.shape, Xhat.dtype, "BatchNorm1d")
        dX = self._buffers.get("dX", Xhat.shape, Xhat.dtype)
        gamma, _ = self._gamma_beta()
        dgamma, dbeta = self._grads()
        pick(K.batchnorm_backward, K.batchnorm_backward_parallel, dout.size)(
            dout, Xhat, gamma, self._invstd, self._work, dgamma, dbeta, dX
        )
        return dX

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Inference with the running statistics: a new array; no state changes."""
        X = layer_input(X, "BatchNorm1d", self.num_features, self.dtype)
        Y = np.empty_like(X)
        gamma, beta = self._gamma_beta()
        pick(K.batchnorm_forward_infer, K.batchnorm_forward_infer_parallel, X.size)(
            X, gamma, beta, self.running_mean, self.running_var, self.eps, Y
        )
        return Y

    def get_config(self) -> dict[str, Any]:
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "dtype": self.dtype.name,
        }

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {
            "running_mean": self.running_mean.copy(),
            "running_var": self.running_var.copy(),
            "num_batches_tracked": np.array(self.num_batches_tracked, dtype=np.int64),
        }

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        expected = {"running_mean", "running_var", "num_batches_tracked"}
        extra = set(arrays) - expected
        if extra:
            raise ValueError(f"BatchNorm1d: unexpected state arrays {sorted(extra)}")
        m = self.num_features
        for name in ("running_mean", "running_var"):
            if name in arrays:
                a = np.asarray(arrays[name])
                if a.shape != (m,):
                    raise ValueError(f"BatchNorm1d: {name} must have shape ({m},), got {a.shape}")
                getattr(self, name)[...] = a
        if "num_batches_tracked" in arrays:
            self.num_batches_tracked = int(np.asarray(arrays["num_batches_tracked"]))


class LayerNorm(_Norm):
    """Layer normalisation over the features of each sample (torch.nn.LayerNorm, 1-D shape).

    Y = gamma * (X - mean_row) / sqrt(var_row + eps) + beta, with each row's mean and biased
    variance; the same computation in training and inference.

    Parameters
    ----------
    normalized_shape : int or tuple of one int
        m, the number of features.
    eps : float
        Added to the variance.
    elementwise_affine : bool
        Learn ``weight`` (gamma, init 1) and ``bias`` (beta, init 0), each of shape (m,).
    dtype : float32 or float64

    Notes
    -----
    Shapes: X (n, m) -> (n, m).
    """

    normalized_shape: int
    eps: float
    elementwise_affine: bool

    def __init__(
        self,
        normalized_shape: int,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        *,
        dtype: DTypeLike = np.float32,
    ) -> None:
        shape = normalized_shape
        if isinstance(shape, tuple | list):
            if len(shape) != 1:
                raise ValueError(
                    f"normalized_shape must be an int or a 1-tuple (only 2-D inputs), got {shape!r}"
                )
            shape = shape[0]
        if isinstance(shape, bool) or not isinstance(shape, numbers.Integral):
            raise TypeError(f"normalized_shape must be a positive integer, got {shape!r}")
        self.normalized_shape = check_positive_int(shape, "normalized_shape")
        self.eps = check_number(eps, "eps", low=0.0, low_open=True)
        self.elementwise_affine = bool(elementwise_affine)
        self._init_affine(self.normalized_shape, self.elementwise_affine, dtype)
        self._Xhat: np.ndarray | None = None

    def _run(self, X, buffers):
        n, m = X.shape
        invstd = buffers.get("invstd", (n,), X.dtype)
        Xhat = buffers.get("Xhat", X.shape, X.dtype)
        Y = buffers.get("out", X.shape, X.dtype)
        gamma, beta = self._gamma_beta()
        pick(K.layernorm_forward, K.layernorm_forward_parallel, X.size)(
            X, gamma, beta, self.eps, invstd, Xhat, Y
        )
        return invstd, Xhat, Y

    def forward(self, X: np.ndarray) -> np.ndarray:
        X = layer_input(X, "LayerNorm", self.normalized_shape, self.dtype)
        self._invstd, self._Xhat, self._A = self._run(X, self._buffers)
        return self._A

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dX; accumulates into weight.grad and bias.grad."""
        if self._Xhat is None:
            raise RuntimeError("LayerNorm.backward called before forward")
        Xhat = self._Xhat
        dout = layer_grad(dout, Xhat.shape, Xhat.dtype, "LayerNorm")
        dX = self._buffers.get("dX", Xhat.shape, Xhat.dtype)
        gamma, _ = self._gamma_beta()
        dgamma, dbeta = self._grads()
        pick(K.layernorm_backward, K.layernorm_backward_parallel, dout.size)(
            dout, Xhat, gamma, self._invstd, dgamma, dbeta, dX
        )
        return dX

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The same normalisation as forward, into fresh arrays; no state kept."""
        X = layer_input(X, "LayerNorm", self.normalized_shape, self.dtype)
        return self._run(X, BufferCache(max_shapes=1))[2]

    def get_config(self) -> dict[str, Any]:
        return {
            "normalized_shape": self.normalized_shape,
            "eps": self.eps,
            "elementwise_affine": self.elementwise_affine,
            "dtype": self.dtype.name,
        }
