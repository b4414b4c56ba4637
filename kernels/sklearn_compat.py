"""Kernels behind fastnn.sklearn's MLPClassifier / MLPRegressor, with scikit-learn's maths.

scikit-learn's MLP differs from fastnn's layer API in a few exact rules that these kernels
reproduce, so that a fit tracks scikit-learn's own step for step:

- the output layer is one of four "kinds" (identity + half squared error, logistic + binary
  log-loss, softmax + log-loss, exp + half Poisson deviance); in every case the gradient at the
  pre-activation is ``(out(Z) - Y) * w_i / sum(w)``, and the loss clips probabilities to
  ``[eps, 1 - eps]`` with the dtype's machine epsilon;
- L2 acts on the weights only (the first ``n_w`` entries of the flat parameter vector, where
  all weight matrices come before all intercepts, as in scikit-learn's packing), with the
  coefficient ``alpha / sum(w)`` per batch;
- SGD momentum is ``v = mu v - lr g; p += v`` (Nesterov: ``p += mu v - lr g``), and Adam adds
  ``eps`` to ``sqrt(v)`` without bias-correcting it (the learning rate carries both corrections).

Parameters live in one flat vector ``params`` laid out as ``[W_0, W_1, ..., b_0, b_1, ...]``;
``units`` (int64) lists the layer widths ``[n_in, h_1, ..., n_out]``.  The network-level kernels
(``mlp_forward``, ``mlp_loss_grad``, ``mlp_epoch``) run one whole batch, or one whole epoch of
minibatches, per call: on scikit-learn's typical sizes (a few thousand rows, 100 hidden units)
the per-call overhead of separate kernels, not the arithmetic, is what a step costs.  They are
serial builds: the matrix products inside go to the (threaded) BLAS.
"""

import math

import numpy as np
from numba import prange, types

from ._blas import gemm
from ._by_address import Driver, call_at
from ._config import njit, njit_internal, twin
from .activations import IDENTITY, SIGMOID, activate, bias_activate, mask_inplace

OUT_IDENTITY = 0
OUT_LOGISTIC = 1
OUT_SOFTMAX = 2
OUT_EXP = 3

SOLVER_SGD = 0
SOLVER_ADAM = 1

#: machine epsilon of float32 and float64 (np.finfo(dtype).eps), the clip of log-losses
EPS32 = 1.1920928955078125e-07
EPS64 = 2.220446049250313e-16


def _output_loss_delta(Z, Y, sw, sw_sum, kind, dZ):
    """Loss of the output layer and its gradient at the pre-activation, scikit-learn's way.

    Z (n, k) output pre-activations, Y (n, k) targets (0/1 for the classification kinds),
    sw (n,) sample weights with sum ``sw_sum``.  Writes ``dZ = (out(Z) - Y) * sw_i / sw_sum``
    (dZ may be Z) and returns the weighted mean loss without the L2 term:
    identity: ``0.5 * sum_i w_i |z_i - y_i|^2 / (sw_sum * k)``; logistic: binary log-loss summed
    over outputs; softmax: log-loss; exp: half Poisson deviance summed over outputs.
    """
    n, k = Z.shape
    t = Z.dtype.type
    eps = EPS32 if Z.itemsize == 4 else EPS64
    lo = t(eps)
    hi = t(1.0 - eps)
    inv = t(1.0 / sw_sum)
    total = 0.0
    for i in prange(n):
        w = sw[i]
        wi = w * inv
        row = 0.0
        if kind == OUT_SOFTMAX:
            # one pass per job (maximum, exponentials, log-loss of the labelled classes, the
            # delta), so that the delta's pass has no branch and vectorises: 200 digits rows
            # took 17 us (float64) and 15 us (float32) instead of 26 and 23
            z, d, yr = Z[i], dZ[i], Y[i]
            m = z[0]
            for j in range(1, k):
                m = max(m, z[j])
            s = z[0] * 0
            for j in range(k):
                e = math.exp(z[j] - m)
                d[j] = e
                s += e
            r = 1 / s  # (float64 also for float32 logits: p below is not rounded to float32)
            if Z.itemsize == 8:
                for j in range(k):
                    d[j] *= r
                for j in range(k):
                    if yr[j] != 0:
                        row -= yr[j] * math.log(min(max(d[j], lo), hi))
                for j in range(k):
                    d[j] = (d[j] - yr[j]) * wi
            else:
                for j in range(k):
                    if yr[j] != 0:
                        row -= yr[j] * math.log(min(max(d[j] * r, lo), hi))
                for j in range(k):
                    d[j] = (d[j] * r - yr[j]) * wi
        elif kind == OUT_LOGISTIC:
            for j in range(k):
                p = activate(Z[i, j], SIGMOID, Z[i, j] * 0)
                y = Y[i, j]
                pc = min(max(p, lo), hi)
                if y != 0:
                    row -= y * math.log(pc)
                if y != 1:
                    row -= (1 - y) * math.log(1 - pc)
                dZ[i, j] = (p - y) * wi
        elif kind == OUT_EXP:
            for j in range(k):
                z = Z[i, j]
                p = math.exp(z)
                y = Y[i, j]
                if y > 0:
                    row += y * (math.log(y) - z)
                row += p - y
                dZ[i, j] = (p - y) * wi
        else:
            for j in range(k):
                d = Z[i, j] - Y[i, j]
                row += 0.5 * d * d
                dZ[i, j] = d * wi
        total += w * row
    if kind == OUT_IDENTITY:
        return total / (sw_sum * k)
    return total / sw_sum


def _output_activation(Z, kind, P):
    """P = out(Z) row by row: identity, logistic, softmax or exp (P may be Z)."""
    n, k = Z.shape
    for i in prange(n):
        if kind == OUT_SOFTMAX:
            m = Z[i, 0]
            for j in range(1, k):
                if Z[i, j] > m:
                    m = Z[i, j]
            s = Z[i, 0] * 0
            for j in range(k):
                e = math.exp(Z[i, j] - m)
                P[i, j] = e
                s += e
            r = 1 / s
            for j in range(k):
                P[i, j] *= r
        elif kind == OUT_LOGISTIC:
            for j in range(k):
                P[i, j] = activate(Z[i, j], SIGMOID, Z[i, j] * 0)
        elif kind == OUT_EXP:
            for j in range(k):
                P[i, j] = math.exp(Z[i, j])
        else:
            for j in range(k):
                P[i, j] = Z[i, j]


def _l2_grad(p, g, n_w, l2):
    """g[:n_w] += l2 * p[:n_w]; returns sum(p[:n_w]**2) (the weights' squared norm)."""
    c = p.dtype.type(l2)
    sq = 0.0
    for i in prange(n_w):
        pi = p[i]
        sq += pi * pi
        g[i] += c * pi
    return sq


def _sgd_momentum_step(p, g, vel, n_w, l2, lr, momentum, nesterov):
    """scikit-learn's SGD step over the flat parameters, L2 on the first ``n_w`` fused in.

    With ``d = g + l2 * p`` (weights) or ``d = g`` (intercepts): ``v = momentum * v - lr * d``;
    ``p += momentum * v - lr * d`` if nesterov else ``p += v``.  Returns ``sum(p[:n_w]**2)``
    taken before the step (the L2 term of the batch loss).
    """
    n = p.shape[0]
    t = p.dtype.type
    c, lr_, mu = t(l2), t(lr), t(momentum)
    # Weights and intercepts in two loops: with the ``i < n_w`` test inside one loop the
    # float64 update did not vectorise (7510 parameters, the digits network: see _adam_step)
    sq = 0.0
    for i in prange(n_w):
        pi = p[i]
        sq += pi * pi
        d = g[i] + c * pi
        v = mu * vel[i] - lr_ * d
        vel[i] = v
        if nesterov:
            p[i] = pi + (mu * v - lr_ * d)
        else:
            p[i] = pi + v
    for i in prange(n_w, n):
        d = g[i]
        v = mu * vel[i] - lr_ * d
        vel[i] = v
        if nesterov:
            p[i] = p[i] + (mu * v - lr_ * d)
        else:
            p[i] = p[i] + v
    return sq


def _adam_step(p, g, m, v, n_w, l2, lr_t, beta1, beta2, eps):
    """scikit-learn's Adam step: ``m = b1 m + (1-b1) d``, ``v = b2 v + (1-b2) d^2``,
    ``p -= lr_t * m / (sqrt(v) + eps)`` where ``lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)`` is
    computed by the caller and ``d = g + l2 * p`` on the first ``n_w`` entries (weights).
    Returns ``sum(p[:n_w]**2)`` taken before the step."""
    n = p.shape[0]
    t = p.dtype.type
    c, lr_, b1, b2, e = t(l2), t(lr_t), t(beta1), t(beta2), t(eps)
    # 1 - beta in float64, then rounded, as scikit-learn's ``(1 - beta_1) * grad`` does:
    # ``t(1) - b2`` in float32 is 1 - 0.999f = 0.00099998713, 1.3e-5 off 0.001, a bias in
    # every second-moment update that made float32 fits drift 4-6x further from float64
    # than scikit-learn's float32 fits do (MLPRegressor on 2-class digits, six seeds)
    ob1, ob2 = t(1.0 - beta1), t(1.0 - beta2)
    # Weights (with L2) and intercepts in two loops: one loop with the ``i < n_w`` test
    # inside took 33 us for the digits network's 7510 float64 parameters (13% of a step)
    sq = 0.0
    for i in prange(n_w):
        pi = p[i]
        sq += pi * pi
        d = g[i] + c * pi
        mi = b1 * m[i] + ob1 * d
        vi = b2 * v[i] + ob2 * (d * d)
        m[i] = mi
        v[i] = vi
        p[i] = pi - lr_ * mi / (math.sqrt(vi) + e)
    for i in prange(n_w, n):
        d = g[i]
        mi = b1 * m[i] + ob1 * d
        vi = b2 * v[i] + ob2 * (d * d)
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - lr_ * mi / (math.sqrt(vi) + e)
    return sq


@njit
def _layer_forward(X, W, b, code, A):
    """A = f(X @ W + b) through BLAS, whatever the shape.

    fastnn's dense kernels switch to a compiled loop below SMALL_WORK multiply-adds; for the
    100 -> 1 output layer of a regression net (200-row batches) that loop took 84 us against
    16 us for the 20 -> 100 layer through BLAS (one thread), so these kernels always use BLAS.
    Every row is then computed the same way whatever the batch size.
    """
    gemm(False, False, 1.0, X, W, 0.0, A)
    bias_activate(A, b, code, A.dtype.type(0))


@njit
def _layer_backward(X, W, D, prev_code, gW, gb, D_prev):
    """gW = X.T @ D, gb = column sums of D and, when ``D_prev`` has rows,
    D_prev = (D @ W.T) * f'(X) with f the activation (``prev_code``) that produced X."""
    gemm(True, False, 1.0, X, D, 0.0, gW)
    for j in range(D.shape[1]):
        gb[j] = 0
    for i in range(D.shape[0]):
        for j in range(D.shape[1]):
            gb[j] += D[i, j]
    if D_prev.shape[0] == 0:
        return
    gemm(False, True, 1.0, D, W, 0.0, D_prev)
    if prev_code != IDENTITY:
        mask_inplace(D_prev, X, prev_code, 0.0)


output_loss_delta, output_loss_delta_parallel = twin(_output_loss_delta)
output_activation, output_activation_parallel = twin(_output_activation)
l2_grad, l2_grad_parallel = twin(_l2_grad)
sgd_momentum_step, sgd_momentum_step_parallel = twin(_sgd_momentum_step)
adam_step, adam_step_parallel = twin(_adam_step)


@njit_internal
def _forward_backward(X, Y, sw, sw_sum, params, n_w, units, code, kind, grad, acts, deltas):
    """One batch: forward through every layer, output loss, backward into ``grad``.

    X (m, n_in) the batch; ``acts`` and ``deltas`` hold at least ``m * sum(units[1:])`` values
    (each layer's output, then its pre-activation gradient, layer after layer).  ``grad`` gets
    the data-term gradient of every parameter (no L2).  Returns the data loss.
    """
    m = X.shape[0]
    n_layers = units.shape[0] - 1
    w_off = 0
    b_off = n_w
    a_off = 0
    A_in = X
    for layer in range(n_layers):
        n_in = units[layer]
        n_out = units[layer + 1]
        W = params[w_off : w_off + n_in * n_out].reshape((n_in, n_out))
        b = params[b_off : b_off + n_out]
        A_out = acts[a_off : a_off + m * n_out].reshape((m, n_out))
        act = code if layer < n_layers - 1 else IDENTITY
        _layer_forward(A_in, W, b, act, A_out)
        w_off += n_in * n_out
        b_off += n_out
        a_off += m * n_out
        A_in = A_out
    k = units[n_layers]
    D = deltas[a_off - m * k : a_off].reshape((m, k))
    loss = output_loss_delta(A_in, Y, sw, sw_sum, kind, D)
    for layer in range(n_layers - 1, -1, -1):
        n_in = units[layer]
        n_out = units[layer + 1]
        w_off -= n_in * n_out
        b_off -= n_out
        a_off -= m * n_out
        W = params[w_off : w_off + n_in * n_out].reshape((n_in, n_out))
        gW = grad[w_off : w_off + n_in * n_out].reshape((n_in, n_out))
        gb = grad[b_off : b_off + n_out]
        D = deltas[a_off : a_off + m * n_out].reshape((m, n_out))
        if layer > 0:
            X_l = acts[a_off - m * n_in : a_off].reshape((m, n_in))
            D_prev = deltas[a_off - m * n_in : a_off].reshape((m, n_in))
            _layer_backward(X_l, W, D, code, gW, gb, D_prev)
        else:
            none = deltas[:0].reshape((0, n_in))
            # (no delta below the first layer, so no activation to apply: ``code`` rather
            # than the constant IDENTITY, which would compile _layer_backward twice)
            _layer_backward(X, W, D, code, gW, gb, none)
    return loss


@njit
def mlp_forward(X, params, n_w, units, code, kind, acts, out):
    """Network output for X: hidden layers with activation ``code``, then the output kind.

    X (n, units[0]); ``acts`` holds at least ``n * sum(units[1:-1])`` values; out (n, units[-1]).
    """
    n = X.shape[0]
    n_layers = units.shape[0] - 1
    w_off = 0
    b_off = n_w
    a_off = 0
    A_in = X
    for layer in range(n_layers):
        n_in = units[layer]
        n_out = units[layer + 1]
        W = params[w_off : w_off + n_in * n_out].reshape((n_in, n_out))
        b = params[b_off : b_off + n_out]
        if layer == n_layers - 1:
            _layer_forward(A_in, W, b, np.int64(IDENTITY), out)  # (int64: see above)
        else:
            A_out = acts[a_off : a_off + n * n_out].reshape((n, n_out))
            _layer_forward(A_in, W, b, code, A_out)
            A_in = A_out
        w_off += n_in * n_out
        b_off += n_out
        a_off += n * n_out
    output_activation(out, kind, out)


@njit
def mlp_loss_grad(X, Y, sw, sw_sum, params, n_w, units, code, kind, alpha, grad, acts, deltas):
    """Full-batch loss (with L2) and its gradient (into ``grad``), as L-BFGS needs them.

    Returns ``data_loss + 0.5 * alpha * sum(W**2) / sw_sum``; ``grad`` gets the data gradient
    plus ``alpha * W / sw_sum`` on the weights.
    """
    data = _forward_backward(X, Y, sw, sw_sum, params, n_w, units, code, kind, grad, acts, deltas)
    sq = l2_grad(params, grad, n_w, alpha / sw_sum)
    return data + 0.5 * alpha * sq / sw_sum


def _mlp_epoch(
    passes,
    X,
    Y,
    sw,
    idx,
    batch_size,
    params,
    n_w,
    units,
    code,
    kind,
    alpha,
    solver,
    lr,
    momentum,
    nesterov,
    beta1,
    beta2,
    epsilon,
    step,
    state1,
    state2,
    grad,
    xbuf,
    ybuf,
    swbuf,
    acts,
    deltas,
):
    """One epoch of minibatch SGD or Adam over the rows ``idx`` of (X, Y, sw), in order.

    Batches are ``idx[0:batch_size]``, ``idx[batch_size:2*batch_size]``, ... (the last may be
    smaller).  Each batch is gathered into ``xbuf``/``ybuf``/``swbuf``, run forward and
    backward, and stepped with ``solver`` (SOLVER_SGD: ``state1`` is the velocity, ``lr`` the
    current rate; SOLVER_ADAM: ``state1``/``state2`` the moments, ``lr`` the initial rate,
    ``step[0]`` the step count, incremented per batch).  Returns the sum over batches of
    ``batch_loss * batch_rows`` (batch loss with its L2 term), scikit-learn's epoch accumulator.
    """
    n = idx.shape[0]
    n_in = X.shape[1]
    k = Y.shape[1]
    total = 0.0
    start = 0
    while start < n:
        stop = min(start + batch_size, n)
        m = stop - start
        Xb = xbuf[: m * n_in].reshape((m, n_in))
        Yb = ybuf[: m * k].reshape((m, k))
        swb = swbuf[:m]
        sws = 0.0
        for r in range(m):
            src = idx[start + r]
            for j in range(n_in):
                Xb[r, j] = X[src, j]
            for j in range(k):
                Yb[r, j] = Y[src, j]
            swb[r] = sw[src]
            sws += sw[src]
        data = call_at(
            passes, 0, _forward_backward, Xb, Yb, swb, sws, params, n_w, units, code, kind, grad,
            acts, deltas,
        )  # fmt: skip
        l2 = alpha / sws
        if solver == SOLVER_SGD:
            sq = call_at(
                passes, 1, sgd_momentum_step, params, grad, state1, n_w, l2, lr, momentum,
                nesterov,
            )  # fmt: skip
        else:
            step[0] += 1
            s = step[0]
            lr_t = lr * math.sqrt(1.0 - beta2**s) / (1.0 - beta1**s)
            sq = call_at(
                passes, 2, adam_step, params, grad, state1, state2, n_w, l2, lr_t, beta1, beta2,
                epsilon,
            )  # fmt: skip
        total += (data + 0.5 * alpha * sq / sws) * m
        start = stop
    return total


#: ``_mlp_epoch``'s arguments after ``passes``, by name
_EPOCH_ARGS = (
    "X Y sw idx batch_size params n_w units code kind alpha solver lr momentum nesterov beta1 "
    "beta2 epsilon step state1 state2 grad xbuf ybuf swbuf acts deltas"
).split()


def _epoch_pass_types(kernel, driver_types):
    """The argument types ``_mlp_epoch`` calls the pass ``kernel`` with (see ``Driver``)."""
    a = dict(zip(_EPOCH_ARGS, driver_types, strict=True))
    f64 = types.float64  # the batch's weight sum, the L2 factor, Adam's step size
    if kernel is _forward_backward:
        xb, yb = (types.Array(a[k].dtype, 2, "C") for k in ("xbuf", "ybuf"))
        return (xb, yb, a["swbuf"], f64, *(a[k] for k in "params n_w units code kind".split()),
                a["grad"], a["acts"], a["deltas"])  # fmt: skip
    common = (a["params"], a["grad"], a["state1"])
    if kernel is sgd_momentum_step:
        return (*common, a["n_w"], f64, a["lr"], a["momentum"], a["nesterov"])
    return (*common, a["state2"], a["n_w"], f64, f64, a["beta1"], a["beta2"], a["epsilon"])


#: One epoch of minibatch SGD or Adam; its passes (the forward and backward of a batch, the
#: optimizer's step) are called by address (see ``_by_address``): the epoch's own compile
#: no longer compiles them again (1.8 -> 0.7 s; a cold first drop-in fit on digits 8.3-8.7 ->
#: 6.9-7.7 s on 2 cores).
mlp_epoch = Driver(
    njit(_mlp_epoch), (_forward_backward, sgd_momentum_step, adam_step), _epoch_pass_types
)


__all__ = [
    "OUT_IDENTITY",
    "OUT_LOGISTIC",
    "OUT_SOFTMAX",
    "OUT_EXP",
    "SOLVER_SGD",
    "SOLVER_ADAM",
    "output_loss_delta",
    "output_loss_delta_parallel",
    "output_activation",
    "output_activation_parallel",
    "l2_grad",
    "l2_grad_parallel",
    "sgd_momentum_step",
    "sgd_momentum_step_parallel",
    "adam_step",
    "adam_step_parallel",
    "mlp_forward",
    "mlp_loss_grad",
    "mlp_epoch",
]
