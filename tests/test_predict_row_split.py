"""predict split by rows across the threads (``fastnn.kernels.inference``, ``FastForward``).

The kernel against a float64 NumPy forward pass written here, its parallel build against its
serial build (the same operations per share, so bit for bit), and ``Sequential.predict`` and
the drop-ins' predictions on the split path against the layer-by-layer path.  Speed is
measured by ``python -m fastnn bench --mixed``, not here.
"""

import numpy as np
import pytest
from conftest import assert_close, quiet
from fastnn.kernels import inference as I
from fastnn.kernels.activations import CODES

import fastnn as fnn
from fastnn import _fastpath
from fastnn.sklearn import MLPClassifier, MLPRegressor


def _reference(X, Ws, bs, acts):
    """The network's output in float64, NumPy only."""
    f = {
        "relu": lambda z: np.maximum(z, 0),
        "tanh": np.tanh,
        "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
        "leaky_relu": lambda z: np.where(z > 0, z, 0.1 * z),
        "identity": lambda z: z,
    }
    H = X.astype(np.float64)
    for W, b, act in zip(Ws, bs, acts, strict=True):
        H = H @ W.astype(np.float64)
        if b is not None:
            H = H + b.astype(np.float64)
        H = f[act](H)
    return H


def _network(sizes, dtype, acts, biases, seed=0):
    """Random weights packed the way the kernel reads them: all in one flat buffer, weights
    and biases interleaved, a bias of None for a layer without one."""
    rng = np.random.default_rng(seed)
    Ws = [
        (rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    bs = [
        rng.standard_normal(b).astype(dtype) if has else None
        for b, has in zip(sizes[1:], biases, strict=True)
    ]
    parts, w_off, b_off, off = [], [], [], 0
    for W, b in zip(Ws, bs, strict=True):
        w_off.append(off)
        parts.append(W.ravel())
        off += W.size
        if b is None:
            b_off.append(-1)
        else:
            b_off.append(off)
            parts.append(b)
            off += b.size
    params = np.concatenate(parts)
    codes = [CODES[a] for a in acts]
    alphas = [0.1 if a == "leaky_relu" else 0.0 for a in acts]
    return Ws, bs, params, w_off, b_off, codes, alphas


def _run(kernel, X, net, sizes, chunks, block, check_first=False):
    _, _, params, w_off, b_off, codes, alphas = net
    dtype = X.dtype
    hidden = max(sizes[1:-1], default=0)
    out = np.full((X.shape[0], sizes[-1]), np.nan, dtype)
    work = np.full((chunks, 2 * block * hidden), np.nan, dtype)
    flags = np.zeros(chunks, np.uint8)
    kernel(
        X, params, np.array(sizes, np.int64), np.array(w_off, np.int64),
        np.array(b_off, np.int64), np.array(codes, np.int64), np.array(alphas, np.float64),
        np.zeros(max(sizes), dtype), check_first, chunks, block, work, out, flags,
    )  # fmt: skip
    return out, flags


CASES = [
    # sizes, activations, biases, rows, chunks, block
    ((20, 16, 5), ("relu", "identity"), (True, True), 101, 2, 16),
    ((12, 30, 30, 30, 4), ("tanh", "sigmoid", "leaky_relu", "identity"),
     (True, False, True, True), 77, 3, 8),
    # wide hidden layers (numba's parallel build got some networks wrong with the share's
    # body inlined in it: kernels.inference.forward_share)
    ((40, 1024, 1024, 7), ("relu", "relu", "identity"), (True, True, False), 66, 2, 20),
    ((9, 3), ("sigmoid",), (False,), 50, 2, 64),  # one layer, no hidden activations at all
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=["one-hidden", "mixed", "wide", "single-layer"])
def test_kernel_matches_numpy_and_its_serial_build(case, dtype):
    sizes, acts, biases, rows, chunks, block = case
    net = _network(sizes, dtype, acts, biases)
    X = np.random.default_rng(1).standard_normal((rows, sizes[0])).astype(dtype)
    parallel, flags = _run(I.forward_rows_parallel, X, net, sizes, chunks, block)
    serial, _ = _run(I.forward_rows, X, net, sizes, chunks, block)
    assert_close(parallel, _reference(X, net[0], net[1], acts), dtype, scale=10)
    np.testing.assert_array_equal(parallel, serial)
    assert not flags.any()  # not asked to check: left alone
    # one share and one block: the same values, the same operations per row
    whole, _ = _run(I.forward_rows_parallel, X, net, sizes, 1, rows)
    assert_close(whole, _reference(X, net[0], net[1], acts), dtype, scale=10)


def test_kernel_flags_the_share_whose_rows_are_not_finite():
    sizes, acts = (16, 8, 3), ("tanh", "identity")
    net = _network(sizes, np.float32, acts, (True, True))
    X = np.random.default_rng(2).standard_normal((90, 16)).astype(np.float32)
    _, flags = _run(I.forward_rows_parallel, X, net, sizes, 3, 7, check_first=True)
    assert flags.tolist() == [0, 0, 0]
    X[65, 4] = np.inf  # rows 60..89 are the third share; tanh(inf) would hide it downstream
    out, flags = _run(I.forward_rows_parallel, X, net, sizes, 3, 7, check_first=True)
    assert flags.tolist() == [0, 0, 1]
    keep = np.arange(90) != 65
    assert_close(out[keep], _reference(X[keep], net[0], net[1], acts), np.float32, scale=10)


@pytest.fixture
def two_threads(monkeypatch):
    """Two threads, and the parallel build compiled by the call itself (no stand-in)."""
    monkeypatch.setattr(_fastpath, "STAND_IN", False)
    before = fnn.get_num_threads()
    fnn.set_num_threads(2)
    yield
    fnn.set_num_threads(before)


def _spy(monkeypatch):
    """Count the calls of the split path that ran the kernel."""
    ran = []
    real = _fastpath.FastForward.run

    def run(self, *args, **kw):
        result = real(self, *args, **kw)
        ran.append(result)
        return result

    monkeypatch.setattr(_fastpath.FastForward, "run", run)
    return ran


def _layered(model, X, monkeypatch):
    """The layer-by-layer predict of the same model (the split switched off)."""
    with monkeypatch.context() as m:
        m.setattr(_fastpath, "ROW_SPLIT_MIN_WORK", 1 << 62)
        return model.predict(X)


def test_sequential_predict_splits_rows_and_agrees(two_threads, monkeypatch, dtype):
    ran = _spy(monkeypatch)
    model = fnn.Sequential(
        fnn.Linear(30, 64, seed=0, dtype=dtype), fnn.ReLU(),
        fnn.Linear(64, 900, seed=1, dtype=dtype), fnn.Sigmoid(),
        fnn.Linear(900, 5, seed=2, dtype=dtype, bias=False),
    )  # fmt: skip
    X = np.random.default_rng(3).standard_normal((1000, 30)).astype(dtype)
    out = model.predict(X, batch_size=96)
    assert ran == [True]
    assert_close(out, _layered(model, X, monkeypatch), dtype, scale=10)
    # the parameters are read at each call, trained or edited in place
    model.layers[-1].weight.data[...] *= -1
    np.testing.assert_allclose(model.predict(X), -out, rtol=1e-6)
    # a parameter whose .data is rebound is no longer in the flat buffer: layer by layer
    model.layers[0].weight.data = model.layers[0].weight.data * 0
    ran.clear()
    rebound = model.predict(X)
    assert ran == []
    assert_close(rebound, _layered(model, X, monkeypatch), dtype, scale=10)


def test_models_sharing_layers_read_the_current_buffer(two_threads, monkeypatch):
    """A second Sequential built on the same layers takes them into its own flat buffer; the
    first model's predict must follow them there."""
    ran = _spy(monkeypatch)
    lin1, lin2 = fnn.Linear(50, 80, seed=0), fnn.Linear(80, 4, seed=1)
    first = fnn.Sequential(lin1, fnn.ReLU(), lin2)
    X = np.random.default_rng(4).standard_normal((600, 50)).astype(np.float32)
    before = first.predict(X)
    second = fnn.Sequential(lin1, fnn.ReLU(), lin2)
    lin2.weight.data[...] = 0
    lin2.bias.data[...] = 1
    np.testing.assert_array_equal(first.predict(X), 1.0)
    np.testing.assert_array_equal(second.predict(X), 1.0)
    assert ran == [True, True, True] and not np.all(before == 1.0)


def test_non_finite_rows_are_refused_and_overflow_is_not(two_threads, monkeypatch):
    ran = _spy(monkeypatch)
    # narrowing first layer: X is checked through its pre-activations (check_first)
    model = fnn.Sequential(fnn.Linear(200, 40, seed=0), fnn.Tanh(), fnn.Linear(40, 3, seed=1))
    X = np.random.default_rng(5).standard_normal((500, 200)).astype(np.float32)
    X[433, 17] = -np.inf
    with pytest.raises(ValueError, match="X"):
        model.predict(X)
    assert ran == [False]
    # finite X whose products overflow float32: the model's doing, returned as computed
    model.layers[0].weight.data[...] = 1.0
    X = np.full((500, 200), 3e38, np.float32)
    out = model.predict(X)
    assert ran[-1] is False and np.isfinite(out).all()  # tanh(inf) is 1
    # a widening first layer checks X itself, before any work
    wide = fnn.Sequential(fnn.Linear(10, 400, seed=0), fnn.ReLU(), fnn.Linear(400, 3, seed=1))
    X = np.random.default_rng(6).standard_normal((500, 10)).astype(np.float32)
    X[3, 3] = np.nan
    ran.clear()
    with pytest.raises(ValueError, match="X"):
        wide.predict(X)
    assert ran == []


def test_one_thread_and_small_inputs_stay_layer_by_layer(monkeypatch):
    monkeypatch.setattr(_fastpath, "STAND_IN", False)
    ran = _spy(monkeypatch)
    model = fnn.Sequential(fnn.Linear(64, 64, seed=0), fnn.ReLU(), fnn.Linear(64, 10, seed=1))
    X = np.random.default_rng(7).standard_normal((2000, 64)).astype(np.float32)
    before = fnn.get_num_threads()
    try:
        fnn.set_num_threads(1)
        model.predict(X)
        fnn.set_num_threads(2)
        model.predict(X[:100])  # 100 x 4736 multiply-adds: below ROW_SPLIT_MIN_WORK
        model.predict(X[:15])  # fewer than 8 rows per thread
        assert ran == []
        model.predict(X[:300])
        assert ran == [True]
    finally:
        fnn.set_num_threads(before)


@pytest.mark.parametrize(
    "sizes, batch_size",
    [((64, 128, 10), 4096), ((64, 32, 4, 3), 16)],  # 8-row blocks: the 4x3 layer loops
    ids=["blas", "small-products"],
)
def test_stand_in_while_a_helper_compiles(monkeypatch, dtype, sizes, batch_size):
    """A cold cache: the first split predict runs the stand-in (the same kernel calls on the
    same blocks, in Python) and then starts a helper for the parallel build; once the helper
    has ended, the parallel build runs (loading what it compiled), with the same bits."""
    started, done, calls = [], [False], []

    def fake_background(dispatcher, sig):
        started.append((dispatcher, sig))
        return lambda: done[0]

    real_stand_in = _fastpath.FastForward._stand_in

    def stand_in(self, *args):
        calls.append("stand-in")
        return real_stand_in(self, *args)

    monkeypatch.setattr(_fastpath, "STAND_IN", True)
    monkeypatch.setattr(_fastpath, "_READY", set())
    monkeypatch.setattr(_fastpath, "_BACKGROUND", {})
    monkeypatch.setattr(_fastpath, "cached", lambda dispatcher, sig: False)
    monkeypatch.setattr(_fastpath, "can_background", lambda dispatcher, sig: True)
    monkeypatch.setattr(_fastpath, "background", fake_background)
    monkeypatch.setattr(_fastpath.FastForward, "_stand_in", stand_in)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers += [fnn.Linear(a, b, seed=i, dtype=dtype), fnn.Tanh()]
    model = fnn.Sequential(*layers[:-1])
    X = np.random.default_rng(8).standard_normal((1000, sizes[0])).astype(dtype)
    before = fnn.get_num_threads()
    try:
        fnn.set_num_threads(2)
        first = model.predict(X, batch_size=batch_size)
        assert calls == ["stand-in"] and len(started) == 1  # started after the call
        assert started[0][0] is I.forward_rows_parallel
        second = model.predict(X, batch_size=batch_size)
        assert calls == ["stand-in"] * 2 and len(started) == 1
        done[0] = True
        third = model.predict(X, batch_size=batch_size)
        assert calls == ["stand-in"] * 2 and len(started) == 1  # the parallel build ran
    finally:
        fnn.set_num_threads(before)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(third, first)  # the same kernel calls on the same rows
    # and the NaN check of the stand-in: a narrowing first layer reads X through its product
    if sizes[1] < sizes[0]:
        X[999, 0] = np.nan
        monkeypatch.setattr(_fastpath, "_READY", set())
        monkeypatch.setattr(_fastpath, "_BACKGROUND", {})
        fnn.set_num_threads(2)
        try:
            with pytest.raises(ValueError, match="X"):
                model.predict(X, batch_size=batch_size)
        finally:
            fnn.set_num_threads(before)
        assert calls[-1] == "stand-in"


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
def test_drop_ins_split_rows_and_agree(two_threads, monkeypatch, activation):
    ran = _spy(monkeypatch)
    rng = np.random.default_rng(9)
    X = rng.standard_normal((1500, 20))
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int) + (X[:, 2] > 0)
    with quiet():
        kw = {"activation": activation, "max_iter": 5, "random_state": 0}
        clf = MLPClassifier(hidden_layer_sizes=(60, 40), **kw).fit(X, y)
        reg = MLPRegressor(hidden_layer_sizes=(60,), **kw).fit(X, X[:, :2])
    ran.clear()
    state = dict(clf.__dict__)
    proba, values = clf.predict_proba(X), reg.predict(X)
    assert ran == [True, True]
    assert clf.__dict__.keys() == state.keys()  # predict sets no attribute (scikit-learn)
    assert all(clf.__dict__[k] is v for k, v in state.items())
    with monkeypatch.context() as m:
        m.setattr(_fastpath, "ROW_SPLIT_MIN_WORK", 1 << 62)
        assert_close(proba, clf.predict_proba(X), np.float64)
        assert_close(values, reg.predict(X), np.float64)
    # reference written here: scikit-learn's forward pass on the fitted attributes
    f = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "identity": lambda z: z,
         "logistic": lambda z: 1 / (1 + np.exp(-z))}[activation]  # fmt: skip
    H = X
    for i, (W, b) in enumerate(zip(clf.coefs_, clf.intercepts_, strict=True)):
        H = H @ W + b
        if i < len(clf.coefs_) - 1:
            H = f(H)
    expected = np.exp(H - H.max(1, keepdims=True))
    assert_close(proba, expected / expected.sum(1, keepdims=True), np.float64)
    # coefficients replaced by the user: packed afresh, still split, still right
    clf.coefs_[-1] = np.zeros_like(clf.coefs_[-1])
    ran.clear()
    np.testing.assert_allclose(clf.predict_proba(X[:400]).sum(1), 1.0)
    assert ran == [True]
