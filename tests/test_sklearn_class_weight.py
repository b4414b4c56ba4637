"""MLPClassifier(class_weight=...): a fastnn extension with scikit-learn's meaning.

The reference for the weights is scikit-learn itself: ``compute_class_weight`` /
``compute_sample_weight`` give each sample's class weight, and ``LogisticRegression`` shows
how a scikit-learn estimator combines them with ``sample_weight``.  A fit with
``class_weight`` must equal the same fit given those products as ``sample_weight``.
"""

import numpy as np
import pytest
from conftest import quiet
from sklearn.datasets import load_iris, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import recall_score
from sklearn.preprocessing import LabelEncoder, StandardScaler
from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight

from fastnn.sklearn import MLPClassifier


@pytest.fixture(scope="module")
def data():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    keep = np.r_[0:50, 50:70, 100:150]  # imbalanced: 50 / 20 / 50
    labels = np.array(["setosa", "versicolor", "virginica"])
    rng = np.random.default_rng(0)
    return X[keep], labels[y[keep]], rng.uniform(0.2, 3.0, keep.size)


def _reference_weights(class_weight, y, sw):
    """LogisticRegression's rule, from scikit-learn's own functions."""
    classes = np.unique(y)
    per_class = compute_class_weight(class_weight, classes=classes, y=y, sample_weight=sw)
    base = np.ones(y.size) if sw is None else sw
    return base * per_class[LabelEncoder().fit(classes).transform(y)]


def _assert_same_fit(a, b):
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)


WEIGHTS = [
    {"setosa": 1.0, "versicolor": 4.0, "virginica": 0.5},
    {"versicolor": 3},  # the others weigh 1
    "balanced",
]


@pytest.mark.parametrize("class_weight", WEIGHTS, ids=["dict", "partial-dict", "balanced"])
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
@pytest.mark.parametrize("with_sw", [False, True], ids=["no-sw", "sw"])
def test_equals_sample_weight_reference(class_weight, solver, with_sw, data):
    X, y, sw = data
    sw = sw if with_sw else None
    kw = dict(hidden_layer_sizes=(6,), solver=solver, max_iter=8, random_state=0)
    with quiet():
        ours = MLPClassifier(class_weight=class_weight, **kw).fit(X, y, sample_weight=sw)
        ref = MLPClassifier(**kw).fit(X, y, sample_weight=_reference_weights(class_weight, y, sw))
    _assert_same_fit(ours, ref)
    # and the reference rule is LogisticRegression's own combination
    lr_ours = LogisticRegression(class_weight=class_weight).fit(X, y, sample_weight=sw)
    lr_ref = LogisticRegression().fit(X, y, sample_weight=_reference_weights(class_weight, y, sw))
    np.testing.assert_allclose(lr_ours.coef_, lr_ref.coef_, rtol=1e-6, atol=1e-8)


def test_binary_and_float32(data):
    X, y, sw = data
    yb = y == "versicolor"
    X32 = X.astype(np.float32)
    kw = dict(hidden_layer_sizes=(5,), max_iter=6, random_state=1)
    with quiet():
        ours = MLPClassifier(class_weight="balanced", **kw).fit(X32, yb, sample_weight=sw)
        ref = MLPClassifier(**kw).fit(
            X32, yb, sample_weight=_reference_weights("balanced", yb, sw).astype(np.float32)
        )
    assert ours.coefs_[0].dtype == np.float32
    _assert_same_fit(ours, ref)


def test_multilabel_uses_compute_sample_weight(data):
    X, y, _ = data
    Y = np.column_stack([y == "setosa", y == "virginica", X[:, 0] > 0.5]).astype(int)
    kw = dict(hidden_layer_sizes=(5,), max_iter=6, random_state=0, solver="sgd")
    for cw in ("balanced", [{0: 1, 1: 2}, {0: 1, 1: 1}, {0: 0.5, 1: 3}]):
        with quiet():
            ours = MLPClassifier(class_weight=cw, **kw).fit(X, Y)
            ref = MLPClassifier(**kw).fit(X, Y, sample_weight=compute_sample_weight(cw, Y))
        _assert_same_fit(ours, ref)


def test_partial_fit_with_dict(data):
    X, y, _ = data
    cw = {"setosa": 2.0, "versicolor": 5.0, "virginica": 1.0}
    classes = np.unique(y)
    ours = MLPClassifier(class_weight=cw, random_state=0)
    ref = MLPClassifier(random_state=0)
    for part in np.array_split(np.random.default_rng(1).permutation(y.size), 3):
        ours.partial_fit(X[part], y[part], classes=classes)
        weights = np.array([cw[label] for label in y[part]])
        ref.partial_fit(X[part], y[part], classes=classes, sample_weight=weights)
    _assert_same_fit(ours, ref)


def test_balanced_helps_the_minority_class():
    X, y = make_classification(
        n_samples=600, n_features=8, weights=[0.93], flip_y=0.02, random_state=0
    )
    kw = dict(hidden_layer_sizes=(10,), max_iter=60, random_state=0, learning_rate_init=0.01)
    with quiet():
        plain = MLPClassifier(**kw).fit(X, y)
        balanced = MLPClassifier(class_weight="balanced", **kw).fit(X, y)
    assert recall_score(y, balanced.predict(X)) > recall_score(y, plain.predict(X))


def test_early_stopping_scores_with_sample_weight_only(data):
    X, y, sw = data
    kw = dict(hidden_layer_sizes=(6,), max_iter=5, random_state=0, early_stopping=True)
    with quiet():
        a = MLPClassifier(class_weight={"versicolor": 4.0}, **kw).fit(X, y, sample_weight=sw)
    assert len(a.validation_scores_) == a.n_iter_
    assert all(0 <= s <= 1 for s in a.validation_scores_)


BAD = [
    ({"setosa": 1.0, "rose": 2.0}, ValueError, "not classes"),
    ({"setosa": -1.0}, ValueError, "class_weight\\['setosa'\\]"),
    ({"setosa": np.nan}, ValueError, "finite"),
    ({"setosa": "heavy"}, TypeError, "class_weight\\['setosa'\\]"),
    ([{"setosa": 1.0}], ValueError, "multilabel"),
    ("heavier", ValueError, "class_weight"),
    ({"setosa": 0.0, "versicolor": 0.0, "virginica": 0.0}, ValueError, "class_weight"),
]


@pytest.mark.parametrize("class_weight, error, match", BAD)
def test_bad_class_weight_raises_before_fitting(class_weight, error, match, data):
    X, y, _ = data
    clf = MLPClassifier(class_weight=class_weight, max_iter=2)
    with pytest.raises(error, match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "coefs_")


def test_balanced_partial_fit_raises(data):
    X, y, _ = data
    clf = MLPClassifier(class_weight="balanced")
    with pytest.raises(ValueError, match="class_weight 'balanced' is not supported"):
        clf.partial_fit(X, y, classes=np.unique(y))
    assert not hasattr(clf, "classes_")


def test_multilabel_dict_must_be_a_list(data):
    X, y, _ = data
    Y = np.column_stack([y == "setosa", y == "virginica"]).astype(int)
    with pytest.raises(ValueError, match="list of dicts"):
        MLPClassifier(class_weight={0: 1, 1: 2}).fit(X, Y)
    with pytest.raises(ValueError, match="1 dicts for 2 label columns"):
        MLPClassifier(class_weight=[{0: 1, 1: 2}]).fit(X, Y)
