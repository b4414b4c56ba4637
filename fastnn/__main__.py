"""Command line: python -m fastnn train (the main job), warmup (compile ahead of time) and bench.

Installing fastnn also puts a ``fastnn`` script on the PATH that runs the same ``main``.
"""

import argparse
import sys
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

import fastnn as fnn
from fastnn import sklearn as fnn_sklearn

from ._compile import cache_folder, compile_seconds, silenced
from .bench import add_parser as add_bench_parser
from .bench import run as run_bench

DESCRIPTION = """\
fastnn: fast multilayer perceptrons on the CPU, from compiled numba kernels.
The first run compiles the kernels for this CPU (about 30 s); later runs load
them from the on-disk cache."""

EPILOG = """\
examples:
  python -m fastnn train                      train on the bundled 8x8 digits
  python -m fastnn train --hidden 256 128 --optimizer adam --epochs 10
  python -m fastnn warmup                     compile the kernels ahead of time
  python -m fastnn bench --shapes 784-100-10@64
  python -m fastnn COMMAND --help             the options of one command

The installed "fastnn" command is the same as "python -m fastnn"."""


def _article(word):
    """'a' or 'an' before ``word`` (by its first letter, which suits 'int' and 'float')."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _positive(kind):
    """argparse type: a number of ``kind`` (int or float) that is > 0."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {_article(kind.__name__)} {kind.__name__}, got {text!r}"
            ) from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _train_parser(sub):
    p = sub.add_parser(
        "train",
        help="train an MLP on scikit-learn's bundled 8x8 digits and report test accuracy",
        description="Train an MLP on scikit-learn's bundled 8x8 digits (1797 images, 10 classes; "
        "no download): a stratified 75/25 train/test split, features standardised with the "
        "training statistics, one progress line per epoch, then the test accuracy and the "
        "training throughput.",
    )
    p.add_argument(
        "--hidden",
        type=_positive(int),
        nargs="+",
        default=[128],
        metavar="N",
        help="hidden layer sizes (default: 128)",
    )
    p.add_argument(
        "--activation",
        default="relu",
        choices=["relu", "leaky_relu", "tanh", "sigmoid", "identity"],
        help="activation of every hidden layer (default: relu)",
    )
    p.add_argument(
        "--epochs", type=_positive(int), default=30, help="training epochs (default: 30)"
    )
    p.add_argument(
        "--batch-size", type=_positive(int), default=32, help="mini-batch size (default: 32)"
    )
    p.add_argument(
        "--lr",
        type=_positive(float),
        default=None,
        help="learning rate (default: 0.05 for sgd, 0.001 for adam/adamw)",
    )
    p.add_argument(
        "--optimizer",
        default="sgd",
        choices=["sgd", "adam", "adamw"],
        help="sgd uses Nesterov momentum 0.9 (default: sgd)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64"],
        help="floating-point type of the model (default: float32)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed for the split, weights and shuffling (default: 0)"
    )
    p.add_argument(
        "--threads",
        type=_positive(int),
        default=None,
        help="threads for kernels and BLAS (default: all cores)",
    )
    p.add_argument("--quiet", action="store_true", help="only print the final results")
    return p


def train(args):
    if args.threads is not None:
        fnn.set_num_threads(args.threads)
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=args.seed
    )
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    std[std == 0] = 1.0
    X_train = ((X_train - mean) / std).astype(args.dtype)
    X_test = ((X_test - mean) / std).astype(args.dtype)

    layers = []
    sizes = [X.shape[1], *args.hidden]
    act = fnn.layers.ACTIVATIONS[args.activation]
    init = "he" if args.activation in ("relu", "leaky_relu") else "glorot"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers += [fnn.Linear(a, b, init=init, dtype=args.dtype, seed=args.seed + i), act()]
    layers.append(
        fnn.Linear(sizes[-1], 10, init=init, dtype=args.dtype, seed=args.seed + len(sizes))
    )
    model = fnn.Sequential(*layers)
    lr = args.lr if args.lr is not None else (0.05 if args.optimizer == "sgd" else 1e-3)
    if args.optimizer == "sgd":
        opt = fnn.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    elif args.optimizer == "adam":
        opt = fnn.Adam(model.parameters(), lr=lr)
    else:
        opt = fnn.AdamW(model.parameters(), lr=lr)
    if not args.quiet:
        print(model)
        print(
            f"digits: {len(X_train)} training and {len(X_test)} test samples, "
            f"{fnn.get_num_threads()} threads"
        )
    t0, c0 = time.perf_counter(), compile_seconds()
    history = model.fit(
        X_train,
        y_train,
        loss=fnn.SoftmaxCrossEntropy(),
        optimizer=opt,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        validation_data=(X_test, y_test),
        verbose=0 if args.quiet else 1,
    )
    compiling = compile_seconds() - c0
    seconds = time.perf_counter() - t0 - compiling
    accuracy = float(np.mean(model.predict(X_test).argmax(axis=1) == y_test))
    rates = history.history["samples_per_second"]
    print(f"test accuracy: {accuracy:.4f}")
    epochs = len(rates)
    print(
        f"training throughput: {np.median(rates):,.0f} samples/s (median over epochs; "
        f"{seconds:.2f} s for {epochs} epoch{'s' if epochs != 1 else ''}"
        + (f", plus {compiling:.1f} s of one-time kernel compilation)" if compiling else ")")
    )
    return 0


def _warmup_parser(sub):
    p = sub.add_parser(
        "warmup",
        help="compile fastnn's kernels ahead of time (for Docker images, CI caches, clusters)",
        description="Compile the kernels that fits and predictions use (or load them from the "
        "on-disk cache) now, so that the first fit of a process does not wait for it. By "
        "default: float32 training and inference, and the scikit-learn drop-ins on float64 "
        "data; --all adds float64 training, every layer, loss and optimizer, the parallel "
        "builds and the drop-ins on float32 data.",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="compile every kernel group (a few minutes the first time on 2 cores)",
    )
    return p


def _dropin_group(dtype):
    """The scikit-learn drop-ins' kernels for X of ``dtype`` (they fit in X's dtype, as
    scikit-learn does): a tiny fit of each solver and each estimator."""
    X, y = load_digits(return_X_y=True)
    X = (X[:200] / 16.0).astype(dtype)
    y = y[:200]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for solver in ("adam", "sgd", "lbfgs"):
            clf = fnn_sklearn.MLPClassifier(hidden_layer_sizes=(16,), solver=solver, max_iter=2)
            clf.fit(X, y).predict_proba(X)
            reg = fnn_sklearn.MLPRegressor(hidden_layer_sizes=(16,), solver=solver, max_iter=2)
            reg.fit(X, X[:, :2]).predict(X)


def warmup(args):
    folder = cache_folder()
    print(
        "fastnn warmup: compiling kernels for this CPU"
        + (f" into {folder}" if folder else " (numba caching is off: nothing will be kept)"),
        flush=True,
    )

    def line(name, seconds, compiled):
        state = f"compiled in {compiled:.1f} s" if compiled > 0.05 else "cached"
        print(f"  {name:<42} {seconds:6.1f} s  ({state})", flush=True)

    total = fnn.warmup(all=args.all, progress=line)
    for dtype in ("float64", "float32") if args.all else ("float64",):
        t0, c0 = time.perf_counter(), compile_seconds()
        with silenced():
            _dropin_group(dtype)
        line(f"scikit-learn drop-ins, {dtype}", time.perf_counter() - t0, compile_seconds() - c0)
        total += time.perf_counter() - t0
    print(f"done in {total:.1f} s; later processes load these kernels from the cache", flush=True)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastnn",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _warmup_parser(sub)
    add_bench_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "train":
        return train(args)
    if args.command == "warmup":
        return warmup(args)
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
