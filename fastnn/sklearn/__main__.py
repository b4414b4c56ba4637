"""Side-by-side table: fastnn.sklearn vs scikit-learn's own MLPs, same data and parameters.

    python -m fastnn.sklearn [--repeats 5] [--threads 1] [--max-iter 100] [--dtype float64]
        [--datasets digits iris regression] [--solvers sgd adam lbfgs]

For each data set (digits and iris, standardised, stratified 25 % test split; a regression
problem from ``make_regression``) and solver (sgd, adam), both libraries fit the same
estimator with the same ``random_state``; fits are interleaved (fastnn, scikit-learn,
fastnn, ...) so both see the same machine load, and the median fit time is reported with the
test accuracy (R^2 for regression).  One warm-up fit first compiles or loads fastnn's kernels.
``--dtype`` is the dtype of X given to both (each then fits in scikit-learn's dtype for it:
float32 X in float32, float64 X in float64; lbfgs in float64 either way).
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from fastnn import sklearn as fn

#: (learning_rate_init) per solver: scikit-learn's default for adam, a common one for sgd
LEARNING_RATES = {"sgd": 0.01, "adam": 0.001, "lbfgs": 0.001}
DATASETS = ("digits", "iris", "regression")
SOLVERS = ("sgd", "adam")
ALL_SOLVERS = ("sgd", "adam", "lbfgs")


def load(name, seed=0):
    """(X_train, X_test, y_train, y_test), standardised with the training statistics."""
    from sklearn.datasets import load_digits, load_iris, make_regression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    if name == "regression":
        X, y = make_regression(n_samples=2000, n_features=20, noise=10.0, random_state=seed)
        y = (y - y.mean()) / y.std()
        stratify = None
    else:
        X, y = (load_digits if name == "digits" else load_iris)(return_X_y=True)
        stratify = y
    Xtr, Xte, ytr, yte = train_test_split(
        X, y, test_size=0.25, stratify=stratify, random_state=seed
    )
    scaler = StandardScaler().fit(Xtr)
    return scaler.transform(Xtr), scaler.transform(Xte), ytr, yte


def estimators(name, solver, max_iter, seed=0):
    """(fastnn estimator, scikit-learn estimator) with identical parameters."""
    from sklearn import neural_network as sk

    kind = "MLPRegressor" if name == "regression" else "MLPClassifier"
    params = dict(
        hidden_layer_sizes=(100,),
        solver=solver,
        learning_rate_init=LEARNING_RATES[solver],
        max_iter=max_iter,
        random_state=seed,
    )
    return getattr(fn, kind)(**params), getattr(sk, kind)(**params)


def compare(
    repeats=5, threads=1, max_iter=100, datasets=DATASETS, solvers=SOLVERS, dtype="float64"
):
    """Fit both libraries on every data set and solver; return one dict per row."""
    rows = []
    with warnings.catch_warnings(), threadpool_limits(limits=threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name in datasets:
            Xtr, Xte, ytr, yte = load(name)
            Xtr, Xte = Xtr.astype(dtype), Xte.astype(dtype)
            for solver in solvers:
                ours, theirs = estimators(name, solver, max_iter)
                ours.fit(Xtr, ytr)  # compile / load the kernels outside the timing
                times = {"fastnn": [], "sklearn": []}
                for _ in range(repeats):
                    for label, est in (("fastnn", ours), ("sklearn", theirs)):
                        start = time.perf_counter()
                        est.fit(Xtr, ytr)
                        times[label].append(time.perf_counter() - start)
                t_f, t_s = np.median(times["fastnn"]), np.median(times["sklearn"])
                rows.append(
                    dict(
                        dataset=name,
                        solver=solver,
                        epochs=(ours.n_iter_, theirs.n_iter_),
                        score=(ours.score(Xte, yte), theirs.score(Xte, yte)),
                        time_ms=(1e3 * t_f, 1e3 * t_s),
                        speedup=t_s / t_f,
                    )
                )
    return rows


def format_table(rows):
    """A Markdown table of :func:`compare`'s rows."""
    lines = [
        "| data set | solver | epochs (fastnn / sklearn) | score fastnn | score sklearn "
        "| fit fastnn (ms) | fit sklearn (ms) | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        metric = "R2" if r["dataset"] == "regression" else "acc"
        lines.append(
            f"| {r['dataset']} | {r['solver']} | {r['epochs'][0]} / {r['epochs'][1]} "
            f"| {metric} {r['score'][0]:.4f} | {metric} {r['score'][1]:.4f} "
            f"| {r['time_ms'][0]:.1f} | {r['time_ms'][1]:.1f} | {r['speedup']:.1f}x |"
        )
    return "\n".join(lines)


def _positive_int(text):
    """argparse type: an int > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastnn.sklearn",
        description="Side-by-side table: fastnn.sklearn against scikit-learn's own MLPs, same "
        "data and parameters. Digits and iris (standardised, stratified 25% test split) and a "
        "make_regression problem, hidden_layer_sizes=(100,); fits are interleaved between the "
        "libraries and the median fit time is reported with the test score. lbfgs fits in "
        "float64 whatever X's dtype.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--repeats", type=_positive_int, default=5, help="timed fits per library and case"
    )
    parser.add_argument(
        "--threads", type=_positive_int, default=1, help="BLAS threads, the same for both"
    )
    parser.add_argument(
        "--max-iter", type=_positive_int, default=100, help="epochs at most, as max_iter"
    )
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="dtype of X given to both libraries (each fits in scikit-learn's dtype for it)",
    )
    parser.add_argument(
        "--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), help="data sets"
    )
    parser.add_argument(
        "--solvers", nargs="+", choices=ALL_SOLVERS, default=list(SOLVERS), help="solvers"
    )
    args = parser.parse_args(argv)
    rows = compare(
        repeats=args.repeats,
        threads=args.threads,
        max_iter=args.max_iter,
        datasets=tuple(args.datasets),
        solvers=tuple(args.solvers),
        dtype=args.dtype,
    )
    print(
        f"hidden_layer_sizes=(100,), max_iter={args.max_iter}, "
        f"{args.threads} BLAS thread{'' if args.threads == 1 else 's'}, "
        f"X {args.dtype}, median of {args.repeats} interleaved fits"
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()
