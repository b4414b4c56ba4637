"""The :class:`Callback` base class: every hook ``fit`` calls, doing nothing.

It lives below the optimizers and the training loop (``optim.schedules`` subclasses it,
``training`` calls it), while the callbacks that save files (``fastnn.callbacks``) sit above
``io``; ``fastnn.callbacks`` re-exports it, which is where users find it.
"""

from typing import Any


class Callback:
    """Base class: every hook does nothing."""

    model: Any = None
    optimizer: Any = None
    #: True for callbacks that write files or logs: in ``fit(distributed="mpi")`` they run on
    #: rank 0 only (ModelCheckpoint, CSVLogger); the others run on every rank
    root_only = False

    def set_context(self, model: Any, optimizer: Any) -> None:
        self.model = model
        self.optimizer = optimizer

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> bool | None:
        """``logs`` holds this epoch's metrics (loss, accuracy, val_loss, ...).  Return True to
        stop training after this epoch."""

    def on_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        pass
