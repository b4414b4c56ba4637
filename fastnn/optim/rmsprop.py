"""RMSprop (torch.optim.RMSprop's rule and argument names)."""

from fastnn import kernels as K

from .._threads import pick
from .._validation import check_number
from ._base import Hyper, Optimizer


class RMSprop(Optimizer):
    """RMSprop: divide the gradient by a running root-mean-square of recent gradients.

    d = grad + weight_decay * p; square_avg = alpha * square_avg + (1 - alpha) d^2;
    ``centered=True`` also tracks grad_avg (the running mean of d) and uses the variance
    square_avg - grad_avg^2; den = sqrt(...) + eps.  With ``momentum``: buf = momentum * buf +
    d / den and p -= lr * buf; otherwise p -= lr * d / den.

    Parameters
    ----------
    params : list of Parameter (``model.parameters()``)
    lr, alpha, eps, weight_decay, momentum : float
    centered : bool
    max_grad_norm : float, optional
        Clip the global gradient norm to this value (see :class:`~fastnn.Optimizer`).
    """

    state_names = ("square_avg", "grad_avg", "momentum_buffer")  # those in use, per instance
    alpha = Hyper(low=0.0, high=1.0)
    eps = Hyper(low=0.0)
    weight_decay = Hyper(low=0.0)

    def __init__(
        self,
        params,
        lr=0.01,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0.0,
        momentum=0.0,
        centered=False,
        *,
        max_grad_norm=None,
    ):
        self.alpha = alpha
        self.eps = eps
        self.weight_decay = weight_decay
        self._momentum = check_number(momentum, "momentum", low=0.0)
        self.centered = bool(centered)
        # Only the buffers the options need (no grad_avg unless centered, no momentum_buffer
        # without momentum): the kernel gets an empty array in their place and never reads it.
        self.state_names = (
            ("square_avg",)
            + (("grad_avg",) if self.centered else ())
            + (("momentum_buffer",) if self.momentum != 0 else ())
        )
        super().__init__(params, lr, max_grad_norm)

    @property
    def momentum(self):
        """Checked when set; it can change between 0 and > 0 only in the constructor (that
        decides whether the momentum buffer exists)."""
        return self._momentum

    @momentum.setter
    def momentum(self, value):
        value = check_number(value, "momentum", low=0.0)
        if (value == 0) != (self._momentum == 0):
            raise ValueError(
                f"momentum cannot change between 0 and > 0 after construction (it is "
                f"{self._momentum}); make a new RMSprop"
            )
        self._momentum = value

    def _update(self, data, grad, state):
        kernel = pick(K.rmsprop_update, K.rmsprop_update_parallel, data.size)
        kernel(
            data,
            grad,
            state["square_avg"],
            state.get("grad_avg", data[:0]),
            state.get("momentum_buffer", data[:0]),
            self.lr,
            self.alpha,
            self.eps,
            self.weight_decay,
            self.momentum,
            self.centered,
            self._grad_scale,
        )

    def get_config(self):
        return {
            "lr": self.lr,
            "alpha": self.alpha,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "centered": self.centered,
            "max_grad_norm": self.max_grad_norm,
        }
