"""fastnn.datasets: bundled iris/digits, IDX (MNIST) files written by the tests, synthetic
memory-mapped data."""

import gzip
import struct

import numpy as np
import pytest

import fastnn as fnn
from fastnn import datasets


@pytest.mark.parametrize(
    ("loader", "shape", "classes"),
    [(datasets.load_iris, (150, 4), 3), (datasets.load_digits, (1797, 64), 10)],
)
def test_bundled_sets(loader, shape, classes):
    X, y = loader()
    assert X.shape == shape and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.shape == (shape[0],) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(classes))
    Xs, _ = loader(standardize=True, dtype=np.float64)
    assert Xs.dtype == np.float64
    np.testing.assert_allclose(Xs.mean(axis=0), 0, atol=1e-10)
    std = Xs.std(axis=0)
    assert np.all((np.abs(std - 1) < 1e-10) | (std == 0))  # constant columns stay 0

    Xtr, Xte, ytr, yte = loader(test_size=0.25, standardize=True, seed=1)
    assert Xtr.shape[0] + Xte.shape[0] == shape[0] and Xte.shape[0] == int(np.ceil(0.25 * shape[0]))
    np.testing.assert_allclose(Xtr.mean(axis=0), 0, atol=1e-5)  # train statistics only
    share = np.bincount(y) / y.size
    np.testing.assert_allclose(np.bincount(yte) / yte.size, share, atol=1.01 / yte.size)
    again = loader(test_size=0.25, standardize=True, seed=1)
    np.testing.assert_array_equal(again[0], Xtr)


def test_iris_trains():
    Xtr, Xte, ytr, yte = datasets.load_iris(standardize=True, test_size=0.3)
    model = fnn.Sequential(fnn.Linear(4, 16, seed=0), fnn.ReLU(), fnn.Linear(16, 3, seed=1))
    opt = fnn.Adam(model.parameters(), lr=0.02)
    model.fit(
        Xtr,
        ytr,
        loss=fnn.SoftmaxCrossEntropy(),
        optimizer=opt,
        epochs=30,
        batch_size=16,
        seed=0,
        verbose=0,
    )
    assert np.mean(model.predict(Xte).argmax(1) == yte) > 0.85


# -- IDX -----------------------------------------------------------------------------------------
def write_idx(path, array, code, gz=False):
    """Reference writer, straight from the format description."""
    big = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    raw = struct.pack(">BBBB", 0, 0, code, array.ndim)
    raw += struct.pack(f">{array.ndim}I", *array.shape) + array.astype(big).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.mark.parametrize(
    ("code", "dtype"),
    [
        (0x08, np.uint8),
        (0x09, np.int8),
        (0x0B, np.int16),
        (0x0C, np.int32),
        (0x0D, np.float32),
        (0x0E, np.float64),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_types_and_gzip(tmp_path, code, dtype, gz):
    rng = np.random.default_rng(code)
    a = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    if code == 0x08:
        a = rng.integers(0, 256, (3, 4, 5)).astype(np.uint8)
    out = datasets.load_idx(write_idx(tmp_path / "f.idx", a, code, gz=gz))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, a)


def test_load_idx_malformed(tmp_path):
    good = write_idx(tmp_path / "good", np.arange(12, dtype=np.uint8).reshape(3, 4), 0x08)
    raw = good.read_bytes()
    cases = {
        "magic": (b"\x01" + raw[1:], "not an IDX file"),
        "type": (raw[:2] + b"\x07" + raw[3:], "unknown IDX type code 0x07"),
        "zero_dims": (raw[:3] + b"\x00", "0 dimensions"),
        "header": (raw[:6], "truncated IDX header"),
        "short": (raw[:-1], r"shape \(3, 4\).*12 bytes of data.*11 bytes"),
        "long": (raw + b"\x00", "13 bytes"),
        "empty": (b"", "not an IDX file"),
        "badgz": (b"\x1f\x8b" + b"junk" * 10, "damaged gzip"),
    }
    for name, (content, match) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=match):
            datasets.load_idx(path)


def fake_mnist(folder, kind, n, gz=True, dot=False, n_labels=None):
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, n if n_labels is None else n_labels).astype(np.uint8)
    sep = "." if dot else "-"
    ext = ".gz" if gz else ""
    write_idx(folder / f"{kind}-images{sep}idx3-ubyte{ext}", images, 0x08, gz=gz)
    write_idx(folder / f"{kind}-labels{sep}idx1-ubyte{ext}", labels, 0x08, gz=gz)
    return images, labels


def test_load_mnist(tmp_path):
    images, labels = fake_mnist(tmp_path, "train", 7)
    t_images, t_labels = fake_mnist(tmp_path, "t10k", 3, gz=False, dot=True)
    X, y = datasets.load_mnist(tmp_path)
    assert X.shape == (7, 784) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(X, images.reshape(7, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)
    X, y = datasets.load_mnist(tmp_path, "t10k", flatten=False, scale=False)
    assert X.shape == (3, 28, 28)
    np.testing.assert_array_equal(X, t_images)
    with pytest.raises(ValueError, match="kind"):
        datasets.load_mnist(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        datasets.load_mnist(tmp_path / "nowhere")


def test_load_mnist_mismatched_files(tmp_path):
    fake_mnist(tmp_path, "train", 5, n_labels=4)
    with pytest.raises(ValueError, match="4 labels but .* 5 images"):
        datasets.load_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((5, 784), np.uint8), 0x08, gz=True)
    with pytest.raises(ValueError, match=r"shape \(n, rows, cols\)"):
        datasets.load_mnist(tmp_path)


# -- synthetic memmap data set -------------------------------------------------------------------
def test_make_memmap_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_BLOCK_BYTES", 8 * 5 * 7)  # 7 rows a block: several blocks
    xp, yp = datasets.make_memmap_dataset(tmp_path / "d.npy", 50, 5, n_classes=3, seed=4)
    X = np.load(xp, mmap_mode="r")
    y = np.load(yp)
    assert isinstance(X, np.memmap) and X.shape == (50, 5) and X.dtype == np.float32
    assert y.shape == (50,) and y.dtype == np.int64 and set(y) <= {0, 1, 2}
    xp2, _ = datasets.make_memmap_dataset(tmp_path / "e.npy", 50, 5, n_classes=3, seed=4)
    np.testing.assert_array_equal(np.load(xp2), X)
    xp3, _ = datasets.make_memmap_dataset(tmp_path / "f.npy", 50, 5, n_classes=3, seed=5)
    assert not np.array_equal(np.load(xp3), X)
    # class structure: each sample is nearer its own class mean than the others (low noise)
    xp4, yp4 = datasets.make_memmap_dataset(
        tmp_path / "g", 300, 8, n_classes=4, noise=0.1, dtype=np.float64
    )
    assert xp4.endswith("g") and yp4.endswith("g_labels.npy")
    X4, y4 = np.load(xp4), np.load(yp4)
    assert X4.dtype == np.float64
    means = np.stack([X4[y4 == c].mean(0) for c in range(4)])
    nearest = ((X4[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert np.mean(nearest == y4) > 0.99
    with pytest.raises(ValueError, match="n_samples"):
        datasets.make_memmap_dataset(tmp_path / "h.npy", 0, 5)
