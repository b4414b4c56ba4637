"""Whole-model gradient checks: central differences in float64 through Sequential + loss.

Every layer (Linear with and without bias, ReLU, LeakyReLU, Sigmoid, Tanh, Identity, stand-alone
Softmax) and every loss (SoftmaxCrossEntropy with labels, one-hot and soft targets;
CrossEntropy after Softmax with labels and one-hot; MSELoss) is checked inside whole models:
models whose activations fuse into dense stages, and models where they cannot (an activation
first, two activations in a row, Softmax as a layer).  ``model.backward``'s returned dX is
checked too.  float32 models must agree with the float64 ones.
"""

import numpy as np
import pytest

import fastnn as fnn

N, N_IN, K = 6, 4, 3


def L(n_in, n_out, seed, **kw):
    return fnn.Linear(n_in, n_out, seed=seed, **kw)


# (layers factory(dtype), loss factory, target kind)
MODELS = {
    "relu|sce-labels": (
        lambda d: [L(N_IN, 5, 0, dtype=d), fnn.ReLU(), L(5, K, 1, dtype=d)],
        fnn.SoftmaxCrossEntropy,
        "labels",
    ),
    "relu-relu-deep|sce-labels": (
        lambda d: [
            L(N_IN, 7, 0, dtype=d),
            fnn.ReLU(),
            L(7, 5, 1, dtype=d),
            fnn.ReLU(),
            L(5, K, 2, dtype=d),
        ],
        fnn.SoftmaxCrossEntropy,
        "labels",
    ),
    "leaky-sigmoid|sce-onehot": (
        lambda d: [
            L(N_IN, 5, 0, dtype=d),
            fnn.LeakyReLU(0.1),
            L(5, 6, 1, dtype=d, init="glorot"),
            fnn.Sigmoid(),
            L(6, K, 2, dtype=d),
        ],
        fnn.SoftmaxCrossEntropy,
        "one_hot",
    ),
    "tanh|sce-soft": (
        lambda d: [L(N_IN, 5, 0, dtype=d, init="glorot"), fnn.Tanh(), L(5, K, 1, dtype=d)],
        fnn.SoftmaxCrossEntropy,
        "soft",
    ),
    "softmax-layer|ce-labels": (
        lambda d: [L(N_IN, K, 0, dtype=d), fnn.Softmax()],
        fnn.CrossEntropy,
        "labels",
    ),
    "tanh-softmax|ce-onehot": (
        lambda d: [L(N_IN, 5, 0, dtype=d), fnn.Tanh(), L(5, K, 1, dtype=d), fnn.Softmax()],
        fnn.CrossEntropy,
        "one_hot",
    ),
    "sigmoid-then-softmax|ce-labels": (
        lambda d: [
            L(N_IN, 5, 0, dtype=d),
            fnn.Identity(),
            L(5, K, 1, dtype=d),
            fnn.Sigmoid(),
            fnn.Softmax(),
        ],
        fnn.CrossEntropy,
        "labels",
    ),
    "relu-then-tanh|mse": (
        lambda d: [L(N_IN, 5, 0, dtype=d), fnn.ReLU(), fnn.Tanh(), L(5, K, 1, dtype=d)],
        fnn.MSELoss,
        "targets",
    ),
    "leaky-then-leaky|sce-labels": (
        lambda d: [
            L(N_IN, 5, 0, dtype=d),
            fnn.LeakyReLU(0.05),
            fnn.LeakyReLU(0.3),
            L(5, K, 1, dtype=d),
        ],
        fnn.SoftmaxCrossEntropy,
        "labels",
    ),
    "activation-first|sce-labels": (
        lambda d: [fnn.Tanh(), L(N_IN, 5, 0, dtype=d), fnn.Sigmoid(), L(5, K, 1, dtype=d)],
        fnn.SoftmaxCrossEntropy,
        "labels",
    ),
    "no-bias-sigmoid|mse": (
        lambda d: [
            L(N_IN, 5, 0, dtype=d, bias=False),
            fnn.Sigmoid(),
            L(5, K, 1, dtype=d, bias=False),
        ],
        fnn.MSELoss,
        "targets",
    ),
    "linear-linear|mse": (
        lambda d: [L(N_IN, 5, 0, dtype=d), L(5, K, 1, dtype=d)],
        fnn.MSELoss,
        "targets",
    ),
    "sigmoid-output|mse": (
        lambda d: [L(N_IN, 5, 0, dtype=d), fnn.Tanh(), L(5, K, 1, dtype=d), fnn.Sigmoid()],
        fnn.MSELoss,
        "targets",
    ),
    "single-output|mse-1d": (
        lambda d: [L(N_IN, 1, 0, dtype=d)],
        fnn.MSELoss,
        "targets_1d",
    ),
}


def _data(kind, rng):
    X = rng.standard_normal((N, N_IN))
    labels = rng.integers(0, K, N)
    labels[:K] = np.arange(K)
    if kind == "labels":
        target = labels
    elif kind == "one_hot":
        target = np.eye(K)[labels]
    elif kind == "soft":
        target = rng.dirichlet(np.ones(K), N)
    elif kind == "targets":
        target = rng.standard_normal((N, K))
    else:
        target = rng.standard_normal(N)
    return X, target


def _build(name, dtype):
    layers, loss_cls, kind = MODELS[name]
    model = fnn.Sequential(*layers(dtype))
    # biases start at zero; give them values so their gradients are tested in general position
    rng = np.random.default_rng(7)
    for p in model.parameters():
        if p.data.ndim == 1:
            p.data[...] = rng.standard_normal(p.shape) * 0.3
    X, target = _data(kind, np.random.default_rng(3))
    return model, loss_cls(), X.astype(dtype), target


def _analytic(model, loss, X, target):
    model.zero_grad()
    value = loss.forward(model.forward(X), target)
    dX = model.backward(loss.backward()).copy()
    return value, [p.grad.copy() for p in model.parameters()], dX


def _numeric(f, arr, h=1e-6):
    """Central differences of the scalar f() with respect to every element of ``arr`` (in place)."""
    g = np.zeros(arr.shape)
    for idx in np.ndindex(arr.shape):
        old = arr[idx]
        arr[idx] = old + h
        up = f()
        arr[idx] = old - h
        down = f()
        arr[idx] = old
        g[idx] = (up - down) / (2 * h)
    return g


# Central differences with h=1e-6 in float64: truncation error ~h^2 |f'''| ~ 1e-12 and rounding
# error ~ 1e-16 |f| / h ~ 1e-10, so the analytic gradient must match to ~1e-8 absolute;
# rtol 1e-6 / atol 1e-8 leaves a margin of ~100 and still catches a missing factor or term.
GRAD_TOL = {"rtol": 1e-6, "atol": 1e-8}


@pytest.mark.parametrize("name", list(MODELS))
def test_whole_model_gradient_float64(name):
    model, loss, X, target = _build(name, np.float64)
    value, grads, dX = _analytic(model, loss, X, target)
    assert np.isfinite(value)

    def f():
        return loss.forward(model.forward(X), target)

    for p, g in zip(model.parameters(), grads, strict=True):
        np.testing.assert_allclose(g, _numeric(f, p.data), err_msg=f"{name}: {p}", **GRAD_TOL)
    np.testing.assert_allclose(dX, _numeric(f, X), err_msg=f"{name}: dX", **GRAD_TOL)
    # backward accumulates: a second backward without zero_grad doubles every gradient
    loss.forward(model.forward(X), target)
    model.backward(loss.backward())
    for p, g in zip(model.parameters(), grads, strict=True):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(MODELS))
def test_float32_agrees_with_float64(name):
    m64, loss64, X64, t = _build(name, np.float64)
    m32, loss32, X32, _ = _build(name, np.float32)
    v64, g64, dX64 = _analytic(m64, loss64, X32.astype(np.float64), t)
    v32, g32, dX32 = _analytic(m32, loss32, X32, t)
    # Same weights (Linear draws in float64 and rounds) and inputs; float32 rounding (6e-8)
    # grows through a few layers of sums of <= 7 terms and the exp/log of the losses to ~1e-6
    # relative.  1e-4 relative, with an absolute floor of 1e-5 of the largest entry, is loose
    # enough for that and tight enough to catch any real disagreement.
    np.testing.assert_allclose(v32, v64, rtol=1e-5)
    for a, b in zip(g32, g64, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
    assert dX32.dtype == np.float32
    np.testing.assert_allclose(dX32, dX64, rtol=1e-4, atol=1e-5 * np.abs(dX64).max())


def test_gradient_check_can_fail():
    """The check above is sensitive: a 1% error in one weight gradient is caught."""
    model, loss, X, target = _build("relu|sce-labels", np.float64)
    _, grads, _ = _analytic(model, loss, X, target)
    p = model.parameters()[0]
    wrong = grads[0].copy()
    wrong.flat[0] *= 1.01

    def f():
        return loss.forward(model.forward(X), target)

    with pytest.raises(AssertionError):
        np.testing.assert_allclose(wrong, _numeric(f, p.data), **GRAD_TOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target", ["labels", "one_hot"])
def test_losses_finite_for_huge_logits(dtype, target):
    """Logits of +-1e4 give finite losses and gradients through the whole model."""
    model = fnn.Sequential(fnn.Linear(2, 3, dtype=dtype))
    model.layers[0].weight.data[...] = [[1e4, -1e4, 0.0], [0.0, 1e4, -1e4]]
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype)
    y = np.array([1, 0, 2])
    t = y if target == "labels" else np.eye(3)[y]
    loss = fnn.SoftmaxCrossEntropy()
    value = loss.forward(model.forward(X), t)
    assert np.isfinite(value) and value > 1e3  # confidently wrong: ~1e4
    dX = model.backward(loss.backward())
    assert np.isfinite(dX).all()
    assert all(np.isfinite(p.grad).all() for p in model.parameters())

    probs = fnn.Sequential(fnn.Linear(2, 3, dtype=dtype), fnn.Softmax())
    probs.layers[0].weight.data[...] = model.layers[0].weight.data
    ce = fnn.CrossEntropy()
    value = ce.forward(probs.forward(X), t)
    assert np.isfinite(value)  # log(0) clipped to log(eps)
    dX = probs.backward(ce.backward())
    assert np.isfinite(dX).all()
    assert all(np.isfinite(p.grad).all() for p in probs.parameters())


@pytest.mark.parametrize("name", list(MODELS))
def test_predict_between_forward_and_backward_changes_nothing(name):
    """predict keeps no state: called between forward and backward (with another batch size) it
    must not replace what backward uses.  Stand-alone layers used to keep predict's arrays, so
    backward read (3, k) buffers for a (6, k) gradient: wrong results or heap corruption."""
    model, loss, X, target = _build(name, np.float64)
    _, grads, dX = _analytic(model, loss, X, target)
    model.zero_grad()
    loss.forward(model.forward(X), target)
    model.predict(X[:3])
    dX2 = model.backward(loss.backward())
    np.testing.assert_array_equal(dX2, dX)
    for p, g in zip(model.parameters(), grads, strict=True):
        np.testing.assert_array_equal(p.grad, g)
