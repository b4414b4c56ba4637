"""Adam and AdamW (torch.optim's rules and argument names)."""

from fastnn import kernels as K

from .._threads import pick
from .._validation import check_number
from ._base import Hyper, Optimizer


class Adam(Optimizer):
    """Adam; ``weight_decay`` adds ``weight_decay * p`` to the gradient (L2 penalty)."""

    state_names = ("exp_avg", "exp_avg_sq")
    decoupled = False
    eps = Hyper(low=0.0)
    weight_decay = Hyper(low=0.0)

    @property
    def betas(self):
        """(beta1, beta2), each in [0, 1); checked when set."""
        return self._betas

    @betas.setter
    def betas(self, betas):
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self._betas = (
            check_number(b1, "betas[0]", low=0.0, high=1.0, high_open=True),
            check_number(b2, "betas[1]", low=0.0, high=1.0, high_open=True),
        )

    def __init__(
        self,
        params,
        lr=0.001,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        *,
        max_grad_norm=None,
    ):
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        super().__init__(params, lr, max_grad_norm)

    def _update(self, data, grad, state):
        kernel = pick(K.adam_update, K.adam_update_parallel, data.size)
        kernel(
            data,
            grad,
            state["exp_avg"],
            state["exp_avg_sq"],
            self.lr,
            self.betas[0],
            self.betas[1],
            self.eps,
            self.weight_decay,
            self.decoupled,
            self.step_count,
            self._grad_scale,
        )

    def get_config(self):
        return {
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "max_grad_norm": self.max_grad_norm,
        }


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p *= 1 - lr * weight_decay`` before each step."""

    decoupled = True

    def __init__(
        self,
        params,
        lr=0.001,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.01,
        *,
        max_grad_norm=None,
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
        )
