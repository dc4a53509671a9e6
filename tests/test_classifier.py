import os

import pytest
import torch

from sgm_helpers import MNISTClassifier, classifier_accuracy, load_classifier, load_mnist, train_classifier
from sgm_helpers.classifier import random_shift_rotate
from sgm_helpers.pretrained import model_info

needs_mnist = pytest.mark.skipif(not os.environ.get("SGM_DATA_DIR"), reason="needs MNIST in $SGM_DATA_DIR")


def test_shapes_and_bad_input():
    model = MNISTClassifier().eval()
    x = torch.rand(3, 1, 28, 28)
    assert model.features(x).shape == (3, 128) and model(x).shape == (3, 10)
    assert (model.features(x) >= 0).all()  # post-ReLU features
    assert sum(p.numel() for p in model.parameters()) < 250_000  # "well under 1 MB" as float32
    with pytest.raises(ValueError, match=r"\[B, 1, 28, 28\]"):
        model(torch.rand(3, 28, 28))


def _blob():
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 9:19, 11:17] = torch.rand(8, 1, 10, 6, generator=torch.Generator().manual_seed(0))
    return x


def _centre_of_mass(x):
    w = x[:, 0]
    rows, cols = torch.arange(28.0), torch.arange(28.0)
    m = w.sum((1, 2))
    return torch.stack([(w.sum(2) * rows).sum(1) / m, (w.sum(1) * cols).sum(1) / m], 1)


def test_augmentation_shifts_and_rotates_within_limits():
    x = _blob()
    torch.testing.assert_close(random_shift_rotate(x, max_shift=0, max_degrees=0), x, rtol=0, atol=1e-5)
    gen = torch.Generator().manual_seed(1)
    shifted = random_shift_rotate(x, max_shift=2, max_degrees=0, generator=gen)
    # A translation with bilinear interpolation keeps the mass of an image away from the border
    # and moves its centre of mass by the shift, at most 2 pixels per axis.
    torch.testing.assert_close(shifted.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=1e-5, atol=0)
    move = _centre_of_mass(shifted) - _centre_of_mass(x)
    assert move.abs().max() <= 2 + 1e-4 and move.abs().max() > 0.1
    again = random_shift_rotate(x, max_shift=2, max_degrees=0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, shifted)  # seeded
    rotated = random_shift_rotate(x, max_shift=0, max_degrees=10, generator=gen)
    assert not torch.allclose(rotated, x)
    # A rotation about the image centre (13.5, 13.5) keeps the centre of mass at the same distance from it.
    centre = torch.tensor([13.5, 13.5])
    torch.testing.assert_close((_centre_of_mass(rotated) - centre).norm(dim=1),
                               (_centre_of_mass(x) - centre).norm(dim=1), rtol=0, atol=0.05)


def test_train_classifier_is_seeded_and_fits_a_small_set():
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.rand(40, 1, 28, 28, generator=gen), torch.arange(40) % 10
    kw = dict(epochs=1, batch_size=20, seed=3, progress=False, device="cpu")
    a, b = train_classifier(images, labels, **kw), train_classifier(images, labels, **kw)
    assert not a.training
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    # Forty random images with arbitrary labels can only be learned by memorizing them.
    fitted = train_classifier(images, labels, epochs=8, batch_size=20, augment=False, seed=0, progress=False,
                              device="cpu")
    assert classifier_accuracy(fitted, images, labels) == 1.0
    with pytest.raises(ValueError, match="labels"):
        train_classifier(images, labels[:5], epochs=1, progress=False)


def test_manifest_records_the_classifier_training():
    info = model_info("mnist-classifier")
    assert info["kind"] == "classifier" and info["test_accuracy"] >= 0.97 and info["test_images"] == 10000
    assert info["training"]["train_images"] >= 5000 and "train_classifier.py" in info["training"]["command"]


@needs_mnist
def test_bundled_classifier_reaches_97_percent_on_test_images():
    images, labels = load_mnist(train=False, download=False)
    classifier = load_classifier(device="cpu")
    assert classifier_accuracy(classifier, images[:1000], labels[:1000]) >= 0.97
