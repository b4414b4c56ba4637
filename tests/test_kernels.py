"""Every kernel in fastnn.kernels against its plain-NumPy reference (tests/reference.py).

Both dtypes, the serial build ``k`` and the parallel build ``k_parallel``, shapes with one row,
one column and sizes that are not multiples of any tile, and dense shapes on both sides of
``kernels.dense.SMALL_WORK`` (compiled loops below it, BLAS above it).  Scalars are passed with
the Python types the library passes (int codes, float slopes), so the tests reuse the cached
signatures instead of compiling new ones.
"""

import math
import pathlib
import re

import numpy as np
import pytest
import reference as ref
from conftest import assert_close, kernel, tol

from fastnn import kernels as K

SMALL_WORK = K.dense.SMALL_WORK

CODES = [
    (K.IDENTITY, 0.0),
    (K.RELU, 0.0),
    (K.LEAKY_RELU, 0.2),
    (K.SIGMOID, 0.0),
    (K.TANH, 0.0),
]
CODE_IDS = ["identity", "relu", "leaky0.2", "sigmoid", "tanh"]

SHAPES_2D = [(1, 1), (1, 7), (9, 1), (13, 17), (67, 33)]


def _dense_shapes():
    """(n, n_in, n_out) on each side of ``kernels.dense.small_product`` (compiled loop for at
    most SMALL_WORK multiply-adds or a single row, BLAS otherwise), with 1-row and 1-column
    cases.  Derived from SMALL_WORK so they stay on the intended side if it is re-measured."""
    small_product = K.dense.small_product
    small = [(1, 1, 1), (1, 7, 3), (5, 1, 9), (2, 7, SMALL_WORK // 14), (1, 129, 40)]
    small.append((SMALL_WORK // 29, 29, 1))
    big = [
        (2, 129, SMALL_WORK // 129 + 3),  # two rows, BLAS
        (SMALL_WORK // (11 * 7) + 5, 11, 7),  # many rows, few features
        (SMALL_WORK // 1000 + 3, 1, 1000),  # one input column
        (SMALL_WORK // 37 + 1, 37, 1),  # one output column
        (37, 45, SMALL_WORK // (37 * 45) + 2),
    ]
    assert all(small_product(n, a, b) for n, a, b in small)
    assert not any(small_product(n, a, b) for n, a, b in big)
    return [pytest.param(s, id=f"small{s}") for s in small] + [
        pytest.param(s, id=f"blas{s}") for s in big
    ]


DENSE_SHAPES = _dense_shapes()


def _rand(rng, shape, dtype, scale=1.0):
    return np.ascontiguousarray(rng.standard_normal(shape) * scale, dtype=dtype)


# -- activations --------------------------------------------------------------------------------
@pytest.mark.parametrize("code,alpha", CODES, ids=CODE_IDS)
@pytest.mark.parametrize("shape", SHAPES_2D)
def test_activation_forward(code, alpha, shape, dtype, build, rng):
    Z = _rand(rng, shape, dtype, 3.0)
    A = np.full(shape, np.nan, dtype)
    kernel("activation_forward", build)(Z, code, alpha, A)
    assert A.dtype == dtype
    assert_close(A, ref.activation(Z, code, alpha), dtype)
    # in place: A may be Z
    kernel("activation_forward", build)(Z, code, alpha, Z)
    assert_close(Z, ref.activation(A, K.IDENTITY), dtype)


@pytest.mark.parametrize("code,alpha", CODES, ids=CODE_IDS)
@pytest.mark.parametrize("shape", SHAPES_2D)
def test_activation_backward(code, alpha, shape, dtype, build, rng):
    Z = _rand(rng, shape, dtype, 3.0)
    A = ref.activation(Z, code, alpha).astype(dtype)
    dA = _rand(rng, shape, dtype)
    dZ = np.full(shape, np.nan, dtype)
    kernel("activation_backward", build)(A, dA, code, alpha, dZ)
    expected = dA * ref.activation_grad(Z, code, alpha)
    assert_close(dZ, expected, dtype)
    kernel("activation_backward", build)(A, dA, code, alpha, dA)  # in place: dZ may be dA
    assert_close(dA, expected, dtype)


@pytest.mark.parametrize("code,alpha", CODES, ids=CODE_IDS)
@pytest.mark.parametrize("shape", SHAPES_2D)
def test_in_place_mask_and_activation(code, alpha, shape, dtype, rng):
    """The serial one-argument forms (``mask_inplace``, ``activate_inplace``), also on a
    strided view."""
    a = np.dtype(dtype).type(alpha)
    Z = _rand(rng, shape, dtype, 3.0)
    A = ref.activation(Z, code, alpha).astype(dtype)
    G = _rand(rng, shape, dtype)
    expected = G * ref.activation_grad(Z, code, alpha)
    D = G.copy()
    K.activations.mask_inplace(D, A, code, a)
    assert_close(D, expected, dtype)
    wide = np.zeros((shape[0], 2 * shape[1]), dtype)
    view = wide[:, ::2]
    view[...] = G
    K.activations.mask_inplace(view, A, code, a)
    assert_close(view, expected, dtype)
    assert np.all(wide[:, 1::2] == 0)
    K.activations.activate_inplace(Z, code, a)
    assert_close(Z, A, dtype)


@pytest.mark.parametrize("code,alpha", CODES, ids=CODE_IDS)
@pytest.mark.parametrize("layout", ["contiguous", "strided", "transposed"])
def test_bias_activate(code, alpha, layout, dtype, rng):
    """A = f(A + b) in place.  Sigmoid and tanh run one flat loop over a C-contiguous block
    and a loop per row otherwise: every layout must give the reference."""
    Z = _rand(rng, (13, 34), dtype, 3.0)
    b = _rand(rng, (34,), dtype)
    if layout == "strided":
        A = np.empty((13, 68), dtype)[:, ::2]
    elif layout == "transposed":
        A = np.empty((34, 13), dtype).T
    else:
        A = np.empty((13, 34), dtype)
    A[...] = Z
    K.activations.bias_activate(A, b, code, np.dtype(dtype).type(alpha))
    assert_close(A, ref.activation(Z + b, code, alpha), dtype)


@pytest.mark.parametrize("code", [K.SIGMOID, K.TANH], ids=["sigmoid", "tanh"])
def test_activation_forward_strided(code, dtype, build, rng):
    Z = _rand(rng, (9, 22), dtype, 3.0)[:, ::2]
    A = np.full((9, 22), np.nan, dtype)[:, 1::2]
    kernel("activation_forward", build)(Z, code, 0.0, A)
    assert_close(A, ref.activation(Z, code), dtype)
    kernel("activation_forward", build)(Z, code, 0.0, Z)  # in place on a strided view
    assert_close(Z, A, dtype)


@pytest.mark.parametrize("code", [K.SIGMOID, K.TANH], ids=["sigmoid", "tanh"])
def test_activation_forward_parallel_blocks(code, dtype, build, rng):
    """More elements than one task of the parallel flat loop, not a multiple of it."""
    Z = _rand(rng, (3 * K.activations._BLOCK // 7 + 5, 7), dtype, 3.0)
    A = np.full_like(Z, np.nan)
    kernel("activation_forward", build)(Z, code, 0.0, A)
    assert_close(A, ref.activation(Z, code), dtype)


def test_activation_extremes(dtype, build):
    """Sigmoid and tanh saturate to exact limits without overflow warnings or NaN."""
    Z = np.array([[-1e4, -100.0, 0.0, 100.0, 1e4]], dtype)
    A = np.empty_like(Z)
    kernel("activation_forward", build)(Z, K.SIGMOID, 0.0, A)
    np.testing.assert_array_equal(A[0, [0, 4]], [0.0, 1.0])
    assert A[0, 2] == 0.5
    kernel("activation_forward", build)(Z, K.TANH, 0.0, A)
    np.testing.assert_array_equal(A[0], [-1.0, -1.0, 0.0, 1.0, 1.0])


# -- dense ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("code,alpha", CODES, ids=CODE_IDS)
@pytest.mark.parametrize("shape", DENSE_SHAPES)
def test_dense_forward(code, alpha, shape, dtype, build, rng):
    n, n_in, n_out = shape
    X = _rand(rng, (n, n_in), dtype)
    W = _rand(rng, (n_in, n_out), dtype, 1.0 / np.sqrt(n_in))
    b = _rand(rng, (n_out,), dtype)
    A = np.full((n, n_out), np.nan, dtype)
    kernel("dense_forward", build)(X, W, b, code, alpha, A)
    assert_close(A, ref.dense_forward(X, W, b, code, alpha), dtype)


@pytest.mark.parametrize("prev_code,alpha", CODES, ids=CODE_IDS)
@pytest.mark.parametrize("shape", DENSE_SHAPES)
def test_dense_backward(prev_code, alpha, shape, dtype, build, rng):
    n, n_in, n_out = shape
    Zprev = _rand(rng, (n, n_in), dtype, 2.0)
    X = ref.activation(Zprev, prev_code, alpha).astype(dtype)  # output of the previous layer
    W = _rand(rng, (n_in, n_out), dtype, 1.0 / np.sqrt(n_in))
    dZ = _rand(rng, (n, n_out), dtype, 1.0 / np.sqrt(n))
    dW0 = _rand(rng, (n_in, n_out), dtype)
    db0 = _rand(rng, (n_out,), dtype)
    k = kernel("dense_backward", build)
    scale = np.sqrt(max(n, n_out))  # outputs are sums of n or n_out terms
    for beta in (1.0, 0.0):
        dW, db = dW0.copy(), db0.copy()
        if beta == 0.0:
            dW[...] = np.nan  # beta=0 overwrites: stale values (even NaN) must not leak
            db[...] = np.nan
        dX = np.full((n, n_in), np.nan, dtype)
        k(X, W, dZ, beta, dW, db, prev_code, alpha, dX)
        eW, eb, eX = ref.dense_backward(
            X, W, dZ, beta, dW0, db0, ref.activation_grad(Zprev, prev_code, alpha)
        )
        if beta == 0.0:
            eW, eb, _ = ref.dense_backward(X, W, dZ, 0.0, np.zeros_like(dW0), np.zeros_like(db0))
        assert_close(dW, eW, dtype, scale, err_msg=f"dW, beta={beta}")
        assert_close(db, eb, dtype, scale, err_msg=f"db, beta={beta}")
        assert_close(dX, eX, dtype, scale, err_msg=f"dX, beta={beta}")
    # no input gradient wanted: a dX with zero rows
    dW, db = dW0.copy(), db0.copy()
    k(X, W, dZ, 1.0, dW, db, prev_code, alpha, np.empty((0, n_in), dtype))
    eW, eb, _ = ref.dense_backward(X, W, dZ, 1.0, dW0, db0)
    assert_close(dW, eW, dtype, scale)
    assert_close(db, eb, dtype, scale)


GEMM_SHAPES = [(1, 1, 1), (1, 5, 3), (4, 1, 6), (7, 9, 1), (33, 65, 17), (130, 70, 41)]


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("shape", GEMM_SHAPES)
def test_gemm(trans_a, trans_b, shape, dtype, rng):
    m, k, n = shape
    A = _rand(rng, (k, m) if trans_a else (m, k), dtype)
    B = _rand(rng, (n, k) if trans_b else (k, n), dtype)
    C0 = _rand(rng, (m, n), dtype)
    for alpha, beta in ((1.0, 0.0), (0.5, 2.0), (1.0, 1.0)):
        C = C0.copy()
        if beta == 0.0:
            C[...] = np.nan
        K.gemm(trans_a, trans_b, alpha, A, B, beta, C)
        expected = ref.gemm(trans_a, trans_b, alpha, A, B, beta, C0 if beta else 0 * C0)
        assert_close(C, expected, dtype, np.sqrt(k))


def test_gemm_empty_inner_dimension(dtype):
    A = np.empty((3, 0), dtype)
    B = np.empty((0, 2), dtype)
    C = np.ones((3, 2), dtype)
    K.gemm(False, False, 1.0, A, B, 0.5, C)
    np.testing.assert_array_equal(C, 0.5)


# -- softmax ------------------------------------------------------------------------------------
SOFTMAX_SHAPES = [(1, 1), (1, 5), (7, 1), (13, 10), (130, 37)]


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES)
def test_softmax_forward(shape, dtype, build, rng):
    Z = _rand(rng, shape, dtype, 4.0)
    P = np.full(shape, np.nan, dtype)
    kernel("softmax_forward", build)(Z, P)
    assert_close(P, ref.softmax(Z), dtype)
    kernel("softmax_forward", build)(Z, Z)  # in place
    assert_close(Z, P, dtype)


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES)
def test_log_softmax_forward(shape, dtype, build, rng):
    Z = _rand(rng, shape, dtype, 4.0)
    L = np.full(shape, np.nan, dtype)
    kernel("log_softmax_forward", build)(Z, L)
    assert_close(L, ref.log_softmax(Z), dtype, 10.0)
    kernel("log_softmax_forward", build)(Z, Z)  # in place
    assert_close(Z, L, dtype, 10.0)


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES)
def test_softmax_backward(shape, dtype, build, rng):
    P = ref.softmax(_rand(rng, shape, dtype, 2.0)).astype(dtype)
    dP = _rand(rng, shape, dtype)
    dZ = np.full(shape, np.nan, dtype)
    kernel("softmax_backward", build)(P, dP, dZ)
    assert_close(dZ, ref.softmax_backward(P, dP), dtype)


def test_softmax_huge_logits(dtype, build):
    """Logits of +-1e4 give exact probabilities and finite log-probabilities."""
    Z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype)
    P = np.empty_like(Z)
    L = np.empty_like(Z)
    kernel("softmax_forward", build)(Z, P)
    kernel("log_softmax_forward", build)(Z, L)
    np.testing.assert_allclose(P, [[1, 0, 0], [1 / 3] * 3, [0.5, 0.5, 0]], rtol=1e-6)
    assert np.isfinite(L).all()
    assert_close(L, ref.log_softmax(Z), dtype, 1e4)


# -- losses --------------------------------------------------------------------------------------
LOSS_SHAPES = [(1, 1), (1, 4), (9, 1), (13, 10), (130, 37)]


def _labels(rng, n, k):
    return rng.integers(0, k, n).astype(np.int64)


@pytest.mark.parametrize("shape", LOSS_SHAPES)
def test_softmax_xent_labels(shape, dtype, build, rng):
    n, k = shape
    Z = _rand(rng, shape, dtype, 3.0)
    y = _labels(rng, n, k)
    dZ = np.full(shape, np.nan, dtype)
    value = kernel("softmax_xent_labels", build)(Z, y, dZ)
    e_value, e_grad = ref.softmax_xent_labels(Z, y)
    assert_close(value, e_value, dtype)
    assert_close(dZ, e_grad, dtype)


@pytest.mark.parametrize("shape", LOSS_SHAPES)
@pytest.mark.parametrize("kind", ["one_hot", "soft", "unnormalised"])
def test_softmax_xent_targets(shape, kind, dtype, build, rng):
    n, k = shape
    Z = _rand(rng, shape, dtype, 3.0)
    if kind == "one_hot":
        T = ref.one_hot(_labels(rng, n, k), k)
    elif kind == "soft":
        T = rng.dirichlet(np.ones(k), n)
    else:
        T = rng.random((n, k)) * 2
    T = T.astype(dtype)
    dZ = np.full(shape, np.nan, dtype)
    value = kernel("softmax_xent_targets", build)(Z, T, dZ)
    e_value, e_grad = ref.softmax_xent_targets(Z, T)
    assert_close(value, e_value, dtype, 10.0)
    assert_close(dZ, e_grad, dtype)


def test_softmax_xent_huge_logits(dtype, build):
    Z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype)
    y = np.array([1, 0], np.int64)
    dZ = np.empty_like(Z)
    value = kernel("softmax_xent_labels", build)(Z, y, dZ)
    assert np.isfinite(value) and np.isfinite(dZ).all()
    e_value, e_grad = ref.softmax_xent_labels(Z, y)
    assert_close(value, e_value, dtype)
    assert_close(dZ, e_grad, dtype)
    value = kernel("softmax_xent_targets", build)(Z, ref.one_hot(y, 3).astype(dtype), dZ)
    assert np.isfinite(value) and np.isfinite(dZ).all()
    assert_close(value, e_value, dtype)


def _probabilities(rng, shape, dtype):
    P = ref.softmax(rng.standard_normal(shape) * 3)
    if shape[1] > 1:
        P[0, 0] = 0.0  # log(0) must be clipped away
    return P.astype(dtype)


@pytest.mark.parametrize("shape", LOSS_SHAPES)
def test_cross_entropy_labels(shape, dtype, build, rng):
    n, k = shape
    P = _probabilities(rng, shape, dtype)
    y = _labels(rng, n, k)
    y[0] = 0  # hits the clipped zero probability
    dP = np.full(shape, np.nan, dtype)
    eps = 1e-7
    value = kernel("cross_entropy_labels", build)(P, y, eps, dP)
    e_value, e_grad = ref.cross_entropy_labels(P, y, np.float64(dtype.type(eps)))
    assert np.isfinite(value)
    assert_close(value, e_value, dtype)
    assert_close(dP, e_grad, dtype)


@pytest.mark.parametrize("shape", LOSS_SHAPES)
@pytest.mark.parametrize("kind", ["one_hot", "soft"])
def test_cross_entropy_targets(shape, kind, dtype, build, rng):
    n, k = shape
    P = _probabilities(rng, shape, dtype)
    if kind == "one_hot":
        T = ref.one_hot(_labels(rng, n, k), k)
        T[0] = ref.one_hot([0], k)[0]
    else:
        T = rng.dirichlet(np.ones(k), n)
    T = T.astype(dtype)
    dP = np.full(shape, np.nan, dtype)
    eps = 1e-7
    value = kernel("cross_entropy_targets", build)(P, T, eps, dP)
    e_value, e_grad = ref.cross_entropy_targets(P, T, np.float64(dtype.type(eps)))
    assert np.isfinite(value)
    assert_close(value, e_value, dtype)
    assert_close(dP, e_grad, dtype)


@pytest.mark.parametrize("shape", LOSS_SHAPES)
def test_mse(shape, dtype, build, rng):
    Y = _rand(rng, shape, dtype)
    T = _rand(rng, shape, dtype)
    dY = np.full(shape, np.nan, dtype)
    value = kernel("mse", build)(Y, T, dY)
    e_value, e_grad = ref.mse(Y, T)
    assert_close(value, e_value, dtype)
    assert_close(dY, e_grad, dtype)


# -- optimizers ----------------------------------------------------------------------------------
def _config_id(config):
    return ",".join(f"{k}={v}" for k, v in config.items())


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.8, dampening=0.1, weight_decay=0.05),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
]
OPT_SIZES = [1, 7, 1000, 40001]
N_STEPS = 5


@pytest.mark.parametrize("config", SGD_CONFIGS, ids=_config_id)
@pytest.mark.parametrize("n", OPT_SIZES)
def test_sgd_update(config, n, dtype, build, rng):
    full = dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False) | config
    p = _rand(rng, n, dtype)
    buf = np.zeros(n, dtype)
    e_p, e_buf = p.astype(np.float64), None
    k = kernel("sgd_update", build)
    for step in range(1, N_STEPS + 1):
        g = _rand(rng, n, dtype)
        k(
            p,
            g,
            buf,
            full["lr"],
            full["momentum"],
            full["dampening"],
            full["weight_decay"],
            full["nesterov"],
            step == 1,
        )
        e_p, e_buf = ref.sgd_step(e_p, g.astype(np.float64), e_buf, **full)
        assert_close(p, e_p, dtype, err_msg=f"p after step {step}")
        if full["momentum"]:
            assert_close(buf, e_buf, dtype, err_msg=f"momentum buffer after step {step}")


ADAM_CONFIGS = [
    dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8),
    dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1),
    dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, decoupled=True),
]


@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=["adam", "adam-betas", "adam-l2", "adamw"])
@pytest.mark.parametrize("n", OPT_SIZES)
def test_adam_update(config, n, dtype, build, rng):
    full = dict(weight_decay=0.0, decoupled=False) | config
    p = _rand(rng, n, dtype)
    m = np.zeros(n, dtype)
    v = np.zeros(n, dtype)
    e_p, e_m, e_v = p.astype(np.float64), np.zeros(n), np.zeros(n)
    k = kernel("adam_update", build)
    b1, b2 = full["betas"]
    for step in range(1, N_STEPS + 1):
        g = _rand(rng, n, dtype)
        wd, decoupled = full["weight_decay"], full["decoupled"]
        k(p, g, m, v, full["lr"], b1, b2, full["eps"], wd, decoupled, step)
        e_p, e_m, e_v = ref.adam_step(e_p, g.astype(np.float64), e_m, e_v, step, **full)
        assert_close(p, e_p, dtype, err_msg=f"p after step {step}")
        assert_close(m, e_m, dtype, err_msg=f"exp_avg after step {step}")
        assert_close(v, e_v, dtype, err_msg=f"exp_avg_sq after step {step}")


@pytest.mark.parametrize("build", ["serial", "parallel"])
def test_adam_update_float32_moment_coefficients(build):
    """From zero moments, one float32 step leaves m = f32(1 - beta1) * g and
    v = f32(1 - beta2) * g^2: the coefficients rounded from float64, as torch passes them to
    its float32 kernels.  1 - 0.999f (0.00099998713) is 1.3e-5 off 0.001, a bias in every
    step of a float32 model."""
    n = 16
    p = np.zeros(n, dtype=np.float32)
    g = np.ones(n, dtype=np.float32)
    m = np.zeros(n, dtype=np.float32)
    v = np.zeros(n, dtype=np.float32)
    kernel("adam_update", build)(p, g, m, v, 0.01, 0.9, 0.999, 1e-8, 0.0, False, 1)
    assert m[0] == np.float32(1 - 0.9) and v[0] == np.float32(1 - 0.999)


# -- data ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (11, 1), (50, 13)])
@pytest.mark.parametrize("m", [1, 5, 130])
def test_gather_rows(shape, m, dtype, build, rng):
    X = _rand(rng, shape, dtype)
    idx = rng.integers(0, shape[0], m).astype(np.int64)  # repeats allowed
    out = np.full((m, shape[1]), np.nan, dtype)
    kernel("gather_rows", build)(X, idx, out)
    np.testing.assert_array_equal(out, ref.gather_rows(X, idx))


@pytest.mark.parametrize("ydtype", [np.int64, np.float32, np.float64])
@pytest.mark.parametrize("n,m", [(1, 1), (1, 4), (17, 3), (200, 130)])
def test_gather(ydtype, n, m, build, rng):
    y = (rng.integers(0, 1000, n)).astype(ydtype)
    idx = rng.integers(0, n, m).astype(np.int64)
    out = np.zeros(m, ydtype)
    kernel("gather", build)(y, idx, out)
    np.testing.assert_array_equal(out, ref.gather_rows(y, idx))


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (9, 1), (130, 10)])
def test_count_correct(shape, dtype, build, rng):
    n, k = shape
    Z = _rand(rng, shape, dtype)
    Z[n // 2] = 0.25  # a tie: the first maximum wins, as in np.argmax
    y = _labels(rng, n, k)
    y[::2] = np.argmax(Z[::2], axis=1)  # make some of them correct
    got = kernel("count_correct", build)(Z, y)
    assert got == ref.count_correct(Z, y)


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (9, 1), (130, 37)])
def test_all_finite(shape, dtype, build, rng):
    k = kernel("all_finite", build)
    X = _rand(rng, shape, dtype)
    X.flat[0] = np.finfo(dtype).max  # huge but finite: max - max == 0
    X.flat[-1] = -np.finfo(dtype).max
    assert bool(k(X)) is True
    for pos in {0, X.size // 2, X.size - 1}:
        for bad in (np.nan, np.inf, -np.inf):
            Y = X.copy()
            Y.flat[pos] = bad
            assert bool(k(Y)) is ref.all_finite(Y) is False, (pos, bad)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000])
def test_shuffled_order_is_a_permutation_fixed_by_its_key(n):
    a, b, c = (np.full(n, -1, np.int64) for _ in range(3))
    K.data.shuffled_order(a, np.uint64(12345))
    K.data.shuffled_order(b, np.uint64(12345))
    K.data.shuffled_order(c, np.uint64(2**64 - 1))
    np.testing.assert_array_equal(np.sort(a), np.arange(n))
    np.testing.assert_array_equal(a, b)  # the key alone decides, whatever the buffer held
    if n >= 7:
        assert not np.array_equal(a, c)


def test_shuffled_order_is_uniform():
    """Every permutation of 4 equally often, and every value of 10 at every position (chi-square
    at p > 1e-4: a biased index draw, e.g. j in 0..i-1 (Sattolo) or floor(u * n), fails)."""
    from scipy.stats import chisquare

    counts = {}
    o = np.empty(4, np.int64)
    for key in range(24_000):
        K.data.shuffled_order(o, np.uint64(key))
        counts[tuple(o)] = counts.get(tuple(o), 0) + 1
    assert len(counts) == 24
    assert chisquare(list(counts.values())).pvalue > 1e-4
    at = np.zeros((10, 10))
    o = np.empty(10, np.int64)
    for key in range(20_000):
        K.data.shuffled_order(o, np.uint64(key * 7919 + 3))
        at[np.arange(10), o] += 1
    assert chisquare(at.ravel()).pvalue > 1e-4


# -- coverage ------------------------------------------------------------------------------------
CORE_KERNELS = {
    "activation_forward",
    "activation_backward",
    "dense_forward",
    "dense_backward",
    "softmax_forward",
    "log_softmax_forward",
    "softmax_backward",
    "softmax_xent_labels",
    "softmax_xent_targets",
    "cross_entropy_labels",
    "cross_entropy_targets",
    "mse",
    "sgd_update",
    "adam_update",
    "gather_rows",
    "gather",
    "count_correct",
    "all_finite",
}


def test_core_kernels_have_both_builds():
    assert CORE_KERNELS <= set(K.KERNELS)
    for name in K.KERNELS:
        assert callable(getattr(K, name)), name
        assert callable(getattr(K, name + "_parallel")), f"{name} has no parallel build"


def test_every_kernel_is_tested_somewhere():
    """Each kernel listed in fastnn.kernels.KERNELS is called by name in some test file, so a new
    kernel cannot arrive without a reference test."""
    here = pathlib.Path(__file__).parent
    text = "\n".join(p.read_text() for p in here.glob("test_*.py"))
    missing = [name for name in K.KERNELS if not re.search(rf"\b{name}\b", text)]
    assert not missing, f"kernels without a test naming them: {missing}"


def test_tolerances_are_per_dtype():
    assert tol(np.float32)["rtol"] > tol(np.float64)["rtol"]


# -- vexp, vtanh, vsigmoid (kernels/_intrinsics.py) ------------------------------------------------
def _elementwise_all(name, x):
    from fastnn.kernels import _intrinsics
    from fastnn.kernels._config import FASTMATH
    from numba import njit

    fn = getattr(_intrinsics, name)

    @njit(cache=False, fastmath=FASTMATH)  # as the kernels call it, with their flags
    def run(x, out):
        for i in range(x.shape[0]):
            out[i] = fn(x[i])

    out = np.empty_like(x)
    run(x, out)
    return out


def test_vexp_float32_within_one_ulp():
    x = np.concatenate([np.linspace(-87.0, 88.0, 400_001), [0.0, -0.0, 1e-8, -1e-8]])
    x = x.astype(np.float32)
    got = _elementwise_all("vexp", x)
    want = np.exp(x.astype(np.float64)).astype(np.float32)  # correctly rounded, nearly always
    ulps = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32))
    assert ulps.max() <= 1


def test_vexp_float32_limits_and_nan():
    x = np.array([np.nan, -np.inf, -1e30, -104.5, -100.0, -88.0, 88.7, 88.73, np.inf], np.float32)
    got = _elementwise_all("vexp", x)
    assert np.isnan(got[0])
    assert np.all(got[1:4] == 0)  # underflow
    want = np.exp(x[4:7].astype(np.float64))  # a denormal, a tiny normal, nearly the largest
    np.testing.assert_allclose(got[4:7], want, rtol=3e-7, atol=2e-45)
    assert np.all(got[7:] == np.inf)  # overflow


def test_vexp_float64_is_libm():
    # against the C library's exp through Python's math module: NumPy's own np.exp is a
    # different implementation on AVX-512 machines and differs from libm by 1 ulp in places
    x = np.linspace(-700.0, 700.0, 10_001)
    np.testing.assert_array_equal(_elementwise_all("vexp", x), [math.exp(v) for v in x])


# float64 references for the elementwise functions
def _sigmoid64(x):
    x = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # np.where evaluates both sides
        return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))


ELEMENTARY = [("vtanh", lambda x: np.tanh(x.astype(np.float64))), ("vsigmoid", _sigmoid64)]


@pytest.mark.parametrize("name,reference", ELEMENTARY, ids=["tanh", "sigmoid"])
def test_vectorised_activation_float32_within_one_ulp(name, reference):
    tiny = np.logspace(-40, 1, 20_001)  # denormals up, across tanh's switch at 0.625
    x = np.concatenate([np.linspace(-20.0, 20.0, 400_001), tiny, -tiny]).astype(np.float32)
    got = _elementwise_all(name, x)
    want = reference(x).astype(np.float32)
    ulps = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32))
    assert ulps.max() <= 1, x[ulps.argmax()]


def test_vectorised_activation_limits_and_nan():
    x = np.array([np.nan, -np.inf, -1e30, -100.0, -0.0, 0.0, 100.0, 1e30, np.inf], np.float32)
    t = _elementwise_all("vtanh", x)
    assert np.isnan(t[0])
    np.testing.assert_array_equal(t[1:], [-1, -1, -1, 0, 0, 1, 1, 1])
    s = _elementwise_all("vsigmoid", x)
    assert np.isnan(s[0])
    np.testing.assert_array_equal(s[[1, 2, 4, 5, 6, 7, 8]], [0, 0, 0.5, 0.5, 1, 1, 1])
    np.testing.assert_allclose(s[3], np.exp(-100.0), rtol=0, atol=2e-45)  # a denormal, kept


@pytest.mark.parametrize("name,reference", ELEMENTARY, ids=["tanh", "sigmoid"])
def test_vectorised_activation_float64(name, reference):
    x = np.concatenate([np.linspace(-40.0, 40.0, 20_001), [-800.0, 800.0]])
    np.testing.assert_allclose(_elementwise_all(name, x), reference(x), rtol=1e-15, atol=0)
