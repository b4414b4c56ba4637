"""The compiled fast paths: a whole chunk of training steps in one kernel call (fit), and the
whole network's forward pass split by rows across the threads (predict: ``FastForward``).

``fast_runner`` returns a :class:`FastEpochRunner` when the model, loss and optimizer are ones
the kernel ``fastnn.kernels.epoch.train_batches`` implements (a Sequential of dense stages,
SoftmaxCrossEntropy on integer labels or MSELoss, SGD/Adam/AdamW over the model's whole
parameter buffer), and None otherwise, so ``fit`` keeps the layer-by-layer runner for
everything else.  Both runners have the same interface (``n_batches``, ``run``) and give the
same parameters up to rounding.

Set ``FASTNN_FASTPATH=0`` in the environment (or ``fastnn._fastpath.ENABLED = False``) to
always use the layer-by-layer path, e.g. to compare the two.
"""

import os

import numpy as np

from fastnn.kernels import BLAS_SOURCE, IDENTITY, all_finite, dense_forward
from fastnn.kernels import epoch as E
from fastnn.kernels import inference as I
from fastnn.kernels.activations import activate_inplace

from ._compile_helper import background, cached, can_background
from ._threads import get_num_threads, hold_blas_threads, release_blas_threads
from .distributed import share
from .losses import MSELoss, SoftmaxCrossEntropy
from .optim import SGD, Adam, AdamW

ENABLED = os.environ.get("FASTNN_FASTPATH", "1") != "0"

#: Run the serial build while a helper compiles a parallel one (``_parallel_build``).
#: ``fastnn.warmup`` and the benchmarks switch it off: they want the parallel build itself.
STAND_IN = True

#: (parallel fit kernel, signature) that a helper process is compiling: a callable that says
#: whether it has ended (``_compile_helper.background``), _PENDING until it starts
_BACKGROUND: dict = {}
_PENDING = object()


def _no_helper():  # none could start: the next call compiles the parallel build itself
    return True


#: Parallel steps: the parallel builds of ``train_batches`` split each step across the threads,
#: with BLAS single-threaded inside; otherwise the serial build runs with BLAS's own threads.
#: ``train_batches_parallel`` gives each thread a chunk of the batch's rows (gather, forward,
#: loss, every delta) and then a part of the parameters to update.  One epoch, 2 threads,
#: float32, data-parallel time / serial time on the reference machine (interleaved, median of
#: 7-11):
#:
#:   784-100-10@16 0.63, @64 0.72-0.77 (0.99 in one run of four); 784-256-10@128 0.79;
#:   784-512-512-10@256 0.83-0.97, @512 0.92;
#:   784-1024-1024-10@256 1.02; 784-1024-1024-1024-10@512 1.05;
#:   64-64-10@64 1.67; 100-100-100-10@32 1.62.
#:
#: Small steps lose to the two parallel regions each step pays for (a fork and a join each).
#: Hence: parallel when a step's forward products are at least DATA_PARALLEL_MIN_WORK
#: multiply-adds (batch rows x the sum of n_in * n_out; 784-100-10@16 is 1.27M,
#: 100-100-100-10@32 0.67M) and each thread gets DATA_PARALLEL_MIN_ROWS rows or more.
#:
#: With a 1024x1024 weight matrix, each thread reading all of every weight (twice) costs more
#: than OpenBLAS's own split of the large products (the 1.02-1.05 above).  So from
#: UNITS_SPLIT_MIN_WEIGHTS elements in a weight matrix the parallel step is
#: ``train_batches_units``, which splits the hidden layers' products by units instead; these
#: shapes took the serial build before it.  Split-by-units / serial epoch, AMD EPYC 2-core VM,
#: two processes of 15 interleaved rounds each (the paired median; the other process's ratio
#: of medians in brackets):
#:
#:   784-1024-1024-1024-10@512 0.976 (0.996), @128 0.946 (0.980); 784-1024-1024-10@256 0.982
#:   (0.968), @512 1.006 (0.984), @64 (0.975); 784-2048-10@256 0.996 (0.933);
#:   784-2048-2048-10@256 0.980.
#:
#: Below it the rows split stays: split-by-units / rows on 784-512-512-10@256 1.022 and 0.979
#: in two processes, @512 1.013.  The output layer is always split by rows (the softmax runs on
#: row chunks), so a network whose only large weight matrix is the output layer's keeps the
#: serial build, as before.
DATA_PARALLEL_MIN_WORK = 1_000_000
DATA_PARALLEL_MIN_ROWS = 8
UNITS_SPLIT_MIN_WEIGHTS = 1 << 20


def chunks_for(sizes, batch, n, threads):
    """How many chunks ``train_batches`` splits each step into (see DATA_PARALLEL_MIN_WORK):
    ``threads`` for a parallel step, 1 for the serial build."""
    rows = min(batch, n)
    weights = [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    if threads < 2 or rows < DATA_PARALLEL_MIN_ROWS * threads:
        return 1
    if rows * sum(weights) < DATA_PARALLEL_MIN_WORK:
        return 1
    if weights[-1] >= UNITS_SPLIT_MIN_WEIGHTS and not units_split_for(sizes):
        return 1
    return threads


def units_split_for(sizes):
    """True when a parallel step should split its hidden layers by units
    (``train_batches_units``), not rows: a hidden layer has a weight matrix of
    UNITS_SPLIT_MIN_WEIGHTS elements or more."""
    hidden = [a * b for a, b in zip(sizes[:-2], sizes[1:-1], strict=True)]
    return max(hidden, default=0) >= UNITS_SPLIT_MIN_WEIGHTS


#: Feature-major networks: every activation and delta stored as (units, rows), so BLAS
#: multiplies narrow layers with the batch as the long side and the elementwise passes and the
#: softmax run along the batch (see ``fastnn.kernels.epoch``).  One epoch, 2 threads, float32,
#: feature-major time / row-major time on the reference machine (interleaved, median of 7):
#:
#:   4-6-8-10-3@150 0.60, @16 0.92, @64 0.63, @1024 0.56; 10-10-10@32 0.87; 8-32-32-2@64 0.84;
#:   16-32-10@64 0.94; 32-32-32-10@128 0.93; 32-32-10@256 0.99; 20-20-20-20-5@16 0.94;
#:   32-16-10@32 1.11; 48-24-10@64 1.09; 64-64-10@64 1.39; 64-16-10@256 1.73; 784-100-10@64 1.24.
#:
#: Wider inputs cost more to gather transposed and wider layers gain nothing: hence
#: feature-major when no layer is wider than FEATURE_MAJOR_MAX_WIDTH and the input has at
#: most FEATURE_MAJOR_MAX_INPUTS features.
FEATURE_MAJOR_MAX_WIDTH = 32
FEATURE_MAJOR_MAX_INPUTS = 16


def feature_major_for(sizes):
    """True when ``train_batches`` should store this network's blocks feature-major."""
    return max(sizes) <= FEATURE_MAJOR_MAX_WIDTH and sizes[0] <= FEATURE_MAJOR_MAX_INPUTS


def _optimizer_kind(optimizer):
    kind = type(optimizer)
    if kind is SGD:
        return E.OPT_SGD
    if kind in (Adam, AdamW):
        return E.OPT_ADAM
    return None


def _loss_kind(loss, y):
    kind = type(loss)
    if getattr(loss, "weight", None) is not None or getattr(loss, "label_smoothing", 0.0):
        return None  # class weights and label smoothing run the *_weighted loss kernels
    if kind is SoftmaxCrossEntropy and y.ndim == 1:
        return E.LOSS_SOFTMAX_XENT
    if kind is MSELoss and y.ndim == 2:
        return E.LOSS_MSE
    return None


def _covers_model(model, optimizer):
    """True when the optimizer updates exactly the model's flat buffer, in its order."""
    flat = model._flat
    if flat is None or len(optimizer._groups) != 1:
        return False
    params = model.parameters()
    if len(optimizer.params) != len(params):
        return False
    if any(a is not b for a, b in zip(optimizer.params, params, strict=True)):
        return False
    data, grad = optimizer._groups[0]
    same = (
        data.size == flat.data.size
        and grad.size == flat.grad.size
        and data.__array_interface__["data"][0] == flat.data.__array_interface__["data"][0]
        and grad.__array_interface__["data"][0] == flat.grad.__array_interface__["data"][0]
    )
    # every Parameter must still be a view of the flat buffer (``.data`` not rebound)
    return same and type(flat).slice_of(params) is not None


def fast_runner(model, X, y, labels, loss, optimizer, batch_size, sample_weight=None, world=None):
    """A FastEpochRunner for this fit, or None when the fast path does not apply (then
    ``fit`` uses the layer-by-layer EpochRunner).  With ``world`` (a distributed fit's
    ``fastnn.distributed.World`` of several ranks), a FastDistributedRunner."""
    if not ENABLED or not getattr(model, "_dense_only", False) or not model._stages:
        return None
    if sample_weight is not None or model.dtype not in (np.float32, np.float64):
        return None
    if getattr(optimizer, "max_grad_norm", None) is not None:
        return None  # gradient clipping needs the global norm before each update
    # X of another dtype (a memory map converted per batch) stays on the layer path
    if not isinstance(X, np.ndarray) or X.dtype != model.dtype or not X.flags.c_contiguous:
        return None
    loss_kind = _loss_kind(loss, y)
    opt_kind = _optimizer_kind(optimizer)
    if loss_kind is None or opt_kind is None or not _covers_model(model, optimizer):
        return None
    if world is not None:
        return FastDistributedRunner(model, X, y, loss_kind, optimizer, opt_kind, batch_size, world)
    return FastEpochRunner(model, X, y, loss_kind, optimizer, opt_kind, batch_size)


class FastEpochRunner:
    """Runs batches through ``train_batches``: ``run(order, first, last)`` trains on batches
    ``first..last-1`` (any sub-range) and returns (sum of per-sample losses, number of correct
    predictions, finite), like :class:`fastnn.training.EpochRunner`."""

    def __init__(self, model, X, y, loss_kind, optimizer, opt_kind, batch_size):
        self.model, self.X, self.optimizer = model, X, optimizer
        self.loss_kind, self.opt_kind, self.batch_size = loss_kind, opt_kind, batch_size
        # check each gathered row of X for NaN/inf (fit's first epoch, instead of a separate
        # pass over X); after a run, inputs_finite is False when it found one and stopped
        self.check_inputs = False
        self.inputs_finite = True
        dtype = model.dtype
        n = X.shape[0]
        self.n_batches = -(-n // batch_size)
        if loss_kind == E.LOSS_SOFTMAX_XENT:
            self.y = y
            self.T = np.zeros((1, 1), dtype)
        else:
            self.y = np.zeros(1, np.int64)
            self.T = y
        stages = model._stages
        flat = model._flat
        offsets = {id(p): p._flat[1] for p in flat.params}
        sizes = [stages[0].linear.n_in] + [s.linear.n_out for s in stages]
        self.sizes = np.array(sizes, np.int64)
        self.w_off = np.array([offsets[id(s.linear.weight)] for s in stages], np.int64)
        self.b_off = np.array(
            [offsets[id(s.linear.bias)] if s.linear.bias is not None else -1 for s in stages],
            np.int64,
        )
        self.codes = np.array([s.code for s in stages], np.int64)
        self.alphas = np.array([s.alpha for s in stages], np.float64)
        layout, total = E.workspace_layout(sizes, batch_size, n)
        self.layout = np.array(layout, np.int64)
        self.feature_major = feature_major_for(sizes)
        self.split_units = not self.feature_major and units_split_for(sizes)
        self.work = np.empty(total, dtype)
        self.iwork = np.empty(2 * min(batch_size, n), np.int64)  # labels, softmax arg-max
        self.hyper = np.zeros(E.N_HYPER, np.float64)
        # per-chunk partial results follow the totals (``run`` sizes it for its chunk count)
        self.stats = np.zeros(E.N_STATS + 3, np.float64)
        self._chunks = [0, 1]  # a thread count and its chunks per step
        self._ready = set()  # parallel builds compiled or loaded (_parallel_build)
        self._pointers = {}  # fit kernel: its passes' addresses (_invoke)
        self.params, self.grads = flat.data, flat.grad
        state = optimizer.state[0]
        if opt_kind == E.OPT_SGD:
            self.state1 = state["momentum_buffer"]
            self.state2 = self.state1
        else:
            self.state1, self.state2 = state["exp_avg"], state["exp_avg_sq"]

    def _read_hyper(self):
        """Hyper-parameters as the optimizer holds them now (schedules change ``lr``)."""
        opt, h = self.optimizer, self.hyper
        h[E.H_LR] = opt.lr
        h[E.H_WEIGHT_DECAY] = opt.weight_decay
        if self.opt_kind == E.OPT_SGD:
            h[E.H_MOMENTUM] = opt.momentum
            h[E.H_DAMPENING] = opt.dampening
            h[E.H_NESTEROV] = float(opt.nesterov)
        else:
            h[E.H_BETA1], h[E.H_BETA2] = opt.betas
            h[E.H_EPS] = opt.eps
            h[E.H_DECOUPLED] = float(opt.decoupled)

    def chunks(self):
        """Chunks per step for the current thread setting (``chunks_for``, worked out once
        per thread count)."""
        threads = get_num_threads()
        known = self._chunks
        if known[0] != threads:
            sizes = self.sizes.tolist()
            known[:] = threads, chunks_for(sizes, self.batch_size, self.X.shape[0], threads)
        return known[1]

    def run(self, order, first, last):
        self._read_hyper()
        opt = self.optimizer
        chunks = self.chunks()
        if self.stats.size < E.N_STATS + 3 * chunks:
            self.stats = np.zeros(E.N_STATS + 3 * chunks, np.float64)
        if chunks > 1:
            # BLAS at one thread inside the parallel build (which also sends OpenBLAS's idle
            # workers to sleep: see fastnn._openblas_wait)
            hold_blas_threads(1)
            try:
                self._run_parallel(self._args(order, first, last, chunks))
            finally:
                release_blas_threads()
        else:
            # the serial build: BLAS's own threads run the products, in the kernels' library;
            # any other (SciPy's) at one thread meanwhile, so its idle workers sleep
            hold_blas_threads(1, but=BLAS_SOURCE)
            try:
                self._call(E.train_batches, order, first, last, 1)
            finally:
                release_blas_threads(but=BLAS_SOURCE)
        opt.step_count += int(self.stats[E.S_STEPS])
        self.inputs_finite = self.stats[E.S_INPUTS_FINITE] != 0
        finite = self.stats[E.S_FINITE] != 0
        return float(self.stats[E.S_LOSS]), int(self.stats[E.S_CORRECT]), bool(finite)

    def _args(self, order, first, last, chunks, batch=None):
        """The fit kernel's arguments for batches ``first..last-1`` in ``chunks`` chunks."""
        return (
            self.X,
            self.y,
            self.T,
            order,
            first,
            last,
            self.batch_size if batch is None else batch,
            self.check_inputs,
            self.sizes,
            self.w_off,
            self.b_off,
            self.codes,
            self.alphas,
            self.loss_kind,
            self.opt_kind,
            self.hyper,
            self.optimizer.step_count,
            self.params,
            self.grads,
            self.state1,
            self.state2,
            self.layout,
            self.work,
            self.iwork,
            self.stats,
            chunks,
            self.feature_major,
        )

    def _call(self, kernel, order, first, last, chunks, batch=None):
        self._invoke(kernel, self._args(order, first, last, chunks, batch))

    def _invoke(self, driver, args):
        """Run the fit kernel ``driver`` (a ``kernels._by_address.Driver``) on ``args``, with its
        passes' addresses, worked out at the runner's first call (the argument types stay)."""
        pointers = self._pointers.get(driver)
        if pointers is None:
            pointers = self._pointers[driver] = driver.pointers(driver.signature(args))
        driver.jit(pointers, *args)

    def _run_parallel(self, args):
        """The parallel build of the fit kernel (data-parallel or split by units) on ``args``,
        or its serial stand-in (``_parallel_build``), starting the helper that compiles the
        parallel build once the stand-in's first call has returned."""
        if self.split_units:
            parallel, serial = E.train_batches_units, E.train_batches_units_serial
        else:
            parallel, serial = E.train_batches_parallel, E.train_batches
        kernel, sig, start_helper = self._parallel_build(parallel, serial, args)
        try:
            self._invoke(kernel, args)
        except BaseException:
            if start_helper:  # (Ctrl-C, say) the next fit decides again
                del _BACKGROUND[(parallel, sig)]
            raise
        if start_helper:
            _start_helper(parallel, parallel.jit, sig)

    def _parallel_build(self, parallel, serial, args):
        """``parallel`` (a parallel build of the fit kernel), or while a helper process
        compiles it into the kernel cache (cold cache: a parallel driver's own compile is
        2.5-3.7 s of LLVM work on one core, the serial one's 1 s), ``serial``, the serial
        build of the same body, with the same chunks: the same operations in the same order,
        so the parameters are bit-identical, on one core instead of all.  Returns (kernel,
        signature, whether the helper should start after this call: the serial build and the
        callees both builds share are compiled by then, so the helper compiles only the
        parallel build's own code)."""
        if parallel in self._ready:
            return parallel, None, False
        sig = parallel.signature(args)
        state = _parallel_state(parallel, parallel.jit, sig)
        if state == "ready":
            self._ready.add(parallel)
            return parallel, sig, False
        return serial, sig, state == "start"


def _parallel_state(key, dispatcher, sig):
    """Whether the parallel build compiled by ``dispatcher`` (``key`` names it in
    _BACKGROUND) can run ``sig`` now: "ready" when compiled or cached, or to be compiled by
    this call (STAND_IN off; no helper can start).  Otherwise the caller runs a stand-in with
    the same bits while a helper process compiles the parallel build into the kernel cache,
    and starts that helper (``_start_helper``) once its call has returned ("start": the
    callees both share are compiled by then; on an exception it drops the pending mark, so
    the next call decides again) or not ("wait": a helper is on it)."""
    done = _BACKGROUND.get((key, sig))
    if done is None:
        if not STAND_IN or cached(dispatcher, sig) or not can_background(dispatcher, sig):
            return "ready"
        _BACKGROUND[(key, sig)] = _PENDING
        return "start"
    if done is _PENDING or not done():
        return "wait"
    del _BACKGROUND[(key, sig)]
    cached(dispatcher, sig)  # load what the helper left (if it failed, the call compiles)
    return "ready"


def _start_helper(key, dispatcher, sig):
    """Fork the helper that compiles ``dispatcher`` for ``sig`` (after a "start")."""
    _BACKGROUND[(key, sig)] = background(dispatcher, sig) or _no_helper


#: ``predict`` splits the rows across the threads (``FastForward``) from this many multiply-adds
#: (rows x the sum of n_in * n_out) and DATA_PARALLEL_MIN_ROWS rows per thread.  Row split /
#: layer-by-layer predict, 2 threads, float32, AMD EPYC 2-core VM, median of 11 after a 0.2 s
#: pause, torch imported first (its OpenMP pool apart from numba's): 784-100-10 on 64 rows 0.92,
#: 128 rows 0.86, 16384 rows 0.77; 64-64-10 on 1024 rows 0.73; 54-256-256-7 on 512 rows 0.89,
#: 16384 rows 0.87; 784-512-512-10 on 4096 rows 0.92; 784-1024-1024-1024-10 on 2048 rows 0.92;
#: 3072-512-256-10 on 2048 rows 1.01; 4-6-8-10-3 on 150 rows (15 000 multiply-adds) 1.07.
#: Right after a 512x512 torch product the layer-by-layer predict took 1.1-5.4x its time
#: alone (64-64-10 on 1024 rows: 5.4x), the row split 0.55-1.10x.
ROW_SPLIT_MIN_WORK = 1_000_000

#: (parallel build, signature) pairs of ``FastForward`` compiled or loaded in this process
_READY: set = set()


class FastForward:
    """A dense network's forward pass for ``predict``, split by rows across fastnn's threads
    (``fastnn.kernels.inference``): each thread runs every layer on its share of the rows, with
    BLAS at one thread.  Built from the network's flat parameter buffer: ``params`` (1-D),
    the layer sizes, each layer's weight and bias offsets in ``params`` (-1: no bias), and each
    layer's activation code and slope."""

    __slots__ = ("args", "macs", "hidden", "dtype", "_sigs")

    def __init__(self, params, sizes, w_off, b_off, codes, alphas):
        self.dtype = params.dtype
        sizes = [int(s) for s in sizes]
        self.macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.hidden = max(sizes[1:-1], default=0)
        self.args = (
            params,
            np.array(sizes, np.int64),
            np.array(w_off, np.int64),
            np.array(b_off, np.int64),
            np.array(codes, np.int64),
            np.array(alphas, np.float64),
            np.zeros(max(sizes), self.dtype),
        )
        self._sigs = {}

    def chunks(self, rows):
        """Row shares for a predict of ``rows`` rows: the thread count, or 1 when the rows or
        the work are too few to split (ROW_SPLIT_MIN_WORK): then the caller's own path."""
        threads = get_num_threads()
        if threads < 2 or rows < DATA_PARALLEL_MIN_ROWS * threads:
            return 1
        if rows * self.macs < ROW_SPLIT_MIN_WORK:
            return 1
        return threads

    def run(self, X, out, chunks, rows_at_a_time, check_first=False):
        """``out`` = the network's output for ``X`` (C-contiguous, the parameters' dtype) in
        ``chunks`` row shares, ``rows_at_a_time`` rows in flight across them; returns False
        when ``check_first`` is set and the first layer's pre-activations hold a NaN or inf.
        While a helper compiles the parallel build (a cold cache), ``_stand_in`` runs the same
        shares one after another: the same kernel calls, so the same bits, on one core."""
        n = X.shape[0]
        block = max(1, min(rows_at_a_time // chunks, -(-n // chunks)))
        work = np.empty((chunks, 2 * block * self.hidden), self.dtype)
        flags = np.zeros(chunks, np.uint8)
        kernel = I.forward_rows_parallel
        args = (X, *self.args, check_first, chunks, block, work, out, flags)
        flags_x = X.flags
        key = (X.dtype, X.ndim, flags_x.c_contiguous, flags_x.writeable, flags_x.aligned)
        sig = self._sigs.get(key)
        if sig is None:
            sig = self._sigs[key] = tuple(kernel.typeof_pyval(a) for a in args)
        state = "ready" if (kernel, sig) in _READY else _parallel_state(kernel, kernel, sig)
        if state == "ready":
            _READY.add((kernel, sig))
        hold_blas_threads(1)  # one BLAS thread per share; OpenBLAS's idle workers sleep
        try:
            if state == "ready":
                kernel(*args)
            elif not self._stand_in(X, out, chunks, block, check_first, work[0]):
                flags[0] = 1
        except BaseException:
            if state == "start":  # (Ctrl-C, say) the next call decides again
                _BACKGROUND.pop((kernel, sig), None)
            raise
        finally:
            release_blas_threads()
        if state == "start":
            _start_helper(kernel, kernel, sig)
        return not flags.any()

    def _stand_in(self, X, out, chunks, block, check_first, work):
        """``kernels.inference.forward_share`` on each share in turn, in Python: the same
        calls of the serial ``dense_forward`` on the same blocks of rows, so the same bits as
        the parallel build, with only the kernels the layer-by-layer predict compiles (a cold
        first predict of 784-100-10 compiled for 6.0-6.3 s through the split's own serial
        build, 2.5-2.7 s layer by layer).  Returns False when ``check_first`` found a NaN or
        inf in the first layer's pre-activations."""
        params, sizes, w_off, b_off, codes, alphas, zero_b = self.args
        layers = []
        for k in range(sizes.size - 1):
            n_in, n_out = int(sizes[k]), int(sizes[k + 1])
            W = params[w_off[k] : w_off[k] + n_in * n_out].reshape(n_in, n_out)
            b = zero_b[:n_out] if b_off[k] < 0 else params[b_off[k] : b_off[k] + n_out]
            layers.append((W, b, n_out, int(codes[k]), float(alphas[k])))
        half = block * self.hidden  # ``work``: one share's row of ``run``'s work array
        n, last = X.shape[0], len(layers) - 1
        finite = True
        for c in range(chunks):
            for s in range(c * n // chunks, (c + 1) * n // chunks, block):
                e = min(s + block, (c + 1) * n // chunks)
                H = X[s:e]
                for k, (W, b, n_out, code, alpha) in enumerate(layers):
                    p = (k % 2) * half
                    A = out[s:e] if k == last else work[p : p + (e - s) * n_out].reshape(-1, n_out)
                    if k == 0 and check_first:
                        dense_forward(H, W, b, IDENTITY, 0.0, A)
                        finite = finite and bool(all_finite(A))
                        activate_inplace(A, code, alpha)
                    else:
                        dense_forward(H, W, b, code, alpha, A)
                    H = A
        return finite


class FastDistributedRunner(FastEpochRunner):
    """``fit(distributed="mpi")`` on the compiled path, split at the gradient/update boundary.

    Per global batch, this rank runs ``train_batches`` on its contiguous share of the batch's
    rows (``fastnn.distributed.share``) as a batch of its own, with ``H_GRAD_ONLY`` set: the
    kernel gathers, runs forward, the loss, every delta and every weight and bias gradient,
    and updates nothing.  The gradient is of the share's mean loss, so it is scaled by the
    share's part of the batch's rows; then two collectives: a sum of (loss sum, correct, not
    finite) over the ranks (no rank updates when any met a NaN or inf), and one in-place
    ``Allreduce`` of the flat gradient buffer; then the optimizer's own step, the same on
    every rank.  Plain SGD thus loses the fast path's update folded into the weight-gradient
    product.  ``run`` returns the global totals, like ``DistributedRunner``."""

    def __init__(self, model, X, y, loss_kind, optimizer, opt_kind, batch_size, world):
        super().__init__(model, X, y, loss_kind, optimizer, opt_kind, batch_size)
        self.world = world
        self.totals = np.zeros(3, np.float64)

    def run(self, order, first, last):
        self._read_hyper()
        self.hyper[E.H_GRAD_ONLY] = 1.0
        world, totals, grads, stats = self.world, self.totals, self.grads, self.stats
        chunks = self.chunks()
        if stats.size < E.N_STATS + 3 * chunks:
            stats = self.stats = np.zeros(E.N_STATS + 3 * chunks, np.float64)
        n, bs = self.X.shape[0], self.batch_size
        total, correct = 0.0, 0
        if chunks > 1:
            hold_blas_threads(1)
        kernel = E.train_batches
        if chunks > 1:
            kernel = E.train_batches_units if self.split_units else E.train_batches_parallel
        try:
            for b in range(first, last):
                start = b * bs
                m = min(start + bs, n) - start
                r0, r1 = share(m, world.rank, world.size)
                mr = r1 - r0
                totals[:] = 0.0
                if mr:
                    self._call(kernel, order[start + r0 : start + r1], 0, 1, chunks, batch=mr)
                    if stats[E.S_FINITE] == 0 or stats[E.S_INPUTS_FINITE] == 0:
                        totals[2] = 1.0
                    else:
                        totals[0], totals[1] = stats[E.S_LOSS], stats[E.S_CORRECT]
                world.timed_sum(totals)
                if totals[2]:
                    return total, correct, False
                total += totals[0]
                correct += int(totals[1])
                if not mr:
                    grads[...] = 0
                elif mr != m:
                    grads *= mr / m
                world.timed_sum(grads)
                self.optimizer.step()
        finally:
            if chunks > 1:
                release_blas_threads()
        return total, correct, True
