"""Weighted, smoothed and new losses: the ``*_weighted``, ``huber`` and ``bce_with_logits``
kernels against plain-NumPy references (values from the formulas, gradients by central
differences of those formulas in float64), the public loss classes, and ``fit(sample_weight)``.

Every loss here is sum_i r_i(output_i) / D with D independent of the output, so the reference
gradient of column j is found for all rows at once by perturbing column j of every row.
"""

import json

import numpy as np
import pytest
from conftest import assert_close, kernel
from scipy.special import log_softmax

import fastnn as fnn

SHAPES = [(1, 1), (1, 7), (9, 1), (13, 17), (40, 33)]


def _rand(rng, shape, dtype, scale=1.0):
    return np.ascontiguousarray(rng.standard_normal(shape) * scale, dtype=dtype)


def _weights(rng, n, dtype, with_zero=True):
    w = rng.uniform(0.2, 3.0, n)
    if with_zero and n > 2:
        w[1] = 0.0
    return w.astype(dtype)


def _no_weights(dtype):
    return np.empty(0, dtype)


def _row_grad(rows, Z, h=1e-5):
    """d rows_i / d Z_ij for every i, j by central differences (rows_i depends on Z_i only)."""
    Z = np.asarray(Z, np.float64)
    G = np.empty_like(Z)
    for j in range(Z.shape[1]):
        Zp, Zm = Z.copy(), Z.copy()
        Zp[:, j] += h
        Zm[:, j] -= h
        G[:, j] = (rows(Zp) - rows(Zm)) / (2 * h)
    return G


def _check(value, grad, rows, Z, D, dtype):
    """Kernel loss value and gradient against sum(rows(Z)) / D and its numeric gradient."""
    Z64 = np.asarray(Z, np.float64)
    expect = rows(Z64).sum() / D
    assert_close(value, expect, dtype, scale=max(1.0, abs(expect)))
    G = _row_grad(rows, Z64) / D
    # absolute floor relative to the largest entry (cancellation in a row's sum of terms of
    # that size), never below a few ulp of 1 (exactly-zero gradients such as k = 1)
    big = np.abs(G).max()
    rtol, atol = (1e-4, 1e-5 * big + 1e-6) if dtype == np.float32 else (1e-6, 1e-8 * big + 1e-13)
    np.testing.assert_allclose(grad, G, rtol=rtol, atol=atol)


def _sw_or_ones(sw, n):
    return np.ones(n) if sw.size == 0 else sw.astype(np.float64)


# -- softmax cross-entropy with class weights, sample weights, smoothing ------------------------
CASES = [
    pytest.param(False, False, 0.0, id="plain"),
    pytest.param(True, False, 0.0, id="class_w"),
    pytest.param(False, True, 0.15, id="sample_w_smooth"),
    pytest.param(True, True, 0.3, id="all"),
]


@pytest.mark.parametrize("use_cw,use_sw,eps", CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_xent_labels_weighted(shape, use_cw, use_sw, eps, dtype, build, rng):
    n, k = shape
    Z = _rand(rng, shape, dtype, scale=3.0)
    y = rng.integers(0, k, n)
    cw = rng.uniform(0.5, 2.0, k).astype(dtype) if use_cw else np.ones(k, dtype)
    sw = _weights(rng, n, dtype) if use_sw else _no_weights(dtype)
    s, c = _sw_or_ones(sw, n), cw.astype(np.float64)
    T = (1 - eps) * np.eye(k)[y] + eps / k  # torch's smoothed target

    def rows(Zf):
        return s * np.sum(-c * T * log_softmax(Zf, axis=1), axis=1)

    dZ = np.empty(shape, dtype)
    value = kernel("softmax_xent_labels_weighted", build)(Z, y, cw, sw, eps, dZ)
    _check(value, dZ, rows, Z, np.sum(s * c[y]), dtype)


@pytest.mark.parametrize("use_cw,use_sw,eps", CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_xent_targets_weighted(shape, use_cw, use_sw, eps, dtype, build, rng):
    n, k = shape
    Z = _rand(rng, shape, dtype, scale=3.0)
    T = rng.dirichlet(np.ones(k), n).astype(dtype)  # probability rows
    cw = rng.uniform(0.5, 2.0, k).astype(dtype) if use_cw else np.ones(k, dtype)
    sw = _weights(rng, n, dtype) if use_sw else _no_weights(dtype)
    s, c = _sw_or_ones(sw, n), cw.astype(np.float64)
    Ts = (1 - eps) * T.astype(np.float64) + eps / k

    def rows(Zf):
        return s * np.sum(-c * Ts * log_softmax(Zf, axis=1), axis=1)

    dZ = np.empty(shape, dtype)
    value = kernel("softmax_xent_targets_weighted", build)(Z, T, cw, sw, eps, dZ)
    _check(value, dZ, rows, Z, s.sum(), dtype)


@pytest.mark.parametrize("shape", SHAPES)
def test_weighted_kernel_equals_fast_kernel_without_weights(shape, dtype, build, rng):
    n, k = shape
    Z = _rand(rng, shape, dtype, scale=3.0)
    y = rng.integers(0, k, n)
    d1, d2 = np.empty(shape, dtype), np.empty(shape, dtype)
    v1 = kernel("softmax_xent_labels", build)(Z, y, d1)
    v2 = kernel("softmax_xent_labels_weighted", build)(
        Z, y, np.ones(k, dtype), _no_weights(dtype), 0.0, d2
    )
    assert_close(v2, v1, dtype)
    assert_close(d2, d1.astype(np.float64), dtype)


# -- cross-entropy on probabilities -------------------------------------------------------------
@pytest.mark.parametrize("use_sw", [False, True], ids=["no_sw", "sw"])
@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_weighted(shape, use_sw, dtype, build, rng):
    n, k = shape
    P = rng.uniform(0.05, 1.0, shape).astype(dtype)  # inside the clip range: smooth
    y = rng.integers(0, k, n)
    T = rng.dirichlet(np.ones(k), n).astype(dtype)
    cw = rng.uniform(0.5, 2.0, k).astype(dtype)
    sw = _weights(rng, n, dtype) if use_sw else _no_weights(dtype)
    s, c = _sw_or_ones(sw, n), cw.astype(np.float64)

    def rows_labels(Pf):
        return s * c[y] * -np.log(Pf[np.arange(n), y])

    dP = np.empty(shape, dtype)
    value = kernel("cross_entropy_labels_weighted", build)(P, y, cw, sw, 1e-8, dP)
    _check(value, dP, rows_labels, P, np.sum(s * c[y]), dtype)

    def rows_targets(Pf):
        return s * np.sum(-c * T * np.log(Pf), axis=1)

    value = kernel("cross_entropy_targets_weighted", build)(P, T, cw, sw, 1e-8, dP)
    _check(value, dP, rows_targets, P, s.sum(), dtype)


# -- regression losses --------------------------------------------------------------------------
@pytest.mark.parametrize("use_sw", [False, True], ids=["no_sw", "sw"])
@pytest.mark.parametrize("shape", SHAPES)
def test_mse_weighted_and_huber(shape, use_sw, dtype, build, rng):
    n, k = shape
    Y, T = _rand(rng, shape, dtype, scale=2.0), _rand(rng, shape, dtype, scale=2.0)
    sw = _weights(rng, n, dtype) if use_sw else _no_weights(dtype)
    s = _sw_or_ones(sw, n)
    T64 = T.astype(np.float64)
    dY = np.empty(shape, dtype)
    if use_sw:  # without weights fit uses the original mse kernel

        def rows_mse(Yf):
            return s * np.mean((Yf - T64) ** 2, axis=1)

        value = kernel("mse_weighted", build)(Y, T, sw, dY)
        _check(value, dY, rows_mse, Y, s.sum(), dtype)
    delta = 1.3

    def rows_huber(Yf):
        d = np.abs(Yf - T64)
        per = np.where(d < delta, 0.5 * d**2, delta * (d - 0.5 * delta))
        return s * np.mean(per, axis=1)

    value = kernel("huber", build)(Y, T, delta, sw, dY)
    _check(value, dY, rows_huber, Y, s.sum(), dtype)


@pytest.mark.parametrize("use_sw", [False, True], ids=["no_sw", "sw"])
@pytest.mark.parametrize("shape", SHAPES)
def test_bce_with_logits(shape, use_sw, dtype, build, rng):
    n, k = shape
    Z = _rand(rng, shape, dtype, scale=4.0)
    T = rng.uniform(0, 1, shape).astype(dtype)
    T[rng.uniform(size=shape) < 0.5] = 1.0  # a mix of hard 0/1 labels and probabilities
    T[rng.uniform(size=shape) < 0.3] = 0.0
    pw = rng.uniform(0.5, 3.0, k).astype(dtype)
    sw = _weights(rng, n, dtype) if use_sw else _no_weights(dtype)
    s, p, T64 = _sw_or_ones(sw, n), pw.astype(np.float64), T.astype(np.float64)

    def rows(Zf):
        # -[pw t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))], via logaddexp
        log_sig = -np.logaddexp(0.0, -Zf)
        log_one_minus = -np.logaddexp(0.0, Zf)
        return s * np.mean(-(p * T64 * log_sig + (1 - T64) * log_one_minus), axis=1)

    dZ = np.empty(shape, dtype)
    value = kernel("bce_with_logits", build)(Z, T, pw, sw, dZ)
    _check(value, dZ, rows, Z, s.sum(), dtype)


def test_zero_total_weight_gives_zero_loss_and_gradient(dtype):
    Z = np.ones((3, 4), dtype)
    dZ = np.full((3, 4), np.nan, dtype)
    v = fnn.kernels.softmax_xent_labels_weighted(
        Z, np.array([0, 1, 2]), np.ones(4, dtype), np.zeros(3, dtype), 0.0, dZ
    )
    assert v == 0.0 and np.all(dZ == 0)


# -- public classes -----------------------------------------------------------------------------
def test_bce_is_stable_for_huge_logits():
    for dtype in (np.float32, np.float64):
        Z = np.array([[1e4], [-1e4], [1e4], [-1e4]], dtype)
        t = np.array([0.0, 1.0, 1.0, 0.0])
        loss = fnn.BCEWithLogits()
        value = loss.forward(Z, t)
        np.testing.assert_allclose(value, (1e4 + 1e4) / 4, rtol=1e-6)
        grad = loss.backward()
        assert np.all(np.isfinite(grad))
        np.testing.assert_allclose(grad.ravel(), [0.25, -0.25, 0.0, 0.0], atol=1e-7)


def test_bce_shapes_pos_weight_and_bad_targets():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((6, 1))
    t = rng.integers(0, 2, 6)
    v1 = fnn.BCEWithLogits().forward(Z, t)  # binary (n,) targets with (n, 1) logits
    v2 = fnn.BCEWithLogits().forward(Z, t.reshape(-1, 1))
    assert v1 == v2
    Zm = rng.standard_normal((6, 3))
    tm = rng.integers(0, 2, (6, 3))
    scalar = fnn.BCEWithLogits(pos_weight=2.0).forward(Zm, tm)
    vector = fnn.BCEWithLogits(pos_weight=[2.0, 2.0, 2.0]).forward(Zm, tm)
    assert scalar == pytest.approx(vector, rel=1e-15)
    assert scalar > fnn.BCEWithLogits().forward(Zm, tm)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fnn.BCEWithLogits().forward(Zm, tm * 2.0)
    with pytest.raises(ValueError, match="pos_weight has 2 entries"):
        fnn.BCEWithLogits(pos_weight=[1.0, 2.0]).forward(Zm, tm)


def test_class_weighted_cross_entropy_matches_torch_definition():
    # torch.nn.CrossEntropyLoss(weight=w) on labels: sum_i w[y_i] nll_i / sum_i w[y_i].
    Z = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0]])
    y = np.array([0, 2, 1])
    w = np.array([1.0, 2.0, 0.5])
    nll = -log_softmax(Z, axis=1)[np.arange(3), y]
    expect = np.sum(w[y] * nll) / np.sum(w[y])
    assert fnn.SoftmaxCrossEntropy(weight=w).forward(Z, y) == pytest.approx(expect, rel=1e-14)
    # label smoothing, torch: (1 - eps) * weighted nll + eps / k * sum_ij w_j (-L_ij) / sum w[y]
    eps = 0.1
    smooth = np.sum(w * -log_softmax(Z, axis=1)) / np.sum(w[y])
    expect_s = (1 - eps) * expect + eps / 3 * smooth
    value = fnn.SoftmaxCrossEntropy(weight=w, label_smoothing=eps).forward(Z, y)
    assert value == pytest.approx(expect_s, rel=1e-14)
    # CrossEntropy on probabilities: the same normalisation
    P = np.exp(log_softmax(Z, axis=1))
    assert fnn.CrossEntropy(weight=w).forward(P, y) == pytest.approx(expect, rel=1e-12)


def test_sample_weight_of_ones_equals_unweighted():
    rng = np.random.default_rng(1)
    Z, y = rng.standard_normal((8, 4)), rng.integers(0, 4, 8)
    for loss in (fnn.SoftmaxCrossEntropy(), fnn.CrossEntropy(), fnn.MSELoss(), fnn.HuberLoss()):
        if isinstance(loss, fnn.CrossEntropy):
            out, target = np.exp(log_softmax(Z, axis=1)), y
        elif loss.classification:
            out, target = Z, y
        else:
            out, target = Z, rng.standard_normal((8, 4))
        plain = loss.forward(out, target)
        g_plain = loss.backward().copy()
        weighted = loss.forward(out, target, sample_weight=np.full(8, 2.5))
        assert weighted == pytest.approx(plain, rel=1e-13)
        np.testing.assert_allclose(loss.backward(), g_plain, rtol=1e-12, atol=1e-15)


def test_huber_matches_its_two_regimes():
    Y = np.array([[0.1, -0.2], [3.0, -5.0]])
    T = np.zeros((2, 2))
    value = fnn.HuberLoss(delta=1.0).forward(Y, T)
    assert value == pytest.approx((0.005 + 0.02 + 2.5 + 4.5) / 4, rel=1e-14)
    loss = fnn.HuberLoss(delta=1.0)
    loss.forward(Y, T)
    np.testing.assert_allclose(loss.backward(), np.array([[0.1, -0.2], [1.0, -1.0]]) / 4)


def test_bad_weights_raise_before_anything_runs():
    Z, y = np.ones((4, 3)), np.array([0, 1, 2, 0])
    loss = fnn.SoftmaxCrossEntropy()
    for bad, match in [
        (np.ones(3), "shape"),
        (np.array([1.0, -1.0, 1.0, 1.0]), ">= 0"),
        (np.zeros(4), "all zeros"),
        (np.array([1.0, np.nan, 1.0, 1.0]), "NaN"),
    ]:
        with pytest.raises(ValueError, match=match):
            loss.forward(Z, y, sample_weight=bad)
    with pytest.raises(ValueError, match="weight has 2 entries"):
        fnn.SoftmaxCrossEntropy(weight=[1.0, 2.0]).forward(Z, y)
    with pytest.raises(ValueError, match="finite values >= 0"):
        fnn.SoftmaxCrossEntropy(weight=[1.0, -2.0, 1.0])
    with pytest.raises(ValueError, match="label_smoothing"):
        fnn.SoftmaxCrossEntropy(label_smoothing=1.5)
    with pytest.raises(ValueError, match="delta"):
        fnn.HuberLoss(delta=0.0)


@pytest.mark.parametrize(
    "loss",
    [
        fnn.SoftmaxCrossEntropy(weight=[1.0, 2.0], label_smoothing=0.1),
        fnn.CrossEntropy(eps=1e-7, weight=[0.5, 1.0]),
        fnn.HuberLoss(delta=2.0),
        fnn.BCEWithLogits(pos_weight=[3.0]),
    ],
    ids=lambda loss: type(loss).__name__,
)
def test_loss_config_is_json_and_rebuilds(loss):
    config = json.loads(json.dumps(loss.get_config()))
    assert type(loss)(**config).get_config() == loss.get_config()


# -- fit(sample_weight=...) ---------------------------------------------------------------------
def _tiny_model(seed=0):
    return fnn.Sequential(
        fnn.Linear(3, 5, dtype=np.float64, seed=seed),
        fnn.Tanh(),
        fnn.Linear(5, 2, dtype=np.float64, seed=seed + 1),
    )


def test_fit_integer_sample_weights_equal_repeated_samples():
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((10, 3)), rng.integers(0, 2, 10)
    w = rng.integers(0, 4, 10).astype(float)
    w[0] = 1.0
    Xr, yr = np.repeat(X, w.astype(int), axis=0), np.repeat(y, w.astype(int))
    a, b = _tiny_model(), _tiny_model()
    loss = fnn.SoftmaxCrossEntropy()
    kw = {"epochs": 3, "shuffle": False, "verbose": 0, "loss": loss}
    ha = a.fit(
        X, y, optimizer=fnn.SGD(a.parameters(), lr=0.3), batch_size=10, sample_weight=w, **kw
    )
    hb = b.fit(Xr, yr, optimizer=fnn.SGD(b.parameters(), lr=0.3), batch_size=len(yr), **kw)
    np.testing.assert_allclose(a._flat.data, b._flat.data, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=1e-12)


def test_fit_sample_weight_minibatches_and_validation_split():
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((20, 3)), rng.standard_normal((20, 2))
    w = rng.uniform(0.5, 2.0, 20)
    model = _tiny_model()
    opt = fnn.Adam(model.parameters(), lr=0.01)
    hist = model.fit(
        X,
        y,
        loss=fnn.HuberLoss(),
        optimizer=opt,
        epochs=2,
        batch_size=6,
        sample_weight=w,
        validation_split=0.25,
        verbose=0,
        seed=0,
    )
    assert len(hist["loss"]) == 2 and "val_loss" in hist.history
    # the epoch loss is the weighted mean over the 15 training samples (no update: lr = 0)
    frozen = _tiny_model()
    opt0 = fnn.SGD(frozen.parameters(), lr=0.0)
    h0 = frozen.fit(
        X,
        y,
        loss=fnn.MSELoss(),
        optimizer=opt0,
        batch_size=4,
        sample_weight=w,
        validation_split=0.25,
        verbose=0,
        seed=0,
    )
    per_sample = np.mean((frozen.predict(X[:15]) - y[:15]) ** 2, axis=1)
    expect = np.sum(w[:15] * per_sample) / np.sum(w[:15])
    assert h0["loss"][0] == pytest.approx(expect, rel=1e-12)
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        model.fit(X, y, loss=fnn.MSELoss(), optimizer=opt, sample_weight=w[:5], verbose=0)


def test_fit_with_class_weights_and_smoothing_matches_a_hand_loop():
    """Dense-only models may run on the compiled fast path, which implements only the plain
    loss: weighted or smoothed losses must still train with their own gradients."""
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((12, 3)), rng.integers(0, 2, 12)
    loss = fnn.SoftmaxCrossEntropy(weight=[1.0, 3.0], label_smoothing=0.2)
    a, b = _tiny_model(5), _tiny_model(5)
    opt_a, opt_b = fnn.SGD(a.parameters(), lr=0.2), fnn.SGD(b.parameters(), lr=0.2)
    a.fit(X, y, loss=loss, optimizer=opt_a, epochs=2, batch_size=4, shuffle=False, verbose=0)
    for _ in range(2):
        for start in range(0, 12, 4):
            opt_b.zero_grad()
            loss.forward(b.forward(X[start : start + 4]), y[start : start + 4])
            b.backward(loss.backward())
            opt_b.step()
    np.testing.assert_allclose(a._flat.data, b._flat.data, rtol=1e-12, atol=1e-14)
