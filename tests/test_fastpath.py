"""The compiled fit fast path (kernels/epoch.py, fastnn/_fastpath.py).

Three layers of checks: the pass kernels of kernels/epoch.py against plain-NumPy references;
``fit`` through the fast path against ``fit`` through the layer-by-layer path (same
parameters, optimizer state, losses and accuracies, for several architectures, both dtypes,
every optimizer, a last partial batch); and one epoch of the fast path against a NumPy
training loop written here, independent of every fastnn kernel.
"""

import numba
import numpy as np
import pytest
from conftest import assert_close
from fastnn.kernels import epoch as E
from fastnn.kernels._by_address import call_at, signature_check
from reference import activation, dense_forward, one_hot

import fastnn as fnn
from fastnn import _fastpath, _warmup
from fastnn.training import EpochRunner, make_runner

_TRAMPOLINES: dict = {}


def _jitted(kernel):
    """``kernel`` callable from Python: the fit's own kernels are built without a wrapper for
    calls from Python (``njit_internal``), so the tests call them through a compiled caller."""
    if kernel not in _TRAMPOLINES:

        @numba.njit
        def call(*args):
            return kernel(*args)

        _TRAMPOLINES[kernel] = call
    return _TRAMPOLINES[kernel]


RELU, TANH, LEAKY, SIGMOID, IDENT = 1, 4, 2, 3, 0


def _deriv_from_output(A, code, alpha):
    if code == RELU:
        return (A > 0).astype(np.float64)
    if code == LEAKY:
        return np.where(A > 0, 1.0, alpha)
    if code == SIGMOID:
        return A * (1 - A)
    if code == TANH:
        return 1 - A * A
    return np.ones_like(A)


# -- the pass kernels ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 5), (7, 1), (9, 70), (E.PREFETCH_AHEAD + 9, 3)])
def test_gather_batch(dtype, rng, shape):
    # the last shape has rows PREFETCH_AHEAD ahead inside the order, and rows past its end
    X = rng.standard_normal((shape[0] + 4, shape[1])).astype(dtype)
    y = rng.integers(0, 9, X.shape[0]).astype(np.int64)
    order = rng.permutation(X.shape[0]).astype(np.int64)
    xb = np.empty(shape, dtype)
    yb = np.empty(shape[0], np.int64)
    for check in (False, True):
        xb[...] = 0
        assert _jitted(E.gather_batch)(X, order, 3, xb, y, yb, check, 0, False)
        np.testing.assert_array_equal(xb, X[order[3 : 3 + shape[0]]])
        np.testing.assert_array_equal(yb, y[order[3 : 3 + shape[0]]])
        xb[...] = 0
        assert _jitted(E.gather_batch)(X, order, 3, xb, y, yb[:0], check, 0, False)  # no labels
        np.testing.assert_array_equal(xb, X[order[3 : 3 + shape[0]]])
        # feature-major: the same rows as the columns of a (features, rows) block
        xbt = np.zeros(shape[::-1], dtype)
        yb[...] = -1
        assert _jitted(E.gather_batch)(X, order, 3, xbt, y, yb, check, 0, True)
        np.testing.assert_array_equal(xbt, X[order[3 : 3 + shape[0]]].T)
        np.testing.assert_array_equal(yb, y[order[3 : 3 + shape[0]]])
    # a NaN or inf in a gathered row is reported only when checking; rows outside the
    # batch do not count
    for bad in (np.nan, np.inf, -np.inf):
        Xb = X.copy()
        Xb[order[3 + shape[0] - 1], shape[1] - 1] = bad
        Xb[order[0]] = np.nan
        assert _jitted(E.gather_batch)(Xb, order, 3, xb, y, yb, False, 0, False)
        assert not _jitted(E.gather_batch)(Xb, order, 3, xb, y, yb, True, 0, False)
        assert not _jitted(E.gather_batch)(Xb, order, 3, xbt, y, yb, True, 0, True)
        Xb[order[3 + shape[0] - 1], shape[1] - 1] = 0
        assert _jitted(E.gather_batch)(Xb, order, 3, xb, y, yb, True, 0, False)
        assert _jitted(E.gather_batch)(Xb, order, 3, xbt, y, yb, True, 0, True)


@pytest.mark.parametrize("shape", [(1, 3), (5, 1), (6, 70)])
@pytest.mark.parametrize("code", [IDENT, RELU, LEAKY, SIGMOID, TANH])
def test_bias_act(dtype, rng, shape, code):
    A = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    expected = activation(A.astype(np.float64) + b, code, 0.1)
    E.bias_act(A, b, code, dtype.type(0.1))
    assert_close(A, expected, dtype)
    # feature-major: one bias per row
    AT = rng.standard_normal(shape[::-1]).astype(dtype)
    expected = activation(AT.astype(np.float64) + b[:, None], code, 0.1)
    _jitted(E.bias_act_t)(AT, b, code, dtype.type(0.1))
    assert_close(AT, expected, dtype)


@pytest.mark.parametrize("shape", [(1, 3), (5, 1), (6, 70), (3, 129)])
@pytest.mark.parametrize("code", [IDENT, RELU, LEAKY, SIGMOID, TANH])
def test_mask_and_bias_sums(dtype, rng, shape, code):
    G = rng.standard_normal(shape).astype(dtype)
    A = rng.uniform(-1, 1, shape).astype(dtype)
    if code == SIGMOID:
        A = np.abs(A)
    d = G.astype(np.float64) * _deriv_from_output(A.astype(np.float64), code, 0.1)
    _jitted(E.mask)(G, A, code, dtype.type(0.1))  # in place
    assert_close(G, d, dtype)
    # column sums over a range of columns, written to the start of out (the tail left alone)
    j0, j1 = shape[1] // 3, shape[1]
    db = np.full(shape[1] + 2, 7.0, dtype)
    _jitted(E.col_sums)(G, j0, j1, db)
    assert_close(db[: j1 - j0], d[:, j0:j1].sum(axis=0), dtype, scale=shape[0])
    assert np.all(db[j1 - j0 :] == 7.0)

    # feature-major (units, rows): the sums along rows, added to what out holds
    G = np.ascontiguousarray(G.T)
    db[:] = 7.0
    _jitted(E.row_sums_add)(G, j0, j1, db)
    assert_close(db[: j1 - j0], 7.0 + d[:, j0:j1].sum(axis=0), dtype, scale=shape[0])
    assert np.all(db[j1 - j0 :] == 7.0)


@pytest.mark.parametrize("n, n_in, n_out", [(1, 4, 3), (5, 1, 2), (6, 7, 1), (9, 13, 11)])
def test_small_products(dtype, rng, n, n_in, n_out):
    H = rng.standard_normal((n, n_in)).astype(dtype)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    dZ = rng.standard_normal((n, n_out)).astype(dtype)
    A = np.empty((n, n_out), dtype)
    _jitted(E.small_forward)(H, W, b, TANH, dtype.type(0.0), A)
    assert_close(A, dense_forward(H, W, b, TANH), dtype)
    dW = np.full((n_in, n_out), np.nan, dtype)
    _jitted(E.small_weight_grad)(H, dZ, dW, False)
    assert_close(dW, H.T.astype(np.float64) @ dZ, dtype, scale=n)
    _jitted(E.small_weight_grad)(H, dZ, dW, True)  # accumulates
    assert_close(dW, 2 * (H.T.astype(np.float64) @ dZ), dtype, scale=2 * n)
    dH = np.empty((n, n_in), dtype)
    _jitted(E.small_input_grad)(dZ, W, dH)
    assert_close(dH, dZ.astype(np.float64) @ W.T, dtype, scale=n_out)
    # the same products with the output side feature-major (a softmax layer's logits/delta)
    AT = np.empty((n_out, n), dtype)
    _jitted(E.small_forward)(H, W, b, TANH, dtype.type(0.0), AT.T)
    assert_close(AT, dense_forward(H, W, b, TANH).T, dtype)
    dZT = np.ascontiguousarray(dZ.T)
    dW[...] = np.nan
    _jitted(E.small_weight_grad)(H, dZT.T, dW, False)
    assert_close(dW, H.T.astype(np.float64) @ dZ, dtype, scale=n)
    dH[...] = np.nan
    _jitted(E.small_input_grad)(dZT.T, W, dH)
    assert_close(dH, dZ.astype(np.float64) @ W.T, dtype, scale=n_out)


@pytest.mark.parametrize("n, n_in, n_out", [(1, 4, 3), (5, 1, 2), (6, 7, 1), (19, 13, 11)])
@pytest.mark.parametrize("code", [IDENT, RELU, TANH])
def test_small_products_feature_major(dtype, rng, n, n_in, n_out, code):
    # a feature-major network's blocks are all (units, rows): HT, AT, dZT, dHT, which the
    # compiled loops read and write through their transposed views
    HT = rng.standard_normal((n_in, n)).astype(dtype)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    dZT = rng.standard_normal((n_out, n)).astype(dtype)
    H, dZ = HT.T.astype(np.float64), dZT.T.astype(np.float64)
    AT = np.full((n_out, n), np.nan, dtype)
    _jitted(E.small_forward)(HT.T, W, b, code, dtype.type(0.0), AT.T)
    assert_close(AT, dense_forward(H, W, b, code).T, dtype)
    dW = np.full((n_in, n_out), np.nan, dtype)
    _jitted(E.small_weight_grad)(HT.T, dZT.T, dW, False)
    assert_close(dW, H.T @ dZ, dtype, scale=n)
    _jitted(E.small_weight_grad)(HT.T, dZT.T, dW, True)  # accumulates
    assert_close(dW, 2 * (H.T @ dZ), dtype, scale=2 * n)
    dHT = np.full((n_in, n), np.nan, dtype)
    _jitted(E.small_input_grad)(dZT.T, W, dHT.T)
    assert_close(dHT, (dZ @ W.T).T, dtype, scale=n_out)


@pytest.mark.parametrize("m, k", [(1, 2), (6, 1), (9, 5), (37, 3)])
def test_loss_rows(dtype, rng, m, k):
    Z = (3 * rng.standard_normal((m, k))).astype(dtype)
    yb = rng.integers(0, k, m).astype(np.int64)
    if k > 1:
        Z[0, :2] = Z[0, 1]  # a tie: the first maximum counts
    # the softmax takes its logits feature-major, (classes, rows); the rows may be part of a
    # larger batch, whose size scales the gradient
    batch = m + 3
    dZT = np.empty((k, m), dtype)
    scratch = np.full((2, m), np.nan, dtype)
    best = np.empty(m, np.int64)
    ZT = np.ascontiguousarray(Z.T)
    total, correct = _jitted(E.softmax_xent_cols)(ZT, yb, dZT, batch, scratch[0], scratch[1], best)
    Z64 = Z.astype(np.float64)
    P = np.exp(Z64 - Z64.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    assert_close(total, -np.log(P[np.arange(m), yb]).sum(), dtype, scale=m)
    assert correct == np.sum(Z.argmax(axis=1) == yb)
    assert_close(dZT.T, (P - one_hot(yb, k)) / batch, dtype)

    dZ = np.empty((m, k), dtype)
    T = rng.standard_normal((m, k)).astype(dtype)
    total, correct = _jitted(E.mse_rows)(Z, T, dZ, batch)
    diff = Z64 - T
    assert_close(total, (diff**2).mean() * m, dtype, scale=m)
    assert correct == 0
    assert_close(dZ, 2 * diff / (batch * k), dtype)


# -- fast path against the layer-by-layer path ------------------------------------------------
ARCHS = {
    # (layers, loss): hidden activations, a layer without bias, a final activation, and widths
    # large enough that some products go to BLAS (batch 16 x 48 x 48 > SMALL_WORK).
    "relu": (lambda dt: [fnn.Linear(7, 5, dtype=dt, seed=0), fnn.ReLU(),
                         fnn.Linear(5, 3, dtype=dt, seed=1)], "xent"),
    "mixed": (lambda dt: [fnn.Linear(6, 9, dtype=dt, seed=0), fnn.Tanh(),
                          fnn.Linear(9, 4, bias=False, dtype=dt, seed=1), fnn.LeakyReLU(0.2),
                          fnn.Linear(4, 3, dtype=dt, seed=2)], "xent"),
    "blas": (lambda dt: [fnn.Linear(48, 48, dtype=dt, seed=0), fnn.ReLU(),
                         fnn.Linear(48, 48, dtype=dt, seed=1), fnn.Sigmoid(),
                         fnn.Linear(48, 4, dtype=dt, seed=2)], "xent"),
    "mse": (lambda dt: [fnn.Linear(5, 8, dtype=dt, seed=0), fnn.ReLU(),
                        fnn.Linear(8, 2, bias=False, dtype=dt, seed=1), fnn.Sigmoid()], "mse"),
}  # fmt: skip

OPTIMIZERS = {
    "sgd": lambda p: fnn.SGD(p, lr=0.05),
    "nesterov": lambda p: fnn.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "dampening": lambda p: fnn.SGD(p, lr=0.05, momentum=0.8, dampening=0.3),
    "adam": lambda p: fnn.Adam(p, lr=0.01, weight_decay=1e-3),
    "adamw": lambda p: fnn.AdamW(p, lr=0.01),
}


def _data(arch, dtype, n=53):
    rng = np.random.default_rng(7)
    layers, loss = ARCHS[arch]
    n_in = layers(dtype)[0].n_in
    X = rng.standard_normal((n, n_in)).astype(dtype)
    if loss == "xent":
        n_out = fnn.Sequential(*layers(dtype)).n_out
        return X, rng.integers(0, n_out, n), fnn.SoftmaxCrossEntropy
    return X, rng.uniform(0, 1, (n, 2)).astype(dtype), fnn.MSELoss


def _fit(arch, opt_name, dtype, fast, batch_size=16, epochs=2, monkeypatch=None):
    monkeypatch.setattr(_fastpath, "ENABLED", fast)
    X, y, loss_cls = _data(arch, dtype)
    model = fnn.Sequential(*ARCHS[arch][0](dtype))
    opt = OPTIMIZERS[opt_name](model.parameters())
    hist = model.fit(
        X, y, loss=loss_cls(), optimizer=opt, epochs=epochs, batch_size=batch_size, seed=3,
        verbose=0,
    )  # fmt: skip
    return model, opt, hist


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize(
    "batch_size, chunks, layout",
    [(b, c, lay) for b, c in [(16, 1), (13, 1), (16, 2), (13, 3)] for lay in ("rows", "features")]
    + [(16, 2, "units"), (13, 3, "units")],
)
def test_fast_path_matches_layer_path(
    dtype, arch, opt_name, batch_size, chunks, layout, monkeypatch
):
    # 53 samples in batches of 16 (a last batch of 5) or 13 (a last batch of one row, which
    # takes the compiled loops instead of BLAS), two epochs.  chunks > 1 forces a parallel
    # build: rows split across threads (train_batches_parallel), or with layout "units" the
    # hidden layers split by units (train_batches_units), the updates split by parameter in
    # both; with 3 chunks on two threads one thread runs two, the one-row batch leaves row
    # chunks empty, and 3 chunks of a 4-unit layer get 1, 1 and 2 units.  layout forces
    # row-major or feature-major blocks (feature_major_for) in every network.
    monkeypatch.setattr(_fastpath, "chunks_for", lambda *args: chunks)
    monkeypatch.setattr(_fastpath, "feature_major_for", lambda *args: layout == "features")
    monkeypatch.setattr(_fastpath, "units_split_for", lambda *args: layout == "units")
    fast, fopt, fh = _fit(arch, opt_name, dtype, True, batch_size, monkeypatch=monkeypatch)
    slow, sopt, sh = _fit(arch, opt_name, dtype, False, batch_size, monkeypatch=monkeypatch)
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(fast._flat.data, slow._flat.data, rtol=rtol, atol=rtol)
    for fs, ss in zip(fopt.state, sopt.state, strict=True):
        for key in fs:
            np.testing.assert_allclose(fs[key], ss[key], rtol=rtol, atol=rtol)
    assert fopt.step_count == sopt.step_count == 2 * -(-53 // batch_size)
    np.testing.assert_allclose(fh.history["loss"], sh.history["loss"], rtol=1e-5)
    if "accuracy" in sh.history:
        assert fh.history["accuracy"] == sh.history["accuracy"]


def test_fast_runner_is_used_and_chunks_add_up(monkeypatch):
    """run() over sub-ranges of batches (as the progress bar calls it) equals one run."""
    monkeypatch.setattr(_fastpath, "ENABLED", True)
    dt = np.dtype(np.float32)
    X, y, _ = _data("mixed", dt)
    results = []
    for chunks in ([(0, 4)], [(0, 1), (1, 3), (3, 4)]):
        model = fnn.Sequential(*ARCHS["mixed"][0](dt))
        opt = fnn.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loss = fnn.SoftmaxCrossEntropy()
        runner = make_runner(model, X, y, y, loss, opt, 16)
        assert isinstance(runner, _fastpath.FastEpochRunner)
        assert runner.n_batches == 4
        order = np.random.default_rng(0).permutation(X.shape[0]).astype(np.int64)
        total, correct = 0.0, 0
        for first, last in chunks:
            s, c, finite = runner.run(order, first, last)
            assert finite
            total, correct = total + s, correct + c
        results.append((model._flat.data.copy(), total, correct, opt.step_count))
    (p1, t1, c1, s1), (p2, t2, c2, s2) = results
    np.testing.assert_array_equal(p1, p2)
    assert t1 == pytest.approx(t2, rel=1e-12) and c1 == c2 and s1 == s2 == 4


def test_unsupported_setups_use_the_layer_path(monkeypatch):
    monkeypatch.setattr(_fastpath, "ENABLED", True)
    dt = np.dtype(np.float32)
    X, y, _ = _data("relu", dt)
    model = fnn.Sequential(*ARCHS["relu"][0](dt))
    sgd = fnn.SGD(model.parameters(), lr=0.1)
    xent = fnn.SoftmaxCrossEntropy()
    T = one_hot(y, 3).astype(dt)
    cases = [
        (model, X, T, y, xent, sgd, None),  # one-hot targets
        (model, X, y, y, fnn.CrossEntropy(), sgd, None),  # loss on probabilities
        (model, X, y, y, xent, fnn.SGD(model.parameters()[:2], lr=0.1), None),  # part of it
        (model, X, y, y, xent, sgd, np.ones(X.shape[0], dt)),  # sample weights
        (fnn.Sequential(fnn.Linear(7, 3, dtype=dt), fnn.Softmax()), X, y, y, xent, sgd, None),
    ]
    for m, Xc, yc, lc, loss, opt, sw in cases:
        assert isinstance(make_runner(m, Xc, yc, lc, loss, opt, 16, sw), EpochRunner)


@pytest.mark.parametrize("build", ["serial", "rows", "units"])
def test_divergence_keeps_last_good_parameters(monkeypatch, build):
    monkeypatch.setattr(_fastpath, "ENABLED", True)
    monkeypatch.setattr(_fastpath, "chunks_for", lambda *args: 1 if build == "serial" else 2)
    monkeypatch.setattr(_fastpath, "units_split_for", lambda *args: build == "units")
    dt = np.dtype(np.float32)
    X, y, _ = _data("relu", dt)
    X[5:] *= 1e30  # huge inputs: the first step's update overflows and the loss goes inf
    model = fnn.Sequential(*ARCHS["relu"][0](dt))
    before = model._flat.data.copy()
    opt = fnn.SGD(model.parameters(), lr=1e10)
    with pytest.raises(fnn.TrainingDivergedError):
        model.fit(X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, epochs=3, verbose=0)
    np.testing.assert_array_equal(model._flat.data, before)
    assert opt.step_count == 0


# -- fast path against a NumPy training loop (no fastnn kernel involved) ---------------------
def _numpy_epoch(Ws, bs, X, y, order, batch, lr, momentum):
    """One epoch of SGD with momentum for a ReLU MLP with softmax cross-entropy, in float64."""
    Ws = [W.astype(np.float64) for W in Ws]
    bs = [b.astype(np.float64) for b in bs]
    bufs = [None] * (2 * len(Ws))
    for start in range(0, X.shape[0], batch):
        idx = order[start : start + batch]
        hs = [X[idx].astype(np.float64)]
        for k, (W, b) in enumerate(zip(Ws, bs, strict=True)):
            z = hs[-1] @ W + b
            hs.append(np.maximum(z, 0) if k < len(Ws) - 1 else z)
        P = np.exp(hs[-1] - hs[-1].max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        dZ = (P - one_hot(y[idx], P.shape[1])) / len(idx)
        grads = [None] * (2 * len(Ws))
        for k in range(len(Ws) - 1, -1, -1):
            grads[2 * k] = hs[k].T @ dZ
            grads[2 * k + 1] = dZ.sum(axis=0)
            dZ = (dZ @ Ws[k].T) * (hs[k] > 0)
        params = [p for W, b in zip(Ws, bs, strict=True) for p in (W, b)]
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            bufs[i] = g.copy() if bufs[i] is None else momentum * bufs[i] + g
            p -= lr * bufs[i]
    return Ws, bs


def test_fast_path_matches_numpy_training_loop(dtype, monkeypatch):
    monkeypatch.setattr(_fastpath, "ENABLED", True)
    rng = np.random.default_rng(11)
    X = rng.standard_normal((70, 40)).astype(dtype)
    y = rng.integers(0, 5, 70)
    model = fnn.Sequential(
        fnn.Linear(40, 50, dtype=dtype, seed=0), fnn.ReLU(), fnn.Linear(50, 5, dtype=dtype, seed=1)
    )
    Ws = [model.layers[0].weight.data.copy(), model.layers[2].weight.data.copy()]
    bs = [model.layers[0].bias.data.copy(), model.layers[2].bias.data.copy()]
    order = np.random.default_rng([5, 0]).permutation(70)
    runner = make_runner(
        model, X, y, y, fnn.SoftmaxCrossEntropy(),
        fnn.SGD(model.parameters(), lr=0.1, momentum=0.9), 32,
    )  # fmt: skip
    assert isinstance(runner, _fastpath.FastEpochRunner)
    runner.run(order.astype(np.int64), 0, runner.n_batches)
    Ws_ref, bs_ref = _numpy_epoch(Ws, bs, X, y, order, 32, 0.1, 0.9)
    for layer, W, b in zip((model.layers[0], model.layers[2]), Ws_ref, bs_ref, strict=True):
        assert_close(layer.weight.data, W, dtype, scale=10)
        assert_close(layer.bias.data, b, dtype, scale=10)


@pytest.mark.parametrize("units", [False, True])
def test_data_parallel_fit_restores_blas_threads(monkeypatch, units):
    """The parallel builds set BLAS to one thread around the kernel call; afterwards every
    BLAS library has its thread count back, also when the fit stops with an error."""
    from threadpoolctl import threadpool_info

    monkeypatch.setattr(_fastpath, "ENABLED", True)
    monkeypatch.setattr(_fastpath, "chunks_for", lambda *args: 2)
    monkeypatch.setattr(_fastpath, "units_split_for", lambda *args: units)
    before = fnn.get_num_threads()
    fnn.set_num_threads(2)
    try:
        want = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        _fit("blas", "sgd", np.dtype(np.float32), True, monkeypatch=monkeypatch)
        got = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        assert got == want
        # X larger than the gradients, so the first epoch's gather finds the NaN inside the
        # kernel call (not the up-front check) and fit raises after the call
        X, y, _ = _data("blas", np.dtype(np.float32), n=2000)
        X[1500, 3] = np.nan
        model = fnn.Sequential(*ARCHS["blas"][0](np.float32))
        opt = fnn.SGD(model.parameters(), lr=0.1)
        with pytest.raises(ValueError, match="NaN or inf"):
            model.fit(X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, epochs=1, verbose=0)
        got = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        assert got == want
    finally:
        fnn.set_num_threads(before)


def test_build_choice():
    """Which build ``fit`` runs, for the bench's shapes and the edges of the rules recorded in
    fastnn/_fastpath.py (rows, threads): serial (1), split by rows (2) or by units (2, True)."""
    cases = [
        ([784, 100, 10], 64, 2, (2, False)),
        ([784, 100, 10], 64, 1, (1, False)),  # one thread: always serial
        ([784, 512, 512, 10], 256, 2, (2, False)),
        ([784, 1024, 1024, 1024, 10], 512, 2, (2, True)),
        ([784, 2048, 10], 256, 2, (2, True)),  # one large hidden layer
        ([64, 64, 20000], 64, 2, (1, False)),  # only the output layer is large
        ([4, 6, 8, 10, 3], 150, 2, (1, False)),  # too little work per step
        ([784, 1024, 1024, 10], 8, 2, (1, True)),  # too few rows per thread
    ]
    for sizes, batch, threads, expected in cases:
        got = (_fastpath.chunks_for(sizes, batch, 10**5, threads), _fastpath.units_split_for(sizes))
        assert got == expected, (sizes, batch, threads)


# -- a cold cache: the serial build stands in while a helper compiles the parallel one ----------


def _stand_in_fit(monkeypatch, ready_after, loss="xent", units=False):
    """A fit on a parallel build (2 chunks per step, 2 threads; data-parallel, or split by
    units) whose parallel build "is being compiled by a helper" until ``ready_after`` checks
    have been made (None: it is ready from the start); returns the parameters and the
    kernels each chunk ran."""
    checks = []

    def fake_background(dispatcher, sig):
        return lambda: len(checks) > ready_after

    real = _fastpath.FastEpochRunner._parallel_build
    used = []

    def spy(self, parallel, serial, args):
        checks.append(1)
        kernel, sig, start = real(self, parallel, serial, args)
        used.append(kernel)
        return kernel, sig, start

    monkeypatch.setattr(_fastpath, "STAND_IN", True)  # (the bench's and asv's tests turn it off)
    monkeypatch.setattr(_fastpath, "chunks_for", lambda *args: 2)
    monkeypatch.setattr(_fastpath, "units_split_for", lambda sizes: units)
    monkeypatch.setattr(_fastpath, "cached", lambda dispatcher, sig: ready_after is None)
    monkeypatch.setattr(_fastpath, "can_background", lambda dispatcher, sig: True)
    monkeypatch.setattr(_fastpath, "background", fake_background)
    monkeypatch.setattr(_fastpath.FastEpochRunner, "_parallel_build", spy)
    monkeypatch.setattr(_fastpath, "_BACKGROUND", {})
    rng = np.random.default_rng(7)
    X = rng.standard_normal((700, 24)).astype(np.float32)
    model = fnn.Sequential(
        fnn.Linear(24, 40, seed=0), fnn.Tanh(), fnn.Linear(40, 36, seed=2), fnn.ReLU(),
        fnn.Linear(36, 5, seed=1),
    )  # fmt: skip
    if loss == "xent":
        y, lossfn = rng.integers(0, 5, 700), fnn.SoftmaxCrossEntropy()
    else:
        y, lossfn = rng.standard_normal((700, 5)).astype(np.float32), fnn.MSELoss()
    opt = fnn.Adam(model.parameters(), lr=1e-2)
    before = fnn.get_num_threads()
    fnn.set_num_threads(2)
    try:
        model.fit(X, y, loss=lossfn, optimizer=opt, epochs=6, batch_size=64, seed=3, verbose=0)
    finally:
        fnn.set_num_threads(before)
    return [p.data.copy() for p in model.parameters()], used


@pytest.mark.parametrize(
    "loss,units,parallel,serial",
    [
        ("xent", False, E.train_batches_parallel, E.train_batches),
        ("mse", False, E.train_batches_parallel, E.train_batches),
        ("xent", True, E.train_batches_units, E.train_batches_units_serial),
        ("mse", True, E.train_batches_units, E.train_batches_units_serial),
    ],
    ids=["rows-xent", "rows-mse", "units-xent", "units-mse"],
)
def test_serial_stand_in_gives_the_parallel_builds_parameters_bit_for_bit(
    monkeypatch, loss, units, parallel, serial
):
    """Chunks run by the serial build (same body, same chunks) while the parallel build "is
    compiled", then by the parallel build: the parameters equal those of a fit that ran the
    parallel build throughout, bit for bit."""
    ran_parallel, used_p = _stand_in_fit(monkeypatch, None, loss, units)
    assert used_p and all(k is parallel for k in used_p)
    mixed, used_m = _stand_in_fit(monkeypatch, 2, loss, units)
    assert used_m[0] is serial and used_m[-1] is parallel
    for a, b in zip(ran_parallel, mixed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_no_stand_in_without_a_helper(monkeypatch):
    """Where no helper can compile it (helpers off, read-only cache), the parallel build runs
    from the first chunk, as before."""
    monkeypatch.setattr(_fastpath, "can_background", lambda dispatcher, sig: False)
    monkeypatch.setattr(_fastpath, "cached", lambda dispatcher, sig: False)
    monkeypatch.setattr(_fastpath, "_BACKGROUND", {})
    runner = _fastpath.FastEpochRunner.__new__(_fastpath.FastEpochRunner)
    runner._ready = set()
    args = (np.zeros((2, 2), np.float32), 1)
    kernel, _, start = runner._parallel_build(E.train_batches_parallel, E.train_batches, args)
    assert kernel is E.train_batches_parallel and not start


def test_warmup_compiles_parallel_builds_without_a_stand_in(monkeypatch):
    """``fastnn.warmup`` is there to fill the cache, parallel builds included: its fits run
    with the stand-in off, which it turns back on afterwards (also when a group raises)."""
    seen = []

    def group():
        seen.append(_fastpath.STAND_IN)

    def failing():
        raise RuntimeError("boom")

    monkeypatch.setattr(_fastpath, "STAND_IN", True)
    monkeypatch.setattr(_warmup, "groups", lambda all=False: [("g", group)])
    fnn.warmup()
    assert seen == [False] and _fastpath.STAND_IN is True
    monkeypatch.setattr(_warmup, "groups", lambda all=False: [("g", failing)])
    with pytest.raises(RuntimeError):
        fnn.warmup()
    assert _fastpath.STAND_IN is True


def test_an_interrupted_first_stand_in_chunk_leaves_nothing_pending(monkeypatch):
    """Ctrl-C in the first chunk run by the serial stand-in: no helper is started and nothing
    stays pending, so a later fit decides again (and does not run the stand-in forever)."""
    started = []
    monkeypatch.setattr(_fastpath, "STAND_IN", True)
    monkeypatch.setattr(_fastpath, "chunks_for", lambda *args: 2)
    monkeypatch.setattr(_fastpath, "cached", lambda dispatcher, sig: False)
    monkeypatch.setattr(_fastpath, "can_background", lambda dispatcher, sig: True)
    monkeypatch.setattr(_fastpath, "background", lambda d, s: started.append(1) or (lambda: True))
    monkeypatch.setattr(_fastpath, "_BACKGROUND", {})
    runner = _fastpath.FastEpochRunner.__new__(_fastpath.FastEpochRunner)
    runner._ready = set()
    args = (np.zeros((2, 2), np.float32), 1)
    kernel, sig, start = runner._parallel_build(E.train_batches_parallel, E.train_batches, args)
    assert kernel is E.train_batches and start
    assert _fastpath._BACKGROUND  # pending until the chunk returns

    def interrupted(self, driver, args):
        raise KeyboardInterrupt

    monkeypatch.setattr(_fastpath.FastEpochRunner, "_invoke", interrupted)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 8)).astype(np.float32)
    y = rng.integers(0, 3, 256)
    model = fnn.Sequential(fnn.Linear(8, 16, seed=0), fnn.ReLU(), fnn.Linear(16, 3, seed=1))
    monkeypatch.setattr(_fastpath, "_BACKGROUND", {})
    before = fnn.get_num_threads()
    fnn.set_num_threads(2)
    try:
        model.fit(X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=fnn.SGD(model.parameters(),
                  lr=0.1), epochs=1, batch_size=64, verbose=0)  # fmt: skip
    finally:
        fnn.set_num_threads(before)
    assert _fastpath._BACKGROUND == {} and started == []


# -- the drivers call their passes by address (kernels._by_address.call_at) --------------------
@numba.njit
def _doubled_sum(a, k):
    if k < 0:
        raise ValueError("k must be at least 0")
    for i in range(a.shape[0]):
        a[i] *= 2
    return a.sum() + k


@numba.njit
def _through_address(pointers, a, k):
    return call_at(pointers, 0, _doubled_sum, a, k)


def _address_of(kernel, argtypes, check=None):
    kernel.compile(argtypes)
    cres = kernel.overloads[argtypes]
    address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
    if check is None:
        check = signature_check(kernel.py_func.__qualname__, cres.signature)
    return np.array([address, check], np.int64)


def test_call_at_calls_the_build_at_the_address_and_passes_its_exceptions_on():
    a = np.arange(4.0)
    pointers = _address_of(_doubled_sum, (numba.typeof(a), numba.types.int64))
    assert _through_address(pointers, a, 1) == 13.0
    np.testing.assert_array_equal(a, [0.0, 2.0, 4.0, 6.0])
    with pytest.raises(ValueError, match="at least 0"):
        _through_address(pointers, a, -1)


@numba.njit
def _tripled_sum(a, k):
    for i in range(a.shape[0]):
        a[i] *= 3
    return a.sum() + k


def test_call_at_refuses_an_address_of_another_build():
    """An address whose check names other argument types (here the float32 build's) or
    another function (of the same types) is never called: the caller raises instead."""
    a = np.arange(4.0)
    other = (numba.types.Array(numba.types.float32, 1, "C"), numba.types.int64)
    same = (numba.typeof(a), numba.types.int64)
    for pointers in (_address_of(_doubled_sum, other), _address_of(_tripled_sum, same)):
        with pytest.raises(RuntimeError, match="another build"):
            _through_address(pointers, a, 1)
        np.testing.assert_array_equal(a, np.arange(4.0))  # nothing ran


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("driver", ["train_batches", "train_batches_units_serial"])
def test_each_pass_is_built_for_the_types_its_driver_calls_it_with(driver, dtype):
    """``epoch.pass_types`` gives every pass the argument types the driver's call has: the
    checks the driver was compiled with equal those of the builds ``Driver.pointers`` found
    (a mismatch raises RuntimeError at the first step), and each pass has one build for them."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)).astype(dtype)
    y = rng.integers(0, 3, 64)
    model = fnn.Sequential(
        fnn.Linear(5, 8, dtype=dtype, seed=0), fnn.ReLU(), fnn.Linear(8, 3, dtype=dtype, seed=1)
    )
    opt = fnn.SGD(model.parameters(), lr=0.1)
    runner = _fastpath.fast_runner(model, X, y, 0, fnn.SoftmaxCrossEntropy(), opt, 16)
    assert runner is not None
    kernel = getattr(E, driver)
    runner.feature_major = False  # (the units driver's blocks are row-major)
    args = runner._args(np.arange(64), 0, 2, 1)
    runner._invoke(kernel, args)  # raises on a mismatch
    sig = kernel.signature(args)
    for p in kernel.passes:
        argtypes = E.pass_types(p, sig[1:])
        assert argtypes in p.overloads
