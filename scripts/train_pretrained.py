"""Train a bundled model reproducibly: any SDE, any weighting, on the MNIST training split minus a held-out tail.

    SGM_DATA_DIR=../shared/data python scripts/train_pretrained.py --out runs/mnist-ve25.pt
    SGM_DATA_DIR=../shared/data python scripts/train_pretrained.py --out runs/mnist-vp-lw.pt --sde vp \\
        --likelihood-weighting --importance-sampling --dequantize
    SGM_DATA_DIR=../shared/data python scripts/train_pretrained.py --model conditional --out runs/mnist-conditional.pt
    SGM_DATA_DIR=../shared/data python scripts/train_pretrained.py --model time-classifier \\
        --out runs/mnist-time-classifier.pt

--model picks the network (the table NETWORKS below): a score model (``scorenet``, the default, or
``unet``), a class-conditional one for classifier-free guidance (``conditional`` or ``unet-conditional``:
labels dropped to the null class with probability --p-uncond, default 0.1) or a noise-conditional
classifier for classifier guidance (``time-classifier``: cross-entropy on images perturbed by the SDE at
t ~ U(eps, 1); no loss weighting, no dequantization). The last two kinds train on the labels too.

Every hyperparameter is a flag below; the defaults are those the first shipped "mnist-ve25" was trained
with (200 epochs on the 5,000-image training subset that was all the project had then); the current one
adds --holdout 5000 --epochs 50 (MODEL_CARD.md has every command). --time-input log_std makes a score
network see the log noise level instead of t. The run resumes from --out if it exists (the checkpoint
records the SDE, the loss settings and the architecture, and a resume with others is refused).
The last --holdout training images (new models: --holdout 5000) are never trained on: they are for
choices (EMA or raw weights, checkpoint, sampler settings); the test split is never touched here.

--time-budget stops at the end of the first epoch (or --chunk-steps) past that many seconds, with a
checkpoint to resume from. --export writes the raw and EMA weights, with the run's settings, wall time
and throughput, to one small file (what ``scripts/export_pretrained.py`` and the evaluation read); its
``info`` holds the manifest's fields ``kind``, ``sde`` and ``architecture`` (``{"class": ..., constructor
arguments}``, from which ``sgm_helpers.pretrained`` rebuilds the network). --eval-holdout evaluates the raw
and EMA weights on held-out images: bits/dim for a score model (for a class-conditional one, of its
unconditional score, the null class), accuracy on noised images for the classifier.

On several GPUs, the same command under torchrun (data-parallel, the same global --batch-size; rank 0
prints, checkpoints, evaluates and exports):

    torchrun --nproc_per_node=4 scripts/train_pretrained.py --out runs/mnist-ve25.pt
"""

import argparse
import inspect
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sgm_helpers import (ConditionalScoreNet, ReparameterizedScoreNet, ReparameterizedUNet, ScoreNet, TimeClassifier,
                         UNet, load_mnist, make_ema, make_sde, seed_everything, train)
from sgm_helpers.models import TIME_INPUTS
from sgm_helpers.pretrained import checkpoint_model, checkpoint_state_dict, read_checkpoint
from sgm_helpers.training import PRECISIONS
from sgm_helpers.utils import broadcast_object, init_distributed, local_rank0_first


@dataclass(frozen=True)
class Network:
    """One --model: how to build it for an SDE with given channels, and how it is trained and shipped."""

    build: Callable            # (sde, channels, time_input) -> an nn.Module with an ``architecture``
    channels: tuple            # default --channels
    kind: str                  # the manifest's kind
    objective: str             # train()'s objective


UNET_CHANNELS = inspect.signature(UNet).parameters["channels"].default   # benchmarks/RESULTS.md chose it
NETWORKS = {
    "scorenet": Network(lambda sde, ch, ti="t": ScoreNet(sde.marginal_prob_std, channels=ch, time_input=ti),
                        (32, 64, 128, 256), "score_model", "dsm"),
    "conditional": Network(lambda sde, ch, ti="t": ConditionalScoreNet(sde.marginal_prob_std, channels=ch,
                                                                       time_input=ti),
                           (32, 64, 128, 256), "conditional_score_model", "conditional_dsm"),
    "time-classifier": Network(lambda sde, ch, ti="t": TimeClassifier(channels=ch), (32, 64, 128),
                               "time_classifier", "time_classifier"),
    "unet": Network(lambda sde, ch, ti="t": UNet(sde.marginal_prob_std, channels=ch, time_input=ti), UNET_CHANNELS,
                    "score_model", "dsm"),
    "unet-conditional": Network(lambda sde, ch, ti="t": UNet(sde.marginal_prob_std, channels=ch, num_classes=10,
                                                         time_input=ti), UNET_CHANNELS,
                                "conditional_score_model", "conditional_dsm"),
}
# --network-sde: the network of each --model that serves another SDE through the noise level
REPARAMETERIZED = {"scorenet": ReparameterizedScoreNet, "unet": ReparameterizedUNet}
DEFAULT_P_UNCOND = 0.1                        # class-conditional models: label dropout
EVAL_TIMES = (0.01, 0.1, 0.25, 0.5, 0.75, 1.0)  # --eval-holdout of a classifier: accuracy at these t too


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/mnist-ve25.pt", help="the training checkpoint (resumed if it exists)")
    p.add_argument("--model", choices=sorted(NETWORKS), default="scorenet",
                   help="the network: a score model, a class-conditional one, or a noise-conditional classifier")
    p.add_argument("--p-uncond", type=float, default=None,
                   help=f"class-conditional --model: probability of dropping a label (default {DEFAULT_P_UNCOND})")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--sde", choices=["ve", "vp", "subvp"], default="ve")
    p.add_argument("--network-sde", choices=["ve", "vp", "subvp"], default=None,
                   help="--model scorenet or unet: the SDE the network is conditioned on, if not --sde's; the model "
                        "is then a ReparameterizedScoreNet (ReparameterizedUNet), e.g. --sde vp --network-sde ve "
                        "--init-from mnist-ve25 (the tutorial's VE network as a VP model, through the noise level "
                        "std/alpha)")
    p.add_argument("--sigma", type=float, default=25.0, help="VE: sigma")
    p.add_argument("--beta-min", type=float, default=0.1, help="VP, sub-VP: beta_min")
    p.add_argument("--beta-max", type=float, default=20.0, help="VP, sub-VP: beta_max")
    p.add_argument("--likelihood-weighting", action="store_true")
    p.add_argument("--importance-sampling", action="store_true")
    p.add_argument("--uniform-share", type=float, default=0.0,
                   help="with --importance-sampling: the share of t drawn uniformly instead, with the same weight, "
                        "mixing the default weighting into likelihood weighting (dsm_loss's uniform_share; "
                        "default 0)")
    p.add_argument("--dequantize", action="store_true")
    p.add_argument("--eps", type=float, default=1e-5,
                   help="the smallest t trained on (t ~ U(eps, 1), or importance-sampled on [eps, 1]); "
                        "--eval-holdout scores the model's density at the same t (default 1e-5)")
    p.add_argument("--time-input", choices=list(TIME_INPUTS), default="t",
                   help="score models: what the time embedding sees, t (the tutorial's) or log std(t), the log noise "
                        "level (default t)")
    p.add_argument("--channels", type=int, nargs="+", default=None,
                   help="the network's channels (default: " + "; ".join(
                       f"{name} {' '.join(map(str, net.channels))}" for name, net in NETWORKS.items()) + ")")
    p.add_argument("--holdout", type=int, default=0,
                   help="last training images kept out of training, for choices (new models: 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default=None, help="default: CUDA if available, else the CPU")
    p.add_argument("--precision", choices=PRECISIONS, default="float32")
    p.add_argument("--time-budget", type=float, default=None, help="seconds; stop (resumably) past it")
    p.add_argument("--chunk-steps", type=int, default=None, help="steps between time checks (default: an epoch)")
    p.add_argument("--init-from", default=None, metavar="NAME_OR_CHECKPOINT",
                   help="start a new run from these weights: a bundled model's name or a training checkpoint (its "
                        "EMA weights); a class-conditional --model takes a score model's, its label embedding "
                        "starting at zero (so it starts as that model for every label)")
    p.add_argument("--export", default=None, help="also write {raw, ema, info} weights here at the end")
    p.add_argument("--info-json", default=None,
                   help="also write the run's record (command, settings, wall time, throughput, held-out results) "
                        "here as JSON, e.g. under docs/ for the model card")
    p.add_argument("--eval-holdout", type=int, default=0,
                   help="at the end, bits/dim (a classifier: accuracy) of the raw and EMA weights on this many "
                        "held-out images")
    args = p.parse_args(argv)
    network = NETWORKS[args.model]
    if args.p_uncond is None:
        args.p_uncond = DEFAULT_P_UNCOND if network.objective == "conditional_dsm" else 0.0
    elif network.objective != "conditional_dsm":
        conditional = ", ".join(name for name, net in NETWORKS.items() if net.objective == "conditional_dsm")
        p.error(f"--p-uncond is for a class-conditional --model ({conditional}), not {args.model}")
    elif not 0.0 <= args.p_uncond <= 1.0:
        p.error(f"--p-uncond must be a probability in [0, 1], got {args.p_uncond}")
    if not 0.0 < args.eps < 1.0:
        p.error(f"--eps must be a time in the open interval (0, 1), got {args.eps}")
    if not 0.0 <= args.uniform_share <= 1.0:
        p.error(f"--uniform-share must be a share in [0, 1], got {args.uniform_share}")
    if args.uniform_share > 0 and not args.importance_sampling:
        p.error("--uniform-share mixes uniform t into importance sampling: it needs --importance-sampling")
    score_only = [flag for flag in ("likelihood_weighting", "importance_sampling", "dequantize") if getattr(args, flag)]
    if network.objective == "time_classifier" and args.time_input != "t":
        score_only.append("time_input")
    if network.objective == "time_classifier" and score_only:
        p.error(f"--{score_only[0].replace('_', '-')} is for score models; --model {args.model} trains on the "
                "plain cross-entropy of noised images")
    if args.network_sde == args.sde:
        args.network_sde = None
    if args.network_sde and args.model not in REPARAMETERIZED:
        p.error(f"--network-sde is for --model {' or '.join(REPARAMETERIZED)} (a network of one SDE used as the "
                f"score model of another), not {args.model}")
    args.channels = list(network.channels if args.channels is None else args.channels)
    return args


def make_run_sde(name: str, args):
    """The SDE ``name`` with this run's parameters (--sigma for VE, --beta-min and --beta-max otherwise)."""
    return (make_sde("ve", sigma=args.sigma) if name == "ve"
            else make_sde(name, beta_min=args.beta_min, beta_max=args.beta_max))


def main(argv=None):
    args = parse_args(argv)
    command = "python scripts/train_pretrained.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(args.seed)  # also fixes the GaussianFourierProjection weights
    sde = make_run_sde(args.sde, args)
    network = NETWORKS[args.model]
    try:
        model = (REPARAMETERIZED[args.model](sde, make_run_sde(args.network_sde, args), args.channels,
                                             time_input=args.time_input) if args.network_sde
                 else network.build(sde, args.channels, args.time_input))
    except ValueError as err:
        raise SystemExit(f"error: --channels {' '.join(map(str, args.channels))} for --model {args.model}: {err}")
    init = init_weights(model, args.init_from, sde) if args.init_from and not Path(args.out).is_file() else None
    ema = make_ema(model, args.ema_decay)
    env = init_distributed(device)  # under torchrun: one process per GPU, rank 0 prints; a no-op otherwise
    log = print if env.rank == 0 else (lambda *a, **k: None)
    with local_rank0_first():  # one download per machine
        images, labels = load_mnist(train=True)
    if not 0 <= args.holdout < len(images) or args.eval_holdout > args.holdout:
        raise SystemExit(f"error: --holdout must be in [0, {len(images)}) and at least --eval-holdout, "
                         f"got {args.holdout} and {args.eval_holdout}")
    images, labels = images[:len(images) - args.holdout], labels[:len(images) - args.holdout]
    steps_per_epoch = math.ceil(len(images) / args.batch_size)
    total = args.epochs * steps_per_epoch
    chunk = args.chunk_steps or steps_per_epoch
    where = device if env.world_size == 1 else f"{env.world_size} processes ({device.type})"
    log(f"training on the first {len(images)} MNIST training images ({args.holdout} held out) on {where}; "
        f"{type(model).__name__}, objective {network.objective}; {sde}; {vars(args)}", flush=True)
    settings = dict(batch_size=args.batch_size, lr=args.lr, ema_model=ema, seed=args.seed, eps=args.eps,
                    checkpoint_path=args.out, resume=True, progress=False, precision=args.precision, device=device,
                    likelihood_weighting=args.likelihood_weighting, importance_sampling=args.importance_sampling,
                    uniform_share=args.uniform_share, dequantize=args.dequantize, objective=network.objective,
                    p_uncond=args.p_uncond)
    t0 = time.time()
    done = int(read_checkpoint(args.out)["step"]) if env.rank == 0 and Path(args.out).is_file() else 0
    done = broadcast_object(done)  # only rank 0 needs to see the file
    start_step, losses = done, []
    while done < total:
        losses = train(model, (images, labels), sde, steps=min(done + chunk, total), **settings)
        done = len(losses)
        elapsed = broadcast_object(time.time() - t0)  # rank 0's clock decides for all
        log(f"step {done}/{total} (epoch {done / steps_per_epoch:.2f}), mean loss of the last 500 steps "
            f"{sum(losses[-500:]) / len(losses[-500:]):.3f}, {elapsed:.0f} s, "
            f"{(done - start_step) / elapsed:.1f} steps/s", flush=True)
        if args.time_budget is not None and elapsed >= args.time_budget and done < total:
            log(f"time budget of {args.time_budget:.0f} s reached at step {done}; rerun to resume", flush=True)
            break
    if env.rank != 0:  # rank 0 alone reports, evaluates and exports
        return
    wall, ran = time.time() - t0, done - start_step
    ckpt = read_checkpoint(args.out)
    info = {**{k: v for k, v in vars(args).items() if k not in ("out", "export", "threads", "device")},
            "command": command, "kind": network.kind, "sde": sde.config(), "architecture": model.architecture,
            "objective": network.objective, "channels": args.channels, "seed": args.seed,
            "steps": done, "epochs": done / steps_per_epoch, "steps_this_run": ran,
            "wall_s_this_run": wall, "steps_per_s": ran / wall if ran else None,
            "examples_per_s": ran * args.batch_size / wall if ran else None,
            "train_seconds_total": ckpt.get("train_seconds"),  # every run's training time; None if not recorded
            "train_images": len(images), "holdout": args.holdout, "device": str(device),
            **({"processes": env.world_size} if env.world_size > 1 else {}),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            **({"init_from_sha256": init} if init else {}),
            "torch": torch.__version__,
            "final_loss_last500_mean": sum(ckpt["losses"][-500:]) / max(len(ckpt["losses"][-500:]), 1)}
    per_image = None
    if args.eval_holdout and network.objective == "time_classifier":
        info["holdout_accuracy"] = heldout_accuracy(ckpt, sde, args, device)
    elif args.eval_holdout:
        info["holdout_bpd"], per_image = heldout_bpd(ckpt, sde, args, device)
    print("run info: " + json.dumps(info), flush=True)
    if args.info_json:
        Path(args.info_json).parent.mkdir(parents=True, exist_ok=True)
        record = {**info, **({"holdout_bpd_per_image": per_image} if per_image else {})}
        Path(args.info_json).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"wrote the run's record to {args.info_json}", flush=True)
    if args.export:
        Path(args.export).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"raw": checkpoint_state_dict(ckpt, "raw"), "ema": checkpoint_state_dict(ckpt, "ema"),
                    "info": info, "losses": ckpt["losses"]}, args.export)
        print(f"exported raw and EMA weights to {args.export}", flush=True)


def init_weights(model, source: str, sde) -> str:
    """Load ``source``'s weights into ``model`` (a bundled model's name, or a checkpoint's EMA weights); returns
    the sha256 of those weights as stored (the bundled file, or the checkpoint file) for the run's record.

    Every parameter must match, except a label embedding the source lacks: it keeps its zero initialization."""
    from sgm_helpers.pretrained import (available_models, checkpoint_sde, load_pretrained, model_info, pretrained_sde,
                                        sha256_file)

    if Path(source).is_file():
        ckpt = read_checkpoint(source)
        state, digest, source_sde = checkpoint_state_dict(ckpt, "ema"), sha256_file(source), checkpoint_sde(ckpt)
    elif source in available_models():
        state, digest = load_pretrained(source, device="cpu").state_dict(), model_info(source)["sha256"]
        source_sde = pretrained_sde(source)
    else:
        raise SystemExit(f"error: --init-from {source}: neither a file nor a bundled model ({', '.join(available_models())})")
    network_sde = getattr(model, "source_sde", sde)  # a ReparameterizedScoreNet's network is conditioned on another
    if source_sde is not None and source_sde.config() != network_sde.config():
        raise SystemExit(f"error: --init-from {source} was trained with {source_sde}, this run's network uses "
                         f"{network_sde}")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape that differs
        raise SystemExit(f"error: --init-from {source} does not fit --model: {str(err).splitlines()[1].strip()}")
    if unexpected or any(not key.startswith("label_embed") for key in missing):
        raise SystemExit(f"error: --init-from {source} does not fit --model: missing {missing}, unexpected {unexpected}")
    return digest


def held_out_split(args) -> tuple[torch.Tensor, torch.Tensor]:
    """The first --eval-holdout of the --holdout training images that were not trained on, and their labels."""
    images, labels = load_mnist(train=True)
    tail = slice(len(images) - args.holdout, len(images) - args.holdout + args.eval_holdout)
    return images[tail], labels[tail]


def heldout_bpd(ckpt, sde, args, device) -> tuple[dict, dict]:
    """Bits/dim of the raw and the EMA weights on the first --eval-holdout held-out training images
    (a class-conditional model: of its unconditional score, the null class): ``(summary, per-image values)``, the
    latter ``{"raw": [...], "ema": [...]}`` for comparing runs image by image (--info-json records them)."""
    from sgm_helpers.controllable import cfg_score
    from sgm_helpers.likelihood import evaluate_bpd

    held_out, _ = held_out_split(args)
    conditional = NETWORKS[args.model].objective == "conditional_dsm"
    out = {"n": len(held_out), "seed": 0, "eps": args.eps,
           **({"score": "unconditional (null class)"} if conditional else {})}
    per_image = {}
    for which in ("raw", "ema"):
        model = checkpoint_model(ckpt, sde, which).to(device)
        if conditional:
            model = cfg_score(model, None, 0.0)              # s(x, t, null): the unconditional score
        t0 = time.time()
        result = evaluate_bpd(model, sde, held_out, batch_size=500, generator=torch.Generator().manual_seed(0),
                              progress=False, device=device, eps=args.eps)
        out[which] = {"mean": result.mean, "stderr": result.stderr, "nfe_per_batch": result.nfe,
                      "wall_s": time.time() - t0}
        per_image[which] = [round(v, 6) for v in result.bpd.double().tolist()]
        print(f"held-out bits/dim, {which} weights: {result}", flush=True)
    return out, per_image


@torch.no_grad()
def heldout_accuracy(ckpt, sde, args, device) -> dict:
    """Accuracy of the raw and the EMA classifier on the first --eval-holdout held-out training images, perturbed
    by the SDE as in training (x(t) = alpha(t) x + std(t) z): at t ~ U(eps, 1), and at each t of EVAL_TIMES.
    The same seeded draws of t and z serve both weights and every t."""
    images, labels = held_out_split(args)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(images.shape, generator=g)
    eps = ckpt["config"]["eps"]
    times = {"t~U(eps,1)": torch.rand(len(images), generator=g) * (1.0 - eps) + eps,
             **{f"t={t:g}": torch.full((len(images),), t) for t in EVAL_TIMES}}
    out = {"n": len(images), "seed": 0, "eps": eps}
    for which in ("raw", "ema"):
        classifier = checkpoint_model(ckpt, sde, which).to(device)
        t0 = time.time()
        accuracy = {}
        for name, t in times.items():
            mean, std = sde.marginal_prob(images, t)
            x_t = mean + std.view(-1, 1, 1, 1) * z
            correct = sum(int((classifier(x.to(device), s.to(device)).argmax(1).cpu() == y).sum())
                          for x, s, y in zip(x_t.split(500), t.split(500), labels.split(500)))
            accuracy[name] = correct / len(images)
        out[which] = {"accuracy": accuracy, "wall_s": time.time() - t0}
        print(f"held-out accuracy on noised images, {which} weights: "
              + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items()), flush=True)
    return out


if __name__ == "__main__":
    main()
