"""A whole run of training steps of a dense MLP in one compiled call: the fit fast path.

``train_batches`` runs batches ``first..last-1`` of a shuffled sample order.  Each step has
two halves.  The row passes, on rows of the batch: gather them (``_gather_pass``), forward
through every layer (``_forward_pass``: a BLAS product, then one pass adding the bias and
applying the activation), the loss and its gradient in one pass (``_loss_pass``), and every
layer's delta from the last to the first (``_deltas_pass``: the input gradient, a BLAS
product, then one pass applying the previous activation's derivative).  Nothing in them mixes
rows.  ``_update_pass``, on a part of the parameters: each layer's weight gradient over the
whole batch with, at once, the optimizer's update, and the bias sums and updates.  No Python
runs between batches.

The drivers call their passes by address (``_by_address.call_at``; a ``Driver`` hands them the
addresses), not as numba callees: numba links a callee's code into its caller and optimises
and generates it again there, so each driver compiled every pass a second time, the parallel
ones once more per parallel loop (their own compile: 14 s data-parallel, 21 s split by
units; now 2.5-3 s, and the serial driver's 3.5 s now 1 s).  The calls cost nothing
measurable: a 4-6-8-10-3@16 step (5 us, five passes) took the same time called by address as
with the passes linked in (ratio 0.994-1.004, paired in one process, 1 and 2 threads).

Every array is flat, so one compiled signature serves every depth and width of network (one
compilation per dtype, cached on disk).  The layer structure comes in as small integer arrays:
``sizes`` (L + 1 widths), ``w_off`` and ``b_off`` (where each weight matrix and bias starts in
the flat parameter buffer; ``b_off[k] < 0`` for a layer without bias), ``codes``/``alphas``
(the activation after each layer).  2-D views are rebuilt from the flat buffers inside the
kernel (slicing and reshaping a contiguous buffer allocates nothing).

Every delta is computed (with the weights as they were) before any update, and each update
applies the same elementwise rule to every parameter, so the result is the layer path's.
Plain SGD (no momentum) folds the update into the weight-gradient product itself,
``W = (1 - lr wd) W - lr X.T @ dZ`` as one ``gemm`` with ``beta = 1 - lr wd``: the weight
gradient is then never stored (``Parameter.grad`` of the weights is left as it was), which
saves a write and a read of every weight per step (about 3% of a 784-1024-1024-1024-10 step).

Products go to BLAS (``_blas.gemm``) unless ``dense.small_product`` says a compiled loop is
faster.  With a softmax loss the output layer's logits and delta are stored transposed
(classes x batch rows; BLAS reads and writes them through its transpose flags), so the
softmax vectorises along the batch however few the classes: with 3 classes this halved a
4-6-8-10-3@150 epoch.  A narrow network goes further, feature-major throughout
(``feature_major``, chosen by ``fastnn._fastpath.feature_major_for``): every block is
(units, rows), the gather writes the batch transposed, and each product has the batch as its
long side; a 4-6-8-10-3@150 epoch took 0.60x the row-major one's time.  The gather of each
batch prefetches rows ahead (``gather_batch``) and, in ``fit``'s first epoch, checks them for
NaN and inf.

The driver strips the reference counts off its arguments (``_intrinsics.borrowed``) so that
the dozens of views sliced per step cost no atomic instructions; every in-place elementwise
pass takes its array as one argument (``activations.mask_inplace``), so that LLVM's overlap
check does not send it to the scalar loop.  Together the two took a 4-6-8-10-3@150 step from
16.5 to 12.9 us.

Threads, three ways (``fastnn._fastpath.chunks_for`` and ``units_split_for`` pick one per
fit, from measurements recorded there):

- the serial build (``n_chunks = 1``): every pass runs on the calling thread and BLAS brings
  the parallelism.  numba's parallel builds do not mix with it: OpenMP workers spin after a
  region and starve the OpenBLAS worker that needs the same core (OpenBLAS's idle workers
  spin ~0.1 s after each product too).  With the elementwise passes parallel, 784-100-10@64
  took 45x the GEMM floor instead of 1.47x; with passive OpenMP waiting, 1.91x (a wake-up per
  region); the gather alone in parallel made that epoch 1.35-1.47x slower.
- the parallel build, data-parallel (``n_chunks`` = the thread count): each thread runs
  the row passes on its chunk of the batch's rows, then ``_update_pass`` on its part of the
  parameters, and BLAS runs single-threaded inside each (the caller sets it so).  There is
  one thread pool, so nothing spins against anything, every pass is parallel, each thread
  gathers its own rows (twice the memory accesses in flight), and each product is one
  single-threaded call on half the data, which OpenBLAS runs faster than its own two-thread
  split of the small products: 784-100-10@64 0.72-0.77x the serial build's epoch time,
  784-512-512-10@256 0.83-0.97x.  Two parallel regions per step (a fork and a join each) are the
  price: small steps lose (100-100-100-10@32 1.62x), and so do 1024x1024 weights, which every
  thread then reads in full (1.02-1.05x).
- the parallel build split by units (``train_batches_units``), for large hidden layers: each
  hidden layer's forward product and each delta before the output layer's are split by
  columns, so a thread reads only the weights that feed its units; the gather, the output
  layer, the loss and the updates are split as in the data-parallel build.  2 L + 1 parallel
  regions per step: 784-1024-1024-1024-10@512 0.91-1.00x the serial build's epoch time in
  three processes.
"""

import math

import numpy as np
from numba import prange, types

from ._blas import gemm
from ._by_address import Driver, call_at
from ._config import njit_inline, njit_internal, twin
from ._intrinsics import borrowed, prefetch, vexp
from .activations import IDENTITY, activate, activate_inplace, mask_inplace
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
# non-zero: store each step's gradient in ``grads`` and update nothing (a distributed fit sums
# the ranks' gradients between the two halves and then runs the optimizer's own step)
H_GRAD_ONLY = 9
N_HYPER = 10

# slots of the float64 ``stats`` output
S_LOSS, S_CORRECT, S_FINITE, S_STEPS, S_INPUTS_FINITE = 0, 1, 2, 3, 4
N_STATS = 5


# -- elementwise passes (serial: see "Threads" in the module docstring) -------------------------
@njit_internal
def gather_batch(X, order, start, xb, y, yb, check, skip, transposed):
    """xb[r] = X[order[start + r]] for every row r of xb (with ``transposed``, xb is the
    feature-major (features, rows) block and xb[:, r] = X[order[start + r]]), and
    yb[r] = y[order[start + r]] when yb has rows (labels gathered in the same sweep: their
    cache misses overlap with X's).
    Returns False when ``check`` is true and a gathered value is NaN or inf (True otherwise):
    one sweep over the batch while it is in cache, instead of a separate pass over all of X.

    The rows are random, so each one is a cache miss (and often a TLB miss) that the hardware
    prefetcher cannot predict.  The loop therefore prefetches the row (its first and last
    element) and the label PREFETCH_AHEAD rows ahead in the order, into the next batch too.
    A thread that gathers one chunk of each batch (the data-parallel build) passes
    ``skip = batch size - chunk rows``: past its chunk's end it then prefetches its own rows of
    the next batch, not the next thread's rows of this one.
    Measured on the reference machine, 150-row batches of a 450 000 x 4 float32 X (7 MB):
    9.2 us per batch without prefetching, 6.3 / 6.0 / 3.4 / 3.9 us at 8 / 16 / 32 / 64 rows
    ahead."""
    m = xb.shape[1] if transposed else xb.shape[0]
    k = X.shape[1]
    n = order.shape[0]
    labels = yb.shape[0] > 0
    for r in range(m):
        ahead = start + r + PREFETCH_AHEAD
        if r + PREFETCH_AHEAD >= m:
            ahead += skip
        if ahead < n:
            nxt = order[ahead]
            prefetch(X, nxt * k)
            prefetch(X, nxt * k + k - 1)
            if labels:
                prefetch(y, nxt)
        src = order[start + r]
        if labels:
            yb[r] = y[src]
        if transposed:
            for j in range(k):
                xb[j, r] = X[src, j]
        else:
            for j in range(k):
                xb[r, j] = X[src, j]
    # one sweep over the gathered batch, still in cache (folded into the copy loop, the check
    # cost 10 us more per 64x784 batch)
    return not check or all_finite(xb)


@njit_internal
def mask(dZ, A, code, alpha):
    """dZ *= f'(A) in place (nothing for the identity), for C-contiguous blocks of one shape.

    One flat sweep over the whole block (``activations.mask_inplace``, one loop per
    activation), so rows as short as the iris network's (3-10 values) vectorise too: 0.09 ms
    on 256x512 float32 ReLU, where a per-element dispatch took 0.88 ms."""
    if code != IDENTITY:
        size = dZ.size
        mask_inplace(dZ.reshape((1, size)), A.reshape((1, size)), code, alpha)


@njit_internal
def col_sums(D, j0, j1, out):
    """out[j - j0] = sum of column j of D, for j0 <= j < j1 (a bias gradient, or the part of
    it one thread owns).  The sums run along the rows so the inner loop vectorises; kept apart
    from ``mask``: fused (mask, store, add) on 512x1024 float32 it ran 3.7 ms instead of
    0.22 ms, as the store into D and the update of out could alias and nothing vectorised."""
    for j in range(j1 - j0):
        out[j] = 0
    for i in range(D.shape[0]):
        for j in range(j0, j1):
            out[j - j0] += D[i, j]


@njit_internal
def row_sums_add(D, j0, j1, out):
    """out[j - j0] += sum of row j of D, for j0 <= j < j1 (the bias gradient of a
    feature-major delta, added up over the row chunks it is stored in)."""
    for j in range(j0, j1):
        row = D[j]
        s = row[0] * 0
        for i in range(D.shape[1]):
            s += row[i]
        out[j - j0] += s


@njit_internal
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


@njit_internal
def small_weight_grad(H, dZ, dW, accumulate):
    """dW = H.T @ dZ as a compiled loop, or dW += H.T @ dZ with ``accumulate``."""
    n, n_in = H.shape
    n_out = dZ.shape[1]
    if not accumulate:
        for p in range(n_in):
            for j in range(n_out):
                dW[p, j] = 0
    for i in range(n):
        for p in range(n_in):
            x = H[i, p]
            for j in range(n_out):
                dW[p, j] += x * dZ[i, j]


@njit_internal
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


@njit_internal
def mse_rows(Y, T, dY, m):
    """Squared error of Y (r, k) against targets T (r, k), rows of a batch of ``m`` rows;
    dY = 2 (Y - T) / (m k), the gradient of the batch's mean.

    Returns (the sum of these rows' per-sample losses, as ``fit`` counts them, and 0: no
    correct count)."""
    r, k = Y.shape
    scale = Y.dtype.type(2.0 / (m * k))
    total = 0.0
    for i in range(r):
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
@njit_internal
def bias_act_t(AT, b, code, alpha):
    """AT[j] = f(AT[j] + b[j]) in place, for each unit row j of a feature-major block."""
    k, m = AT.shape
    for j in range(k):
        row = AT[j]
        bj = b[j]
        for i in range(m):
            row[i] += bj
    if code != IDENTITY:  # logits usually have none; one dispatch for the block, not per value
        activate_inplace(AT.reshape((1, AT.size)), code, alpha)


@njit_internal
def softmax_xent_cols(ZT, yb, dZT, m, mx, tot, best):
    """Softmax cross-entropy of feature-major logits ZT (k, r) against integer labels yb (r,),
    r rows of a batch of ``m``.

    Writes dZT = (softmax - onehot).T / m; returns (sum of row losses, rows whose arg-max is
    the label, the first maximum on ties).  mx and tot (r,) of the logits' dtype and best (r,)
    int64 are scratch."""
    k, r = ZT.shape
    inv_m = ZT.dtype.type(1.0 / m)
    z = ZT[0]
    for i in range(r):
        mx[i] = z[i]
        best[i] = 0
        tot[i] = 0
    for j in range(1, k):
        z = ZT[j]
        for i in range(r):
            if z[i] > mx[i]:
                mx[i] = z[i]
                best[i] = j
    for j in range(k):
        z, d = ZT[j], dZT[j]
        for i in range(r):
            e = vexp(z[i] - mx[i])
            d[i] = e
            tot[i] += e
    total = 0.0
    correct = 0
    for i in range(r):
        t = yb[i]
        total += mx[i] + math.log(tot[i]) - ZT[t, i]
        if best[i] == t:
            correct += 1
        tot[i] = inv_m / tot[i]
    for j in range(k):
        d = dZT[j]
        for i in range(r):
            d[i] *= tot[i]
    for i in range(r):
        dZT[yb[i], i] -= inv_m
    return total, correct


# -- one layer ---------------------------------------------------------------------------------
@njit_inline
def _forward(H, W, b, code, alpha, A, h_t, out_t):
    """A = f(H @ W + b).  The output A is stored feature-major, (n_out, n), when ``out_t``,
    and so is the input H, (n_in, n), when ``h_t`` (then ``out_t`` too)."""
    n_in, n_out = W.shape
    n = H.shape[1] if h_t else H.shape[0]
    if small_product(n, n_in, n_out):
        # feature-major blocks are read and written through their transposed views
        small_forward(H.T if h_t else H, W, b, code, alpha, A.T if out_t else A)
    elif h_t:
        gemm(True, False, 1.0, W, H, 0.0, A)
        bias_act_t(A, b, code, alpha)
    elif out_t:
        gemm(True, True, 1.0, W, H, 0.0, A)
        bias_act_t(A, b, code, alpha)
    else:
        gemm(False, False, 1.0, H, W, 0.0, A)
        bias_act(A, b, code, alpha)


@njit_inline
def _input_grad(dZ, W, A_prev, code, alpha, dH, dz_t, dh_t):
    """dH = (dZ @ W.T) * f'(A_prev); dZ is stored feature-major (n_out, n) when ``dz_t``, and
    dH and A_prev (n_in, n) when ``dh_t`` (then ``dz_t`` too)."""
    n_in, n_out = W.shape
    n = dZ.shape[1] if dz_t else dZ.shape[0]
    if small_product(n, n_in, n_out):
        small_input_grad(dZ.T if dz_t else dZ, W, dH.T if dh_t else dH)
    elif dh_t:
        gemm(False, False, 1.0, W, dZ, 0.0, dH)
    else:
        gemm(dz_t, True, 1.0, dZ, W, 0.0, dH)
    mask(dH, A_prev, code, alpha)


@njit_inline
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


@njit_inline
def _span(i, parts, size):
    """The i-th of ``parts`` near-equal consecutive ranges of range(size), as (start, stop)."""
    return i * size // parts, (i + 1) * size // parts


@njit_inline
def _activations(work, off, r0, r1, width, feature_major):
    """Rows r0..r1 of the (m, width) block of activations or deltas at ``work[off]``.

    The blocks are row-major, except the feature-major output layer of a softmax network,
    which is stored per row chunk: chunk rows r0..r1 as a (width, r1 - r0) block at
    ``off + r0 * width``.  Either way a chunk's part is one contiguous piece of ``work``."""
    part = work[off + r0 * width : off + r1 * width]
    if feature_major:
        return part.reshape((width, r1 - r0))
    return part.reshape((r1 - r0, width))


# -- the two halves of a step -----------------------------------------------------------------
@njit_inline
def _gather_rows(X, y, T, order, start, r0, r1, batch, check, sizes, loss_kind, fm, layout, work,
                 iwork):  # fmt: skip
    """Rows r0..r1 of the batch starting at ``start`` in ``order`` (``batch`` rows in a full
    one) into the input block at offset 0 of ``work``, with their labels (``iwork``) or MSE
    targets.  Returns False when ``check`` is true and a gathered value is NaN or inf."""
    L = sizes.shape[0] - 1
    out_t = loss_kind == LOSS_SOFTMAX_XENT
    xb = _activations(work, 0, r0, r1, sizes[0], fm)
    yb = iwork[r0:r1] if out_t else iwork[:0]
    skip = batch - (r1 - r0)
    if not gather_batch(X, order, start + r0, xb, y, yb, check, skip, fm):
        return False
    if not out_t:
        tb = _activations(work, layout[2 * L + 2], r0, r1, sizes[L], fm)
        # (``bool(False)``: a literal False would compile gather_batch a second time)
        gather_batch(T, order, start + r0, tb, y, iwork[:0], bool(False), skip, fm)  # noqa: UP018
    return True


@njit_inline
def _forward_rows(k0, r0, r1, sizes, w_off, b_off, codes, alphas, loss_kind, fm, params, layout,
                  work, zero_b):  # fmt: skip
    """Layers k0..L-1 forward on rows r0..r1 (layer k0's input rows already in place); returns
    the last layer's output block of those rows."""
    L = sizes.shape[0] - 1
    t = params.dtype.type
    out_t = loss_kind == LOSS_SOFTMAX_XENT
    H = _activations(work, 0 if k0 == 0 else layout[k0 - 1], r0, r1, sizes[k0], fm)
    for k in range(k0, L):
        n_in, n_out = sizes[k], sizes[k + 1]
        W = params[w_off[k] : w_off[k] + n_in * n_out].reshape((n_in, n_out))
        b = params[b_off[k] : b_off[k] + n_out] if b_off[k] >= 0 else zero_b[:n_out]
        a_t = fm or (out_t and k == L - 1)
        A = _activations(work, layout[k], r0, r1, n_out, a_t)
        _forward(H, W, b, codes[k], t(alphas[k]), A, fm, a_t)
        H = A
    return H


@njit_inline
def _loss_rows(Y, r0, r1, m, sizes, codes, alphas, loss_kind, fm, layout, work, iwork):
    """The loss of rows r0..r1 (of a batch of ``m``) from their outputs Y, and its gradient
    at the last layer's pre-activation (its delta).  Returns (loss sum, correct)."""
    L = sizes.shape[0] - 1
    t = Y.dtype.type
    k_out = sizes[L]
    out_t = loss_kind == LOSS_SOFTMAX_XENT
    dZ = _activations(work, layout[2 * L - 1], r0, r1, k_out, fm or out_t)
    if out_t:
        mb = iwork.shape[0] // 2
        s = layout[2 * L + 3]
        mx, tot = work[s + r0 : s + r1], work[s + mb + r0 : s + mb + r1]
        best = iwork[mb + r0 : mb + r1]
        total, correct = softmax_xent_cols(Y, iwork[r0:r1], dZ, m, mx, tot, best)
    else:
        tb = _activations(work, layout[2 * L + 2], r0, r1, k_out, fm)
        if fm:
            total, correct = mse_rows(Y.T, tb.T, dZ.T, m)
        else:
            total, correct = mse_rows(Y, tb, dZ, m)
    # an activation after the last layer (before the softmax; a sigmoid before MSE)
    mask(dZ, Y, codes[L - 1], t(alphas[L - 1]))
    return total, correct


@njit_inline
def _deltas_rows(k_stop, r0, r1, sizes, w_off, codes, alphas, loss_kind, fm, params, layout,
                 work):  # fmt: skip
    """On rows r0..r1, the deltas of layers L-2 down to k_stop-1 (for k = L-1 .. k_stop, the
    input gradient of layer k times the previous activation's derivative), from the last
    layer's delta."""
    L = sizes.shape[0] - 1
    t = params.dtype.type
    out_t = loss_kind == LOSS_SOFTMAX_XENT
    dZ = _activations(work, layout[2 * L - 1], r0, r1, sizes[L], fm or out_t)
    for k in range(L - 1, k_stop - 1, -1):
        n_in, n_out = sizes[k], sizes[k + 1]
        W = params[w_off[k] : w_off[k] + n_in * n_out].reshape((n_in, n_out))
        A_prev = _activations(work, layout[k - 1], r0, r1, n_in, fm)
        dH = _activations(work, layout[L + k - 1], r0, r1, n_in, fm)
        dz_t = fm or (out_t and k == L - 1)
        _input_grad(dZ, W, A_prev, codes[k - 1], t(alphas[k - 1]), dH, dz_t, fm)
        dZ = dH


@njit_internal
def _gather_pass(X, y, T, order, start, r0, r1, batch, check, sizes, loss_kind, fm, layout, work,
                 iwork):  # fmt: skip
    """Gather rows r0..r1 of the batch starting at ``start`` in ``order`` (``batch`` rows in a
    full one) with their labels or targets (``_gather_rows``).  Returns False when ``check``
    is true and a gathered value is NaN or inf."""
    return _gather_rows(
        X, y, T, order, start, r0, r1, batch, check, sizes, loss_kind, fm, layout, work, iwork
    )


@njit_internal
def _forward_pass(k0, r0, r1, sizes, w_off, b_off, codes, alphas, loss_kind, fm, params, layout,
                  work, zero_b):  # fmt: skip
    """Layers k0..L-1 forward on rows r0..r1 (``_forward_rows``)."""
    _forward_rows(
        k0, r0, r1, sizes, w_off, b_off, codes, alphas, loss_kind, fm, params, layout, work, zero_b
    )


@njit_internal
def _loss_pass(r0, r1, m, sizes, codes, alphas, loss_kind, fm, layout, work, iwork):
    """The loss of rows r0..r1 (of a batch of ``m``) and its gradient, the last layer's delta
    (``_loss_rows``).  Returns (loss sum, correct)."""
    L = sizes.shape[0] - 1
    out_t = loss_kind == LOSS_SOFTMAX_XENT
    Y = _activations(work, layout[L - 1], r0, r1, sizes[L], fm or out_t)
    return _loss_rows(Y, r0, r1, m, sizes, codes, alphas, loss_kind, fm, layout, work, iwork)


@njit_internal
def _deltas_pass(k_stop, r0, r1, sizes, w_off, codes, alphas, loss_kind, fm, params, layout,
                 work):  # fmt: skip
    """The deltas of layers L-2 down to k_stop-1 on rows r0..r1 (``_deltas_rows``)."""
    _deltas_rows(k_stop, r0, r1, sizes, w_off, codes, alphas, loss_kind, fm, params, layout, work)


@njit_internal
def _update_pass(
    c, n_chunks, m, sizes, w_off, b_off, loss_kind, fm, opt_kind, hyper, step, fold, params,
    grads, state1, state2, layout, work,
):  # fmt: skip
    """Part ``c`` of ``n_chunks`` of a step's updates, after the row passes have run on every
    row chunk of the batch of ``m`` rows: of every layer, the weight rows (input features)
    ``_span(c, n_chunks, n_in)`` get their gradient over the whole batch and the optimizer's
    update, and the biases ``_span(c, n_chunks, n_out)`` likewise.  The parts touch disjoint
    parameters, so they can run at once.  With ``fold`` (plain SGD, no momentum) the weight
    update is folded into the product: ``W = (1 - lr wd) W - lr H.T @ dZ`` as one gemm, and
    the weight gradient is never stored."""
    L = sizes.shape[0] - 1
    out_t = loss_kind == LOSS_SOFTMAX_XENT
    lr = hyper[H_LR]
    apply = hyper[H_GRAD_ONLY] == 0
    for k in range(L - 1, -1, -1):
        n_in, n_out = sizes[k], sizes[k + 1]
        # a feature-major delta is stored per row chunk: its products add up over the chunks
        dz_t = fm or (out_t and k == L - 1)
        pieces = n_chunks if dz_t else 1
        h_off = 0 if k == 0 else layout[k - 1]  # the batch's inputs sit at offset 0
        p0, p1 = _span(c, n_chunks, n_in)
        o = w_off[k]
        if p1 > p0:
            W = params[o + p0 * n_out : o + p1 * n_out].reshape((p1 - p0, n_out))
            dW = grads[o + p0 * n_out : o + p1 * n_out].reshape((p1 - p0, n_out))
            small = small_product(m, p1 - p0, n_out)
            for q in range(pieces):
                q0, q1 = _span(q, pieces, m)
                dZ = _activations(work, layout[L + k], q0, q1, n_out, dz_t)
                # the layer's input features p0..p1: rows of a feature-major block (which
                # BLAS then reads untransposed), columns of a row-major one
                if fm:
                    H = _activations(work, h_off, q0, q1, n_in, True)[p0:p1]
                else:
                    H = _activations(work, h_off, q0, q1, n_in, False)[:, p0:p1]
                if small:
                    small_weight_grad(H.T if fm else H, dZ.T if dz_t else dZ, dW, q > 0)
                elif fold:
                    beta = 1.0 - lr * hyper[H_WEIGHT_DECAY] if q == 0 else 1.0
                    gemm(not fm, dz_t, -lr, H, dZ, beta, W)
                else:
                    gemm(not fm, dz_t, 1.0, H, dZ, 0.0 if q == 0 else 1.0, dW)
            if (small or not fold) and apply:
                s, e = o + p0 * n_out, o + p1 * n_out
                _update(opt_kind, hyper, step, params[s:e], grads[s:e], state1[s:e], state2[s:e])
        j0, j1 = _span(c, n_chunks, n_out)
        if b_off[k] >= 0 and j1 > j0:
            s, e = b_off[k] + j0, b_off[k] + j1
            db = grads[s:e]
            if dz_t:
                for j in range(j1 - j0):
                    db[j] = 0
                for q in range(pieces):
                    q0, q1 = _span(q, pieces, m)
                    row_sums_add(_activations(work, layout[L + k], q0, q1, n_out, True), j0, j1, db)
            else:
                col_sums(_activations(work, layout[L + k], 0, m, n_out, False), j0, j1, db)
            if apply:
                _update(opt_kind, hyper, step, params[s:e], grads[s:e], state1[s:e], state2[s:e])


# -- split by units: the large layers' products shared out by output column -------------------
# A column range of a block, as a 2-D view, has a run-time inner stride to numba, and the
# elementwise loops over it do not vectorise (the units build first ran 4% slower than the
# rows build that way); the passes below take each row's piece as a contiguous 1-D slice.
@njit_inline
def _row_piece(work, off, i, width, j0, j1):
    """Columns j0..j1 of row i of the (rows, width) row-major block at ``work[off]``, as a
    contiguous (1, j1 - j0) block."""
    s = off + i * width
    return work[s + j0 : s + j1].reshape((1, j1 - j0))


@njit_internal
def _forward_units(k, c, n_chunks, m, sizes, w_off, b_off, codes, alphas, params, layout, work,
                   zero_b):  # fmt: skip
    """Part ``c`` of ``n_chunks`` of hidden layer k's forward: its units (output columns)
    ``_span(c, n_chunks, n_out)``, over all ``m`` rows of the batch (row-major blocks)."""
    n_in, n_out = sizes[k], sizes[k + 1]
    j0, j1 = _span(c, n_chunks, n_out)
    if j1 == j0:
        return
    code, alpha = codes[k], params.dtype.type(alphas[k])
    h_off = 0 if k == 0 else layout[k - 1]
    H = _activations(work, h_off, 0, m, n_in, False)
    W = params[w_off[k] : w_off[k] + n_in * n_out].reshape((n_in, n_out))[:, j0:j1]
    b = params[b_off[k] + j0 : b_off[k] + j1] if b_off[k] >= 0 else zero_b[j0:j1]
    A = _activations(work, layout[k], 0, m, n_out, False)[:, j0:j1]
    if small_product(m, n_in, j1 - j0):
        small_forward(H, W, b, code, alpha, A)
    else:
        gemm(False, False, 1.0, H, W, 0.0, A)
        for i in range(m):
            bias_act(_row_piece(work, layout[k], i, n_out, j0, j1), b, code, alpha)


@njit_internal
def _input_grad_units(k, c, n_chunks, m, sizes, w_off, codes, alphas, params, layout, work):
    """Part ``c`` of ``n_chunks`` of the delta of layer k - 1 (k < L - 1, a row-major one):
    its units ``_span(c, n_chunks, n_in)``, over all ``m`` rows, from layer k's delta and the
    rows of W_k that feed those units."""
    L = sizes.shape[0] - 1
    n_in, n_out = sizes[k], sizes[k + 1]
    p0, p1 = _span(c, n_chunks, n_in)
    if p1 == p0:
        return
    code, alpha = codes[k - 1], params.dtype.type(alphas[k - 1])
    W = params[w_off[k] + p0 * n_out : w_off[k] + p1 * n_out].reshape((p1 - p0, n_out))
    dZ = _activations(work, layout[L + k], 0, m, n_out, False)
    dH = _activations(work, layout[L + k - 1], 0, m, n_in, False)[:, p0:p1]
    if small_product(m, p1 - p0, n_out):
        small_input_grad(dZ, W, dH)
    else:
        gemm(False, True, 1.0, dZ, W, 0.0, dH)
    if code != IDENTITY:
        for i in range(m):
            D = _row_piece(work, layout[L + k - 1], i, n_in, p0, p1)
            mask_inplace(D, _row_piece(work, layout[k - 1], i, n_in, p0, p1), code, alpha)


# -- the drivers -------------------------------------------------------------------------------
# A driver calls its passes by address (``_by_address.call_at``), so compiling it compiles its
# own loop and nothing of the passes; a ``Driver`` hands it the addresses.  ``pass_types``
# gives a pass's argument types as the drivers call it, from a driver's own argument types (a
# wrong one is caught: the driver raises RuntimeError rather than call it).
#: the drivers' arguments after ``passes``, by name
_DRIVER_ARGS = (
    "X y T order first last batch check sizes w_off b_off codes alphas loss opt hyper step0 "
    "params grads state1 state2 layout work iwork stats n_chunks fm"
).split()
#: each pass's arguments as the drivers pass them: a driver argument's name (the zero bias is a
#: slice of ``work``), or i64 / bool for a value the driver computes
_PASS_ARGS = {
    "_gather_pass": "X y T order i64 i64 i64 batch check sizes loss fm layout work iwork",
    "_forward_pass": "i64 i64 i64 sizes w_off b_off codes alphas loss fm params layout work work",
    "_loss_pass": "i64 i64 i64 sizes codes alphas loss fm layout work iwork",
    "_deltas_pass": "i64 i64 i64 sizes w_off codes alphas loss fm params layout work",
    "_update_pass": (
        "i64 n_chunks i64 sizes w_off b_off loss fm opt hyper i64 bool params grads state1 "
        "state2 layout work"
    ),
    "_forward_units": "i64 i64 n_chunks i64 sizes w_off b_off codes alphas params layout work work",
    "_input_grad_units": "i64 i64 n_chunks i64 sizes w_off codes alphas params layout work",
}


def pass_types(kernel, driver_types):
    """The argument types a driver with argument types ``driver_types`` (after ``passes``)
    calls the pass ``kernel`` with."""
    named = dict(zip(_DRIVER_ARGS, driver_types, strict=True))
    named["i64"], named["bool"] = types.int64, types.boolean
    return tuple(named[a] for a in _PASS_ARGS[kernel.py_func.__name__].split())


@njit_inline
def _borrow8(a, b, c, d, e, f, g, h):
    """``borrowed`` of eight arrays (see the drivers)."""
    return (borrowed(a), borrowed(b), borrowed(c), borrowed(d), borrowed(e), borrowed(f),
            borrowed(g), borrowed(h))  # fmt: skip


@njit_inline
def _start(stats, n_chunks, sizes, layout, work):
    """Zero the totals in ``stats``; returns the per-chunk part of ``stats`` and the zero bias
    (of layers without one), zeroed."""
    L = sizes.shape[0] - 1
    stats[S_LOSS] = 0.0
    stats[S_CORRECT] = 0.0
    stats[S_FINITE] = 1.0
    stats[S_STEPS] = 0.0
    stats[S_INPUTS_FINITE] = 1.0
    width = layout[2 * L + 1] - layout[2 * L]
    zero_b = work[layout[2 * L] : layout[2 * L] + width]
    for j in range(width):
        zero_b[j] = 0
    return stats[N_STATS : N_STATS + 3 * n_chunks], zero_b


@njit_inline
def _from_layer(passes, k, r0, r1, m, sizes, w_off, b_off, codes, alphas, loss_kind, fm, params,
                layout, work, iwork, zero_b):  # fmt: skip
    """On rows r0..r1 (of a batch of ``m``), with layer k's input in place: layers k..L-1
    forward, the loss and its gradient, and the deltas down to layer max(k, 1)'s (through the
    passes at ``passes``; see ``_STEP``).  Returns (loss sum, correct)."""
    call_at(
        passes, 1, _forward_pass, k, r0, r1, sizes, w_off, b_off, codes, alphas, loss_kind, fm,
        params, layout, work, zero_b,
    )  # fmt: skip
    total, correct = call_at(
        passes, 2, _loss_pass, r0, r1, m, sizes, codes, alphas, loss_kind, fm, layout, work, iwork
    )
    if math.isfinite(total):
        call_at(
            passes, 3, _deltas_pass, max(k, 1), r0, r1, sizes, w_off, codes, alphas, loss_kind,
            fm, params, layout, work,
        )  # fmt: skip
    return total, correct


@njit_inline
def _step_totals(part, n_chunks, stats):
    """Adds a step's per-chunk results (inputs finite, loss sum, correct: three slots of
    ``part`` per chunk) to ``stats``.  Returns False, and adds nothing, when the step must not
    update: a chunk found a NaN or inf in its inputs (``stats[S_INPUTS_FINITE] = 0``), or the
    loss is not finite (``stats[S_FINITE] = 0``)."""
    total = 0.0
    correct = 0.0
    for c in range(n_chunks):
        if part[3 * c] == 0.0:
            stats[S_INPUTS_FINITE] = 0.0
            return False
        total += part[3 * c + 1]
        correct += part[3 * c + 2]
    if not math.isfinite(total):
        stats[S_FINITE] = 0.0
        return False
    stats[S_LOSS] += total
    stats[S_CORRECT] += correct
    return True


def _train_batches(
    passes,
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
    n_chunks,
    feature_major,
):
    """Train on batches ``first..last-1`` of ``order``; write (loss sum, correct, finite, steps,
    inputs finite) into ``stats``.  ``passes``: the addresses of ``_STEP``'s passes
    (``Driver.pointers``; see the module docstring).

    X (n, n_in) inputs; y (n,) int64 labels (LOSS_SOFTMAX_XENT) or T (n, k) targets
    (LOSS_MSE; the other is an unused dummy); order (n,) the epoch's sample order; batch the
    batch size (the last batch may be smaller).  Layers: sizes (L + 1,), w_off, b_off, codes
    (L,) int64 and alphas (L,) float64 as in the module docstring.  The optimizer (OPT_SGD or
    OPT_ADAM, with ``hyper`` and the step count ``step0`` before this call) updates ``params``
    from ``grads`` with its state in ``state1``/``state2`` (momentum buffer; Adam's moments;
    unused ones may be any array of the parameters' size).  ``work`` is scratch laid out by
    ``workspace_layout`` (``layout``), ``iwork`` int64 scratch of ``2 * min(batch, n)``
    elements, ``stats`` float64 of ``N_STATS + 3 * n_chunks`` elements.

    Each step runs as ``n_chunks`` row chunks (the row passes) and then ``n_chunks`` parts of
    the updates (``_update_pass``); in the parallel build each set runs across the threads,
    with BLAS single-threaded (see "Threads" in the module docstring).  The serial build
    takes ``n_chunks = 1``.  Both builds call the same compiled passes (by address, see the
    module docstring); each driver's own compile is 1-2.6 s on the reference machine, once:
    everything is cached on disk, and a fit loads only the build it runs.

    With ``hyper[H_GRAD_ONLY]`` set, each step leaves its gradient (of the mean loss over the
    batch's rows) in ``grads`` and updates nothing: ``fit(distributed="mpi")`` runs one batch
    per call, on the rank's share of the rows, and sums the ranks' gradients before the
    optimizer's step.

    Stops at the first batch whose loss is not finite, before any parameter changes, with
    ``stats[S_FINITE] = 0``.  With ``check_inputs`` every gathered batch of X is checked, and
    the call stops before training on the first batch holding a NaN or inf, with
    ``stats[S_INPUTS_FINITE] = 0`` (``fit`` checks X this way in its first epoch: see
    ``fastnn.training.fit``).
    """
    # every view below is sliced from these without touching a reference count: the
    # atomic increments and decrements took 16% of a 4-6-8-10-3@150 epoch
    X, y, T, order, params, grads, state1, state2 = _borrow8(
        X, y, T, order, params, grads, state1, state2
    )
    work, iwork, layout, stats, sizes, w_off, b_off, codes = _borrow8(
        work, iwork, layout, stats, sizes, w_off, b_off, codes
    )
    alphas, hyper = borrowed(alphas), borrowed(hyper)
    n = X.shape[0]
    part, zero_b = _start(stats, n_chunks, sizes, layout, work)
    fold = opt_kind == OPT_SGD and hyper[H_MOMENTUM] == 0 and hyper[H_GRAD_ONLY] == 0

    for bi in range(first, last):
        start = bi * batch
        m = min(start + batch, n) - start
        step = step0 + bi - first + 1
        # (the chunk index is cast: numba types a prange index as uint64 in the outlined
        # loop body and int64 in the function's own typing, which compiled each callee twice)
        for ci in prange(n_chunks):
            c = np.int64(ci)
            r0, r1 = _span(c, n_chunks, m)
            ok_c = call_at(
                passes, 0, _gather_pass, X, y, T, order, start, r0, r1, batch, check_inputs,
                sizes, loss_kind, feature_major, layout, work, iwork,
            )  # fmt: skip
            total_c, correct_c = 0.0, 0
            if ok_c:
                total_c, correct_c = _from_layer(
                    passes, np.int64(0), r0, r1, m, sizes, w_off, b_off, codes, alphas,
                    loss_kind, feature_major, params, layout, work, iwork, zero_b,
                )  # fmt: skip
            part[3 * c] = 1.0 if ok_c else 0.0
            part[3 * c + 1] = total_c
            part[3 * c + 2] = correct_c
        if not _step_totals(part, n_chunks, stats):
            return
        for ci in prange(n_chunks):
            c = np.int64(ci)
            call_at(
                passes, 4, _update_pass, c, n_chunks, m, sizes, w_off, b_off, loss_kind,
                feature_major, opt_kind, hyper, step, fold, params, grads, state1, state2, layout,
                work,
            )  # fmt: skip
        stats[S_STEPS] += 1.0


_STEP = (_gather_pass, _forward_pass, _loss_pass, _deltas_pass, _update_pass)
train_batches, train_batches_parallel = (
    Driver(build, _STEP, pass_types) for build in twin(_train_batches)
)


def _train_batches_units(
    passes,
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
    n_chunks,
    feature_major,
):
    """``train_batches`` for networks with large weight matrices, parallel: the arguments and
    the result are the same (``feature_major`` must be False: every block is row-major but
    the softmax output layer's; ``passes`` the addresses of ``_STEP``'s passes, then of
    ``_forward_units`` and ``_input_grad_units``).

    Splitting rows (``train_batches_parallel``) gives each thread all of every weight matrix
    to read in its forward and input-gradient products; at 1024x1024 that loses to OpenBLAS's
    own two-thread split (the 512x1024x1024 input-gradient product, single-threaded calls
    from numba's threads: 6.59 ms split by rows, 6.26 ms by columns; one two-thread call
    6.16 ms).
    Here each hidden layer's forward and each delta before the output layer's are split by
    units instead: thread c computes columns ``_span(c, n_chunks, width)`` of the block over
    the whole batch, reading only the weights that feed them, then adds the bias and applies
    the activation (or the derivative) on those columns.  The gather, the output layer, the
    loss and the output layer's delta run on row chunks as before, and the updates are
    ``_update_pass``.  A step then takes 2 L + 1 parallel regions instead of two, which only a
    large step can afford (``fastnn._fastpath.units_split_for`` decides).
    """
    X, y, T, order, params, grads, state1, state2 = _borrow8(
        X, y, T, order, params, grads, state1, state2
    )
    work, iwork, layout, stats, sizes, w_off, b_off, codes = _borrow8(
        work, iwork, layout, stats, sizes, w_off, b_off, codes
    )
    alphas, hyper = borrowed(alphas), borrowed(hyper)
    L = sizes.shape[0] - 1
    n = X.shape[0]
    part, zero_b = _start(stats, n_chunks, sizes, layout, work)
    fold = opt_kind == OPT_SGD and hyper[H_MOMENTUM] == 0 and hyper[H_GRAD_ONLY] == 0

    for bi in range(first, last):
        start = bi * batch
        m = min(start + batch, n) - start
        step = step0 + bi - first + 1
        for ci in prange(n_chunks):
            c = np.int64(ci)
            r0, r1 = _span(c, n_chunks, m)
            ok_c = call_at(
                passes, 0, _gather_pass, X, y, T, order, start, r0, r1, batch, check_inputs,
                sizes, loss_kind, feature_major, layout, work, iwork,
            )  # fmt: skip
            part[3 * c] = 1.0 if ok_c else 0.0
        for k in range(L - 1):
            for ci in prange(n_chunks):
                call_at(
                    passes, 5, _forward_units, k, np.int64(ci), n_chunks, m, sizes, w_off, b_off,
                    codes, alphas, params, layout, work, zero_b,
                )  # fmt: skip
        for ci in prange(n_chunks):
            c = np.int64(ci)
            r0, r1 = _span(c, n_chunks, m)
            total_c, correct_c = _from_layer(
                passes, L - 1, r0, r1, m, sizes, w_off, b_off, codes, alphas, loss_kind,
                feature_major, params, layout, work, iwork, zero_b,
            )  # fmt: skip
            part[3 * c + 1] = total_c
            part[3 * c + 2] = correct_c
        if not _step_totals(part, n_chunks, stats):
            return
        for k in range(L - 2, 0, -1):
            for ci in prange(n_chunks):
                call_at(
                    passes, 6, _input_grad_units, k, np.int64(ci), n_chunks, m, sizes, w_off,
                    codes, alphas, params, layout, work,
                )  # fmt: skip
        for ci in prange(n_chunks):
            call_at(
                passes, 4, _update_pass, np.int64(ci), n_chunks, m, sizes, w_off, b_off,
                loss_kind, feature_major, opt_kind, hyper, step, fold, params, grads, state1,
                state2, layout, work,
            )  # fmt: skip
        stats[S_STEPS] += 1.0


# (the serial build stands in for the parallel one while a helper compiles it: see
# fastnn._fastpath.FastEpochRunner._parallel_build)
train_batches_units_serial, train_batches_units = (
    Driver(build, (*_STEP, _forward_units, _input_grad_units), pass_types)
    for build in twin(_train_batches_units)
)


def workspace_layout(sizes, batch, n):
    """(layout, total): offsets into the scratch buffer ``train_batches`` uses, for layer
    widths ``sizes`` (L + 1,), batch size ``batch`` and ``n`` samples.  A plain-Python helper
    for the caller.

    layout[k] (k < L) is where layer k's output activations start, layout[L + k] its delta
    (the gradient at its pre-activation), layout[2L] a zero bias (for layers without bias;
    layout[2L + 1] marks its end) of the largest layer width,
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
    targets = pos + width
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
    "train_batches_parallel",
    "train_batches_units",
    "workspace_layout",
]
