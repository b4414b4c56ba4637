"""Dropout, GELU, BatchNorm1d and LayerNorm: kernels against plain-NumPy references (both dtypes,
serial and parallel builds, awkward shapes), float64 central-difference gradient checks through
a whole Sequential, the inference path of ``predict``, state arrays and configs."""

import json
import math

import numpy as np
import pytest
from conftest import assert_close, kernel
from fastnn.kernels.dropout import threshold_of
from scipy.special import erf

import fastnn as fnn

SHAPES = [(1, 1), (1, 7), (9, 1), (13, 17), (67, 33)]  # odd sizes: no vector-width multiples
BN_SHAPES = [(2, 1), (2, 7), (9, 1), (13, 17), (67, 33)]  # training batch norm needs n >= 2


def _rand(rng, shape, dtype, scale=1.0, shift=0.0):
    return np.ascontiguousarray(rng.standard_normal(shape) * scale + shift, dtype=dtype)


# -- references ---------------------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix_finalize(z):
    """splitmix64's output function on a uint64 array (NumPy wraps uint64 products)."""
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def ref_dropout_keep(shape, seed, counter, p):
    """Boolean keep mask: splitmix64 of (seed, counter, flat index), compared with p * 2**64."""
    n, m = shape
    one = np.uint64(1)
    key = _splitmix_finalize(
        np.array([seed], np.uint64)
        + _splitmix_finalize((np.array([counter], np.uint64) + one) * _GOLDEN)
    )
    idx = np.arange(n * m, dtype=np.uint64)
    h = _splitmix_finalize(key + (idx + one) * _GOLDEN)
    return (h >= np.uint64(min(int(p * 2.0**64), 2**64 - 1))).reshape(n, m)


def ref_gelu(Z, approximate):
    Z = np.asarray(Z, np.float64)
    if approximate:
        return 0.5 * Z * (1 + np.tanh(np.sqrt(2 / np.pi) * (Z + 0.044715 * Z**3)))
    return Z * 0.5 * (1 + erf(Z / np.sqrt(2)))


def ref_gelu_grad(Z, approximate):
    Z = np.asarray(Z, np.float64)
    if approximate:
        c = np.sqrt(2 / np.pi)
        u = c * (Z + 0.044715 * Z**3)
        sech2 = 1 - np.tanh(u) ** 2
        return 0.5 * (1 + np.tanh(u)) + 0.5 * Z * sech2 * c * (1 + 3 * 0.044715 * Z**2)
    cdf = 0.5 * (1 + erf(Z / np.sqrt(2)))
    pdf = np.exp(-0.5 * Z**2) / np.sqrt(2 * np.pi)
    return cdf + Z * pdf


def ref_norm_backward(dY, X, gamma, eps, axis):
    """Backward of (X - mean) / sqrt(var + eps) * gamma along ``axis``, staged through var and
    mean (the textbook chain rule, not the kernels' closed form).  Returns dX, dgamma, dbeta."""
    X, dY, gamma = (np.asarray(a, np.float64) for a in (X, dY, gamma))
    n = X.shape[axis]
    mu = X.mean(axis, keepdims=True)
    var = X.var(axis, keepdims=True)
    xc = X - mu
    inv = 1 / np.sqrt(var + eps)
    xhat = xc * inv
    dxhat = dY * gamma
    dvar = np.sum(dxhat * xc * -0.5 * inv**3, axis, keepdims=True)
    dmu = np.sum(-dxhat * inv, axis, keepdims=True) + dvar * np.mean(-2 * xc, axis, keepdims=True)
    dX = dxhat * inv + dvar * 2 * xc / n + dmu / n
    return dX, np.sum(dY * xhat, 0), np.sum(dY, 0)


# -- dropout kernels ----------------------------------------------------------------------------
def test_splitmix_matches_published_first_output():
    # splitmix64 seeded with 0 first returns mix(0 + golden gamma) = 0xE220A8397B1DCDAF.
    assert int(fnn.kernels.dropout.mix64(_GOLDEN)) == 0xE220A8397B1DCDAF
    assert int(_splitmix_finalize(np.array([_GOLDEN]))[0]) == 0xE220A8397B1DCDAF


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout_kernels_match_reference(shape, p, dtype, build, rng):
    X = _rand(rng, shape, dtype)
    seed, counter = 12345, 7
    keep = ref_dropout_keep(shape, seed, counter, p)
    scale = 0.0 if p == 1 else 1 / (1 - p)
    out = np.full(shape, np.nan, dtype)
    args = (np.uint64(seed), np.uint64(counter), threshold_of(p), scale)
    kernel("dropout_forward", build)(X, *args, out)
    assert_close(out, np.where(keep, X.astype(np.float64) * scale, 0.0), dtype)
    dout = _rand(rng, shape, dtype)
    dX = np.full(shape, np.nan, dtype)
    kernel("dropout_backward", build)(dout, *args, dX)
    assert_close(dX, np.where(keep, dout.astype(np.float64) * scale, 0.0), dtype)


def test_dropout_mask_statistics():
    shape, p = (300, 200), 0.3
    keep = ref_dropout_keep(shape, 1, 0, p)
    # 60000 Bernoulli(0.7) draws: standard error 0.0019, so 0.01 is five of them.
    assert abs(keep.mean() - (1 - p)) < 0.01
    assert abs(keep[:, :100].mean() - keep[:, 100:].mean()) < 0.02  # no drift along a row
    other = ref_dropout_keep(shape, 1, 1, p)  # the next call: a different, uncorrelated mask
    assert abs((keep == other).mean() - (0.7**2 + 0.3**2)) < 0.01


# -- dropout layer ------------------------------------------------------------------------------
def test_dropout_layer_reproducible_and_fresh_per_call():
    X = np.ones((40, 30), np.float32)
    a, b = fnn.Dropout(0.5, seed=3), fnn.Dropout(0.5, seed=3)
    first = a.forward(X).copy()
    assert np.array_equal(first, b.forward(X))
    assert set(np.unique(first)) <= {0.0, 2.0}
    second = a.forward(X).copy()
    assert not np.array_equal(first, second)  # a new mask each training call
    assert not np.array_equal(first, fnn.Dropout(0.5, seed=4).forward(X))
    # backward uses the mask of the last forward
    dX = a.backward(np.ones_like(X))
    assert np.array_equal(dX, second)


def test_dropout_predict_is_identity_and_stateless(rng):
    layer = fnn.Dropout(0.4, seed=0)
    X = _rand(rng, (5, 6), np.float64)
    state = layer.state_arrays()["rng_state"].copy()
    out = layer.predict(X)
    assert np.array_equal(out, X) and out is not X
    assert np.array_equal(layer.state_arrays()["rng_state"], state)


def test_dropout_state_arrays_continue_the_mask_sequence():
    X = np.ones((8, 9))
    a = fnn.Dropout(0.5)  # OS-drawn seed
    a.forward(X)
    b = fnn.Dropout(0.5)
    b.load_state_arrays(a.state_arrays())
    assert np.array_equal(a.forward(X), b.forward(X))
    with pytest.raises(ValueError, match="unexpected"):
        b.load_state_arrays({"bogus": np.zeros(2)})


# -- GELU ---------------------------------------------------------------------------------------
def test_gelu_known_values():
    X = np.array([[1.0, -1.0, 0.0]])
    np.testing.assert_allclose(
        fnn.GELU().predict(X)[0], [0.8413447460685429, -0.15865525393145707, 0.0], rtol=1e-14
    )
    np.testing.assert_allclose(
        fnn.GELU("tanh").predict(X)[0], [0.8411919906082768, -0.15880800939172324, 0.0], rtol=1e-12
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("approximate", [False, True], ids=["erf", "tanh"])
def test_gelu_kernels_match_reference(shape, approximate, dtype, build, rng):
    Z = _rand(rng, shape, dtype, scale=3.0)
    Z.flat[0] = 40.0 if Z.size > 1 else Z.flat[0]  # large inputs: GELU(z) -> z, GELU'(z) -> 1
    A = np.empty(shape, dtype)
    kernel("gelu_forward", build)(Z, approximate, A)
    assert_close(A, ref_gelu(Z, approximate), dtype, scale=10.0)
    dA = _rand(rng, shape, dtype)
    dZ = np.empty(shape, dtype)
    kernel("gelu_backward", build)(Z, dA, approximate, dZ)
    assert_close(dZ, dA * ref_gelu_grad(Z, approximate), dtype)


# -- batch norm / layer norm kernels ------------------------------------------------------------
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_kernels_match_reference(shape, dtype, build, rng):
    n, m = shape
    # A spread across rows keeps every column's variance O(1): with n = 2 a random pair can be
    # nearly equal, and dX then amplifies float32 rounding by 1/std (ill-conditioned, not wrong).
    spread = np.linspace(-2.0, 2.0, n)[:, None] if n > 1 else 0.0
    X = np.ascontiguousarray(_rand(rng, shape, np.float64, shift=3.0) + spread, dtype=dtype)
    gamma, beta = _rand(rng, m, dtype), _rand(rng, m, dtype)
    rm, rv = _rand(rng, m, dtype), np.abs(_rand(rng, m, dtype)) + 0.5
    rm0, rv0 = rm.astype(np.float64), rv.astype(np.float64)
    work = np.empty((2, m))
    mean, invstd = np.empty(m, dtype), np.empty(m, dtype)
    Xhat, Y = np.empty(shape, dtype), np.empty(shape, dtype)
    eps, mom = 1e-5, 0.1
    kernel("batchnorm_forward_train", build)(
        X, gamma, beta, eps, mom, rm, rv, work, mean, invstd, Xhat, Y
    )
    X64 = X.astype(np.float64)
    mu, var = X64.mean(0), X64.var(0)
    xhat = (X64 - mu) / np.sqrt(var + eps)
    # invstd is up to 1/sqrt(eps) ~ 316 when a column is constant (n == 1 column): scale 1e3
    assert_close(mean, mu, dtype, scale=10.0)
    assert_close(Xhat, xhat, dtype, scale=10.0)
    assert_close(Y, xhat * gamma + beta, dtype, scale=10.0)
    assert_close(rm, 0.9 * rm0 + 0.1 * mu, dtype, scale=10.0)
    assert_close(rv, 0.9 * rv0 + 0.1 * X64.var(0, ddof=1), dtype, scale=10.0)

    dY = _rand(rng, shape, dtype)
    dgamma, dbeta = np.ones(m, dtype), np.ones(m, dtype)  # backward accumulates
    dX = np.empty(shape, dtype)
    kernel("batchnorm_backward", build)(dY, Xhat, gamma, invstd, work, dgamma, dbeta, dX)
    rdX, rdg, rdb = ref_norm_backward(dY, X, gamma, eps, axis=0)
    assert_close(dX, rdX, dtype, scale=10.0)
    assert_close(dgamma, 1 + rdg, dtype, scale=10.0)
    assert_close(dbeta, 1 + rdb, dtype, scale=10.0)

    Yi = np.empty(shape, dtype)
    kernel("batchnorm_forward_infer", build)(X, gamma, beta, rm, rv, eps, Yi)
    expect = (X64 - rm.astype(np.float64)) / np.sqrt(rv.astype(np.float64) + eps) * gamma + beta
    assert_close(Yi, expect, dtype, scale=10.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_layernorm_kernels_match_reference(shape, dtype, build, rng):
    n, m = shape
    X = _rand(rng, shape, dtype, scale=2.0, shift=-3.0)
    gamma, beta = _rand(rng, m, dtype), _rand(rng, m, dtype)
    eps = 1e-5
    invstd, Xhat, Y = np.empty(n, dtype), np.empty(shape, dtype), np.empty(shape, dtype)
    kernel("layernorm_forward", build)(X, gamma, beta, eps, invstd, Xhat, Y)
    X64 = X.astype(np.float64)
    mu, var = X64.mean(1, keepdims=True), X64.var(1, keepdims=True)
    xhat = (X64 - mu) / np.sqrt(var + eps)
    assert_close(Y, xhat * gamma + beta, dtype, scale=10.0)
    dY = _rand(rng, shape, dtype)
    dgamma, dbeta, dX = np.zeros(m, dtype), np.zeros(m, dtype), np.empty(shape, dtype)
    kernel("layernorm_backward", build)(dY, Xhat, gamma, invstd, dgamma, dbeta, dX)
    rdX, rdg, rdb = ref_norm_backward(dY, X, gamma, eps, axis=1)
    assert_close(dX, rdX, dtype, scale=10.0)
    assert_close(dgamma, rdg, dtype, scale=10.0)
    assert_close(dbeta, rdb, dtype, scale=10.0)


def test_batchnorm_float32_large_mean_stays_accurate():
    # Two-pass variance with float64 sums: a mean of 1e4 and a spread of 1 keeps ~3 digits in
    # float32 (a one-pass E[x^2] - E[x]^2 would lose them all: 1e8 against float32's 2**24).
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((500, 3)) + 1e4).astype(np.float32)
    layer = fnn.BatchNorm1d(3)
    Y = layer.forward(X)
    ref = (X - X.astype(np.float64).mean(0)) / X.astype(np.float64).std(0)
    assert np.abs(Y - ref).max() < 5e-3


# -- layers in a model: gradient checks ---------------------------------------------------------
def _reset_dropout(model):
    for layer in model.layers:
        if isinstance(layer, fnn.Dropout):
            layer._counter = 0


def _numeric_gradients(model, loss, X, y, h=1e-6):
    """Central differences of the loss with respect to every parameter and every input."""

    def value(Xv):
        _reset_dropout(model)
        return loss.forward(model.forward(Xv), y)

    data = model._flat.data
    g_param = np.empty_like(data)
    for i in range(data.size):
        old = data[i]
        data[i] = old + h
        up = value(X)
        data[i] = old - h
        down = value(X)
        data[i] = old
        g_param[i] = (up - down) / (2 * h)
    g_input = np.empty_like(X)
    for idx in np.ndindex(X.shape):
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += h
        Xm[idx] -= h
        g_input[idx] = (value(Xp) - value(Xm)) / (2 * h)
    return g_param, g_input


def _model_with_new_layers(seed=0, dropout=True):
    d = np.float64
    layers = [
        fnn.Linear(4, 6, dtype=d, seed=seed),
        fnn.BatchNorm1d(6, dtype=d),
        fnn.GELU(),
        fnn.LayerNorm(6, dtype=d),
        fnn.Linear(6, 5, dtype=d, seed=seed + 1),
        fnn.GELU(approximate="tanh"),
    ]
    if dropout:
        layers.append(fnn.Dropout(0.3, seed=seed))
    layers += [fnn.BatchNorm1d(5, affine=False, dtype=d), fnn.Linear(5, 3, dtype=d, seed=seed + 2)]
    model = fnn.Sequential(*layers)
    rng = np.random.default_rng(seed)
    model._flat.data[...] += rng.standard_normal(model._flat.data.size) * 0.3  # gamma != 1
    return model


@pytest.mark.parametrize("dropout", [False, True], ids=["no_dropout", "dropout"])
def test_gradient_check_through_sequential(dropout):
    rng = np.random.default_rng(1)
    model = _model_with_new_layers(dropout=dropout)
    loss = fnn.SoftmaxCrossEntropy()
    X = rng.standard_normal((7, 4))
    y = rng.integers(0, 3, 7)
    model.zero_grad()
    _reset_dropout(model)
    loss.forward(model.forward(X), y)
    dX = model.backward(loss.backward()).copy()
    grads = model._flat.grad.copy()
    num_p, num_x = _numeric_gradients(model, loss, X, y)
    np.testing.assert_allclose(grads, num_p, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(dX, num_x, rtol=1e-5, atol=1e-8)


def test_backward_accumulates_into_parameter_grads():
    rng = np.random.default_rng(2)
    model = _model_with_new_layers(dropout=False)
    loss = fnn.SoftmaxCrossEntropy()
    X, y = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    model.zero_grad()
    loss.forward(model.forward(X), y)
    model.backward(loss.backward())
    once = model._flat.grad.copy()
    loss.forward(model.forward(X), y)
    model.backward(loss.backward())
    np.testing.assert_allclose(model._flat.grad, 2 * once, rtol=1e-12, atol=1e-15)


# -- inference path -----------------------------------------------------------------------------
def test_predict_uses_running_statistics_and_changes_nothing():
    rng = np.random.default_rng(3)
    model = _model_with_new_layers(dropout=True)
    X = rng.standard_normal((10, 4))
    for _ in range(3):
        model.forward(X)  # moves the running statistics, advances the dropout counter
    states = [layer.state_arrays() for layer in model.layers]
    p1 = model.predict(X)
    p2 = model.predict(X[:3])
    for before, layer in zip(states, model.layers, strict=True):
        after = layer.state_arrays()
        assert before.keys() == after.keys()
        for k in before:
            assert np.array_equal(before[k], after[k])
    np.testing.assert_allclose(p2, p1[:3], rtol=1e-12)
    # the same by hand: running statistics, no dropout
    h = X
    for layer in model.layers:
        if isinstance(layer, fnn.BatchNorm1d):
            g = layer.weight.data if layer.affine else 1.0
            b = layer.bias.data if layer.affine else 0.0
            h = (h - layer.running_mean) / np.sqrt(layer.running_var + layer.eps) * g + b
        elif isinstance(layer, fnn.Dropout):
            pass
        elif isinstance(layer, fnn.GELU):
            h = ref_gelu(h, layer.approximate == "tanh")
        elif isinstance(layer, fnn.LayerNorm):
            h = (h - h.mean(1, keepdims=True)) / np.sqrt(h.var(1, keepdims=True) + layer.eps)
            h = h * layer.weight.data + layer.bias.data
        else:
            h = h @ layer.weight.data + layer.bias.data
    np.testing.assert_allclose(p1, h, rtol=1e-10, atol=1e-12)


def test_batchnorm_running_statistics_follow_torch_rule():
    rng = np.random.default_rng(4)
    layer = fnn.BatchNorm1d(3, momentum=0.2, dtype=np.float64)
    rm, rv = np.zeros(3), np.ones(3)
    for _ in range(4):
        X = rng.standard_normal((8, 3)) * 2 + 1
        layer.forward(X)
        rm = 0.8 * rm + 0.2 * X.mean(0)
        rv = 0.8 * rv + 0.2 * X.var(0, ddof=1)
    np.testing.assert_allclose(layer.running_mean, rm, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, rv, rtol=1e-12)
    assert layer.state_arrays()["num_batches_tracked"] == 4
    cumulative = fnn.BatchNorm1d(3, momentum=None, dtype=np.float64)
    batches = [rng.standard_normal((5, 3)) for _ in range(3)]
    for X in batches:
        cumulative.forward(X)
    np.testing.assert_allclose(
        cumulative.running_mean, np.mean([X.mean(0) for X in batches], 0), rtol=1e-12
    )


def test_batchnorm_state_arrays_round_trip():
    rng = np.random.default_rng(5)
    a = fnn.BatchNorm1d(4, dtype=np.float64)
    a.forward(rng.standard_normal((6, 4)))
    b = fnn.BatchNorm1d(4, dtype=np.float64)
    b.load_state_arrays(a.state_arrays())
    X = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert b.num_batches_tracked == 1
    with pytest.raises(ValueError, match="shape"):
        b.load_state_arrays({"running_mean": np.zeros(5)})


# -- training with the new layers ---------------------------------------------------------------
def test_fit_matches_a_hand_written_loop():
    """A non-dense-only model: fit must zero the grads before each backward (which accumulates)."""
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((24, 4)), rng.integers(0, 3, 24)
    a, b = _model_with_new_layers(seed=2), _model_with_new_layers(seed=2)
    loss = fnn.SoftmaxCrossEntropy()
    opt_a = fnn.SGD(a.parameters(), lr=0.1, momentum=0.9)
    opt_b = fnn.SGD(b.parameters(), lr=0.1, momentum=0.9)
    a.fit(X, y, loss=loss, optimizer=opt_a, epochs=2, batch_size=8, shuffle=False, verbose=0)
    for _ in range(2):
        for start in range(0, 24, 8):
            opt_b.zero_grad()
            loss.forward(b.forward(X[start : start + 8]), y[start : start + 8])
            b.backward(loss.backward())
            opt_b.step()
    np.testing.assert_allclose(a._flat.data, b._flat.data, rtol=1e-12, atol=1e-14)
    for la, lb in zip(a.layers, b.layers, strict=True):
        for k, v in la.state_arrays().items():
            np.testing.assert_array_equal(v, lb.state_arrays()[k])


def test_fit_learns_with_new_layers_float32():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((256, 6)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    model = fnn.Sequential(
        fnn.Linear(6, 32, seed=0),
        fnn.BatchNorm1d(32),
        fnn.GELU(),
        fnn.Dropout(0.1, seed=0),
        fnn.LayerNorm(32),
        fnn.Linear(32, 2, seed=1),
    )
    opt = fnn.Adam(model.parameters(), lr=0.01)
    hist = model.fit(
        X,
        y,
        loss=fnn.SoftmaxCrossEntropy(),
        optimizer=opt,
        epochs=15,
        batch_size=32,
        seed=0,
        verbose=0,
    )
    assert hist["loss"][-1] < 0.6 * hist["loss"][0]
    assert (model.predict(X).argmax(1) == y).mean() > 0.85


# -- configs and bad input ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "layer",
    [
        fnn.Dropout(0.25, seed=9),
        fnn.GELU("tanh"),
        fnn.BatchNorm1d(5, eps=1e-3, momentum=None, affine=False, dtype=np.float64),
        fnn.LayerNorm((7,), eps=1e-6, elementwise_affine=False),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_rebuilds_the_layer(layer):
    config = json.loads(json.dumps(layer.get_config()))
    clone = type(layer)(**config)
    assert clone.get_config() == layer.get_config()
    assert repr(clone) == repr(layer)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="p must be"):
        fnn.Dropout(1.5)
    with pytest.raises(TypeError, match="seed"):
        fnn.Dropout(0.5, seed=-1)
    with pytest.raises(ValueError, match="approximate"):
        fnn.GELU("fast")
    with pytest.raises(ValueError, match="momentum"):
        fnn.BatchNorm1d(3, momentum=2.0)
    with pytest.raises(ValueError, match="normalized_shape"):
        fnn.LayerNorm((3, 4))
    bn = fnn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="at least 2 samples"):
        bn.forward(np.ones((1, 3), np.float32))
    assert bn.num_batches_tracked == 0  # nothing changed
    with pytest.raises(ValueError, match="features"):
        bn.forward(np.ones((4, 2), np.float32))
    X64 = np.arange(12, dtype=np.float64).reshape(4, 3)
    out = bn.predict(X64)  # float64 into a float32 layer: converted, not rejected
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, bn.predict(X64.astype(np.float32)))
    with pytest.raises(TypeError, match="numeric"):
        bn.forward(np.array([["a", "b", "c"]] * 4))
    with pytest.raises(RuntimeError, match="before forward"):
        fnn.LayerNorm(3).backward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="no state"):
        fnn.GELU().load_state_arrays({"x": np.zeros(1)})


def test_layernorm_predict_equals_forward():
    rng = np.random.default_rng(8)
    layer = fnn.LayerNorm(5)
    X = rng.standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(layer.predict(X), layer.forward(X))
    assert math.isclose(float(layer.forward(X).mean()), 0.0, abs_tol=1e-5)
