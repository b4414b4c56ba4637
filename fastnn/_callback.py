"""The :class:`Callback` base class: every hook ``fit`` calls, doing nothing.

It lives below the optimizers and the training loop (``optim.schedules`` subclasses it,
``training`` calls it), while the callbacks that save files (``fastnn.callbacks``) sit above
``io``; ``fastnn.callbacks`` re-exports it, which is where users find it.
"""


class Callback:
    """Base class: every hook does nothing."""

    model = None
    optimizer = None
    #: True for callbacks that write files or logs: in ``fit(distributed="mpi")`` they run on
    #: rank 0 only (ModelCheckpoint, CSVLogger); the others run on every rank
    root_only = False

    def set_context(self, model, optimizer):
        self.model = model
        self.optimizer = optimizer

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        """``logs`` holds this epoch's metrics (loss, accuracy, val_loss, ...).  Return True to
        stop training after this epoch."""

    def on_batch_end(self, batch, logs=None):
        pass
