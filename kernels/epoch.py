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
faster.  With a softmax loss the output layer's logits and delta are stored transposed
(classes x batch rows; BLAS reads and writes them through its transpose flags), so the
softmax vectorises along the batch however few the classes: with 3 classes this halved a
4-6-8-10-3@150 epoch.  The gather of each batch prefetches rows ahead (``gather_batch``) and,
in ``fit``'s first epoch, checks them for NaN and inf.

Threads: every pass here is serial and BLAS brings the parallelism.  Measured on the 2-core
reference machine (2 threads, one epoch / the GEMM floor): with the elementwise passes in
numba's parallel builds 784-100-10@64 took 45x the floor and 784-512-512-10@256 7.9x, with
serial passes 1.47x and 1.40x.  numba's OpenMP workers spin after a parallel region and
starve the OpenBLAS worker that needs the same core (and OpenBLAS's idle workers spin for
~0.1 s after each product); even with passive OpenMP waiting (OMP_WAIT_POLICY=PASSIVE)
parallel passes stayed slower (1.91x vs 1.45x), since each region then pays a wake-up.  The
gather alone as a parallel kernel (the largest serial pass of 784-100-10@64: ~40 us of a
~270 us step, 64 random rows of a 142 MB X) made that epoch 1.35-1.47x slower, for the same
reason.
"""

import math

from ._blas import gemm
from ._config import njit
from ._intrinsics import prefetch, vexp
from .activations import IDENTITY, activate, activation_backward, activation_forward
from .data import all_finite
from .dense import bias_act, small_product
from .optim import adam_update, sgd_update

#: rows ahead in the sample order that ``gather_batch`` prefetches (see there)
PREFETCH_AHEAD = 32

LOSS_SOFTMAX_XENT = 0  # logits + integer labels
LOSS_MSE = 1  # outputs + real targets (n, k)

OPT_SGD = 0
OPT_ADAM = 1

# slots of the float64 ``hyper`` array
H_LR, H_MOMENTUM, H_DAMPENING, H_WEIGHT_DECAY, H_NESTEROV = 0, 1, 2, 3, 4
H_BETA1, H_BETA2, H_EPS, H_DECOUPLED = 5, 6, 7, 8
N_HYPER = 9

# slots of the float64 ``stats`` output
S_LOSS, S_CORRECT, S_FINITE, S_STEPS, S_INPUTS_FINITE = 0, 1, 2, 3, 4
N_STATS = 5


# -- elementwise passes (serial: see "Threads" in the module docstring) -------------------------
@njit
def gather_batch(X, order, start, xb, y, yb, check):
    """xb[r] = X[order[start + r]] for every row r of xb, and yb[r] = y[order[start + r]] when
    yb has rows (labels gathered in the same sweep: their cache misses overlap with X's).
    Returns False when ``check`` is true and a gathered value is NaN or inf (True otherwise):
    one sweep over the batch while it is in cache, instead of a separate pass over all of X.

    The rows are random, so each one is a cache miss (and often a TLB miss) that the hardware
    prefetcher cannot predict.  The loop therefore prefetches the row (its first and last
    element) and the label PREFETCH_AHEAD rows ahead in the order, into the next batch too.
    Measured on the reference machine, 150-row batches of a 450 000 x 4 float32 X (7 MB):
    9.2 us per batch without prefetching, 6.3 / 6.0 / 3.4 / 3.9 us at 8 / 16 / 32 / 64 rows
    ahead."""
    m, k = xb.shape
    n = order.shape[0]
    labels = yb.shape[0] > 0
    for r in range(m):
        ahead = start + r + PREFETCH_AHEAD
        if ahead < n:
            nxt = order[ahead]
            prefetch(X, nxt * k)
            prefetch(X, nxt * k + k - 1)
            if labels:
                prefetch(y, nxt)
        src = order[start + r]
        if labels:
            yb[r] = y[src]
        for j in range(k):
            xb[r, j] = X[src, j]
    # one sweep over the gathered batch, still in cache (folded into the copy loop, the check
    # cost 10 us more per 64x784 batch)
    return not check or all_finite(xb)


@njit
def mask_colsum(dZ, A, code, alpha, db):
    """dZ *= f'(A) in place (skipped for the identity), then db = column sums of dZ.

    Two sweeps, each of which vectorises: the mask over the whole block as one flat row
    (``activations.activation_backward``: one loop per activation, 0.09 ms on 256x512 float32
    ReLU where the per-element dispatch took 0.88 ms), then the sums along rows.  Fused into
    one sweep (mask, store, add to db) the in-place version ran 3.7 ms instead of 0.22 ms on
    512x1024 float32: the store into dZ and the update of db could alias, so nothing
    vectorised."""
    n, m = dZ.shape
    if code != 0:
        # one flat sweep: rows as short as the iris network's (3-10) vectorise too
        flat, a = dZ.reshape((1, n * m)), A.reshape((1, n * m))
        activation_backward(a, flat, code, alpha, flat)
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


# -- the output layer of a softmax network, feature-major ---------------------------------------
# With a softmax cross-entropy loss the last layer's logits and delta are stored transposed,
# (classes, batch rows): the softmax then runs along the batch, one class row at a time, and
# vectorises (with ``vexp``) however few the classes are.  Measured in one process (median of
# 7): 150 rows x 3 classes 8.3 us row by row, 3.1 us this way; 64 x 10 5.6 and 2.2 us.  BLAS
# writes and reads the transposed blocks through its transpose flags at the same speed, and the
# compiled-loop products (``small_product``) take them as transposed views.
@njit
def bias_act_t(AT, b, code, alpha):
    """AT[j] = f(AT[j] + b[j]) in place, for each unit row j of a feature-major block."""
    k, m = AT.shape
    for j in range(k):
        row = AT[j]
        bj = b[j]
        for i in range(m):
            row[i] += bj
    if code != IDENTITY:  # logits usually have none; one dispatch for the block, not per value
        activation_forward(AT, code, alpha, AT)


@njit
def mask_rowsum_t(dZT, AT, code, alpha, db):
    """dZT *= f'(AT) in place (skipped for the identity), then db = row sums of dZT."""
    if code != IDENTITY:
        activation_backward(AT, dZT, code, alpha, dZT)
    row_sums(dZT, db)


@njit
def row_sums(D, out):
    """out[j] = sum of row j of D (the bias gradient of a feature-major delta)."""
    for j in range(D.shape[0]):
        row = D[j]
        s = row[0] * 0
        for i in range(D.shape[1]):
            s += row[i]
        out[j] = s


@njit
def softmax_xent_cols(ZT, yb, dZT, db, mx, tot, best):
    """Softmax cross-entropy of feature-major logits ZT (k, m) against integer labels yb (m,).

    Writes dZT = (softmax - onehot).T / m and db = its row sums; returns (sum of row losses,
    samples whose arg-max is the label, the first maximum on ties).  mx and tot (m,) of the
    logits' dtype and best (m,) int64 are scratch."""
    k, m = ZT.shape
    inv_m = ZT.dtype.type(1.0 / m)
    z = ZT[0]
    for i in range(m):
        mx[i] = z[i]
        best[i] = 0
        tot[i] = 0
    for j in range(1, k):
        z = ZT[j]
        for i in range(m):
            if z[i] > mx[i]:
                mx[i] = z[i]
                best[i] = j
    for j in range(k):
        z, d = ZT[j], dZT[j]
        for i in range(m):
            e = vexp(z[i] - mx[i])
            d[i] = e
            tot[i] += e
    total = 0.0
    correct = 0
    for i in range(m):
        t = yb[i]
        total += mx[i] + math.log(tot[i]) - ZT[t, i]
        if best[i] == t:
            correct += 1
        tot[i] = inv_m / tot[i]
    for j in range(k):
        d = dZT[j]
        for i in range(m):
            d[i] *= tot[i]
    for i in range(m):
        dZT[yb[i], i] -= inv_m
    row_sums(dZT, db)
    return total, correct


# -- one layer ---------------------------------------------------------------------------------
@njit
def _forward(H, W, b, code, alpha, A, out_t):
    """A = f(H @ W + b), or its transpose (n_out, n) when ``out_t``."""
    n, n_in = H.shape
    n_out = W.shape[1]
    if small_product(n, n_in, n_out):
        # a transposed output is written through its transposed view
        small_forward(H, W, b, code, alpha, A.T if out_t else A)
    elif out_t:
        gemm(True, True, 1.0, W, H, 0.0, A)
        bias_act_t(A, b, code, alpha)
    else:
        gemm(False, False, 1.0, H, W, 0.0, A)
        bias_act(A, b, code, alpha)


@njit
def _input_grad(dZ, W, A_prev, code, alpha, dH, db_prev, dz_t):
    """dH = (dZ @ W.T) * f'(A_prev) and db_prev = its column sums; dZ is stored transposed
    (n_out, n) when ``dz_t``."""
    n, n_in = dH.shape
    n_out = W.shape[1]
    if small_product(n, n_in, n_out):
        small_input_grad(dZ.T if dz_t else dZ, W, dH)
    else:
        gemm(dz_t, True, 1.0, dZ, W, 0.0, dH)
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
def _weight_grad_update(
    H, dZ, dz_t, o, n_in, n_out, opt_kind, hyper, step, fold, params, grads, s1, s2
):
    """Weight gradient of one layer (its weights start at ``o`` in the flat buffers; dZ
    transposed when ``dz_t``) and the optimizer update of those weights; with ``fold`` (plain
    SGD) both in one gemm."""
    size = n_in * n_out
    W = params[o : o + size].reshape((n_in, n_out))
    dW = grads[o : o + size].reshape((n_in, n_out))
    n = H.shape[0]
    small = small_product(n, n_in, n_out)
    if fold and not small:
        lr = hyper[H_LR]
        gemm(True, dz_t, -lr, H, dZ, 1.0 - lr * hyper[H_WEIGHT_DECAY], W)
        return
    if small:
        small_weight_grad(H, dZ.T if dz_t else dZ, dW)
    else:
        gemm(True, dz_t, 1.0, H, dZ, 0.0, dW)
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
    check_inputs,
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
    """Train on batches ``first..last-1`` of ``order``; write (loss sum, correct, finite, steps,
    inputs finite) into ``stats``.

    X (n, n_in) inputs; y (n,) int64 labels (LOSS_SOFTMAX_XENT) or T (n, k) targets
    (LOSS_MSE; the other is an unused dummy); order (n,) the epoch's sample order; batch the
    batch size (the last batch may be smaller).  Layers: sizes (L + 1,), w_off, b_off, codes
    (L,) int64 and alphas (L,) float64 as in the module docstring.  The optimizer (OPT_SGD or
    OPT_ADAM, with ``hyper`` and the step count ``step0`` before this call) updates ``params``
    from ``grads`` with its state in ``state1``/``state2`` (momentum buffer; Adam's moments;
    unused ones may be any array of the parameters' size).  ``work`` is scratch laid out by
    ``workspace_layout`` (``layout``), ``iwork`` int64 scratch of ``2 * batch`` elements.  Stops
    at the first batch whose loss is not finite, before its backward pass, with
    ``stats[S_FINITE] = 0``.  With ``check_inputs`` every gathered batch of X is checked, and
    the call stops before training on the first batch holding a NaN or inf, with
    ``stats[S_INPUTS_FINITE] = 0`` (``fit`` checks X this way in its first epoch: see
    ``fastnn.training.fit``).
    """
    L = sizes.shape[0] - 1
    n = X.shape[0]
    t = params.dtype.type
    stats[S_LOSS] = 0.0
    stats[S_CORRECT] = 0.0
    stats[S_FINITE] = 1.0
    stats[S_STEPS] = 0.0
    stats[S_INPUTS_FINITE] = 1.0
    width = layout[2 * L + 1] - layout[2 * L]
    zero_b = work[layout[2 * L] : layout[2 * L] + width]
    scratch_db = work[layout[2 * L + 1] : layout[2 * L + 1] + width]
    for j in range(width):
        zero_b[j] = 0
    fold = opt_kind == OPT_SGD and hyper[H_MOMENTUM] == 0
    # softmax networks keep the output layer's logits and delta feature-major (see above)
    out_t = loss_kind == LOSS_SOFTMAX_XENT
    mb = min(batch, n)
    sm_mx = work[layout[2 * L + 3] : layout[2 * L + 3] + mb]
    sm_tot = work[layout[2 * L + 3] + mb : layout[2 * L + 3] + 2 * mb]

    for bi in range(first, last):
        start = bi * batch
        m = min(start + batch, n) - start
        step = step0 + bi - first + 1
        xb = work[: m * sizes[0]].reshape((m, sizes[0]))
        k_out = sizes[L]
        yb = iwork[:m] if loss_kind == LOSS_SOFTMAX_XENT else iwork[:0]
        if not gather_batch(X, order, start, xb, y, yb, check_inputs):
            stats[S_INPUTS_FINITE] = 0.0
            return
        if loss_kind != LOSS_SOFTMAX_XENT:
            tb = work[layout[2 * L + 2] : layout[2 * L + 2] + m * k_out].reshape((m, k_out))
            gather_batch(T, order, start, tb, y, iwork[:0], False)
        # -- forward -----------------------------------------------------------------------
        H = xb
        for k in range(L):
            n_in, n_out = sizes[k], sizes[k + 1]
            W = params[w_off[k] : w_off[k] + n_in * n_out].reshape((n_in, n_out))
            b = params[b_off[k] : b_off[k] + n_out] if b_off[k] >= 0 else zero_b[:n_out]
            last_t = out_t and k == L - 1
            A = work[layout[k] : layout[k] + m * n_out]
            A = A.reshape((n_out, m)) if last_t else A.reshape((m, n_out))
            _forward(H, W, b, codes[k], t(alphas[k]), A, last_t)
            H = A
        # -- loss: dZ of the last layer and its bias gradient --------------------------------
        dZ = work[layout[2 * L - 1] : layout[2 * L - 1] + m * k_out]
        db = grads[b_off[L - 1] : b_off[L - 1] + k_out] if b_off[L - 1] >= 0 else scratch_db
        if out_t:
            dZ = dZ.reshape((k_out, m))
            best = iwork[mb : mb + m]
            total, correct = softmax_xent_cols(H, yb, dZ, db, sm_mx[:m], sm_tot[:m], best)
            if codes[L - 1] != 0:
                # an activation after the last layer, before the softmax
                mask_rowsum_t(dZ, H, codes[L - 1], t(alphas[L - 1]), db)
        else:
            dZ = dZ.reshape((m, k_out))
            total, correct = mse_rows(H, tb, dZ)
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
            dz_t = out_t and k == L - 1
            H = xb if k == 0 else work[layout[k - 1] : layout[k - 1] + m * n_in].reshape((m, n_in))
            if k > 0:
                # the input gradient first: it needs this layer's weights before their update
                W = params[w_off[k] : w_off[k] + n_in * n_out].reshape((n_in, n_out))
                dH = work[layout[L + k - 1] : layout[L + k - 1] + m * n_in].reshape((m, n_in))
                if b_off[k - 1] >= 0:
                    db_prev = grads[b_off[k - 1] : b_off[k - 1] + n_in]
                else:
                    db_prev = scratch_db
                _input_grad(dZ, W, H, codes[k - 1], t(alphas[k - 1]), dH, db_prev, dz_t)
            _weight_grad_update(
                H, dZ, dz_t, w_off[k], n_in, n_out, opt_kind, hyper, step, fold, params, grads,
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
    bias gradient (for layers without bias), each of the largest layer width,
    layout[2L + 2] the batch's gathered targets (MSE) and layout[2L + 3] the softmax's two
    per-sample scratch rows.  The batch's gathered inputs sit at offset 0."""
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
    targets = pos + 2 * width
    softmax = targets + mb * sizes[-1]
    layout += [pos, pos + width, targets, softmax]
    return layout, softmax + 2 * mb


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
