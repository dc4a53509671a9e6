"""A small MNIST classifier, used to score generated digits (see :mod:`sgm_helpers.metrics`).

Its penultimate layer (128 numbers per image) is the feature space of the package's Fréchet
distance, the MNIST analogue of the Inception features of FID; its softmax tells how confidently
a sample reads as a digit, and which one.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .utils import check_positive, check_positive_int, get_device, model_device, rand

CLASSIFIER_NAME = "mnist-classifier"
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # pixel statistics of the MNIST training split


def _check_images(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be MNIST images of shape [B, 1, 28, 28], got {shape}")


class MNISTClassifier(nn.Module):
    """A small CNN: three conv blocks, a 128-dim feature layer and a linear head (131k parameters).

        [B,1,28,28] -> conv 32, pool -> [B,32,14,14] -> conv 64, pool -> [B,64,7,7]
                    -> conv 64, pool -> [B,64,3,3] -> linear 576 -> 128 (features) -> linear 128 -> 10

    Every convolution is 3x3 with BatchNorm and ReLU. Inputs are images in [0, 1] (pixel / 255),
    standardized inside the network with the MNIST mean and std.
    """

    def __init__(self, feature_dim: int = 128, num_classes: int = 10):
        super().__init__()
        self.feature_dim = check_positive_int(feature_dim, "feature_dim")
        self.num_classes = check_positive_int(num_classes, "num_classes")

        def block(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                                 nn.ReLU(inplace=True), nn.MaxPool2d(2))

        self.conv = nn.Sequential(block(1, 32), block(32, 64), block(64, 64))
        self.fc = nn.Linear(64 * 3 * 3, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations (after ReLU) of ``x [B, 1, 28, 28]``: shape ``[B, feature_dim]``."""
        _check_images(x)
        h = self.conv((x - MNIST_MEAN) / MNIST_STD)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, num_classes]`` of images ``x [B, 1, 28, 28]`` in [0, 1]."""
        return self.head(self.features(x))


def random_shift_rotate(images: torch.Tensor, *, max_shift: float = 2.0, max_degrees: float = 10.0,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Light augmentation: each image is rotated by an angle in [-max_degrees, max_degrees] about its
    centre and shifted by up to ``max_shift`` pixels along each axis (uniformly drawn), with
    bilinear interpolation and zero (black) fill (``affine_grid`` + ``grid_sample``).

    ``images``: ``[B, C, H, W]``; returns the same shape. With both limits 0 it returns the images
    unchanged up to float32 round-off of the sampling grid (about 1e-6).
    """
    if images.dim() != 4:
        raise ValueError(f"images must have shape [B, C, H, W], got {tuple(images.shape)}")
    if max_shift < 0 or max_degrees < 0:
        raise ValueError(f"max_shift and max_degrees must be >= 0, got {max_shift!r} and {max_degrees!r}")
    b, _, h, w = images.shape
    u = rand((b, 3), generator, images.device) * 2 - 1
    angle = u[:, 0] * math.radians(max_degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid works in coordinates where the image spans [-1, 1], so one pixel is 2 / size.
    theta = torch.stack([torch.stack([cos, -sin, u[:, 1] * max_shift * 2 / w], 1),
                         torch.stack([sin, cos, u[:, 2] * max_shift * 2 / h], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 30, batch_size: int = 128,
                     lr: float = 3e-3, seed: int = 0, augment: bool = True, weight_decay: float = 1e-4,
                     device=None, progress: bool = True) -> MNISTClassifier:
    """Train an :class:`MNISTClassifier` with AdamW and a one-cycle learning-rate schedule.

    Args:
        images: ``[N, 1, 28, 28]`` in [0, 1]; labels: ``[N]`` integers in 0..9.
        epochs, batch_size, lr, weight_decay: the optimization (``lr`` is the one-cycle peak).
        seed: seeds the initialization, the batch order and the augmentation.
        augment: apply :func:`random_shift_rotate` (shifts up to 2 pixels, rotations up to 10
            degrees) to every training batch.
        device: where to train (default ``get_device()``).
        progress: show a ``tqdm.auto`` bar.
    Returns:
        the trained classifier, in eval mode.
    """
    _check_images(images, "images")
    if labels.shape != (len(images),) or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"labels must be integers in 0..9 of shape [{len(images)}], got shape {tuple(labels.shape)}")
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_positive(lr, "lr")
    device = get_device() if device is None else torch.device(device)
    torch.manual_seed(seed)  # the initialization
    gen = torch.Generator().manual_seed(seed)
    model = MNISTClassifier().to(device)
    images, labels = images.to(device, torch.float32), labels.to(device, torch.int64)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    model.train()
    bar = tqdm(total=epochs * steps_per_epoch, disable=not progress, desc="train classifier", unit="step")
    for epoch in range(epochs):
        perm = torch.randperm(len(images), generator=gen).to(device)
        correct = 0
        for k in range(steps_per_epoch):
            idx = perm[k * batch_size:(k + 1) * batch_size]
            x, y = images[idx], labels[idx]
            if augment:
                x = random_shift_rotate(x, generator=gen)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            correct += int((logits.argmax(1) == y).sum())
            bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", train_acc=f"{correct / len(images):.3f}")
    bar.close()
    return model.eval()


@torch.no_grad()
def predict_proba(classifier: nn.Module, images: torch.Tensor, *, batch_size: int = 500, device=None) -> torch.Tensor:
    """Softmax class probabilities ``[N, 10]`` (on the CPU) of images ``[N, 1, 28, 28]``, in batches."""
    _check_images(images, "images")
    batch_size = check_positive_int(batch_size, "batch_size")
    device = model_device(classifier, device)
    classifier.eval()
    return torch.cat([F.softmax(classifier(images[i:i + batch_size].to(device, torch.float32)), 1).cpu()
                      for i in range(0, len(images), batch_size)]) if len(images) else torch.zeros(0, 10)


def classifier_accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                        batch_size: int = 500, device=None) -> float:
    """The share of ``images`` whose most probable class is their label."""
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape [{len(images)}], got {tuple(labels.shape)}")
    pred = predict_proba(classifier, images, batch_size=batch_size, device=device).argmax(1)
    return float((pred == labels.cpu()).double().mean())


def load_classifier(device=None, name: str = CLASSIFIER_NAME) -> MNISTClassifier:
    """The shipped classifier (trained by ``scripts/train_classifier.py`` on the MNIST training split), in eval mode.

    Its sha256 is checked against ``weights/manifest.json`` before it is read; the manifest entry
    (``sgm_helpers.pretrained.model_info("mnist-classifier")``) records its test accuracy, the
    training set size and the command that trained it. ``device`` defaults to ``get_device()``.
    """
    from .pretrained import load_weights, model_info

    arch = model_info(name, "classifier")["architecture"]
    model = MNISTClassifier(feature_dim=arch["feature_dim"], num_classes=arch["num_classes"])
    model.load_state_dict(load_weights(name, "classifier"))
    return model.to(get_device() if device is None else torch.device(device)).eval()
