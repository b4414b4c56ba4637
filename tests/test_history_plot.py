"""History.plot: curves per metric, a PNG when asked, a clear error without matplotlib.

matplotlib is in the test extra, so these tests run (and can fail) in CI.
"""

import sys

import numpy as np
import pytest

import fastnn as fnn


def history(val=True):
    h = fnn.History()
    for e in range(4):
        logs = {"loss": 1.0 / (e + 1), "accuracy": 0.5 + 0.1 * e}
        if val:
            logs.update(val_loss=1.2 / (e + 1), val_accuracy=0.45 + 0.1 * e)
        logs["samples_per_second"] = 1e5
        h.append(e, logs)
    return h


def test_plot_saves_png_and_returns_figure(tmp_path):
    path = tmp_path / "curves.png"
    fig = history().plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["loss", "accuracy"]  # no throughput panel
    loss_lines = axes[0].get_lines()
    assert [ln.get_label() for ln in loss_lines] == ["training", "validation"]
    np.testing.assert_allclose(loss_lines[1].get_ydata(), [1.2 / (e + 1) for e in range(4)])
    np.testing.assert_array_equal(loss_lines[0].get_xdata(), [1, 2, 3, 4])


def test_plot_metric_selection_and_errors():
    fig = history(val=False).plot(metrics="loss")
    assert len(fig.get_axes()) == 1 and len(fig.get_axes()[0].get_lines()) == 1
    with pytest.raises(ValueError, match="'f1' was not recorded"):
        history().plot(metrics=["f1"])
    with pytest.raises(ValueError, match="empty"):
        history().plot(metrics=[])


def test_plot_after_fit(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = fnn.Sequential(fnn.Linear(3, 2, seed=0))
    h = model.fit(
        X,
        y,
        loss=fnn.SoftmaxCrossEntropy(),
        optimizer=fnn.SGD(model.parameters()),
        epochs=2,
        validation_split=0.25,
        verbose=0,
    )
    h.plot(tmp_path / "fit.png")
    assert (tmp_path / "fit.png").stat().st_size > 1000


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    with pytest.raises(ImportError, match=r"fastnn\[plot\]"):
        history().plot()
