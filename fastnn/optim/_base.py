"""Optimizer base: parameters grouped into flat buffers, state kept per buffer."""

import numpy as np

from .._validation import check_number
from ..parameter import FlatParameters, Parameter


class Optimizer:
    """Updates a list of Parameters from their ``grad``.

    When the parameters are one consecutive run of a model's flat buffer (the usual case:
    ``model.parameters()``), a single kernel call updates all of them; otherwise one call per
    parameter.  Hyper-parameters are plain attributes (``opt.lr = 0.01`` takes effect at the
    next step), which is how learning-rate schedules drive any optimizer.
    """

    #: names of per-parameter state buffers (same shape as the parameters)
    state_names = ()

    def __init__(self, params, lr):
        params = list(params)
        if not params:
            raise ValueError("params is empty: pass model.parameters()")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(f"params[{i}] must be a fastnn Parameter, got {type(p).__name__}")
        self.params = params
        self.lr = check_number(lr, "lr", low=0.0)
        self.step_count = 0
        flat = FlatParameters.slice_of(params)
        self._groups = (
            [flat]
            if flat is not None
            else [(p.data.reshape(-1), p.grad.reshape(-1)) for p in params]
        )
        self.state = [
            {name: np.zeros_like(data) for name in self.state_names} for data, _ in self._groups
        ]

    def zero_grad(self):
        for _, grad in self._groups:
            grad[...] = 0

    def step(self):
        self.step_count += 1
        for (data, grad), state in zip(self._groups, self.state, strict=True):
            self._update(data, grad, state)

    def _update(self, data, grad, state):
        raise NotImplementedError

    def get_config(self):
        return {"lr": self.lr}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
