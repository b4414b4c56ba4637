"""Callbacks: hooks that ``Sequential.fit`` calls around epochs and batches.

A callback subclasses :class:`Callback` and overrides the hooks it needs.  ``fit`` sets
``callback.model`` and ``callback.optimizer`` before training starts.  A callback stops
training by setting ``self.model.stop_training = True`` or by returning True from
``on_epoch_end``.
"""


class Callback:
    """Base class: every hook does nothing."""

    model = None
    optimizer = None

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
