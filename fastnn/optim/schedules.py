"""Learning-rate schedules: StepLR, ExponentialLR, CosineAnnealingLR (with linear warm-up) and
ReduceLROnPlateau, with torch.optim.lr_scheduler's rules.

A schedule changes ``optimizer.lr``, which every optimizer reads at each step, so it works with
all of them.  Use it either by hand, torch style (``sched.step()`` once per epoch, after the
epoch's updates; ``ReduceLROnPlateau.step(metric)``), or as a callback of ``fit``
(``model.fit(..., callbacks=[StepLR(opt, 10)])``): at the end of each epoch it records the
learning rate that epoch used as ``logs["lr"]`` (so ``History`` has an ``lr`` curve) and then
steps, reading ``logs[monitor]`` where it needs a metric.
"""

import math
import numbers
import warnings
from collections.abc import Mapping
from typing import Any

from .._callback import Callback
from .._validation import check_number, check_positive_int
from ._base import Optimizer


class LRScheduler(Callback):
    """Base class: ``lr_at(epoch)`` gives the learning rate for a (0-based) epoch count.

    ``step()`` advances ``last_epoch`` by one and sets ``optimizer.lr = lr_at(last_epoch)``.
    The schedule's initial lr (``base_lr``) is the optimizer's lr when the schedule is made.

    Resuming: the optimizer remembers its schedule (``optimizer.schedule``), ``fastnn.save``
    writes the schedule's state (``state_dict()``) with the optimizer, and the first schedule of
    the same type made for an optimizer from ``fastnn.load_optimizer`` continues from it
    (``base_lr``, ``last_epoch`` and, for ReduceLROnPlateau, the plateau counters), so a fit
    resumed from a checkpoint follows the same learning rates as one that never stopped.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a fastnn optimizer (e.g. SGD(...)), got {optimizer!r}"
            )
        self.optimizer = optimizer
        saved = optimizer._saved_schedule
        if saved is not None and saved.get("type") == type(self).__name__:
            optimizer._saved_schedule = None  # continued once, by the first schedule made
            self.load_state_dict(saved)  # optimizer.lr is already the saved current lr
        else:
            self.base_lr = float(optimizer.lr)
            self.last_epoch = 0
            optimizer.lr = self.lr_at(0)
        optimizer.schedule = self

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs, as JSON-ready values (``fastnn.save`` writes it)."""
        return {"type": type(self).__name__, "base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self, metric: float | None = None) -> None:
        """Advance one epoch and set the optimizer's learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self) -> float:
        """The learning rate the optimizer uses now."""
        return self.optimizer.lr

    # -- Callback ------------------------------------------------------------------------------
    def set_context(self, model: Any, optimizer: Any) -> None:
        if optimizer is not None and optimizer is not self.optimizer:
            raise ValueError(
                f"{type(self).__name__} was made for another optimizer than the one passed to "
                "fit; make it with the same optimizer object"
            )
        self.model = model

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> bool | None:
        if logs is not None:
            logs["lr"] = self.optimizer.lr
        self.step()
        return False

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size): multiply by ``gamma`` every ``step_size``
    epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = check_positive_int(step_size, "step_size")
        self.gamma = check_number(gamma, "gamma", low=0.0, low_open=True)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)

    def get_config(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "gamma": self.gamma}


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        self.gamma = check_number(gamma, "gamma", low=0.0, low_open=True)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma**epoch

    def get_config(self) -> dict[str, Any]:
        return {"gamma": self.gamma}


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from base_lr to ``eta_min`` over ``T_max`` epochs, optionally after a
    linear warm-up.

    Without warm-up this is torch's closed form,
    lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2 (periodic past
    T_max, as torch).  With ``warmup_epochs = W > 0``, epochs 0..W-1 rise linearly from
    base_lr * warmup_start_factor towards base_lr (lr = base_lr * (f + (1 - f) * epoch / W)),
    and the cosine then runs over the remaining T_max - W epochs, reaching eta_min at T_max.
    """

    warmup_epochs: int
    warmup_start_factor: float

    def __init__(
        self,
        optimizer: Optimizer,
        T_max: int,
        eta_min: float = 0.0,
        warmup_epochs: int = 0,
        warmup_start_factor: float = 0.1,
    ) -> None:
        self.T_max = check_positive_int(T_max, "T_max")
        self.eta_min = check_number(eta_min, "eta_min", low=0.0)
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, numbers.Integral):
            raise TypeError(f"warmup_epochs must be a non-negative integer, got {warmup_epochs!r}")
        if not 0 <= warmup_epochs < self.T_max:
            raise ValueError(
                f"warmup_epochs must be in [0, T_max={self.T_max}), got {warmup_epochs}"
            )
        self.warmup_epochs = int(warmup_epochs)
        self.warmup_start_factor = check_number(
            warmup_start_factor, "warmup_start_factor", low=0.0, high=1.0
        )
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        W = self.warmup_epochs
        if epoch < W:
            f = self.warmup_start_factor
            return self.base_lr * (f + (1.0 - f) * epoch / W)
        T = self.T_max - W
        cos = math.cos(math.pi * (epoch - W) / T)
        return self.eta_min + (self.base_lr - self.eta_min) * (1.0 + cos) / 2.0

    def get_config(self) -> dict[str, Any]:
        return {
            "T_max": self.T_max,
            "eta_min": self.eta_min,
            "warmup_epochs": self.warmup_epochs,
            "warmup_start_factor": self.warmup_start_factor,
        }


class ReduceLROnPlateau(LRScheduler):
    """Multiply the learning rate by ``factor`` when a metric has stopped improving for more
    than ``patience`` epochs (torch.optim.lr_scheduler.ReduceLROnPlateau).

    A value improves on the best so far when (mode "min", threshold_mode "rel")
    value < best * (1 - threshold); "max" uses value > best * (1 + threshold); threshold_mode
    "abs" uses best -+ threshold.  After a reduction (lr = max(lr * factor, min_lr), skipped if
    it changes lr by less than ``eps``) the count of bad epochs restarts, and ``cooldown``
    epochs pass before bad epochs count again.

    As a callback it reads ``logs[monitor]`` (default "val_loss"; use "loss" without
    validation data).  By hand, call ``step(metric)``.
    """

    def __init__(
        self,
        optimizer,
        monitor="val_loss",
        mode="min",
        factor=0.1,
        patience=10,
        threshold=1e-4,
        min_lr=0.0,
        *,
        threshold_mode="rel",
        cooldown=0,
        eps=1e-8,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a metric name (str), got {monitor!r}")
        self.monitor = monitor
        self.mode = mode
        self.factor = check_number(factor, "factor", low=0.0, high=1.0, high_open=True)
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral):
            raise TypeError(f"patience must be a non-negative integer, got {patience!r}")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.patience = int(patience)
        self.threshold = check_number(threshold, "threshold", low=0.0)
        self.threshold_mode = threshold_mode
        self.min_lr = check_number(min_lr, "min_lr", low=0.0)
        if isinstance(cooldown, bool) or not isinstance(cooldown, numbers.Integral) or cooldown < 0:
            raise ValueError(f"cooldown must be a non-negative integer, got {cooldown!r}")
        self.cooldown = int(cooldown)
        self.eps = check_number(eps, "eps", low=0.0)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.optimizer.lr if epoch else self.base_lr

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            best=self.best,
            num_bad_epochs=self.num_bad_epochs,
            cooldown_counter=self.cooldown_counter,
        )
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])

    def _is_better(self, value):
        if self.mode == "min":
            bound = (
                self.best * (1.0 - self.threshold)
                if self.threshold_mode == "rel"
                else self.best - self.threshold
            )
            return value < bound
        bound = (
            self.best * (1.0 + self.threshold)
            if self.threshold_mode == "rel"
            else self.best + self.threshold
        )
        return value > bound

    def step(self, metric: float | None = None) -> None:
        """Record this epoch's ``metric`` and reduce the learning rate if it has plateaued."""
        if metric is None:
            raise ValueError("ReduceLROnPlateau.step needs the monitored metric's value")
        value = check_number(metric, "metric")
        self.last_epoch += 1
        if self._is_better(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = self.optimizer.lr
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> bool | None:
        logs = {} if logs is None else logs
        logs["lr"] = self.optimizer.lr
        if self.monitor not in logs:
            warnings.warn(
                f"ReduceLROnPlateau monitors {self.monitor!r}, which is not among this epoch's "
                f"metrics {sorted(k for k in logs if k != 'lr')}; the learning rate is unchanged",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        self.step(logs[self.monitor])
        return False

    def get_config(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "factor": self.factor,
            "patience": self.patience,
            "threshold": self.threshold,
            "min_lr": self.min_lr,
            "threshold_mode": self.threshold_mode,
            "cooldown": self.cooldown,
            "eps": self.eps,
        }


__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR", "ReduceLROnPlateau"]
