import math
import os

import numpy as np
import pytest
import scipy.linalg
import torch

from sgm_helpers import load_classifier, load_mnist
from sgm_helpers.metrics import (SampleQuality, classifier_features, frechet_distance, frechet_distance_from_stats,
                                 sample_quality)

needs_mnist = pytest.mark.skipif(not os.environ.get("SGM_DATA_DIR"), reason="needs MNIST in $SGM_DATA_DIR")


def _random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _random_rotation(rng, d):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q


def test_stats_formula_matches_closed_forms():
    rng = np.random.default_rng(0)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2.
    assert math.isclose(frechet_distance_from_stats([1.0], [[4.0]], [-2.0], [[9.0]]), 9.0 + 1.0, rel_tol=1e-12)
    # Commuting covariances Q diag(a) Q^T, Q diag(b) Q^T: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    d = 6
    q, a, b = _random_rotation(rng, d), rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance_from_stats(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert math.isclose(got, expected, rel_tol=1e-10)
    # Non-commuting covariances: tr(C1 + C2 - 2 sqrtm(C1 C2)) by scipy's general matrix square root.
    c1, c2 = _random_spd(rng, d), _random_spd(rng, d)
    reference = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2)).real
    assert math.isclose(frechet_distance_from_stats(mu1, c1, mu2, c2), reference, rel_tol=1e-9)
    # Symmetric in its two arguments, and zero between a Gaussian and itself.
    assert math.isclose(frechet_distance_from_stats(mu2, c2, mu1, c1), reference, rel_tol=1e-9)
    assert abs(frechet_distance_from_stats(mu1, c1, mu1, c1)) < 1e-12 * np.trace(c1)


def test_identical_feature_sets_have_zero_distance():
    feats = torch.randn(500, 16, generator=torch.Generator().manual_seed(0)) @ torch.randn(16, 16) + 3.0
    trace = float(torch.cov(feats.T.double()).trace())
    assert abs(frechet_distance(feats, feats)) < 1e-9 * trace
    assert abs(frechet_distance(feats.numpy(), feats)) < 1e-9 * trace  # arrays and tensors alike


def test_two_samples_of_one_gaussian_give_the_expected_small_bias():
    # For N(0, I) in D dims and N samples on each side, to second order
    #   E[d^2] = E|mean_a - mean_b|^2 + E||C_a - C_b||_F^2 / 4 = 2D/N + D(D+1)/(2N),
    # a weighted chi-square with D + D(D+1)/2 = 44 degrees of freedom at D = 8: relative standard deviation
    # 0.23 (0.25 over 30 seeds), skewed to the right. Allow 3 standard deviations below and 4 above.
    rng = np.random.default_rng(1)
    d, n = 8, 20000
    expected = 2 * d / n + d * (d + 1) / (2 * n)
    got = frechet_distance(rng.standard_normal((n, d)), rng.standard_normal((n, d)))
    assert 0.25 * expected < got < 2.0 * expected


def test_samples_of_two_gaussians_match_the_closed_form():
    rng = np.random.default_rng(2)
    d, n = 4, 20000
    q, a, b = _random_rotation(rng, d), rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    c1, c2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    exact = frechet_distance_from_stats(mu1, c1, mu2, c2)
    got = frechet_distance(rng.multivariate_normal(mu1, c1, n), rng.multivariate_normal(mu2, c2, n))
    # First-order fluctuations: the mean term 2 dmu.(e_1 - e_2) has variance 4 dmu^T (C1 + C2) dmu / N; in the
    # eigenbasis the covariance term moves by sum_i (1 - sqrt(b/a)) da_i + (1 - sqrt(a/b)) db_i with
    # Var(da_i) = 2 a_i^2 / N. Second-order bias: at most D(D+1)/(2N) * max eigenvalue + 2 D max / N.
    dmu = mu1 - mu2
    var = 4 * dmu @ (c1 + c2) @ dmu / n
    var += np.sum(2 * ((a - np.sqrt(a * b)) ** 2 + (b - np.sqrt(a * b)) ** 2)) / n
    bias = (d * (d + 1) / 2 + 2 * d) * max(a.max(), b.max()) / n
    assert abs(got - exact) < 5 * math.sqrt(var) + bias


def test_bad_features_raise():
    with pytest.raises(ValueError, match="feature dimensions differ"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((5, 3), np.nan), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance_from_stats(np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2))


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(device="cpu")


def test_sample_quality_states_its_clipping(classifier):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 28, 28, generator=gen) * 1.2 - 0.1  # 1/6 of the pixels outside [0, 1]
    reference = classifier_features(classifier, torch.rand(50, 1, 28, 28, generator=gen))
    with pytest.raises(TypeError):
        sample_quality(x, classifier, reference)  # clip is required: no silent choice
    clipped = sample_quality(x, classifier, reference, clip=True)
    raw = sample_quality(x, classifier, reference, clip=False)
    assert isinstance(clipped, SampleQuality) and clipped.clip and not raw.clip
    n_pixels = x.numel()
    assert abs(clipped.out_of_range_share - 1 / 6) < 4 * math.sqrt((1 / 6) * (5 / 6) / n_pixels)
    assert raw.out_of_range_share == clipped.out_of_range_share
    assert clipped.frechet_distance == pytest.approx(
        frechet_distance(classifier_features(classifier, x.clamp(0, 1)), reference), rel=1e-12)
    assert raw.frechet_distance == pytest.approx(frechet_distance(classifier_features(classifier, x), reference),
                                                 rel=1e-12)
    assert clipped.n == 20 and sum(clipped.class_histogram) == 20 and len(clipped.class_histogram) == 10
    assert set(clipped.to_dict()) >= {"n", "frechet_distance", "confident_share", "class_histogram"}


@needs_mnist
def test_sample_quality_of_real_digits(classifier):
    images, labels = load_mnist(train=False, download=False)
    reference = classifier_features(classifier, images[1000:2000])
    q = sample_quality(images[:500], classifier, reference, clip=False)
    assert q.out_of_range_share == 0.0
    assert q.class_histogram == pytest.approx(torch.bincount(labels[:500], minlength=10).tolist(), abs=10)
    assert q.confident_share > 0.9  # real digits read as digits
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    # Real digits are far closer to other real digits than noise is.
    assert q.frechet_distance < 0.05 * sample_quality(noise, classifier, reference, clip=False).frechet_distance
