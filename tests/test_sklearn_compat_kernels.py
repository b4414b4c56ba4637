"""kernels/sklearn_compat.py against plain-NumPy references written from scikit-learn's maths.

Elementwise kernels: both dtypes, serial and parallel builds, shapes with one row, one column
and odd sizes.  Network kernels (forward, full-batch loss+gradient, one epoch of SGD/Adam):
both dtypes on a small three-layer net, against a NumPy MLP written here, and the gradient
against central finite differences.
"""

import numpy as np
import pytest
from fastnn.kernels import sklearn_compat as SK

DTYPES = [np.float32, np.float64]
BUILDS = ["serial", "parallel"]
SHAPES = [(1, 1), (1, 4), (7, 1), (13, 5)]
KINDS = [SK.OUT_IDENTITY, SK.OUT_LOGISTIC, SK.OUT_SOFTMAX, SK.OUT_EXP]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}


def build(name, which):
    return getattr(SK, name if which == "serial" else name + "_parallel")


# -- NumPy references -------------------------------------------------------------------------
def ref_out(Z, kind):
    Z = Z.astype(np.float64)
    if kind == SK.OUT_LOGISTIC:
        return 1 / (1 + np.exp(-Z))
    if kind == SK.OUT_SOFTMAX:
        E = np.exp(Z - Z.max(axis=1, keepdims=True))
        return E / E.sum(axis=1, keepdims=True)
    if kind == SK.OUT_EXP:
        return np.exp(Z)
    return Z


def ref_loss_delta(Z, Y, sw, kind, eps):
    """scikit-learn's LOSS_FUNCTIONS (weighted means) and delta = (out - y) * w / sum(w)."""
    P = ref_out(Z, kind)
    Y = Y.astype(np.float64)
    w = sw.astype(np.float64)
    if kind == SK.OUT_IDENTITY:
        per_col = np.average((Y - P) ** 2, weights=w, axis=0)
        loss = 0.5 * per_col.mean()
    elif kind == SK.OUT_EXP:
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(Y > 0, Y * np.log(np.where(Y > 0, Y, 1) / P), 0.0) - Y + P
        loss = np.average(term, weights=w, axis=0).sum()
    else:
        Pc = np.clip(P, eps, 1 - eps)
        if kind == SK.OUT_LOGISTIC:
            term = Y * np.log(Pc) + (1 - Y) * np.log(1 - Pc)
        else:
            term = Y * np.log(Pc)
        loss = -np.average(term, weights=w, axis=0).sum()
    dZ = (P - Y) * (w / w.sum())[:, None]
    return loss, dZ


def targets(rng, shape, kind, dtype):
    n, k = shape
    if kind == SK.OUT_SOFTMAX:
        Y = np.eye(k)[rng.integers(0, k, n)]
    elif kind == SK.OUT_LOGISTIC:
        Y = rng.integers(0, 2, shape).astype(float)
    elif kind == SK.OUT_EXP:
        Y = rng.poisson(2.0, shape).astype(float)
    else:
        Y = rng.standard_normal(shape)
    return Y.astype(dtype)


# -- elementwise kernels ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", BUILDS)
@pytest.mark.parametrize("kind", KINDS)
def test_output_loss_delta(dtype, which, kind):
    rng = np.random.default_rng(kind)
    eps = np.finfo(dtype).eps
    for shape in SHAPES:
        Z = (rng.standard_normal(shape) * 2).astype(dtype)
        Y = targets(rng, shape, kind, dtype)
        sw = rng.uniform(0.2, 2.0, shape[0]).astype(dtype)
        dZ = np.full(shape, np.nan, dtype)
        loss = build("output_loss_delta", which)(Z, Y, sw, float(sw.sum()), kind, dZ)
        ref, dref = ref_loss_delta(Z, Y, sw, kind, eps)
        np.testing.assert_allclose(loss, ref, rtol=RTOL[dtype] * 10, atol=1e-6)
        np.testing.assert_allclose(dZ, dref, rtol=RTOL[dtype] * 10, atol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_loss_clips_like_sklearn(dtype):
    """Confident wrong logits: the log-loss is capped at -log(eps), not inf."""
    eps = np.finfo(dtype).eps
    Z = np.array([[-200.0, 200.0, 0.0]], dtype)
    Y = np.array([[1.0, 0.0, 0.0]], dtype)
    dZ = np.empty_like(Z)
    loss = SK.output_loss_delta(Z, Y, np.ones(1, dtype), 1.0, SK.OUT_SOFTMAX, dZ)
    assert np.isclose(loss, -np.log(eps), rtol=1e-5)
    np.testing.assert_allclose(dZ, [[-1.0, 1.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", BUILDS)
@pytest.mark.parametrize("kind", KINDS)
def test_output_activation(dtype, which, kind):
    rng = np.random.default_rng(1)
    for shape in SHAPES:
        Z = (rng.standard_normal(shape) * 3).astype(dtype)
        P = np.empty_like(Z)
        build("output_activation", which)(Z, kind, P)
        np.testing.assert_allclose(P, ref_out(Z, kind), rtol=RTOL[dtype] * 10, atol=1e-7)
        Z2 = Z.copy()
        build("output_activation", which)(Z2, kind, Z2)  # in place (may round differently)
        np.testing.assert_allclose(Z2, P, rtol=RTOL[dtype], atol=RTOL[dtype] * 1e-3)


def flat_case(rng, n, dtype):
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    return p, g


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", BUILDS)
def test_l2_grad(dtype, which):
    rng = np.random.default_rng(2)
    for n, n_w in [(1, 1), (1, 0), (11, 7), (40, 40)]:
        p, g = flat_case(rng, n, dtype)
        g2 = g.copy()
        sq = build("l2_grad", which)(p, g2, n_w, 0.3)
        ref = g.astype(np.float64)
        ref[:n_w] += 0.3 * p[:n_w]
        np.testing.assert_allclose(g2, ref, rtol=RTOL[dtype], atol=RTOL[dtype])
        np.testing.assert_allclose(sq, np.sum(p[:n_w].astype(np.float64) ** 2), rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", BUILDS)
@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_momentum_step(dtype, which, nesterov):
    rng = np.random.default_rng(3)
    for n, n_w in [(1, 1), (11, 7), (40, 33)]:
        p, g = flat_case(rng, n, dtype)
        vel = rng.standard_normal(n).astype(dtype)
        p0, v0 = p.astype(np.float64), vel.astype(np.float64)
        sq = build("sgd_momentum_step", which)(p, g, vel, n_w, 0.05, 0.1, 0.9, nesterov)
        d = g.astype(np.float64)
        d[:n_w] += 0.05 * p0[:n_w]
        v = 0.9 * v0 - 0.1 * d
        p_ref = p0 + (0.9 * v - 0.1 * d if nesterov else v)
        np.testing.assert_allclose(vel, v, rtol=RTOL[dtype] * 10, atol=RTOL[dtype])
        np.testing.assert_allclose(p, p_ref, rtol=RTOL[dtype] * 10, atol=RTOL[dtype])
        np.testing.assert_allclose(sq, np.sum(p0[:n_w] ** 2), rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", BUILDS)
def test_adam_step(dtype, which):
    rng = np.random.default_rng(4)
    for n, n_w in [(1, 0), (11, 7), (40, 33)]:
        p, g = flat_case(rng, n, dtype)
        m = rng.standard_normal(n).astype(dtype)
        v = rng.uniform(0, 1, n).astype(dtype)
        p0, m0, v0 = (a.astype(np.float64) for a in (p, m, v))
        sq = build("adam_step", which)(p, g, m, v, n_w, 0.05, 0.01, 0.9, 0.999, 1e-8)
        d = g.astype(np.float64)
        d[:n_w] += 0.05 * p0[:n_w]
        m_ref = 0.9 * m0 + 0.1 * d
        v_ref = 0.999 * v0 + 0.001 * d * d
        p_ref = p0 - 0.01 * m_ref / (np.sqrt(v_ref) + 1e-8)
        np.testing.assert_allclose(m, m_ref, rtol=RTOL[dtype] * 10, atol=RTOL[dtype])
        np.testing.assert_allclose(v, v_ref, rtol=RTOL[dtype] * 10, atol=RTOL[dtype])
        np.testing.assert_allclose(p, p_ref, rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 10)
        np.testing.assert_allclose(sq, np.sum(p0[:n_w] ** 2), rtol=RTOL[dtype])


@pytest.mark.parametrize("which", BUILDS)
def test_adam_step_float32_moment_coefficients(which):
    """From zero moments, one float32 step leaves m = f32(1 - beta1) * d and
    v = f32(1 - beta2) * d^2, the coefficients rounded from float64 as scikit-learn's
    ``(1 - beta_2) * grad`` rounds them; 1 - 0.999f in float32 (0.00099998713) is 1.3e-5
    off, a bias in every step."""
    n = 16
    p = np.zeros(n, dtype=np.float32)
    g = np.ones(n, dtype=np.float32)
    m = np.zeros(n, dtype=np.float32)
    v = np.zeros(n, dtype=np.float32)
    build("adam_step", which)(p, g, m, v, 0, 0.0, 0.01, 0.9, 0.999, 1e-8)
    assert m[0] == np.float32(1 - 0.9) and v[0] == np.float32(1 - 0.999)


# -- network kernels --------------------------------------------------------------------------
UNITS = np.array([5, 7, 4, 3], dtype=np.int64)  # two hidden layers, awkward widths
TANH = 4  # fastnn.kernels.TANH


def net_params(rng, dtype, units=UNITS):
    shapes = list(zip(units[:-1], units[1:], strict=True))
    Ws = [rng.standard_normal(s) * 0.7 for s in shapes]
    bs = [rng.standard_normal(s[1]) * 0.3 for s in shapes]
    flat = np.concatenate([a.ravel() for a in Ws + bs]).astype(dtype)
    return flat, sum(W.size for W in Ws), shapes


def unpack(flat, shapes):
    Ws, bs, off = [], [], 0
    for a, b in shapes:
        Ws.append(flat[off : off + a * b].astype(np.float64).reshape(a, b))
        off += a * b
    for _, b in shapes:
        bs.append(flat[off : off + b].astype(np.float64))
        off += b
    return Ws, bs


def ref_loss_grad(X, Y, sw, flat, shapes, kind, alpha):
    """A plain-NumPy tanh MLP with scikit-learn's loss, L2 and gradient."""
    Ws, bs = unpack(flat, shapes)
    A = [X.astype(np.float64)]
    for i, (W, b) in enumerate(zip(Ws, bs, strict=True)):
        Z = A[-1] @ W + b
        A.append(np.tanh(Z) if i < len(Ws) - 1 else Z)
    eps = np.finfo(X.dtype).eps
    loss, D = ref_loss_delta(A[-1], Y, sw, kind, eps)
    sw_sum = float(sw.astype(np.float64).sum())
    loss += 0.5 * alpha * sum(np.sum(W**2) for W in Ws) / sw_sum
    gW, gb = [None] * len(Ws), [None] * len(Ws)
    for i in range(len(Ws) - 1, -1, -1):
        gW[i] = A[i].T @ D + alpha * Ws[i] / sw_sum
        gb[i] = D.sum(axis=0)
        if i > 0:
            D = (D @ Ws[i].T) * (1 - A[i] ** 2)
    return loss, np.concatenate([a.ravel() for a in gW + gb]), A[-1]


def net_data(rng, n, dtype, kind):
    X = rng.standard_normal((n, UNITS[0])).astype(dtype)
    Y = targets(rng, (n, UNITS[-1]), kind, dtype)
    sw = rng.uniform(0.5, 1.5, n).astype(dtype)
    return X, Y, sw


def buffers(n, dtype, size):
    k = n * int(UNITS[1:].sum())
    return np.zeros(size, dtype), np.empty(k, dtype), np.empty(k, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_mlp_loss_grad(dtype, kind):
    rng = np.random.default_rng(5)
    flat, n_w, shapes = net_params(rng, dtype)
    for n in (1, 9):
        X, Y, sw = net_data(rng, n, dtype, kind)
        grad, acts, deltas = buffers(n, dtype, flat.size)
        loss = SK.mlp_loss_grad(
            X, Y, sw, float(sw.sum()), flat, n_w, UNITS, TANH, kind, 0.1, grad, acts, deltas
        )
        ref, gref, _ = ref_loss_grad(X, Y, sw, flat, shapes, kind, 0.1)
        tol = 1e-4 if dtype == np.float32 else 1e-11
        np.testing.assert_allclose(loss, ref, rtol=tol)
        np.testing.assert_allclose(grad, gref, rtol=tol, atol=tol)


def test_mlp_loss_grad_finite_differences():
    """The gradient is the derivative of the returned loss (float64, central differences)."""
    rng = np.random.default_rng(6)
    flat, n_w, _ = net_params(rng, np.float64)
    X, Y, sw = net_data(rng, 6, np.float64, SK.OUT_SOFTMAX)
    grad, acts, deltas = buffers(6, np.float64, flat.size)
    args = (X, Y, sw, float(sw.sum()))
    SK.mlp_loss_grad(*args, flat, n_w, UNITS, TANH, SK.OUT_SOFTMAX, 0.2, grad, acts, deltas)
    scratch = np.zeros_like(grad)
    h = 1e-6
    num = np.empty_like(flat)
    for i in range(flat.size):
        up, down = flat.copy(), flat.copy()
        up[i] += h
        down[i] -= h
        f_up = SK.mlp_loss_grad(
            *args, up, n_w, UNITS, TANH, SK.OUT_SOFTMAX, 0.2, scratch, acts, deltas
        )
        f_down = SK.mlp_loss_grad(
            *args, down, n_w, UNITS, TANH, SK.OUT_SOFTMAX, 0.2, scratch, acts, deltas
        )
        num[i] = (f_up - f_down) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_mlp_forward(dtype, kind):
    rng = np.random.default_rng(7)
    flat, n_w, shapes = net_params(rng, dtype)
    for n in (1, 11):
        X, Y, sw = net_data(rng, n, dtype, kind)
        acts = np.empty(n * int(UNITS[1:-1].sum()), dtype)
        out = np.empty((n, UNITS[-1]), dtype)
        SK.mlp_forward(X, flat, n_w, UNITS, TANH, kind, acts, out)
        _, _, Z = ref_loss_grad(X, Y, sw, flat, shapes, kind, 0.0)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(out, ref_out(Z, kind), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", [SK.SOLVER_SGD, SK.SOLVER_ADAM])
def test_mlp_epoch(dtype, solver):
    """One epoch over shuffled rows in batches of 4 (the last of 3 rows) equals a NumPy loop."""
    rng = np.random.default_rng(8)
    kind = SK.OUT_SOFTMAX
    flat, n_w, shapes = net_params(rng, dtype)
    n, batch = 11, 4
    X, Y, sw = net_data(rng, n, dtype, kind)
    idx = rng.permutation(n).astype(np.int64)
    alpha, lr, mu, b1, b2, eps = 0.1, 0.05, 0.9, 0.9, 0.999, 1e-8
    # reference
    p = flat.astype(np.float64)
    s1, s2, t, total = np.zeros_like(p), np.zeros_like(p), 0, 0.0
    for start in range(0, n, batch):
        rows = idx[start : start + batch]
        loss, g, _ = ref_loss_grad(X[rows], Y[rows], sw[rows], p, shapes, kind, alpha)
        total += loss * rows.size
        if solver == SK.SOLVER_SGD:
            s1 = mu * s1 - lr * g
            p = p + mu * s1 - lr * g  # nesterov
        else:
            t += 1
            s1 = b1 * s1 + (1 - b1) * g
            s2 = b2 * s2 + (1 - b2) * g * g
            lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
            p = p - lr_t * s1 / (np.sqrt(s2) + eps)
    # kernel
    step = np.zeros(1, np.int64)
    st1, st2 = np.zeros_like(flat), np.zeros_like(flat)
    grad = np.zeros_like(flat)
    k = batch * int(UNITS[1:].sum())
    acc = SK.mlp_epoch(
        X, Y, sw, idx, batch, flat, n_w, UNITS, TANH, kind, alpha, solver, lr, mu, True,
        b1, b2, eps, step, st1, st2, grad,
        np.empty(batch * UNITS[0], dtype), np.empty(batch * UNITS[-1], dtype),
        np.empty(batch, dtype), np.empty(k, dtype), np.empty(k, dtype),
    )  # fmt: skip
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(acc, total, rtol=tol)
    np.testing.assert_allclose(flat, p, rtol=tol, atol=tol)
    assert step[0] == (3 if solver == SK.SOLVER_ADAM else 0)
