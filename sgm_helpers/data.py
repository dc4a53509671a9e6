"""MNIST as in-memory tensors."""

from __future__ import annotations

import os
from pathlib import Path

import torch

DATA_ENV = "SGM_DATA_DIR"


def default_data_root() -> Path:
    """``$SGM_DATA_DIR`` if set, else a per-user cache directory (``$XDG_CACHE_HOME/sgm_helpers``)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "sgm_helpers"


def load_mnist(train: bool = True, root=None, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST split through ``torchvision.datasets.MNIST`` as two tensors.

    Returns ``(images, labels)``: images float32 ``[N, 1, 28, 28]`` in [0, 1] (pixel / 255),
    labels int64 ``[N]``. ``root`` defaults to :func:`default_data_root`; the files live in
    ``<root>/MNIST/raw`` as torchvision lays them out. The whole split is decoded once into
    memory: no per-image PIL transform.
    """
    from torchvision.datasets import MNIST

    root = Path(root).expanduser() if root is not None else default_data_root()
    split = "train" if train else "test"
    try:
        ds = MNIST(str(root), train=train, download=download)
    except Exception as err:
        raise RuntimeError(
            f"MNIST ({split} split) is not in {root / 'MNIST' / 'raw'} and "
            + ("could not be downloaded" if download else "download=False was given")
            + f" ({type(err).__name__}: {err}). Download it on a machine with internet access, or point "
            f"the environment variable {DATA_ENV} (or root=) at a folder that holds MNIST/raw/ with the "
            "four idx files (train-images-idx3-ubyte, ...)."
        ) from err
    images = ds.data.unsqueeze(1).to(torch.float32).div_(255.0)
    return images, ds.targets.to(torch.int64)
