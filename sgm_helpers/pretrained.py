"""The weights shipped inside the package, and loading score models from checkpoints.

The registry is one JSON file, ``sgm_helpers/weights/manifest.json``, mapping a name to an entry:

    {"mnist-ve25": {"kind": "score_model", "file": "mnist-ve25.pt", "sha256": "...",
                    "sde": {"name": "VESDE", "sigma": 25.0},
                    "architecture": {"class": "ScoreNet", "channels": [32, 64, 128, 256], "embed_dim": 256},
                    "training": {...}},
     "mnist-classifier": {"kind": "classifier", ...}}

``architecture`` names the network's class and its constructor arguments (what ``model.architecture``
returns); :data:`ARCHITECTURES` maps the class name to the class, so every kind is built the same way:
score models (``ScoreNet``, ``UNet``), class-conditional ones (``ConditionalScoreNet``, ``UNet`` with
``num_classes``), noise-conditional classifiers (``TimeClassifier``) and the evaluation classifier.
``sde`` is the SDE a model was trained with (score models divide by its ``marginal_prob_std``).

Every file is a plain state dict. Its sha256 is checked against the manifest before it is read,
and it is read with ``torch.load(..., weights_only=True)``, so a corrupted or replaced file is
refused instead of half-loaded.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .classifier import MNISTClassifier
from .models import (ConditionalScoreNet, ReparameterizedScoreNet, ReparameterizedUNet, ScoreNet, TimeClassifier, UNet,
                     load_tutorial_checkpoint)
from .sde import SDE, VESDE, sde_of
from .training import CHECKPOINT_FORMAT
from .utils import get_device, read_torch_file

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST_NAME = "manifest.json"
DEFAULT_MODEL = "mnist-ve25"
CHECKPOINT_WEIGHTS = ("auto", "ema", "raw")
# The only buffer of the networks here: the fixed Fourier features of the time embedding, never trained.
SCORENET_BUFFERS = ("embed.0.W",)
# Class name -> class, for the ``architecture`` fields of the manifest and of checkpoints. A constructor whose
# first argument is ``marginal_prob_std`` (a score network) gets the model's SDE's; one taking ``sde``, the SDE.
ARCHITECTURES = {cls.__name__: cls for cls in (ScoreNet, ReparameterizedScoreNet, ConditionalScoreNet, UNet,
                                                ReparameterizedUNet, TimeClassifier, MNISTClassifier)}


def sha256_file(path) -> str:
    """The hex sha256 digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest() -> dict:
    """The registry ``weights/manifest.json`` as a dict ``name -> entry`` (empty if there is none)."""
    path = WEIGHTS_DIR / MANIFEST_NAME
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_manifest_entry(name: str, entry: Mapping) -> Path:
    """Add or replace ``name`` in the manifest (written atomically, keys sorted). For the export scripts."""
    manifest = read_manifest()
    manifest[name] = dict(entry)
    path = WEIGHTS_DIR / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def available_models(kind: str | None = None) -> list[str]:
    """Names in the manifest, optionally only those of one ``kind`` (``"score_model"``, ``"classifier"``)."""
    return sorted(name for name, entry in read_manifest().items() if kind is None or entry.get("kind") == kind)


def model_info(name: str = DEFAULT_MODEL, kind: str | None = None) -> dict:
    """The manifest entry of ``name`` (file, sha256, SDE, architecture, training summary...).

    Raises ``ValueError`` listing the known names if ``name`` (of that ``kind``) is not shipped.
    """
    entry = read_manifest().get(name) if isinstance(name, str) else None
    if entry is None or (kind is not None and entry.get("kind") != kind):
        known = ", ".join(repr(n) for n in available_models(kind)) or "none"
        raise ValueError(f"unknown pretrained {kind or 'model'} name {name!r}; known names: {known}")
    return dict(entry)


def load_weights(name: str, kind: str | None = None) -> dict:
    """The state dict shipped as ``name``, after checking its sha256 against the manifest.

    Raises ``ValueError`` for an unknown name or a file whose sha256 does not match, and
    ``FileNotFoundError`` if the file is missing from the installation.
    """
    entry = model_info(name, kind)
    path = WEIGHTS_DIR / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"the weights of {name!r} are missing: {path} (a broken installation?)")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise ValueError(f"sha256 mismatch for {path}: the manifest says {entry['sha256']}, the file has {digest}; "
                         "the file is corrupted or was replaced (reinstall the package)")
    return read_torch_file(path, what=f"the weights of {name!r}")


def scorenet_architecture(state_dict: Mapping) -> dict:
    """``ScoreNet`` constructor arguments (``channels``, ``embed_dim``) read off a state dict's shapes."""
    try:
        channels = [int(state_dict[f"conv{i}.weight"].shape[0]) for i in range(1, 5)]
        embed_dim = int(state_dict["embed.1.weight"].shape[0])
    except (KeyError, AttributeError, IndexError) as err:
        raise ValueError(f"not a ScoreNet state dict (no {err} entry)") from None
    return {"channels": channels, "embed_dim": embed_dim}


def build_model(architecture: Mapping, sde: SDE | None = None) -> torch.nn.Module:
    """A new (untrained) network from its architecture fields ``{"class": name, **constructor arguments}``.

    ``name`` is a key of :data:`ARCHITECTURES`; a score network (a constructor taking ``marginal_prob_std``)
    is built for ``sde``, which it then needs. Raises ``ValueError`` for an unknown class, fields the
    constructor does not take, or a score network without an SDE.
    """
    if not isinstance(architecture, Mapping) or "class" not in architecture:
        raise ValueError(f"architecture must be a dict with a 'class' entry (one of {sorted(ARCHITECTURES)}) and the "
                         f"constructor's arguments, got {architecture!r}")
    fields = dict(architecture)
    name = fields.pop("class")
    cls = ARCHITECTURES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown architecture class {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    signature = inspect.signature(cls)
    needs = [arg for arg in ("marginal_prob_std", "sde") if arg in signature.parameters]
    if needs:
        if not isinstance(sde, SDE):
            raise ValueError(f"sde: {name} is a score network, built for its SDE; "
                             f"give that SDE (a VESDE, VPSDE or subVPSDE), got {sde!r}")
        fields.update({arg: sde if arg == "sde" else sde.marginal_prob_std for arg in needs})
    try:
        signature.bind(**fields)
    except TypeError as err:
        raise ValueError(f"architecture fields {sorted(architecture)} do not fit {name}{signature}: {err}") from None
    return cls(**fields)


def model_from_state_dict(state_dict: Mapping, architecture: Mapping, sde: SDE | None = None) -> torch.nn.Module:
    """The network ``architecture`` describes (see :func:`build_model`), with ``state_dict`` loaded, in eval mode.

    Raises ``ValueError`` naming missing, unexpected or mis-shaped keys if the weights are not that network's.
    """
    model = build_model(architecture, sde)
    load_tutorial_checkpoint(model, state_dict)
    return model.eval()


def scorenet_from_state_dict(state_dict: Mapping, sde: SDE) -> ScoreNet:
    """A ``ScoreNet`` for ``sde`` of the architecture the state dict has, with its weights loaded, in eval mode."""
    return model_from_state_dict(state_dict, {"class": "ScoreNet", **scorenet_architecture(state_dict)}, sde)


def pretrained_sde(name: str = DEFAULT_MODEL) -> SDE:
    """The SDE the shipped model ``name`` was trained for, rebuilt from its manifest entry
    (``VESDE(sigma=25)`` for ``"mnist-ve25"``). Score models, class-conditional ones and noise-conditional
    classifiers record one; asking for that of a model that records none (the evaluation classifier) is a
    ``ValueError``, as is an unknown name (listing the known ones)."""
    entry = model_info(name)
    if not isinstance(entry.get("sde"), Mapping):
        with_sde = ", ".join(repr(n) for n, e in sorted(read_manifest().items()) if isinstance(e.get("sde"), Mapping))
        raise ValueError(f"the shipped {entry.get('kind', 'model')} {name!r} records no SDE; models with one: "
                         f"{with_sde or 'none'}")
    return SDE.from_config(entry["sde"])


def load_pretrained(name: str = DEFAULT_MODEL, device=None) -> torch.nn.Module:
    """The shipped model ``name``, built from its manifest entry, in eval mode on ``device`` (default ``get_device()``).

    The network is the entry's ``architecture`` (a ``ScoreNet`` for ``"mnist-ve25"``; a ``UNet``, a
    ``ConditionalScoreNet``, a ``TimeClassifier``... for others: :data:`ARCHITECTURES`). The file's sha256 is
    checked before it is read (``weights_only=True``). A score model divides by the ``marginal_prob_std`` of
    its SDE; get that SDE (for the samplers and the likelihood) with :func:`pretrained_sde`::

        score_model, sde = load_pretrained(), pretrained_sde()
        x = pc_sampler(score_model, sde, (16, 1, 28, 28))

    Raises ``ValueError`` for an unknown name (listing the known ones) or a sha256 mismatch.
    """
    entry = model_info(name)
    sde = pretrained_sde(name) if isinstance(entry.get("sde"), Mapping) else None
    model = model_from_state_dict(load_weights(name), entry.get("architecture"), sde)
    return model.to(get_device() if device is None else torch.device(device))


def checkpoint_state_dict(ckpt: Mapping, which: str = "auto") -> dict:
    """The score model's plain state dict held in a checkpoint.

    Args:
        ckpt: a package checkpoint (``training.save_checkpoint``: keys ``model`` and ``ema``, the
            latter an ``AveragedModel`` state dict with ``module.``-prefixed keys and ``n_averaged``),
            or a plain state dict (the original tutorial's ``ckpt.pth``).
        which: ``"ema"`` (the exponential moving average), ``"raw"`` (the trained weights), or
            ``"auto"`` (the EMA if the checkpoint has one, else the raw weights).
    Buffers that ``AveragedModel`` does not average (the fixed Fourier features ``W``) are taken from
    the raw model, which is where they are kept up to date.
    """
    which_resolved = resolve_checkpoint_weights(ckpt, which)
    if ckpt.get("format") != CHECKPOINT_FORMAT:  # a plain state dict
        if which == "ema":
            raise ValueError("this checkpoint is a plain state dict and holds no EMA weights; use which='raw'")
        return dict(ckpt)
    raw = dict(ckpt["model"])
    if which_resolved == "raw":
        return raw
    if ckpt.get("ema") is None:
        raise ValueError("this checkpoint holds no EMA weights (trained without ema_model); use which='raw'")
    ema = {k[len("module."):]: v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    if set(ema) != set(raw):
        raise ValueError("the checkpoint's EMA and model weights have different keys")
    return {k: (raw[k] if k in SCORENET_BUFFERS else ema[k]) for k in raw}


def read_checkpoint(path) -> dict:
    """Read a checkpoint file (``weights_only=True``) into a dict, without loading it into a model.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for one that cannot be read.
    """
    return read_torch_file(path)


def resolve_checkpoint_weights(ckpt: Mapping, which: str = "auto") -> str:
    """``"ema"`` or ``"raw"``: what ``which`` picks in this checkpoint (``"auto"``: the EMA if it has one)."""
    if which not in CHECKPOINT_WEIGHTS:
        raise ValueError(f"which must be one of {CHECKPOINT_WEIGHTS}, got {which!r}")
    if which != "auto":
        return which
    return "ema" if ckpt.get("format") == CHECKPOINT_FORMAT and ckpt.get("ema") is not None else "raw"


def checkpoint_sde(ckpt: Mapping) -> SDE | None:
    """The SDE a package checkpoint records in its config (None for a tutorial ``ckpt.pth`` or an old checkpoint)."""
    config = ckpt.get("config") if ckpt.get("format") == CHECKPOINT_FORMAT else None
    recorded = (config or {}).get("sde")
    return SDE.from_config(recorded) if isinstance(recorded, dict) else None


def checkpoint_architecture(ckpt: Mapping) -> dict:
    """The architecture fields of the network in a checkpoint (``{"class": ..., **constructor arguments}``).

    The one its training config records (``config["architecture"]``, the model's ``architecture``), else,
    for a tutorial ``ckpt.pth`` or a checkpoint that records none, a ``ScoreNet`` read off the weights'
    shapes (``ValueError`` if they are not a ScoreNet's).
    """
    config = ckpt.get("config") if ckpt.get("format") == CHECKPOINT_FORMAT else None
    recorded = (config or {}).get("architecture")
    if isinstance(recorded, Mapping):
        return dict(recorded)
    return {"class": "ScoreNet", **scorenet_architecture(checkpoint_state_dict(ckpt, "raw"))}


def checkpoint_model(ckpt: Mapping, sde: SDE | None, which: str = "auto") -> torch.nn.Module:
    """The network held in a checkpoint dict, built by :func:`checkpoint_architecture` for ``sde``, with its
    ``which`` weights (see :func:`checkpoint_state_dict`), in eval mode."""
    return model_from_state_dict(checkpoint_state_dict(ckpt, which), checkpoint_architecture(ckpt), sde)


def resolve_sde(ckpt: Mapping, sde=None, source: str = "the checkpoint") -> SDE:
    """The SDE to use with a checkpoint: the one it records, checked against ``sde`` if both are known.

    ``sde`` (an SDE, a config or a short name) is needed for a checkpoint that records none (the
    tutorial's ``ckpt.pth``: then ``VESDE(25)`` is the default); giving one that differs from what the
    checkpoint records is an error naming both.
    """
    recorded = checkpoint_sde(ckpt)
    wanted = None if sde is None else SDE.from_config(sde_of(sde) or sde)
    if recorded is not None and wanted is not None and recorded != wanted:
        raise ValueError(f"{source} was trained with {recorded}, not {wanted}: a score model only fits its own SDE")
    return recorded or wanted or VESDE(25.0)


def load_score_checkpoint(path, *, sde=None, which: str = "auto",
                          device=None) -> tuple[torch.nn.Module, SDE]:
    """Load a score model from a package checkpoint or a tutorial ``ckpt.pth``: returns ``(model, sde)``.

    Package checkpoints record their SDE, which is used (and ``sde``, if given, must match it). A
    tutorial ``ckpt.pth`` records none: give ``sde`` (default ``VESDE(25)``, the tutorial's).
    ``which`` picks the EMA or raw weights (see :func:`checkpoint_state_dict`). The network is the one
    the checkpoint's config records (a ``UNet``, a ``ConditionalScoreNet``...), else a ``ScoreNet`` read
    off the weights' shapes (see :func:`checkpoint_architecture`). Raises ``FileNotFoundError`` for a
    missing file and ``ValueError`` for one that cannot be read, whose weights do not fit the recorded
    architecture (or, recording none, are not a ``ScoreNet``'s) or that was trained for another SDE.
    """
    ckpt = read_checkpoint(path)
    sde = resolve_sde(ckpt, sde, str(path))
    model = checkpoint_model(ckpt, sde, which)
    return model.to(get_device() if device is None else torch.device(device)), sde
