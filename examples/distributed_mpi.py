"""Data-parallel training over MPI on a memory-mapped file: 1 process against 2 ranks.

What this script teaches
------------------------
* ``model.fit(X, y, ..., distributed="mpi")`` under ``mpiexec -n N``: every rank runs the same
  script with the same arguments; ``batch_size`` is the global batch, each rank computes the
  gradient of its share of every batch, and one ``Allreduce`` per step sums the shares.  The
  parameters after the fit equal a single-process fit's up to rounding, on every rank.
* Each rank opens the same ``.npy`` file with ``np.load(path, mmap_mode="r")``: a rank reads
  only the rows of its shares (and checks only its part of the file for NaN and inf).
* ``fastnn.distributed.is_root()``: print and save on rank 0 only.  Rank 0's initial
  parameters are broadcast, so every rank starts from the same model whatever its seed.

Run it::

    python examples/distributed_mpi.py          # writes the data, trains on 1 process, then
                                                # starts `mpiexec -n 2` on itself; plots both
    mpiexec -n 2 python examples/distributed_mpi.py --data-dir data   # just the 2-rank fit
    python examples/distributed_mpi.py --quick  # a small file, 2 epochs (what the tests run)

Needs ``pip install "fastnn[mpi]"`` (mpi4py and the mpich wheel, which brings ``mpiexec``).
The plot, ``distributed_mpi_loss.png``, shows the loss per epoch of both runs: the curves lie on
top of each other.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import fastnn as fnn
from fastnn import distributed


def train(folder, epochs, quiet=False):
    """Train on the files in ``folder``; on every rank of an MPI launch, or in one process.
    Returns (History, parameters, seconds)."""
    X = np.load(os.path.join(folder, "train.npy"), mmap_mode="r")
    y = np.load(os.path.join(folder, "train_labels.npy"))
    model = fnn.Sequential(
        fnn.Linear(X.shape[1], 64, seed=distributed.rank()),  # rank 0's values are used
        fnn.ReLU(),
        fnn.Linear(64, 10, seed=100 + distributed.rank()),
    )
    history = model.fit(
        X,
        y,
        loss=fnn.SoftmaxCrossEntropy(),
        optimizer=fnn.Adam(model.parameters(), lr=1e-3),
        epochs=epochs,
        batch_size=256,  # the global batch: 128 rows per rank with 2 ranks
        seed=0,
        validation_split=0.05,
        verbose=0 if quiet else 2,
        distributed="mpi",
    )
    # the epochs' own time, without any one-off kernel compilation (see samples_per_second)
    n_train = int(X.shape[0] * (1 - 0.05))
    seconds = sum(n_train / rate for rate in history.history["samples_per_second"])
    params = model._flat.data.copy()
    del X
    return history, params, seconds


def rank_main(args):
    """The body each rank runs under mpiexec."""
    history, params, seconds = train(args.data_dir, args.epochs, quiet=args.result is not None)
    if distributed.is_root():
        print(f"{distributed.size()} ranks: {args.epochs} epochs in {seconds:.1f} s")
        if args.result:
            np.save(args.result + ".npy", params)
            with open(args.result + ".json", "w") as f:
                json.dump({k: v for k, v in history.history.items()}, f)


def driver_main(args):
    """Write the data, train in this process, then on 2 ranks with mpiexec; compare, plot."""
    n_samples = 6_000 if args.quick else 60_000
    tmp = None if args.data_dir else tempfile.TemporaryDirectory(prefix="fastnn_mpi_")
    folder = args.data_dir or tmp.name
    os.makedirs(folder, exist_ok=True)
    try:
        X_path, _ = fnn.datasets.make_memmap_dataset(
            os.path.join(folder, "train.npy"), n_samples, 64, n_classes=10, noise=3.0, seed=0
        )
        print(f"wrote {X_path}: {n_samples:,} x 64 float32")

        history1, params1, seconds1 = train(folder, args.epochs, quiet=True)
        print(f"1 process: {args.epochs} epochs in {seconds1:.1f} s")

        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        if not os.path.exists(mpiexec):
            mpiexec = shutil.which("mpiexec")
        if mpiexec is None:
            sys.exit('no mpiexec found: pip install "fastnn[mpi]"')
        result = os.path.join(folder, "two_ranks")
        cmd = [mpiexec, "-n", "2", sys.executable, os.path.abspath(__file__)]
        cmd += ["--data-dir", folder, "--epochs", str(args.epochs), "--result", result]
        subprocess.run(cmd, check=True)
        params2 = np.load(result + ".npy")
        with open(result + ".json") as f:
            history2 = json.load(f)

        diff = np.max(np.abs(params2 - params1)) / np.max(np.abs(params1))
        print(f"largest parameter difference, 2 ranks vs 1 process (relative): {diff:.2e}")
        for name, h in (("1 process", history1.history), ("2 ranks  ", history2)):
            losses = ", ".join(f"{v:.4f}" for v in h["loss"])
            print(f"{name}: loss per epoch {losses}; val_accuracy {h['val_accuracy'][-1]:.4f}")

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=80)
        epochs = np.arange(1, args.epochs + 1)
        ax.plot(epochs, history1.history["loss"], "o-", lw=3, alpha=0.5, label="1 process")
        ax.plot(epochs, history2["loss"], "x--", color="k", label="2 ranks (mpiexec -n 2)")
        ax.set_xticks(epochs)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.set_title("distributed='mpi': the same fit on 1 process and on 2 ranks")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "distributed_mpi_loss.png")
        fig.savefig(path)
        plt.close(fig)
        print(f"wrote {path}")
    finally:
        if tmp is not None:
            tmp.cleanup()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=None, help="default: 5, 2 with --quick")
    p.add_argument("--data-dir", help="folder of the data files (default: temporary)")
    p.add_argument("--out", default=".", help="folder for the PNG plot (default: here)")
    p.add_argument("--quick", action="store_true", help="a small file and 2 epochs")
    p.add_argument("--result", help=argparse.SUPPRESS)  # set by the driver for its ranks
    args = p.parse_args()
    args.epochs = args.epochs or (2 if args.quick else 5)
    if distributed.size() > 1:
        if not args.data_dir:
            sys.exit("under mpiexec, pass --data-dir (a folder every rank can read)")
        rank_main(args)
    else:
        driver_main(args)


if __name__ == "__main__":
    main()
