"""Train the bundled pretrained model ("mnist-ve25") reproducibly.

    SGM_DATA_DIR=../shared/data python scripts/train_pretrained.py --out runs/mnist-ve25.pt

Every hyperparameter is a flag below, with the values the shipped weights were trained with as
defaults. The run resumes from --out if it exists. It trains on the MNIST *training* split only
(offline that is a 5,000-image class-balanced subset of it; see the model card).
"""

import argparse
import time

import torch

from sgm_helpers import ScoreNet, VESDE, load_mnist, make_ema, seed_everything, train
from sgm_helpers.training import PRECISIONS


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/mnist-ve25.pt")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--sigma", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="train's precision (the shipped model: float32)")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)  # also fixes the GaussianFourierProjection weights
    sde = VESDE(args.sigma)
    model = ScoreNet(sde.marginal_prob_std)
    ema = make_ema(model, args.ema_decay)
    images, _ = load_mnist(train=True)
    print(f"training on {len(images)} MNIST training images; {vars(args)}", flush=True)
    t0 = time.time()
    losses = train(model, images, sde.marginal_prob_std, epochs=args.epochs, batch_size=args.batch_size,
                   lr=args.lr, ema_model=ema, seed=args.seed, checkpoint_path=args.out, resume=True,
                   progress=True, precision=args.precision)
    print(f"done: {len(losses)} steps, final loss {sum(losses[-500:]) / 500:.2f}, {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
