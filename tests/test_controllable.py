"""Controllable generation against the truth: exact scores of Gaussians and Gaussian mixtures.

Classifier guidance: for the mixture ``three_modes()`` diffused by the SDE, p_t(k | x) is known exactly
(``perturbed_log_posterior``), so s_t(x) + grad log p_t(k | x) is the exact score of component k alone and
the guided sampler must draw from it: every sample in component k, with its mean and spread.

Inpainting: x ~ N(0, [[1, rho], [rho, 1]]), rho = 0.9, with x1 = 1 known; the truth is x2 | x1 ~ N(0.9, 0.19).
Measured with 20,000 samples (seed 0, exact score, VE sigma = 25; VP in brackets):
  Euler-Maruyama, plain replacement (U = 1), 250 steps:  mean 0.626 (0.630), var 0.311 (0.312)  -- misses;
  Euler-Maruyama, 1,000 steps, U = 1:                     mean 0.616 (0.618), var 0.312 (0.308);
  Euler-Maruyama, 100 steps, U = 20 (RePaint):            mean 0.882 (0.904), var 0.194 (0.174);
  Euler-Maruyama, 250 steps, U = 20:                      mean 0.889, var 0.194;
  predictor-corrector (inpaint's default), 500 steps, U = 1: mean 0.868 (0.881), var 0.206 (0.202).
The Langevin corrector, run with the known coordinate replaced, mixes the two coordinates much as RePaint's
resampling does. Standard errors are ~0.004 at 20,000 samples; the tests below use fewer and allow 4.5 of them.
"""

import math

import pytest
import torch

from sgm_helpers import (VESDE, VPSDE, ConditionalScoreNet, CountingModel, Gaussian, MNISTClassifier, ScoreNet,
                         TimeClassifier, subVPSDE, three_modes)
from sgm_helpers.controllable import (INPAINT_RESAMPLINGS, block_basis, block_means, cfg_score, classifier_guided_score,
                                      from_block_basis, inpaint, reconstruction_guided_score, region_mask, super_resolve,
                                      to_block_basis)
from sgm_helpers.samplers import sample

Z = 4.5
MIX = three_modes()


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --- classifier guidance on the toy ------------------------------------------------------------------


@pytest.mark.parametrize("sde", [VESDE(25.0), VPSDE()], ids=repr)
def test_classifier_guidance_with_the_exact_posterior_samples_exactly_the_component(sde):
    # With scale 1, s_t + grad log p_t(k | x) is the exact score of component k: each sample, guided to its own
    # label, must land in that component, with the component's mean and std (EM, 100 steps).
    n = 1500
    labels = torch.arange(n) % 3
    guided = classifier_guided_score(MIX.perturbed_score(sde), MIX.perturbed_log_posterior(sde), labels, 1.0)
    x = sample("em", guided, sde, (n, 2), num_steps=100, generator=gen(0), progress=False)[0].double()
    assigned = MIX.assign(x)
    assert (assigned == labels).double().mean() > 0.995  # component overlaps are ~1e-5
    for k in range(3):
        xk, mu, s = x[labels == k], MIX.means[k], MIX.stds[k]
        se = s / math.sqrt(len(xk))
        assert torch.all((xk.mean(0) - mu).abs() < Z * se + 0.02), (k, xk.mean(0), mu)
        assert torch.all((xk.std(0) / s - 1).abs() < Z / math.sqrt(2 * len(xk)) + 0.03), (k, xk.std(0), s)


def test_unguided_and_guided_differ_and_scale_zero_is_the_plain_score():
    sde = VESDE(25.0)
    score, post = MIX.perturbed_score(sde), MIX.perturbed_log_posterior(sde)
    x, t = torch.randn(64, 2, generator=gen(1)) * 3, torch.full((64,), 0.3)
    torch.testing.assert_close(classifier_guided_score(score, post, 2, 0.0)(x, t), score(x, t), rtol=0, atol=0)
    # Bayes' rule at scale 1: the guided score is the score of component 2 alone, diffused.
    from sgm_helpers import GaussianMixture
    alone = GaussianMixture(MIX.means[2:], MIX.stds[2:]).perturbed_score(sde)
    torch.testing.assert_close(classifier_guided_score(score, post, 2, 1.0)(x, t), alone(x, t), rtol=1e-4, atol=1e-4)
    # Scale 3 moves three times as far.
    g1 = classifier_guided_score(score, post, 2, 1.0)(x, t) - score(x, t)
    g3 = classifier_guided_score(score, post, 2, 3.0)(x, t) - score(x, t)
    torch.testing.assert_close(g3, 3 * g1, rtol=1e-4, atol=1e-4)


def test_classifier_guidance_through_a_network_builds_no_parameter_graph():
    clf = TimeClassifier()
    score = ScoreNet(VESDE(25.0).marginal_prob_std)
    guided = classifier_guided_score(score, clf, 3, 2.0)
    x, t = torch.rand(2, 1, 28, 28, generator=gen(2)), torch.tensor([0.5, 0.9])
    with torch.no_grad():
        out = guided(x, t)
    assert out.shape == x.shape and torch.isfinite(out).all()
    grad = guided.log_likelihood_grad(x, t)
    assert grad.grad_fn is None and not grad.requires_grad
    # the same gradient by plain autograd
    xr = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(torch.log_softmax(clf(xr, t), -1)[:, 3].sum(), xr)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)
    assert next(guided.parameters()).device == x.device  # the networks' parameters show through


# --- classifier-free guidance ------------------------------------------------------------------------


CONDITIONAL = ConditionalScoreNet(VESDE(25.0).marginal_prob_std)


def _conditional_net():
    torch.manual_seed(0)
    model = ConditionalScoreNet(VESDE(25.0).marginal_prob_std)
    torch.nn.init.normal_(model.label_embed.weight)  # untrained: the embedding starts at zero
    return model.eval()


def test_cfg_score_convention_w0_unconditional_w1_conditional_linear_between():
    model = _conditional_net()
    x, t, y = torch.rand(3, 1, 28, 28, generator=gen(3)), torch.tensor([0.2, 0.5, 0.8]), torch.tensor([1, 7, 4])
    with torch.no_grad():
        s_u, s_c = model(x, t, None), model(x, t, y)
        assert not torch.allclose(s_u, s_c)
        torch.testing.assert_close(cfg_score(model, y, 0.0)(x, t), s_u, rtol=0, atol=0)
        torch.testing.assert_close(cfg_score(model, y, 1.0)(x, t), s_c, rtol=0, atol=0)
        for w in (0.5, 2.5):
            torch.testing.assert_close(cfg_score(model, y, w)(x, t), (1 - w) * s_u + w * s_c, rtol=1e-4, atol=1e-4)
        # y = None or the null class 10 is unconditional, whatever the scale
        torch.testing.assert_close(cfg_score(model, None, 3.0)(x, t), s_u, rtol=0, atol=0)
        torch.testing.assert_close(cfg_score(model, 10, 3.0)(x, t), s_u, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(cfg_score(model, 7, 1.0)(x, t), model(x, t, torch.full((3,), 7)), rtol=0, atol=0)


@pytest.mark.parametrize("sde", [VESDE(25.0), VPSDE()], ids=repr)
def test_cfg_with_exact_scores_is_classifier_guidance_with_the_exact_posterior(sde):
    # The toy's exact conditional model: y = k is component k alone, y = None or K the mixture. Then
    # s(x, t, k) - s(x, t) = grad log p_t(k | x) exactly, so CFG at w and classifier guidance at w agree.
    from sgm_helpers import GaussianMixture
    mix = GaussianMixture(MIX.means, MIX.stds, MIX.weights)
    exact = mix.perturbed_conditional_score(sde)
    assert exact.num_classes == exact.null_class == 3
    x, t = torch.randn(64, 2, generator=gen(9), dtype=torch.float64) * 3, torch.rand(64, generator=gen(10)) * 0.9 + 0.05
    labels = torch.arange(64) % 4  # 3 = the null class
    torch.testing.assert_close(exact(x, t, None), mix.perturbed_score(sde)(x, t), rtol=0, atol=0)
    for k in range(3):
        alone = GaussianMixture(mix.means[k:k + 1], mix.stds[k:k + 1]).perturbed_score(sde)
        rows = labels == k
        torch.testing.assert_close(exact(x, t, labels)[rows], alone(x, t)[rows], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(exact(x, t, labels)[labels == 3], mix.perturbed_score(sde)(x, t)[labels == 3])
    for w in (0.0, 1.0, 2.5):
        guided = classifier_guided_score(mix.perturbed_score(sde), mix.perturbed_log_posterior(sde), 1, w)
        torch.testing.assert_close(cfg_score(exact, 1, w)(x, t), guided(x, t), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="y must hold classes in 0..2 or 3"):
        exact(x, t, 4)
    with pytest.raises(ValueError, match="y must be a class in 0..2"):
        cfg_score(exact, 5, 1.0)


def test_conditional_scorenet_none_is_the_null_class_and_zero_embedding_is_scorenet():
    model = _conditional_net()
    x, t = torch.rand(2, 1, 28, 28, generator=gen(4)), torch.tensor([0.1, 0.6])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, None), model(x, t, 10), rtol=0, atol=0)
        torch.testing.assert_close(model(x, t, None), model(x, t, torch.tensor([10, 10])), rtol=0, atol=0)
        # ScoreNet's state dict loads into it (only the label embedding is new), and with a zero
        # embedding the two networks agree exactly: one U-Net body.
        plain = ScoreNet(VESDE(25.0).marginal_prob_std)
        cond = ConditionalScoreNet(VESDE(25.0).marginal_prob_std)
        missing, unexpected = cond.load_state_dict(plain.state_dict(), strict=False)
        assert missing == ["label_embed.weight"] and unexpected == []
        torch.testing.assert_close(cond(x, t, torch.tensor([3, 5])), plain(x, t), rtol=0, atol=0)


# --- inpainting --------------------------------------------------------------------------------------

RHO = 0.9
CORRELATED = Gaussian([0.0, 0.0], [[1.0, RHO], [RHO, 1.0]])
TRUE_MEAN, TRUE_VAR = RHO, 1 - RHO ** 2  # x2 | x1 = 1


def _inpaint_correlated(sde, n, **kwargs):
    images = torch.zeros(n, 2)
    images[:, 0] = 1.0
    x = inpaint(CORRELATED.perturbed_score(sde), sde, images, torch.tensor([1.0, 0.0]), generator=gen(0), progress=False,
                **kwargs)
    assert torch.all(x[:, 0] == 1.0)  # the known coordinate, exactly
    return x[:, 1].double()


@pytest.mark.parametrize("sde", [VESDE(25.0), VPSDE()], ids=repr)
def test_plain_replacement_misses_the_conditional_gaussian(sde):
    # The paper's replacement with Euler-Maruyama (U = 1): mean ~0.63 and variance ~0.31 instead of 0.9 and 0.19.
    x2 = _inpaint_correlated(sde, 2000, num_steps=250, resamplings=1, corrector=False, guidance=0)
    assert TRUE_MEAN - x2.mean() > 0.15
    assert x2.var() > TRUE_VAR + 0.06


def test_repaint_resampling_reaches_the_conditional_gaussian():
    # RePaint with U = 20 resamplings (Euler-Maruyama, 100 steps): within 0.05 of the mean 0.9 (measured 0.882
    # with 20,000 samples; 4,000 here, standard error 0.007) and close to the variance 0.19.
    x2 = _inpaint_correlated(VESDE(25.0), 4000, num_steps=100, resamplings=20, corrector=False, guidance=0)
    assert abs(x2.mean() - TRUE_MEAN) < 0.05
    assert abs(x2.var() - TRUE_VAR) < 0.03


@pytest.mark.parametrize("sde", [VESDE(25.0), VPSDE()], ids=repr)
@pytest.mark.parametrize("corrector", [False, True])
def test_reconstruction_guidance_reaches_the_conditional_gaussian_without_resampling(sde, corrector):
    # Guidance at scale 1 (the data have the unit variance the approximation assumes) with U = 1, 250 steps:
    # measured mean 0.868-0.878 and variance 0.201-0.207 (4,000 samples; the truth 0.9 and 0.19), where the
    # replacement alone gives 0.63 and 0.31.
    x2 = _inpaint_correlated(sde, 4000, num_steps=250, resamplings=1, corrector=corrector, guidance=1.0)
    assert abs(x2.mean() - TRUE_MEAN) < 0.05
    assert abs(x2.var() - TRUE_VAR) < 0.03


@pytest.mark.parametrize("sde", [VESDE(25.0), VPSDE()], ids=repr)
def test_reconstruction_guided_score_matches_its_closed_form_on_a_gaussian(sde):
    # For Gaussian data the score is linear, s(x) = -S_t^-1 (x - alpha mu) with S_t = alpha^2 Sigma + std^2 I, so
    # Tweedie's denoiser has the Jacobian J = (I - std^2 S_t^-1) / alpha and the guidance term is
    # J^T M (y - x0_hat) / r^2 with r^2 = sigma^2 / (1 + sigma^2).
    mu, cov = torch.tensor([0.3, -0.2], dtype=torch.float64), torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)
    data = Gaussian(mu, cov)
    score = data.perturbed_score(sde)
    images = torch.tensor([[1.0, 0.0], [-0.5, 2.0], [0.2, 0.4]], dtype=torch.float64)
    mask = torch.tensor([[1, 0], [0, 1], [1, 1]])
    x = torch.randn(3, 2, generator=gen(11), dtype=torch.float64)
    t = torch.tensor([0.9, 0.3, 0.05], dtype=torch.float64)
    guided = reconstruction_guided_score(score, sde, images, mask, scale=2.5)(x, t)
    for b in range(3):
        alpha, std = sde.mean_coeff(t[b]).double(), sde.marginal_prob_std(t[b]).double()
        s_t = alpha ** 2 * cov + std ** 2 * torch.eye(2, dtype=torch.float64)
        s = -torch.linalg.solve(s_t, x[b] - alpha * mu)
        x0 = (x[b] + std ** 2 * s) / alpha
        jac = (torch.eye(2, dtype=torch.float64) - std ** 2 * torch.linalg.inv(s_t)) / alpha
        sigma2 = (std / alpha) ** 2
        expected = s + 2.5 * jac.T @ (mask[b] * (images[b] - x0)) / (sigma2 / (1 + sigma2))
        torch.testing.assert_close(guided[b], expected, rtol=1e-6, atol=1e-8)
    # scale 0 is the plain score
    torch.testing.assert_close(reconstruction_guided_score(score, sde, images, mask, scale=0)(x, t), score(x, t))


@pytest.mark.parametrize("corrector, per_step", [(True, 2), (False, 1)])
def test_inpaint_counts_score_evaluations_and_keeps_known_pixels(corrector, per_step):
    counted = CountingModel(CORRELATED.perturbed_score(VPSDE()))
    images = torch.randn(5, 2, generator=gen(5))
    x = inpaint(counted, VPSDE(), images, torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]]), num_steps=7,
                resamplings=3, corrector=corrector, generator=gen(6), progress=False)
    assert counted.calls == 7 * 3 * per_step
    assert x[0, 0] == images[0, 0] and x[1, 1] == images[1, 1] and torch.equal(x[2], images[2])
    assert x[3, 0] != images[3, 0] and x[0, 1] != images[0, 1]


def test_inpaint_images_with_a_network_and_a_shared_mask():
    sde = VESDE(25.0)
    model = CountingModel(ScoreNet(sde.marginal_prob_std).eval())
    images = torch.rand(2, 1, 28, 28, generator=gen(7))
    mask = torch.ones(1, 28, 28)
    mask[:, 14:] = 0  # bottom half unknown
    x = inpaint(model, sde, images, mask, num_steps=3, generator=gen(8), progress=False)
    assert x.shape == images.shape and torch.isfinite(x).all()
    assert torch.equal(x[..., :14, :], images[..., :14, :])
    assert not torch.equal(x[..., 14:, :], images[..., 14:, :])
    # the defaults: Euler-Maruyama, one guided evaluation per step, each step done INPAINT_RESAMPLINGS = 2 times
    assert INPAINT_RESAMPLINGS == 2 and model.calls == 3 * 2


# --- super-resolution --------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 3])
def test_block_basis_is_orthogonal_and_holds_the_normalized_block_mean(factor):
    h = block_basis(factor, torch.float64)
    torch.testing.assert_close(h @ h.T, torch.eye(factor, dtype=torch.float64))
    x = torch.randn(2, 3, 2 * factor, 3 * factor, generator=gen(9), dtype=torch.float64)
    c = to_block_basis(x, factor)
    torch.testing.assert_close(from_block_basis(c, factor), x)
    torch.testing.assert_close(c.norm(), x.norm())
    torch.testing.assert_close(c[..., ::factor, ::factor], factor * block_means(x, factor))
    if factor == 2:  # the Haar details
        torch.testing.assert_close(h, torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64) / math.sqrt(2))


def test_super_resolve_with_a_network_keeps_the_block_means():
    sde = VPSDE()
    model = CountingModel(ScoreNet(sde.marginal_prob_std).eval())
    low_res = torch.rand(2, 1, 14, 14, generator=gen(10))
    x = super_resolve(model, sde, low_res, num_steps=3, generator=gen(11), progress=False)
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all()
    # exact up to float32 rounding of the pixels, whose details an untrained network makes large
    torch.testing.assert_close(block_means(x.double()), low_res.double(), rtol=0, atol=1e-6 * float(x.abs().max()))
    assert model.calls == 3  # Euler-Maruyama by default: one (guided) evaluation per step


@pytest.mark.parametrize("factor", [2, 3])
def test_super_resolve_a_gaussian_whose_details_are_independent_of_the_block_means(factor):
    # A Gaussian on 1 x 2f x 2f images (4 blocks), built in the block basis: the block means are independent of
    # the details, which have a nonzero mean and correlations across blocks. Then the details given the low-res
    # image have their marginal law, imputation by replacement is exact, and the samples must show it; a
    # score rotated the wrong way (Q instead of Q^T; for f = 3 the basis is not symmetric) would not.
    side = 2 * factor
    d = side * side
    basis = to_block_basis(torch.eye(d).reshape(d, 1, side, side), factor).reshape(d, d)  # Q^T: row i = Q e_i
    known = torch.zeros(side, side, dtype=torch.bool)
    known[::factor, ::factor] = True
    known = known.reshape(-1)
    g = gen(12)
    a = torch.randn(d, d, generator=g) / math.sqrt(d)
    cov_c = 0.3 * (a @ a.T) + 0.2 * torch.eye(d)
    cov_c[known] = 0.0
    cov_c[:, known] = 0.0
    cov_c[known, known] = 1.0
    mu_c = torch.randn(d, generator=g)
    q = basis.T  # c = Q x as column vectors: x = Q^T c
    gaussian = Gaussian(q.T @ mu_c, q.T @ cov_c @ q)
    sde = VESDE(25.0)
    n = 2000
    low_res = torch.randn(1, 1, 2, 2, generator=g).expand(n, 1, 2, 2)
    x = super_resolve(gaussian.perturbed_score(sde), sde, low_res, factor, num_steps=200, corrector=False, generator=gen(13),
                      progress=False)
    torch.testing.assert_close(block_means(x, factor), low_res, rtol=0, atol=1e-5)
    c = to_block_basis(x, factor).reshape(n, d).double()[:, ~known]
    mean, var = mu_c[~known].double(), cov_c[~known][:, ~known].diagonal().double()
    assert torch.all((c.mean(0) - mean).abs() < Z * (var / n).sqrt() + 0.02)
    assert torch.all((c.var(0) / var - 1).abs() < Z * math.sqrt(2 / n) + 0.05)


# --- bad input ---------------------------------------------------------------------------------------


def _toy_pieces():
    sde = VESDE(25.0)
    return MIX.perturbed_score(sde), MIX.perturbed_log_posterior(sde)


@pytest.mark.parametrize("y", [10, -1, torch.tensor([0, 12]), 3.0, True, "3"])
def test_a_class_outside_0_to_9_is_a_value_error(y):
    score, post = _toy_pieces()
    with pytest.raises(ValueError, match=r"y must be a class in 0\.\.9"):
        classifier_guided_score(score, post, y)


@pytest.mark.parametrize("y", [11, -1, torch.tensor([0, 12]), 3.0, True, "3"])
def test_a_class_outside_0_to_9_or_null_is_a_value_error_for_cfg(y):
    with pytest.raises(ValueError, match=r"y must be a class in 0\.\.9, or None or 10 \(the null class\)"):
        cfg_score(CONDITIONAL, y, 1.0)


def test_guided_labels_must_match_the_batch_and_the_classifier():
    score, post = _toy_pieces()
    with pytest.raises(ValueError, match="3 labels for a batch of 4"):
        classifier_guided_score(score, post, torch.tensor([0, 1, 2]))(torch.zeros(4, 2), torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="only 3 classes"):
        classifier_guided_score(score, post, 5)(torch.zeros(4, 2), torch.full((4,), 0.5))


@pytest.mark.parametrize("scale", [-0.5, float("nan"), float("inf"), "2"])
def test_a_negative_or_non_finite_scale_is_a_value_error(scale):
    score, post = _toy_pieces()
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        classifier_guided_score(score, post, 1, scale)
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        cfg_score(CONDITIONAL, 1, scale)


@pytest.mark.parametrize("classifier", [MNISTClassifier(), lambda x: x[:, :3]], ids=["MNISTClassifier", "lambda x"])
def test_a_classifier_without_time_is_a_value_error(classifier):
    score, _ = _toy_pieces()
    with pytest.raises(ValueError, match=r"classifier must be callable as classifier\(x, t\).*time-dependent"):
        classifier_guided_score(score, classifier, 1)


def test_a_conditional_model_without_labels_is_a_value_error():
    model = CONDITIONAL
    x = torch.zeros(2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"needs labels: call it as model\(x, t, y\)"):
        model(x, 0.5)
    with pytest.raises(ValueError, match=r"needs labels"):
        sample("em", model, VESDE(), (2, 1, 28, 28), num_steps=2, progress=False)
    with pytest.raises(ValueError, match=r"y must be class labels in 0\.\.9, or 10 or None"):
        model(x, 0.5, torch.tensor([3, 11]))
    with pytest.raises(ValueError, match=r"model must be callable as model\(x, t, y\)"):
        cfg_score(ScoreNet(VESDE().marginal_prob_std), 3, 1.0)


@pytest.mark.parametrize("mask, match", [
    (torch.tensor([1.0, 0.0, 1.0]), "mask must broadcast to the images' shape"),
    (torch.ones(4, 2), "mask must broadcast to the images' shape"),
    (torch.tensor([1.0, 0.5]), "mask must hold only 0 and 1"),
    (torch.tensor([2, 0]), "mask must hold only 0 and 1"),
    (torch.tensor([1.0, float("nan")]), "mask must hold only 0 and 1"),
])
def test_a_bad_mask_is_a_value_error(mask, match):
    sde = VESDE()
    with pytest.raises(ValueError, match=match):
        inpaint(CORRELATED.perturbed_score(sde), sde, torch.zeros(3, 2), mask, num_steps=2, progress=False)


def test_bad_resamplings_factor_and_images_are_value_errors():
    sde = VESDE()
    score = CORRELATED.perturbed_score(sde)
    with pytest.raises(ValueError, match="resamplings must be an integer >= 1"):
        inpaint(score, sde, torch.zeros(3, 2), torch.tensor([1, 0]), resamplings=0, progress=False)
    with pytest.raises(ValueError, match="guidance must be a finite number >= 0"):
        inpaint(score, sde, torch.zeros(3, 2), torch.tensor([1, 0]), guidance=-1.0, progress=False)
    with pytest.raises(ValueError, match="mask must broadcast"):
        reconstruction_guided_score(score, sde, torch.zeros(3, 2), torch.ones(3))
    with pytest.raises(ValueError, match="images must be a float tensor"):
        inpaint(score, sde, torch.zeros(3, dtype=torch.long), torch.tensor(1), progress=False)
    with pytest.raises(ValueError, match="factor must be an integer >= 2"):
        super_resolve(score, sde, torch.zeros(1, 1, 2, 2), factor=1, progress=False)
    with pytest.raises(ValueError, match=r"low_res must be \[B, C, h, w\]"):
        super_resolve(score, sde, torch.zeros(1, 4), progress=False)


def test_subvp_inpainting_runs_through_the_same_hook():
    sde = subVPSDE()
    x = inpaint(CORRELATED.perturbed_score(sde), sde, torch.ones(4, 2), torch.tensor([True, False]), num_steps=5,
                predictor="ancestral", corrector=False, generator=gen(14), progress=False)
    assert torch.all(x[:, 0] == 1.0) and torch.isfinite(x).all()


@pytest.mark.parametrize("region, hole", [("bottom", (slice(14, 28), slice(None))), ("top", (slice(0, 14), slice(None))),
                                          ("left", (slice(None), slice(0, 14))), ("right", (slice(None), slice(14, 28)))])
def test_region_mask_halves(region, hole):
    known = region_mask(region)
    expected = torch.ones(1, 28, 28, dtype=torch.bool)
    expected[(slice(None), *hole)] = False
    assert known.dtype == torch.bool and torch.equal(known, expected)


def test_region_mask_square_default_is_centred_and_placed_where_asked():
    assert (~region_mask("square")).nonzero()[:, 1:].unique(dim=0).shape == (14 * 14, 2)
    assert torch.equal((~region_mask("square"))[0].nonzero().min(0).values, torch.tensor([7, 7]))
    known = region_mask("square", 10, square_size=3, square_at=(7, 0))
    assert (~known).sum() == 9 and not known[0, 7:10, 0:3].any() and known[0, 6].all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(region="diagonal"), "region must be one of"),
    (dict(region="square", square_size=28), "square_size must be below 28"),
    (dict(region="square", square_size=10, square_at=(20, 0)), "row and col must be in 0..18"),
    (dict(region="square", square_size=10, square_at=(-1, 0)), "row and col must be in 0..18"),
    (dict(region="bottom", square_size=4), "place region='square'"),
    (dict(region="square", size=0), "size"),
])
def test_a_bad_region_mask_is_a_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        region_mask(**kwargs)
