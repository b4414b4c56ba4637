"""scikit-learn drop-in: the same code with scikit-learn's MLPClassifier and with fastnn's.

What this script teaches
------------------------
``fastnn.sklearn.MLPClassifier`` takes scikit-learn's parameter names and exposes its fitted
attributes (``coefs_``, ``intercepts_``, ``n_iter_``, ``loss_curve_``, ``classes_``, ...), so
code written for ``sklearn.neural_network.MLPClassifier`` runs unchanged: here one function,
``evaluate``, is called with either class, inside a scikit-learn ``Pipeline`` with a
``StandardScaler``.  The script prints test accuracy and fit time side by side on the bundled
8x8 digits, and draws both estimators' ``loss_curve_`` with their fit times and accuracies into
``sklearn_dropin.png``.

The first fit of each estimator is an untimed warm-up: for fastnn it compiles the kernels (or
loads them from numba's on-disk cache, after the first run); for scikit-learn it imports and
warms up its code paths.  The fits after it are timed and the median is reported.
"""

import argparse
import os
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SklearnMLP
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fastnn
from fastnn.sklearn import MLPClassifier as FastnnMLP


def evaluate(Estimator, X_train, y_train, X_test, y_test, max_iter, repeats):
    """Fit and score ``Estimator`` in a pipeline; (accuracy, median fit seconds, n_iter_,
    loss_curve_)."""
    params = dict(
        hidden_layer_sizes=(100,),
        activation="relu",
        solver="adam",
        batch_size=64,
        learning_rate_init=1e-3,
        max_iter=max_iter,
        random_state=0,
    )
    with warnings.catch_warnings():
        # Both estimators warn when max_iter ends the fit before the loss stops improving by
        # tol; with a fixed epoch budget that is expected.
        warnings.simplefilter("ignore", ConvergenceWarning)
        make_pipeline(StandardScaler(), Estimator(**{**params, "max_iter": 2})).fit(
            X_train, y_train
        )  # warm-up
        seconds = []
        for _ in range(repeats):
            clf = make_pipeline(StandardScaler(), Estimator(**params))
            t0 = time.perf_counter()
            clf.fit(X_train, y_train)
            seconds.append(time.perf_counter() - t0)
    mlp = clf[-1]
    return clf.score(X_test, y_test), float(np.median(seconds)), mlp.n_iter_, mlp.loss_curve_


def plot(rows, path):
    """Loss curves of both estimators (the same training, so they overlap) and fit times."""
    import matplotlib

    matplotlib.use("Agg")  # no window: write a file
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_time) = plt.subplots(1, 2, figsize=(6, 4), dpi=100)
    for (name, _, _, _, curve), style in zip(rows, ("-", "--"), strict=True):
        ax_loss.plot(range(1, len(curve) + 1), curve, style, label=f"{name.split('.')[0]}")
    ax_loss.set(xlabel="epoch", ylabel="training loss (loss_curve_)", yscale="log")
    ax_loss.legend()
    labels = [f"{r[0].split('.')[0]}\nacc {r[1]:.3f}" for r in rows]
    ax_time.bar(labels, [r[2] for r in rows], color=["tab:gray", "tab:blue"])
    ax_time.set(ylabel="fit time (s)", title="one import changed")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-iter", type=int, default=200, help="epochs per fit (default 200)")
    p.add_argument("--out", default=".", help="folder for sklearn_dropin.png (default: .)")
    p.add_argument("--quick", action="store_true", help="20 epochs, one timed fit each")
    args = p.parse_args()
    max_iter, repeats = (20, 1) if args.quick else (args.max_iter, 3)

    # 1797 images of 8x8 pixels; 75/25 stratified split (scaling happens in the pipeline)
    X_train, X_test, y_train, y_test = fastnn.datasets.load_digits(test_size=0.25, seed=0)
    print(f"digits: {len(X_train)} training, {len(X_test)} test samples, {max_iter} epochs")

    rows = []
    for name, Estimator in (
        ("sklearn.neural_network.MLPClassifier", SklearnMLP),
        ("fastnn.sklearn.MLPClassifier", FastnnMLP),
    ):
        rows.append(
            (name, *evaluate(Estimator, X_train, y_train, X_test, y_test, max_iter, repeats))
        )

    print(f"{'estimator':<38} {'accuracy':>8} {'fit time':>10} {'epochs':>7}")
    for name, accuracy, seconds, n_iter, _ in rows:
        print(f"{name:<38} {accuracy:8.4f} {seconds:9.3f}s {n_iter:7d}")
    (_, acc_sk, t_sk, _, _), (_, acc_fn, t_fn, _, _) = rows
    print(f"fastnn fit speed-up: {t_sk / t_fn:.1f}x, accuracy difference {acc_fn - acc_sk:+.4f}")
    path = os.path.join(args.out, "sklearn_dropin.png")
    plot(rows, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
