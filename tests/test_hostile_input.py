"""Hostile input (issue 22): every argument of the public API either works like its clean
float32 equivalent or raises ValueError/TypeError naming the argument, with the parameters
unchanged.  First the numbered failures of the issue, one test each; then a property-based
suite (hypothesis) over the forms data can take.

Profiles: ``ci`` (the default: about a minute on a 2-core machine) and ``long`` (run it
locally before a release)::

    FASTNN_HYPOTHESIS_PROFILE=long python -m pytest tests/test_hostile_input.py \\
        --hypothesis-show-statistics
"""

import os
import re
import threading

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn as fnn
import fastnn.sklearn  # noqa: F401 (fnn.sklearn)

settings.register_profile(
    "ci", max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.register_profile(
    "long", max_examples=20000, deadline=None, suppress_health_check=list(HealthCheck)
)
PROFILE = os.environ.get("FASTNN_HYPOTHESIS_PROFILE", "ci")

N_IN, N_OUT = 5, 3


def mlp(seed=0, dtype=np.float32):
    return fnn.Sequential(
        fnn.Linear(N_IN, 8, seed=seed, dtype=dtype),
        fnn.ReLU(),
        fnn.Linear(8, N_OUT, seed=seed + 1, dtype=dtype),
    )


def data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, N_IN)).astype(np.float32)
    return X, rng.integers(0, N_OUT, n)


def state(model, opt):
    return (
        model._flat.data.copy(),
        model._flat.grad.copy(),
        [{k: v.copy() for k, v in s.items()} for s in opt.state],
        opt.step_count,
    )


def assert_unchanged(before, model, opt):
    data_, grad, opt_state, steps = before
    np.testing.assert_array_equal(model._flat.data, data_)
    np.testing.assert_array_equal(model._flat.grad, grad)
    for s, saved in zip(opt.state, opt_state, strict=True):
        for k, v in s.items():
            np.testing.assert_array_equal(v, saved[k])
    assert opt.step_count == steps


FIT = dict(loss=fnn.SoftmaxCrossEntropy(), epochs=2, batch_size=8, seed=1, verbose=0)


# -- failure 3: an optimizer that does not hold the model's parameters -----------------------------
def test_fit_refuses_an_optimizer_made_before_a_layer_was_added():
    model = fnn.Sequential(fnn.Linear(N_IN, 8, seed=0), fnn.ReLU())
    opt = fnn.SGD(model.parameters(), lr=0.1)
    model.add(fnn.Linear(8, N_OUT, seed=1))
    before = state(model, fnn.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="optimizer does not update parameter"):
        model.fit(*data(), optimizer=opt, **FIT)
    np.testing.assert_array_equal(model._flat.data, before[0])


@pytest.mark.parametrize("which", ["other-model", "subset", "copy-of-params"])
def test_fit_refuses_an_optimizer_of_other_parameters(which):
    model, other = mlp(0), mlp(5)
    params = {
        "other-model": other.parameters(),
        "subset": model.parameters()[:2],
        "copy-of-params": [fnn.Parameter(p.data.copy()) for p in model.parameters()],
    }[which]
    opt = fnn.SGD(params, lr=0.1, momentum=0.9)
    before = state(model, opt)
    with pytest.raises(ValueError, match="optimizer"):
        model.fit(*data(), optimizer=opt, **FIT)
    assert_unchanged(before, model, opt)


def test_an_optimizer_over_the_parameters_one_by_one_still_trains():
    model = mlp()
    opt = fnn.SGD(list(reversed(model.parameters())), lr=0.1)  # not one run: a group each
    before = model._flat.data.copy()
    model.fit(*data(), optimizer=opt, **FIT)
    assert not np.array_equal(model._flat.data, before)


# -- failure 6 (lr) and hyper-parameters set after construction ------------------------------------
OPTIMIZERS = {
    "SGD": (
        lambda p: fnn.SGD(p, lr=0.1, momentum=0.5),
        ["lr", "momentum", "dampening", "weight_decay"],
    ),  # fmt: skip
    "Adam": (lambda p: fnn.Adam(p), ["lr", "eps", "weight_decay"]),
    "AdamW": (lambda p: fnn.AdamW(p), ["lr", "eps", "weight_decay"]),
    "RMSprop": (
        lambda p: fnn.RMSprop(p, momentum=0.5),
        ["lr", "alpha", "eps", "weight_decay", "momentum"],
    ),  # fmt: skip
    "Adagrad": (lambda p: fnn.Adagrad(p), ["lr", "lr_decay", "weight_decay", "eps"]),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize(
    "bad,exc",
    [
        (-1, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("0.1", TypeError),
        (True, TypeError),
        (None, TypeError),
        (1j, TypeError),
    ],  # fmt: skip
    ids=["negative", "nan", "inf", "str", "bool", "none", "complex"],
)
def test_hyperparameters_are_checked_when_set(name, bad, exc):
    make, attrs = OPTIMIZERS[name]
    opt = make(mlp().parameters())
    for attr in attrs:
        old = getattr(opt, attr)
        with pytest.raises(exc, match=attr):
            setattr(opt, attr, bad)
        assert getattr(opt, attr) == old
    if name.startswith("Adam"):
        for betas in [(0.9, 1.0), (-0.1, 0.9), (0.9,), "ab", None]:
            with pytest.raises((ValueError, TypeError), match="betas"):
                opt.betas = betas
        assert opt.betas == (0.9, 0.999)
    with pytest.raises(ValueError, match="max_grad_norm"):
        opt.max_grad_norm = 0.0
    opt.max_grad_norm = None  # switching clipping off stays allowed
    opt.lr = np.float32(0.5)  # NumPy scalars are numbers
    assert opt.lr == 0.5 and type(opt.lr) is float


def test_negative_lr_set_after_construction_is_refused_before_training():
    """Failure 6: opt.lr = -1 after construction ran gradient ascent."""
    model = mlp()
    opt = fnn.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.lr = -1
    model.fit(*data(), optimizer=opt, **FIT)
    assert opt.lr == 0.1


@pytest.mark.parametrize("bad,exc", [(2**70, ValueError), (-1, ValueError), (1.5, TypeError),
                                     (np.inf, TypeError)])  # fmt: skip
def test_step_count_is_checked_when_set(bad, exc):
    """Failure 5: a huge step_count reached the Adam kernel as a numba TypingError."""
    opt = fnn.Adam(mlp().parameters())
    with pytest.raises(exc, match="step_count"):
        opt.step_count = bad
    opt.step_count = 2**40
    model = mlp()
    opt = fnn.Adam(model.parameters())
    opt.step_count = 2**40
    model.fit(*data(), optimizer=opt, **FIT)
    assert opt.step_count == 2**40 + 6


# -- failure 5: batch_size beyond int64, float16 memory maps ---------------------------------------
@pytest.mark.parametrize("batch_size", [24, 25, 2**31, 2**63, 2**70, 10**100])
def test_batch_size_beyond_the_data_is_the_whole_data(batch_size):
    """Failure 5: batch_size=2**70 raised a numba TypingError or OverflowError."""
    X, y = data()
    want = mlp()
    want.fit(X, y, optimizer=fnn.SGD(want.parameters(), lr=0.1), **FIT | {"batch_size": 24})
    got = mlp()
    got.fit(X, y, optimizer=fnn.SGD(got.parameters(), lr=0.1), **FIT | {"batch_size": batch_size})
    np.testing.assert_array_equal(got._flat.data, want._flat.data)
    np.testing.assert_array_equal(got.predict(X, batch_size=batch_size), got.predict(X))


def test_float16_memory_map_is_converted_per_batch(tmp_path):
    """Failure 5: a float16 memory-mapped X raised numba's NotImplementedError."""
    X, y = data(64)
    X16 = X.astype(np.float16)
    np.save(tmp_path / "x16.npy", X16)
    mm = np.load(tmp_path / "x16.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap) and mm.dtype == np.float16
    runs = []
    for X_ in (X16, mm):
        model = mlp()
        opt = fnn.SGD(model.parameters(), lr=0.1, momentum=0.9)
        h = model.fit(X_, y, optimizer=opt, validation_data=(mm, y), **FIT)
        runs.append((model._flat.data.copy(), h.history["val_loss"]))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runs[1][1], runs[0][1], rtol=1e-5)


@pytest.mark.parametrize(
    "make,word",
    [
        (lambda: fnn.Linear(10**6, 10**6), "Linear(n_in=1000000"),
        (lambda: fnn.Linear(2**70, 3), "Linear(n_in="),
        (lambda: fnn.LayerNorm(2**40), "LayerNorm"),
        (lambda: fnn.BatchNorm1d(2**40), "BatchNorm1d"),
        (lambda: fnn.datasets.make_memmap_dataset("/nonexistent/x.npy", 10, 2**40), "n_features"),
        (
            lambda: fnn.sklearn.MLPClassifier(hidden_layer_sizes=(2**40,), max_iter=1).fit(
                np.ones((4, 3)), [0, 1, 0, 1]
            ),
            "hidden_layer_sizes",
        ),  # fmt: skip
        (lambda: fnn.Linear(3, 3, seed="x"), "seed"),
    ],
    ids=["linear-1e12", "linear-2^70", "layernorm", "batchnorm", "memmap", "sklearn", "seed"],
)
def test_sizes_beyond_the_machine_are_argument_errors(make, word):
    """Failure 5's class: MemoryError / OverflowError from deep inside NumPy named nothing."""
    with pytest.raises((ValueError, TypeError), match=re.escape(word)):
        make()


# -- failure 6: cross-entropy targets must be probability rows -------------------------------------
@pytest.mark.parametrize("loss_cls", [fnn.SoftmaxCrossEntropy, fnn.CrossEntropy])
@pytest.mark.parametrize(
    "make_T",
    [
        lambda T: T - 0.5,  # negative values (the loss went to -8.3)
        lambda T: T * 2,  # rows summing to 2
        lambda T: T * 0.5,
        lambda T: np.zeros_like(T),
        lambda T: np.where(T > 0, 1.5, -0.25),  # sums to 1, but negative entries
    ],
    ids=["negative", "sum-2", "sum-half", "zeros", "sum-1-negative"],
)
def test_cross_entropy_targets_must_be_probability_rows(loss_cls, make_T):
    X, y = data()
    T = make_T(np.eye(N_OUT)[y])
    model = mlp()
    if loss_cls is fnn.CrossEntropy:
        model.add(fnn.Softmax())
    opt = fnn.SGD(model.parameters(), lr=0.1)
    before = state(model, opt)
    with pytest.raises(ValueError, match="y must hold probability rows"):
        model.fit(X, T, optimizer=opt, **FIT | {"loss": loss_cls()})
    assert_unchanged(before, model, opt)
    with pytest.raises(ValueError, match="target must hold probability rows"):
        loss_cls().forward(np.full((len(y), N_OUT), 1 / 3, np.float32), T)
    with pytest.raises(ValueError, match=r"validation_data\[1\] must hold probability rows"):
        model.fit(X, y, optimizer=opt, validation_data=(X, T), **FIT | {"loss": loss_cls()})


def test_soft_probability_rows_are_accepted():
    X, y = data()
    T = np.full((len(y), N_OUT), 0.1, np.float64)
    T[np.arange(len(y)), y] = 0.8
    model = mlp()
    model.fit(X, T.astype(np.float32), optimizer=fnn.SGD(model.parameters(), lr=0.1), **FIT)
    assert fnn.SoftmaxCrossEntropy().forward(np.zeros((len(y), N_OUT)), T) > 0


# -- nested Sequentials and BCEWithLogits accuracy -------------------------------------------------
def nested_bn():
    return fnn.Sequential(
        fnn.Linear(N_IN, 8, seed=0),
        fnn.Sequential(fnn.BatchNorm1d(8), fnn.ReLU()),
        fnn.Linear(8, N_OUT, seed=1),
    )


def test_smallest_batch_check_covers_nested_layers():
    model = nested_bn()
    opt = fnn.SGD(model.parameters(), lr=0.1)
    before = state(model, opt)
    with pytest.raises(ValueError, match="BatchNorm1d needs at least 2"):
        model.fit(*data(25), optimizer=opt, **FIT)  # 25 = 3 * 8 + 1
    assert_unchanged(before, model, opt)


def test_divergence_restores_nested_layer_state():
    model = nested_bn()
    bn = model.layers[1].layers[0]
    X, y = data()
    warm = fnn.SGD(model.parameters(), lr=0.01)
    model.fit(X, y, optimizer=warm, **FIT | {"epochs": 1})
    mean, var = bn.running_mean.copy(), bn.running_var.copy()
    params = model._flat.data.copy()
    opt = fnn.SGD(model.parameters(), lr=1e38)
    with pytest.raises(fnn.TrainingDivergedError):
        model.fit(X * 1e4, y, optimizer=opt, **FIT | {"epochs": 1})
    np.testing.assert_array_equal(model._flat.data, params)
    np.testing.assert_array_equal(bn.running_mean, mean)
    np.testing.assert_array_equal(bn.running_var, var)


def test_bce_binary_classifier_records_accuracy():
    X, _ = data(64)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    model = fnn.Sequential(fnn.Linear(N_IN, 8, seed=0), fnn.Tanh(), fnn.Linear(8, 1, seed=1))
    opt = fnn.Adam(model.parameters(), lr=0.05)
    h = model.fit(X, y, loss=fnn.BCEWithLogits(), optimizer=opt, epochs=5, batch_size=16,
                  validation_data=(X, y), verbose=0)  # fmt: skip
    assert "accuracy" in h.history and "val_accuracy" in h.history
    manual = np.mean((model.predict(X)[:, 0] > 0) == (y == 1))
    assert h.history["val_accuracy"][-1] == manual
    assert h.history["accuracy"][-1] > 0.6
    soft = model.fit(X, y * 0.8 + 0.1, loss=fnn.BCEWithLogits(), optimizer=opt, epochs=1,
                     batch_size=16, verbose=0)  # fmt: skip
    assert "accuracy" not in soft.history  # probability targets: no labels to count


# -- threads ---------------------------------------------------------------------------------------
def test_concurrent_predicts_give_the_single_threaded_results():
    model = fnn.Sequential(fnn.Linear(N_IN, 64, seed=0), fnn.ReLU(), fnn.Linear(64, N_OUT))
    inputs = [np.random.default_rng(k).standard_normal((300 + 7 * k, N_IN)) for k in range(16)]
    want = [model.predict(X, batch_size=64) for X in inputs]
    got, errors = [None] * len(inputs), []
    barrier = threading.Barrier(len(inputs))

    def work(k):
        try:
            barrier.wait()
            for _ in range(5):
                got[k] = model.predict(inputs[k], batch_size=64)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_a_second_fit_of_a_fitting_model_raises():
    model = mlp()
    opt = fnn.SGD(model.parameters(), lr=0.1)
    seen = []

    class FitAgain(fnn.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs):
            def other():
                try:
                    model.fit(*data(), optimizer=opt, **FIT)
                except RuntimeError as exc:
                    seen.append(exc)

            t = threading.Thread(target=other)
            t.start()
            t.join()
            try:  # and from the fit's own thread (a callback)
                model.fit(*data(), optimizer=opt, **FIT)
            except RuntimeError as exc:
                seen.append(exc)

    model.fit(*data(), optimizer=opt, callbacks=[FitAgain()], **FIT | {"epochs": 1})
    assert len(seen) == 2 and all("already being fitted" in str(e) for e in seen)
    model.fit(*data(), optimizer=opt, **FIT)  # free again afterwards
    other = mlp()  # other models fit concurrently as before
    other.fit(*data(), optimizer=fnn.SGD(other.parameters(), lr=0.1), **FIT)


# -- property-based suite --------------------------------------------------------------------------
X_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.bool_]
COUNTS = {"cases": 0, "matched": 0, "refused": 0}


def x_variant(draw, X):
    """(variant, clean float32 copy of its values or None when it must be refused, name)."""
    dtype = draw(st.sampled_from(X_DTYPES))
    scale = 3 if np.dtype(dtype).kind in "iu" else 1
    base = (X * scale).astype(dtype) if dtype != np.bool_ else X > 0
    clean = np.asarray(base, np.float64).astype(np.float32)
    layout = draw(st.sampled_from(["C", "F", "rows", "cols", "neg", "list", "pandas"]))
    if layout == "F":
        V = np.asfortranarray(base)
    elif layout == "rows":
        V = np.repeat(base, 2, axis=0)[::2]
    elif layout == "cols":
        V = np.repeat(base, 3, axis=1)[:, ::3]
    elif layout == "neg":
        V = base[::-1].copy()[::-1]  # negative strides
    elif layout == "list":
        V = base.tolist()
    elif layout == "pandas":
        V = pd.DataFrame(base)
    else:
        V = base
    bad = None
    if np.dtype(dtype).kind == "f" and draw(st.booleans()) and draw(st.booleans()):
        value = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        i, j = draw(st.integers(0, X.shape[0] - 1)), draw(st.integers(0, X.shape[1] - 1))
        V = np.array(base, copy=True)
        V[i, j] = value
        bad = "X"
    return V, clean, bad, f"{np.dtype(dtype).name}/{layout}"


def mostly(draw, good, bad):
    """A value from ``good``, or one of ``bad`` one time in eight."""
    return draw(st.sampled_from(bad)) if draw(st.integers(0, 7)) == 0 else draw(good)


def y_variant(draw, y):
    kind = draw(st.sampled_from(["int64", "int32", "uint8", "float", "list", "series",
                                 "too-large", "negative", "fraction", "nan", "strings", "2-D",
                                 "onehot", "short"]))  # fmt: skip
    bad = "y"
    if kind == "int64":
        v, bad = y, None
    elif kind == "int32":
        v, bad = y.astype(np.int32), None
    elif kind == "uint8":
        v, bad = y.astype(np.uint8), None
    elif kind == "float":
        v, bad = y.astype(np.float64), None
    elif kind == "list":
        v, bad = y.tolist(), None
    elif kind == "series":
        v, bad = pd.Series(y), None
    elif kind == "onehot":
        v, bad = np.eye(N_OUT)[y], None
    elif kind == "too-large":
        v = y.copy()
        v[draw(st.integers(0, len(y) - 1))] = N_OUT
    elif kind == "negative":
        v = y.copy()
        v[draw(st.integers(0, len(y) - 1))] = -1
    elif kind == "fraction":
        v = y.astype(np.float64)
        v[0] += 0.5
    elif kind == "nan":
        v = y.astype(np.float64)
        v[-1] = np.nan
    elif kind == "strings":
        v = y.astype(str)
    elif kind == "2-D":
        v = y.reshape(-1, 1)
    else:
        v = y[:-1]
    return v, bad


@settings(settings.get_profile(PROFILE))
@given(st.data())
def test_fit_matches_the_clean_float32_fit_or_refuses(data_):
    draw = data_.draw
    n = draw(st.integers(1, 40))
    X, y = data(n, seed=draw(st.integers(0, 3)))
    Xv, X_clean, bad_x, x_name = x_variant(draw, X)
    yv, bad_y = y_variant(draw, y)
    batch_size = mostly(draw, st.integers(1, 50), [0, -3, 2**70, 2.0, True])
    epochs = mostly(draw, st.integers(1, 3), [0, -1, 1.5, None])
    lr = mostly(draw, st.floats(1e-4, 0.5), [-0.1, np.nan, np.inf])
    bad_args = [
        name
        for name, ok in (
            ("batch_size", type(batch_size) is int and batch_size >= 1),
            ("epochs", type(epochs) is int and epochs >= 1),
        )
        if not ok
    ]
    COUNTS["cases"] += 1
    if not np.isfinite(lr) or lr < 0:
        model = mlp()
        with pytest.raises(ValueError, match="lr"):
            fnn.SGD(model.parameters(), lr=lr)
        COUNTS["refused"] += 1
        return
    kwargs = dict(loss=fnn.SoftmaxCrossEntropy(), epochs=epochs, batch_size=batch_size, seed=2,
                  verbose=0)  # fmt: skip
    model = mlp()
    opt = fnn.SGD(model.parameters(), lr=lr, momentum=0.9)
    # one clean step first so that gradients and momentum are non-trivial
    model.fit(X, y, optimizer=opt, **FIT | {"epochs": 1})
    before = state(model, opt)
    expect_error = bad_x or bad_y or bad_args
    diverged = False
    try:
        model.fit(Xv, yv, optimizer=opt, **kwargs)
    except fnn.TrainingDivergedError:
        diverged = True  # then the clean fit must diverge the same way (below)
    except (ValueError, TypeError) as exc:
        assert expect_error, f"{x_name}: unexpected {exc!r}"
        named = [w for w in [bad_x, bad_y, *bad_args] if w]
        assert any(w in str(exc) for w in named), f"{named} not in {exc}"
        assert_unchanged(before, model, opt)
        COUNTS["refused"] += 1
        return
    assert not expect_error, f"{x_name}, y bad={bad_y}, {bad_args}: accepted"
    ref = mlp()
    ref_opt = fnn.SGD(ref.parameters(), lr=lr, momentum=0.9)
    ref.fit(X, y, optimizer=ref_opt, **FIT | {"epochs": 1})
    y_clean = np.asarray(np.asarray(yv).argmax(1) if np.ndim(yv) == 2 else y)
    if np.ndim(yv) == 2:
        y_clean = np.eye(N_OUT, dtype=np.float32)[y_clean]
    if diverged:
        with pytest.raises(fnn.TrainingDivergedError):
            ref.fit(X_clean, y_clean, optimizer=ref_opt, **kwargs)
    else:
        ref.fit(X_clean, y_clean, optimizer=ref_opt, **kwargs)
    np.testing.assert_array_equal(model._flat.data, ref._flat.data, err_msg=x_name)
    np.testing.assert_array_equal(model.predict(Xv), ref.predict(X_clean), err_msg=x_name)
    COUNTS["matched"] += 1


@settings(settings.get_profile(PROFILE))
@given(st.data())
def test_predict_matches_the_clean_float32_predict_or_refuses(data_):
    draw = data_.draw
    X, _ = data(draw(st.integers(1, 30)), seed=draw(st.integers(0, 3)))
    Xv, X_clean, bad_x, name = x_variant(draw, X)
    batch_size = mostly(draw, st.integers(1, 40), [0, -1, 2**70, 1.5])
    model = mlp()
    params = model._flat.data.copy()
    named = [bad_x] if bad_x else []
    if type(batch_size) is not int or batch_size < 1:
        named.append("batch_size")
    bad = bool(named)
    try:
        out = model.predict(Xv, batch_size=batch_size)
    except (ValueError, TypeError) as exc:
        assert bad, f"{name}: unexpected {exc!r}"
        assert any(w in str(exc) for w in named), f"{named} not in {exc}"
    else:
        assert not bad, name
        np.testing.assert_array_equal(out, model.predict(X_clean))
    np.testing.assert_array_equal(model._flat.data, params)


def test_zz_report_case_counts(capsys):
    with capsys.disabled():
        print(f"\nhostile-input property cases ({PROFILE}): {COUNTS}")
