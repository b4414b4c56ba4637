"""Elementwise activations: forward, and the derivative written in terms of the output.

An activation is named by a small integer code so a dense kernel can fuse it into the pass
that adds the bias (forward) or into the pass after ``dZ @ W.T`` (backward).  Every
derivative here is a function of the activation's *output* ``A``, so a layer keeps only
``A`` and never the pre-activation ``Z``.  That holds for ReLU, leaky ReLU with a
non-negative slope, sigmoid and tanh.
"""

import math

from numba import prange, types
from numba.extending import overload

from ._config import njit, twin
from ._intrinsics import vsigmoid, vtanh

IDENTITY = 0
RELU = 1
LEAKY_RELU = 2
SIGMOID = 3
TANH = 4

CODES = {
    "identity": IDENTITY,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "sigmoid": SIGMOID,
    "tanh": TANH,
}


@njit
def activate(z, code, alpha):
    """Activation of one value ``z``; ``alpha`` is the leaky-ReLU slope (same dtype as z)."""
    if code == RELU:
        return z if z > 0 else z * 0
    if code == LEAKY_RELU:
        return z if z > 0 else z * alpha
    if code == SIGMOID:
        return vsigmoid(z)
    if code == TANH:
        return vtanh(z)
    return z


@njit
def derivative(a, code, alpha):
    """d activation / dz, from the output ``a``."""
    if code == RELU:
        return a * 0 + 1 if a > 0 else a * 0
    if code == LEAKY_RELU:
        return a * 0 + 1 if a > 0 else a * 0 + alpha
    if code == SIGMOID:
        return a * (1 - a)
    if code == TANH:
        return 1 - a * a
    return a * 0 + 1


# -- whole-array passes, one loop per activation ------------------------------------------------
# A loop that calls ``activate``/``derivative`` with a code known only at run time keeps the
# dispatch inside the loop body: LLVM does not hoist it, the loop does not vectorise, and for
# ReLU the per-element branch on the sign is mispredicted half the time.  Measured on the
# reference machine (float32, ReLU outputs as data, code passed at run time): dZ *= f'(A) plus
# the column sums on 512x1024 took 3.73 ms that way and 0.37 ms with one loop per code; 256x512
# 0.88 / 0.09 ms; tanh 0.65 / 0.20 ms.  bias_activate and the activation kernels below dispatch
# once, outside the loops; the serial ``activation_backward(A, D, code, alpha, D)`` is the
# in-place ``D *= f'(A)`` the dense and fit kernels apply after a BLAS product.

#: elements per task of the flat sigmoid/tanh loop (one thread each in the parallel build)
_BLOCK = 4096


@njit
def _squash_inplace(a, code):
    """a = sigmoid(a) or tanh(a) (``code``) in place, for 1-D a.  In place on purpose: with a
    separate output that may alias the input, LLVM guards the vector loop with an overlap
    check, and the in-place call (the usual one) fails it and runs the scalar loop."""
    if code == SIGMOID:
        for k in range(a.shape[0]):
            a[k] = vsigmoid(a[k])
    else:
        for k in range(a.shape[0]):
            a[k] = vtanh(a[k])


def _n_blocks(Z, A):
    """Tasks of the sigmoid/tanh pass: blocks of _BLOCK elements when Z and A are both
    C-contiguous, else rows.  Flat blocks because a loop along rows as narrow as a layer of 6
    or 10 units barely vectorises (100 000 x 6 float32: 13-15 ns per element that way, against
    2-3 ns flat).  numba types ``reshape`` only for contiguous arrays, so the choice is made per
    layout when a caller is compiled (the overloads below)."""
    return A.shape[0]


@njit
def _copy_squash(z, a, code):
    """a = sigmoid(z) or tanh(z) for 1-D z, a (a may be z): copied unless a is z, then
    squashed in place (see _squash_inplace)."""
    if a.ctypes.data != z.ctypes.data:
        for k in range(a.shape[0]):
            a[k] = z[k]
    _squash_inplace(a, code)


def _squash_block(Z, A, code, t):
    """A = sigmoid(Z) or tanh(Z) on block ``t`` (see _n_blocks); A may be Z."""
    _copy_squash(Z[t], A[t], code)


def _is_c(*arrays):
    return all(isinstance(x, types.Array) and x.layout == "C" for x in arrays)


@overload(_n_blocks)
def _n_blocks_overload(Z, A):
    if _is_c(Z, A):
        return lambda Z, A: (A.size + _BLOCK - 1) // _BLOCK
    return _n_blocks


@overload(_squash_block)
def _squash_block_overload(Z, A, code, t):
    if _is_c(Z, A):

        def flat(Z, A, code, t):
            lo, hi = t * _BLOCK, (t + 1) * _BLOCK
            _copy_squash(Z.reshape(Z.size)[lo:hi], A.reshape(A.size)[lo:hi], code)

        return flat
    return _squash_block


@njit
def bias_activate(A, b, code, alpha):
    """A = f(A + b) in place, b broadcast along rows (serial)."""
    n, m = A.shape
    if code == RELU:
        for i in range(n):
            for j in range(m):
                v = A[i, j] + b[j]
                A[i, j] = v if v > 0 else v * 0
    elif code == LEAKY_RELU:
        for i in range(n):
            for j in range(m):
                v = A[i, j] + b[j]
                A[i, j] = v if v > 0 else v * alpha
    else:
        for i in range(n):
            for j in range(m):
                A[i, j] += b[j]
        if code == SIGMOID or code == TANH:  # else the identity (or an unknown code)
            activation_forward(A, code, alpha, A)  # flat, vectorised in place


def _activation_forward(Z, code, alpha, A):
    """A = f(Z), row-parallel.  Z, A: (n, m); A may be Z (in place).  One loop per activation
    where the body is plain arithmetic (see bias_activate)."""
    n, m = Z.shape
    s = Z.dtype.type(alpha)
    if code == RELU:
        for i in prange(n):
            for j in range(m):
                z = Z[i, j]
                A[i, j] = z if z > 0 else z * 0
    elif code == LEAKY_RELU:
        for i in prange(n):
            for j in range(m):
                z = Z[i, j]
                A[i, j] = z if z > 0 else z * s
    elif code == SIGMOID or code == TANH:
        for t in prange(_n_blocks(Z, A)):  # flat blocks when both are C-contiguous
            _squash_block(Z, A, code, t)
    else:
        for i in prange(n):
            for j in range(m):
                A[i, j] = Z[i, j]


def _activation_backward(A, dA, code, alpha, dZ):
    """dZ = dA * f'(Z), with f' computed from the output A.  dZ may be dA (in place).  One
    loop per activation (see bias_activate)."""
    n, m = A.shape
    s = A.dtype.type(alpha)
    if code == RELU:
        for i in prange(n):
            for j in range(m):
                dZ[i, j] = dA[i, j] if A[i, j] > 0 else dA[i, j] * 0
    elif code == LEAKY_RELU:
        for i in prange(n):
            for j in range(m):
                dZ[i, j] = dA[i, j] if A[i, j] > 0 else dA[i, j] * s
    elif code == SIGMOID:
        for i in prange(n):
            for j in range(m):
                a = A[i, j]
                dZ[i, j] = dA[i, j] * (a * (1 - a))
    elif code == TANH:
        for i in prange(n):
            for j in range(m):
                a = A[i, j]
                dZ[i, j] = dA[i, j] * (1 - a * a)
    else:
        for i in prange(n):
            for j in range(m):
                dZ[i, j] = dA[i, j]


activation_forward, activation_forward_parallel = twin(_activation_forward)
activation_backward, activation_backward_parallel = twin(_activation_backward)


# -- in place, serial ------------------------------------------------------------------------
# ``activation_backward(A, D, code, alpha, D)`` reads and writes D through two arguments, so
# LLVM guards its vector loop with an overlap check between them, the in-place call fails it,
# and the scalar loop runs (as for sigmoid/tanh, see _squash_inplace).  Measured (float32 ReLU,
# 1500 values, reference machine): 0.44-0.53 us that way, 0.10 us with one argument for D.
@njit
def mask_inplace(D, A, code, alpha):
    """D *= f'(A) in place (D and A of one shape, serial): the pass after a product that
    turns the gradient at a layer's output into the gradient at its pre-activation."""
    n, m = A.shape
    s = A.dtype.type(alpha)
    one = A.dtype.type(1)
    # (ReLU's and leaky ReLU's slopes as a factor chosen per element: the same values as
    # ``D if A > 0 else D * s`` to the bit, but that form, an in-place select, stayed scalar:
    # 9.8 us on 200x100 against 1.8 (float32) and 3.6 (float64) this way)
    if code == RELU:
        zero = A.dtype.type(0)
        for i in range(n):
            for j in range(m):
                D[i, j] *= one if A[i, j] > 0 else zero
    elif code == LEAKY_RELU:
        for i in range(n):
            for j in range(m):
                D[i, j] *= one if A[i, j] > 0 else s
    elif code == SIGMOID:
        for i in range(n):
            for j in range(m):
                a = A[i, j]
                D[i, j] *= a * (1 - a)
    elif code == TANH:
        for i in range(n):
            for j in range(m):
                a = A[i, j]
                D[i, j] *= 1 - a * a


@njit
def activate_inplace(A, code, alpha):
    """A = f(A) in place (serial; see mask_inplace for why not activation_forward(A, .., A))."""
    n, m = A.shape
    s = A.dtype.type(alpha)
    one = A.dtype.type(1)
    # (the slope as a factor, as in mask_inplace: 9.4 us on 200x100 became 1.5-2.3 us)
    if code == RELU:
        zero = A.dtype.type(0)
        for i in range(n):
            for j in range(m):
                v = A[i, j]
                A[i, j] = v * (one if v > 0 else zero)
    elif code == LEAKY_RELU:
        for i in range(n):
            for j in range(m):
                v = A[i, j]
                A[i, j] = v * (one if v > 0 else s)
    elif code == SIGMOID or code == TANH:
        activation_forward(A, code, alpha, A)  # flat blocks, already in place


# -- GELU ------------------------------------------------------------------------------------
# GELU's derivative is not a function of its output (it is not monotonic), so a GELU layer
# keeps its input Z and is never fused into a dense stage.

_INV_SQRT2 = 0.7071067811865476  # 1 / sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)
_SQRT_2_OVER_PI = 0.7978845608028654  # sqrt(2 / pi)
_TANH_CUBIC = 0.044715


@njit
def gelu(z, approximate):
    """GELU of one value: z * Phi(z) (exact erf form), or torch's tanh approximation
    0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))) when ``approximate`` is true."""
    if approximate:
        u = _SQRT_2_OVER_PI * (z + _TANH_CUBIC * z * z * z)
        return 0.5 * z * (1 + math.tanh(u))
    return 0.5 * z * (1 + math.erf(z * _INV_SQRT2))


@njit
def gelu_derivative(z, approximate):
    """d GELU / dz at z: Phi(z) + z phi(z) (exact), or the derivative of the tanh form."""
    if approximate:
        z2 = z * z
        u = _SQRT_2_OVER_PI * (z + _TANH_CUBIC * z2 * z)
        t = math.tanh(u)
        du = _SQRT_2_OVER_PI * (1 + 3 * _TANH_CUBIC * z2)
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * du
    cdf = 0.5 * (1 + math.erf(z * _INV_SQRT2))
    return cdf + z * _INV_SQRT_2PI * math.exp(-0.5 * z * z)


def _gelu_forward(Z, approximate, A):
    """A = GELU(Z), row-parallel.  Z, A (n, m); ``approximate``: use the tanh form.  A may be Z
    (but the layer keeps Z for backward, so it does not do that)."""
    n, m = Z.shape
    t = A.dtype.type
    for i in prange(n):
        for j in range(m):
            A[i, j] = t(gelu(Z[i, j], approximate))


def _gelu_backward(Z, dA, approximate, dZ):
    """dZ = dA * GELU'(Z), from the pre-activation Z.  dZ may be dA."""
    n, m = Z.shape
    t = dZ.dtype.type
    for i in prange(n):
        for j in range(m):
            dZ[i, j] = dA[i, j] * t(gelu_derivative(Z[i, j], approximate))


gelu_forward, gelu_forward_parallel = twin(_gelu_forward)
gelu_backward, gelu_backward_parallel = twin(_gelu_backward)


def code_of(name):
    """Integer code for an activation name (used by the Python layer, not by kernels)."""
    return CODES[name]


__all__ = [
    "IDENTITY",
    "RELU",
    "LEAKY_RELU",
    "SIGMOID",
    "TANH",
    "CODES",
    "activate",
    "derivative",
    "code_of",
    "activation_forward",
    "activation_forward_parallel",
    "activation_backward",
    "activation_backward_parallel",
    "gelu_forward",
    "gelu_forward_parallel",
    "gelu_backward",
    "gelu_backward_parallel",
]
