"""A whole run of training steps of a dense MLP in one compiled call: the fit fast path.

``train_batches`` runs batches ``first..last-1`` of a shuffled sample order: gather the batch,
forward through every layer (matrix product plus a fused bias + activation pass), the loss and
its gradient in one pass, backward (the activation mask and the bias gradient fused into one
pass over each layer's delta) and the optimizer update, with no Python between batches.

Every array is flat, so one compiled signature serves every depth and width of network (one
compilation per dtype, cached on disk).  The layer structure comes in as small integer arrays:
``sizes`` (L + 1 widths), ``w_off`` and ``b_off`` (where each weight matrix and bias starts in
the flat parameter buffer; ``b_off[k] < 0`` for a layer without bias), ``codes``/``alphas``
(the activation after each layer).  2-D views are rebuilt from the flat buffers inside the
kernel (slicing and reshaping a contiguous buffer allocates nothing).

Products of at least ``SMALL_WORK`` multiply-adds go to BLAS (``_blas.gemm``), smaller ones
run as compiled loops; the elementwise passes and the optimizer run their parallel build when
more than one thread is set and the pass touches at least ``par_min`` elements.  The
arithmetic is the layer-by-layer path's, in the same order, so both give the same parameters
up to rounding in BLAS.
"""

import math

from numba import prange

from ._blas import gemm
from ._config import njit, twin
from .activations import activate, derivative
from .dense import SMALL_WORK
from .optim import adam_update, adam_update_parallel, sgd_update, sgd_update_parallel

LOSS_SOFTMAX_XENT = 0  # logits + integer labels
LOSS_MSE = 1  # outputs + real targets (n, k)

OPT_SGD = 0
OPT_ADAM = 1

# slots of the float64 ``hyper`` array
H_LR, H_MOMENTUM, H_DAMPENING, H_WEIGHT_DECAY, H_NESTEROV = 0, 1, 2, 3, 4
H_BETA1, H_BETA2, H_EPS, H_DECOUPLED = 5, 6, 7, 8
N_HYPER = 9

# slots of the float64 ``stats`` output
S_LOSS, S_CORRECT, S_FINITE, S_STEPS = 0, 1, 2, 3
N_STATS = 4

# columns per block in the column-blocked passes (one thread owns a block of columns)
_COL_BLOCK = 64


# -- elementwise passes, each compiled serial and parallel --------------------------------------
def _gather_batch(X, order, start, xb):
    """xb[r] = X[order[start + r]] for every row r of xb."""
    m, k = xb.shape
    for r in prange(m):
        src = order[start + r]
        for j in range(k):
            xb[r, j] = X[src, j]


def _bias_act(A, b, code, alpha):
    """A = f(A + b) in place (after a BLAS product)."""
    n, m = A.shape
    for i in prange(n):
        for j in range(m):
            A[i, j] = activate(A[i, j] + b[j], code, alpha)


def _small_forward(H, W, b, code, alpha, A):
    """A = f(H @ W + b) as a compiled loop (products too small for BLAS)."""
    n, n_in = H.shape
    n_out = W.shape[1]
    for i in range(n):
        for j in range(n_out):
            A[i, j] = b[j]
        for p in range(n_in):
            x = H[i, p]
            for j in range(n_out):
                A[i, j] += x * W[p, j]
        for j in range(n_out):
            A[i, j] = activate(A[i, j], code, alpha)


def _mask_colsum(G, A, code, alpha, dZ, db):
    """dZ = G * f'(A) and db = column sums of dZ, in one pass (G may be dZ).

    Threads own blocks of columns, so the column sums need no per-thread partials; each sum
    runs down the rows in order, as the layer path's bias gradient does."""
    n, m = G.shape
    n_blocks = (m + _COL_BLOCK - 1) // _COL_BLOCK
    for c in prange(n_blocks):
        j0 = c * _COL_BLOCK
        j1 = min(j0 + _COL_BLOCK, m)
        for j in range(j0, j1):
            db[j] = 0
        for i in range(n):
            for j in range(j0, j1):
                d = G[i, j] * derivative(A[i, j], code, alpha)
                dZ[i, j] = d
                db[j] += d


def _small_weight_grad(H, dZ, dW):
    """dW = H.T @ dZ as a compiled loop; threads own rows of dW."""
    n, n_in = H.shape
    n_out = dZ.shape[1]
    for p in range(n_in):
        for j in range(n_out):
            dW[p, j] = 0
        for i in range(n):
            x = H[i, p]
            for j in range(n_out):
                dW[p, j] += x * dZ[i, j]


def _small_input_grad(dZ, W, dH):
    """dH = dZ @ W.T as a compiled loop (the mask is applied afterwards)."""
    n, n_out = dZ.shape
    n_in = W.shape[0]
    for i in range(n):
        for p in range(n_in):
            acc = dZ[i, 0] * W[p, 0]
            for j in range(1, n_out):
                acc += dZ[i, j] * W[p, j]
            dH[i, p] = acc


def _softmax_xent_rows(Z, y, start, order, dZ):
    """Softmax cross-entropy of logits Z (m, k) against labels y[order[start + i]].

    Writes dZ = (softmax(Z) - onehot) / m and returns (sum of row losses, correct rows)."""
    m, k = Z.shape
    inv_m = Z.dtype.type(1.0 / m)
    total = 0.0
    correct = 0
    for i in range(m):
        t = y[order[start + i]]
        mx = Z[i, 0]
        best = 0
        for j in range(1, k):
            if Z[i, j] > mx:
                mx = Z[i, j]
                best = j
        s = Z[i, 0] * 0
        for j in range(k):
            s += math.exp(Z[i, j] - mx)
        lse = mx + math.log(s)
        total += lse - Z[i, t]
        for j in range(k):
            dZ[i, j] = math.exp(Z[i, j] - lse) * inv_m
        dZ[i, t] -= inv_m
        if best == t:
            correct += 1
    return total, correct


def _mse_rows(Y, T, start, order, dY):
    """Squared error of Y (m, k) against T[order[start + i]]; dY = 2 (Y - T) / (m k).

    Returns (m times the batch's mean squared error, 0): the sum of per-sample losses, as
    ``fit`` counts them, and no correct count."""
    m, k = Y.shape
    scale = Y.dtype.type(2.0 / (m * k))
    total = 0.0
    for i in range(m):
        src = order[start + i]
        row = 0.0
        for j in range(k):
            d = Y[i, j] - T[src, j]
            row += d * d
            dY[i, j] = scale * d
        total += row
    return total / k, 0


# Passes over a whole layer get a parallel build; the compiled product loops (below SMALL_WORK,
# a few microseconds) and the loss pass (batch x classes) stay serial: waking the thread pool
# costs more than they take, and every parallel build adds seconds to the one-off compilation.
gather_batch, gather_batch_parallel = twin(_gather_batch)
bias_act, bias_act_parallel = twin(_bias_act)
mask_colsum, mask_colsum_parallel = twin(_mask_colsum)
small_forward = njit(_small_forward)
small_weight_grad = njit(_small_weight_grad)
small_input_grad = njit(_small_input_grad)
softmax_xent_rows = njit(_softmax_xent_rows)
mse_rows = njit(_mse_rows)


# -- one layer, forward and backward -------------------------------------------------------------
@njit
def _layer_forward(H, W, b, code, alpha, A, par_min, threads):
    n, n_in = H.shape
    n_out = W.shape[1]
    par = threads > 1 and A.size >= par_min
    if n * n_in * n_out < SMALL_WORK:
        small_forward(H, W, b, code, alpha, A)
        return
    gemm(False, False, 1.0, H, W, 0.0, A)
    if par:
        bias_act_parallel(A, b, code, alpha)
    else:
        bias_act(A, b, code, alpha)


@njit
def _weight_grad(H, dZ, dW, par_min, threads):
    n, n_in = H.shape
    n_out = dZ.shape[1]
    if n * n_in * n_out < SMALL_WORK:
        small_weight_grad(H, dZ, dW)
        return
    gemm(True, False, 1.0, H, dZ, 0.0, dW)


@njit
def _input_grad(dZ, W, A_prev, code, alpha, dH, db_prev, par_min, threads):
    """dH = (dZ @ W.T) * f'(A_prev), and db_prev = column sums of dH."""
    n, n_out = dZ.shape
    n_in = W.shape[0]
    par = threads > 1 and dH.size >= par_min
    if n * n_in * n_out < SMALL_WORK:
        small_input_grad(dZ, W, dH)
    else:
        gemm(False, True, 1.0, dZ, W, 0.0, dH)
    if par:
        mask_colsum_parallel(dH, A_prev, code, alpha, dH, db_prev)
    else:
        mask_colsum(dH, A_prev, code, alpha, dH, db_prev)


@njit
def _colsum(dZ, db):
    n, m = dZ.shape
    for j in range(m):
        db[j] = 0
    for i in range(n):
        for j in range(m):
            db[j] += dZ[i, j]


# -- the driver --------------------------------------------------------------------------------
@njit
def _sgd_or_adam(opt_kind, hyper, step, params, grads, state1, state2, par):
    lr = hyper[H_LR]
    wd = hyper[H_WEIGHT_DECAY]
    if opt_kind == OPT_SGD:
        mu, damp, nesterov = hyper[H_MOMENTUM], hyper[H_DAMPENING], hyper[H_NESTEROV] != 0
        if par:
            sgd_update_parallel(params, grads, state1, lr, mu, damp, wd, nesterov, step == 1)
        else:
            sgd_update(params, grads, state1, lr, mu, damp, wd, nesterov, step == 1)
    else:
        b1, b2, eps, dec = hyper[H_BETA1], hyper[H_BETA2], hyper[H_EPS], hyper[H_DECOUPLED] != 0
        if par:
            adam_update_parallel(params, grads, state1, state2, lr, b1, b2, eps, wd, dec, step)
        else:
            adam_update(params, grads, state1, state2, lr, b1, b2, eps, wd, dec, step)


@njit
def train_batches(
    X,
    y,
    T,
    order,
    first,
    last,
    batch,
    sizes,
    w_off,
    b_off,
    codes,
    alphas,
    loss_kind,
    opt_kind,
    hyper,
    step0,
    par_min,
    threads,
    params,
    grads,
    state1,
    state2,
    layout,
    work,
    stats,
):
    """Train on batches ``first..last-1`` of ``order``; write (loss sum, correct, finite, steps)
    into ``stats``.

    X (n, n_in) inputs; y (n,) int64 labels (LOSS_SOFTMAX_XENT) or T (n, k) targets
    (LOSS_MSE; the other is an unused dummy); order (n,) the epoch's sample order; batch the
    batch size (the last batch may be smaller).  Layers: sizes (L + 1,), w_off, b_off, codes
    (L,) int64 and alphas (L,) float64 as in the module docstring.  The optimizer (OPT_SGD or
    OPT_ADAM, with ``hyper`` and the step count ``step0`` before this call) updates ``params``
    from ``grads`` with its state in ``state1``/``state2`` (momentum buffer; Adam's moments).
    ``par_min`` and ``threads``: passes touching at least ``par_min`` elements run their
    parallel build when ``threads > 1``.  ``work`` is scratch laid out by ``workspace_layout``
    (``layout``: where each layer's activations and deltas, the zero bias and the scratch bias
    gradient start).  Stops after
    the first batch whose loss is not finite (before its backward pass), with
    ``stats[S_FINITE] = 0``.
    """
    L = sizes.shape[0] - 1
    n = X.shape[0]
    t = params.dtype.type
    stats[S_LOSS] = 0.0
    stats[S_CORRECT] = 0.0
    stats[S_FINITE] = 1.0
    stats[S_STEPS] = 0.0
    width = layout[2 * L + 1] - layout[2 * L]
    zero_b = work[layout[2 * L] : layout[2 * L] + width]
    scratch_db = work[layout[2 * L + 1] : layout[2 * L + 1] + width]
    for j in range(width):
        zero_b[j] = 0
    par_update = threads > 1 and params.shape[0] >= par_min

    for bi in range(first, last):
        start = bi * batch
        m = min(start + batch, n) - start
        xb = work[: m * sizes[0]].reshape((m, sizes[0]))
        if threads > 1 and xb.size >= par_min:
            gather_batch_parallel(X, order, start, xb)
        else:
            gather_batch(X, order, start, xb)
        # -- forward -----------------------------------------------------------------------
        H = xb
        for k in range(L):
            n_in, n_out = sizes[k], sizes[k + 1]
            W = params[w_off[k] : w_off[k] + n_in * n_out].reshape((n_in, n_out))
            b = params[b_off[k] : b_off[k] + n_out] if b_off[k] >= 0 else zero_b[:n_out]
            A = work[layout[k] : layout[k] + m * n_out].reshape((m, n_out))
            _layer_forward(H, W, b, codes[k], t(alphas[k]), A, par_min, threads)
            H = A
        # -- loss --------------------------------------------------------------------------
        k_out = sizes[L]
        dZ = work[layout[L + L - 1] : layout[L + L - 1] + m * k_out].reshape((m, k_out))
        par = threads > 1 and dZ.size >= par_min
        if loss_kind == LOSS_SOFTMAX_XENT:
            total, correct = softmax_xent_rows(H, y, start, order, dZ)
        else:
            total, correct = mse_rows(H, T, start, order, dZ)
        if not math.isfinite(total):
            stats[S_FINITE] = 0.0
            return
        stats[S_LOSS] += total
        stats[S_CORRECT] += correct
        # -- backward ----------------------------------------------------------------------
        db = grads[b_off[L - 1] : b_off[L - 1] + k_out] if b_off[L - 1] >= 0 else scratch_db
        if codes[L - 1] != 0:
            if par:
                mask_colsum_parallel(dZ, H, codes[L - 1], t(alphas[L - 1]), dZ, db)
            else:
                mask_colsum(dZ, H, codes[L - 1], t(alphas[L - 1]), dZ, db)
        else:
            _colsum(dZ, db)
        for k in range(L - 1, -1, -1):
            n_in, n_out = sizes[k], sizes[k + 1]
            W = params[w_off[k] : w_off[k] + n_in * n_out].reshape((n_in, n_out))
            dW = grads[w_off[k] : w_off[k] + n_in * n_out].reshape((n_in, n_out))
            if k == 0:
                _weight_grad(xb, dZ, dW, par_min, threads)
                break
            H = work[layout[k - 1] : layout[k - 1] + m * n_in].reshape((m, n_in))
            _weight_grad(H, dZ, dW, par_min, threads)
            dH = work[layout[L + k - 1] : layout[L + k - 1] + m * n_in].reshape((m, n_in))
            db = grads[b_off[k - 1] : b_off[k - 1] + n_in] if b_off[k - 1] >= 0 else scratch_db
            _input_grad(dZ, W, H, codes[k - 1], t(alphas[k - 1]), dH, db, par_min, threads)
            dZ = dH
        # -- update ------------------------------------------------------------------------
        step = step0 + bi - first + 1
        _sgd_or_adam(opt_kind, hyper, step, params, grads, state1, state2, par_update)
        stats[S_STEPS] += 1.0


def workspace_layout(sizes, batch, n):
    """(layout, total): offsets into the scratch buffer ``train_batches`` uses, for layer
    widths ``sizes`` (L + 1,), batch size ``batch`` and ``n`` samples.  A plain-Python helper
    for the caller.

    layout[k] (k < L) is where layer k's output activations start, layout[L + k] its delta
    (the gradient at its pre-activation), layout[2L] a zero bias and layout[2L + 1] a scratch
    bias gradient (for layers without bias), each of the largest layer width.  The batch's
    gathered inputs sit at offset 0."""
    mb = min(batch, n)
    L = len(sizes) - 1
    width = max(sizes[1:])
    layout = []
    pos = mb * sizes[0]
    for k in range(L):
        layout.append(pos)
        pos += mb * sizes[k + 1]
    for k in range(L):
        layout.append(pos)
        pos += mb * sizes[k + 1]
    layout.append(pos)
    layout.append(pos + width)
    return layout, pos + 2 * width


__all__ = [
    "LOSS_SOFTMAX_XENT",
    "LOSS_MSE",
    "OPT_SGD",
    "OPT_ADAM",
    "N_HYPER",
    "N_STATS",
    "train_batches",
    "workspace_layout",
]
