"""Tests for imckit.data: shapes, seeded stratified splits, and the CIFAR-10 pickle reader."""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from imckit import data


def _disjoint_cover(ds, n_total):
    assert len(ds.y_train) + len(ds.y_test) == n_total
    # no example is in both splits (rows of the preprocessed inputs are distinct images)
    tr = {tuple(r) for r in ds.x_train.flatten(1).numpy().round(5)}
    te = {tuple(r) for r in ds.x_test.flatten(1).numpy().round(5)}
    assert not tr & te


def test_digits_shapes_and_standardization():
    ds = data.digits()
    assert ds.name == "digits" and ds.n_classes == 10 and ds.input_shape == (1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.in_features == 64
    _disjoint_cover(ds, 1797)
    flat = ds.x_train.flatten(1)
    std = flat.std(0, unbiased=False)
    live = std > 0
    assert torch.allclose(flat.mean(0), torch.zeros(64), atol=1e-5)
    assert torch.allclose(std[live], torch.ones(int(live.sum())), atol=1e-4)
    # stratified: every class holds out ~20 % (rounded per class)
    counts = torch.bincount(ds.y_test, minlength=10).numpy()
    full = torch.bincount(torch.cat([ds.y_train, ds.y_test]), minlength=10).numpy()
    assert np.array_equal(counts, np.round(0.2 * full))


def test_digits_raw_equals_sklearn_loader():
    from sklearn.datasets import load_digits
    d = load_digits()
    x, y = data._load_digits()
    assert np.array_equal(x, d.data) and np.array_equal(y, d.target)


def test_digits_split_is_fixed_by_seed():
    a, b, c = data.digits(seed=0), data.digits(seed=0), data.digits(seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train)


def test_digits_bad_arguments():
    with pytest.raises(ValueError, match="test_fraction"):
        data.digits(test_fraction=1.5)
    with pytest.raises(ValueError, match="seed"):
        data.digits(seed=-1)


def test_mnist5k_shuffled_balanced_scaled():
    ds = data.mnist5k()
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    # the source file is sorted by class; after the shuffle the first 50 labels mix classes
    assert len(torch.unique(ds.y_train[:50])) >= 8
    assert len(torch.unique(ds.y_test[:50])) >= 8
    assert (torch.diff(ds.y_train) != 0).sum() > 3000        # a sorted order would have 9 changes
    assert torch.equal(torch.bincount(ds.y_test), torch.full((10,), 100))
    again = data.mnist5k(seed=0)
    assert torch.equal(ds.x_test, again.x_test) and torch.equal(ds.y_train, again.y_train)
    assert not torch.equal(ds.y_train, data.mnist5k(seed=1).y_train)


# --- CIFAR-10: small files in the exact python-pickle format of cifar-10-python.tar.gz ---------

def _batch(n, label0, rng):
    x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [(label0 + i) % 10 for i in range(n)]
    return {b"batch_label": b"fake batch", b"labels": labels, b"data": x,
            b"filenames": [f"img{i}.png".encode() for i in range(n)]}


def _write_cifar(folder, n=6):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batches[name] = _batch(n, i, rng)
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f, protocol=2)
    return batches


def _destandardize(ds, batches):
    raw = np.concatenate([batches[f"data_batch_{k}"][b"data"] for k in range(1, 6)])
    raw = raw.reshape(-1, 3, 32, 32).astype(np.float32) / 255
    mean, std = raw.mean(axis=(0, 2, 3)), raw.std(axis=(0, 2, 3))
    return raw, mean, std


@pytest.mark.parametrize("nested", [True, False])
def test_cifar10_reads_python_batches(tmp_path, nested):
    folder = tmp_path / "cifar-10-batches-py" if nested else tmp_path
    batches = _write_cifar(folder)
    ds = data.cifar10(tmp_path)
    assert ds.input_shape == (3, 32, 32) and ds.n_classes == 10
    assert ds.x_train.shape == (30, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
    assert ds.y_train.tolist() == sum([batches[f"data_batch_{k}"][b"labels"] for k in range(1, 6)], [])
    raw, mean, std = _destandardize(ds, batches)
    # pixel layout: a row is 1024 red, 1024 green, 1024 blue values, each row-major 32x32
    row = batches["data_batch_2"][b"data"][3]
    c, y, x = 2, 5, 17
    expect = (row[c * 1024 + y * 32 + x] / 255 - mean[c]) / std[c]
    assert float(ds.x_train[6 + 3, c, y, x]) == pytest.approx(expect, abs=1e-5)
    assert np.allclose(ds.x_train.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-5)


def test_cifar10_missing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1.*download=True"):
        data.cifar10(tmp_path)


def _tarball(tmp_path):
    src = tmp_path / "src" / "cifar-10-batches-py"
    batches = _write_cifar(src, n=4)
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    return tgz, hashlib.md5(tgz.read_bytes()).hexdigest(), batches


def test_cifar10_download_verifies_md5(tmp_path):
    tgz, md5, batches = _tarball(tmp_path)
    root = tmp_path / "data"
    ds = data.cifar10(root, download=True, url=tgz.as_uri(), md5=md5)
    assert ds.x_train.shape == (20, 3, 32, 32)
    assert ds.y_test.tolist() == batches["test_batch"][b"labels"]
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]   # no temp left


def test_cifar10_download_checksum_failure(tmp_path):
    tgz, md5, _ = _tarball(tmp_path)
    root = tmp_path / "data"
    with pytest.raises(ValueError, match="MD5"):
        data.cifar10(root, download=True, url=tgz.as_uri(), md5="0" * 32)
    assert list(root.iterdir()) == []                     # nothing extracted, temp file removed


def test_cifar10_download_rejects_archive_without_batches(tmp_path):
    tgz = tmp_path / "other.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        info = tarfile.TarInfo("readme.txt")
        payload = b"not cifar"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    md5 = hashlib.md5(tgz.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="lacks the CIFAR batches"):
        data.cifar10(tmp_path / "d", download=True, url=tgz.as_uri(), md5=md5)


# --- a data folder is not trusted (issue 11, items 1 and 8) ------------------------------------

class _RunsCode:
    """Pickles as a call of os.system: what a crafted batch file would hold."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os
        return os.system, (self.command,)


def test_cifar10_crafted_batch_is_refused_and_runs_nothing(tmp_path):
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": _RunsCode(f"touch {marker}"), b"labels": [0]}, f, protocol=2)
    with pytest.raises(ValueError) as e:
        data.cifar10(tmp_path)
    msg = str(e.value)
    assert "data_batch_3" in msg and "system is not allowed" in msg and "\n" not in msg
    assert not marker.exists()


def test_cifar10_batch_with_object_array_or_wrong_layout_is_refused(tmp_path):
    _write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.array([1, "x"], dtype=object), b"labels": [0]}, f)
    with pytest.raises(ValueError, match=r"test_batch .*object dtype"):
        data.cifar10(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"test_batch is not a CIFAR-10 python batch \(need"):
        data.cifar10(tmp_path)


def test_cifar10_reads_batches_pickled_by_python3_protocol5(tmp_path):
    batches = _write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:          # numpy's _frombuffer path
        pickle.dump(batches["test_batch"], f, protocol=5)
    assert data.cifar10(tmp_path).y_test.tolist() == batches["test_batch"][b"labels"]


def test_cifar10_verify_md5_refuses_unofficial_batches(tmp_path):
    _write_cifar(tmp_path)
    data.cifar10(tmp_path)                                  # same format: loads by default
    with pytest.raises(ValueError, match=r"data_batch_1 has MD5 .* expected the official "
                                         + data.CIFAR10_BATCH_MD5["data_batch_1"]):
        data.cifar10(tmp_path, verify_md5=True)


def test_cifar10_download_offline_is_one_line(tmp_path):
    root = tmp_path / "d"
    with pytest.raises(ConnectionError) as e:              # nothing listens on port 9 here
        data.cifar10(root, download=True, url="http://127.0.0.1:9/cifar-10-python.tar.gz")
    assert "cannot download" in str(e.value) and "\n" not in str(e.value)
    assert list(root.iterdir()) == []                       # temp file removed


def test_cifar10_download_times_out(tmp_path):
    import socket
    import time
    server = socket.socket()                                # accepts, never answers
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    url = f"http://127.0.0.1:{server.getsockname()[1]}/cifar-10-python.tar.gz"
    t0 = time.perf_counter()
    try:
        with pytest.raises(ConnectionError, match="timeout 0.3 s"):
            data.cifar10(tmp_path / "d", download=True, url=url, timeout=0.3)
    finally:
        server.close()
    assert time.perf_counter() - t0 < 10
