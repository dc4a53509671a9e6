"""Train the shipped MNIST classifier ("mnist-classifier") used to score generated samples.

    SGM_DATA_DIR=../shared/data python scripts/train_classifier.py

Trains :class:`sgm_helpers.classifier.MNISTClassifier` on the MNIST *training* split (all 60,000
images in SGM_DATA_DIR; it once held a 5,000-image subset) with light augmentation (random shifts up to 2
pixels and rotations up to 10 degrees), measures its accuracy on all 10,000 official test images,
and, if that is at least --min-accuracy, writes the weights to sgm_helpers/weights/mnist-classifier.pt
with a manifest entry recording the test accuracy, the training set size and this command.

--holdout N trains on all but N training images and reports the accuracy on those N instead
(for choosing hyperparameters without looking at the test split); nothing is saved then.
"""

import argparse
import shlex
import sys
import time

import torch

from sgm_helpers.classifier import CLASSIFIER_NAME, classifier_accuracy, train_classifier
from sgm_helpers.data import load_mnist
from sgm_helpers.pretrained import WEIGHTS_DIR, sha256_file, write_manifest_entry


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--holdout", type=int, default=0, help="validate on this many held-out training images")
    p.add_argument("--min-accuracy", type=float, default=0.97)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    images, labels = load_mnist(train=True, download=False)
    if args.holdout:
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(12345))
        val, tr = perm[:args.holdout], perm[args.holdout:]
        (images, labels), (eval_images, eval_labels) = (images[tr], labels[tr]), (images[val], labels[val])
        eval_name = f"{args.holdout} held-out training images"
    else:
        eval_images, eval_labels = load_mnist(train=False, download=False)
        eval_name = f"the {len(eval_images)} test images"
    print(f"training on {len(images)} MNIST training images; {vars(args)}", flush=True)
    t0 = time.time()
    model = train_classifier(images, labels, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, seed=args.seed, augment=not args.no_augment,
                             device=args.device)
    train_s = time.time() - t0
    acc = classifier_accuracy(model, eval_images, eval_labels)
    print(f"accuracy on {eval_name}: {acc:.4f} (trained in {train_s:.0f} s)")
    if args.holdout:
        return
    if acc < args.min_accuracy:
        sys.exit(f"error: test accuracy {acc:.4f} < {args.min_accuracy}; not saved")

    out = WEIGHTS_DIR / f"{CLASSIFIER_NAME}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, out)
    entry = {
        "kind": "classifier",
        "file": out.name,
        "sha256": sha256_file(out),
        "bytes": out.stat().st_size,
        "architecture": {"class": "MNISTClassifier", "feature_dim": model.feature_dim,
                         "num_classes": model.num_classes},
        "test_accuracy": round(acc, 4),
        "test_images": len(eval_images),
        "training": {
            "train_images": len(images),
            "data": f"MNIST training split ({len(images)} images); never the test split",
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "weight_decay": args.weight_decay, "augment": not args.no_augment, "seed": args.seed,
            "seconds": round(train_s),
            "command": "SGM_DATA_DIR=../shared/data python scripts/train_classifier.py "
                       + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        },
    }
    manifest = write_manifest_entry(CLASSIFIER_NAME, entry)
    print(f"wrote {out} ({entry['bytes'] / 1e3:.0f} kB) and its entry in {manifest}")


if __name__ == "__main__":
    main()
