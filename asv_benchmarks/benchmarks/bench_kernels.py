"""Steady-state speed of each public kernel of ``fastnn.kernels``, one class per kernel.

Params: dtype, a shape from :mod:`common` (tiny / mnist / large), and the serial or parallel
build (``k`` or ``k_parallel``).  Outputs are allocated in ``setup`` and the kernel is called
once there, so the JIT compile (or the on-disk cache load) is never timed.  Only the public
entry points are called (``dense_forward(X, W, b, code, alpha, A)`` and friends), so internal
changes to a kernel are measured, not broken.
"""

import numpy as np

from .common import (
    ACTIVATIONS,
    BUILDS,
    DENSE_SHAPES,
    DTYPES,
    PARAM_SIZES,
    ROW_SHAPES,
    kernel,
    random_array,
    random_labels,
    set_threads,
)


def _activation_code(name):
    from fastnn import kernels

    codes = getattr(kernels, "CODES", None)
    if codes is None or name not in codes:
        raise NotImplementedError(f"activation {name!r} has no kernel code in this commit")
    return codes[name]


class _KernelBench:
    """Common timing settings: many short calls, a fixed thread count."""

    timeout = 120
    # several samples per repeat and a warm-up call in setup: the per-call time of the tiny
    # shapes is a few microseconds, where timer and interpreter noise matter
    min_run_count = 5

    def setup(self, *params):
        set_threads()


class DenseForward(_KernelBench):
    """``A = f(X @ W + b)`` with each fused activation (``dense_forward``)."""

    params = (DTYPES, list(DENSE_SHAPES), ACTIVATIONS, BUILDS)
    param_names = ("dtype", "shape", "activation", "build")

    def setup(self, dtype, shape, activation, build):
        super().setup()
        n, n_in, n_out = DENSE_SHAPES[shape]
        self.fn = kernel("dense_forward", build)
        self.code = _activation_code(activation)
        self.X = random_array((n, n_in), dtype, seed=1)
        self.W = random_array((n_in, n_out), dtype, seed=2, scale=1 / np.sqrt(n_in))
        self.b = random_array((n_out,), dtype, seed=3)
        self.A = np.empty((n, n_out), dtype)
        self.time_dense_forward(dtype, shape, activation, build)

    def time_dense_forward(self, dtype, shape, activation, build):
        self.fn(self.X, self.W, self.b, self.code, 0.01, self.A)


class DenseBackward(_KernelBench):
    """``dW (+)= X.T @ dZ``, ``db (+)= sum(dZ)`` and ``dX = (dZ @ W.T) * f'(X)``
    (``dense_backward``); ``input_grad=False`` is the first layer (no dX), where only the
    weight-gradient accumulation runs."""

    params = (DTYPES, list(DENSE_SHAPES), (True, False), BUILDS)
    param_names = ("dtype", "shape", "input_grad", "build")

    def setup(self, dtype, shape, input_grad, build):
        super().setup()
        n, n_in, n_out = DENSE_SHAPES[shape]
        self.fn = kernel("dense_backward", build)
        self.code = _activation_code("relu")
        self.X = np.maximum(random_array((n, n_in), dtype, seed=1), 0)
        self.W = random_array((n_in, n_out), dtype, seed=2, scale=1 / np.sqrt(n_in))
        self.dZ = random_array((n, n_out), dtype, seed=3)
        self.dW = np.zeros((n_in, n_out), dtype)
        self.db = np.zeros(n_out, dtype)
        self.dX = np.empty((n if input_grad else 0, n_in), dtype)
        self.time_dense_backward(dtype, shape, input_grad, build)

    def time_dense_backward(self, dtype, shape, input_grad, build):
        # beta=1: accumulate into dW and db, as a backward pass after zero_grad does
        self.fn(self.X, self.W, self.dZ, 1.0, self.dW, self.db, self.code, 0.01, self.dX)


class ActivationForward(_KernelBench):
    """Stand-alone ``A = f(Z)`` (``activation_forward``), for activations that are not fused."""

    params = (DTYPES, list(ROW_SHAPES), ACTIVATIONS, BUILDS)
    param_names = ("dtype", "shape", "activation", "build")

    def setup(self, dtype, shape, activation, build):
        super().setup()
        self.fn = kernel("activation_forward", build)
        self.code = _activation_code(activation)
        self.Z = random_array(ROW_SHAPES[shape], dtype, seed=1)
        self.A = np.empty_like(self.Z)
        self.time_activation_forward(dtype, shape, activation, build)

    def time_activation_forward(self, dtype, shape, activation, build):
        self.fn(self.Z, self.code, 0.01, self.A)


class ActivationBackward(_KernelBench):
    """``dZ = dA * f'(A)`` from the activation's output (``activation_backward``)."""

    params = (DTYPES, list(ROW_SHAPES), ACTIVATIONS, BUILDS)
    param_names = ("dtype", "shape", "activation", "build")

    def setup(self, dtype, shape, activation, build):
        super().setup()
        self.fn = kernel("activation_backward", build)
        self.code = _activation_code(activation)
        Z = random_array(ROW_SHAPES[shape], dtype, seed=1)
        self.A = np.tanh(Z) if activation in ("tanh", "sigmoid") else Z
        self.dA = random_array(ROW_SHAPES[shape], dtype, seed=2)
        self.dZ = np.empty_like(self.dA)
        self.time_activation_backward(dtype, shape, activation, build)

    def time_activation_backward(self, dtype, shape, activation, build):
        self.fn(self.A, self.dA, self.code, 0.01, self.dZ)


class SoftmaxForward(_KernelBench):
    """Row softmax ``P = softmax(Z)`` (``softmax_forward``)."""

    params = (DTYPES, list(ROW_SHAPES), BUILDS)
    param_names = ("dtype", "shape", "build")

    def setup(self, dtype, shape, build):
        super().setup()
        self.fn = kernel("softmax_forward", build)
        self.Z = random_array(ROW_SHAPES[shape], dtype, seed=1, scale=3.0)
        self.P = np.empty_like(self.Z)
        self.time_softmax_forward(dtype, shape, build)

    def time_softmax_forward(self, dtype, shape, build):
        self.fn(self.Z, self.P)


class SoftmaxBackward(_KernelBench):
    """Softmax Jacobian-vector product ``dZ = P * (dP - sum(dP * P))`` (``softmax_backward``)."""

    params = (DTYPES, list(ROW_SHAPES), BUILDS)
    param_names = ("dtype", "shape", "build")

    def setup(self, dtype, shape, build):
        super().setup()
        self.fn = kernel("softmax_backward", build)
        Z = random_array(ROW_SHAPES[shape], dtype, seed=1)
        self.P = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
        self.dP = random_array(ROW_SHAPES[shape], dtype, seed=2)
        self.dZ = np.empty_like(self.P)
        self.time_softmax_backward(dtype, shape, build)

    def time_softmax_backward(self, dtype, shape, build):
        self.fn(self.P, self.dP, self.dZ)


class SoftmaxCrossEntropy(_KernelBench):
    """Fused softmax cross-entropy value and gradient from logits and integer labels
    (``softmax_xent_labels``): the loss step of every classification fit."""

    params = (DTYPES, list(ROW_SHAPES), BUILDS)
    param_names = ("dtype", "shape", "build")

    def setup(self, dtype, shape, build):
        super().setup()
        n, k = ROW_SHAPES[shape]
        self.fn = kernel("softmax_xent_labels", build)
        self.Z = random_array((n, k), dtype, seed=1, scale=3.0)
        self.y = random_labels(n, k, seed=2)
        self.dZ = np.empty_like(self.Z)
        self.time_softmax_xent_labels(dtype, shape, build)

    def time_softmax_xent_labels(self, dtype, shape, build):
        self.fn(self.Z, self.y, self.dZ)


class SGDUpdate(_KernelBench):
    """One SGD step over a flat parameter buffer (``sgd_update``): plain, with momentum, and
    Nesterov momentum with weight decay."""

    params = (DTYPES, list(PARAM_SIZES), ("plain", "momentum", "nesterov_wd"), BUILDS)
    param_names = ("dtype", "size", "variant", "build")

    def setup(self, dtype, size, variant, build):
        super().setup()
        n = PARAM_SIZES[size]
        self.fn = kernel("sgd_update", build)
        self.p = random_array(n, dtype, seed=1)
        self.g = random_array(n, dtype, seed=2, scale=1e-3)
        self.buf = np.zeros(n, dtype)
        self.args = {
            "plain": (0.01, 0.0, 0.0, 0.0, False),
            "momentum": (0.01, 0.9, 0.0, 0.0, False),
            "nesterov_wd": (0.01, 0.9, 0.0, 1e-4, True),
        }[variant]
        self.time_sgd_update(dtype, size, variant, build)

    def time_sgd_update(self, dtype, size, variant, build):
        lr, momentum, dampening, wd, nesterov = self.args
        self.fn(self.p, self.g, self.buf, lr, momentum, dampening, wd, nesterov, False)


class AdamUpdate(_KernelBench):
    """One Adam (L2 weight decay) or AdamW (decoupled) step over a flat buffer
    (``adam_update``)."""

    params = (DTYPES, list(PARAM_SIZES), ("adam", "adamw"), BUILDS)
    param_names = ("dtype", "size", "variant", "build")

    def setup(self, dtype, size, variant, build):
        super().setup()
        n = PARAM_SIZES[size]
        self.fn = kernel("adam_update", build)
        self.p = random_array(n, dtype, seed=1)
        self.g = random_array(n, dtype, seed=2, scale=1e-3)
        self.m = np.zeros(n, dtype)
        self.v = np.zeros(n, dtype)
        self.decoupled = variant == "adamw"
        self.time_adam_update(dtype, size, variant, build)

    def time_adam_update(self, dtype, size, variant, build):
        # a fixed step count keeps the bias corrections (and the work) the same every call
        self.fn(self.p, self.g, self.m, self.v, 1e-3, 0.9, 0.999, 1e-8, 1e-2, self.decoupled, 10)


class GatherRows(_KernelBench):
    """Shuffled batch assembly ``out[r] = X[idx[r]]`` (``gather_rows``), run once per batch."""

    params = (DTYPES, ("tiny", "mnist", "large"), BUILDS)
    param_names = ("dtype", "shape", "build")
    _shapes = {"tiny": (150, 4, 150), "mnist": (4096, 784, 64), "large": (4096, 784, 512)}

    def setup(self, dtype, shape, build):
        super().setup()
        n, k, m = self._shapes[shape]
        self.fn = kernel("gather_rows", build)
        self.X = random_array((n, k), dtype, seed=1)
        self.idx = np.random.default_rng(2).permutation(n)[:m].astype(np.int64)
        self.out = np.empty((m, k), dtype)
        self.time_gather_rows(dtype, shape, build)

    def time_gather_rows(self, dtype, shape, build):
        self.fn(self.X, self.idx, self.out)
