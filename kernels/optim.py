"""Optimizer updates over one flat parameter buffer, torch.optim's update rules.

Every parameter of a model lives in one flat array (each Parameter is a view), so one call
updates the whole model.  Weight decay, momentum and the Adam moments are fused into the
same pass over memory.  Threads own contiguous chunks of the buffer.
"""

import math

import numpy as np
from numba import prange

from ._config import twin


def _sgd_update(
    p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first_step, grad_scale=1.0
):
    """SGD as torch.optim.SGD: g += wd*p; buf = momentum*buf + (1-dampening)*g (buf = g on the
    first step); step = g + momentum*buf if nesterov else buf; p -= lr*step.
    p, g, buf: 1-D arrays of one dtype; buf is unused when momentum == 0.  ``grad_scale``
    multiplies g first (gradient clipping by global norm, fused into this pass)."""
    n = p.shape[0]
    t = p.dtype.type
    lr_, mu, damp, wd = t(lr), t(momentum), t(1 - dampening), t(weight_decay)
    gs = t(grad_scale)
    for i in prange(n):
        d = g[i] * gs + wd * p[i]
        if momentum != 0:
            if first_step:
                b = d
            else:
                b = mu * buf[i] + damp * d
            buf[i] = b
            if nesterov:
                d = d + mu * b
            else:
                d = b
        p[i] -= lr_ * d


def _adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step, grad_scale=1.0):
    """Adam (decoupled=False: L2 weight decay added to the gradient) or AdamW (decoupled=True:
    ``p *= 1 - lr * wd`` before the step), with torch.optim's bias corrections; ``step`` counts
    from 1.
    ``grad_scale`` multiplies g first (gradient clipping by global norm)."""
    n = p.shape[0]
    t = p.dtype.type
    b1, b2, wd = t(beta1), t(beta2), t(weight_decay)
    # 1 - beta in float64, then rounded, as torch passes ``1 - beta`` to its float32 kernels:
    # ``1 - t(beta2)`` is 1 - 0.999f = 0.00099998713, 1.3e-5 off 0.001, a bias in every
    # second-moment update of a float32 model
    ob1, ob2 = t(1.0 - beta1), t(1.0 - beta2)
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    step_size = t(lr / bc1)
    inv_sqrt_bc2 = t(1.0 / math.sqrt(bc2))
    eps_ = t(eps)
    shrink = t(1.0 - lr * weight_decay)
    gs = t(grad_scale)
    for i in prange(n):
        d = g[i] * gs
        if decoupled:
            p[i] *= shrink
        else:
            d = d + wd * p[i]
        mi = b1 * m[i] + ob1 * d
        vi = b2 * v[i] + ob2 * (d * d)
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps_)


def _rmsprop_update(
    p, g, square_avg, grad_avg, buf, lr, alpha, eps, weight_decay, momentum, centered, grad_scale
):
    """RMSprop as torch.optim.RMSprop.

    d = grad_scale * g + wd * p; square_avg = alpha * square_avg + (1 - alpha) d^2; with
    ``centered`` also grad_avg = alpha * grad_avg + (1 - alpha) d and the denominator uses
    square_avg - grad_avg^2; den = sqrt(...) + eps.  With momentum: buf = momentum * buf + d / den
    and p -= lr * buf; otherwise p -= lr * d / den.  grad_avg and buf are untouched when their
    option is off.  All arrays 1-D of one dtype.
    """
    n = p.shape[0]
    t = p.dtype.type
    lr_, a, a1, eps_, wd, mu, gs = (
        t(lr),
        t(alpha),
        t(1.0 - alpha),
        t(eps),
        t(weight_decay),
        t(momentum),
        t(grad_scale),
    )
    for i in prange(n):
        d = g[i] * gs + wd * p[i]
        sq = a * square_avg[i] + a1 * d * d
        square_avg[i] = sq
        if centered:
            ga = a * grad_avg[i] + a1 * d
            grad_avg[i] = ga
            sq = sq - ga * ga
        den = math.sqrt(sq) + eps_
        if momentum != 0:
            b = mu * buf[i] + d / den
            buf[i] = b
            p[i] -= lr_ * b
        else:
            p[i] -= lr_ * d / den


def _adagrad_update(p, g, state_sum, lr, lr_decay, weight_decay, eps, step, grad_scale):
    """Adagrad as torch.optim.Adagrad; ``step`` counts from 1.

    d = grad_scale * g + wd * p; state_sum += d^2; p -= clr * d / (sqrt(state_sum) + eps) with
    clr = lr / (1 + (step - 1) * lr_decay).
    """
    n = p.shape[0]
    t = p.dtype.type
    clr = t(lr / (1.0 + (step - 1) * lr_decay))
    wd, eps_, gs = t(weight_decay), t(eps), t(grad_scale)
    for i in prange(n):
        d = g[i] * gs + wd * p[i]
        s = state_sum[i] + d * d
        state_sum[i] = s
        p[i] -= clr * d / (math.sqrt(s) + eps_)


def _sum_squares(g):
    """Sum of g[i]^2 over a 1-D array, accumulated in float64 (for the global gradient norm)."""
    total = 0.0
    for i in prange(g.shape[0]):
        x = np.float64(g[i])
        total += x * x
    return total


sgd_update, sgd_update_parallel = twin(_sgd_update)
adam_update, adam_update_parallel = twin(_adam_update)
rmsprop_update, rmsprop_update_parallel = twin(_rmsprop_update)
adagrad_update, adagrad_update_parallel = twin(_adagrad_update)
sum_squares, sum_squares_parallel = twin(_sum_squares)

__all__ = [
    "sgd_update",
    "sgd_update_parallel",
    "adam_update",
    "adam_update_parallel",
    "rmsprop_update",
    "rmsprop_update_parallel",
    "adagrad_update",
    "adagrad_update_parallel",
    "sum_squares",
    "sum_squares_parallel",
]
