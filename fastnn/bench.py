"""``python -m fastnn bench``: one training epoch of fastnn against its peers, interleaved.

For every network shape the bench builds the same multilayer perceptron (ReLU hidden layers,
or sigmoid or tanh with ``--activation``; softmax cross-entropy on integer labels, plain SGD)
in each contender and times one epoch over the same synthetic data (standard normal X,
uniform random labels; nothing is downloaded):

- ``fastnn``: ``Sequential.fit(..., epochs=1)``, validation and all;
- ``numpy``: a vectorised NumPy reference with preallocated buffers (:class:`NumpyMLP`);
- ``torch``: PyTorch on the CPU, the usual zero_grad / forward / loss / backward / step loop;
- ``sklearn``: ``MLPClassifier.partial_fit`` (one pass of mini-batch SGD);
- ``floor``: "GEMMs alone", only the matrix products a training step must do, through NumPy's
  BLAS into preallocated outputs: per layer the forward ``X @ W``, the weight gradient
  ``X.T @ dZ`` and the input gradient ``dZ @ W.T`` (not for the first layer, whose input
  gradient no trainer computes).  No optimiser does less arithmetic than this.

Rounds are interleaved (floor, fastnn, numpy, torch, sklearn, floor, fastnn, ...) so that load
from other processes hits every contender alike; each figure is the median over the rounds.
Every contender runs with the same thread count (numba, every BLAS pool threadpoolctl sees,
and torch).  The predict table times ``Sequential.predict`` on 100 000 rows against a torch
forward under ``torch.inference_mode()``; the start-up line times, in a fresh process, the
first epoch of a small fit after ``import fastnn`` (kernel cache warm).
"""

import argparse
import functools
import gc
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

import fastnn as fnn
from fastnn import _fastpath, distributed

from ._table import print_table
from .bench_latency import DEFAULT_CALLS as LATENCY_CALLS
from .bench_latency import DEFAULT_SHAPES as LATENCY_SHAPES
from .bench_latency import run_latency

print = functools.partial(print, flush=True)  # noqa: A001  (progress shows when piped)

DEFAULT_SHAPES = (
    "784-100-10@64",
    "784-512-512-10@256",
    "784-1024-1024-1024-10@512",
    "4-6-8-10-3@150",
    "4-6-8-10-3@16",
)
PEERS = ("floor", "fastnn", "numpy", "torch", "sklearn")
#: hidden-layer activations every contender has: fastnn layer, torch module, sklearn name
ACTIVATIONS = {
    "relu": ("ReLU", "ReLU", "relu"),
    "sigmoid": ("Sigmoid", "Sigmoid", "logistic"),
    "tanh": ("Tanh", "Tanh", "tanh"),
}
LEARNING_RATE = 0.01
#: a default epoch is sized so the floor takes about this long (the peers take up to ~40x more),
#: with 6 to 3000 batches; long enough that fit's per-call costs (checking X, the snapshot for
#: divergence) weigh on fastnn's figure as they would in a real epoch of a few thousand rows
TARGET_FLOOR_SECONDS = 0.15
#: predict runs by default only where one forward pass over the rows is at most this many FLOPs
PREDICT_DEFAULT_MAX_FLOPS = 2e11
#: idle time before each timed call (see ``interleaved``)
PAUSE_SECONDS = 0.2


# -- shapes and data ---------------------------------------------------------------------------
def parse_shape(text, default_batch):
    """``"784-100-10@64"`` -> ((784, 100, 10), 64); without ``@`` the batch is ``default_batch``."""
    arch, _, batch = text.partition("@")
    try:
        sizes = tuple(int(s) for s in arch.split("-"))
        batch = int(batch) if batch else default_batch
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"shape must look like 784-100-10 or 784-100-10@64, got {text!r}"
        ) from None
    if len(sizes) < 2 or min(sizes) < 1 or batch < 1:
        raise argparse.ArgumentTypeError(
            f"shape needs at least two positive layer sizes and a positive batch, got {text!r}"
        )
    if sizes[-1] < 2:
        raise argparse.ArgumentTypeError(f"the output layer needs >= 2 classes, got {text!r}")
    return sizes, batch


def shape_name(sizes, batch=None):
    arch = "-".join(map(str, sizes))
    return arch if batch is None else f"{arch}@{batch}"


def step_flops(sizes, batch):
    """Multiply-adds x 2 of the products one training step needs (the floor's work)."""
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    fwd = sum(a * b for a, b in pairs)
    dx = sum(a * b for a, b in pairs[1:])
    return 2 * batch * (2 * fwd + dx)


def default_samples(sizes, batch):
    """Rows per epoch so that the floor takes about TARGET_FLOOR_SECONDS (whole batches, at
    least 6 of them).  Assumes ~100 GFLOP/s for BLAS and ~1.5 us per product call."""
    n_products = 3 * (len(sizes) - 1) - 1
    per_batch = step_flops(sizes, batch) / 100e9 + 1.5e-6 * n_products
    n_batches = int(np.clip(round(TARGET_FLOOR_SECONDS / per_batch), 6, 3000))
    return n_batches * batch


def make_data(sizes, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0]), dtype=np.float64).astype(dtype)
    y = rng.integers(0, sizes[-1], n).astype(np.int64)
    return X, y


def he_weights(sizes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(dtype)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]


# -- contenders: each is a factory returning a zero-argument "one epoch" callable ---------------
def fastnn_mlp(sizes, dtype, activation):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(fnn.Linear(a, b, dtype=dtype, seed=i))
        if i < len(sizes) - 2:
            layers.append(getattr(fnn, ACTIVATIONS[activation][0])())
    return fnn.Sequential(*layers)


def torch_mlp(sizes, dtype, activation):
    import torch

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(getattr(torch.nn, ACTIVATIONS[activation][1])())
    tdtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    return torch.nn.Sequential(*layers).to(tdtype)


def make_fastnn(sizes, batch, X, y, dtype, activation="relu"):
    model = fastnn_mlp(sizes, dtype, activation)
    loss = fnn.SoftmaxCrossEntropy()
    opt = fnn.SGD(model.parameters(), lr=LEARNING_RATE)

    def epoch():
        model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=batch, verbose=0)

    return epoch


class NumpyMLP:
    """The vectorised NumPy reference: an MLP (ReLU, sigmoid or tanh hidden layers) trained
    with softmax cross-entropy and SGD.

    Every array a step writes is allocated once per batch size and reused (``out=``
    arguments); what remains per step is NumPy's per-call overhead and the few temporaries
    NumPy itself makes (row reductions).  Weights are (n_in, n_out), as in ``X @ W + b``.
    """

    def __init__(self, sizes, dtype, lr=LEARNING_RATE, seed=0, activation="relu"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.W = he_weights(sizes, dtype, seed)
        self.b = [np.zeros(W.shape[1], dtype) for W in self.W]
        self.dW = [np.empty_like(W) for W in self.W]
        self.db = [np.empty_like(b) for b in self.b]
        self.lr = dtype(lr)
        self.dtype = dtype
        self.rng = np.random.default_rng(seed)
        self._buffers = {}

    def _buffers_for(self, m):
        buf = self._buffers.get(m)
        if buf is None:
            dt = self.dtype
            buf = {
                "X": np.empty((m, self.W[0].shape[0]), dt),
                "y": np.empty(m, np.int64),
                "A": [np.empty((m, W.shape[1]), dt) for W in self.W],
                "dA": [np.empty((m, W.shape[0]), dt) for W in self.W],
                "mask": [np.empty((m, W.shape[0]), bool) for W in self.W],
                "deriv": [np.empty((m, W.shape[0]), dt) for W in self.W],
                "rowmax": np.empty((m, 1), dt),
                "rowsum": np.empty((m, 1), dt),
                "rows": np.arange(m),
            }
            self._buffers[m] = buf
        return buf

    def step(self, Xb, yb, buf):
        W, b, dW, db, A = self.W, self.b, self.dW, self.db, buf["A"]
        L = len(W)
        h = Xb
        for k in range(L):
            np.matmul(h, W[k], out=A[k])
            A[k] += b[k]
            if k < L - 1:
                self._activate(A[k])
            h = A[k]
        # softmax cross-entropy on the logits, gradient of the mean written over them
        Z, m = A[-1], Xb.shape[0]
        np.max(Z, axis=1, keepdims=True, out=buf["rowmax"])
        Z -= buf["rowmax"]
        np.exp(Z, out=Z)
        np.sum(Z, axis=1, keepdims=True, out=buf["rowsum"])
        Z /= buf["rowsum"]
        loss = -np.mean(np.log(Z[buf["rows"], yb]))
        Z[buf["rows"], yb] -= 1
        Z *= self.dtype(1.0 / m)
        dZ = Z
        for k in range(L - 1, -1, -1):
            inp = Xb if k == 0 else A[k - 1]
            np.matmul(inp.T, dZ, out=dW[k])
            np.sum(dZ, axis=0, out=db[k])
            if k > 0:
                dA = buf["dA"][k]
                np.matmul(dZ, W[k].T, out=dA)
                self._times_derivative(dA, inp, buf["mask"][k], buf["deriv"][k])
                dZ = dA
        for k in range(L):
            dW[k] *= self.lr
            W[k] -= dW[k]
            db[k] *= self.lr
            b[k] -= db[k]
        return loss

    def _activate(self, A):
        """A = f(A) in place."""
        if self.activation == "relu":
            np.maximum(A, 0, out=A)
        elif self.activation == "tanh":
            np.tanh(A, out=A)
        else:  # 1 / (1 + exp(-A)); exp overflows to inf for very negative A, giving 0
            np.negative(A, out=A)
            with np.errstate(over="ignore"):
                np.exp(A, out=A)
            A += 1
            np.reciprocal(A, out=A)

    def _times_derivative(self, dA, A, mask, tmp):
        """dA *= f'(z), from the activation's output A."""
        if self.activation == "relu":
            np.greater(A, 0, out=mask)
            np.multiply(dA, mask, out=dA)
            return
        if self.activation == "tanh":  # 1 - A^2
            np.multiply(A, A, out=tmp)
            np.subtract(1, tmp, out=tmp)
        else:  # A (1 - A)
            np.subtract(1, A, out=tmp)
            tmp *= A
        dA *= tmp

    def epoch(self, X, y, batch):
        n = X.shape[0]
        order = self.rng.permutation(n)
        total = 0.0
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            buf = self._buffers_for(idx.shape[0])
            np.take(X, idx, axis=0, out=buf["X"])
            np.take(y, idx, out=buf["y"])
            total += self.step(buf["X"], buf["y"], buf) * idx.shape[0]
        return total / n


def make_numpy(sizes, batch, X, y, dtype, activation="relu"):
    net = NumpyMLP(sizes, np.dtype(dtype).type, activation=activation)
    return lambda: net.epoch(X, y, batch)


def make_torch(sizes, batch, X, y, dtype, activation="relu"):
    import torch

    torch.manual_seed(0)
    model = torch_mlp(sizes, dtype, activation)
    opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    n = X.shape[0]

    def epoch():
        order = torch.randperm(n)
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            xb, yb = Xt[idx], yt[idx]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()

    return epoch


def make_sklearn(sizes, batch, X, y, dtype, activation="relu"):
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=sizes[1:-1],
        activation=ACTIVATIONS[activation][2],
        solver="sgd",
        alpha=0.0,
        batch_size=batch,
        learning_rate_init=LEARNING_RATE,
        momentum=0.0,
        nesterovs_momentum=False,
        shuffle=True,
        random_state=0,
    )
    classes = np.arange(sizes[-1])

    def epoch():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.partial_fit(X, y, classes=classes)

    return epoch


def make_floor(sizes, batch, X, y, dtype, activation="relu"):
    """The matrix products of every training step and nothing else (NumPy's BLAS, out=); the
    same whatever the activation."""
    rng = np.random.default_rng(1)
    Ws = he_weights(sizes, dtype)
    n = X.shape[0]
    spans = [(s, min(s + batch, n)) for s in range(0, n, batch)]
    sets = {}
    for m in {stop - start for start, stop in spans}:
        sets[m] = (
            [np.empty((m, W.shape[1]), dtype) for W in Ws],
            [rng.standard_normal((m, W.shape[1])).astype(dtype) for W in Ws],
            [np.empty((m, W.shape[0]), dtype) for W in Ws],
        )
    dWs = [np.empty_like(W) for W in Ws]

    def epoch():
        for start, stop in spans:
            Z, dZ, dX = sets[stop - start]
            h = X[start:stop]
            for k, W in enumerate(Ws):
                np.matmul(h, W, out=Z[k])
                h = Z[k]
            for k in range(len(Ws) - 1, -1, -1):
                inp = X[start:stop] if k == 0 else Z[k - 1]
                np.matmul(inp.T, dZ[k], out=dWs[k])
                if k > 0:
                    np.matmul(dZ[k], Ws[k].T, out=dX[k])

    return epoch


FACTORIES = {
    "floor": make_floor,
    "fastnn": make_fastnn,
    "numpy": make_numpy,
    "torch": make_torch,
    "sklearn": make_sklearn,
}


# -- timing ------------------------------------------------------------------------------------
def interleaved(runs, repeats, warmup=1, pause=PAUSE_SECONDS, before=None):
    """Median seconds of each callable in ``runs`` (a dict), timed in interleaved rounds.

    Each callable runs ``warmup`` untimed times first (compilation, caches, thread pools).
    The garbage collector is off while a call is timed, and each call starts ``pause`` seconds
    after the previous one ended: idle BLAS and OpenMP worker threads keep spinning for up to
    ~0.1 s after their last task (OpenBLAS's default THREAD_TIMEOUT is 2^28 cycles), and
    would otherwise take a core from whichever library runs next.  ``before`` (a dict, keys
    among those of ``runs``) names untimed work to run right before a call, after the pause.
    """
    before = before or {}
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            gc.collect()
            time.sleep(pause)
            if name in before:
                before[name]()
            gc.disable()
            try:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
            finally:
                gc.enable()
    return {name: statistics.median(ts) for name, ts in times.items()}, times


def set_threads(threads):
    """Same thread count for numba, every BLAS pool (threadpoolctl) and torch.  Also makes
    fastnn's fits compile their parallel builds on the spot (no serial stand-in while a helper
    compiles them): the bench times the builds themselves."""
    _fastpath.STAND_IN = False
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    fnn.set_num_threads(threads)


TORCH_MISSING = "torch not installed (pip install torch to add it)"


def torch_installed():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def available_peers(wanted):
    """The contenders of ``wanted`` that can run here, in ``PEERS`` order (torch only when it
    is installed)."""
    have_torch = torch_installed()
    return [p for p in PEERS if p in wanted and (p != "torch" or have_torch)]


def _fmt_time(seconds):
    if seconds >= 1:
        return f"{seconds:8.3f} s "
    if seconds >= 1e-3:
        return f"{seconds * 1e3:8.2f} ms"
    return f"{seconds * 1e6:8.1f} us"


def bench_training(args, peers):
    rows = []
    for text in args.shapes:
        sizes, batch = parse_shape(text, args.batch_size)
        n = args.samples or default_samples(sizes, batch)
        X, y = make_data(sizes, n, args.dtype)
        runs = {
            name: FACTORIES[name](sizes, batch, X, y, args.dtype, args.activation) for name in peers
        }
        med, _ = interleaved(runs, args.repeats, pause=args.pause)
        floor = med.get("floor")
        print(
            f"\n{shape_name(sizes, batch)}: {n} samples ({-(-n // batch)} batches), "
            f"{args.activation}, {args.dtype}, {args.threads} threads, median of {args.repeats}"
        )
        print(f"  {'':10} {'epoch':>11}  {'/ floor':>8}  {'fastnn speed-up':>15}")
        for name in peers:
            ratio = f"{med[name] / floor:7.2f}x" if floor else "       -"
            speedup = (
                f"{med[name] / med['fastnn']:14.2f}x"
                if "fastnn" in med and name not in ("fastnn", "floor")
                else " " * 15
            )
            print(f"  {name:10} {_fmt_time(med[name])}  {ratio}  {speedup}")
        rows.append((shape_name(sizes, batch), n, med))
    return rows


def print_summary(rows, peers, markdown, activation="relu"):
    """One line per shape: each contender's epoch time over the floor, then fastnn's speed-up."""
    others = [p for p in peers if p not in ("floor", "fastnn")]
    head = ["shape", "samples"]
    if "floor" in peers:
        head += ["floor"] + [f"{p} / floor" for p in peers if p != "floor"]
    if "fastnn" in peers:
        head += [f"vs {p}" for p in others]
    lines = []
    for name, n, med in rows:
        cells = [name, str(n)]
        if "floor" in peers:
            cells.append(_fmt_time(med["floor"]).strip())
            cells += [f"{med[p] / med['floor']:.2f}x" for p in peers if p != "floor"]
        if "fastnn" in peers:
            cells += [f"{med[p] / med['fastnn']:.1f}x" for p in others]
        lines.append(cells)
    print(
        f"\nsummary ({activation}): epoch time / floor, and fastnn's speed-up over each peer "
        "(vs ...)"
    )
    print_table(head, lines, markdown)


# -- inference ---------------------------------------------------------------------------------
def bench_predict(args, peers, force):

    archs = []
    for text in args.shapes:
        sizes, _ = parse_shape(text, args.batch_size)
        if sizes not in archs:
            archs.append(sizes)
    lines = []
    for sizes in archs:
        pairs = zip(sizes[:-1], sizes[1:], strict=True)
        flops = 2 * args.predict_rows * sum(a * b for a, b in pairs)
        if not force and flops > PREDICT_DEFAULT_MAX_FLOPS:
            print(f"predict {shape_name(sizes)}: skipped by default (run with --predict)")
            continue
        X, _ = make_data(sizes, args.predict_rows, args.dtype, seed=2)
        model = fastnn_mlp(sizes, args.dtype, args.activation)
        runs = {"fastnn": lambda model=model, X=X: model.predict(X)}
        if "torch" in peers:
            import torch

            tmodel = torch_mlp(sizes, args.dtype, args.activation)
            Xt = torch.from_numpy(X)

            def torch_predict(tmodel=tmodel, Xt=Xt):
                with torch.inference_mode():
                    return tmodel(Xt)

            runs["torch"] = torch_predict
        med, _ = interleaved(runs, args.repeats, pause=args.pause)
        cells = [shape_name(sizes), str(args.predict_rows), _fmt_time(med["fastnn"]).strip()]
        if "torch" in med:
            cells += [_fmt_time(med["torch"]).strip(), f"{med['torch'] / med['fastnn']:.2f}x"]
        lines.append(cells)
    if lines:
        print(f"\npredict ({args.activation}): median of {args.repeats}, {args.threads} threads")
        head = ["network", "rows", "fastnn"]
        if "torch" in peers:
            head += ["torch", "fastnn speed-up"]
        print_table(head, lines, args.markdown)
        if "torch" not in peers and "torch" in args.peers:
            print(f"(no torch column: {TORCH_MISSING})")


# -- fit in a busy process -------------------------------------------------------------------
MIXED_MATMUL = 512


def _preceding_work(peers, dtype):
    """What a user's process does between two fits, each a zero-argument callable: a NumPy
    product, a scikit-learn fit and (when installed) a torch product."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((MIXED_MATMUL, MIXED_MATMUL)).astype(dtype)
    work = {"numpy matmul": lambda: A @ A}
    from sklearn.linear_model import LogisticRegression

    Xs = rng.standard_normal((2000, 50)).astype(dtype)
    ys = (Xs[:, 0] > 0).astype(int)
    work["sklearn fit"] = lambda: LogisticRegression(max_iter=20).fit(Xs, ys)
    if "torch" in peers:
        import torch

        At = torch.from_numpy(A)
        work["torch matmul"] = lambda: At @ At
    return work


def bench_mixed(args, peers):
    """fastnn's epoch and predict right after other libraries' work (no pause), against the
    same call after a pause: the ratio users meet in scripts and notebooks."""
    work = _preceding_work(peers, args.dtype)
    lines = []
    for text in args.shapes:
        sizes, batch = parse_shape(text, args.batch_size)
        n = args.samples or default_samples(sizes, batch)
        X, y = make_data(sizes, n, args.dtype)
        epoch = make_fastnn(sizes, batch, X, y, args.dtype, args.activation)
        model = fastnn_mlp(sizes, args.dtype, args.activation)
        Xp = X[: min(len(X), 4096)]
        for what, call in (("fit", epoch), ("predict", lambda m=model, Xp=Xp: m.predict(Xp))):
            # the call alone (after the pause), and right after each piece of work
            runs = {"alone": call, **{name: call for name in work}}
            med, _ = interleaved(runs, args.repeats, pause=args.pause, before=work)
            cells = [shape_name(sizes, batch), what, _fmt_time(med["alone"]).strip()]
            cells += [f"{med[name] / med['alone']:.2f}x" for name in work]
            lines.append(cells)
    print(
        f"\nfastnn right after other work, no pause, against alone (after a {args.pause} s "
        f"pause): median of {args.repeats}, {args.threads} threads"
    )
    print_table(["network", "call", "alone", *work], lines, args.markdown)


# -- start-up ----------------------------------------------------------------------------------
_STARTUP_CODE = """
import time
t0 = time.perf_counter()
import numpy as np
import fastnn as fnn
t1 = time.perf_counter()
fnn.set_num_threads({threads})
rng = np.random.default_rng(0)
X = rng.standard_normal((4096, 784)).astype(np.float32)
y = rng.integers(0, 10, 4096)
model = fnn.Sequential(fnn.Linear(784, 100), fnn.ReLU(), fnn.Linear(100, 10))
t2 = time.perf_counter()
model.fit(X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=fnn.SGD(model.parameters(), lr=0.01),
          epochs=1, batch_size=64, verbose=0)
t3 = time.perf_counter()
print(t1 - t0, t3 - t1, t3 - t2)
"""


def bench_startup(threads):
    """Fresh processes: seconds for ``import fastnn`` and from there to the end of a first small
    epoch (784-100-10, 4096 rows).  The first process fills the kernel cache if it is cold."""
    code = _STARTUP_CODE.format(threads=threads)
    out = None
    for _ in range(2):
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            print(f"\nstart-up: the child process failed:\n{res.stderr}")
            return None
        out = [float(v) for v in res.stdout.split()]
    print(
        f"\nstart-up (fresh process, warm kernel cache): import fastnn {out[0]:.2f} s; "
        f"then model + first epoch of 784-100-10@64 on 4096 rows {out[1]:.2f} s"
    )
    return out


# -- command line ------------------------------------------------------------------------------
# -- distributed: data-parallel fit over MPI ----------------------------------------------------
DISTRIBUTED_SHAPES = ("784-512-512-10@256", "784-1024-1024-1024-10@512")
#: the N-machine model: machine counts, link bandwidths (Gbit/s) and the per-message latency
#: of a ring allreduce step over TCP (an assumption, not measured here)
MODEL_MACHINES = (2, 4, 8, 16)
MODEL_GBITS = (1, 10, 25, 100)
MODEL_LATENCY_S = 30e-6
#: scaling efficiency the model's batch sizes keep (compute / (compute + allreduce))
MODEL_EFFICIENCY = 0.8


def ring_allreduce_seconds(param_bytes, machines, gbits, latency=MODEL_LATENCY_S):
    """A ring allreduce's time: every machine sends and receives 2 (N - 1) / N of the buffer,
    in 2 (N - 1) steps of one message each."""
    if machines < 2:
        return 0.0
    moved = 2 * (machines - 1) / machines * param_bytes
    return moved / (gbits * 1e9 / 8) + 2 * (machines - 1) * latency


def model_rows(row_seconds, param_bytes, machines, gbits, efficiency=MODEL_EFFICIENCY):
    """Rows per machine per step that keep compute / (compute + allreduce) >= ``efficiency``
    (no overlap of the two), for a step that costs ``row_seconds`` per row on one machine."""
    t_ar = ring_allreduce_seconds(param_bytes, machines, gbits)
    return int(np.ceil(efficiency / (1 - efficiency) * t_ar / row_seconds))


def bench_distributed(args):
    """``--distributed``: epoch time and the share of it spent in the per-step collectives,
    on every rank of an MPI launch (``mpiexec -n N python -m fastnn bench --distributed``) or
    in one process; then, from the measured step time, the ring-allreduce model of N
    machines.  Rank 0 prints."""
    size, root = distributed.size(), distributed.is_root()
    shapes = args.shapes if args.shapes != list(DEFAULT_SHAPES) else list(DISTRIBUTED_SHAPES)
    if size == 1:
        set_threads(args.threads)
    out = print if root else (lambda *a, **k: None)
    rows = []
    for text in shapes:
        sizes, batch = parse_shape(text, args.batch_size)
        n = args.samples or 16 * batch
        X, y = make_data(sizes, n, args.dtype)
        model = fastnn_mlp(sizes, args.dtype, args.activation)
        opt = fnn.SGD(model.parameters(), lr=LEARNING_RATE)
        kwargs = dict(loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, batch_size=batch, verbose=0)
        model.fit(X, y, epochs=1, distributed="mpi", **kwargs)  # compiles / loads, sets threads
        threads = fnn.get_num_threads()
        epochs, shares = [], []
        for _ in range(args.repeats):
            before = distributed.allreduce_seconds()
            history = model.fit(X, y, epochs=1, distributed="mpi", **kwargs)
            seconds = n / history.history["samples_per_second"][0]
            epochs.append(seconds)
            shares.append((distributed.allreduce_seconds() - before) / seconds)
        params = model._flat.data
        transfer = 0.0
        if size > 1:  # the gradient Allreduce alone, every rank ready (after a barrier)
            buf = np.zeros_like(params)
            times = []
            for _ in range(20):
                distributed.barrier()
                t0 = time.perf_counter()
                distributed.allreduce(buf)
                times.append(time.perf_counter() - t0)
            transfer = statistics.median(times)
        epoch = statistics.median(epochs)
        steps = -(-n // batch)
        # the model's local step: its compute alone (N ranks of one machine share its cores)
        compute = epoch * (1 - statistics.median(shares)) / steps
        rows.append((sizes, batch, params.nbytes, compute))
        out(
            f"\n{shape_name(sizes, batch)}: {size} rank{'s' if size > 1 else ''} x {threads} "
            f"thread{'s' if threads > 1 else ''}, {n} samples ({steps} steps), {args.dtype}, "
            f"median of {args.repeats}"
        )
        out(f"  epoch {epoch:.3f} s, step {epoch / steps * 1e3:.2f} ms")
        if size > 1:
            out(
                f"  in the per-step collectives (waiting for the slowest rank included): "
                f"{statistics.median(shares) * 100:.1f}% of the epoch"
            )
            out(
                f"  one Allreduce of the {params.nbytes / 1e6:.2f} MB gradient, all ranks ready: "
                f"{transfer * 1e3:.2f} ms ({transfer / (epoch / steps) * 100:.1f}% of a step)"
            )
    if not root:
        return
    print(
        f"\nN-machine model (ring allreduce, {MODEL_LATENCY_S * 1e6:.0f} us per message; "
        f"the step's compute measured above on {size} rank(s) of this machine, collectives "
        "left out):"
    )
    for sizes, batch, nbytes, step in rows:
        row_s = step / batch
        print(
            f"\n{shape_name(sizes, batch)}: {nbytes / 1e6:.2f} MB of parameters, "
            f"{row_s * 1e6:.1f} us per row of a step"
        )
        for machines in MODEL_MACHINES:
            moved = 2 * (machines - 1) / machines * nbytes
            per_machine = step / machines  # the global batch shared out: each does 1/N
            dominate = moved / per_machine * 8 / 1e9  # Gbit/s at which allreduce = compute
            need = ", ".join(
                f"{g} Gb/s {model_rows(row_s, nbytes, machines, g) * machines}" for g in MODEL_GBITS
            )
            print(
                f"  N={machines:<2} moves {moved / 1e6:6.2f} MB per step per machine; "
                f"allreduce > compute below {dominate:6.1f} Gb/s at a global batch of {batch}; "
                f"global batch for {MODEL_EFFICIENCY:.0%} efficiency: {need}"
            )


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bench",
        help="time one training epoch of fastnn against NumPy, PyTorch and scikit-learn",
        description="Time one training epoch of fastnn against its peers (NumPy, PyTorch when "
        "installed, scikit-learn and the floor: the matrix products alone), interleaved. Each "
        "shape is LAYERS@BATCH, e.g. 784-100-10@64; the table gives the median epoch time, its "
        "ratio to the floor and fastnn's speed-up over each peer.",
    )
    p.add_argument(
        "--shapes",
        nargs="+",
        default=list(DEFAULT_SHAPES),
        metavar="SHAPE",
        help="networks as sizes joined by '-', optionally '@batch' (default: the five "
        "reference shapes " + " ".join(DEFAULT_SHAPES) + ")",
    )
    p.add_argument(
        "--batch-size", type=int, default=64, help="batch for shapes without @ (default: 64)"
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64"],
        help="floating-point type of data and models (default: float32)",
    )
    p.add_argument(
        "--activation",
        default="relu",
        choices=list(ACTIVATIONS),
        help="hidden-layer activation of every contender (default: relu)",
    )
    p.add_argument("--threads", type=int, default=2, help="threads for everyone (default: 2)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default: 5)")
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help="rows of synthetic data per epoch (default: per shape, so that the floor takes "
        f"about {TARGET_FLOOR_SECONDS} s)",
    )
    p.add_argument(
        "--peers",
        nargs="+",
        default=list(PEERS),
        choices=PEERS,
        help="contenders to time (default: all; torch is left out when not installed)",
    )
    p.add_argument(
        "--predict",
        action="store_true",
        help="only the predict table, for every shape (the default output includes it for the "
        "smaller networks)",
    )
    p.add_argument("--no-predict", action="store_true", help="leave out the predict table")
    p.add_argument(
        "--predict-rows", type=int, default=100_000, help="rows for predict (default: 100000)"
    )
    p.add_argument("--no-startup", action="store_true", help="leave out the start-up timing")
    p.add_argument(
        "--pause",
        type=float,
        default=PAUSE_SECONDS,
        help=f"idle seconds before each timed run, so idle threads of the previous library stop "
        f"spinning (default: {PAUSE_SECONDS})",
    )
    p.add_argument(
        "--mixed",
        action="store_true",
        help="only the table of fastnn's fit and predict right after a NumPy product, a "
        "scikit-learn fit and a torch product (no pause), against the same call alone",
    )
    p.add_argument("--markdown", action="store_true", help="summary tables in Markdown")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel fit over MPI: run under `mpiexec -n N` (or alone for 1 process); "
        "prints epoch time, the share in Allreduce and the N-machine model (default shapes "
        + " ".join(DISTRIBUTED_SHAPES)
        + "; each rank takes its share of the cores, --threads sets a single process's)",
    )
    p.add_argument(
        "--latency",
        action="store_true",
        help="only the latency table: p50/p99 of predicting 1, 8 and 64 rows, fastnn against "
        "onnxruntime, torch and scikit-learn (see fastnn.bench_latency)",
    )
    p.add_argument(
        "--latency-shapes",
        nargs="+",
        default=list(LATENCY_SHAPES),
        metavar="SHAPE",
        help="networks for --latency (default: " + " ".join(LATENCY_SHAPES) + ")",
    )
    p.add_argument(
        "--latency-calls",
        type=int,
        default=LATENCY_CALLS,
        help=f"timed calls per contender and batch for --latency (default: {LATENCY_CALLS})",
    )
    return p


def _machine_line(threads):
    import platform

    import numba
    import scipy

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os

    parts = [
        model,
        f"{os.cpu_count()} cores",
        f"{threads} threads",
        f"numpy {np.__version__}",
        f"scipy {scipy.__version__}",
        f"numba {numba.__version__}",
    ]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
    except ImportError:
        parts.append("torch not installed")
    import sklearn

    parts.append(f"scikit-learn {sklearn.__version__}")
    return ", ".join(parts)


def run(args):
    for name in ("threads", "repeats", "batch_size", "predict_rows"):
        if getattr(args, name) < 1:
            print(f"--{name.replace('_', '-')} must be positive", file=sys.stderr)
            return 2
    if args.samples is not None and args.samples < 1:
        print("--samples must be positive", file=sys.stderr)
        return 2
    try:
        for text in args.shapes:
            parse_shape(text, args.batch_size)
    except argparse.ArgumentTypeError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.distributed:
        bench_distributed(args)
        return 0
    if args.latency:
        if args.latency_calls < 10:
            print("--latency-calls must be at least 10", file=sys.stderr)
            return 2
        try:
            for text in args.latency_shapes:
                sizes, _ = parse_shape(text, args.batch_size)
        except argparse.ArgumentTypeError as exc:
            print(exc, file=sys.stderr)
            return 2
        run_latency(args.latency_shapes, args.latency_calls, markdown=args.markdown)
        return 0
    peers = available_peers(args.peers)
    if "torch" in args.peers and "torch" not in peers:
        print(f"{TORCH_MISSING}: the torch columns are left out", file=sys.stderr)
    set_threads(args.threads)
    print(_machine_line(args.threads))
    if args.mixed:
        bench_mixed(args, peers)
        return 0
    if not args.predict:
        rows = bench_training(args, peers)
        print_summary(rows, peers, args.markdown, args.activation)
        if "torch" in args.peers and "torch" not in peers:
            print(f"(no torch column: {TORCH_MISSING})")
    if not args.no_predict and "fastnn" in peers:
        bench_predict(args, peers, force=args.predict)
    if not args.no_startup and not args.predict:
        bench_startup(args.threads)
    return 0
