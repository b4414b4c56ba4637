"""Bad input gets a clear ValueError/TypeError naming the argument, raised before anything
changes; inconvenient but valid input (other dtypes, integers, Fortran order, strided views,
lists) is converted and gives the same results as the canonical form."""

import numpy as np
import pytest

import fastnn as fnn

N_IN, N_OUT = 5, 3


def _setup(dtype=np.float32, loss=None):
    model = fnn.Sequential(
        fnn.Linear(N_IN, 8, seed=0, dtype=dtype),
        fnn.ReLU(),
        fnn.Linear(8, N_OUT, seed=1, dtype=dtype),
    )
    opt = fnn.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, opt, loss or fnn.SoftmaxCrossEntropy()


def _data(n=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, N_IN)).astype(np.float32)
    y = rng.integers(0, N_OUT, n)
    return X, y


def _state(model, opt):
    return (
        [p.data.copy() for p in model.parameters()],
        [p.grad.copy() for p in model.parameters()],
        [{k: v.copy() for k, v in s.items()} for s in opt.state],
        opt.step_count,
    )


def _assert_unchanged(before, model, opt):
    params, grads, state, steps = before
    for p, d, g in zip(model.parameters(), params, grads, strict=True):
        np.testing.assert_array_equal(p.data, d)
        np.testing.assert_array_equal(p.grad, g)
    for s, saved in zip(opt.state, state, strict=True):
        for k, v in s.items():
            np.testing.assert_array_equal(v, saved[k])
    assert opt.step_count == steps


def _with_nan():
    X, y = _data()
    X[3, 2] = np.nan
    return X, y


def _with_inf():
    X, y = _data()
    X[-1, -1] = -np.inf
    return X, y


def _labels(values):
    X, y = _data()
    y = np.array(y, dtype=np.asarray(values).dtype)
    y[: len(values)] = values
    return X, y


BAD_FIT = {
    # name: (make (X, y), extra fit kwargs, exception, words the message must contain)
    "X has NaN": (_with_nan, {}, ValueError, ["X", "NaN"]),
    "X has inf": (_with_inf, {}, ValueError, ["X", "inf"]),
    "negative label": (lambda: _labels([-1]), {}, ValueError, ["y", "-1"]),
    "label too large": (lambda: _labels([N_OUT]), {}, ValueError, ["y", str(N_OUT)]),
    "non-integer label": (lambda: _labels([1.5]), {}, ValueError, ["y", "integer"]),
    "NaN label": (lambda: _labels([np.nan]), {}, ValueError, ["y"]),
    "string labels": (lambda: (_data()[0], np.array(["a"] * 20)), {}, TypeError, ["y"]),
    "X 1-D": (lambda: (_data()[0][:, 0], _data()[1]), {}, ValueError, ["X", "2-D"]),
    "X 3-D": (lambda: (_data()[0][:, :, None], _data()[1]), {}, ValueError, ["X", "2-D"]),
    "X wrong features": (lambda: (_data()[0][:, :4], _data()[1]), {}, ValueError, ["X", "4"]),
    "X empty": (lambda: (np.empty((0, N_IN)), np.empty(0, int)), {}, ValueError, ["X", "empty"]),
    "X no features": (lambda: (np.empty((20, 0)), _data()[1]), {}, ValueError, ["X"]),
    "X y lengths differ": (lambda: (_data()[0], _data()[1][:-1]), {}, ValueError, ["y", "19"]),
    "X strings": (lambda: (np.full((20, N_IN), "a"), _data()[1]), {}, TypeError, ["X"]),
    "X objects": (
        lambda: (np.array([[object()] * N_IN] * 20), _data()[1]),
        {},
        TypeError,
        ["X"],
    ),
    "X ragged list": (lambda: ([[1.0, 2.0], [3.0]], [0, 1]), {}, TypeError, ["X"]),
    "batch_size 0": (_data, {"batch_size": 0}, ValueError, ["batch_size"]),
    "batch_size -1": (_data, {"batch_size": -1}, ValueError, ["batch_size"]),
    "batch_size 2.5": (_data, {"batch_size": 2.5}, TypeError, ["batch_size"]),
    "batch_size True": (_data, {"batch_size": True}, TypeError, ["batch_size"]),
    "epochs 0": (_data, {"epochs": 0}, ValueError, ["epochs"]),
    "epochs -1": (_data, {"epochs": -1}, ValueError, ["epochs"]),
    "epochs 2.5": (_data, {"epochs": 2.5}, TypeError, ["epochs"]),
    "epochs True": (_data, {"epochs": True}, TypeError, ["epochs"]),
    "validation X has NaN": (
        _data,
        {"validation_data": (_with_nan()[0], _data()[1])},
        ValueError,
        ["validation_data[0]", "NaN"],
    ),
    "validation label too large": (
        _data,
        {"validation_data": (_data()[0], np.full(20, 7))},
        ValueError,
        ["validation_data[1]", "7"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_FIT))
def test_fit_rejects_bad_input_before_changing_anything(case):
    make, kwargs, exc, words = BAD_FIT[case]
    model, opt, loss = _setup()
    # one real step first, so gradients and momentum are non-trivial and visible if touched
    X0, y0 = _data()
    model.fit(X0, y0, loss=loss, optimizer=opt, epochs=1, batch_size=8, verbose=0)
    before = _state(model, opt)
    X, y = make()
    fit_kwargs = {"epochs": 1, "batch_size": 8, "verbose": 0} | kwargs
    with pytest.raises(exc) as info:
        model.fit(X, y, loss=loss, optimizer=opt, **fit_kwargs)
    message = str(info.value)
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"
    _assert_unchanged(before, model, opt)


# Without callbacks the compiled fast path checks X for NaN/inf as its first epoch gathers the
# rows (no separate pass over X), then restores what the epoch changed.  These cases put the
# bad value where several batches train before it is reached.
def _trained(fastpath, monkeypatch):
    monkeypatch.setattr(fnn._fastpath, "ENABLED", fastpath)
    model, opt, loss = _setup()
    X0, y0 = _data()
    model.fit(X0, y0, loss=loss, optimizer=opt, epochs=1, batch_size=8, verbose=0)
    return model, opt, loss


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("fastpath", [True, False], ids=["fast-path", "layer-path"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_fit_rejects_nonfinite_X_late_in_the_epoch(bad, fastpath, shuffle, monkeypatch):
    model, opt, loss = _trained(fastpath, monkeypatch)
    before = _state(model, opt)
    X, y = _data(n=64)
    X[-1, 1] = bad  # the last row: with shuffle=False, 7 batches of 8 train before it
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        model.fit(X, y, loss=loss, optimizer=opt, epochs=3, batch_size=8, shuffle=shuffle,
                  verbose=0)  # fmt: skip
    _assert_unchanged(before, model, opt)


def test_fit_nonfinite_X_wins_over_an_earlier_divergence(monkeypatch):
    # the loss overflows in the first batch, long before the NaN row: still the X error
    model, opt, loss = _trained(True, monkeypatch)
    before = _state(model, opt)
    X, y = _data(n=64)
    X[:-1] *= 1e30
    X[-1, 0] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=8, shuffle=False,
                  verbose=0)  # fmt: skip
    _assert_unchanged(before, model, opt)
    X[-1, 0] = 0.0  # finite but diverging: the divergence error, as before
    with pytest.raises(fnn.TrainingDivergedError):
        model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=8, shuffle=False,
                  verbose=0)  # fmt: skip


def test_fit_checks_X_before_any_callback_runs(monkeypatch):
    calls = []

    class Recorder(fnn.callbacks.Callback):
        def on_train_begin(self, logs):
            calls.append("train_begin")

        def on_epoch_begin(self, epoch, logs):
            calls.append("epoch_begin")

    model, opt, loss = _trained(True, monkeypatch)
    before = _state(model, opt)
    X, y = _data(n=64)
    X[-1, 1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=8, verbose=0,
                  callbacks=[Recorder()])  # fmt: skip
    assert calls == []
    _assert_unchanged(before, model, opt)


def test_fit_with_no_epoch_to_run_still_checks_X(monkeypatch):
    model, opt, loss = _trained(True, monkeypatch)
    X, y = _data()
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        model.fit(X, y, loss=loss, optimizer=opt, epochs=2, initial_epoch=2, batch_size=8,
                  verbose=0)  # fmt: skip


@pytest.mark.parametrize(
    "X,exc,word",
    [
        (np.zeros((3, N_IN + 1)), ValueError, "features"),
        (np.zeros(N_IN), ValueError, "2-D"),
        (np.zeros((0, N_IN)), ValueError, "empty"),
        (np.full((2, N_IN), np.nan), ValueError, "NaN"),
        (np.full((2, N_IN), "x"), TypeError, "numeric"),
    ],
    ids=["features", "1-D", "empty", "NaN", "strings"],
)
@pytest.mark.parametrize("method", ["forward", "predict"])
def test_forward_and_predict_reject_bad_input(X, exc, word, method):
    model, opt, _ = _setup()
    before = _state(model, opt)
    with pytest.raises(exc, match=word) as info:
        getattr(model, method)(X)
    assert "X" in str(info.value)
    _assert_unchanged(before, model, opt)


@pytest.mark.parametrize(
    "target,exc,word",
    [
        (np.array([0, 1, 3]), ValueError, "target"),
        (np.array([0, -2, 1]), ValueError, "target"),
        (np.array([0, 1]), ValueError, "target"),
        (np.zeros((3, 2)), ValueError, "target"),
        (np.array([0.0, 0.5, 1.0]), ValueError, "integer"),
    ],
    ids=["too-large", "negative", "length", "columns", "non-integer"],
)
def test_loss_forward_rejects_bad_targets(target, exc, word):
    loss = fnn.SoftmaxCrossEntropy()
    with pytest.raises(exc, match=word):
        loss.forward(np.zeros((3, 3), np.float32), target)


def test_backward_rejects_wrong_gradient_shape():
    model, opt, _ = _setup()
    model.forward(_data()[0])
    before = _state(model, opt)
    with pytest.raises(ValueError, match="grad"):
        model.backward(np.zeros((20, N_OUT + 1), np.float32))
    _assert_unchanged(before, model, opt)


@pytest.mark.parametrize("shape", [(20, N_OUT + 1), (2, N_OUT), (40, N_OUT)])
@pytest.mark.parametrize("last", ["softmax", "tanh-layer", "dense"])
def test_backward_checks_the_gradient_shape_for_any_last_layer(shape, last):
    """A stand-alone Softmax (or any non-dense) last layer gets the same check as a dense one:
    its kernel would otherwise read past the end of a smaller gradient."""
    tail = {"softmax": [fnn.Softmax()], "tanh-layer": [fnn.ReLU(), fnn.Tanh()], "dense": []}
    model = fnn.Sequential(fnn.Linear(N_IN, N_OUT, seed=0), *tail[last])
    opt = fnn.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(np.zeros((20, N_OUT), np.float32))
    model.forward(_data()[0])
    before = _state(model, opt)
    with pytest.raises(ValueError, match=r"grad must have the output's shape \(20, 3\)"):
        model.backward(np.zeros(shape, np.float32))
    _assert_unchanged(before, model, opt)


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-1, ValueError), (2.5, TypeError)])
def test_predict_rejects_bad_batch_size(bad, exc):
    """batch_size=-1 used to return an uninitialised array (the chunk loop never ran)."""
    model, _, _ = _setup()
    with pytest.raises(exc, match="batch_size"):
        model.predict(_data()[0], batch_size=bad)


# -- inconvenient input is converted -------------------------------------------------------------
def _fit_params(X, y, dtype=np.float32):
    model, opt, loss = _setup(dtype)
    model.fit(X, y, loss=loss, optimizer=opt, epochs=2, batch_size=7, seed=3, verbose=0)
    return model._flat.data.copy(), model


CONVERSIONS = {
    "float64 into float32": lambda X: X.astype(np.float64),
    "Fortran order": np.asfortranarray,
    "strided view": lambda X: np.repeat(X, 2, axis=0)[::2],
    "column view": lambda X: np.repeat(X, 2, axis=1)[:, ::2],
    "list": lambda X: X.tolist(),
}


@pytest.mark.parametrize("case", list(CONVERSIONS))
def test_inconvenient_X_is_converted(case):
    X, y = _data()
    expected, model = _fit_params(X, y)
    Xc = CONVERSIONS[case](X)
    if case != "list":
        np.testing.assert_array_equal(np.asarray(Xc, np.float32), X)
    got, model_c = _fit_params(Xc, y)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(model_c.predict(Xc), model.predict(X))
    out = model_c.forward(Xc)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, model.predict(X))


def test_integer_X_and_label_forms():
    Xi = np.random.default_rng(0).integers(-3, 4, (20, N_IN))
    y = np.random.default_rng(1).integers(0, N_OUT, 20)
    expected, _ = _fit_params(Xi.astype(np.float32), y)
    for X in (Xi, Xi.astype(np.int32), Xi.astype(np.float64)):
        for labels in (y, y.astype(np.int32), y.astype(np.float64), y.tolist()):
            got, _ = _fit_params(X, labels)
            np.testing.assert_array_equal(got, expected)


def test_float32_data_into_float64_model():
    X, y = _data()
    got, model = _fit_params(X, y, np.float64)
    expected, _ = _fit_params(X.astype(np.float64), y, np.float64)
    np.testing.assert_array_equal(got, expected)
    assert model.predict(X).dtype == np.float64


# -- stand-alone layers ---------------------------------------------------------------------------
STAND_ALONE = {
    "Linear": lambda: fnn.Linear(N_IN, N_OUT, seed=0),
    "ReLU": fnn.ReLU,
    "Tanh": fnn.Tanh,
    "Softmax": fnn.Softmax,
    "GELU": fnn.GELU,
    "BatchNorm1d": lambda: fnn.BatchNorm1d(N_IN),
    "LayerNorm": lambda: fnn.LayerNorm(N_IN),
}


@pytest.mark.parametrize("name", list(STAND_ALONE))
@pytest.mark.parametrize(
    "X,exc,word",
    [
        (np.ones(N_IN, np.float32), ValueError, "2-D"),
        (np.full((4, N_IN), "x"), TypeError, "numeric"),
        ([["a"] * N_IN] * 4, TypeError, "numeric"),
    ],
    ids=["1-D", "strings", "list-of-strings"],
)
@pytest.mark.parametrize("method", ["forward", "predict"])
def test_stand_alone_layers_reject_bad_input(name, X, exc, word, method):
    """A layer's own forward/predict checks X before its kernel runs (a numba TypingError or an
    AttributeError is no answer, and a Linear given too few columns read past each row)."""
    layer = STAND_ALONE[name]()
    before = [p.data.copy() for p in layer.parameters()]
    with pytest.raises(exc, match=word) as info:
        getattr(layer, method)(X)
    assert name in str(info.value) and "X" in str(info.value)
    for p, b in zip(layer.parameters(), before, strict=True):
        np.testing.assert_array_equal(p.data, b)


@pytest.mark.parametrize("cols", [N_IN - 2, N_IN + 1])
@pytest.mark.parametrize("method", ["forward", "predict"])
def test_stand_alone_linear_checks_the_feature_count(cols, method):
    with pytest.raises(ValueError, match=f"Linear: X has {cols} features, expected {N_IN}"):
        getattr(fnn.Linear(N_IN, N_OUT, seed=0), method)(np.ones((4, cols), np.float32))


@pytest.mark.parametrize("name", ["Linear", "ReLU", "Softmax"])
def test_stand_alone_backward_checks_the_gradient_shape(name):
    layer = STAND_ALONE[name]()
    out = layer.forward(np.ones((4, N_IN), np.float32))
    with pytest.raises(ValueError, match="dout must have the output's shape"):
        layer.backward(np.ones((out.shape[0] - 1, out.shape[1]), np.float32))


@pytest.mark.parametrize("name", list(STAND_ALONE))
def test_stand_alone_layers_convert_inconvenient_input(name):
    """float64, integers, Fortran order and strided views give what the float32 C-order input
    gives (float64 into a float32 layer is converted, not rejected)."""
    rng = np.random.default_rng(3)
    X = rng.integers(-3, 4, (6, N_IN)).astype(np.float32)
    want = STAND_ALONE[name]().predict(X)
    for variant in (X.astype(np.float64), X.astype(np.int64), np.asfortranarray(X)):
        got = STAND_ALONE[name]().predict(variant)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    wide = np.zeros((6, 2 * N_IN), np.float32)
    wide[:, ::2] = X
    np.testing.assert_allclose(STAND_ALONE[name]().predict(wide[:, ::2]), want, rtol=1e-6)


def test_fit_checks_X_in_the_epoch_only_when_X_outweighs_the_gradients(monkeypatch):
    # the in-epoch check needs a copy of the gradients; for an X smaller than they are, the
    # separate pass over X is the cheaper one
    from fastnn import training

    calls = []
    check = training.check_finite
    monkeypatch.setattr(
        training, "check_finite", lambda X, name: calls.append(name) or check(X, name)
    )
    loss = fnn.SoftmaxCrossEntropy()
    for n, width, expected in [(2000, 8, []), (20, 400, ["X"])]:
        calls.clear()
        model = fnn.Sequential(fnn.Linear(N_IN, width, seed=0), fnn.ReLU(),
                               fnn.Linear(width, N_OUT, seed=1))  # fmt: skip
        opt = fnn.SGD(model.parameters(), lr=0.1)
        X, y = _data(n=n)
        model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=8, verbose=0)
        assert calls == expected, (n, width)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("act", [fnn.Tanh, fnn.ReLU])
def test_predict_finds_one_bad_value_through_a_narrowing_first_layer(bad, act):
    # a first layer with fewer outputs than inputs checks its pre-activation, not X: one
    # NaN/inf must still be reported, also where tanh would have squashed the inf to +-1,
    # and in a chunk other than the first; a finite X that overflows is the model's output
    model = fnn.Sequential(fnn.Linear(12, 3, seed=0), act(), fnn.Linear(3, 2, seed=1))
    X = np.random.default_rng(0).standard_normal((40, 12))
    X[33, 5] = bad
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        model.predict(X, batch_size=16)
    X[33, 5] = 1e20
    model.layers[0].weight.data[5] = 1e30  # X @ W overflows float32: not an input error
    model.predict(X, batch_size=16)
