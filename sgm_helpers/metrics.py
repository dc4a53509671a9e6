"""Sample-quality metrics computed with the package's MNIST classifier.

The Fréchet distance between two sets of features fits a Gaussian to each, N(mu_1, C_1) and
N(mu_2, C_2), and returns the squared 2-Wasserstein distance between the two Gaussians:

    d^2 = |mu_1 - mu_2|^2 + tr(C_1) + tr(C_2) - 2 tr((C_1^(1/2) C_2 C_1^(1/2))^(1/2)).

With Inception-v3 features on natural images this is FID; here the features are the 128
penultimate activations of :class:`~sgm_helpers.classifier.MNISTClassifier`, so the numbers are
comparable only with other numbers computed with the same shipped classifier. The estimate is
biased upwards at small sample sizes: compare distances at the same number of samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from .classifier import predict_proba
from .utils import check_positive_int, model_device


def _as_float64(feats, name: str) -> np.ndarray:
    a = feats.detach().cpu().double().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats, np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must be a [N, D] array of features with N >= 2, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return a


def _psd_sqrt(c: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and symmetric square root of a positive semi-definite matrix, by ``eigh``.

    Round-off can leave eigenvalues of order -1e-16 * max; those are set to 0. An eigenvalue more
    negative than 1e-8 * max means the matrix is not PSD, and raises.
    """
    w, v = np.linalg.eigh((c + c.T) / 2)
    scale = max(float(np.abs(w).max()), np.finfo(np.float64).tiny)
    if w.min() < -1e-8 * scale:
        raise ValueError(f"{name} is not positive semi-definite (eigenvalue {w.min():.3g})")
    w = np.maximum(w, 0.0)
    return w, (v * np.sqrt(w)) @ v.T


def frechet_distance_from_stats(mu1, cov1, mu2, cov2) -> float:
    """The Fréchet distance d^2 between N(mu1, cov1) and N(mu2, cov2) (the formula of the module docstring).

    The trace term is computed as the sum of the square roots of the eigenvalues of the symmetric
    PSD matrix C_1^(1/2) C_2 C_1^(1/2) (float64 ``eigh``), which is stable where the non-symmetric
    ``sqrtm(C_1 C_2)`` can return complex round-off.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"means must be [D] and covariances [D, D] with one D, got {mu1.shape}, {cov1.shape}, "
                         f"{mu2.shape}, {cov2.shape}")
    _, s1 = _psd_sqrt(cov1, "cov1")
    _psd_sqrt(cov2, "cov2")
    w, _ = _psd_sqrt(s1 @ cov2 @ s1, "C_1^(1/2) C_2 C_1^(1/2)")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.sqrt(w).sum())


def frechet_distance(feats_a, feats_b) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets ``[N_a, D]`` and ``[N_b, D]``.

    Means and (unbiased, ``N - 1``) covariances are computed in float64. Tensors or arrays.
    """
    a, b = _as_float64(feats_a, "feats_a"), _as_float64(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} and {b.shape[1]}")
    return frechet_distance_from_stats(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


@torch.no_grad()
def classifier_features(classifier, images: torch.Tensor, batch_size: int = 500, device=None) -> torch.Tensor:
    """``classifier.features`` of ``images [N, 1, 28, 28]`` in batches: a float32 CPU tensor ``[N, feature_dim]``.

    The images are passed as they are (no clipping); see :func:`sample_quality` for samples.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    device = model_device(classifier, device)
    classifier.eval()
    return torch.cat([classifier.features(images[i:i + batch_size].to(device, torch.float32)).cpu()
                      for i in range(0, len(images), batch_size)])


@dataclass
class SampleQuality:
    """Classifier-based scores of a batch of generated digits (see :func:`sample_quality`)."""

    n: int
    frechet_distance: float
    confident_share: float
    class_histogram: list
    confidence_threshold: float
    clip: bool
    out_of_range_share: float

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"Fréchet distance {self.frechet_distance:.2f} over {self.n} samples; "
                f"{100 * self.confident_share:.1f}% classified with confidence >= {self.confidence_threshold:g}; "
                f"classes {self.class_histogram}")


def sample_quality(samples: torch.Tensor, classifier, reference_features, *, clip: bool,
                   confidence: float = 0.9, batch_size: int = 500, device=None) -> SampleQuality:
    """Score generated images ``[N, 1, 28, 28]`` with the shipped classifier.

    The samplers return their last step's mean, whose pixels lie slightly outside [0, 1]. With
    ``clip=True`` the samples are scored as they are displayed and saved as images, i.e. with every
    pixel clipped to [0, 1] (``samples.clamp(0, 1)``); with ``clip=False`` they are scored exactly
    as returned. Either way ``out_of_range_share`` reports the share of pixels outside [0, 1], so
    the choice is visible in the result.

    Args:
        samples: ``[N, 1, 28, 28]``, N >= 2.
        classifier: an :class:`~sgm_helpers.classifier.MNISTClassifier` (``load_classifier()``).
        reference_features: ``classifier_features(classifier, reference_images)``, e.g. of the test split.
        clip: whether to clip the pixels to [0, 1] before scoring (required: no silent choice).
        confidence: the threshold on the top softmax probability for ``confident_share``.
    Returns:
        a :class:`SampleQuality`: n, the Fréchet distance of the samples' features to the reference
        features, the share of samples whose top class probability is >= ``confidence``, the
        histogram of predicted classes (10 counts), and the settings used.
    """
    if not isinstance(clip, bool):
        raise ValueError(f"clip must be True or False, got {clip!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in the open interval (0, 1), got {confidence!r}")
    if not torch.isfinite(samples).all():
        raise ValueError("samples contain NaN or inf values")
    out_of_range = float(((samples < 0) | (samples > 1)).double().mean())
    x = samples.clamp(0.0, 1.0) if clip else samples
    feats = classifier_features(classifier, x, batch_size, device)
    probs = predict_proba(classifier, x, batch_size=batch_size, device=device)
    top, pred = probs.max(1)
    return SampleQuality(
        n=len(samples),
        frechet_distance=frechet_distance(feats, reference_features),
        confident_share=float((top >= confidence).double().mean()),
        class_histogram=torch.bincount(pred, minlength=probs.shape[1]).tolist(),
        confidence_threshold=float(confidence),
        clip=clip,
        out_of_range_share=out_of_range,
    )
