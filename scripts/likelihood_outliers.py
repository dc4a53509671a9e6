"""Why do some images get huge bits/dim? Re-score them one at a time over dequantization and probe draws.

    python scripts/likelihood_outliers.py --checkpoint runs/vp.pt --results docs/likelihood/x.json --holdout 5000

For the ``--worst`` images of a bits/dim result that ``python -m sgm_helpers evaluate`` wrote (``--results``;
scored against the last ``--holdout`` training images, or the test split with ``--holdout 0``), and for the
median image as a contrast, each image is scored alone (batch 1): with ``--draws`` dequantizations, each
with ``--probes`` Hutchinson probes. One line per image and dequantization: its bits/dim for every probe and
the largest |x(1)| the probability-flow ODE ends at. Each image is scored at the t = eps of the results
(``evaluate --bpd-eps``; 1e-5 where they record none). The prior is N(0, I) for VP and sub-VP (N(0, sigma^2 I)
for VE), so an |x(1)| far beyond a few prior standard deviations means the trajectory left the data.

What it tells apart: bits/dim that move with the probes are Hutchinson noise; that move with the
dequantization, a model whose density is wrong around some images; that are the same for every draw but
differ from the batched result, the solver (``evaluate_bpd`` controls one error norm for a whole batch).
"""

import argparse
import json
import statistics
from pathlib import Path

import torch

from sgm_helpers import load_mnist, load_pretrained, pretrained_sde
from sgm_helpers.likelihood import DEFAULT_EPS, bits_per_dim, dequantize, ode_likelihood
from sgm_helpers.pretrained import checkpoint_model, checkpoint_sde, read_checkpoint


def score_model(args):
    """``(network, sde)`` from --checkpoint (its --weights) or the shipped --model."""
    if args.checkpoint is None:
        return load_pretrained(args.model, device="cpu"), pretrained_sde(args.model)
    ckpt = read_checkpoint(args.checkpoint)
    sde = checkpoint_sde(ckpt)
    if sde is None:
        raise SystemExit(f"error: {args.checkpoint} records no SDE (a checkpoint from before SDEs were recorded)")
    return checkpoint_model(ckpt, sde, args.weights), sde


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None, help="a training checkpoint (default: the shipped --model)")
    p.add_argument("--weights", choices=["ema", "raw"], default="ema")
    p.add_argument("--model", default="mnist-ve25", help="a shipped score model, without --checkpoint")
    p.add_argument("--results", type=Path, required=True, help="the JSON that `evaluate` wrote (with per-image bpd)")
    p.add_argument("--holdout", type=int, default=0, help="as given to evaluate (0: the test split)")
    p.add_argument("--data-dir", default=None, help="MNIST root (default: $SGM_DATA_DIR)")
    p.add_argument("--worst", type=int, default=6)
    p.add_argument("--draws", type=int, default=3, help="dequantization draws per image")
    p.add_argument("--probes", type=int, default=3, help="Hutchinson probe draws per dequantization")
    p.add_argument("--rtol", type=float, default=3e-3, help="the solver's rtol (evaluate_bpd's default)")
    args = p.parse_args(argv)
    for name in ("worst", "draws", "probes"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name} must be at least 1, got {getattr(args, name)}")

    bpd = json.loads(args.results.read_text(encoding="utf-8"))["bpd"]
    per_image, start = bpd["per_image"], bpd.get("start", 0)
    if args.holdout:
        images = load_mnist(train=True, root=args.data_dir)[0][-args.holdout:]
    else:
        images = load_mnist(train=False, root=args.data_dir)[0]
    images = images[start:start + len(per_image)]
    if len(images) != len(per_image):
        raise SystemExit(f"error: {args.results} holds {len(per_image)} images from index {start}, "
                         f"but the split has {len(images)} there: is --holdout the one evaluate was given?")
    model, sde = score_model(args)
    order = sorted(range(len(per_image)), key=per_image.__getitem__)
    median = order[len(order) // 2]
    print(f"{args.results}: {len(per_image)} images, mean {statistics.fmean(per_image):.3f}, "
          f"median {per_image[median]:.3f}, worst {max(per_image):.3f} bits/dim, "
          f"{sum(v > 8 for v in per_image)} above 8 (a uniform density's); {sde}")
    for i in [*order[::-1][:args.worst], median]:
        for draw in range(args.draws):
            x = dequantize(images[i:i + 1], torch.Generator().manual_seed(draw))
            values, reach = [], 0.0
            for probe in range(args.probes):
                z, logp, _ = ode_likelihood(x, model, sde, rtol=args.rtol, atol=1e-5, eps=bpd.get("eps", DEFAULT_EPS),
                                            generator=torch.Generator().manual_seed(1000 + probe))
                values.append(float(bits_per_dim(logp, x)))
                reach = max(reach, float(z.abs().max()))
            label = "median" if i == median else "worst"
            print(f"image {start + i} ({label}, batched {per_image[i]:.3f}), dequantization {draw}: "
                  f"bits/dim {' '.join(f'{v:.3f}' for v in values)}; max |x(1)| {reach:.2f}", flush=True)


if __name__ == "__main__":
    main()
