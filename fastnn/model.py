"""Sequential: a stack of layers, run as fused stages.

A ``Linear`` followed by an elementwise activation runs as one dense stage: the activation is
applied in the pass that adds the bias (forward), and in backward the derivative of the
previous stage's activation is applied in the pass that writes ``dZ @ W.T``.  Other layers run
through their own ``forward``/``backward``.  All parameters live in one flat buffer.
"""

import contextlib
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from fastnn import kernels as K

from ._callback import Callback
from ._compile import announcing
from ._fastpath import ROW_SPLIT_MIN_WORK, FastForward
from ._threads import blas_threads_held, call_budget, pick
from ._validation import check_finite, check_positive_int, check_X
from .layers import Layer, Linear
from .layers._base import BufferCache
from .losses import Loss
from .optim import Optimizer
from .parameter import FlatParameters, Parameter
from .training import History
from .training import fit as _fit

#: most rows Sequential.predict runs through its small-input path (online inference, where the
#: general path's Python overhead was most of the call)
FAST_PREDICT_ROWS = 64

#: Multiply-adds from which ``predict`` holds the other BLAS libraries at one thread (about
#: 0.5 ms of work on the reference machine, so the hold's 8 us stay below 2%)
QUIET_BLAS_WORK = 1 << 23


class _DenseStage:
    """Linear (+ fused elementwise activation): buffers for one model, kernels from Linear."""

    __slots__ = ("linear", "act", "code", "alpha", "buffers", "X", "A")

    def __init__(self, linear, act):
        self.linear = linear
        self.act = act
        self.code = act.code if act is not None else K.IDENTITY
        self.alpha = act.alpha if act is not None else 0.0
        self.buffers = BufferCache()
        self.X = None
        self.A = None

    def forward(self, X, buffers=None):
        buffers = buffers or self.buffers
        A = buffers.get("A", (X.shape[0], self.linear.n_out), X.dtype)
        self.linear.forward_act(X, self.code, self.alpha, A)
        return A


class Sequential(Layer):
    """Layers applied in order.

    >>> model = Sequential(Linear(784, 100), ReLU(), Linear(100, 10))
    """

    def __init__(self, *layers: Layer) -> None:
        if len(layers) == 1 and isinstance(layers[0], list | tuple):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a fastnn Layer, got {type(layer).__name__}")
        self.layers = list(layers)
        self._build()

    def __setstate__(self, state):
        # unpickled (pickle, joblib, Dask, deepcopy): the parameters back into the flat buffer
        self.__dict__.update(state)
        if self.__dict__.get("_flat") is not None:
            self._flat.relink()

    def add(self, layer: Layer) -> "Sequential":
        """Append a layer (Keras style).  Optimizers made before must be made again."""
        if not isinstance(layer, Layer):
            raise TypeError(f"layer must be a fastnn Layer, got {type(layer).__name__}")
        self.layers.append(layer)
        self._build()
        return self

    def _build(self):
        params = self.parameters()
        self._flat = FlatParameters(params) if params else None
        self.dtype = self._flat.data.dtype if self._flat is not None else np.dtype(np.float32)
        stages = []
        i = 0
        while i < len(self.layers):
            layer = self.layers[i]
            if isinstance(layer, Linear):
                nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
                act = nxt if (nxt is not None and nxt.code is not None) else None
                stages.append(_DenseStage(layer, act))
                i += 2 if act is not None else 1
            else:
                stages.append(layer)
                i += 1
        self._stages = stages
        self._dense_only = all(isinstance(s, _DenseStage) for s in stages)
        self._row_split = None  # FastForward for predict, made at the first large predict
        self._macs_per_row = sum(
            s.linear.n_in * s.linear.n_out for s in stages if isinstance(s, _DenseStage)
        )
        self.n_in = next((s.linear.n_in for s in stages if isinstance(s, _DenseStage)), None)
        n = self.n_in
        for layer in self.layers:
            if n is not None:
                n = layer.output_dim(n)
        self.n_out = n

    # -- parameters --------------------------------------------------------------------------
    def parameters(self) -> list[Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def zero_grad(self) -> None:
        if self._flat is not None:
            self._flat.grad[...] = 0

    def output_dim(self, n_in: int) -> int:
        for layer in self.layers:
            n_in = layer.output_dim(n_in)
        return n_in

    # -- forward / backward ------------------------------------------------------------------
    def _check_input(self, X, name="X"):
        return check_X(X, name, dtype=self.dtype, n_features=self.n_in)

    def forward(self, X: ArrayLike) -> np.ndarray:
        """Output of the model for a batch, keeping what ``backward`` needs.

        The returned array is a buffer reused by the next ``forward``: copy it to keep it.
        """
        return self._forward(self._check_input(X))

    def _forward(self, X):
        for stage in self._stages:
            if isinstance(stage, _DenseStage):
                stage.X = X
                X = stage.A = stage.forward(X)
            elif isinstance(stage, Sequential):
                # checked input already; a non-finite activation inside is a divergence for
                # fit to handle, not a bad argument
                X = stage._forward(X)
            else:
                X = stage.forward(X)
        self._out_shape = X.shape  # what backward's grad must match, whatever the last stage
        return X

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """Backpropagate ``grad`` (d loss / d output); accumulate into every ``Parameter.grad``
        and return d loss / d input."""
        grad = np.asarray(grad)
        shape = getattr(self, "_out_shape", None)
        if shape is None:
            raise RuntimeError("backward called before forward")
        if grad.shape != shape:
            # checked for every last stage (a Softmax kernel would read past a smaller grad)
            raise ValueError(f"grad must have the output's shape {shape}, got {grad.shape}")
        grad = np.ascontiguousarray(grad, dtype=self.dtype)
        return self._backward(grad, beta=1.0, need_input_grad=True)

    def _backward(self, grad, beta, need_input_grad):
        stages = self._stages
        g = grad
        g_is_preact = False  # True when g is already the gradient at the stage's pre-activation
        for k in range(len(stages) - 1, -1, -1):
            stage = stages[k]
            if isinstance(stage, _DenseStage):
                if not g_is_preact and stage.code != K.IDENTITY:
                    dZ = stage.buffers.get("dZ", g.shape, g.dtype)
                    pick(K.activation_backward, K.activation_backward_parallel, g.size)(
                        stage.A, g, stage.code, stage.alpha, dZ
                    )
                    g = dZ
                prev = stages[k - 1] if k > 0 else None
                fuse = isinstance(prev, _DenseStage)
                X = stage.X
                if k > 0 or need_input_grad:
                    dX = stage.buffers.get("dX", X.shape, X.dtype)
                else:
                    dX = stage.buffers.get("dX_none", (0, X.shape[1]), X.dtype)
                stage.linear.backward_masked(
                    X, g, beta, prev.code if fuse else K.IDENTITY, prev.alpha if fuse else 0.0, dX
                )
                g = dX
                g_is_preact = fuse
            else:
                g = stage.backward(g)
                g_is_preact = False
        return g if need_input_grad else None

    # -- inference ---------------------------------------------------------------------------
    @announcing("inference kernels")
    def predict(self, X: ArrayLike, batch_size: int = 4096) -> np.ndarray:
        """Model output for ``X`` (a new array), computed ``batch_size`` rows at a time.

        A network of dense layers with enough work splits the rows across the threads, each
        running every layer on its share (``fastnn._fastpath.FastForward``); other models go
        layer by layer.  Keeps no state: safe between training steps and from several
        threads."""
        batch_size = check_positive_int(batch_size, "batch_size")
        if (
            self._dense_only
            and type(X) is np.ndarray
            and X.ndim == 2
            and 0 < X.shape[0] <= FAST_PREDICT_ROWS
            and X.shape[0] * self._macs_per_row < ROW_SPLIT_MIN_WORK  # else split by rows
            and X.dtype == self.dtype
            and X.shape[1] == self.n_in
            and X.flags.c_contiguous
            and K.all_finite(X)
        ):
            return self._predict_small(X)
        first = self._stages[0] if self._stages else None
        # A first dense layer with fewer outputs than inputs checks its pre-activation instead
        # of X (see _infer): a separate pass over a 100 000 x 784 float32 X cost 11 ms of a
        # 784-100-10 predict of 100-110 ms
        narrows = isinstance(first, _DenseStage) and first.linear.n_out < first.linear.n_in
        Xc = check_X(X, "X", dtype=self.dtype, n_features=self.n_in, finite=not narrows)
        batch_size = min(batch_size, Xc.shape[0])  # 2**70 is the whole X, not a kernel error
        out = np.empty((Xc.shape[0], self.n_out), self.dtype)
        with call_budget():  # fastnn's threads in any thread; a Dask task's budget
            row_split = self._fast_forward()
            chunks = row_split.chunks(Xc.shape[0]) if row_split is not None else 1
            if chunks > 1:
                if not row_split.run(Xc, out, chunks, batch_size, check_first=narrows):
                    check_finite(Xc, "X")  # else the overflow is the model's, as below
                return out
            buffers = BufferCache(max_shapes=2)
            # other BLAS libraries than the kernels' own (SciPy's, after a scikit-learn fit)
            # get no work here: at one thread meanwhile, so their idle workers sleep instead of
            # spinning on the cores (fastnn._openblas_wait); not worth its 8 us on small inputs
            quiet = Xc.shape[0] * self._macs_per_row >= QUIET_BLAS_WORK
            with blas_threads_held(1, but=K.BLAS_SOURCE) if quiet else contextlib.nullcontext():
                for start in range(0, Xc.shape[0], batch_size):
                    stop = min(start + batch_size, Xc.shape[0])
                    out[start:stop] = self._infer(Xc[start:stop], buffers, narrows)
        return out

    def _fast_forward(self):
        """The model's ``FastForward`` (its rows split across the threads), or None when
        ``predict`` must go layer by layer: a stage other than dense ones, or parameters that
        are no longer one run of a flat buffer (``.data`` rebound by the user)."""
        if not self._dense_only or not self._stages or self._flat is None:
            return None
        params = self._flat.params
        if FlatParameters.slice_of(params) is None:
            return None
        owner = params[0]._flat[0]  # (another model built on these layers since owns them)
        found = self._row_split
        if found is None or found.args[0] is not owner.data:
            stages = self._stages
            found = self._row_split = FastForward(
                owner.data,
                [stages[0].linear.n_in] + [s.linear.n_out for s in stages],
                [s.linear.weight._flat[1] for s in stages],
                [s.linear.bias._flat[1] if s.linear.bias is not None else -1 for s in stages],
                [s.code for s in stages],
                [s.alpha for s in stages],
            )
        return found

    def _predict_small(self, X):
        """Dense-only model, a few well-formed rows (the input the full check would pass
        unchanged): each stage's kernel on fresh arrays, without the chunking, buffer cache
        and lazy finiteness check of the general path, whose Python cost dominates at this
        size (64-100-10, one thread: one row 11.7 -> 5-6 us, 64 rows 27 -> 19 us)."""
        for stage in self._stages:
            linear = stage.linear
            A = np.empty((X.shape[0], linear.n_out), X.dtype)
            X = linear.forward_act(X, stage.code, stage.alpha, A)  # serial/parallel by size
        return X

    def _infer(self, X, buffers, check_first=False):
        for k, stage in enumerate(self._stages):
            if isinstance(stage, _DenseStage):
                A = buffers.get(f"A{k}", (X.shape[0], stage.linear.n_out), X.dtype)
                if k == 0 and check_first:
                    # A NaN or inf anywhere in a row of X makes that row of X @ W + b NaN or
                    # +-inf in every column (inf * w is +-inf, inf * 0 NaN, and one such term
                    # in a sum of finite ones keeps it non-finite), so X is looked at only when
                    # this smaller block is not finite; if X is, the overflow is the model's.
                    stage.linear.forward_act(X, K.IDENTITY, 0.0, A)
                    if not K.all_finite(A):
                        check_finite(X, "X")
                    if stage.code != K.IDENTITY:
                        K.activations.activate_inplace(A, stage.code, stage.alpha)
                    X = A
                else:
                    X = stage.linear.forward_act(X, stage.code, stage.alpha, A)
            elif isinstance(stage, Sequential):
                X = stage._infer(X, BufferCache(max_shapes=1))  # its own names for buffers
            else:
                X = stage.predict(X)
        return X

    # -- training ----------------------------------------------------------------------------
    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        *,
        loss: Loss,
        optimizer: Optimizer,
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int | None = None,
        validation_data: tuple[ArrayLike, ArrayLike] | None = None,
        validation_split: float = 0.0,
        callbacks: Sequence[Callback] | Callback | None = None,
        initial_epoch: int = 0,
        verbose: int = 1,
        sample_weight: ArrayLike | None = None,
        distributed: str | None = None,
    ) -> History:
        """Train with mini-batches; returns a :class:`~fastnn.History`.

        Parameters
        ----------
        X : array (n_samples, n_features)
            In memory, or a NumPy memory map (``np.load(path, mmap_mode="r")``): a memory map
            is checked in chunks and read batch by batch (rows gathered by shuffled index and
            converted to the model's dtype per batch), never loaded or converted whole.
        y : integer labels (n_samples,) for classification losses, or targets (n_samples, k)
        loss : a fastnn loss (SoftmaxCrossEntropy, CrossEntropy, MSELoss)
        optimizer : a fastnn optimizer over ``self.parameters()``
        epochs : int
            Index of the last epoch + 1 (as in Keras): trains epochs ``initial_epoch`` to
            ``epochs - 1``.
        batch_size : int
            The last batch of an epoch may be smaller.
        shuffle : reshuffle the samples every epoch
        seed : int, numpy Generator or None
            Epoch ``e`` is shuffled by a permutation derived from ``(seed, e)`` alone, so the
            same seed gives the same fit, and a fit resumed with ``initial_epoch`` shuffles as
            an uninterrupted one would.
        validation_data : (X_val, y_val) evaluated after each epoch
        validation_split : float in [0, 1)
            Hold out this fraction of the samples, taken from the end of X and y before any
            shuffling (as Keras), as validation data.  Giving it together with
            ``validation_data`` is an error (Keras silently ignores the split).
        callbacks : list of fastnn.callbacks.Callback
            Hooks called around training, epochs and batches (see :mod:`fastnn.callbacks`).
            A callback stops training with ``model.stop_training = True`` or by returning True
            from ``on_epoch_end``.
        initial_epoch : int
            Epoch to start from when resuming (see ``fastnn.load_optimizer``).
        verbose : {0, 1, 2}
            0: silent.  1: one line per epoch, plus a progress bar redrawn within long epochs
            when stdout is a terminal.  2: one line per epoch, never a bar (for logs).
        sample_weight : array (n_samples,), optional
            Non-negative weight per sample: each batch's loss is the weighted mean
            sum_i w_i l_i / sum_i w_i (see :mod:`fastnn.losses`), and the epoch's ``loss`` the
            weighted mean over all samples.  With ``validation_split`` it is split like X.
            Validation metrics are unweighted.
        distributed : None or "mpi"
            ``"mpi"``: data-parallel training over the ranks of an MPI launch
            (``mpiexec -n N python train.py``, see :mod:`fastnn.distributed`).  Every rank
            passes the same arguments; ``batch_size`` is the global batch, of which each rank
            computes a contiguous share; the gradients are summed with one ``Allreduce`` per
            step, so the parameters equal a single-process fit's up to rounding and are the
            same on every rank.  Rank 0's initial parameters and seed are used; the metrics
            are reduced (``History`` is the same everywhere); ModelCheckpoint, CSVLogger and
            the printed lines act on rank 0 only.  Without a launcher it is a plain fit.

        Notes
        -----
        Ctrl-C during fit stops after the current step (a whole step: no half-applied update)
        and returns the History so far with ``history.interrupted = True``; a second Ctrl-C
        stops at once, rolling the parameters back to the start of the epoch.
        """
        return _fit(
            self,
            X,
            y,
            loss=loss,
            optimizer=optimizer,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            validation_data=validation_data,
            validation_split=validation_split,
            callbacks=callbacks,
            initial_epoch=initial_epoch,
            verbose=verbose,
            sample_weight=sample_weight,
            distributed=distributed,
        )

    def __repr__(self):
        inner = ",\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        n = self._flat.data.size if self._flat is not None else 0
        return f"Sequential(\n{inner}\n)  # {n:,} parameters, {self.dtype}"
