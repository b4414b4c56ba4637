"""Learning-rate schedules against their closed-form lr sequences (torch.optim.lr_scheduler's
definitions), ReduceLROnPlateau against hand-traced metric sequences, and the schedules as fit
callbacks (``logs["lr"]`` in History).  torch is not installed here, so the closed forms are
the only oracle."""

import math

import numpy as np
import pytest

import fastnn as fnn


def _opt(lr=1.0, kind=fnn.SGD):
    model = fnn.Sequential(fnn.Linear(2, 2, dtype=np.float64, seed=0))
    return kind(model.parameters(), lr=lr)


def _sequence(schedule, steps, metrics=None):
    """lr after construction, then after each of ``steps`` calls of step()."""
    lrs = [schedule.optimizer.lr]
    for i in range(steps):
        schedule.step(None if metrics is None else metrics[i])
        lrs.append(schedule.optimizer.lr)
    return lrs


def test_step_lr():
    sched = fnn.StepLR(_opt(0.5), step_size=3, gamma=0.2)
    expect = [0.5 * 0.2 ** (e // 3) for e in range(11)]
    np.testing.assert_allclose(_sequence(sched, 10), expect, rtol=1e-15)


def test_exponential_lr():
    sched = fnn.ExponentialLR(_opt(0.3), gamma=0.9)
    np.testing.assert_allclose(_sequence(sched, 8), [0.3 * 0.9**e for e in range(9)], rtol=1e-14)


def test_cosine_annealing_closed_form():
    base, eta_min, T = 0.1, 0.001, 10
    sched = fnn.CosineAnnealingLR(_opt(base), T_max=T, eta_min=eta_min)
    expect = [eta_min + (base - eta_min) * (1 + math.cos(math.pi * e / T)) / 2 for e in range(13)]
    lrs = _sequence(sched, 12)
    np.testing.assert_allclose(lrs, expect, rtol=1e-14)
    assert lrs[0] == base and lrs[T] == pytest.approx(eta_min, rel=1e-14)


def test_cosine_annealing_with_warmup():
    base, W, T, f = 0.2, 4, 12, 0.25
    sched = fnn.CosineAnnealingLR(_opt(base), T_max=T, warmup_epochs=W, warmup_start_factor=f)
    lrs = _sequence(sched, T)
    warm = [base * (f + (1 - f) * e / W) for e in range(W)]
    cos = [base * (1 + math.cos(math.pi * (e - W) / (T - W))) / 2 for e in range(W, T + 1)]
    np.testing.assert_allclose(lrs, warm + cos, rtol=1e-14, atol=1e-18)
    assert lrs[0] == pytest.approx(base * f) and lrs[W] == pytest.approx(base)
    assert np.all(np.diff(lrs[: W + 1]) > 0) and np.all(np.diff(lrs[W:]) < 0)


def test_reduce_on_plateau_traces_torch_rule():
    opt = _opt(1.0)
    sched = fnn.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    metrics = [1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.8, 0.8, 0.8]
    # improvements at epochs 1, 2, 6; the third bad epoch in a row (> patience) halves the lr
    expect = [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25]
    assert _sequence(sched, len(metrics), metrics) == expect


def test_reduce_on_plateau_threshold_min_lr_cooldown_and_max_mode():
    # rel threshold: 0.99995 is not an improvement on 1.0 when threshold = 1e-4
    sched = fnn.ReduceLROnPlateau(_opt(1.0), factor=0.1, patience=0)
    assert _sequence(sched, 2, [1.0, 0.99995]) == [1.0, 1.0, 0.1]
    # min_lr floors the reduction; reductions smaller than eps are skipped
    sched = fnn.ReduceLROnPlateau(_opt(1.0), factor=0.1, patience=0, min_lr=0.05)
    assert _sequence(sched, 4, [1.0, 2.0, 2.0, 2.0]) == [1.0, 1.0, 0.1, 0.05, 0.05]
    # cooldown: after a reduction, bad epochs do not count for `cooldown` epochs
    sched = fnn.ReduceLROnPlateau(_opt(1.0), factor=0.5, patience=0, cooldown=2)
    lrs = _sequence(sched, 6, [1.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    # mode max with an absolute threshold
    sched = fnn.ReduceLROnPlateau(
        _opt(1.0), mode="max", factor=0.5, patience=1, threshold=0.1, threshold_mode="abs"
    )
    assert _sequence(sched, 4, [0.5, 0.55, 0.58, 0.9]) == [1.0, 1.0, 1.0, 0.5, 0.5]


@pytest.mark.parametrize("kind", [fnn.SGD, fnn.Adam, fnn.RMSprop, fnn.Adagrad])
def test_schedules_drive_every_optimizer(kind):
    """The optimizer reads ``lr`` at each step: a step after the schedule moves by the new lr."""
    opt = _opt(0.5, kind)
    twin = _opt(0.5 * 0.1, kind)  # same optimizer built directly with the scheduled lr
    sched = fnn.StepLR(opt, step_size=1, gamma=0.1)
    sched.step()
    for o in (opt, twin):
        o.params[0].grad[...] = 1.0
        o.step()
    np.testing.assert_allclose(opt.params[0].data, twin.params[0].data, rtol=1e-14)


def test_schedule_as_fit_callback_records_lr():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 2)), rng.integers(0, 2, 16)
    model = fnn.Sequential(fnn.Linear(2, 2, dtype=np.float64, seed=0))
    opt = fnn.SGD(model.parameters(), lr=1.0)
    hist = model.fit(
        X,
        y,
        loss=fnn.SoftmaxCrossEntropy(),
        optimizer=opt,
        epochs=5,
        batch_size=8,
        verbose=0,
        callbacks=[fnn.StepLR(opt, step_size=2, gamma=0.5)],
    )
    assert hist["lr"] == [1.0, 1.0, 0.5, 0.5, 0.25]  # the lr each epoch trained with
    assert opt.lr == 0.25


def test_reduce_on_plateau_in_fit_reads_the_monitored_metric():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((16, 2)), rng.integers(0, 2, 16)
    model = fnn.Sequential(fnn.Linear(2, 2, dtype=np.float64, seed=0))
    opt = fnn.SGD(model.parameters(), lr=1e-3)
    # a 50 % relative threshold: after the first epoch nothing counts as an improvement
    sched = fnn.ReduceLROnPlateau(opt, monitor="loss", patience=1, threshold=0.5)
    hist = model.fit(
        X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, epochs=4, verbose=0, callbacks=[sched]
    )
    np.testing.assert_allclose(hist["lr"], [1e-3, 1e-3, 1e-3, 1e-4], rtol=1e-12)
    with pytest.warns(RuntimeWarning, match="val_loss"):
        model.fit(
            X,
            y,
            loss=fnn.SoftmaxCrossEntropy(),
            optimizer=opt,
            epochs=1,
            verbose=0,
            callbacks=[fnn.ReduceLROnPlateau(opt)],
        )


def test_schedule_for_another_optimizer_is_refused_before_training():
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((8, 2)), rng.integers(0, 2, 8)
    model = fnn.Sequential(fnn.Linear(2, 2, dtype=np.float64, seed=0))
    opt = fnn.SGD(model.parameters(), lr=0.1)
    before = model._flat.data.copy()
    with pytest.raises(ValueError, match="another optimizer"):
        model.fit(
            X,
            y,
            loss=fnn.SoftmaxCrossEntropy(),
            optimizer=opt,
            verbose=0,
            callbacks=[fnn.StepLR(_opt(), 1)],
        )
    np.testing.assert_array_equal(model._flat.data, before)


def test_bad_schedule_arguments():
    with pytest.raises(TypeError, match="optimizer"):
        fnn.StepLR("sgd", 1)
    with pytest.raises(ValueError, match="step_size"):
        fnn.StepLR(_opt(), 0)
    with pytest.raises(ValueError, match="warmup_epochs"):
        fnn.CosineAnnealingLR(_opt(), T_max=5, warmup_epochs=5)
    with pytest.raises(ValueError, match="factor"):
        fnn.ReduceLROnPlateau(_opt(), factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        fnn.ReduceLROnPlateau(_opt(), mode="up")
    with pytest.raises(ValueError, match="metric"):
        fnn.ReduceLROnPlateau(_opt()).step()
