"""SGD with momentum, dampening, Nesterov and weight decay (torch.optim.SGD's rule)."""

from fastnn import kernels as K

from .._threads import pick
from ._base import Hyper, Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent.

    ``g = grad + weight_decay * p``; with momentum, ``buf = momentum * buf + (1 - dampening) * g``
    (``buf = g`` on the first step) and the step is ``buf`` (or ``g + momentum * buf`` with
    ``nesterov=True``); ``p -= lr * step``.
    """

    state_names = ("momentum_buffer",)
    momentum = Hyper(low=0.0)
    dampening = Hyper(low=0.0, high=1.0)
    weight_decay = Hyper(low=0.0)

    def __init__(
        self,
        params,
        lr=0.01,
        momentum=0.0,
        dampening=0.0,
        weight_decay=0.0,
        nesterov=False,
        *,
        max_grad_norm=None,
    ):
        self.momentum = momentum
        self.dampening = dampening
        self.weight_decay = weight_decay
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening == 0")
        self.nesterov = bool(nesterov)
        super().__init__(params, lr, max_grad_norm)

    def _update(self, data, grad, state):
        kernel = pick(K.sgd_update, K.sgd_update_parallel, data.size)
        kernel(
            data,
            grad,
            state["momentum_buffer"],
            self.lr,
            self.momentum,
            self.dampening,
            self.weight_decay,
            self.nesterov,
            self.step_count == 1,
            self._grad_scale,
        )

    def get_config(self):
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "dampening": self.dampening,
            "weight_decay": self.weight_decay,
            "nesterov": self.nesterov,
            "max_grad_norm": self.max_grad_norm,
        }
