"""Training loop and checkpoints.

Batches are slices of one in-memory tensor (the whole of MNIST is 188 MB as float32), shuffled
by a seeded permutation per epoch: no DataLoader, no per-image PIL transform.

Under ``torchrun`` the same loop runs data-parallel (DistributedDataParallel): every process draws the
same permutation, takes its own slice of each global batch, and the gradients are averaged across
processes, so a step still sees ``batch_size`` examples in all.

One loop trains every network of the package; ``objective`` picks its loss: ``"dsm"`` (a score model,
:func:`~sgm_helpers.losses.dsm_loss`), ``"conditional_dsm"`` (a class-conditional score model, the same loss
with labels and label dropout) or ``"time_classifier"`` (a noise-conditional classifier,
:func:`~sgm_helpers.losses.time_classifier_loss`).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .likelihood import dequantize as dequantize_images
from .losses import _check_loss_args, check_labels, dsm_loss, time_classifier_loss
from .models import NUM_CLASSES, load_tutorial_checkpoint
from .sde import sde_of
from .utils import (DistEnv, broadcast_object, check_finite, check_positive, check_positive_int, dist_device,
                    dist_env, init_distributed, model_device, read_torch_file)

CHECKPOINT_FORMAT = "sgm_helpers.checkpoint/1"
PRECISIONS = ("float32", "bfloat16")
# Settings a resumed run must share with the checkpoint to continue the same loss curve.
_RESUME_KEYS = ("batch_size", "lr", "seed", "eps", "n_train", "precision", "sde", "likelihood_weighting",
                "importance_sampling", "uniform_share", "dequantize", "objective", "p_uncond", "architecture")
# What train() minimizes: name -> the model it trains and the data it needs.
OBJECTIVES = {
    "dsm": "a score model (x, t) -> score, on images (labels, if given, are not used)",
    "conditional_dsm": "a class-conditional score model (x, t, y) -> score, on (images, labels), with label dropout "
                       "p_uncond",
    "time_classifier": "a noise-conditional classifier (x, t) -> logits, on (images, labels)",
}


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


def _split_data(data, objective: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``data`` (images, or an ``(images, labels)`` pair as :func:`~sgm_helpers.data.load_mnist` returns) as
    ``(images, labels)``; labels are None where ``objective`` does not use them, and checked where it does."""
    pair = isinstance(data, (tuple, list))
    if pair and len(data) != 2:
        raise ValueError(f"data must be a tensor [N, ...] or an (images, labels) pair, got a sequence of {len(data)}")
    images, labels = data if pair else (data, None)
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or len(images) == 0:
        raise ValueError("data must be a non-empty tensor of shape [N, ...] (or an (images, labels) pair)")
    check_finite(images, "data")
    if objective == "dsm":
        return images, None
    if labels is None:
        raise ValueError(f"objective={objective!r} trains on labelled data: give data as an (images, labels) pair, "
                         "as load_mnist returns it")
    return images, check_labels(labels, images, num_classes, name="labels (data[1])")


def _check_resume_config(path, saved: dict | None, config: dict) -> None:
    if not saved:  # a checkpoint from before configs were stored, or from elsewhere: nothing to compare
        return
    saved = {"uniform_share": 0.0, **saved}  # what a checkpoint from before that setting trained with
    diff = [f"{k}={saved[k]!r} in the checkpoint, {config[k]!r} now" for k in _RESUME_KEYS
            if k in saved and saved[k] != config[k]]
    if diff:
        raise ValueError(f"cannot resume from {path}: it was written with other settings ({'; '.join(diff)}); "
                         "resume with the same settings or write to a new checkpoint_path")


# --- data parallelism under torchrun: each process's share of a step, its noise, the checkpoint it resumes from


class _DDP(DistributedDataParallel):
    """DistributedDataParallel that shows the wrapped network's own attributes (``null_class``, ``num_classes``),
    which the losses read off the model they call."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def _local_batch(batch: torch.Tensor, env: DistEnv) -> tuple[torch.Tensor, float]:
    """This process's indices of the global ``batch``, and its loss's share ``W m_r / m`` of the batch mean.

    Process r of W takes the r-th of W contiguous slices; DDP averages the W gradients, so weighting each
    slice's mean loss by W m_r / m (m_r of its m examples) gives the gradient of the global batch's mean loss,
    ragged last batch included. A process left without examples (m < W) runs one with weight 0.
    """
    if env.world_size == 1:
        return batch, 1.0
    m = len(batch)
    lo, hi = env.rank * m // env.world_size, (env.rank + 1) * m // env.world_size
    if lo == hi:
        return batch[:1], 0.0
    return batch[lo:hi], env.world_size * (hi - lo) / m


def _noise_seed(seed: int, rank: int) -> int:
    """Process 0 (and a single process) draws its noise from ``seed``; process r > 0 from a stream of its own.

    The CPU generator (Mersenne Twister) keeps only the low 32 bits of a seed, so the ranks' seeds differ there:
    steps of 0x9E3779B9, an odd number, give 2^32 distinct seeds modulo 2^32.
    """
    return seed if rank == 0 else (seed + rank * 0x9E3779B9) % 2**32


def _gather_rng(generator: torch.Generator, env: DistEnv) -> list[torch.Tensor]:
    """Every process's generator state, in rank order (a collective: all processes call it)."""
    if env.world_size == 1:
        return [generator.get_state()]
    states = [None] * env.world_size
    dist.all_gather_object(states, generator.get_state().cpu())
    return states


def _saved_rng(ckpt: dict, device: torch.device, env: DistEnv) -> torch.Tensor | None:
    """This process's noise-generator state in a checkpoint, if it holds one for it (same device type)."""
    if ckpt.get("rng_device_type") != device.type:
        return None
    states = ckpt.get("rng_ranks") or [ckpt.get("rng")]    # "rng_ranks": written by a run on several processes
    return states[env.rank].cpu() if env.rank < len(states) and states[env.rank] is not None else None


def _read_resume_checkpoint(path, device: torch.device, env: DistEnv) -> dict | None:
    """The checkpoint at ``path``, or None if there is none. Under torchrun rank 0 reads the file and sends
    it to the others, so only rank 0 needs to see it (a node-local disk is enough)."""
    if env.world_size == 1:
        return load_checkpoint(path, map_location=device) if Path(path).is_file() else None
    blob = broadcast_object(Path(path).read_bytes() if env.rank == 0 and Path(path).is_file() else None)
    if blob is None:
        return None
    buffer = io.BytesIO(blob)
    buffer.name = str(path)                                  # for error messages
    return load_checkpoint(buffer, map_location=device)


def _global_mean(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """The global batch mean of each step's loss: the processes' weighted shares (:func:`_local_batch`), averaged."""
    if env.world_size == 1:
        return values
    dist.all_reduce(values, op=dist.ReduceOp.SUM)      # gloo has no ReduceOp.AVG
    return values / env.world_size


def train(model: torch.nn.Module, data, sde, *, epochs: int | None = None, steps: int | None = None,
          batch_size: int = 32, lr: float = 1e-4, device=None, checkpoint_path=None, progress: bool = True,
          ema_model: AveragedModel | None = None, seed: int = 0, eps: float = 1e-5, resume: bool = False,
          log_every: int = 25, precision: str = "float32", likelihood_weighting: bool = False,
          importance_sampling: bool = False, uniform_share: float = 0.0, dequantize: bool = False,
          objective: str = "dsm", p_uncond: float = 0.0) -> list[float]:
    """Train a score model with Adam on :func:`~sgm_helpers.losses.dsm_loss` (or, by ``objective``, a
    class-conditional score model or a noise-conditional classifier, through the same loop).

    Args:
        model: score model ``(x, t) -> score``; moved to ``device``. With ``objective="conditional_dsm"`` a
            class-conditional one ``(x, t, y) -> score`` (e.g. ``ConditionalScoreNet``); with
            ``"time_classifier"`` a classifier ``(x, t) -> logits`` (e.g. ``TimeClassifier``).
        data: ``[N, ...]`` tensor of training examples, or an ``(images, labels)`` pair (as ``load_mnist``
            returns it; labels ``[N]`` integers in 0..num_classes - 1, sliced with the same permutation as
            the images). The ``"dsm"`` objective does not use labels.
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
        likelihood_weighting, importance_sampling, uniform_share: the loss's weighting (see ``dsm_loss``); a
            model meant for bits/dim trains with the first two.
        dequantize: train on uniformly dequantized images (255 x + u) / 256, u ~ U[0, 1), drawn afresh
            each step, as likelihood models do: the model then learns a density of continuous data
            that the bits/dim evaluation (which dequantizes the same way) measures. ``data`` must be
            8-bit images scaled to [0, 1].
        objective: ``"dsm"`` (default): ``dsm_loss(model, x, sde)``; ``"conditional_dsm"``:
            ``dsm_loss(model, x, sde, y=labels, p_uncond=p_uncond)``, each label replaced by the null class
            with probability ``p_uncond`` (classifier-free guidance's label dropout); ``"time_classifier"``:
            ``time_classifier_loss(model, x, labels, sde)``, the cross-entropy of x(t) at t ~ U(eps, 1).
            The classifier's objective has no weighting and no dequantization: combining it with
            ``likelihood_weighting``, ``importance_sampling`` or ``dequantize`` is a ValueError.
        p_uncond: probability in [0, 1] of dropping a label (only with ``"conditional_dsm"``).
        The SDE, these settings, ``objective`` and ``p_uncond`` are recorded in the checkpoint's config
        (with the model's ``architecture``, where it has one, from which
        :func:`~sgm_helpers.pretrained.load_score_checkpoint` rebuilds it); resuming with others is refused.

    Under ``torchrun --nproc_per_node=W`` (any number of nodes) the call runs unchanged on every process: it
    joins torchrun's process group (:func:`~sgm_helpers.utils.init_distributed`: NCCL on CUDA, gloo on CPUs;
    or uses one the caller made), wraps the model in ``DistributedDataParallel``, and gives each process a
    disjoint slice of every global batch of ``batch_size`` examples (``batch_size`` must be divisible by W),
    so an epoch is the same steps as on one process and each step's gradient is the global batch's. A CUDA
    ``device`` means ``cuda:LOCAL_RANK``. Each process draws its own noise (process 0 from ``seed``, as a
    single process does), so the loss curve is not bit for bit the single-process one. The returned losses
    are global batch means, the same on every process; every process keeps the EMA (the same numbers
    everywhere); only rank 0 shows the progress bar and writes ``checkpoint_path``, and only rank 0 needs to
    see that file to resume (on another number of processes too).
    Returns:
        the loss of every step since the start of training (including resumed steps), as floats.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs= or steps=")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_positive(lr, "lr")
    eps = _check_loss_args(torch.zeros(1, 1), sde, eps, likelihood_weighting, importance_sampling, uniform_share)
    log_every = check_positive_int(log_every, "log_every")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, got {objective!r}")
    if (isinstance(p_uncond, bool) or not isinstance(p_uncond, (int, float)) or not math.isfinite(p_uncond)
            or not 0.0 <= p_uncond <= 1.0):
        raise ValueError(f"p_uncond must be a probability in [0, 1], got {p_uncond!r}")
    if p_uncond > 0 and objective != "conditional_dsm":
        raise ValueError(f"p_uncond={p_uncond} drops labels of a class-conditional score model: it needs "
                         f"objective='conditional_dsm', not {objective!r}")
    if objective == "time_classifier":
        extras = [name for name, on in [("likelihood_weighting", likelihood_weighting),
                                        ("importance_sampling", importance_sampling), ("dequantize", dequantize)] if on]
        if extras:
            raise ValueError(f"{' and '.join(extras)} {'is' if len(extras) == 1 else 'are'} for score models: the "
                             "objective 'time_classifier' is a plain cross-entropy over t ~ U(eps, 1)")
    # (an unconditional UNet has num_classes None: it then refuses the labels itself, naming them)
    data, labels = _split_data(data, objective, getattr(model, "num_classes", None) or NUM_CLASSES)
    if dequantize and (data.min() < 0 or data.max() > 1):
        raise ValueError("dequantize=True needs data that are 8-bit images scaled to [0, 1] (pixel / 255)")
    if batch_size % dist_env().world_size:
        raise ValueError(f"batch_size={batch_size} (the global batch) must be divisible by the number of torchrun "
                         f"processes, WORLD_SIZE={dist_env().world_size}")
    device = dist_device(model_device(model, device))
    model.to(device).train()
    data = data.to(device, torch.float32)
    labels = labels.to(device) if labels is not None else None
    n = len(data)
    steps_per_epoch = math.ceil(n / batch_size)
    total = (check_positive_int(epochs, "epochs") * steps_per_epoch if epochs is not None
             else check_positive_int(steps, "steps"))

    known_sde = sde_of(sde)
    loss_sde = known_sde if known_sde is not None else sde
    config = dict(batch_size=batch_size, lr=lr, seed=seed, eps=eps, n_train=n, precision=precision,
                  sde=known_sde.config() if known_sde is not None else "custom marginal_prob_std",
                  likelihood_weighting=bool(likelihood_weighting), importance_sampling=bool(importance_sampling),
                  uniform_share=float(uniform_share), dequantize=bool(dequantize), objective=objective,
                  p_uncond=float(p_uncond))
    if getattr(model, "architecture", None) is not None:  # the package's networks: what rebuilds them
        config["architecture"] = model.architecture
    env = init_distributed(device)                      # under torchrun: join its process group (once)
    net = model                                          # what the loss calls; under torchrun, DDP around it
    if env.world_size > 1:                               # averages the processes' gradients during backward()
        net = _DDP(model, device_ids=[device] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    noise_gen = torch.Generator(device=device).manual_seed(_noise_seed(seed, env.rank))
    step, losses, seconds_before = 0, [], 0.0
    ckpt = _read_resume_checkpoint(checkpoint_path, device, env) if resume and checkpoint_path else None
    if ckpt is not None:
        _check_resume_config(checkpoint_path, ckpt.get("config"), config)
        _load_states(ckpt, model, optimizer, ema_model)
        step, losses = int(ckpt["step"]), list(ckpt.get("losses", []))
        seconds_before = ckpt.get("train_seconds")  # None: a checkpoint from before this was recorded
        if (state := _saved_rng(ckpt, device, env)) is not None:
            noise_gen.set_state(state)
    started = time.perf_counter()

    def save():
        if checkpoint_path is None:
            return
        rngs = _gather_rng(noise_gen, env)                  # every process calls save()
        if env.rank == 0:
            save_checkpoint(checkpoint_path, model, optimizer=optimizer, ema_model=ema_model, step=step,
                            losses=losses, rng=rngs[0], rng_device_type=device.type,
                            config=dict(config, total_steps=total),
                            train_seconds=None if seconds_before is None else seconds_before + time.perf_counter() - started,
                            **({"rng_ranks": rngs} if env.world_size > 1 else {}))

    def loss_of(x, y):
        """The objective on one (local) batch; ``y`` is None for ``"dsm"``."""
        if objective == "time_classifier":
            return time_classifier_loss(net, x, y, loss_sde, eps=eps, generator=noise_gen)
        return dsm_loss(net, x, loss_sde, eps=eps, generator=noise_gen, likelihood_weighting=likelihood_weighting,
                        importance_sampling=importance_sampling, uniform_share=uniform_share, y=y, p_uncond=p_uncond)

    bar = tqdm(total=total, initial=step, disable=not progress or env.rank != 0, desc="train", unit="step")
    pending: list[torch.Tensor] = []
    perm, perm_epoch = None, -1
    while step < total:
        epoch, k = divmod(step, steps_per_epoch)
        if epoch != perm_epoch:
            perm, perm_epoch = _epoch_permutation(n, seed, epoch).to(device), epoch
        batch, share = _local_batch(perm[k * batch_size:(k + 1) * batch_size], env)
        x = data[batch]
        if dequantize:
            x = dequantize_images(x, noise_gen)
        with _autocast(device, precision):
            loss = loss_of(x, labels[batch] if labels is not None else None)
        if share != 1.0:                                     # under torchrun: this process's part of the mean
            loss = loss * share
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema_model is not None:
            ema_model.update_parameters(model)
        pending.append(loss.detach())
        step += 1
        if len(pending) == log_every or step == total or step % steps_per_epoch == 0:
            chunk = _global_mean(torch.stack(pending), env).tolist()
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
    ``losses`` and any ``extra`` keyword (:func:`train` adds ``config``, the noise generator's state and
    ``train_seconds``, the wall time of all runs that led to this step, None if an earlier run did not record it).
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
