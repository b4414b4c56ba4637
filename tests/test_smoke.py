"""End-to-end smoke test: the main job's model learns the bundled digits."""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import fastnn as fnn


def test_digits_mlp_learns():
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-8
    Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    model = fnn.Sequential(fnn.Linear(64, 64, seed=0), fnn.ReLU(), fnn.Linear(64, 10, seed=1))
    opt = fnn.SGD(model.parameters(), lr=0.05, momentum=0.9)
    hist = model.fit(Xtr, ytr, loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, epochs=10,
                     batch_size=32, seed=0, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    acc = np.mean(model.predict(Xte).argmax(1) == yte)
    assert acc >= 0.95
