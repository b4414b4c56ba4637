"""A whole run of training steps of a dense MLP in one compiled call: the fit fast path.

``train_batches`` runs batches ``first..last-1`` of a shuffled sample order: gather the batch,
forward through every layer (a BLAS product, then one pass adding the bias and applying the
activation), the loss and its gradient in one pass, and backward layer by layer: the input
gradient (a BLAS product, then one pass applying the previous activation's derivative and
summing the columns into the previous bias gradient), the weight gradient and, at once, that
layer's optimizer update.  No Python runs between batches.

Every array is flat, so one compiled signature serves every depth and width of network (one
compilation per dtype, cached on disk).  The layer structure comes in as small integer arrays:
``sizes`` (L + 1 widths), ``w_off`` and ``b_off`` (where each weight matrix and bias starts in
the flat parameter buffer; ``b_off[k] < 0`` for a layer without bias), ``codes``/``alphas``
(the activation after each layer).  2-D views are rebuilt from the flat buffers inside the
kernel (slicing and reshaping a contiguous buffer allocates nothing).

Updating each layer right after its gradient (instead of the whole buffer after the whole
backward pass) applies the same elementwise rule to every parameter, so the result is the
layer path's; it only reads the gradient while it is still in cache.  Plain SGD (no momentum)
goes further and folds the update into the weight-gradient product itself,
``W = (1 - lr wd) W - lr X.T @ dZ`` as one ``gemm`` with ``beta = 1 - lr wd``: the weight
gradient is then never stored (``Parameter.grad`` of the weights is left as it was), which
saves a write and a read of every weight per step (about 3% of a 784-1024-1024-1024-10 step).

Products go to BLAS (``_blas.gemm``) unless ``dense.small_product`` says a compiled loop is
faster.

Threads: every pass here is serial and BLAS brings the parallelism.  Measured on the 2-core
reference machine (2 threads, one epoch / the GEMM floor): with the elementwise passes in
numba's parallel builds 784-100-10@64 took 45x the floor and 784-512-512-10@256 7.9x, with
serial passes 1.47x and 1.40x.  numba's OpenMP workers spin after a parallel region and
starve the OpenBLAS worker that needs the same core (and OpenBLAS's idle workers spin for
~0.1 s after each product); even with passive OpenMP waiting (OMP_WAIT_POLICY=PASSIVE)
parallel passes stayed slower (1.91x vs 1.45x), since each region then pays a wake-up.
"""

import math

from ._blas import gemm
from ._config import njit
from .activations import activate, derivative
from .dense import bias_act, small_product
from .optim import adam_update, sgd_update

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


# -- elementwise passes (serial: see "Threads" in the module docstring) -------------------------
@njit
def gather_batch(X, order, start, xb, y, yb):
    """xb[r] = X[order[start + r]] for every row r of xb, and yb[r] = y[order[start + r]] when
    yb has rows (labels gathered in the same sweep: their cache misses overlap with X's)."""
    m, k = xb.shape
    labels = yb.shape[0] > 0
    for r in range(m):
        src = order[start + r]
        if labels:
            yb[r] = y[src]
        for j in range(k):
            xb[r, j] = X[src, j]


@njit
def mask_colsum(dZ, A, code, alpha, db):
    """dZ *= f'(A) in place (skipped for the identity), then db = column sums of dZ.

    Two sweeps along rows, each of which vectorises.  Fused into one sweep (mask, store, add
    to db) the in-place version ran 3.7 ms instead of 0.22 ms on 512x1024 float32: the store
    into dZ and the update of db could alias, so nothing vectorised."""
    n, m = dZ.shape
    if code != 0:
        # one flat sweep: rows as short as the iris network's (3-10) vectorise too
        flat, a = dZ.reshape(n * m), A.reshape(n * m)
        for i in range(n * m):
            flat[i] *= derivative(a[i], code, alpha)
    for j in range(m):
        db[j] = 0
    for i in range(n):
        for j in range(m):
            db[j] += dZ[i, j]


@njit
def small_forward(H, W, b, code, alpha, A):
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


@njit
def small_weight_grad(H, dZ, dW):
    """dW = H.T @ dZ as a compiled loop."""
    n, n_in = H.shape
    n_out = dZ.shape[1]
    for p in range(n_in):
        for j in range(n_out):
            dW[p, j] = 0
    for i in range(n):
        for p in range(n_in):
            x = H[i, p]
            for j in range(n_out):
                dW[p, j] += x * dZ[i, j]


@njit
def small_input_grad(dZ, W, dH):
    """dH = dZ @ W.T as a compiled loop (the mask is applied afterwards)."""
    n, n_out = dZ.shape
    n_in = W.shape[0]
    for i in range(n):
        for p in range(n_in):
            acc = dZ[i, 0] * W[p, 0]
            for j in range(1, n_out):
                acc += dZ[i, j] * W[p, j]
            dH[i, p] = acc


@njit
def softmax_xent_rows(Z, yb, dZ, db):
    """Softmax cross-entropy of logits Z (m, k) against integer labels yb (m,).

    Writes dZ = (softmax(Z) - onehot) / m and db = its column sums; returns (sum of row
    losses, rows whose arg-max is the label)."""
    m, k = Z.shape
    inv_m = Z.dtype.type(1.0 / m)
    total = 0.0
    correct = 0
    for j in range(k):
        db[j] = 0
    for i in range(m):
        t = yb[i]
        mx = Z[i, 0]
        best = 0
        for j in range(1, k):
            if Z[i, j] > mx:
                mx = Z[i, j]
                best = j
        s = Z[i, 0] * 0
        for j in range(k):
            e = math.exp(Z[i, j] - mx)
            dZ[i, j] = e
            s += e
        total += mx + math.log(s) - Z[i, t]
        r = inv_m / s
        for j in range(k):
            dZ[i, j] *= r
        dZ[i, t] -= inv_m
        for j in range(k):
            db[j] += dZ[i, j]
        if best == t:
            correct += 1
    return total, correct


@njit
def mse_rows(Y, T, dY):
    """Squared error of Y (m, k) against targets T (m, k); dY = 2 (Y - T) / (m k).

    Returns (m times the batch's mean squared error, 0): the sum of per-sample losses, as
    ``fit`` counts them, and no correct count."""
    m, k = Y.shape
    scale = Y.dtype.type(2.0 / (m * k))
    total = 0.0
    for i in range(m):
        row = 0.0
        for j in range(k):
            d = Y[i, j] - T[i, j]
            row += d * d
            dY[i, j] = scale * d
        total += row
    return total / k, 0


# -- one layer ---------------------------------------------------------------------------------
@njit
def _forward(H, W, b, code, alpha, A):
    n, n_in = H.shape
    n_out = W.shape[1]
    if small_product(n, n_in, n_out):
        small_forward(H, W, b, code, alpha, A)
    else:
        gemm(False, False, 1.0, H, W, 0.0, A)
        bias_act(A, b, code, alpha)


@njit
def _input_grad(dZ, W, A_prev, code, alpha, dH, db_prev):
    """dH = (dZ @ W.T) * f'(A_prev) and db_prev = its column sums."""
    n, n_out = dZ.shape
    n_in = W.shape[0]
    if small_product(n, n_in, n_out):
        small_input_grad(dZ, W, dH)
    else:
        gemm(False, True, 1.0, dZ, W, 0.0, dH)
    mask_colsum(dH, A_prev, code, alpha, db_prev)


@njit
def _update(opt_kind, hyper, step, p, g, s1, s2):
    """The optimizer's rule on one slice of the flat buffers (every element independently)."""
    lr = hyper[H_LR]
    wd = hyper[H_WEIGHT_DECAY]
    if opt_kind == OPT_SGD:
        mu, damp, nesterov = hyper[H_MOMENTUM], hyper[H_DAMPENING], hyper[H_NESTEROV] != 0
        sgd_update(p, g, s1, lr, mu, damp, wd, nesterov, step == 1)
    else:
        b1, b2, eps, dec = hyper[H_BETA1], hyper[H_BETA2], hyper[H_EPS], hyper[H_DECOUPLED] != 0
        adam_update(p, g, s1, s2, lr, b1, b2, eps, wd, dec, step)


@njit
def _weight_grad_update(H, dZ, o, n_in, n_out, opt_kind, hyper, step, fold, params, grads, s1, s2):
    """Weight gradient of one layer (its weights start at ``o`` in the flat buffers) and the
    optimizer update of those weights; with ``fold`` (plain SGD) both in one gemm."""
    size = n_in * n_out
    W = params[o : o + size].reshape((n_in, n_out))
    dW = grads[o : o + size].reshape((n_in, n_out))
    n = H.shape[0]
    if fold and not small_product(n, n_in, n_out):
        lr = hyper[H_LR]
        gemm(True, False, -lr, H, dZ, 1.0 - lr * hyper[H_WEIGHT_DECAY], W)
        return
    if small_product(n, n_in, n_out):
        small_weight_grad(H, dZ, dW)
    else:
        gemm(True, False, 1.0, H, dZ, 0.0, dW)
    e = o + size
    _update(opt_kind, hyper, step, params[o:e], grads[o:e], s1[o:e], s2[o:e])


# -- the driver --------------------------------------------------------------------------------
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
    params,
    grads,
    state1,
    state2,
    layout,
    work,
    iwork,
    stats,
):
    """Train on batches ``first..last-1`` of ``order``; write (loss sum, correct, finite, steps)
    into ``stats``.

    X (n, n_in) inputs; y (n,) int64 labels (LOSS_SOFTMAX_XENT) or T (n, k) targets
    (LOSS_MSE; the other is an unused dummy); order (n,) the epoch's sample order; batch the
    batch size (the last batch may be smaller).  Layers: sizes (L + 1,), w_off, b_off, codes
    (L,) int64 and alphas (L,) float64 as in the module docstring.  The optimizer (OPT_SGD or
    OPT_ADAM, with ``hyper`` and the step count ``step0`` before this call) updates ``params``
    from ``grads`` with its state in ``state1``/``state2`` (momentum buffer; Adam's moments;
    unused ones may be any array of the parameters' size).  ``work`` is scratch laid out by
    ``workspace_layout`` (``layout``), ``iwork`` int64 scratch of ``batch`` elements.  Stops
    at the first batch whose loss is not finite, before its backward pass, with
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
    fold = opt_kind == OPT_SGD and hyper[H_MOMENTUM] == 0

    for bi in range(first, last):
        start = bi * batch
        m = min(start + batch, n) - start
        step = step0 + bi - first + 1
        xb = work[: m * sizes[0]].reshape((m, sizes[0]))
        k_out = sizes[L]
        if loss_kind == LOSS_SOFTMAX_XENT:
            yb = iwork[:m]
            gather_batch(X, order, start, xb, y, yb)
        else:
            gather_batch(X, order, start, xb, y, iwork[:0])
            tb = work[layout[2 * L + 2] : layout[2 * L + 2] + m * k_out].reshape((m, k_out))
            gather_batch(T, order, start, tb, y, iwork[:0])
        # -- forward -----------------------------------------------------------------------
        H = xb
        for k in range(L):
            n_in, n_out = sizes[k], sizes[k + 1]
            W = params[w_off[k] : w_off[k] + n_in * n_out].reshape((n_in, n_out))
            b = params[b_off[k] : b_off[k] + n_out] if b_off[k] >= 0 else zero_b[:n_out]
            A = work[layout[k] : layout[k] + m * n_out].reshape((m, n_out))
            _forward(H, W, b, codes[k], t(alphas[k]), A)
            H = A
        # -- loss: dZ of the last layer and its bias gradient --------------------------------
        dZ = work[layout[2 * L - 1] : layout[2 * L - 1] + m * k_out].reshape((m, k_out))
        db = grads[b_off[L - 1] : b_off[L - 1] + k_out] if b_off[L - 1] >= 0 else scratch_db
        if loss_kind == LOSS_SOFTMAX_XENT:
            total, correct = softmax_xent_rows(H, yb, dZ, db)
        else:
            total, correct = mse_rows(H, tb, dZ)
        if loss_kind != LOSS_SOFTMAX_XENT or codes[L - 1] != 0:
            # the output layer's own activation (e.g. a sigmoid before MSE), and the bias sums
            mask_colsum(dZ, H, codes[L - 1], t(alphas[L - 1]), db)
        if not math.isfinite(total):
            stats[S_FINITE] = 0.0
            return
        stats[S_LOSS] += total
        stats[S_CORRECT] += correct
        # -- backward and update, layer by layer ---------------------------------------------
        for k in range(L - 1, -1, -1):
            n_in, n_out = sizes[k], sizes[k + 1]
            H = xb if k == 0 else work[layout[k - 1] : layout[k - 1] + m * n_in].reshape((m, n_in))
            if k > 0:
                # the input gradient first: it needs this layer's weights before their update
                W = params[w_off[k] : w_off[k] + n_in * n_out].reshape((n_in, n_out))
                dH = work[layout[L + k - 1] : layout[L + k - 1] + m * n_in].reshape((m, n_in))
                if b_off[k - 1] >= 0:
                    db_prev = grads[b_off[k - 1] : b_off[k - 1] + n_in]
                else:
                    db_prev = scratch_db
                _input_grad(dZ, W, H, codes[k - 1], t(alphas[k - 1]), dH, db_prev)
            _weight_grad_update(
                H, dZ, w_off[k], n_in, n_out, opt_kind, hyper, step, fold, params, grads,
                state1, state2,
            )  # fmt: skip
            if b_off[k] >= 0:
                o, e = b_off[k], b_off[k] + n_out
                _update(opt_kind, hyper, step, params[o:e], grads[o:e], state1[o:e], state2[o:e])
            if k > 0:
                dZ = dH
        stats[S_STEPS] += 1.0


def workspace_layout(sizes, batch, n):
    """(layout, total): offsets into the scratch buffer ``train_batches`` uses, for layer
    widths ``sizes`` (L + 1,), batch size ``batch`` and ``n`` samples.  A plain-Python helper
    for the caller.

    layout[k] (k < L) is where layer k's output activations start, layout[L + k] its delta
    (the gradient at its pre-activation), layout[2L] a zero bias and layout[2L + 1] a scratch
    bias gradient (for layers without bias), each of the largest layer width, and
    layout[2L + 2] the batch's gathered targets (MSE).  The batch's gathered inputs sit at
    offset 0."""
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
    layout += [pos, pos + width, pos + 2 * width]
    return layout, pos + 2 * width + mb * sizes[-1]


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
