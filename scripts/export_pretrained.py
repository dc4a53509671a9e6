"""Export a training checkpoint's score model into the package as shipped weights.

    python scripts/export_pretrained.py --checkpoint runs/mnist-ve25.pt --which ema --name mnist-ve25

Writes the network's plain state dict (the EMA weights, with the ``module.`` prefix of
``AveragedModel`` removed, or the raw weights) to ``sgm_helpers/weights/<name>.pt`` and records
in ``sgm_helpers/weights/manifest.json`` its sha256, its kind (from the training objective the
checkpoint records: a score model, a class-conditional score model or a noise-conditional classifier),
the SDE, the architecture and the training configuration read from the checkpoint. The SDE is the one the checkpoint records (checkpoints
written before SDE configs were recorded are taken as ``VESDE(--sigma)``).
"""

import argparse
import shutil
import tempfile
from pathlib import Path

import torch

from sgm_helpers.pretrained import (WEIGHTS_DIR, checkpoint_architecture, checkpoint_sde, checkpoint_state_dict,
                                    sha256_file, write_manifest_entry)
from sgm_helpers.sde import VESDE
from sgm_helpers.training import CHECKPOINT_FORMAT

TRAIN_COMMAND = "SGM_DATA_DIR=../shared/data python scripts/train_pretrained.py --out runs/mnist-ve25.pt"
KINDS = {"dsm": "score_model", "conditional_dsm": "conditional_score_model", "time_classifier": "time_classifier"}


RUN_FIELDS = ("command", "train_seconds_total", "wall_s_this_run", "steps_this_run", "steps_per_s", "examples_per_s",
              "device_name", "torch",
              "holdout_accuracy", "holdout_bpd", "init_from", "init_from_sha256")


def run_record(path) -> dict:
    """The fields of a ``train_pretrained.py --export`` file's run info that the manifest records (JSON-ready)."""
    info = torch.load(path, map_location="cpu", weights_only=False)["info"]   # our own file; "torch" is a TorchVersion
    record = {k: info[k] for k in RUN_FIELDS if info.get(k) is not None}
    if info.get("steps_this_run") == 0:  # a rerun on a finished checkpoint, to evaluate it: no training to time
        for k in ("wall_s_this_run", "steps_this_run", "steps_per_s", "examples_per_s"):
            record.pop(k, None)
    if "torch" in record:
        record["torch"] = str(record["torch"])
    if "command" in record:
        record["command"] = "SGM_DATA_DIR=../shared/data " + record["command"]
    return record


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/mnist-ve25.pt", help="a package training checkpoint")
    p.add_argument("--which", choices=["ema", "raw"], required=True, help="EMA or raw weights")
    p.add_argument("--name", default="mnist-ve25", help="registry name; the file is weights/<name>.pt")
    p.add_argument("--sigma", type=float, default=25.0,
                   help="for an old checkpoint that records no SDE: the VE SDE's sigma it was trained with")
    p.add_argument("--train-images", type=int, default=55000,
                   help="how many images of the MNIST training split it trained on (the first 55,000: "
                        "train_pretrained.py --holdout 5000 keeps the last 5,000 for choices)")
    p.add_argument("--train-command", default=None,
                   help="the command that trained the checkpoint (default: the --run-info's, else the old default)")
    p.add_argument("--run-info", default=None, metavar="EXPORT_FILE",
                   help="the file train_pretrained.py --export wrote at the end of the run: its command, wall time, "
                        "throughput, device and held-out evaluation go into the manifest")
    args = p.parse_args()
    run = run_record(args.run_info) if args.run_info else {}
    recorded = run.pop("command", None)   # --train-command, if given, wins over the --run-info's
    command = args.train_command or recorded or TRAIN_COMMAND

    # Copy first: the training run may replace the checkpoint while we read it.
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "ckpt.pt"
        shutil.copy(args.checkpoint, copy)
        ckpt = torch.load(copy, map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise SystemExit(f"error: {args.checkpoint} is not a package training checkpoint")
    state = {k: v.detach().clone().contiguous() for k, v in checkpoint_state_dict(ckpt, args.which).items()}

    out = WEIGHTS_DIR / f"{args.name}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    losses = ckpt.get("losses") or []
    config = dict(ckpt.get("config") or {})
    step = int(ckpt["step"])
    steps_per_epoch = -(-args.train_images // config["batch_size"]) if "batch_size" in config else None
    tail = losses[-500:]
    seconds = ckpt.get("train_seconds")   # the checkpoint's training time, summed over resumes
    timing = {"train_seconds_total": float(seconds), "steps_per_s": step / seconds} if seconds else {}
    entry = {
        "kind": KINDS[config.get("objective", "dsm")],
        "file": out.name,
        "sha256": sha256_file(out),
        "bytes": out.stat().st_size,
        "sde": (checkpoint_sde(ckpt) or VESDE(args.sigma)).config(),
        "architecture": checkpoint_architecture(ckpt),
        "weights": args.which,
        "training": {
            **config,
            "steps": step,
            "epochs": round(step / steps_per_epoch, 2) if steps_per_epoch else None,
            "ema_n_averaged": int(ckpt["ema"]["n_averaged"]) if ckpt.get("ema") is not None else None,
            "final_loss_last500_mean": sum(tail) / len(tail) if tail else None,
            "train_images": args.train_images,
            "data": f"the first {args.train_images} images of the MNIST training split; never the test split",
            "command": command,
            **timing,
            **run,
        },
    }
    manifest = write_manifest_entry(args.name, entry)
    n_params = sum(v.numel() for v in state.values())
    print(f"wrote {out} ({entry['bytes'] / 1e6:.1f} MB, {n_params:,} numbers, {args.which} weights after "
          f"{step} steps) and its entry in {manifest}")


if __name__ == "__main__":
    main()
