"""Optimizer base: parameters grouped into flat buffers, state kept per buffer, and gradient
clipping by global norm fused into every update kernel."""

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

from fastnn import kernels as K

from .._threads import pick
from .._validation import check_number
from ..parameter import FlatParameters, Parameter

#: largest step count an optimizer accepts (the kernels take it as an int64; float64 is exact)
MAX_STEP_COUNT = 2**53


class Hyper:
    """A hyper-parameter attribute checked whenever it is set (``opt.lr = -1`` raises like the
    constructor would), so a schedule or a user changing it between epochs cannot slip an
    invalid value into the update kernel."""

    def __init__(self, *, optional=False, **limits):
        self.optional, self.limits = optional, limits

    def __set_name__(self, owner, name):
        self.name, self.attr = name, "_hp_" + name

    def __get__(self, obj, objtype=None):
        return self if obj is None else getattr(obj, self.attr)

    def __set__(self, obj, value):
        if value is None and self.optional:
            setattr(obj, self.attr, None)
            return
        setattr(obj, self.attr, check_number(value, self.name, **self.limits))


class Optimizer:
    """Updates a list of Parameters from their ``grad``.

    When the parameters are one consecutive run of a model's flat buffer (the usual case:
    ``model.parameters()``), a single kernel call updates all of them; otherwise one call per
    parameter.  Hyper-parameters are plain attributes (``opt.lr = 0.01`` takes effect at the
    next step), which is how learning-rate schedules drive any optimizer.

    Every hyper-parameter is checked when it is set, not only by the constructor.

    ``max_grad_norm`` (every optimizer): before each update the global L2 norm of all the
    gradients is computed (one reduction kernel per buffer) and the update kernel multiplies
    every gradient by min(1, max_grad_norm / (norm + 1e-6)) in the same pass as the update, as
    ``torch.nn.utils.clip_grad_norm_`` followed by ``step()`` would.  The ``grad`` arrays
    themselves are left unscaled.  ``last_grad_norm`` holds the norm (before clipping) of the
    last step, or None when clipping is off.
    """

    #: names of per-parameter state buffers (same shape as the parameters)
    state_names: tuple[str, ...] = ()

    lr = Hyper(low=0.0)
    max_grad_norm = Hyper(optional=True, low=0.0, low_open=True)

    @property
    def step_count(self):
        """Number of steps taken (an int in [0, 2**53]; Adam's bias correction uses it)."""
        return self._step_count

    @step_count.setter
    def step_count(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"step_count must be a non-negative integer, got {value!r}")
        if not 0 <= value <= MAX_STEP_COUNT:
            raise ValueError(f"step_count must be in [0, 2**53], got {value}")
        self._step_count = int(value)

    def __init__(
        self, params: Iterable[Parameter], lr: float, max_grad_norm: float | None = None
    ) -> None:
        params = list(params)
        if not params:
            raise ValueError("params is empty: pass model.parameters()")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(f"params[{i}] must be a fastnn Parameter, got {type(p).__name__}")
        self.params = params
        self.lr = lr
        self.max_grad_norm = max_grad_norm
        self.last_grad_norm: float | None = None
        self._grad_scale = 1.0
        self.step_count = 0
        self.schedule: Any = None  # the LRScheduler driving ``lr``, whose state fastnn.save writes
        self._saved_schedule = None  # a loaded schedule state, for the next schedule made
        self._groups = self._groups_of(params)
        self.state = [
            {name: np.zeros_like(data) for name in self.state_names} for data, _ in self._groups
        ]

    def __setstate__(self, state):
        # unpickled: the parameters back into their model's flat buffer (``relink``, also when
        # the optimizer was pickled without its model), and the groups made of them again
        # (pickling copied the groups' views out into arrays of their own, which no longer
        # reached the parameters)
        self.__dict__.update(state)
        owners = {id(p._flat[0]): p._flat[0] for p in self.params if p._flat is not None}
        for owner in owners.values():
            owner.relink()
        groups = self._groups_of(self.params)
        old = self._groups
        if len(groups) == len(old) and all(
            g[0].size == o[0].size for g, o in zip(groups, old, strict=True)
        ):
            self._groups = groups

    @staticmethod
    def _groups_of(params):
        """(data, grad) flat arrays the updates run on: the model's flat buffer in one piece
        when ``params`` are one run of it, else one pair of views per parameter."""
        flat = FlatParameters.slice_of(params)
        if flat is not None:
            return [flat]
        return [(p.data.reshape(-1), p.grad.reshape(-1)) for p in params]

    def zero_grad(self) -> None:
        for _, grad in self._groups:
            grad[...] = 0

    def grad_norm(self) -> float:
        """Global L2 norm of the gradients of every parameter (float64 accumulation)."""
        total = 0.0
        for _, grad in self._groups:
            total += pick(K.sum_squares, K.sum_squares_parallel, grad.size)(grad)
        return math.sqrt(total)

    def step(self) -> None:
        """One update of every parameter from its ``grad`` (clipped if ``max_grad_norm``)."""
        self.step_count += 1
        if self.max_grad_norm is not None:
            norm = self.grad_norm()
            self.last_grad_norm = norm
            self._grad_scale = min(1.0, self.max_grad_norm / (norm + 1e-6))
        for (data, grad), state in zip(self._groups, self.state, strict=True):
            self._update(data, grad, state)

    def _update(self, data, grad, state):
        """Update one flat buffer; multiply ``grad`` by ``self._grad_scale`` inside the kernel."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"lr": self.lr, "max_grad_norm": self.max_grad_norm}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
