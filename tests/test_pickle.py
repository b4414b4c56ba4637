"""Pickled models and optimizers (pickle, joblib, Dask, deepcopy) keep their flat buffer.

Pickling copies each parameter's view of the model's flat buffer out as an array of its own.
Unrelinked, an unpickled model predicted layer by layer and fit on the slower layer path, and
an optimizer pickled with it updated arrays the model no longer read."""

import copy
import pickle

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _fastpath
from fastnn.parameter import FlatParameters


def _data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2048, 40)).astype(np.float32)
    return X, rng.integers(0, 5, 2048)


def _model():
    return fnn.Sequential(
        fnn.Linear(40, 64, seed=0), fnn.ReLU(), fnn.Linear(64, 32, seed=1, bias=False),
        fnn.Tanh(), fnn.Linear(32, 5, seed=2),
    )  # fmt: skip


def _fit(model, opt, X, y, seed):
    model.fit(X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, epochs=1, batch_size=64,
              seed=seed, verbose=0)  # fmt: skip


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_an_unpickled_model_is_in_its_flat_buffer_again(how):
    X, y = _data()
    model = _model()
    before = model.predict(X)
    copied = pickle.loads(pickle.dumps(model)) if how == "pickle" else copy.deepcopy(model)
    params = copied.parameters()
    assert FlatParameters.slice_of(params) is not None
    assert all(np.shares_memory(p.data, copied._flat.data) for p in params)
    assert all(np.shares_memory(p.grad, copied._flat.grad) for p in params)
    assert not np.shares_memory(copied._flat.data, model._flat.data)
    np.testing.assert_array_equal(copied.predict(X), before)
    opt = fnn.SGD(copied.parameters(), lr=0.1)
    assert _fastpath.fast_runner(copied, X, y, None, fnn.SoftmaxCrossEntropy(), opt, 64)
    copied.layers[0].weight.data[...] = 0  # the copy's own buffer: the original is untouched
    np.testing.assert_array_equal(model.predict(X), before)
    assert not np.array_equal(copied.predict(X), before)


@pytest.mark.parametrize("make", [
    lambda p: fnn.SGD(p, lr=0.05, momentum=0.9),
    lambda p: fnn.Adam(p, lr=1e-2),
], ids=["sgd-momentum", "adam"])  # fmt: skip
def test_a_model_and_its_optimizer_pickled_together_train_on(make):
    X, y = _data()
    model = _model()
    opt = make(model.parameters())
    _fit(model, opt, X, y, seed=1)
    model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    _fit(model, opt, X, y, seed=2)
    _fit(model2, opt2, X, y, seed=2)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data)  # momentum/moments and step count too


def test_an_optimizer_pickled_alone_updates_its_own_parameters():
    model = _model()
    opt = fnn.SGD(model.parameters(), lr=0.5)
    opt2 = pickle.loads(pickle.dumps(opt))
    for p in opt2.params:
        p.grad[...] = 1.0
    before = [p.data.copy() for p in opt2.params]
    opt2.step()
    for p, b in zip(opt2.params, before, strict=True):
        np.testing.assert_allclose(p.data, b - 0.5, rtol=1e-6)
    for p, q in zip(model.parameters(), opt2.params, strict=True):
        assert not np.shares_memory(p.data, q.data)
