"""The scikit-learn drop-ins on Dask (issue 18): dask-ml's Incremental and ParallelPostFit,
GridSearchCV on joblib's dask backend, on a distributed.LocalCluster of 2 workers with one
thread each; and fastnn's thread budget inside a worker's task.

Skipped only where the ``fastnn[dask]`` extra (dask[array], distributed, dask-ml) is missing.
The cluster runs its workers as threads of this process (``processes=False``): the same
scheduler, worker and task code paths, without two more processes each importing fastnn on the
shared 2-core machine; one test starts worker processes to check the Nanny's environment.
"""

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason='dask not installed (pip install "fastnn[dask]")')
distributed = pytest.importorskip(
    "distributed", reason='distributed not installed (pip install "fastnn[dask]")'
)
dask_ml_wrappers = pytest.importorskip(
    "dask_ml.wrappers", reason='dask-ml not installed (pip install "fastnn[dask]")'
)
joblib = pytest.importorskip("joblib")

import fastnn  # noqa: E402
from fastnn import _threads  # noqa: E402
from fastnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    )
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def _blobs(n=600, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[2.0, 0.0, 0.0, 1.0], [-2.0, 1.0, 0.0, 0.0], [0.0, -2.0, 1.0, -1.0]])
    y = rng.integers(0, 3, n)
    X = centers[y] + 0.5 * rng.standard_normal((n, 4))
    return X, y


def test_incremental_partial_fit_over_blocks(client):
    X, y = _blobs()
    Xd = da.from_array(X, chunks=100)
    yd = da.from_array(y, chunks=100)
    est = MLPClassifier(
        hidden_layer_sizes=(16,), random_state=0, batch_size=50, learning_rate_init=0.02
    )
    inc = dask_ml_wrappers.Incremental(est, scoring="accuracy", shuffle_blocks=False)
    for _ in range(5):
        inc.partial_fit(Xd, yd, classes=[0, 1, 2])
    # unshuffled, Incremental feeds the blocks to partial_fit in order: as done by hand here
    ref = MLPClassifier(
        hidden_layer_sizes=(16,), random_state=0, batch_size=50, learning_rate_init=0.02
    )
    for _ in range(5):
        for start in range(0, 600, 100):
            ref.partial_fit(X[start : start + 100], y[start : start + 100], classes=[0, 1, 2])
    fitted = inc.estimator_
    for a, b in zip(fitted.coefs_, ref.coefs_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert inc.score(Xd, yd) > 0.9


def test_parallel_post_fit_predicts_blockwise(client):
    X, y = _blobs()
    est = MLPRegressor(hidden_layer_sizes=(8,), random_state=0, max_iter=50)
    Y = X @ np.array([1.0, -1.0, 0.5, 2.0])
    wrapped = dask_ml_wrappers.ParallelPostFit(est).fit(X, Y)
    X_big = np.tile(X, (5, 1))
    Xd = da.from_array(X_big, chunks=500)
    pred = wrapped.predict(Xd)
    assert isinstance(pred, da.Array)
    np.testing.assert_allclose(pred.compute(), est.predict(X_big), rtol=1e-6, atol=1e-6)

    clf = dask_ml_wrappers.ParallelPostFit(
        MLPClassifier(hidden_layer_sizes=(8,), random_state=0, max_iter=50)
    ).fit(X, y)
    proba = clf.predict_proba(da.from_array(X, chunks=150)).compute()
    np.testing.assert_allclose(proba, clf.estimator.predict_proba(X), rtol=1e-6, atol=1e-7)


def test_grid_search_on_joblib_dask_backend(client):
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

    X, y = _blobs(300)
    grid = {"alpha": [1e-4, 1e-2], "hidden_layer_sizes": [(4,), (8,)]}
    est = MLPClassifier(random_state=0, max_iter=30, learning_rate_init=0.05)
    search = GridSearchCV(est, grid, cv=2, n_jobs=-1)
    with joblib.parallel_backend("dask"):
        search.fit(X, y)
    local = GridSearchCV(est, grid, cv=2, n_jobs=1).fit(X, y)
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    assert search.best_score_ > 0.8
    rand = RandomizedSearchCV(est, grid, n_iter=2, cv=2, random_state=0, n_jobs=-1)
    with joblib.parallel_backend("dask"):
        rand.fit(X, y)
    assert len(rand.cv_results_["params"]) == 2


def _budget_in_task():
    """What a task sees: fastnn's budget, and the numba threads inside fit's budget."""
    import numba

    inside = []
    with _threads.call_budget():
        inside.append(numba.get_num_threads())
    return _threads.worker_threads(), inside[0], numba.get_num_threads()


def test_thread_budget_in_a_worker(client):
    assert _threads.worker_threads() is None  # not a task
    budget, inside, after = client.submit(_budget_in_task, pure=False).result()
    assert budget is not None and budget >= 1
    if fastnn.get_num_threads() > budget:
        assert inside == budget
    assert after >= inside  # restored on leaving


def test_thread_budget_in_worker_processes():
    """Worker processes started by the Nanny: OMP_NUM_THREADS=1 there, and fastnn follows."""
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        budget, inside, _ = c.submit(_budget_in_task, pure=False).result(timeout=120)
    assert budget == 1 and inside == 1
