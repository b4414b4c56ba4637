"""Dense (fully connected) layer kernels: ``Z = X @ W + b`` with a fused activation, and the
backward pass ``dW (+)= X.T @ dZ``, ``db (+)= sum(dZ)``, ``dX = (dZ @ W.T) * f'(X)``.

Large products go to BLAS (``_blas.gemm``) and the bias, activation and mask are applied in a
second pass over the output while it is still in cache.  Products too small for BLAS to pay for
its call overhead run as compiled loops (``small_product``).

The pass after a BLAS product is serial in both builds: BLAS already runs on every thread, and
a numba parallel region next to it costs far more than it saves.  numba's OpenMP workers spin
for milliseconds after a region (libgomp's default spin, which fastnn leaves alone: see
fastnn._threads) and starve the OpenBLAS worker on the same core.  Measured (2 cores, torch
imported first): ``predict`` of 784-100-10 on 100 000 rows took 380-390 ms with the
row-parallel pass and 140-160 ms with a serial one.  (``predict`` now splits whole networks
by rows instead, with BLAS at one thread per share: ``kernels/inference.py``.)
"""

from numba import prange

from ._blas import gemm
from ._config import njit, twin
from .activations import activate, bias_activate, derivative, mask_inplace

# Products of at most this many multiply-adds (n_rows * n_in * n_out), and one-row products, run
# as compiled loops; everything else goes to BLAS.  Measured on the 2-core reference machine
# (float32, forward with bias + ReLU / weight gradient, loop vs gemm through _blas): 1x4x6
# 35 / 118 ns, 4x4x6 91 / 137 ns, 8x4x6 171 / 169 ns (the crossover, ~200), 16x4x6 0.32 /
# 0.12 us (NumPy's OpenBLAS), 150x8x10 5.6 / 1.4 us, 64x100x10 27 / 3.3 us, 64x784x100 397 /
# 130 us.  A one-row product is the exception: 1x784x100 took 6 us as a loop and 56 us in
# gemm (OpenBLAS treats it as a threaded matrix-vector product), so one row always loops.
# (The earlier threshold, 32768, sent the iris network's 150-row products to loops that ran
# 3-4x slower than BLAS.)
SMALL_WORK = 192


@njit
def small_product(n_rows, n_in, n_out):
    """True when ``(n_rows, n_in) @ (n_in, n_out)`` should run as a compiled loop."""
    return n_rows < 2 or n_rows * n_in * n_out <= SMALL_WORK


@njit
def bias_act(A, b, code, alpha):
    """A = f(A + b) in place, serially (the pass after a BLAS product)."""
    bias_activate(A, b, code, alpha)


@njit
def mask_rows(dX, X, code, alpha):
    """dX *= f'(X) in place, serially (the pass after a BLAS product)."""
    mask_inplace(dX, X, code, alpha)


@njit
def _small_matmul_bias_act(X, W, b, code, alpha, A, i):
    """Row i of A = f(X @ W + b), as a loop (no BLAS)."""
    n_in, n_out = W.shape
    for j in range(n_out):
        A[i, j] = b[j]
    for p in range(n_in):
        x = X[i, p]
        for j in range(n_out):
            A[i, j] += x * W[p, j]
    for j in range(n_out):
        A[i, j] = activate(A[i, j], code, alpha)


def _dense_forward(X, W, b, code, alpha, A):
    """A = f(X @ W + b).

    X (n, n_in), W (n_in, n_out), b (n_out,), A (n, n_out) written in place.  ``code`` names the
    activation (kernels.activations), ``alpha`` the leaky-ReLU slope.
    """
    n = X.shape[0]
    n_in, n_out = W.shape
    s = A.dtype.type(alpha)
    if small_product(n, n_in, n_out):
        for i in prange(n):
            _small_matmul_bias_act(X, W, b, code, s, A, i)
        return
    gemm(False, False, 1.0, X, W, 0.0, A)
    bias_act(A, b, code, s)


def _dense_backward(X, W, dZ, beta, dW, db, prev_code, alpha, dX):
    """Gradients of a dense layer.

    X (n, n_in) the layer input, W (n_in, n_out), dZ (n, n_out) the gradient at the
    pre-activation.  ``dW = beta * dW + X.T @ dZ`` and ``db = beta * db + sum_rows(dZ)``
    (beta=1 accumulates, beta=0 overwrites).  If ``dX`` has rows, it receives
    ``(dZ @ W.T) * f'(X)`` where f is the activation (``prev_code``) that produced X, so the
    previous layer's mask is applied in the same pass; ``prev_code=0`` gives plain dZ @ W.T.
    """
    n, n_in = X.shape
    n_out = W.shape[1]
    s = X.dtype.type(alpha)
    small = small_product(n, n_in, n_out)
    if small:
        # dW: each thread owns rows of dW (input features).
        for p in prange(n_in):
            for j in range(n_out):
                # beta=0 overwrites, as BLAS does: stale NaN/inf must not survive as NaN*0
                dW[p, j] = dW[p, j] * beta if beta != 0 else 0
            for i in range(n):
                x = X[i, p]
                for j in range(n_out):
                    dW[p, j] += x * dZ[i, j]
    else:
        gemm(True, False, 1.0, X, dZ, beta, dW)
    for j in range(n_out):
        db[j] = db[j] * beta if beta != 0 else 0
    for i in range(n):
        for j in range(n_out):
            db[j] += dZ[i, j]
    if dX.shape[0] == 0:
        return
    if small:
        for i in prange(n):
            for p in range(n_in):
                acc = dZ[i, 0] * W[p, 0]
                for j in range(1, n_out):
                    acc += dZ[i, j] * W[p, j]
                dX[i, p] = acc * derivative(X[i, p], prev_code, s)
        return
    gemm(False, True, 1.0, dZ, W, 0.0, dX)
    if prev_code != 0:
        mask_rows(dX, X, prev_code, s)


dense_forward, dense_forward_parallel = twin(_dense_forward)
dense_backward, dense_backward_parallel = twin(_dense_backward)

__all__ = [
    "SMALL_WORK",
    "dense_forward",
    "dense_forward_parallel",
    "dense_backward",
    "dense_backward_parallel",
]
