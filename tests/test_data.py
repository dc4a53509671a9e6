"""load_mnist: shapes, dtypes and range from $SGM_DATA_DIR; a clear error when the data is missing."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sgm_helpers import load_mnist
from sgm_helpers.data import DATA_ENV, default_data_root


def _data_dir() -> Path:
    if not os.environ.get(DATA_ENV):
        pytest.skip(f"{DATA_ENV} is not set: no local MNIST to test against")
    return Path(os.environ[DATA_ENV])


def _read_idx(path: Path) -> np.ndarray:
    """The idx format: big-endian magic (dtype byte, rank), then the sizes, then the raw bytes."""
    raw = path.read_bytes()
    rank = raw[3]
    dims = np.frombuffer(raw[4:4 + 4 * rank], dtype=">u4").astype(int)
    return np.frombuffer(raw[4 + 4 * rank:], dtype=np.uint8).reshape(dims)


@pytest.mark.parametrize("train, prefix", [(False, "t10k"), (True, "train")])
def test_load_mnist_from_the_data_dir(train, prefix):
    root = _data_dir()
    images, labels = load_mnist(train=train, download=False)
    n = len(labels)
    assert images.shape == (n, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert n > 0
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert set(labels.tolist()) == set(range(10))
    # pixel / 255, exactly, against the raw idx files
    raw_images = _read_idx(root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte")
    raw_labels = _read_idx(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte")
    assert raw_images.shape == (n, 28, 28)
    idx = np.linspace(0, n - 1, 16).astype(int)
    expected = torch.from_numpy(raw_images[idx].astype(np.float32) / 255.0)
    assert torch.equal(images[idx, 0], expected)
    assert torch.equal(labels, torch.from_numpy(raw_labels.astype(np.int64)))
    # 8-bit images: every value is k / 255
    k = images[idx] * 255
    assert torch.equal(k, k.round())


def test_explicit_root_matches_the_environment_variable():
    root = _data_dir()
    a, la = load_mnist(train=False, download=False)
    b, lb = load_mnist(train=False, root=root, download=False)
    assert torch.equal(a, b) and torch.equal(la, lb)


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "mnist_here"))
    assert default_data_root() == tmp_path / "mnist_here"
    monkeypatch.delenv(DATA_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_root() == tmp_path / "cache" / "sgm_helpers"


@pytest.mark.parametrize("via_env", [True, False])
def test_missing_data_is_a_runtime_error_naming_the_variable(monkeypatch, tmp_path, via_env):
    empty = tmp_path / "empty"
    empty.mkdir()
    if via_env:
        monkeypatch.setenv(DATA_ENV, str(empty))
        kwargs = {}
    else:
        monkeypatch.delenv(DATA_ENV, raising=False)
        kwargs = {"root": empty}
    with pytest.raises(RuntimeError) as info:
        load_mnist(train=True, download=False, **kwargs)
    message = str(info.value)
    assert DATA_ENV in message
    assert "download=False" in message
    assert str(empty / "MNIST" / "raw") in message
