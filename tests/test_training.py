"""fit: History contents, printing, batching, reproducibility, initialisation, divergence."""

import os
import re
import signal
import types

import numpy as np
import pytest

import fastnn as fnn
from fastnn import distributed, training


def _blobs(n=120, n_in=6, k=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.standard_normal((k, n_in)) * 3
    X = centres[y] + rng.standard_normal((n, n_in))
    return X.astype(dtype), y


def _classifier(n_in=6, k=3, dtype=np.float32, hidden=16):
    return fnn.Sequential(
        fnn.Linear(n_in, hidden, seed=0, dtype=dtype),
        fnn.ReLU(),
        fnn.Linear(hidden, k, seed=1, dtype=dtype),
    )


def _fit(model, X, y, lr=0.05, **kw):
    opt = fnn.SGD(model.parameters(), lr=lr, momentum=0.9)
    kw = {"epochs": 3, "batch_size": 16, "seed": 0, "verbose": 0} | kw
    return model.fit(X, y, loss=kw.pop("loss", fnn.SoftmaxCrossEntropy()), optimizer=opt, **kw)


def test_history_has_per_epoch_metrics():
    X, y = _blobs()
    Xv, yv = _blobs(50, seed=1)
    model = _classifier()
    hist = _fit(model, X, y, epochs=4, validation_data=(Xv, yv))
    assert isinstance(hist, fnn.History)
    keys = {"loss", "accuracy", "val_loss", "val_accuracy", "samples_per_second"}
    assert keys <= set(hist.history)
    for key in keys:
        assert len(hist.history[key]) == 4, key
        assert all(np.isfinite(v) for v in hist.history[key]), key
    assert all(0 <= a <= 1 for a in hist.history["accuracy"] + hist.history["val_accuracy"])
    assert all(s > 0 for s in hist.history["samples_per_second"])
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert hist.history["accuracy"][-1] > 0.8
    # the validation metrics are those of the model at the end of the last epoch
    loss = fnn.SoftmaxCrossEntropy()
    out = model.predict(Xv)
    assert hist.history["val_loss"][-1] == pytest.approx(loss.forward(out, yv), rel=1e-6)
    assert hist.history["val_accuracy"][-1] == np.mean(out.argmax(axis=1) == yv)


def test_regression_history_has_no_accuracy():
    X, _ = _blobs()
    T = X[:, :2] * 0.5 - 1
    model = fnn.Sequential(fnn.Linear(6, 8, seed=0), fnn.Tanh(), fnn.Linear(8, 2, seed=1))
    hist = _fit(model, X, T, lr=0.01, loss=fnn.MSELoss(), validation_data=(X[:20], T[:20]))
    assert "accuracy" not in hist.history and "val_accuracy" not in hist.history
    assert len(hist.history["val_loss"]) == 3
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def test_verbose_prints_one_line_per_epoch(capsys):
    X, y = _blobs()
    _fit(_classifier(), X, y, epochs=3, verbose=1)
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 3, out
    for i, line in enumerate(lines, 1):
        assert f"{i}/3" in line
        assert re.search(r"loss \d+\.\d+", line), line
        assert re.search(r"accuracy \d+\.\d+", line), line
        assert "samples/s" in line
    assert err == ""


def test_verbose_0_prints_nothing(capsys):
    X, y = _blobs()
    _fit(_classifier(), X, y, epochs=2, verbose=0, validation_data=(X, y))
    assert capsys.readouterr() == ("", "")


def _manual_steps(model, X, y, batch_size, lr):
    loss = fnn.SoftmaxCrossEntropy()
    opt = fnn.SGD(model.parameters(), lr=lr, momentum=0.9)
    for start in range(0, len(X), batch_size):
        opt.zero_grad()
        loss.forward(model.forward(X[start : start + batch_size]), y[start : start + batch_size])
        model.backward(loss.backward())
        opt.step()


@pytest.mark.parametrize("n,batch_size", [(50, 16), (50, 50), (7, 64), (33, 1)])
def test_last_batch_may_be_smaller(n, batch_size):
    """Without shuffling, fit equals a hand-written loop over batches of batch_size rows and a
    last batch of n % batch_size rows, so every sample is used once per epoch."""
    X, y = _blobs(n, dtype=np.float64)
    model = _classifier(dtype=np.float64)
    hist = _fit(model, X, y, epochs=1, batch_size=batch_size, shuffle=False)
    by_hand = _classifier(dtype=np.float64)
    _manual_steps(by_hand, X, y, batch_size, 0.05)
    np.testing.assert_allclose(model._flat.data, by_hand._flat.data, rtol=1e-12, atol=1e-14)
    assert len(hist.history["loss"]) == 1


def test_same_seed_same_parameters():
    X, y = _blobs()
    runs = []
    for seed in (5, 5, 6):
        model = _classifier()
        _fit(model, X, y, seed=seed)
        runs.append(model._flat.data.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_linear_init_reproducible():
    a = fnn.Linear(20, 30, seed=3)
    b = fnn.Linear(20, 30, seed=3)
    c = fnn.Linear(20, 30, seed=4)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, c.weight.data)
    np.testing.assert_array_equal(a.bias.data, 0.0)
    assert a.weight.shape == (20, 30) and a.bias.shape == (30,)
    assert a.weight.dtype == np.float32
    assert fnn.Linear(2, 3, dtype=np.float64).weight.dtype == np.float64
    assert fnn.Linear(2, 3, bias=False).bias is None


@pytest.mark.parametrize("init,std", [("he", 2.0), ("lecun", 1.0)])
def test_normal_inits_have_the_right_std(init, std):
    n_in, n_out = 400, 300
    W = fnn.Linear(n_in, n_out, init=init, seed=0, dtype=np.float64).weight.data
    # 120000 draws: the sample std is within ~0.2% (1 sigma) of the true one; 2% is 10 sigma
    assert W.std() == pytest.approx(np.sqrt(std / n_in), rel=0.02)
    assert abs(W.mean()) < 0.05 * np.sqrt(std / n_in)


def test_glorot_limits():
    n_in, n_out = 400, 300
    W = fnn.Linear(n_in, n_out, init="glorot", seed=0, dtype=np.float64).weight.data
    limit = np.sqrt(6.0 / (n_in + n_out))
    assert np.abs(W).max() <= limit
    assert np.abs(W).max() > 0.99 * limit  # uniform over the whole interval
    assert W.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)


# -- divergence -----------------------------------------------------------------------------------
def _unscaled():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 10)) * 100 + 50  # not standardised
    return X, rng.integers(0, 3, 200)


def _plain_net():
    return fnn.Sequential(fnn.Linear(10, 16, seed=0), fnn.ReLU(), fnn.Linear(16, 3, seed=1))


def _norm_net():
    return fnn.Sequential(
        fnn.Linear(10, 16, seed=0), fnn.BatchNorm1d(16), fnn.ReLU(), fnn.Dropout(0.2, seed=3),
        fnn.Linear(16, 3, seed=1),
    )  # fmt: skip


def _diverging_fit(epochs, make=_plain_net, lr=1.0):
    """Fit with a learning rate far too large for unscaled data; returns the model (and the
    error, if one was raised)."""
    X, y = _unscaled()
    model = make()
    opt = fnn.SGD(model.parameters(), lr=lr, momentum=0.9)
    try:
        model.fit(
            X,
            y,
            loss=fnn.SoftmaxCrossEntropy(),
            optimizer=opt,
            epochs=epochs,
            batch_size=32,
            seed=0,
            verbose=0,
        )
    except fnn.TrainingDivergedError as exc:
        return model, exc
    return model, None


def test_divergence_keeps_last_finite_epoch():
    model, error = _diverging_fit(30)
    assert isinstance(error, fnn.TrainingDivergedError)
    k = int(re.search(r"end of epoch (\d+)", str(error)).group(1))
    assert k >= 1, "choose data that diverges after at least one finite epoch"
    assert np.isfinite(model._flat.data).all()
    separately, error_k = _diverging_fit(k)  # the same seed, stopped after epoch k
    assert error_k is None
    np.testing.assert_array_equal(model._flat.data, separately._flat.data)


def test_divergence_of_the_parameters_with_a_finite_loss():
    """A step from a finite loss that overflows the parameters counts as divergence too: the
    model keeps the parameters from before that epoch instead of inf."""
    X, y = _unscaled()
    model = fnn.Sequential(fnn.Linear(10, 3, seed=0))
    start = model._flat.data.copy()
    opt = fnn.SGD(model.parameters(), lr=1e38)
    with pytest.raises(fnn.TrainingDivergedError, match="epoch 1"):
        model.fit(
            X,
            y,
            loss=fnn.SoftmaxCrossEntropy(),
            optimizer=opt,
            epochs=3,
            batch_size=200,
            verbose=0,
        )
    np.testing.assert_array_equal(model._flat.data, start)


def test_fit_trains_every_loss():
    X, y = _blobs()
    probs = fnn.Sequential(fnn.Linear(6, 3, seed=0), fnn.Softmax())
    hist = _fit(probs, X, y, loss=fnn.CrossEntropy(), epochs=5)
    assert hist.history["accuracy"][-1] > 0.8
    onehot = np.eye(3)[y]
    model = _classifier()
    hist = _fit(model, X, onehot, epochs=5)
    assert hist.history["accuracy"][-1] > 0.8


def test_divergence_restores_layer_state_too():
    """BatchNorm1d's running statistics and Dropout's mask counter go back to the last finite
    epoch with the parameters (a model whose running_var is inf predicts nothing useful)."""
    model, error = _diverging_fit(40, _norm_net, lr=100.0)
    assert isinstance(error, fnn.TrainingDivergedError)
    k = int(re.search(r"end of epoch (\d+)", str(error)).group(1))
    assert k >= 1, "choose data that diverges after at least one finite epoch"
    separately, error_k = _diverging_fit(k, _norm_net, lr=100.0)
    assert error_k is None
    np.testing.assert_array_equal(model._flat.data, separately._flat.data)
    for got, want in zip(model.layers, separately.layers, strict=True):
        for name, arr in want.state_arrays().items():
            np.testing.assert_array_equal(got.state_arrays()[name], arr, err_msg=name)
    assert np.isfinite(model.layers[1].running_var).all()


@pytest.mark.parametrize("n,batch_size", [(33, 32), (1, 8), (65, 16)])
def test_batchnorm_batch_of_one_is_refused_before_training(n, batch_size):
    X, y = _blobs()
    model = fnn.Sequential(fnn.Linear(6, 8, seed=0), fnn.BatchNorm1d(8), fnn.Linear(8, 3, seed=1))
    opt = fnn.SGD(model.parameters(), lr=0.1)
    before = model._flat.data.copy()
    stats = model.layers[1].state_arrays()
    with pytest.raises(ValueError, match=f"batch_size={batch_size} on {n} samples leaves a batch"):
        model.fit(X[:n], y[:n], loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, epochs=2,
                  batch_size=batch_size, verbose=0)  # fmt: skip
    np.testing.assert_array_equal(model._flat.data, before)
    np.testing.assert_array_equal(model.layers[1].running_mean, stats["running_mean"])
    # a batch size that leaves two or more in the last batch trains
    model.fit(X[:34], y[:34], loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, epochs=1,
              batch_size=32, verbose=0)  # fmt: skip


def test_fit_checks_bce_targets_are_probabilities():
    X, _ = _blobs()
    model = fnn.Sequential(fnn.Linear(6, 2, seed=0))
    opt = fnn.SGD(model.parameters(), lr=0.1)
    before = model._flat.data.copy()
    for bad in (np.full((X.shape[0], 2), 5.0), np.full((X.shape[0], 2), -0.5)):
        with pytest.raises(ValueError, match=r"y must hold 0/1 labels or probabilities in \[0, 1"):
            model.fit(X, bad, loss=fnn.BCEWithLogits(), optimizer=opt, epochs=1, batch_size=8,
                      verbose=0)  # fmt: skip
        with pytest.raises(ValueError, match="validation_data\\[1\\] must hold 0/1"):
            model.fit(X, np.zeros((X.shape[0], 2)), loss=fnn.BCEWithLogits(), optimizer=opt,
                      epochs=1, batch_size=8, verbose=0, validation_data=(X, bad))  # fmt: skip
    np.testing.assert_array_equal(model._flat.data, before)


class _MirrorComm:
    """A two-rank COMM_WORLD whose other rank holds the same values as this one in every
    collective; the ``interrupt_at``-th MAX Allreduce receives a Ctrl-C while it runs."""

    def __init__(self, interrupt_at):
        self.max_calls = 0
        self.interrupt_at = interrupt_at

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 2

    def Allreduce(self, _, array, op):
        if op == "max":
            self.max_calls += 1
            if self.max_calls == self.interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)  # handled before this call returns
        else:
            array *= 2

    def Bcast(self, array, root=0):
        pass

    def bcast(self, obj, root=0):
        return obj

    def allgather(self, obj):
        return [obj, obj]

    def Abort(self, code):
        raise AssertionError("MPI_Abort")


def test_distributed_ctrl_c_during_a_collective_is_not_lost(monkeypatch, capsys):
    """A distributed fit stops on the Ctrl-C every rank agrees on.  One that reaches a rank
    while the agreement's collective runs must be agreed on at the next chunk, not overwritten
    by the (older) agreed value: a fit of tiny steps spends most of its time in collectives,
    and mpiexec's forwarded Ctrl-C was then lost on both ranks (the fit ran on)."""
    fake_mpi = types.SimpleNamespace(IN_PLACE=None, SUM="sum", MAX="max")
    comm = _MirrorComm(interrupt_at=6)
    monkeypatch.setattr(training, "make_world", lambda kind: distributed.World(comm, fake_mpi))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 6))
    y = rng.integers(0, 3, 64)
    model = fnn.Sequential(fnn.Linear(6, 8, dtype=np.float64, seed=0), fnn.ReLU(),
                           fnn.Linear(8, 3, dtype=np.float64, seed=1))  # fmt: skip
    opt = fnn.SGD(model.parameters(), lr=0.01)
    history = model.fit(X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, epochs=300,
                        batch_size=16, seed=0, verbose=0, distributed="mpi")  # fmt: skip
    assert comm.max_calls > comm.interrupt_at
    assert history.interrupted
    assert len(history.epoch) < 300
    assert "training interrupted (Ctrl-C)" in capsys.readouterr().err
