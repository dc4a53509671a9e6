"""Training loop and checkpoints.

Batches are slices of one in-memory tensor (the whole of MNIST is 188 MB as float32), shuffled
by a seeded permutation per epoch: no DataLoader, no per-image PIL transform.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .likelihood import dequantize as dequantize_images
from .losses import _check_loss_args, dsm_loss
from .models import load_tutorial_checkpoint
from .sde import sde_of
from .utils import check_finite, check_positive, check_positive_int, model_device, read_torch_file

CHECKPOINT_FORMAT = "sgm_helpers.checkpoint/1"
PRECISIONS = ("float32", "bfloat16")
# Settings a resumed run must share with the checkpoint to continue the same loss curve.
_RESUME_KEYS = ("batch_size", "lr", "seed", "eps", "n_train", "precision", "sde", "likelihood_weighting",
                "importance_sampling", "dequantize")


def make_ema(model: torch.nn.Module, decay: float = 0.999) -> AveragedModel:
    """An exponential moving average of ``model``'s weights: theta_ema <- decay theta_ema + (1 - decay) theta."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"decay must be in the open interval (0, 1), got {decay!r}")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))


def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    # One generator per epoch, so a run resumed mid-epoch sees the same batch order.
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _autocast(device: torch.device, precision: str):
    """The forward pass's context: nothing for float32, ``torch.autocast`` for bfloat16."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _check_resume_config(path, saved: dict | None, config: dict) -> None:
    if not saved:  # a checkpoint from before configs were stored, or from elsewhere: nothing to compare
        return
    diff = [f"{k}={saved[k]!r} in the checkpoint, {config[k]!r} now" for k in _RESUME_KEYS
            if k in saved and saved[k] != config[k]]
    if diff:
        raise ValueError(f"cannot resume from {path}: it was written with other settings ({'; '.join(diff)}); "
                         "resume with the same settings or write to a new checkpoint_path")


def train(model: torch.nn.Module, data, sde, *, epochs: int | None = None, steps: int | None = None,
          batch_size: int = 32, lr: float = 1e-4, device=None, checkpoint_path=None, progress: bool = True,
          ema_model: AveragedModel | None = None, seed: int = 0, eps: float = 1e-5, resume: bool = False,
          log_every: int = 25, precision: str = "float32", likelihood_weighting: bool = False,
          importance_sampling: bool = False, dequantize: bool = False) -> list[float]:
    """Train a score model with Adam on :func:`~sgm_helpers.losses.dsm_loss`.

    Args:
        model: score model ``(x, t) -> score``; moved to ``device``.
        data: ``[N, ...]`` tensor of training examples, or an ``(images, labels)`` pair.
        sde: the SDE (``VESDE``, ``VPSDE``, ``subVPSDE``), or the tutorial's ``marginal_prob_std`` function.
        epochs / steps: how long to train; give exactly one. An epoch is ceil(N / batch_size) steps.
        batch_size, lr: Adam's mini-batch size and learning rate (the tutorial: 32 and 1e-4).
        device: where to train; defaults to the model's device.
        checkpoint_path: if given, a checkpoint (model, optimizer, EMA, step, losses, RNG state) is
            written there atomically at the end of every epoch and of training.
        progress: show a ``tqdm.auto`` bar with the running loss.
        ema_model: an ``AveragedModel`` (see :func:`make_ema`) updated after every step.
        seed: seeds the batch order and the noise draws.
        eps: smallest diffusion time in the loss.
        resume: continue from ``checkpoint_path`` if that file exists; training then stops at the same
            total step count as an uninterrupted run. The checkpoint must come from a run with the same
            batch_size, lr, seed, eps, precision and number of training examples (else ``ValueError``);
            ``epochs``/``steps`` may grow.
        log_every: steps between progress-bar updates and the NaN check.
        precision: ``"float32"`` (default; reproduces the tutorial exactly) or ``"bfloat16"``: the forward
            pass and the loss run under ``torch.autocast`` in bfloat16, while the weights, gradients,
            Adam state and EMA stay float32 (no loss scaling is needed: bfloat16 has float32's range).
            Faster on CPUs with bfloat16 instructions and on recent GPUs; the loss curve differs from
            float32 in the third or fourth significant digit.
        likelihood_weighting, importance_sampling: the loss's weighting (see ``dsm_loss``); a model
            meant for bits/dim trains with both.
        dequantize: train on uniformly dequantized images (255 x + u) / 256, u ~ U[0, 1), drawn afresh
            each step, as likelihood models do: the model then learns a density of continuous data
            that the bits/dim evaluation (which dequantizes the same way) measures. ``data`` must be
            8-bit images scaled to [0, 1].
        The SDE and these three settings are recorded in the checkpoint; resuming with others is refused.
    Returns:
        the loss of every step since the start of training (including resumed steps), as floats.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs= or steps=")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_positive(lr, "lr")
    eps = _check_loss_args(torch.zeros(1, 1), sde, eps, likelihood_weighting, importance_sampling)
    log_every = check_positive_int(log_every, "log_every")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if isinstance(data, (tuple, list)):
        data = data[0]
    if not isinstance(data, torch.Tensor) or data.dim() < 2 or len(data) == 0:
        raise ValueError("data must be a non-empty tensor of shape [N, ...] (or an (images, labels) pair)")
    check_finite(data, "data")
    if dequantize and (data.min() < 0 or data.max() > 1):
        raise ValueError("dequantize=True needs data that are 8-bit images scaled to [0, 1] (pixel / 255)")
    device = model_device(model, device)
    model.to(device).train()
    data = data.to(device, torch.float32)
    n = len(data)
    steps_per_epoch = math.ceil(n / batch_size)
    total = (check_positive_int(epochs, "epochs") * steps_per_epoch if epochs is not None
             else check_positive_int(steps, "steps"))

    known_sde = sde_of(sde)
    loss_sde = known_sde if known_sde is not None else sde
    config = dict(batch_size=batch_size, lr=lr, seed=seed, eps=eps, n_train=n, precision=precision,
                  sde=known_sde.config() if known_sde is not None else "custom marginal_prob_std",
                  likelihood_weighting=bool(likelihood_weighting), importance_sampling=bool(importance_sampling),
                  dequantize=bool(dequantize))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    noise_gen = torch.Generator(device=device).manual_seed(seed)
    step, losses = 0, []
    if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
        ckpt = load_checkpoint(checkpoint_path, map_location=device)
        _check_resume_config(checkpoint_path, ckpt.get("config"), config)
        _load_states(ckpt, model, optimizer, ema_model)
        step, losses = int(ckpt["step"]), list(ckpt.get("losses", []))
        if ckpt.get("rng") is not None and ckpt.get("rng_device_type") == device.type:
            noise_gen.set_state(ckpt["rng"].cpu())

    def save():
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, optimizer=optimizer, ema_model=ema_model, step=step,
                            losses=losses, rng=noise_gen.get_state(), rng_device_type=device.type,
                            config=dict(config, total_steps=total))

    bar = tqdm(total=total, initial=step, disable=not progress, desc="train", unit="step")
    pending: list[torch.Tensor] = []
    perm, perm_epoch = None, -1
    while step < total:
        epoch, k = divmod(step, steps_per_epoch)
        if epoch != perm_epoch:
            perm, perm_epoch = _epoch_permutation(n, seed, epoch).to(device), epoch
        x = data[perm[k * batch_size:(k + 1) * batch_size]]
        if dequantize:
            x = dequantize_images(x, noise_gen)
        with _autocast(device, precision):
            loss = dsm_loss(model, x, loss_sde, eps=eps, generator=noise_gen, likelihood_weighting=likelihood_weighting,
                            importance_sampling=importance_sampling)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema_model is not None:
            ema_model.update_parameters(model)
        pending.append(loss.detach())
        step += 1
        if len(pending) == log_every or step == total or step % steps_per_epoch == 0:
            chunk = torch.stack(pending).tolist()
            pending.clear()
            bad = [i for i, v in enumerate(chunk) if not math.isfinite(v)]
            if bad:
                first = step - len(chunk) + bad[0] + 1
                raise FloatingPointError(f"training loss became NaN or inf at step {first} (counting from 1) "
                                         f"of {total}; try a smaller lr")
            losses.extend(chunk)
            bar.update(len(chunk))
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.2f}", epoch=epoch + 1)
        if step % steps_per_epoch == 0 or step == total:
            save()
    bar.close()
    model.eval()
    return losses


def save_checkpoint(path, model: torch.nn.Module, *, optimizer=None, ema_model=None, step: int = 0,
                    losses=None, **extra) -> Path:
    """Write a checkpoint atomically (to a temporary file, then renamed over ``path``).

    The file holds only tensors and plain Python values, so :func:`load_checkpoint` reads it with
    ``weights_only=True``. Keys: ``format``, ``model``, ``optimizer``, ``ema``, ``step``,
    ``losses`` and any ``extra`` keyword.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "ema": ema_model.state_dict() if ema_model is not None else None,
        "step": int(step),
        "losses": [float(v) for v in (losses or [])],
        **extra,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path, model: torch.nn.Module | None = None, *, optimizer=None, ema_model=None,
                    map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``) and load it.

    Loads the weights into ``model``, and the optimizer and EMA states into ``optimizer`` and
    ``ema_model`` when given. A plain state dict (for example the original tutorial's
    ``ckpt.pth``) is accepted too and loaded into ``model``. Returns the checkpoint dict.
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an unreadable one or one
    from another architecture.
    """
    ckpt = read_torch_file(path, map_location=map_location)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        ckpt = {"format": None, "model": ckpt, "optimizer": None, "ema": None, "step": 0, "losses": []}
    _load_states(ckpt, model, optimizer, ema_model)
    return ckpt


def _load_states(ckpt: dict, model=None, optimizer=None, ema_model=None) -> None:
    if model is not None:
        load_tutorial_checkpoint(model, ckpt["model"])
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if ema_model is not None and ckpt.get("ema") is not None:
        ema_model.load_state_dict(ckpt["ema"])
