"""Training on a data set larger than memory, straight from a memory-mapped ``.npy`` file.

What this script teaches
------------------------
* ``fastnn.datasets.make_memmap_dataset`` writes a synthetic classification set to disk block
  by block (a few 16 MB blocks in memory whatever the file size).  Your own data can be written
  the same way with ``np.lib.format.open_memmap(path, mode="w+", dtype=..., shape=...)`` and
  filled chunk by chunk.
* ``np.load(path, mmap_mode="r")`` opens the file without reading it.  ``Sequential.fit`` takes
  that memory map as it is: it checks it for NaN and inf chunk by chunk, then gathers and
  converts only the rows of each mini-batch, so the file is never loaded or copied whole.
  ``validation_split`` holds out the last rows, also without a copy.
* How to read the memory figures.  The resident set (RSS) of the process has two parts: memory
  the process allocated itself (anonymous: the model, the batch buffers, the labels), and pages
  of the file that the operating system has mapped in while reading it (file-backed).  The file
  pages are page cache: when memory runs short the kernel drops them and reads them again on
  the next touch, so they do not limit the size of a data set.  The script samples both parts
  while it trains, prints their peaks next to the file size and plots them over time
  (``fit_memmap_memory.png``).  Anonymous memory stays near its start whatever the file size.

Run it::

    python examples/fit_memmap.py                  # a 0.1 GB file, 2 epochs
    python examples/fit_memmap.py --gigabytes 1.5  # a 1.5 GB file, 1 epoch
    python examples/fit_memmap.py --quick          # 10 MB, 1 epoch (what the tests run)

The file goes to a temporary folder that is removed at the end (``--data-dir`` to choose the
folder and keep the files).
"""

import argparse
import os
import tempfile
import threading
import time

import numpy as np

import fastnn as fnn


def anonymous_mb():
    """Memory this process allocated itself (RssAnon, from /proc: Linux), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def mapped_file_mb(path):
    """Resident pages of the mappings of the file ``path`` in this process, in MB.

    /proc/self/smaps lists every mapping (a header line that starts with its hex address range
    and ends with the file name) followed by its counters, ``Rss:`` among them.
    """
    total_kb, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            if line[0] in "0123456789abcdef":
                inside = line.rstrip().endswith(path)
            elif inside and line.startswith("Rss:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


class MemorySampler(threading.Thread):
    """Samples (seconds, anonymous MB, data-file MB) every ``interval`` seconds until stopped."""

    def __init__(self, path, interval=0.1):
        super().__init__(daemon=True)
        self.path, self.interval = path, interval
        self.samples = []
        self._stop_event = threading.Event()
        self._t0 = time.perf_counter()

    def sample(self):
        t = time.perf_counter() - self._t0
        self.samples.append((t, anonymous_mb(), mapped_file_mb(self.path)))

    def run(self):
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join()
        self.sample()
        return np.array(self.samples)


def peak_rss_mb():
    """Peak resident set of the process so far (VmHWM), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gigabytes", type=float, default=0.1, help="file size in GB (default 0.1)")
    p.add_argument("--features", type=int, default=256, help="features per sample (default 256)")
    p.add_argument("--epochs", type=int, default=None, help="default: 2, or 1 above 1 GB")
    p.add_argument("--data-dir", help="keep the data files in this folder (default: temporary)")
    p.add_argument("--out", default=".", help="folder for the PNG plot (default: here)")
    p.add_argument("--quick", action="store_true", help="a 10 MB file and one epoch")
    args = p.parse_args()
    gigabytes = 0.01 if args.quick else args.gigabytes
    epochs = args.epochs or (1 if args.quick or gigabytes > 1 else 2)
    n_features = args.features
    n_samples = max(1000, int(gigabytes * 1e9) // (4 * n_features))  # float32: 4 bytes a value

    tmp = None if args.data_dir else tempfile.TemporaryDirectory(prefix="fastnn_memmap_")
    folder = args.data_dir or tmp.name
    os.makedirs(folder, exist_ok=True)
    try:
        # -- 1. write the data set to disk, block by block ------------------------------------
        t0 = time.perf_counter()
        X_path, y_path = fnn.datasets.make_memmap_dataset(
            os.path.join(folder, "train.npy"),
            n_samples,
            n_features,
            n_classes=10,
            noise=4.0,  # overlapping classes: the accuracy has room to grow
            seed=0,
        )
        size_mb = os.path.getsize(X_path) / 1e6
        print(
            f"wrote {X_path}: {n_samples:,} x {n_features} float32, {size_mb:,.0f} MB "
            f"in {time.perf_counter() - t0:.1f} s"
        )

        # -- 2. open it as a memory map: nothing is read yet ----------------------------------
        X = np.load(X_path, mmap_mode="r")
        y = np.load(y_path)  # labels: 8 bytes per sample, kept in memory
        print(f"opened as {type(X).__name__} of shape {X.shape}, dtype {X.dtype}")

        # -- 3. train on it --------------------------------------------------------------------
        model = fnn.Sequential(
            fnn.Linear(n_features, 128, seed=0), fnn.ReLU(), fnn.Linear(128, 10, seed=1)
        )
        optimizer = fnn.Adam(model.parameters(), lr=1e-3)
        sampler = MemorySampler(os.path.realpath(X_path))
        anon_start = anonymous_mb()
        sampler.start()
        t0 = time.perf_counter()
        history = model.fit(
            X,
            y,
            loss=fnn.SoftmaxCrossEntropy(),
            optimizer=optimizer,
            epochs=epochs,
            batch_size=256,
            seed=0,
            validation_split=0.05,  # the last 5% of the rows, another view of the file
            verbose=2,
        )
        seconds = time.perf_counter() - t0
        samples = sampler.stop()
        rate = n_samples * 0.95 * epochs / seconds
        print(f"trained {epochs} epoch(s) in {seconds:.1f} s ({rate:,.0f} samples/s)")
        print(f"validation accuracy: {history['val_accuracy'][-1]:.4f}")

        # -- 4. memory ------------------------------------------------------------------------
        anon_peak, file_peak = samples[:, 1].max(), samples[:, 2].max()
        print(f"file size: {size_mb:,.0f} MB")
        print(f"peak RSS of the process (VmHWM): {peak_rss_mb():,.0f} MB")
        print(
            f"during fit: anonymous memory peak {anon_peak:,.0f} MB (started at "
            f"{anon_start:,.0f} MB); pages of the data file resident, peak {file_peak:,.0f} MB"
        )

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.5, 5), dpi=80)
        ax.plot(samples[:, 0], samples[:, 1], label="anonymous (allocated by the process)")
        ax.plot(samples[:, 0], samples[:, 2], label="pages of the data file (page cache)")
        ax.axhline(size_mb, color="k", ls="--", lw=1, label=f"file size ({size_mb:,.0f} MB)")
        ax.set_xlabel("seconds into fit")
        ax.set_ylabel("resident memory (MB)")
        ax.set_title(f"fit on a memory-mapped {size_mb:,.0f} MB file")
        ax.set_ylim(0, 1.15 * max(size_mb, samples[:, 1:].max()))
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "fit_memmap_memory.png")
        fig.savefig(path)
        plt.close(fig)
        print(f"wrote {path}")
        del X  # close the map before the folder is removed
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
