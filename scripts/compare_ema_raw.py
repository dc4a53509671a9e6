"""Compare the EMA and the raw weights of a training checkpoint: which one to ship.

    SGM_DATA_DIR=../shared/data python scripts/compare_ema_raw.py --checkpoint runs/mnist-ve25.pt

Reports the denoising score matching loss on held-out images (the same t and noise draws for both
weights) and bits/dim on a few of them (the same dequantization and Hutchinson noise). Lower is better.
"""

import argparse

import torch

from sgm_helpers import VESDE, ScoreNet, dsm_loss, evaluate_bpd, load_mnist, make_ema


@torch.no_grad()
def heldout_dsm(model, sde, images, seed, batch_size=250, repeats=2):
    g = torch.Generator().manual_seed(seed)
    losses = [dsm_loss(model, images[i:i + batch_size], sde.marginal_prob_std, generator=g).item()
              for _ in range(repeats) for i in range(0, len(images), batch_size)]
    return sum(losses) / len(losses)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/mnist-ve25.pt")
    p.add_argument("--sigma", type=float, default=25.0)
    p.add_argument("--dsm-n", type=int, default=2000, help="held-out images for the DSM loss")
    p.add_argument("--bpd-n", type=int, default=32, help="held-out images for bits/dim")
    args = p.parse_args()

    sde = VESDE(args.sigma)
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    raw = ScoreNet(sde.marginal_prob_std)
    raw.load_state_dict(ckpt["model"])
    ema = make_ema(ScoreNet(sde.marginal_prob_std))
    ema.load_state_dict(ckpt["ema"])
    images, _ = load_mnist(train=False)
    print(f"checkpoint {args.checkpoint}: step {ckpt['step']}; held-out = the first images of the test split")
    for name, model in [("raw", raw.eval()), ("ema", ema.module.eval())]:
        loss = heldout_dsm(model, sde, images[:args.dsm_n], seed=123)
        bpd = evaluate_bpd(model, sde, images[:args.bpd_n], batch_size=args.bpd_n,
                           generator=torch.Generator().manual_seed(0), progress=False)
        print(f"{name}: DSM loss {loss:.3f} on {args.dsm_n} images; {bpd}")


if __name__ == "__main__":
    main()
