"""Tutorial 2: regression with the squared L2 loss, and the backpropagation identity checked.

What this script teaches
------------------------
* A network with *one* activation everywhere, the output layer included (here tanh on every
  layer, so the targets must lie in (-1, 1)), trained on a regression task with the squared L2
  loss.  ``MSELoss`` is that loss divided by the number of elements (n_samples * n_outputs): the
  same minimum, the gradient scaled by a constant.
* Backpropagation's central identity.  Write z_l = a_{l-1} W_l + b_l for layer l.  Since b_l is
  added to z_l unchanged, dL/db_l = dL/dz_l, and since W_l multiplies a_{l-1},

      dL/dW_l = a_{l-1}^T  dL/db_l            (one sample: an outer product)

  For a batch the per-sample terms add up: dW_l = A_{l-1}^T dZ_l while db_l = the column sums of
  dZ_l.  The script checks both on the trained network against the gradients fastnn's backward
  produces, computing a_{l-1} with plain NumPy, and checks the gradients themselves against
  central finite differences of the loss.  It prints the largest error of each check.
"""

import argparse
import os

import numpy as np

import fastnn as fnn


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=100, help="training epochs (default 100)")
    p.add_argument("--out", default=".", help="folder for the PNG plot (default: here)")
    p.add_argument("--quick", action="store_true", help="10 epochs on 500 samples")
    return p.parse_args()


def make_data(n, seed=0):
    """Three inputs in [-2, 2] and one smooth target in (-1, 1), float64."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2.0, 2.0, size=(n, 3))
    y = 0.8 * np.sin(X[:, 0]) * np.cos(0.5 * X[:, 1]) + 0.1 * X[:, 2]
    return X, y[:, None] / 1.25  # |y| <= 0.9: inside tanh's range


def numpy_forward(model, X):
    """Activations a_0 = X, a_1, ..., a_L of the model, computed with NumPy from its weights."""
    linears = [layer for layer in model.layers if isinstance(layer, fnn.Linear)]
    activations = [X]
    for linear in linears:
        activations.append(np.tanh(activations[-1] @ linear.weight.data + linear.bias.data))
    return linears, activations


def fastnn_gradients(model, X, Y):
    """(dW_l, db_l) for every Linear, from fastnn's backward (copied out of its buffers)."""
    loss = fnn.MSELoss()
    model.zero_grad()
    loss.forward(model.forward(X), Y)
    model.backward(loss.backward())
    linears = [layer for layer in model.layers if isinstance(layer, fnn.Linear)]
    return [(lin.weight.grad.copy(), lin.bias.grad.copy()) for lin in linears]


def check_identity(model, X, Y):
    """Largest error of dW = a_prev^T db (one sample) and of dW = A_prev^T dZ (a batch)."""
    # One sample: dW_l must be the outer product of a_{l-1} and db_l.
    _, acts = numpy_forward(model, X[:1])
    grads = fastnn_gradients(model, X[:1], Y[:1])
    one = max(np.max(np.abs(dW - np.outer(acts[l], db))) for l, (dW, db) in enumerate(grads))

    # A batch: dZ_l = dL/dz_l is computed here with NumPy (the tutorial's deltas), from the
    # output back; then dW_l = A_{l-1}^T dZ_l and db_l = sum of the rows of dZ_l.
    linears, acts = numpy_forward(model, X)
    grads = fastnn_gradients(model, X, Y)
    dA = 2.0 * (acts[-1] - Y) / Y.size  # derivative of MSELoss = mean((A - Y)^2)
    batch = 0.0
    for l in range(len(linears) - 1, -1, -1):
        dZ = dA * (1.0 - acts[l + 1] ** 2)  # tanh'(z) = 1 - tanh(z)^2
        dW, db = grads[l]
        batch = max(batch, np.max(np.abs(dW - acts[l].T @ dZ)), np.max(np.abs(db - dZ.sum(0))))
        dA = dZ @ linears[l].weight.data.T
    return one, batch


def check_finite_differences(model, X, Y, h=1e-6):
    """Largest |fastnn gradient - central difference (L(w + h) - L(w - h)) / 2h| of the loss."""
    loss = fnn.MSELoss()
    grads = fastnn_gradients(model, X, Y)
    worst = 0.0
    linears = [layer for layer in model.layers if isinstance(layer, fnn.Linear)]
    for (dW, db), linear in zip(grads, linears, strict=True):
        for param, analytic in ((linear.weight, dW), (linear.bias, db)):
            flat = param.data.reshape(-1)  # a view: writing into it changes the model
            for i in range(flat.size):
                saved = flat[i]
                flat[i] = saved + h
                up = loss.forward(model.predict(X), Y)
                flat[i] = saved - h
                down = loss.forward(model.predict(X), Y)
                flat[i] = saved
                worst = max(worst, abs(analytic.reshape(-1)[i] - (up - down) / (2 * h)))
    return worst


def main():
    args = parse_args()
    n, epochs = (500, 10) if args.quick else (4000, args.epochs)
    X, Y = make_data(n)
    split = n * 3 // 4  # the first 3/4 to train on, the rest to test on
    X_train, Y_train, X_test, Y_test = X[:split], Y[:split], X[split:], Y[split:]

    # 3-16-16-1 with tanh after every Linear, the output included; float64 so the numerical
    # checks below can be tight.
    dtype = np.float64
    model = fnn.Sequential(
        fnn.Linear(3, 16, init="glorot", dtype=dtype, seed=0),
        fnn.Tanh(),
        fnn.Linear(16, 16, init="glorot", dtype=dtype, seed=1),
        fnn.Tanh(),
        fnn.Linear(16, 1, init="glorot", dtype=dtype, seed=2),
        fnn.Tanh(),
    )
    loss = fnn.MSELoss()
    optimizer = fnn.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = model.fit(
        X_train,
        Y_train,
        loss=loss,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=32,
        seed=0,
        validation_data=(X_test, Y_test),
        verbose=0,
    )
    every = max(1, epochs // 10)
    for epoch in range(0, epochs, every):
        print(
            f"epoch {epoch + 1:>3}/{epochs}: train MSE = {history['loss'][epoch]:.5f}, "
            f"test MSE = {history['val_loss'][epoch]:.5f}"
        )
    print(f"final test MSE: {history['val_loss'][-1]:.5f} (target variance {Y_test.var():.5f})")

    one, batch = check_identity(model, X_test[:32], Y_test[:32])
    print(f"max error of dL/dW = a_prev^T dL/db on one sample: {one:.2e}")
    print(f"max error of dW = A_prev^T dZ, db = sum(dZ) on a batch of 32: {batch:.2e}")
    fd = check_finite_differences(model, X_test[:8], Y_test[:8])
    print(f"max error of the gradients against central finite differences: {fd:.2e}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7.5, 5), dpi=80)
    epochs_axis = np.arange(1, epochs + 1)
    ax1.semilogy(epochs_axis, history["loss"], label="train")
    ax1.semilogy(epochs_axis, history["val_loss"], label="test")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("MSE")
    ax1.legend()
    ax1.set_title("loss")
    pred = model.predict(X_test)
    ax2.scatter(Y_test[:, 0], pred[:, 0], s=4, alpha=0.5)
    ax2.plot([-0.8, 0.8], [-0.8, 0.8], color="k", lw=1)
    ax2.set_xlabel("target")
    ax2.set_ylabel("prediction")
    ax2.set_title("test set")
    fig.suptitle("Tutorial 2: tanh everywhere, squared L2 loss")
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "tutorial2_regression.png")
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
