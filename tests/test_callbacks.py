"""fit's outer loop: callbacks (user-written and built-in), validation_split, initial_epoch,
Ctrl-C, progress output."""

import csv
import io
import os
import signal

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _progress
from fastnn.callbacks import Callback, CSVLogger, EarlyStopping, LambdaCallback, ModelCheckpoint


def data(n=200, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    return X, y


def make(dtype=np.float32, lr=0.05):
    model = fnn.Sequential(
        fnn.Linear(6, 8, seed=1, dtype=dtype), fnn.ReLU(), fnn.Linear(8, 3, seed=2, dtype=dtype)
    )
    return model, fnn.SGD(model.parameters(), lr=lr, momentum=0.9)


def fit(model, opt, X, y, **kw):
    kw.setdefault("epochs", 3)
    kw.setdefault("batch_size", 32)
    kw.setdefault("seed", 0)
    kw.setdefault("verbose", 0)
    return model.fit(X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, **kw)


class Recorder(Callback):
    """A user-written callback: logs every hook it sees."""

    def __init__(self):
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", self.model is not None, self.optimizer is not None))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, logs["size"], np.isfinite(logs["loss"])))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


def test_user_callback_sees_every_hook_in_order():
    X, y = data(n=70)
    model, opt = make()
    rec = Recorder()
    fit(model, opt, X, y, epochs=2, callbacks=[rec])
    batches = [("batch_end", b, s, True) for b, s in ((0, 32), (1, 32), (2, 6))]
    keys = ["accuracy", "loss", "samples_per_second"]
    expected = [("train_begin", True, True)]
    for e in range(2):
        expected += [("epoch_begin", e), *batches, ("epoch_end", e, keys)]
    assert rec.calls == expected + [("train_end",)]


def test_batch_callbacks_do_not_change_the_result():
    X, y = data()
    m1, o1 = make()
    h1 = fit(m1, o1, X, y)
    m2, o2 = make()
    h2 = fit(m2, o2, X, y, callbacks=[Recorder()])  # one batch per runner call
    np.testing.assert_array_equal(m1._flat.data, m2._flat.data)
    assert h1.history["loss"] == pytest.approx(h2.history["loss"], rel=1e-12)  # sum order


def test_on_epoch_end_true_stops_and_logged_entries_reach_history():
    X, y = data()
    model, opt = make()

    class StopAt2(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["lr"] = self.optimizer.lr
            return epoch == 1

    hist = fit(model, opt, X, y, epochs=5, callbacks=[StopAt2()])
    assert hist.epoch == [0, 1]
    assert hist.history["lr"] == [0.05, 0.05]
    assert not hist.interrupted


def test_stop_training_from_batch_ends_epoch_early():
    X, y = data(n=200)
    model, opt = make()
    seen = []

    def on_batch_end(batch, logs):
        seen.append(batch)
        if batch == 2:
            model.stop_training = True

    hist = fit(model, opt, X, y, epochs=4, callbacks=[LambdaCallback(on_batch_end=on_batch_end)])
    assert seen == [0, 1, 2]
    assert hist.epoch == [0]
    assert np.isfinite(hist.history["loss"][0])


def test_callbacks_argument_is_checked():
    X, y = data()
    model, opt = make()
    with pytest.raises(TypeError, match=r"callbacks\[1\]"):
        fit(model, opt, X, y, callbacks=[Callback(), "not a callback"])
    with pytest.raises(TypeError, match="must be callable"):
        LambdaCallback(on_epoch_end=3)


# -- EarlyStopping ------------------------------------------------------------------------------
class Scripted(Callback):
    """Puts a scripted metric into the logs and remembers the parameters of every epoch."""

    def __init__(self, values):
        self.values = values
        self.params = []

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.values[epoch]
        self.params.append(self.model._flat.data.copy())


@pytest.mark.parametrize(
    ("patience", "values", "stopped", "best"),
    [
        (2, [5, 4, 3, 3.5, 3.2, 1, 0], 4, 2),  # no improvement at epochs 3 and 4
        (0, [5, 6, 1, 1, 1, 1, 1], 1, 0),
        (1, [5, 4, 3, 2, 1, 0, -1], None, 6),  # never stops, best is the last
    ],
)
def test_early_stopping_patience_and_restore(patience, values, stopped, best):
    X, y = data()
    model, opt = make()
    script = Scripted(values)
    es = EarlyStopping(monitor="score", patience=patience, mode="min")
    hist = fit(model, opt, X, y, epochs=len(values), callbacks=[script, es])
    assert es.stopped_epoch == stopped
    assert es.best_epoch == best and es.best == values[best]
    assert hist.epoch[-1] == (stopped if stopped is not None else len(values) - 1)
    np.testing.assert_array_equal(model._flat.data, script.params[best])


def test_early_stopping_min_delta_mode_auto_and_no_restore():
    assert EarlyStopping(monitor="val_accuracy").mode == "max"  # "acc" in the name
    assert EarlyStopping(monitor="val_loss").mode == "min"
    X, y = data()
    model, opt = make()
    script = Scripted([0.5, 0.505, 0.508, 0.9, 0.9])
    es = EarlyStopping(monitor="score", patience=2, min_delta=0.01, mode="max")
    fit(model, opt, X, y, epochs=5, callbacks=[script, es])
    assert es.stopped_epoch == 2  # +0.005 and +0.008 are below min_delta
    np.testing.assert_array_equal(model._flat.data, script.params[0])
    model, opt = make()
    script = Scripted([1, 2, 3])
    es = EarlyStopping(monitor="score", patience=1, restore_best=False)
    fit(model, opt, X, y, epochs=3, callbacks=[script, es])
    assert es.stopped_epoch == 1
    np.testing.assert_array_equal(model._flat.data, script.params[1])
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="best")


def test_early_stopping_on_real_val_loss_and_missing_metric_warns():
    X, y = data()
    model, opt = make()
    es = EarlyStopping(patience=1)
    hist = fit(model, opt, X, y, epochs=3, validation_split=0.25, callbacks=[es])
    assert es.best == min(hist.history["val_loss"])
    model, opt = make()
    with pytest.warns(RuntimeWarning, match="val_loss"):
        fit(model, opt, X, y, epochs=2, callbacks=[EarlyStopping()])


# -- ModelCheckpoint and CSVLogger ------------------------------------------------------------
def test_model_checkpoint_every_epoch_with_epoch_in_name(tmp_path):
    X, y = data()
    model, opt = make()
    script = Scripted([0] * 3)
    ck = ModelCheckpoint(str(tmp_path / "ck-{epoch:02d}-{loss:.2f}.npz"))
    hist = fit(model, opt, X, y, epochs=3, callbacks=[script, ck])
    assert len(ck.saved) == 3
    assert os.path.basename(ck.saved[0]) == f"ck-01-{hist.history['loss'][0]:.2f}.npz"
    for path, params in zip(ck.saved, script.params, strict=True):
        loaded = fnn.load(path)
        np.testing.assert_array_equal(loaded._flat.data, params)
        assert fnn.load_optimizer(path, loaded).step_count > 0
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in ck.saved)


def test_model_checkpoint_save_best_only(tmp_path):
    X, y = data()
    model, opt = make()
    script = Scripted([3, 2, 2.5, 1, 4])
    path = tmp_path / "best.npz"
    ck = ModelCheckpoint(path, monitor="score", save_best_only=True, save_optimizer=False)
    fit(model, opt, X, y, epochs=5, callbacks=[script, ck])
    assert len(ck.saved) == 3  # epochs 0, 1, 3
    np.testing.assert_array_equal(fnn.load(path)._flat.data, script.params[3])
    with pytest.raises(ValueError, match="holds no optimizer"):
        fnn.load_optimizer(path, model)


def test_csv_logger_one_row_per_epoch_every_metric(tmp_path):
    X, y = data()
    model, opt = make()
    path = tmp_path / "log.csv"
    hist = fit(model, opt, X, y, epochs=3, validation_split=0.2, callbacks=[CSVLogger(path)])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert set(rows[0]) == {"epoch", *hist.history}
    for key, values in hist.history.items():
        assert [float(r[key]) for r in rows] == values
    # append=True continues the file (a resumed fit); a fresh logger starts over
    fit(
        model,
        opt,
        X,
        y,
        epochs=5,
        initial_epoch=3,
        validation_split=0.2,
        callbacks=[CSVLogger(path, append=True)],
    )
    with open(path, newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1", "2", "3", "4"]
    fit(model, opt, X, y, epochs=1, callbacks=[CSVLogger(path)])
    with open(path, newline="") as f:
        assert len(list(csv.DictReader(f))) == 1


# -- validation_split, seeds, initial_epoch ---------------------------------------------------
def test_validation_split_equals_validation_data_on_the_tail():
    X, y = data(n=203)
    m1, o1 = make()
    h1 = fit(m1, o1, X, y, validation_split=0.25)
    cut = int(203 * 0.75)
    m2, o2 = make()
    h2 = fit(m2, o2, X[:cut], y[:cut], validation_data=(X[cut:], y[cut:]))
    np.testing.assert_array_equal(m1._flat.data, m2._flat.data)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert h1.history[key] == h2.history[key]


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"validation_split": 0.2, "validation_data": "given"}, ValueError, "not both"),
        ({"validation_split": 1.0}, ValueError, "validation_split"),
        ({"validation_split": 0.999}, ValueError, "leaves"),
        ({"initial_epoch": 4}, ValueError, "initial_epoch"),
        ({"initial_epoch": -1}, ValueError, "initial_epoch"),
        ({"verbose": 3}, ValueError, "verbose"),
        ({"seed": -2}, TypeError, "seed"),
    ],
)
def test_bad_fit_arguments(kw, err, match):
    X, y = data(n=50)
    model, opt = make()
    before = model._flat.data.copy()
    if kw.get("validation_data") == "given":
        kw["validation_data"] = (X, y)
    with pytest.raises(err, match=match):
        fit(model, opt, X, y, **kw)
    np.testing.assert_array_equal(model._flat.data, before)


def test_shuffle_depends_on_seed_and_epoch_only():
    X, y = data()
    m1, o1 = make()
    fit(m1, o1, X, y, epochs=3, seed=7)
    m2, o2 = make()
    fit(m2, o2, X, y, epochs=3, seed=7)
    np.testing.assert_array_equal(m1._flat.data, m2._flat.data)
    m3, o3 = make()
    fit(m3, o3, X, y, epochs=3, seed=8)
    assert not np.array_equal(m1._flat.data, m3._flat.data)
    # epochs 0..1 then 2 (same objects) equals epochs 0..2 in one call
    m4, o4 = make()
    fit(m4, o4, X, y, epochs=2, seed=7)
    h = fit(m4, o4, X, y, epochs=3, initial_epoch=2, seed=7)
    assert h.epoch == [2]
    np.testing.assert_array_equal(m1._flat.data, m4._flat.data)


# -- Ctrl-C ---------------------------------------------------------------------------------------
class Interrupter(Callback):
    """Interrupts in ``epoch`` at ``batch``, by raising or by sending SIGINT to the process."""

    def __init__(self, epoch, batch, how):
        self.at, self.how = (epoch, batch), how
        self.epoch, self.batches = None, []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        self.batches.append((self.epoch, batch))
        if (self.epoch, batch) == self.at:
            self.params = self.model._flat.data.copy()
            if self.how == "raise":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("how", ["raise", "sigint"])
def test_ctrl_c_stops_after_the_step_and_returns_history(how, capsys):
    X, y = data()
    model, opt = make()
    # what SIGINT did before the fit (Python's default_int_handler, or SIG_IGN when the tests
    # run as a background job of a non-interactive shell): fit must put exactly that back
    handler_before = signal.getsignal(signal.SIGINT)
    cb = Interrupter(epoch=1, batch=2, how=how)
    ck = Recorder()
    hist = fit(model, opt, X, y, epochs=5, callbacks=[cb, ck])
    assert hist.interrupted
    assert hist.epoch == [0] and len(hist.history["loss"]) == 1
    assert cb.batches[-1] == (1, 2)  # no batch ran after the interrupt
    np.testing.assert_array_equal(model._flat.data, cb.params)  # nothing half-applied
    assert ck.calls[-1] == ("train_end",)
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored
    # the model is usable: training goes on from where it stopped
    h2 = fit(model, opt, X, y, epochs=2, initial_epoch=1)
    assert not h2.interrupted and np.isfinite(h2.history["loss"]).all()


def test_ctrl_c_in_chunked_run_and_in_epoch_end(capsys):
    X, y = data()
    model, opt = make()

    def on_epoch_end(epoch, logs):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)  # arrives between chunks/epochs

    hist = fit(model, opt, X, y, epochs=5, callbacks=[LambdaCallback(on_epoch_end=on_epoch_end)])
    assert hist.interrupted and hist.epoch == [0, 1]
    capsys.readouterr()


def test_keyboard_interrupt_inside_a_step_rolls_back_to_epoch_start(monkeypatch, capsys):
    X, y = data()
    model, opt = make()
    starts = []

    class Watch(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            starts.append(self.model._flat.data.copy())

    from fastnn import training

    real_make = training.make_runner

    class Breaking:
        """Whichever runner fit picks, raising KeyboardInterrupt inside a step of epoch 1."""

        def __init__(self, runner):
            self.runner, self.n_batches = runner, runner.n_batches

        def run(self, order, first, last):
            if len(starts) == 2 and first >= 3:
                raise KeyboardInterrupt  # as if it arrived between forward and step
            return self.runner.run(order, first, last)

    monkeypatch.setattr(training, "make_runner", lambda *a, **k: Breaking(real_make(*a, **k)))
    hist = fit(model, opt, X, y, epochs=4, callbacks=[Watch(), Recorder()])
    assert hist.interrupted and hist.epoch == [0]
    np.testing.assert_array_equal(model._flat.data, starts[1])
    assert "rolled back" in capsys.readouterr().err


# -- printing ----------------------------------------------------------------------------------
class FakeTTY(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(
    ("verbose", "tty", "bar"),
    [(1, True, True), (1, False, False), (2, True, False), (0, True, False)],
)
def test_progress_bar_only_on_a_terminal_with_verbose_1(monkeypatch, verbose, tty, bar):
    X, y = data()
    model, opt = make()
    out = FakeTTY() if tty else io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr(_progress, "INTERVAL", 0.0)  # draw after every chunk
    fit(
        model, opt, X, y, epochs=2, batch_size=16, verbose=verbose, callbacks=[Recorder()]
    )  # batch by batch: several draws per epoch
    text = out.getvalue()
    assert ("samples/s - " in text and " left" in text) == bar
    assert ("\r" in text) == bar
    lines = [ln for ln in text.replace("\r", "\n").split("\n") if ln.startswith("epoch ")]
    assert len(lines) == (2 if verbose else 0)


def test_progress_bar_render():
    bar = _progress.ProgressBar(60000, io.StringIO(), start=0.0)
    text = bar.render(15000, 2.0, loss=0.25)
    assert text.startswith("15,000/60,000 [######")
    assert "25%" in text and "7,500 samples/s" in text and "6s left" in text
    assert "loss 0.2500" in text
    assert "?" in bar.render(0, 0.0)
    assert _progress._duration(3725) == "1h02m" and _progress._duration(75) == "1m15s"
    assert not bar.update(10, now=0.1) and bar.update(20, now=0.3)
    bar.clear()
    assert bar.stream.getvalue().endswith("\r") and bar.drawn == 0
