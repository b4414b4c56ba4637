"""fit on memory-mapped data: same result as in memory, checked in chunks, and memory that grows
by a few batches' worth rather than by the file's size."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn as fnn
from fastnn.datasets import make_memmap_dataset


def make(n_in, n_out):
    model = fnn.Sequential(fnn.Linear(n_in, 16, seed=0), fnn.ReLU(), fnn.Linear(16, n_out, seed=1))
    return model, fnn.SGD(model.parameters(), lr=0.05, momentum=0.9)


def fit(model, opt, X, y, **kw):
    return model.fit(
        X,
        y,
        loss=fnn.SoftmaxCrossEntropy(),
        optimizer=opt,
        epochs=2,
        batch_size=32,
        seed=3,
        verbose=0,
        **kw,
    )


@pytest.mark.parametrize("file_dtype", [np.float32, np.float64])
def test_memmap_fit_equals_in_memory_fit(tmp_path, file_dtype):
    xp, yp = make_memmap_dataset(tmp_path / "x.npy", 301, 7, n_classes=3, dtype=file_dtype)
    X = np.load(xp, mmap_mode="r")
    y = np.load(yp)
    m1, o1 = make(7, 3)
    h1 = fit(m1, o1, X, y, validation_split=0.2)
    m2, o2 = make(7, 3)
    X_mem = np.asarray(X, dtype=np.float32)  # what fit would convert to in memory
    h2 = fit(m2, o2, X_mem, y, validation_split=0.2)
    # Same batches and values; the two may run on different paths (the compiled fast path takes
    # in-memory data of the model's dtype), which round differently in the last bit.
    np.testing.assert_allclose(m1._flat.data, m2._flat.data, rtol=1e-5, atol=1e-6)
    assert h1.history["val_loss"] == pytest.approx(h2.history["val_loss"], rel=1e-5)
    assert isinstance(X, np.memmap) and X.dtype == file_dtype  # the caller's array untouched


def test_memmap_validation_in_chunks(tmp_path, monkeypatch):
    path = tmp_path / "bad.npy"
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(50, 3))
    X[:] = 1.0
    X[37, 2] = np.nan
    X.flush()
    del X
    from fastnn import training

    monkeypatch.setattr(training, "_CHUNK_BYTES", 10 * 3 * 8, raising=False)
    Xm = np.load(path, mmap_mode="r")
    model, opt = make(3, 2)
    with pytest.raises(ValueError, match=r"X contains NaN or inf \(in rows 30\.\.39\)"):
        fit(model, opt, Xm, np.zeros(50, np.int64))
    with pytest.raises(ValueError, match="validation_data.0. contains NaN"):
        fit(model, opt, np.ones((4, 3)), np.zeros(4, np.int64), validation_data=(Xm, np.zeros(50)))
    with pytest.raises(ValueError, match="features per sample"):
        fit(*make(4, 2), Xm, np.zeros(50, np.int64))


PROBE = textwrap.dedent(
    """
    import json, sys, threading, time, tracemalloc
    import numpy as np
    import fastnn as fnn

    def kb(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])

    xp, yp, epochs, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    X = np.load(xp, mmap_mode="r")
    y = np.load(yp)
    model = fnn.Sequential(fnn.Linear(X.shape[1], 32, seed=0), fnn.ReLU(),
                           fnn.Linear(32, int(y.max()) + 1, seed=1))
    opt = fnn.SGD(model.parameters(), lr=0.01, momentum=0.9)
    kw = dict(loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, batch_size=batch, verbose=0, seed=0)
    model.fit(X[:2048], y[:2048], epochs=1, **kw)  # compile the memmap path on a small slice
    del X
    X = np.load(xp, mmap_mode="r")
    base_anon, base_hwm = kb("RssAnon"), kb("VmHWM")
    peak = [base_anon]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], kb("RssAnon"))
            time.sleep(0.002)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    if "--tracemalloc" in sys.argv:
        tracemalloc.start()
    t0 = time.perf_counter()
    h = model.fit(X, y, epochs=epochs, **kw)
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1] if tracemalloc.is_tracing() else None
    stop.set()
    t.join()
    peak[0] = max(peak[0], kb("RssAnon"))
    print(json.dumps({
        "file_mb": X.nbytes / 2**20, "n": X.shape[0], "traced_peak_mb": traced and traced / 2**20,
        "anon_growth_mb": (peak[0] - base_anon) / 1024,
        "hwm_growth_mb": (kb("VmHWM") - base_hwm) / 1024,
        "rss_file_mb": kb("RssFile") / 1024, "seconds": seconds, "loss": h.history["loss"],
        "accuracy": h.history["accuracy"],
    }))
    """
)


def test_memmap_fit_memory_stays_far_below_file_size(tmp_path):
    # ~64 MB of float64 on disk for a float32 model: every batch is converted inside the gather.
    xp, yp = make_memmap_dataset(tmp_path / "big.npy", 262_144, 32, dtype=np.float64, noise=2.0)
    file_mb = os.path.getsize(xp) / 2**20
    out = subprocess.run(
        [sys.executable, "-c", PROBE, xp, yp, "1", "256", "--tracemalloc"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["file_mb"] == pytest.approx(file_mb, rel=0.01)
    # What fit allocates: the int64 sample order (2 MB), a scan buffer (4 MB),
    # batch buffers; labels were loaded before. All far below the 64 MB a full copy would take.
    assert r["traced_peak_mb"] < file_mb / 6, r
    assert r["anon_growth_mb"] < file_mb / 4, r
    assert r["accuracy"][0] > 0.5, r  # it trained on the data (10 classes: chance is 0.1)
