"""Training speed through the public API: one step by hand, and one epoch of ``fit``.

Networks and batch sizes are :data:`common.NETWORKS` (784-100-10 @ 64 up to 784-1024x3-10 @ 512,
and the iris net 4-6-8-10-3 @ 150).  The data is synthetic (Gaussian blobs, no download).  Every
``setup`` runs the timed code once, so the JIT and the model's buffers are warm.
"""

from .common import (
    DTYPES,
    FIT_SAMPLES,
    NETWORKS,
    classification_data,
    make_mlp,
    make_optimizer,
    random_array,
    set_threads,
)


class TrainingStep:
    """``forward``, loss ``forward``, ``backward``, ``step``, ``zero_grad`` on one batch, by hand
    through the layer API (what a user's own training loop costs per batch)."""

    params = (list(NETWORKS), DTYPES, ("sgd", "adam"))
    param_names = ("network", "dtype", "optimizer")
    timeout = 180

    def setup(self, network, dtype, optimizer):
        import fastnn as fnn

        set_threads()
        sizes, batch = NETWORKS[network]
        self.X, self.y = classification_data(batch, sizes[0], sizes[-1], dtype, seed=1)
        self.model = make_mlp(sizes, dtype, seed=0)
        self.loss = fnn.SoftmaxCrossEntropy()
        self.opt = make_optimizer(self.model, optimizer)
        self.time_step(network, dtype, optimizer)

    def time_step(self, network, dtype, optimizer):
        out = self.model.forward(self.X)
        self.loss.forward(out, self.y)
        self.model.backward(self.loss.backward())
        self.opt.step()
        self.opt.zero_grad()


class Forward:
    """Training-mode ``forward`` alone, and ``predict`` (inference, no state) on one batch."""

    params = (list(NETWORKS), DTYPES)
    param_names = ("network", "dtype")

    def setup(self, network, dtype):
        set_threads()
        sizes, batch = NETWORKS[network]
        self.X, _ = classification_data(batch, sizes[0], sizes[-1], dtype, seed=1)
        self.model = make_mlp(sizes, dtype, seed=0)
        self.model.forward(self.X)
        self.model.predict(self.X)

    def time_forward(self, network, dtype):
        self.model.forward(self.X)

    def time_predict(self, network, dtype):
        self.model.predict(self.X)


def _fit_one_epoch(bench):
    """One epoch of ``fit`` on what a benchmark's ``setup`` prepared."""
    bench.model.fit(
        bench.X,
        bench.y,
        loss=bench.loss,
        optimizer=bench.opt,
        epochs=1,
        batch_size=bench.batch,
        seed=0,
        verbose=0,
    )


class FitEpoch:
    """One epoch of ``Sequential.fit`` (shuffle, batch gather, steps, metrics) on synthetic data
    of :data:`common.FIT_SAMPLES` rows."""

    params = (list(NETWORKS), DTYPES, ("sgd", "adam"))
    param_names = ("network", "dtype", "optimizer")
    timeout = 300
    number = 1
    repeat = (1, 5, 20.0)

    def setup(self, network, dtype, optimizer):
        import fastnn as fnn

        set_threads()
        sizes, self.batch = NETWORKS[network]
        self.X, self.y = classification_data(FIT_SAMPLES[network], sizes[0], sizes[-1], dtype)
        self.model = make_mlp(sizes, dtype, seed=0)
        self.loss = fnn.SoftmaxCrossEntropy()
        self.opt = make_optimizer(self.model, optimizer)
        self.time_fit_one_epoch(network, dtype, optimizer)

    def time_fit_one_epoch(self, network, dtype, optimizer):
        _fit_one_epoch(self)


class FitEpochBuild:
    """One float32 SGD epoch of ``fit`` with each build of the compiled fit kernel pinned:
    ``serial`` (BLAS threads the products), ``data-parallel`` (a chunk of rows, then a part
    of the parameters, per thread; BLAS single-threaded) and ``split-units`` (the hidden
    layers' products and passes split by units across the threads).  ``fit`` picks one per
    shape (``fastnn._fastpath.chunks_for`` and ``units_split_for``); this keeps all three
    measured on the shapes either side of the switches, so a change that moves a crossover
    shows.  On one thread all are serial."""

    params = (
        ["784-100-10@64", "784-512-512-10@256", "784-1024x3-10@512"],
        ["serial", "data-parallel", "split-units"],
    )
    param_names = ("network", "build")
    timeout = 300
    number = 1
    repeat = (1, 5, 20.0)

    def setup(self, network, build):
        import fastnn as fnn

        try:
            from fastnn import _fastpath
        except ImportError:  # a fastnn from before the compiled fit path
            raise NotImplementedError from None
        if not hasattr(_fastpath, "chunks_for"):  # before the data-parallel build
            raise NotImplementedError
        has_units = hasattr(_fastpath, "units_split_for")
        if build == "split-units" and not has_units:  # before the split-units build
            raise NotImplementedError
        threads = set_threads()
        self._fastpath, self._chunks_for = _fastpath, _fastpath.chunks_for
        self._units_split_for = _fastpath.units_split_for if has_units else None
        _fastpath.chunks_for = (lambda *a: 1) if build == "serial" else (lambda *a: threads)
        if has_units:
            _fastpath.units_split_for = lambda *a: build == "split-units"
        sizes, self.batch = NETWORKS[network]
        self.X, self.y = classification_data(FIT_SAMPLES[network], sizes[0], sizes[-1], "float32")
        self.model = make_mlp(sizes, "float32", seed=0)
        self.loss = fnn.SoftmaxCrossEntropy()
        self.opt = make_optimizer(self.model, "sgd")
        self.time_fit_one_epoch(network, build)

    def teardown(self, network, build):
        self._fastpath.chunks_for = self._chunks_for
        if self._units_split_for is not None:
            self._fastpath.units_split_for = self._units_split_for

    def time_fit_one_epoch(self, network, build):
        _fit_one_epoch(self)


class FitThroughput:
    """Training samples per second of a one-epoch fit (best of three epochs, after a warm-up
    epoch), float32: the figure the README quotes.  Higher is better."""

    params = (list(NETWORKS),)
    param_names = ("network",)
    unit = "samples/s"
    timeout = 300

    def setup(self, network):
        import fastnn as fnn

        set_threads()
        sizes, self.batch = NETWORKS[network]
        self.X, self.y = classification_data(FIT_SAMPLES[network], sizes[0], sizes[-1], "float32")
        self.model = make_mlp(sizes, "float32", seed=0)
        self.loss = fnn.SoftmaxCrossEntropy()
        self.opt = make_optimizer(self.model, "sgd")
        self._epoch()

    def _epoch(self):
        import time

        t0 = time.perf_counter()
        _fit_one_epoch(self)
        return time.perf_counter() - t0

    def track_samples_per_second(self, network):
        best = min(self._epoch() for _ in range(3))
        return float(self.X.shape[0] / best)


class AfterOtherWork:
    """One-epoch ``fit`` and a 4096-row ``predict`` right after other work in the process, with
    no pause (a 512x512 NumPy product, a scikit-learn ``LogisticRegression`` fit, whose L-BFGS
    runs in SciPy's own OpenBLAS), and alone after a 0.2 s pause: median seconds of 5
    interleaved rounds.  The other libraries' idle threads spin for up to 0.1 s after their
    work; the paused timings above never see them, this does (issue 16).  Compare each
    ``before`` with ``alone`` of the same commit: the ratio is the slowdown users meet."""

    params = (
        ["784-100-10@64", "54-256-256-7@512"],
        ["alone", "numpy matmul", "sklearn fit"],
        ["fit", "predict"],
    )
    param_names = ("network", "before", "call")
    unit = "seconds"
    timeout = 300

    def setup(self, network, before, call):
        import fastnn as fnn

        set_threads()
        sizes = [int(v) for v in network.split("@")[0].split("-")]
        self.batch = int(network.split("@")[1])
        self.X, self.y = classification_data(8192, sizes[0], sizes[-1], "float32")
        self.model = make_mlp(sizes, "float32", seed=0)
        self.loss = fnn.SoftmaxCrossEntropy()
        self.opt = make_optimizer(self.model, "sgd")
        A = random_array((512, 512), "float32")
        Xs, ys = classification_data(2000, 50, 2, "float64", seed=3)

        def sklearn_fit():
            import warnings

            from sklearn.exceptions import ConvergenceWarning
            from sklearn.linear_model import LogisticRegression

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                LogisticRegression(max_iter=20).fit(Xs, ys)

        self.before = {
            "alone": lambda: None,
            "numpy matmul": lambda: A @ A,
            "sklearn fit": sklearn_fit,
        }[before]
        Xp = self.X[:4096]
        self.call = {
            "fit": lambda: _fit_one_epoch(self),
            "predict": lambda: self.model.predict(Xp),
        }[call]
        self.before()
        self.call()

    def track_seconds(self, network, before, call):
        import statistics
        import time

        times = []
        for _ in range(5):
            time.sleep(0.2)
            self.before()
            t0 = time.perf_counter()
            self.call()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
