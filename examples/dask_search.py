"""A hyper-parameter search of fastnn's scikit-learn drop-in on a Dask cluster.

What this script teaches
------------------------
* ``fastnn.sklearn.MLPClassifier`` is a scikit-learn estimator, so scikit-learn's
  ``GridSearchCV`` runs it unchanged; inside ``joblib.parallel_backend("dask")`` every
  (parameters, fold) fit becomes a task on the Dask cluster.  Here the cluster is a
  ``distributed.LocalCluster`` on this machine (2 worker processes, one thread each); a real
  one (``dask-scheduler`` / ``dask-worker`` on several machines, or dask-jobqueue on Slurm)
  only changes the ``Client(...)`` line.
* Each task runs with its worker's thread budget: fastnn limits numba's and BLAS's threads to
  it inside a worker, so two 1-thread workers on a 2-core machine do not oversubscribe.
* The same scores come out as from a search in this process (``n_jobs=1``).

Run it::

    python examples/dask_search.py           # 12 candidates x 3 folds on digits
    python examples/dask_search.py --quick   # 4 candidates x 2 folds (what the tests run)

Needs ``pip install "fastnn[dask]"``.  Writes ``dask_search_scores.png``: the mean
cross-validated accuracy of each candidate.
"""

import argparse
import os
import time
import warnings

import joblib
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from fastnn.datasets import load_digits
from fastnn.sklearn import MLPClassifier


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=".", help="folder for the PNG plot (default: here)")
    p.add_argument("--quick", action="store_true", help="a small grid and few epochs")
    args = p.parse_args()
    # few epochs on purpose (a quick search); the workers inherit this through the tasks' code
    warnings.filterwarnings("ignore", category=ConvergenceWarning)

    from distributed import Client, LocalCluster

    X, y = load_digits(standardize=True, dtype=np.float64)
    if args.quick:
        grid = {"hidden_layer_sizes": [(16,), (64,)], "alpha": [1e-4, 1e-1]}
        cv, max_iter = 2, 15
    else:
        grid = {
            "hidden_layer_sizes": [(16,), (64,), (128, 64)],
            "alpha": [1e-4, 1e-2],
            "learning_rate_init": [1e-3, 1e-2],
        }
        cv, max_iter = 3, 60
    estimator = MLPClassifier(max_iter=max_iter, random_state=0, early_stopping=False)

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        print(f"cluster: {len(client.scheduler_info()['workers'])} workers x 1 thread")
        search = GridSearchCV(estimator, grid, cv=cv, n_jobs=-1)
        t0 = time.perf_counter()
        with joblib.parallel_backend("dask"):
            search.fit(X, y)
        print(f"grid search on Dask: {len(search.cv_results_['params'])} candidates x {cv} folds "
              f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip

    local = GridSearchCV(estimator, grid, cv=cv, n_jobs=1).fit(X, y)
    same = np.allclose(search.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"])
    print(f"same scores as the search in this process: {same}")
    print(f"best: {search.best_params_} with accuracy {search.best_score_:.4f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = search.cv_results_["mean_test_score"]
    errors = search.cv_results_["std_test_score"]
    params = search.cv_results_["params"]
    labels = [", ".join(f"{k.split('_')[0]}={v}" for k, v in c.items()) for c in params]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.5), dpi=80)
    ax.barh(np.arange(len(labels)), scores, xerr=errors, color="tab:blue", alpha=0.7)
    ax.set_yticks(np.arange(len(labels)), labels, fontsize=8)
    ax.set_xlabel(f"mean accuracy over {cv} folds")
    ax.set_xlim(max(0.0, scores.min() - 0.1), 1.0)
    ax.set_title("GridSearchCV of fastnn.sklearn.MLPClassifier on a Dask LocalCluster")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "dask_search_scores.png")
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
