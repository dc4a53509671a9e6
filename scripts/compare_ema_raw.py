"""Compare the EMA and the raw weights of a training checkpoint: which one to ship.

    SGM_DATA_DIR=../shared/data python scripts/compare_ema_raw.py --checkpoint runs/mnist-ve25.pt

Reports the denoising score matching loss on held-out images (the same t and noise draws for both
weights) and bits/dim on a few of them (the same dequantization and Hutchinson probes). Lower is better.
The held-out images are the last --holdout images of the MNIST training split, the ones
`scripts/train_pretrained.py --holdout` keeps out of training; the test split is left for reported numbers.
(Before 2026-11-30 this script used the first test images: benchmarks/RESULTS.md's bfloat16 table was measured so.)
"""

import argparse

import torch

from sgm_helpers import VESDE, dsm_loss, evaluate_bpd, load_mnist
from sgm_helpers.pretrained import checkpoint_model, checkpoint_sde, read_checkpoint


@torch.no_grad()
def heldout_dsm(model, sde, images, seed, batch_size=250, repeats=2):
    g = torch.Generator().manual_seed(seed)
    losses = [dsm_loss(model, images[i:i + batch_size], sde, generator=g).item()
              for _ in range(repeats) for i in range(0, len(images), batch_size)]
    return sum(losses) / len(losses)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/mnist-ve25.pt")
    p.add_argument("--sigma", type=float, default=25.0, help="VESDE(sigma) for a checkpoint that records no SDE")
    p.add_argument("--holdout", type=int, default=5000, help="the last N training images were held out of training")
    p.add_argument("--dsm-n", type=int, default=2000, help="held-out images for the DSM loss")
    p.add_argument("--bpd-n", type=int, default=32, help="held-out images for bits/dim")
    args = p.parse_args()
    if not 0 < max(args.dsm_n, args.bpd_n) <= args.holdout:
        raise SystemExit(f"error: --dsm-n and --bpd-n must be in 1..--holdout ({args.holdout})")

    ckpt = read_checkpoint(args.checkpoint)
    sde = checkpoint_sde(ckpt) or VESDE(args.sigma)
    images, _ = load_mnist(train=True)
    held_out = images[len(images) - args.holdout:]
    print(f"checkpoint {args.checkpoint}: step {ckpt.get('step')}, {sde}; held-out = training images "
          f"{len(images) - args.holdout + 1:,}-{len(images):,}")
    for which in ("raw", "ema"):
        model = checkpoint_model(ckpt, sde, which)
        loss = heldout_dsm(model, sde, held_out[:args.dsm_n], seed=123)
        bpd = evaluate_bpd(model, sde, held_out[:args.bpd_n], batch_size=args.bpd_n,
                           generator=torch.Generator().manual_seed(0), progress=False)
        print(f"{which}: DSM loss {loss:.3f} on {args.dsm_n} images; {bpd}")


if __name__ == "__main__":
    main()
