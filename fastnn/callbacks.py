"""Callbacks: hooks that ``Sequential.fit`` calls around training, epochs and batches.

A callback subclasses :class:`Callback` and overrides the hooks it needs; ``fit`` calls them
in list order::

    on_train_begin(logs)          once, before the first epoch
    on_epoch_begin(epoch, logs)   epoch counts from 0 (from initial_epoch when resuming)
    on_batch_end(batch, logs)     logs: batch, size, loss (mean over the batch), accuracy
    on_epoch_end(epoch, logs)     logs: loss, accuracy, val_loss, val_accuracy, ...
    on_train_end(logs)            once, with the last epoch's logs, also after Ctrl-C

``fit`` calls ``set_context(model, optimizer)`` first, so hooks can use ``self.model`` and
``self.optimizer``.  A callback stops training by setting ``self.model.stop_training = True``
(from ``on_batch_end`` the epoch ends after that batch and is recorded over the samples seen)
or by returning True from ``on_epoch_end``.  Entries a callback adds to the ``logs`` dict of
``on_epoch_end`` (say ``logs["lr"] = self.optimizer.lr``) are recorded in the History and
printed.  Overriding ``on_batch_end`` makes fit run (and call back) one batch at a time, which
costs some speed on small batches; without it, batches run in chunks of about 0.1 s.

>>> class PrintLR(Callback):
...     def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> bool | None:
...         logs["lr"] = self.optimizer.lr
"""

import csv
import math
import numbers
import os
import warnings
from typing import Any

from ._callback import Callback
from .io import capture, restore, save

__all__ = ["Callback", "CSVLogger", "EarlyStopping", "LambdaCallback", "ModelCheckpoint"]


class _Monitor:
    """Tracks the best value of one logged metric ("min" or "max" is better)."""

    def __init__(self, monitor, mode, min_delta=0.0):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a metric name such as 'val_loss', got {monitor!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta
        self.reset()

    def reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.warned = False

    def value(self, logs, who):
        value = (logs or {}).get(self.monitor)
        if value is None:
            if not self.warned:
                warnings.warn(
                    f"{who}: metric {self.monitor!r} is not in the logs "
                    f"(available: {sorted(logs or {})}); pass validation data for val_* metrics",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self.warned = True
            return None
        return float(value)

    def improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(Callback):
    """Stop when a monitored metric has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : str
        A key of the epoch logs ("val_loss", "val_accuracy", "loss", ...).
    patience : int
        Stop after this many epochs in a row without improvement (as Keras: 0 and 1 both stop
        at the first epoch that does not improve).
    min_delta : float
        An improvement smaller than this does not count.
    mode : {"auto", "min", "max"}
        "auto" maximises metrics whose name contains "acc" and minimises the rest.
    restore_best : bool
        At the end of training (stopped early, finished or interrupted) put back the
        parameters and layer state of the best epoch.

    Attributes
    ----------
    best, best_epoch : the best value and its epoch (None before any)
    stopped_epoch : the epoch after which training was stopped, or None
    """

    def __init__(
        self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best=True
    ):
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral):
            raise TypeError(f"patience must be a non-negative integer, got {patience!r}")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real):
            raise TypeError(f"min_delta must be a number >= 0, got {min_delta!r}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self._monitor = _Monitor(monitor, mode, float(min_delta))
        self.monitor, self.mode = monitor, self._monitor.mode
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.restore_best = bool(restore_best)
        self._reset()

    def _reset(self):
        self._monitor.reset()
        self.best = None
        self.best_epoch = None
        self.stopped_epoch = None
        self.wait = 0
        self._best_arrays = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> bool | None:
        value = self._monitor.value(logs, "EarlyStopping")
        if value is None:
            return False
        if self._monitor.improved(value):
            self._monitor.best = value
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._best_arrays = capture(self.model)
            return False
        self.wait += 1
        if self.wait >= max(1, self.patience):
            self.stopped_epoch = epoch
            self.model.stop_training = True
            return True
        return False

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.restore_best and self._best_arrays is not None:
            restore(self.model, self._best_arrays)

    def __repr__(self):
        return (
            f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
            f"min_delta={self.min_delta}, mode={self.mode!r}, restore_best={self.restore_best})"
        )


class ModelCheckpoint(Callback):
    """Save the model and optimizer (``fastnn.save``) after epochs.

    Parameters
    ----------
    path : str or os.PathLike
        File name, formatted with ``epoch`` (1-based, as printed) and the epoch's logs:
        ``"ckpt-{epoch:03d}-{val_loss:.3f}.npz"``.  Without fields every save replaces the
        same file (atomically: the old file stays whole until the new one is complete).
    monitor : str
        The metric ``save_best_only`` compares.
    save_best_only : bool
        Save only when ``monitor`` improves on the best seen in this fit.
    mode : {"auto", "min", "max"}
        As for :class:`EarlyStopping`.
    save_optimizer : bool
        Include the optimizer, so ``fastnn.load_optimizer`` can resume training.

    Attributes
    ----------
    saved : list of str, the files written, in order (on rank 0 of a distributed fit, which
    alone saves)
    """

    root_only = True

    def __init__(
        self, path, monitor="val_loss", save_best_only=False, mode="auto", save_optimizer=True
    ):
        self.path = os.fspath(path)
        self._monitor = _Monitor(monitor, mode)
        self.monitor, self.mode = monitor, self._monitor.mode
        self.save_best_only = bool(save_best_only)
        self.save_optimizer = bool(save_optimizer)
        self.saved = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._monitor.reset()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> bool | None:
        logs = logs or {}
        if self.save_best_only:
            value = self._monitor.value(logs, "ModelCheckpoint")
            if value is None or not self._monitor.improved(value):
                return False
            self._monitor.best = value
        try:
            path = self.path.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"ModelCheckpoint: cannot format path {self.path!r} with epoch and "
                f"{sorted(logs)}: {exc!r}"
            ) from None
        save(path, self.model, self.optimizer if self.save_optimizer else None)
        self.saved.append(path)
        return False


class CSVLogger(Callback):
    """Write one row per epoch, with every metric in the logs, to a CSV file.

    The header (``epoch`` then the metric names) comes from the first epoch's logs; a metric
    missing in a later epoch leaves its cell empty.  Each row is appended and flushed at once,
    so the file is readable while training runs and complete after a crash or Ctrl-C.

    Parameters
    ----------
    path : str or os.PathLike
    separator : str
    append : bool
        Continue an existing file (for a resumed fit) instead of starting a new one.
    """

    root_only = True  # one file, written by rank 0 of a distributed fit

    def __init__(
        self, path: str | os.PathLike[str], separator: str = ",", append: bool = False
    ) -> None:
        self.path = os.fspath(path)
        self.separator = separator
        self.append = bool(append)
        self._columns: list[str] | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._columns = None
        if self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            with open(self.path, newline="") as f:
                header = next(csv.reader(f, delimiter=self.separator), None)
            self._columns = header[1:] if header else None
        else:
            with open(self.path, "w", newline=""):
                pass  # start a fresh file

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> bool | None:
        logs = logs or {}
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f, delimiter=self.separator)
            if self._columns is None:
                self._columns = list(logs)
                writer.writerow(["epoch", *self._columns])
            writer.writerow([epoch, *(_cell(logs.get(k)) for k in self._columns)])
        return False


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return value


class LambdaCallback(Callback):
    """A callback from plain functions, for one-off hooks.

    >>> LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs["loss"]))
    """

    def __init__(
        self,
        on_train_begin=None,
        on_train_end=None,
        on_epoch_begin=None,
        on_epoch_end=None,
        on_batch_end=None,
    ):
        hooks = {
            "on_train_begin": on_train_begin,
            "on_train_end": on_train_end,
            "on_epoch_begin": on_epoch_begin,
            "on_epoch_end": on_epoch_end,
            "on_batch_end": on_batch_end,
        }
        for name, fn in hooks.items():
            if fn is not None:
                if not callable(fn):
                    raise TypeError(f"{name} must be callable, got {fn!r}")
                setattr(self, name, fn)  # instance attribute: fit sees the override


__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "CSVLogger", "LambdaCallback"]
