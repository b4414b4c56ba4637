"""``python -m fastnn bench --latency``: time to predict a few rows, fastnn against its peers.

For each network (``--latency-shapes``, default the digits network 64-100-10, ReLU) and each
batch of 1, 8 and 64 rows (float32), every contender predicts the same rows over and over:

- ``fastnn``: ``Sequential.predict``;
- ``onnxruntime``: the same model exported by ``fastnn.onnx`` (one intra-op thread), when
  onnx and onnxruntime are installed;
- ``torch``: the same weights in ``torch.nn.Sequential`` under ``torch.inference_mode()``,
  when torch is installed;
- ``fastnn.sklearn`` and ``sklearn``: ``MLPClassifier.predict_proba`` of the drop-in and of
  scikit-learn's own, holding the same weights (float32, so both predict in float32).

Calls are timed one by one with ``time.perf_counter``; contenders take turns in rounds of
``--latency-calls / 10`` calls so load from other processes hits each alike; the table gives
the median (p50) and the 99th percentile (p99) over all calls, in microseconds.  Every
library runs with one thread (numba, BLAS, torch, onnxruntime).
"""

import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkClassifier

from . import onnx as fonnx
from ._table import print_table
from ._threads import set_num_threads
from .layers import Linear, ReLU
from .model import Sequential
from .sklearn import MLPClassifier

BATCHES = (1, 8, 64)
DEFAULT_SHAPES = ("64-100-10",)
DEFAULT_CALLS = 5000


def _model(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(Linear(a, b, seed=i))
        if i < len(sizes) - 2:
            layers.append(ReLU())
    return Sequential(*layers)


def _linears(model):
    return [layer for layer in model.layers if isinstance(layer, Linear)]


def _onnxruntime(model):
    if not fonnx.AVAILABLE:  # the onnx extra is not installed: no onnxruntime column
        return None
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        fonnx.to_model(model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return lambda X: session.run(None, {"X": X})[0]


def _torch(model):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    modules = []
    for layer in model.layers:
        if isinstance(layer, Linear):
            lin = torch.nn.Linear(layer.n_in, layer.n_out)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(layer.weight.data.T.copy()))
                lin.bias.copy_(torch.from_numpy(layer.bias.data.copy()))
            modules.append(lin)
        else:
            modules.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*modules).eval()

    def predict(X):
        with torch.inference_mode():
            return net(torch.from_numpy(X)).numpy()

    return predict


def _estimators(model, sizes):
    """fastnn's and scikit-learn's MLPClassifier holding ``model``'s weights (float32)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4 * sizes[-1], sizes[0])).astype(np.float32)
    y = np.arange(X.shape[0]) % sizes[-1]
    hidden = tuple(sizes[1:-1])
    ests = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for make in (MLPClassifier, SkClassifier):
            est = make(hidden_layer_sizes=hidden, max_iter=1, random_state=0).fit(X, y)
            for c, b, layer in zip(est.coefs_, est.intercepts_, _linears(model), strict=True):
                c[...] = layer.weight.data
                b[...] = layer.bias.data
            ests.append(est.predict_proba)
    return ests


def contenders(model, sizes):
    """{name: predict function}, the peers that are installed."""
    out = {"fastnn": model.predict}
    ort_predict = _onnxruntime(model)
    if ort_predict is not None:
        out["onnxruntime"] = ort_predict
    torch_predict = _torch(model)
    if torch_predict is not None:
        out["torch"] = torch_predict
    ours, theirs = _estimators(model, sizes)
    out["fastnn.sklearn"] = ours
    out["sklearn"] = theirs
    return out


def measure(funcs, X, calls):
    """{name: (p50, p99) in seconds} over ``calls`` timed calls each, in interleaved rounds."""
    rounds = 10
    per_round = max(1, calls // rounds)
    times = {name: [] for name in funcs}
    for f in funcs.values():  # warm up: compilation, caches, lazy initialisation
        for _ in range(min(200, per_round)):
            f(X)
    clock = time.perf_counter
    for _ in range(rounds):
        for name, f in funcs.items():
            record = times[name]
            for _ in range(per_round):
                start = clock()
                f(X)
                record.append(clock() - start)
    return {
        name: (float(np.percentile(t, 50)), float(np.percentile(t, 99)))
        for name, t in times.items()
    }


def run_latency(shapes=DEFAULT_SHAPES, calls=DEFAULT_CALLS, batches=BATCHES, markdown=False):
    """Print the latency table; return its rows (shape, batch, name, p50 us, p99 us)."""
    set_num_threads(1)
    rows = []
    for text in shapes:
        sizes = [int(s) for s in text.split("-")]
        model = _model(sizes)
        funcs = contenders(model, sizes)
        rng = np.random.default_rng(1)
        for batch in batches:
            X = rng.standard_normal((batch, sizes[0])).astype(np.float32)
            for name, (p50, p99) in measure(funcs, X, calls).items():
                rows.append((text, batch, name, p50 * 1e6, p99 * 1e6))
    head = ("network", "rows", "contender", "p50 (us)", "p99 (us)")
    print(f"\nlatency: float32, one thread, {calls} calls per contender and batch")
    lines = [(s, str(b), n, f"{p50:.1f}", f"{p99:.1f}") for s, b, n, p50, p99 in rows]
    print_table(head, lines, markdown)
    return rows
