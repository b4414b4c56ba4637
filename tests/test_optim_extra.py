"""RMSprop, Adagrad and gradient clipping by global norm: the update kernels against NumPy
transcriptions of torch.optim's documented algorithms (both dtypes, serial and parallel builds,
odd sizes), the optimizer classes, ``max_grad_norm`` on every optimizer, and save/load."""

import json

import numpy as np
import pytest
from conftest import assert_close, kernel

import fastnn as fnn

SIZES = [1, 7, 1003]


def _vec(rng, n, dtype, scale=1.0):
    return np.ascontiguousarray(rng.standard_normal(n) * scale, dtype=dtype)


# -- references (torch.optim documentation pseudo-code, float64) --------------------------------
def ref_rmsprop(p, grads, lr, alpha, eps, wd, momentum, centered, scale):
    p = p.astype(np.float64).copy()
    v = np.zeros_like(p)
    g_avg = np.zeros_like(p)
    b = np.zeros_like(p)
    for g in grads:
        g = g.astype(np.float64) * scale
        if wd:
            g = g + wd * p
        v = alpha * v + (1 - alpha) * g * g
        v_tilde = v
        if centered:
            g_avg = alpha * g_avg + (1 - alpha) * g
            v_tilde = v - g_avg**2
        if momentum > 0:
            b = momentum * b + g / (np.sqrt(v_tilde) + eps)
            p = p - lr * b
        else:
            p = p - lr * g / (np.sqrt(v_tilde) + eps)
    return p


def ref_adagrad(p, grads, lr, lr_decay, wd, init_acc, eps, scale):
    p = p.astype(np.float64).copy()
    state_sum = np.full_like(p, init_acc)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64) * scale
        lr_t = lr / (1 + (t - 1) * lr_decay)
        if wd:
            g = g + wd * p
        state_sum = state_sum + g * g
        p = p - lr_t * g / (np.sqrt(state_sum) + eps)
    return p


# -- kernels ------------------------------------------------------------------------------------
RMS_CASES = [
    pytest.param(False, 0.0, 0.0, id="plain"),
    pytest.param(True, 0.0, 0.0, id="centered"),
    pytest.param(False, 0.9, 0.01, id="momentum_wd"),
    pytest.param(True, 0.5, 0.1, id="centered_momentum_wd"),
]


@pytest.mark.parametrize("centered,momentum,wd", RMS_CASES)
@pytest.mark.parametrize("n", SIZES)
def test_rmsprop_kernel(n, centered, momentum, wd, dtype, build, rng):
    p0 = _vec(rng, n, dtype)
    grads = [_vec(rng, n, dtype) for _ in range(3)]
    p = p0.copy()
    sq, ga, buf = np.zeros(n, dtype), np.zeros(n, dtype), np.zeros(n, dtype)
    update = kernel("rmsprop_update", build)
    for g in grads:
        update(p, g, sq, ga, buf, 0.01, 0.9, 1e-8, wd, momentum, centered, 0.7)
    expect = ref_rmsprop(p0, grads, 0.01, 0.9, 1e-8, wd, momentum, centered, 0.7)
    assert_close(p, expect, dtype, scale=10.0)


@pytest.mark.parametrize("lr_decay,wd,init", [(0.0, 0.0, 0.0), (0.1, 0.05, 0.5)])
@pytest.mark.parametrize("n", SIZES)
def test_adagrad_kernel(n, lr_decay, wd, init, dtype, build, rng):
    p0 = _vec(rng, n, dtype)
    grads = [_vec(rng, n, dtype) for _ in range(3)]
    p = p0.copy()
    state_sum = np.full(n, init, dtype)
    update = kernel("adagrad_update", build)
    for t, g in enumerate(grads, start=1):
        update(p, g, state_sum, 0.05, lr_decay, wd, 1e-10, t, 0.5)
    assert_close(p, ref_adagrad(p0, grads, 0.05, lr_decay, wd, init, 1e-10, 0.5), dtype)


@pytest.mark.parametrize("n", [1, 7, 100_003])
def test_sum_squares(n, dtype, build, rng):
    g = _vec(rng, n, dtype)
    expect = np.sum(g.astype(np.float64) ** 2)
    np.testing.assert_allclose(kernel("sum_squares", build)(g), expect, rtol=1e-12)


@pytest.mark.parametrize("n", SIZES)
def test_sgd_and_adam_grad_scale(n, dtype, build, rng):
    """grad_scale s gives the same step as passing s * g (and the default is 1)."""
    p0, g = _vec(rng, n, dtype), _vec(rng, n, dtype)
    gs = (g.astype(np.float64) * 0.3).astype(dtype)
    sgd = kernel("sgd_update", build)
    a, buf_a = p0.copy(), np.zeros(n, dtype)
    b, buf_b = p0.copy(), np.zeros(n, dtype)
    sgd(a, g, buf_a, 0.1, 0.9, 0.0, 0.01, True, True, 0.3)
    sgd(b, gs, buf_b, 0.1, 0.9, 0.0, 0.01, True, True)
    assert_close(a, b.astype(np.float64), dtype)
    adam = kernel("adam_update", build)
    a, m_a, v_a = p0.copy(), np.zeros(n, dtype), np.zeros(n, dtype)
    b, m_b, v_b = p0.copy(), np.zeros(n, dtype), np.zeros(n, dtype)
    adam(a, g, m_a, v_a, 0.01, 0.9, 0.999, 1e-8, 0.0, False, 1, 0.3)
    adam(b, gs, m_b, v_b, 0.01, 0.9, 0.999, 1e-8, 0.0, False, 1)
    assert_close(a, b.astype(np.float64), dtype)


# -- optimizer classes --------------------------------------------------------------------------
def _params(rng, shapes, dtype=np.float64):
    """Loose Parameters (not packed in a model): one update kernel call per parameter."""
    params = [fnn.Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]
    for p in params:
        p.grad[...] = rng.standard_normal(p.shape)
    return params


def _model(seed=0):
    return fnn.Sequential(
        fnn.Linear(3, 4, dtype=np.float64, seed=seed),
        fnn.ReLU(),
        fnn.Linear(4, 2, dtype=np.float64, seed=seed + 1),
    )


@pytest.mark.parametrize("packed", [True, False], ids=["flat_buffer", "loose_params"])
def test_rmsprop_and_adagrad_classes_follow_torch(packed):
    rng = np.random.default_rng(0)
    for make, ref in [
        (
            lambda ps: fnn.RMSprop(ps, lr=0.02, alpha=0.95, momentum=0.3, centered=True),
            lambda p, gs: ref_rmsprop(p, gs, 0.02, 0.95, 1e-8, 0.0, 0.3, True, 1.0),
        ),
        (
            lambda ps: fnn.Adagrad(ps, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
            lambda p, gs: ref_adagrad(p, gs, 0.1, 0.01, 0.0, 0.1, 1e-10, 1.0),
        ),
    ]:
        params = _model().parameters() if packed else _params(rng, [(3, 4), (4,)])
        start = [p.data.copy() for p in params]
        opt = make(params)
        history = [[] for _ in params]
        for _ in range(4):
            for p, h in zip(params, history, strict=True):
                p.grad[...] = rng.standard_normal(p.shape)
                h.append(p.grad.copy())
            opt.step()
        for p, p0, h in zip(params, start, history, strict=True):
            np.testing.assert_allclose(p.data, ref(p0, h), rtol=1e-12, atol=1e-14)


def test_rmsprop_keeps_only_the_state_it_needs():
    params = _model().parameters()
    assert list(fnn.RMSprop(params).state[0]) == ["square_avg"]
    full = fnn.RMSprop(params, momentum=0.9, centered=True).state[0]
    assert sorted(full) == ["grad_avg", "momentum_buffer", "square_avg"]


# -- clipping -----------------------------------------------------------------------------------
OPTIMIZERS = [
    lambda ps, **kw: fnn.SGD(ps, lr=0.1, momentum=0.9, **kw),
    lambda ps, **kw: fnn.Adam(ps, lr=0.01, **kw),
    lambda ps, **kw: fnn.AdamW(ps, lr=0.01, **kw),
    lambda ps, **kw: fnn.RMSprop(ps, lr=0.01, **kw),
    lambda ps, **kw: fnn.Adagrad(ps, lr=0.1, **kw),
]


@pytest.mark.parametrize("make", OPTIMIZERS, ids=["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
@pytest.mark.parametrize("dtype_", [np.float32, np.float64], ids=["float32", "float64"])
def test_max_grad_norm_clips_by_global_norm(make, dtype_):
    """Clipped step == unclipped step on gradients scaled by max_norm / (norm + 1e-6), with the
    norm taken over every parameter together (here loose parameters: several buffers)."""
    rng = np.random.default_rng(1)
    shapes = [(5, 3), (3,), (1, 1)]
    a = _params(rng, shapes, dtype_)
    b = [fnn.Parameter(p.data.copy()) for p in a]
    grads = [p.grad.copy() for p in a]
    norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
    max_norm = 0.25 * norm
    scale = max_norm / (norm + 1e-6)
    for p, g in zip(b, grads, strict=True):
        p.grad[...] = (g.astype(np.float64) * scale).astype(dtype_)
    opt_a, opt_b = make(a, max_grad_norm=max_norm), make(b)
    opt_a.step()
    opt_b.step()
    assert opt_a.last_grad_norm == pytest.approx(norm, rel=1e-12)
    assert opt_b.last_grad_norm is None
    rtol = 1e-5 if dtype_ == np.float32 else 1e-12
    for pa, pb, g in zip(a, b, grads, strict=True):
        np.testing.assert_allclose(pa.data, pb.data, rtol=rtol, atol=rtol)
        np.testing.assert_array_equal(pa.grad, g)  # the grad arrays are not modified


def test_max_grad_norm_above_the_norm_changes_nothing():
    rng = np.random.default_rng(2)
    a = _params(rng, [(4, 2)])
    b = [fnn.Parameter(a[0].data.copy())]
    b[0].grad[...] = a[0].grad
    norm = float(np.linalg.norm(a[0].grad))
    fnn.SGD(a, lr=0.1, max_grad_norm=2 * norm).step()
    fnn.SGD(b, lr=0.1).step()
    np.testing.assert_array_equal(a[0].data, b[0].data)
    assert fnn.SGD(b, lr=0.1).grad_norm() == pytest.approx(norm, rel=1e-12)


def test_fit_with_clipping_matches_a_hand_loop():
    """Dense-only models may use the compiled fast path, which does not clip: fit must not."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((12, 3)) * 5, rng.integers(0, 2, 12)
    loss = fnn.SoftmaxCrossEntropy()
    a, b = _model(4), _model(4)
    opt_a = fnn.Adam(a.parameters(), lr=0.05, max_grad_norm=0.1)
    opt_b = fnn.Adam(b.parameters(), lr=0.05, max_grad_norm=0.1)
    a.fit(X, y, loss=loss, optimizer=opt_a, epochs=2, batch_size=4, shuffle=False, verbose=0)
    for _ in range(2):
        for start in range(0, 12, 4):
            opt_b.zero_grad()
            loss.forward(b.forward(X[start : start + 4]), y[start : start + 4])
            b.backward(loss.backward())
            opt_b.step()
    np.testing.assert_allclose(a._flat.data, b._flat.data, rtol=1e-12, atol=1e-14)
    assert opt_a.last_grad_norm == pytest.approx(opt_b.last_grad_norm, rel=1e-10)


# -- configs, save/load, bad input --------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda ps: fnn.RMSprop(ps, lr=0.02, momentum=0.5, centered=True, max_grad_norm=1.0),
        lambda ps: fnn.Adagrad(ps, lr=0.2, lr_decay=0.1, initial_accumulator_value=0.3),
        lambda ps: fnn.SGD(ps, lr=0.1, max_grad_norm=2.0),
        lambda ps: fnn.AdamW(ps, max_grad_norm=0.5),
    ],
    ids=["RMSprop", "Adagrad", "SGD", "AdamW"],
)
def test_optimizer_config_and_save_load(make, tmp_path):
    rng = np.random.default_rng(5)
    model = _model()
    opt = make(model.parameters())
    config = json.loads(json.dumps(opt.get_config()))
    assert type(opt)(model.parameters(), **config).get_config() == opt.get_config()
    for _ in range(2):
        model._flat.grad[...] = rng.standard_normal(model._flat.grad.size)
        opt.step()
    fnn.save(tmp_path / "m.npz", model, opt)
    model2 = fnn.load(tmp_path / "m.npz")
    opt2 = fnn.load_optimizer(tmp_path / "m.npz", model2)
    g = rng.standard_normal(model._flat.grad.size)
    model._flat.grad[...] = g
    model2._flat.grad[...] = g
    opt.step()
    opt2.step()
    np.testing.assert_array_equal(model._flat.data, model2._flat.data)


def test_bad_optimizer_arguments():
    params = _model().parameters()
    with pytest.raises(ValueError, match="max_grad_norm"):
        fnn.SGD(params, max_grad_norm=0.0)
    with pytest.raises(ValueError, match="alpha"):
        fnn.RMSprop(params, alpha=1.5)
    with pytest.raises(ValueError, match="lr_decay"):
        fnn.Adagrad(params, lr_decay=-1.0)
    with pytest.raises(TypeError, match="max_grad_norm"):
        fnn.Adam(params, max_grad_norm="big")
