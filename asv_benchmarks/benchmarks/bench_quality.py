"""Learning quality next to the timings: test accuracy after a fixed fit, and peak memory.

A speed-up that breaks the maths shows up here as a drop in accuracy, not as a faster number.
The fits are fully seeded (split, initial weights, shuffling) on scikit-learn's bundled data
sets, standardised with the training statistics, so the accuracy only moves when the numerics
do (float32 round-off under a different thread count can move it by a sample or two).
"""

from .common import (
    DTYPES,
    FIT_SAMPLES,
    NETWORKS,
    classification_data,
    make_mlp,
    set_threads,
    standardised_split,
)

#: data set -> (hidden sizes, epochs, batch size, SGD learning rate): small fixed recipes that
#: reach ~97% (digits) and ~95% (iris) test accuracy
RECIPES = {
    "digits": ((128,), 30, 32, 0.05),
    "iris": ((6, 8, 10), 100, 16, 0.05),
}


def _fit_and_score(dataset, dtype):
    import fastnn as fnn

    hidden, epochs, batch, lr = RECIPES[dataset]
    X_train, X_test, y_train, y_test = standardised_split(dataset, dtype, seed=0)
    sizes = (X_train.shape[1], *hidden, int(y_train.max()) + 1)
    model = make_mlp(sizes, dtype, seed=0)
    opt = fnn.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    model.fit(
        X_train,
        y_train,
        loss=fnn.SoftmaxCrossEntropy(),
        optimizer=opt,
        epochs=epochs,
        batch_size=batch,
        seed=0,
        verbose=0,
    )
    pred = model.predict(X_test).argmax(axis=1)
    return float((pred == y_test).mean())


class TestAccuracy:
    """Test accuracy (fraction correct, higher is better) after a fixed, seeded SGD fit."""

    params = (("digits", "iris"), DTYPES)
    param_names = ("dataset", "dtype")
    unit = "accuracy"
    timeout = 300

    def setup(self, dataset, dtype):
        set_threads()

    def track_test_accuracy(self, dataset, dtype):
        return _fit_and_score(dataset, dtype)


class FitMemory:
    """Peak memory of a process that runs a fit of 1 or 10 epochs (784-100-10 @ 64, float32).

    The two figures should be equal: fit allocates its buffers once, so memory must not grow
    with the number of epochs (the data set itself is made in ``setup``, before either).
    """

    params = ((1, 10),)
    param_names = ("epochs",)
    timeout = 300

    def setup(self, epochs):
        import fastnn as fnn

        set_threads()
        network = "784-100-10@64"
        sizes, self.batch = NETWORKS[network]
        self.X, self.y = classification_data(FIT_SAMPLES[network], sizes[0], sizes[-1], "float32")
        self.model = make_mlp(sizes, "float32", seed=0)
        self.loss = fnn.SoftmaxCrossEntropy()
        self.opt = fnn.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        # warm the kernels with a tiny fit so compilation is not part of either figure
        self.model.fit(
            self.X[: 2 * self.batch],
            self.y[: 2 * self.batch],
            loss=self.loss,
            optimizer=self.opt,
            epochs=1,
            batch_size=self.batch,
            verbose=0,
        )

    def peakmem_fit(self, epochs):
        self.model.fit(
            self.X,
            self.y,
            loss=self.loss,
            optimizer=self.opt,
            epochs=epochs,
            batch_size=self.batch,
            seed=0,
            verbose=0,
        )
