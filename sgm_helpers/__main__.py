"""Command-line entry point: ``python -m sgm_helpers`` (installed as ``sgm-helpers``).

    python -m sgm_helpers sample --sampler pc --n 64 --steps 500 --seed 0 --out samples.png
    python -m sgm_helpers sample --class 3 --guidance classifier --out threes.png   # its default scale
    python -m sgm_helpers sample --class 3 --guidance cfg --scale 1 --out threes.png
    python -m sgm_helpers inpaint --index 0 1 2 3 --mask bottom --out inpaint.png
    python -m sgm_helpers train --epochs 50 --out ckpt.pt
    python -m sgm_helpers bpd --n 1000
    python -m sgm_helpers evaluate

``sample``, ``inpaint``, ``bpd`` and ``evaluate`` use the score model shipped with the package
("mnist-ve25", a VE SDE with sigma = 25) unless ``--checkpoint`` names another (a file, or ``-`` to read
it from standard input: ``... --checkpoint - < ckpt.pt``). ``sample --class K`` draws digits of class K:
with ``--guidance classifier`` the score model is guided by the shipped noise-conditional classifier
("mnist-time-classifier", or ``--classifier-checkpoint``), with ``--guidance cfg`` the shipped
class-conditional model ("mnist-conditional", or ``--checkpoint``) runs classifier-free guidance; both
train with ``scripts/train_pretrained.py --model time-classifier|conditional``. Samplers come from
one registry (``sgm_helpers.samplers.SAMPLERS``: em, pc, ancestral, ode, heun, heun-churn, dpm2m); SDEs
are chosen with ``--sde ve|vp|subvp``.
``train`` runs unchanged under ``torchrun --nproc_per_node=N -m sgm_helpers train ...`` (data-parallel,
the same global ``--batch-size``; rank 0 prints and writes the checkpoint).
Bad arguments give a one-line ``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import torch

from .controllable import DEFAULT_SCALES, INPAINT_GUIDANCE, INPAINT_RESAMPLINGS, MASK_REGIONS
from .likelihood import DEFAULT_EPS
from .pretrained import DEFAULT_MODEL
from .samplers import SAMPLERS
from .sde import SDE_NAMES

GUIDANCE = {"classifier": "mnist-time-classifier", "cfg": "mnist-conditional"}  # --guidance -> its shipped model
# The networks the commands load, by the manifest's kind: what train() recorded as the objective of a checkpoint
# holding one, in words, and how to train one.
KINDS = {
    "score_model": ("dsm", "an unconditional score model", "python scripts/train_pretrained.py --out runs/{name}.pt"),
    "conditional_score_model": ("conditional_dsm", "a class-conditional score model",
                                "python scripts/train_pretrained.py --model conditional --out runs/{name}.pt"),
    "time_classifier": ("time_classifier", "a noise-conditional classifier",
                        "python scripts/train_pretrained.py --model time-classifier --out runs/{name}.pt"),
}
IMAGE_SIZE = 28


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``error: <what> (see '<prog> --help')``."""

    def error(self, message):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value
    return parse


_positive_int, _nonnegative_int = _int_at_least(1), _int_at_least(0)

STDIN = "-"


def _checkpoint_file(text: str):
    """An argparse type for --checkpoint: ``-`` (standard input) or an existing file (``~`` expanded)."""
    if text == STDIN:
        return STDIN
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"not a file: {text!r}")
    return path


def _digit_class(text: str) -> int:
    """An argparse type for --class: an MNIST digit, 0 to 9."""
    if text.strip() not in [str(k) for k in range(10)]:
        raise argparse.ArgumentTypeError(f"must be a digit class 0-9, got {text!r}")
    return int(text)


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _image_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return path


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _add_sde_arguments(parser, *, for_checkpoint: bool) -> None:
    """--sde and its parameters; for a model to load they default to None (read from the checkpoint or manifest)."""
    when = "with --checkpoint of the tutorial (which records no SDE), or to check the model's SDE: " if for_checkpoint else ""
    parser.add_argument("--sde", choices=sorted(SDE_NAMES), default=None if for_checkpoint else "ve",
                        help=f"{when}the SDE (default: {'the one the model records' if for_checkpoint else 've'})")
    parser.add_argument("--sigma", type=_positive_float, default=None, help="VE: sigma (default: 25; implies --sde ve)")
    parser.add_argument("--beta-min", type=_positive_float, default=None, help="VP and sub-VP: beta_min (default: 0.1)")
    parser.add_argument("--beta-max", type=_positive_float, default=None, help="VP and sub-VP: beta_max (default: 20)")


def build_parser() -> argparse.ArgumentParser:
    from .training import PRECISIONS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", help="cpu, cuda, cuda:1, mps... (default: the best available)")
    common.add_argument("--seed", type=_nonnegative_int, default=0, help="random seed (default: 0)")
    common.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--checkpoint", type=_checkpoint_file,
                       help="a checkpoint from 'train' (or the original tutorial's ckpt.pth) instead of the "
                            "shipped model; '-' reads it from standard input")
    model.add_argument("--weights", choices=["auto", "ema", "raw"], default="auto",
                       help="with --checkpoint: the EMA or the raw weights (auto: EMA if present)")
    model.add_argument("--model", default=None,
                       help=f"name of a shipped model (default: {DEFAULT_MODEL}; sample --guidance cfg: "
                            f"{GUIDANCE['cfg']})")
    _add_sde_arguments(model, for_checkpoint=True)
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-dir", type=Path, help="MNIST root (default: $SGM_DATA_DIR or ~/.cache/sgm_helpers)")
    data.add_argument("--no-download", action="store_true", help="fail instead of downloading MNIST")
    sampling = argparse.ArgumentParser(add_help=False)
    sampling.add_argument("--steps", type=_positive_int,
                          help="steps of the sampler (default: em and pc 500, ancestral 1000, heun 18; the ode "
                               "sampler is adaptive)")
    sampling.add_argument("--snr", type=_positive_float, default=0.16, help="pc corrector's signal-to-noise ratio")
    sampling.add_argument("--eps", type=float, default=1e-3, help="final time of sampling (default: 1e-3)")

    parser = _Parser(prog="python -m sgm_helpers", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sample,inpaint,train,bpd,evaluate}")

    p = sub.add_parser("sample", parents=[common, model, sampling], help="draw digits and save them as a PNG grid",
                       description="Draw samples with a sampler and save them as one PNG grid (pixels clipped to "
                                   "[0, 1] for display).")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="pc",
                   help=", ".join(f"{k}: {v.label}" for k, v in SAMPLERS.items()) + " (default: pc)")
    p.add_argument("--n", type=_positive_int, default=64, help="number of samples (default: 64)")
    p.add_argument("--out", type=Path, default=Path("samples.png"), help="output PNG (default: samples.png)")
    p.add_argument("--nrow", type=_positive_int, help="images per row (default: a square)")
    p.add_argument("--class", dest="digit", type=_digit_class, metavar="K",
                   help="draw digits of class K (0-9) with --guidance")
    p.add_argument("--guidance", choices=sorted(GUIDANCE), default=None,
                   help="with --class: 'classifier' guides the score model (--model/--checkpoint) with a noise-"
                        f"conditional classifier ({GUIDANCE['classifier']}, or --classifier-checkpoint); 'cfg' is "
                        f"classifier-free guidance with a class-conditional model ({GUIDANCE['cfg']}, or "
                        "--checkpoint) (default: classifier)")
    p.add_argument("--scale", type=_nonnegative_float, default=None,
                   help="with --class: the guidance scale, >= 0. Classifier: s + scale grad log p_t(y|x); cfg: "
                        "(1 - w) s(x, t) + w s(x, t, y) with w = scale. 1 is the plain conditional distribution, "
                        "larger values sharpen it (default: the smallest scale at which the model card measured >= "
                        "97%% of the samples as the requested digit: "
                        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_SCALES.items()) + ")")
    p.add_argument("--classifier-checkpoint", type=_checkpoint_file,
                   help="with --guidance classifier: a checkpoint of a noise-conditional classifier trained by "
                        "scripts/train_pretrained.py --model time-classifier, instead of the shipped one")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("inpaint", parents=[common, model, data, sampling],
                       help="fill in a masked region of digits; save original / masked / completion as a PNG grid",
                       description="Inpainting (the paper's imputation): the known pixels are replaced at every step "
                                   "of the reverse-time sampler by the data noised to that time, the masked region is "
                                   "sampled with the score guided towards the known pixels (reconstruction guidance "
                                   "through Tweedie's denoiser); --resamplings > 1 adds RePaint's resampling. "
                                   "Writes one PNG grid with "
                                   "three rows: the originals, the masked inputs (the region to fill in gray) and the "
                                   "completions.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--index", type=_nonnegative_int, nargs="+", default=None,
                        help="MNIST test digits by index (default: 0 to 7)")
    source.add_argument("--image", type=_image_file,
                        help="an image file instead: a light digit on a dark background, as MNIST (see --invert); "
                             "converted to grayscale and resized to 28x28")
    p.add_argument("--invert", action="store_true", help="with --image: a dark digit on a light background")
    p.add_argument("--mask", choices=MASK_REGIONS, default="bottom",
                   help="the region to fill in: a half of the image, or a square (default: bottom)")
    p.add_argument("--square-size", type=_positive_int, default=None, help="--mask square: its side (default: 14)")
    p.add_argument("--square-at", type=_nonnegative_int, nargs=2, metavar=("ROW", "COL"),
                   help="--mask square: its top-left pixel (default: centred)")
    p.add_argument("--resamplings", type=_positive_int, default=INPAINT_RESAMPLINGS,
                   help="RePaint's resamplings per step: each step is done U times (1: none; "
                        f"default: {INPAINT_RESAMPLINGS}, chosen on held-out digits)")
    p.add_argument("--reconstruction-guidance", type=_nonnegative_float, default=INPAINT_GUIDANCE, metavar="SCALE",
                   help="scale of the reconstruction guidance term, >= 0 (0: the paper's replacement alone; "
                        f"default: {INPAINT_GUIDANCE:g}, chosen on held-out digits)")
    p.add_argument("--corrector", action="store_true",
                   help="a Langevin corrector step before each Euler-Maruyama step (twice the score evaluations)")
    p.add_argument("--out", type=Path, default=Path("inpaint.png"), help="output PNG (default: inpaint.png)")
    p.set_defaults(func=cmd_inpaint)

    p = sub.add_parser("train", parents=[common, data], help="train a ScoreNet (resumes from --out)",
                       description="Train the tutorial's ScoreNet on the MNIST training split with denoising score "
                                   "matching and an EMA of the weights. A checkpoint is written to --out after every "
                                   "epoch; if --out exists, training resumes from it.")
    p.add_argument("--epochs", type=_positive_int, default=50, help="total epochs (default: 50)")
    p.add_argument("--out", type=Path, default=Path("ckpt.pt"), help="checkpoint path (default: ckpt.pt)")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--lr", type=_positive_float, default=2e-4)
    p.add_argument("--ema-decay", type=float, default=0.999)
    _add_sde_arguments(p, for_checkpoint=False)
    p.add_argument("--likelihood-weighting", action="store_true",
                   help="weight the loss by g(t)^2 (a bound on the negative log-likelihood) instead of std(t)^2")
    p.add_argument("--importance-sampling", action="store_true",
                   help="with --likelihood-weighting: draw t with density g^2 / std^2 (same loss, lower variance)")
    p.add_argument("--dequantize", action="store_true", help="train on uniformly dequantized images")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="bfloat16: forward pass under autocast, float32 weights; faster on CPUs with bfloat16 "
                        "instructions and on recent GPUs (default: float32)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bpd", parents=[common, model, data], help="bits/dim on the MNIST test split",
                       description="Bits/dim of the first --n MNIST test images (uniform dequantization, "
                                   "probability-flow ODE likelihood with a Hutchinson trace estimate).")
    p.add_argument("--n", type=_positive_int, default=1000, help="number of test images (default: 1000)")
    p.add_argument("--batch-size", type=_positive_int, default=100)
    p.add_argument("--hutchinson", choices=["rademacher", "gaussian"], default="rademacher",
                   help="Hutchinson probes (default: rademacher; gaussian is the tutorial's)")
    p.add_argument("--json", type=Path, help="also write the result to this JSON file")
    p.set_defaults(func=cmd_bpd)

    p = sub.add_parser("evaluate", parents=[common, model, data, sampling], help="recompute the model card's numbers",
                       description="Recompute the model card's numbers: the classifier's test accuracy, bits/dim on "
                                   "the test split, and for each sampler the Fréchet distance to the test split, the "
                                   "confidently classified share, the class histogram, score evaluations and wall "
                                   "time. Writes sample grids and a JSON file to --out-dir.")
    p.add_argument("--bpd-n", type=_nonnegative_int, default=10000, help="test images for bits/dim (0 skips)")
    p.add_argument("--bpd-start", type=_nonnegative_int, default=0,
                   help="the first test image for bits/dim: split the 10,000 over processes with disjoint ranges "
                        "(scripts/model_card_tables.py merges them; default: 0)")
    p.add_argument("--bpd-batch-size", type=_positive_int, default=100)
    p.add_argument("--bpd-eps", type=float, default=DEFAULT_EPS,
                   help="bits/dim of the model's density at t = eps: where the probability-flow ODE starts from "
                        f"the data (default: {DEFAULT_EPS:g})")
    p.add_argument("--hutchinson", choices=["rademacher", "gaussian"], default="rademacher",
                   help="Hutchinson probes for bits/dim (default: rademacher; gaussian is the tutorial's)")
    p.add_argument("--n-samples", type=_positive_int, default=2000, help="samples per sampler (default: 2000)")
    p.add_argument("--batch-size", type=_positive_int, default=500, help="samples drawn per batch")
    p.add_argument("--samplers", nargs="*", choices=sorted(SAMPLERS), default=["em", "pc", "ode"],
                   help="samplers to score (default: em pc ode; none: bits/dim only)")
    p.add_argument("--curve", type=_curve_points, nargs="+", default=None, metavar="SAMPLER[:STEPS,...]",
                   help="also the Fréchet distance against score evaluations: each sampler at each step count, "
                        "e.g. heun:5,10,18 dpm2m:10,20 em:100,1000 ode (adaptive: no steps)")
    p.add_argument("--option", type=_sampler_option, action="append", default=None, metavar="SAMPLER:NAME=VALUE",
                   help="a setting of one sampler's function, wherever that sampler runs (repeatable), e.g. "
                        "heun-churn:s_churn=40 em:denoise=true; the JSON records it with each result")
    p.add_argument("--holdout", type=_nonnegative_int, default=0, metavar="N",
                   help="score against the last N training images instead of the test split (the images the "
                        "training script holds out with --holdout N), for choices such as sampler settings or "
                        "checkpoints; the real-data floor is drawn from the other training images (default: 0, the "
                        "test split)")
    p.add_argument("--out-dir", type=Path, default=Path("docs"), help="where grids and JSON go (default: docs/)")
    p.add_argument("--json", type=Path, help="results file (default: <out-dir>/evaluation.json)")
    p.set_defaults(func=cmd_evaluate)
    return parser


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _device(args) -> torch.device:
    from .utils import get_device

    if args.device is None:
        return get_device()
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ValueError(f"--device {args.device!r} is not a device (cpu, cuda, cuda:1, mps, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {args.device}: MPS is not available on this machine")
    return device


def _sde_from_args(args):
    """The SDE that --sde and its parameters describe, or None when --sde was not given."""
    from .sde import make_sde

    if args.sde is None:
        if args.beta_min is not None or args.beta_max is not None:
            raise ValueError("--beta-min and --beta-max need --sde vp or --sde subvp")
        if args.sigma is None:
            return None
    if args.sde in (None, "ve"):  # --sigma alone means the VE SDE, as it did before --sde existed
        if args.beta_min is not None or args.beta_max is not None:
            raise ValueError("--beta-min and --beta-max are for --sde vp or subvp, not ve")
        return make_sde("ve", sigma=25.0 if args.sigma is None else args.sigma)
    if args.sigma is not None:
        raise ValueError(f"--sigma is for --sde ve, not {args.sde}")
    return make_sde(args.sde, beta_min=0.1 if args.beta_min is None else args.beta_min,
                    beta_max=20.0 if args.beta_max is None else args.beta_max)


def _score_model(args, device, kind: str = "score_model"):
    """``(network, sde, description)`` from --checkpoint, or the shipped --model: a score model, or another ``kind``
    (:data:`KINDS`); --sde must match the model."""
    from .pretrained import load_pretrained, pretrained_sde, resolve_sde

    wanted = _sde_from_args(args)
    if args.checkpoint is not None:
        ckpt, name = _read_network_checkpoint(args.checkpoint, "--checkpoint", kind)
        sde = resolve_sde(ckpt, wanted, f"--checkpoint {args.checkpoint}")
        return _checkpoint_network(ckpt, sde, args.weights, device, name)
    model_name = args.model or (GUIDANCE["cfg"] if kind == "conditional_score_model" else DEFAULT_MODEL)
    info = _shipped_info(model_name, kind, "--checkpoint", "--model")
    sde = pretrained_sde(model_name)
    if wanted is not None and wanted != sde:
        raise ValueError(f"--model {model_name} was trained with {sde}, not --sde {args.sde} ({wanted})")
    model = load_pretrained(model_name, device=device)
    return model, sde, f"the shipped model {model_name!r} ({info.get('weights', '')} weights, {sde})"


def _time_classifier(args, sde, device):
    """``(classifier, description)``: --classifier-checkpoint or the shipped one; it must know the score model's SDE."""
    from .pretrained import checkpoint_sde, load_pretrained, pretrained_sde

    if args.classifier_checkpoint is not None:
        ckpt, name = _read_network_checkpoint(args.classifier_checkpoint, "--classifier-checkpoint", "time_classifier")
        trained_on, source = checkpoint_sde(ckpt), f"--classifier-checkpoint {args.classifier_checkpoint}"
    else:
        name = GUIDANCE["classifier"]
        _shipped_info(name, "time_classifier", "--classifier-checkpoint")
        trained_on, source = pretrained_sde(name), f"the shipped classifier {name!r}"
    if trained_on is not None and trained_on != sde:
        raise ValueError(f"{source} was trained on images noised by {trained_on}, but the score model's SDE is {sde}: "
                         "classifier guidance needs both on the same SDE")
    if args.classifier_checkpoint is None:
        return load_pretrained(name, device=device), source
    classifier, _, description = _checkpoint_network(ckpt, sde, "auto", device, name)
    return classifier, description


def _read_network_checkpoint(checkpoint, option: str, kind: str):
    """``(checkpoint dict, description)`` of --checkpoint-like ``option``; a checkpoint whose training recorded
    another objective than ``kind``'s is refused, naming both."""
    from .pretrained import read_checkpoint

    ckpt = read_checkpoint(_stdin_checkpoint() if checkpoint == STDIN else checkpoint)
    config = ckpt.get("config")
    objective = config.get("objective") if isinstance(config, dict) else None   # None: not written by train()
    wanted, what, _ = KINDS[kind]
    if objective is not None and objective != wanted:
        held = next((words for obj, words, _ in KINDS.values() if obj == objective), "another network")
        raise ValueError(f"{option} {checkpoint} holds {held} (trained with objective={objective!r}), but this "
                         f"needs {what}")
    return ckpt, "standard input" if checkpoint == STDIN else str(checkpoint)


def _checkpoint_network(ckpt, sde, weights: str, device, name: str):
    """``(network, sde, description)``: the network a checkpoint holds, built from its recorded architecture."""
    from .pretrained import checkpoint_model, resolve_checkpoint_weights

    which = resolve_checkpoint_weights(ckpt, weights)
    return checkpoint_model(ckpt, sde, which).to(device), sde, f"{name} ({which} weights, {sde})"


def _shipped_info(name: str, kind: str, checkpoint_option: str, name_option: str | None = None) -> dict:
    """The manifest entry of the shipped model ``name``, which must be of ``kind``. A model of this package that is
    not (yet) shipped is an error saying how to train one and pass it with ``checkpoint_option``."""
    from .pretrained import available_models, model_info

    _, what, train_command = KINDS[kind]
    if name not in available_models() and name in GUIDANCE.values():
        raise ValueError(f"the shipped model {name!r} ({what}) is not in this installation: train one with "
                         f"'{train_command.format(name=name)}' (from a clone of the repository, MNIST in "
                         f"$SGM_DATA_DIR) and pass it with {checkpoint_option} runs/{name}.pt")
    info = model_info(name)
    if info.get("kind") != kind:
        raise ValueError(f"{name_option or 'the shipped model'} {name} is a {info.get('kind')}, not {what}; shipped "
                         f"models of that kind ({kind}): {', '.join(available_models(kind)) or 'none'}")
    return info


def _stdin_checkpoint() -> io.BytesIO:
    """All of standard input, as the seekable binary file ``torch.load`` needs."""
    if sys.stdin is None or sys.stdin.isatty():
        raise ValueError("--checkpoint - reads the checkpoint from standard input, which is a terminal here; "
                         "pipe or redirect a file into it (--checkpoint - < ckpt.pt)")
    data = sys.stdin.buffer.read()
    if not data:
        raise ValueError("--checkpoint -: standard input is empty")
    buffer = io.BytesIO(data)
    buffer.name = "<stdin>"
    return buffer


def _load_split(args, train: bool):
    from .data import load_mnist

    return load_mnist(train=train, root=args.data_dir, download=not args.no_download)


# ---------------------------------------------------------------------------------------------------------------
# subcommands


def _guided_score(args, device):
    """``(score function, sde, description)`` for --class with --guidance (classifier guidance or cfg)."""
    from .controllable import cfg_score, classifier_guided_score

    guidance = args.guidance or "classifier"
    scale = DEFAULT_SCALES[guidance] if args.scale is None else args.scale
    if guidance == "cfg":
        if args.classifier_checkpoint is not None:
            raise ValueError("--classifier-checkpoint is for --guidance classifier; classifier-free guidance (cfg) "
                             "uses the class-conditional model itself (--checkpoint or --model)")
        model, sde, source = _score_model(args, device, kind="conditional_score_model")
        return (cfg_score(model, args.digit, scale), sde,
                f"{source} with classifier-free guidance towards class {args.digit}, w = {scale:g}")
    if args.checkpoint == STDIN and args.classifier_checkpoint == STDIN:
        raise ValueError("--checkpoint - and --classifier-checkpoint -: standard input holds only one of them")
    model, sde, source = _score_model(args, device)
    classifier, classifier_source = _time_classifier(args, sde, device)
    return (classifier_guided_score(model, classifier, args.digit, scale), sde,
            f"{source} guided towards class {args.digit} by {classifier_source}, scale {scale:g}")


def cmd_sample(args) -> int:
    if args.out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file, got {args.out}")
    if args.digit is None:
        given = [name for name, value in (("--guidance", args.guidance), ("--scale", args.scale),
                                          ("--classifier-checkpoint", args.classifier_checkpoint)) if value is not None]
        if given:
            raise ValueError(f"{given[0]} guides the samples towards a class: give it with --class K (0-9)")
    device = _device(args)
    model, sde, source = _score_model(args, device) if args.digit is None else _guided_score(args, device)
    steps = args.steps
    if SAMPLERS[args.sampler].default_steps is None and steps is not None:
        print("note: the ode sampler is adaptive (RK45, rtol = atol = 1e-5); --steps is not used", file=sys.stderr)
        steps = None
    from .evaluation import draw_samples
    from .plotting import save_image_grid

    options = {"snr": args.snr} if args.sampler == "pc" else {}
    x, nfe, wall = draw_samples(args.sampler, model, sde, args.n, steps=steps, eps=args.eps, batch_size=args.n,
                                generator=torch.Generator().manual_seed(args.seed), device=device,
                                progress=not args.no_progress, **options)
    path = save_image_grid(x, args.out, args.nrow)
    print(f"wrote {path}: {args.n} samples from {source}, {SAMPLERS[args.sampler].label} sampler, "
          f"{sum(nfe)} score evaluations, {wall:.1f} s on {device} (pixels clipped to [0, 1] for display)")
    return 0


def _inpaint_inputs(args) -> tuple[torch.Tensor, str]:
    """``([B, 1, 28, 28] images in [0, 1], description)`` from --image or the MNIST test digits --index."""
    if args.image is not None:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(args.image) as img:
                gray = img.convert("L")
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"--image {args.image}: not an image file that PIL can read ({err})") from None
        note = ""
        if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
            note = f", resized from {gray.size[0]}x{gray.size[1]}"
            gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
        x = torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8).float().div(255.0)
        x = x.reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE)
        return (1.0 - x if args.invert else x), f"{args.image}{' (inverted)' if args.invert else ''}{note}"
    if args.invert:
        raise ValueError("--invert is for --image (MNIST digits are already light on dark)")
    images, _ = _load_split(args, train=False)
    indices = args.index if args.index is not None else list(range(8))
    bad = [i for i in indices if i >= len(images)]
    if bad:
        raise ValueError(f"--index {bad[0]} is past the MNIST test split (indices 0 to {len(images) - 1})")
    return images[indices], f"MNIST test digits {' '.join(map(str, indices))}"


def cmd_inpaint(args) -> int:
    from .controllable import inpaint, region_mask
    from .plotting import save_image_grid
    from .samplers import CountingModel

    if args.out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file, got {args.out}")
    if args.mask != "square" and (args.square_at is not None or args.square_size is not None):
        raise ValueError(f"--square-size and --square-at place --mask square, not --mask {args.mask}")
    try:
        known = region_mask(args.mask, IMAGE_SIZE, square_size=args.square_size, square_at=args.square_at)
    except ValueError as err:  # say it in the CLI's words
        raise ValueError(str(err).replace("square_size", "--square-size").replace("square_at", "--square-at")) from None
    images, what = _inpaint_inputs(args)
    device = _device(args)
    model, sde, source = _score_model(args, device)
    counted = CountingModel(model)
    steps = 500 if args.steps is None else args.steps
    t0 = time.perf_counter()
    completion = inpaint(counted, sde, images, known, num_steps=steps, snr=args.snr, eps=args.eps,
                         resamplings=args.resamplings, guidance=args.reconstruction_guidance,
                         corrector=args.corrector, device=device,
                         generator=torch.Generator().manual_seed(args.seed), progress=not args.no_progress).cpu()
    wall = time.perf_counter() - t0
    masked = torch.where(known.bool(), images, torch.full_like(images, 0.5))
    path = save_image_grid(torch.cat([images, masked, completion]), args.out, nrow=len(images))
    print(f"wrote {path}: {what} with the {args.mask if args.mask == 'square' else args.mask + ' half'} filled in by "
          f"{source}; {steps} steps x {args.resamplings} resampling(s), reconstruction guidance "
          f"{args.reconstruction_guidance:g}"
          f"{' with a Langevin corrector' if args.corrector else ''}, {counted.calls} score evaluations, "
          f"{wall:.1f} s on {device}. Rows: original, masked (region to fill in gray), completion (pixels clipped "
          "to [0, 1] for display)")
    return 0


def cmd_train(args) -> int:
    from .models import ScoreNet
    from .training import load_checkpoint, make_ema, train
    from .utils import broadcast_object, init_distributed, local_rank0_first, seed_everything

    device = _device(args)
    env = init_distributed(device)  # under torchrun: one process per GPU, rank 0 prints; a no-op otherwise
    say = print if env.rank == 0 else (lambda *a, **k: None)
    seed_everything(args.seed)  # also fixes the random Fourier features of the time embedding
    sde = _sde_from_args(args)
    model = ScoreNet(sde.marginal_prob_std)
    ema = make_ema(model, args.ema_decay)
    with local_rank0_first():  # one download per machine
        images, _ = _load_split(args, train=True)
    total = args.epochs * -(-len(images) // args.batch_size)
    done = int(load_checkpoint(args.out)["step"]) if env.rank == 0 and args.out.is_file() else None
    done = broadcast_object(done)  # only rank 0 needs to see the file
    if done is not None:
        if done >= total:
            say(f"{args.out} already holds {done} steps, at least --epochs {args.epochs} ({total} steps); "
                "give a larger --epochs to train on")
            return 0
        say(f"resuming from {args.out} (step {done} of {total})")
    where = device if env.world_size == 1 else f"{env.world_size} processes ({device.type})"
    say(f"training on {len(images)} MNIST training images for {args.epochs} epochs on {where}; "
        f"checkpoint: {args.out}")
    losses = train(model, images, sde, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   device=device, checkpoint_path=args.out, ema_model=ema, seed=args.seed, resume=True,
                   progress=not args.no_progress, precision=args.precision,
                   likelihood_weighting=args.likelihood_weighting, importance_sampling=args.importance_sampling,
                   dequantize=args.dequantize)
    tail = losses[-100:]
    say(f"saved {args.out}: {len(losses)} steps, mean loss of the last {len(tail)} steps "
        f"{sum(tail) / max(len(tail), 1):.2f}")
    say(f"draw samples with: python -m sgm_helpers sample --checkpoint {args.out}  (the checkpoint records {sde})")
    return 0


def cmd_bpd(args) -> int:
    from .likelihood import evaluate_bpd

    device = _device(args)
    model, sde, source = _score_model(args, device)
    images, _ = _load_split(args, train=False)
    if args.n > len(images):
        raise ValueError(f"--n {args.n} is larger than the test split ({len(images)} images)")
    result = evaluate_bpd(model, sde, images[:args.n], batch_size=args.batch_size, hutchinson=args.hutchinson,
                          generator=torch.Generator().manual_seed(args.seed), progress=not args.no_progress,
                          device=device)
    print(f"{source}, first {args.n} test images: {result.mean:.3f} ± {result.stderr:.3f} bits/dim "
          f"(mean ± standard error); score evaluations per batch of {args.batch_size}: "
          f"mean {sum(result.nfe) / len(result.nfe):.0f}, min {min(result.nfe)}, max {max(result.nfe)}")
    if args.json:
        _write_json(args.json, {"model": source, "n": args.n, "batch_size": args.batch_size,
                                "bpd_mean": result.mean, "bpd_stderr": result.stderr, "nfe_per_batch": result.nfe})
        print(f"wrote {args.json}")
    return 0


def _write_json(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _sampler_option(text: str) -> tuple[str, str, object]:
    """``"heun-churn:s_churn=40"`` -> ``("heun-churn", "s_churn", 40)``; values are true/false, numbers or words."""
    from .evaluation import sampler_settings

    name, _, setting = text.partition(":")
    key, equals, value = setting.partition("=")
    if name not in SAMPLERS:
        raise argparse.ArgumentTypeError(f"{name!r} is not a sampler; choose from {', '.join(sorted(SAMPLERS))}")
    if not equals or key not in sampler_settings(name):
        raise argparse.ArgumentTypeError(f"{text!r}: give {name}:NAME=VALUE with NAME one of "
                                         f"{', '.join(sampler_settings(name))}")
    for parse in (int, float):
        try:
            return name, key, parse(value)
        except ValueError:
            pass
    return name, key, {"true": True, "false": False}.get(value.lower(), value)


def _curve_points(text: str) -> tuple[str, list]:
    """``"heun:5,10,18"`` -> ``("heun", [5, 10, 18])``; ``"ode"`` -> ``("ode", [None])`` (an adaptive sampler)."""
    name, _, steps = text.partition(":")
    if name not in SAMPLERS:
        raise argparse.ArgumentTypeError(f"{name!r} is not a sampler; choose from {', '.join(sorted(SAMPLERS))}")
    if SAMPLERS[name].default_steps is None:
        if steps:
            raise argparse.ArgumentTypeError(f"{name} is adaptive: give it without steps")
        return name, [None]
    try:
        counts = [int(k) for k in steps.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give {name}:STEPS with step counts >= 1, e.g. {name}:10,20")
    return name, counts


def cmd_evaluate(args) -> int:
    from .classifier import load_classifier
    from .evaluation import evaluate_model
    from .pretrained import model_info

    device = _device(args)
    json_path = args.json or args.out_dir / "evaluation.json"
    model, sde, source = _score_model(args, device)
    train_images, train_labels = _load_split(args, train=True)
    if args.holdout:
        if not 0 < args.holdout < len(train_images):
            raise ValueError(f"--holdout must be below the {len(train_images)} training images, got {args.holdout}")
        test_images, test_labels = train_images[-args.holdout:], train_labels[-args.holdout:]
        train_images = train_images[:-args.holdout]
        reference = (f"the last {args.holdout} training images (held out from the score model's training, not from "
                     "the evaluation classifier's)")
    else:
        test_images, test_labels = _load_split(args, train=False)
        reference = "the test split"
    header = {"command": "python -m sgm_helpers " + " ".join(args.argv), "model": source,
              "weights_sha256": None if args.checkpoint else model_info(args.model or DEFAULT_MODEL)["sha256"],
              "reference": reference}
    classifier_info = model_info("mnist-classifier")
    curve = {}
    for name, counts in args.curve or []:
        curve.setdefault(name, []).extend(counts)
    options = {}
    for name, key, value in args.option or []:
        options.setdefault(name, {})[key] = value
    results = evaluate_model(
        model, sde, test_images=test_images, test_labels=test_labels, train_images=train_images,
        classifier=load_classifier(device=device), samplers=args.samplers, n_samples=args.n_samples,
        batch_size=args.batch_size, steps=args.steps, snr=args.snr, eps=args.eps, bpd_n=args.bpd_n,
        bpd_start=args.bpd_start, bpd_batch_size=args.bpd_batch_size, bpd_eps=args.bpd_eps,
        hutchinson=args.hutchinson,
        curve=curve, options=options, seed=args.seed,
        device=device, progress=not args.no_progress, grid_dir=args.out_dir,
        on_update=lambda r: _write_json(json_path, {**header, **r}),
        log=lambda line: print(line, flush=True), images_name="held-out images" if args.holdout else "test images")
    results["classifier"].update(train_images=classifier_info["training"]["train_images"],
                                 sha256=classifier_info["sha256"])
    _write_json(json_path, {**header, **results})
    print(f"wrote {json_path}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError, ArithmeticError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
