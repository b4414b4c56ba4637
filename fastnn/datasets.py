"""Data sets to train on: scikit-learn's bundled iris and digits, MNIST-style IDX files, and a
synthetic data set written to disk in chunks for memory-mapped training.

Every loader returns float32 features and int64 labels, the types a fastnn classifier takes.
Nothing here downloads: MNIST and Fashion-MNIST are read from IDX files you already have.
"""

import gzip
import os
import zlib

import numpy as np

from ._validation import check_dtype, check_fits_in_memory, check_number, check_positive_int

__all__ = ["load_iris", "load_digits", "load_idx", "load_mnist", "make_memmap_dataset"]


# -- bundled scikit-learn data -----------------------------------------------------------------
def _bundled(X, y, standardize, test_size, seed, dtype):
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.int64)
    if test_size is None:
        if standardize:
            X = _standardize(X, X)
        return np.ascontiguousarray(X, dtype), y
    from sklearn.model_selection import train_test_split

    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, stratify=y, random_state=seed
    )
    if standardize:  # statistics of the training part only, applied to both parts
        X_train, X_test = _standardize(X_train, X_train), _standardize(X_test, X_train)
    return (
        np.ascontiguousarray(X_train, dtype),
        np.ascontiguousarray(X_test, dtype),
        y_train,
        y_test,
    )


def _standardize(X, ref):
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    std[std == 0] = 1.0  # constant columns (digits' blank border pixels) stay at zero
    return (X - mean) / std


def load_iris(*, standardize=False, test_size=None, seed=0, dtype=np.float32):
    """Fisher's iris: 150 samples, 4 features, 3 classes (scikit-learn's bundled copy).

    Parameters
    ----------
    standardize : bool
        Scale each feature to zero mean and unit variance (with the training part's statistics
        when splitting).
    test_size : float or int, optional
        Split into a stratified training and test part (fraction or count of test samples).
    seed : int
        Seed of the split.
    dtype : float32 or float64

    Returns
    -------
    X (150, 4), y (150,), or with ``test_size``: X_train, X_test, y_train, y_test.
    """
    from sklearn.datasets import load_iris as sk_load

    X, y = sk_load(return_X_y=True)
    return _bundled(X, y, standardize, test_size, seed, dtype)


def load_digits(*, standardize=False, test_size=None, seed=0, dtype=np.float32):
    """8x8 handwritten digits: 1797 samples, 64 features (pixel values 0-16), 10 classes.

    Same arguments and returns as :func:`load_iris` (X has shape (1797, 64)).
    """
    from sklearn.datasets import load_digits as sk_load

    X, y = sk_load(return_X_y=True)
    return _bundled(X, y, standardize, test_size, seed, dtype)


# -- IDX files (MNIST, Fashion-MNIST) ----------------------------------------------------------
# IDX: two zero bytes, a type code, the number of dimensions, then each dimension as a
# big-endian uint32, then the values in C order, big-endian.
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def load_idx(path):
    """Read one IDX file (as MNIST and Fashion-MNIST are distributed), gzipped or not.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.gz`` file is recognised by its content, whatever its name.

    Returns
    -------
    ndarray
        Of the file's shape (e.g. (60000, 28, 28) uint8 images or (60000,) uint8 labels) and
        the file's value type in native byte order.

    Raises
    ------
    ValueError
        The file is not IDX (bad magic number or type code), or is truncated or too long.
    """
    path = os.fspath(path)
    with open(path, "rb") as raw_file:
        size = os.fstat(raw_file.fileno()).st_size
        gzipped = raw_file.read(2) == b"\x1f\x8b"
        raw_file.seek(0)
        if not gzipped:
            return _read_idx(raw_file, path, size, size)
        # deflate expands at most ~1032:1, so a header declaring more than that cannot be
        # honest; the data is streamed (decompressed piece by piece into the array) and
        # reading stops one byte past the declared size, so a gzip bomb is never expanded
        # beyond what its header declares
        with gzip.GzipFile(fileobj=raw_file, mode="rb") as f:
            return _read_idx(f, path, None, size * _MAX_GZIP_RATIO + 4096)


#: deflate's largest expansion ratio is about 1032:1
_MAX_GZIP_RATIO = 1100
_IDX_CHUNK = 1 << 20


def _read_exact(f, n, path):
    try:
        data = f.read(n)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path!r}: damaged gzip data ({exc})") from None
    return data


def _read_idx(f, path, size, max_bytes):
    """Parse an IDX stream ``f``: ``size`` is its exact length when known (plain files), else
    ``max_bytes`` bounds what the header may declare."""
    head = _read_exact(f, 4, path)
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise ValueError(
            f"{path!r} is not an IDX file: it must start with two zero bytes, a type code and "
            f"the number of dimensions (got {head[:4]!r})"
        )
    code, ndim = head[2], head[3]
    dtype = _IDX_TYPES.get(code)
    if dtype is None:
        raise ValueError(f"{path!r}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise ValueError(f"{path!r}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    dims = _read_exact(f, 4 * ndim, path)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{path!r}: truncated IDX header ({4 + len(dims)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(dims, ">u4"))
    expected = dtype.itemsize
    for d in shape:
        expected *= d
    if size is not None and size - header != expected:
        raise ValueError(
            f"{path!r}: the header declares shape {shape} of {dtype.name} ({expected} bytes of "
            f"data) but the file holds {size - header} bytes after the header"
        )
    if size is None and expected > max_bytes:
        raise ValueError(
            f"{path!r}: the header declares shape {shape} of {dtype.name} ({expected} bytes of "
            f"data), more than a gzip file of this size can hold"
        )
    data = np.empty(shape, dtype)
    view = memoryview(data.reshape(-1).view(np.uint8))
    pos = 0
    try:
        while pos < expected:
            got = f.readinto(view[pos : min(pos + _IDX_CHUNK, expected)])
            if not got:
                break
            pos += got
        extra = len(f.read(1))
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path!r}: damaged gzip data ({exc})") from None
    if pos < expected or extra:
        held = f"{pos} bytes" if pos < expected else "more bytes than that"
        raise ValueError(
            f"{path!r}: the header declares shape {shape} of {dtype.name} ({expected} bytes of "
            f"data) but the file holds {held} after the header"
        )
    return data.astype(dtype.newbyteorder("="))


def _find(folder, kind, what):
    stem = f"{kind}-{what}"
    ubyte = "idx3-ubyte" if what == "images" else "idx1-ubyte"
    for name in (f"{stem}-{ubyte}.gz", f"{stem}-{ubyte}", f"{stem}.{ubyte}.gz", f"{stem}.{ubyte}"):
        candidate = os.path.join(folder, name)
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(
        f"no {what} file for kind={kind!r} in {folder!r}: expected {stem}-{ubyte}[.gz]"
    )


def load_mnist(folder, kind="train", *, flatten=True, scale=True):
    """MNIST or Fashion-MNIST from the standard IDX files in ``folder``.

    Parameters
    ----------
    folder : str or os.PathLike
        Holds ``{kind}-images-idx3-ubyte`` and ``{kind}-labels-idx1-ubyte`` (each possibly
        ``.gz``; the ``train-images.idx3-ubyte`` spelling is accepted too).
    kind : {"train", "t10k"}
        The 60,000 training or the 10,000 test images.
    flatten : bool
        Return images as rows of 784 features (else (n, 28, 28)).
    scale : bool
        Divide pixel values by 255 (to [0, 1]); else keep 0-255 as float32.

    Returns
    -------
    X : float32 (n, 784) or (n, 28, 28)
    y : int64 (n,)
    """
    if kind not in ("train", "t10k"):
        raise ValueError(f"kind must be 'train' or 't10k', got {kind!r}")
    folder = os.fspath(folder)
    images_path, labels_path = _find(folder, kind, "images"), _find(folder, kind, "labels")
    images, labels = load_idx(images_path), load_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path!r}: expected uint8 images of shape (n, rows, cols), got "
            f"{images.dtype} {images.shape}"
        )
    if labels.ndim != 1:
        raise ValueError(f"{labels_path!r}: expected 1-D labels, got shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path!r} has {labels.shape[0]} labels but {images_path!r} has "
            f"{images.shape[0]} images"
        )
    X = images.astype(np.float32)
    if scale:
        X /= 255.0
    if flatten:
        X = X.reshape(X.shape[0], -1)
    return X, labels.astype(np.int64)


# -- a large synthetic data set on disk --------------------------------------------------------
_BLOCK_BYTES = 16 << 20  # float64 scratch per generated block: memory stays flat


def make_memmap_dataset(
    path, n_samples, n_features, *, n_classes=10, dtype=np.float32, noise=1.0, seed=0
):
    """Write a synthetic classification data set as ``.npy`` files, block by block.

    Each class has a random centre (standard normal); a sample is its class centre plus
    Gaussian noise of standard deviation ``noise``.  Memory use stays at a few blocks of
    16 MB whatever the size, so this writes files larger than RAM; open them with
    ``np.load(path, mmap_mode="r")`` and pass them to ``fit`` directly.

    Parameters
    ----------
    path : str or os.PathLike
        Features file (``.npy``); the labels go next to it as ``<stem>_labels.npy``.
    n_samples, n_features, n_classes : int
    dtype : float32 or float64
        Type of the stored features.
    noise : float
        Standard deviation of the noise around the class centres (larger: harder).
    seed : int
        The same seed (and sizes) writes the same files.

    Returns
    -------
    (X_path, y_path) : the two file paths.
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    n_features = check_positive_int(n_features, "n_features")
    n_classes = check_positive_int(n_classes, "n_classes")
    dtype = check_dtype(dtype)
    noise = check_number(noise, "noise", low=0.0)
    # class centres and one generated row (float64), the labels
    check_fits_in_memory(
        (n_classes + 1) * n_features * 8 + n_samples * 8,
        f"make_memmap_dataset(n_samples={n_samples}, n_features={n_features}, "
        f"n_classes={n_classes})",
    )
    path = os.fspath(path)
    stem = path[:-4] if path.endswith(".npy") else path
    y_path = stem + "_labels.npy"
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([seed, 0])
    centres = rng.standard_normal((n_classes, n_features))
    y = rng.integers(0, n_classes, n_samples).astype(np.int64)
    rows = max(1, _BLOCK_BYTES // (8 * n_features))
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": (n_samples, n_features),
    }
    tmp = path + ".partial"
    try:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            for k, start in enumerate(range(0, n_samples, rows)):
                stop = min(start + rows, n_samples)
                block_rng = np.random.default_rng([seed, k + 1])
                block = block_rng.standard_normal((stop - start, n_features))
                block *= noise
                block += centres[y[start:stop]]
                f.write(block.astype(dtype).tobytes())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    np.save(y_path, y)
    return path, y_path
