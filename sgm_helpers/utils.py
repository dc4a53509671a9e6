"""Small shared helpers: device choice, seeding, argument checks, torchrun's process group."""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import random
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist


def get_device() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's global generators (all CUDA devices too).

    Returns a CPU ``torch.Generator`` seeded with ``seed``, for code that takes
    an explicit ``generator=`` (the package's samplers and losses do).
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(int(seed))


def model_device(model, default=None) -> torch.device:
    """The device of a module's first parameter, else ``default`` (else the CPU).

    Score "models" may also be plain functions (the exact toy scores), which have no device.
    """
    if default is not None:
        return torch.device(default)
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def check_eps(eps, name: str = "eps") -> float:
    """``eps`` must be a float in the open interval (0, 1)."""
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0.0 < eps < 1.0:
        raise ValueError(f"{name} must be a number in the open interval (0, 1), got {eps!r}")
    return float(eps)


def check_positive_int(value, name: str) -> int:
    """``value`` must be an integer >= 1."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_positive(value, name: str) -> float:
    """``value`` must be a finite number > 0."""
    if (not isinstance(value, (int, float, np.floating)) or isinstance(value, bool)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_finite_number(value, name: str) -> float:
    """``value`` must be a finite real number (not a bool)."""
    if (not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool)
            or not math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise if ``x`` holds NaN or inf."""
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values")


def check_shape(shape, name: str = "shape") -> tuple[int, ...]:
    """A sample shape ``(B, ...)`` with at least a batch and one data dimension, all >= 1."""
    try:
        if isinstance(shape, (str, bytes)):
            raise TypeError
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a tuple of ints like (64, 1, 28, 28), got {shape!r}") from None
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"{name} must be (batch, *data_dims) with every size >= 1, got {shape!r}")
    return shape


def batch_view(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-example ``[B]`` tensor shaped ``[B, 1, ..., 1]`` to broadcast against ``x`` ``[B, ...]``, on ``x``'s
    device and dtype (a scalar tensor is returned as it is, converted)."""
    value = value.to(x.device, x.dtype)
    return value.reshape(-1, *([1] * (x.dim() - 1))) if value.dim() == 1 else value


def randn(shape, generator: torch.Generator | None = None, device=None, dtype=None) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``device``, drawn from ``generator`` wherever it lives.

    A CPU generator gives the same numbers whatever ``device`` is, so a seed means the same
    samples on a laptop and on a GPU.
    """
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    z = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return z.to(device) if device is not None else z


def rand(shape, generator: torch.Generator | None = None, device=None, dtype=None) -> torch.Tensor:
    """Uniform [0, 1) noise, drawn like :func:`randn`."""
    if generator is None:
        return torch.rand(shape, device=device, dtype=dtype)
    u = torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)
    return u.to(device) if device is not None else u


def read_torch_file(source, *, map_location="cpu", what: str = "checkpoint") -> dict:
    """Read a file written by ``torch.save`` that holds a dict, with ``weights_only=True``: the package's one reader.

    ``source`` is a path (``str`` or ``os.PathLike``) or an open binary file object (``io.BytesIO``...),
    what ``torch.load`` accepts. Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming
    ``what`` and the source) for one that is not a torch file, holds pickled code, or holds no dict.
    """
    if isinstance(source, (str, os.PathLike)):
        source = Path(source)
        if not source.is_file():
            raise FileNotFoundError(f"{what} not found: {source}")
        name = str(source)
    elif hasattr(source, "read") and hasattr(source, "seek"):
        name = str(getattr(source, "name", "") or f"the file object {type(source).__name__}")
    else:
        raise ValueError(f"{what} must be a path or an open binary file, got {type(source).__name__}")
    try:
        obj = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt file, not a torch file, pickled code...
        raise ValueError(f"cannot read {what} {name}: {type(err).__name__}: {err}") from err
    if not isinstance(obj, Mapping):
        raise ValueError(f"{what} {name} does not hold a state dict or a checkpoint: got {type(obj).__name__}, "
                         "not a dict")
    return dict(obj)


# ---------------------------------------------------------------------------------------------------------------
# torch.distributed, as torchrun sets it up: one process per GPU (or several on CPUs), found through the
# environment variables RANK, WORLD_SIZE and LOCAL_RANK. Outside torchrun everything here is a no-op.


class DistEnv(NamedTuple):
    """This process's place among torchrun's processes: ``rank`` in 0..world_size - 1, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def _group_running() -> bool:
    return dist.is_available() and dist.is_initialized()


def dist_env() -> DistEnv:
    """The process group's rank and size, else torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, else (0, 1, 0)."""
    if _group_running():
        env = DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    else:
        env = DistEnv(*(int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0))))
    return env if env.world_size > 1 else DistEnv()    # a stray RANK without WORLD_SIZE is one process


def dist_device(device) -> torch.device:
    """The device this process trains on: under torchrun a CUDA device is ``cuda:LOCAL_RANK`` (one GPU a process)."""
    device = torch.device(device)
    env = dist_env()
    if env.world_size > 1 and device.type == "cuda":
        return torch.device("cuda", env.local_rank)
    return device


def init_distributed(device="cpu") -> DistEnv:
    """Join torchrun's process group, once per process; returns this process's :class:`DistEnv`.

    Started by torchrun with WORLD_SIZE > 1 and no group yet, this makes the default process group: NCCL
    for a CUDA ``device`` (each process on ``cuda:LOCAL_RANK``), gloo otherwise. It lives until the process
    exits, when it is destroyed (re-creating a destroyed group is unreliable in torch.distributed, so
    repeated calls, such as one ``train()`` per chunk of steps, share one group). Otherwise nothing happens:
    a plain ``python`` run, ``torchrun --nproc_per_node=1``, or a group that the caller made and destroys.
    """
    env = dist_env()
    if env.world_size == 1 or _group_running():
        return env
    device = dist_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    atexit.register(_destroy_at_exit)
    return dist_env()


def _destroy_at_exit() -> None:
    # Not after an uncaught exception (sys.last_value): the other processes may be waiting in a collective
    # that NCCL's teardown would wait for too; torchrun stops them when this process exits.
    if _group_running() and getattr(sys, "last_value", None) is None:
        dist.destroy_process_group()


def broadcast_object(obj):
    """``obj`` as rank 0 has it, on every process (a pickled copy); ``obj`` itself outside a process group.

    For what only rank 0 reads (a checkpoint file, the clock) and every process must agree on.
    """
    if not _group_running() or dist_env().world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def local_rank0_first():
    """Run the block on each node's first process (LOCAL_RANK 0) before the others, as for a download.

    Every process must enter the block (it holds one barrier); outside a process group it just runs.
    """
    env = dist_env()
    synchronized = env.world_size > 1 and _group_running()
    if synchronized and env.local_rank != 0:
        dist.barrier()
    yield
    if synchronized and env.local_rank == 0:
        dist.barrier()
