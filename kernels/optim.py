"""Optimizer updates over one flat parameter buffer, torch.optim's update rules.

Every parameter of a model lives in one flat array (each Parameter is a view), so one call
updates the whole model.  Weight decay, momentum and the Adam moments are fused into the
same pass over memory.  Threads own contiguous chunks of the buffer.
"""

import math

from numba import prange

from ._config import twin


def _sgd_update(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first_step):
    """SGD as torch.optim.SGD: g += wd*p; buf = momentum*buf + (1-dampening)*g (buf = g on the
    first step); step = g + momentum*buf if nesterov else buf; p -= lr*step.
    p, g, buf: 1-D arrays of one dtype; buf is unused when momentum == 0."""
    n = p.shape[0]
    t = p.dtype.type
    lr_, mu, damp, wd = t(lr), t(momentum), t(1 - dampening), t(weight_decay)
    for i in prange(n):
        d = g[i] + wd * p[i]
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


def _adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """Adam (decoupled=False: L2 weight decay added to the gradient) or AdamW (decoupled=True:
    p *= 1 - lr*wd before the step), with torch.optim's bias corrections; ``step`` counts from 1."""
    n = p.shape[0]
    t = p.dtype.type
    b1, b2, wd = t(beta1), t(beta2), t(weight_decay)
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    step_size = t(lr / bc1)
    inv_sqrt_bc2 = t(1.0 / math.sqrt(bc2))
    eps_ = t(eps)
    shrink = t(1.0 - lr * weight_decay)
    for i in prange(n):
        d = g[i]
        if decoupled:
            p[i] *= shrink
        else:
            d = d + wd * p[i]
        mi = b1 * m[i] + (1 - b1) * d
        vi = b2 * v[i] + (1 - b2) * d * d
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps_)


sgd_update, sgd_update_parallel = twin(_sgd_update)
adam_update, adam_update_parallel = twin(_adam_update)

__all__ = ["sgd_update", "sgd_update_parallel", "adam_update", "adam_update_parallel"]
