"""Adagrad (torch.optim.Adagrad's rule and argument names)."""

from fastnn import kernels as K

from .._threads import pick
from ._base import Hyper, Optimizer


class Adagrad(Optimizer):
    """Adagrad: per-parameter steps shrinking with the sum of all past squared gradients.

    At step t (from 1): d = grad + weight_decay * p; state_sum += d^2;
    p -= lr / (1 + (t - 1) * lr_decay) * d / (sqrt(state_sum) + eps).

    Parameters
    ----------
    params : list of Parameter (``model.parameters()``)
    lr, lr_decay, weight_decay, eps : float
    initial_accumulator_value : float
        Starting value of state_sum.
    max_grad_norm : float, optional
        Clip the global gradient norm to this value (see :class:`~fastnn.Optimizer`).
    """

    state_names = ("sum",)
    lr_decay = Hyper(low=0.0)
    weight_decay = Hyper(low=0.0)
    initial_accumulator_value = Hyper(low=0.0)
    eps = Hyper(low=0.0)

    def __init__(
        self,
        params,
        lr=0.01,
        lr_decay=0.0,
        weight_decay=0.0,
        initial_accumulator_value=0.0,
        eps=1e-10,
        *,
        max_grad_norm=None,
    ):
        self.lr_decay = lr_decay
        self.weight_decay = weight_decay
        self.initial_accumulator_value = initial_accumulator_value
        self.eps = eps
        super().__init__(params, lr, max_grad_norm)
        for state in self.state:
            state["sum"][...] = self.initial_accumulator_value

    def _update(self, data, grad, state):
        kernel = pick(K.adagrad_update, K.adagrad_update_parallel, data.size)
        kernel(
            data,
            grad,
            state["sum"],
            self.lr,
            self.lr_decay,
            self.weight_decay,
            self.eps,
            self.step_count,
            self._grad_scale,
        )

    def get_config(self):
        return {
            "lr": self.lr,
            "lr_decay": self.lr_decay,
            "weight_decay": self.weight_decay,
            "initial_accumulator_value": self.initial_accumulator_value,
            "eps": self.eps,
            "max_grad_norm": self.max_grad_norm,
        }
