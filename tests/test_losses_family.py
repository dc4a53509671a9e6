"""dsm_loss for VE, VP and sub-VP (the tutorial's call, likelihood weighting, importance sampling) and
sliced score matching: exact identities, expectations against quadrature or closed forms, bad input."""

import math

import pytest
import torch
from scipy.integrate import quad

from sgm_helpers import VESDE, VPSDE, ToyScoreMLP, dsm_loss, ssm_loss, subVPSDE

SDES = {"ve": VESDE(25.0), "vp": VPSDE(0.1, 20.0), "subvp": subVPSDE(0.1, 20.0)}
S0 = torch.tensor([0.5, 2.0], dtype=torch.float64)  # data x0 ~ N(0, diag(S0^2))
K = 4.5  # standard errors allowed when comparing a Monte Carlo mean with its expectation


def gen(seed):
    return torch.Generator().manual_seed(seed)


def exact_gaussian_score(sde):
    """grad log p_t for x0 ~ N(0, diag(S0^2)) diffused by ``sde``: p_t = N(0, diag(alpha^2 S0^2 + std^2))."""
    def score(x, t):
        alpha = sde.mean_coeff(t).to(x.dtype)[:, None]
        std = sde.marginal_prob_std(t).to(x.dtype)[:, None]
        return -x / (alpha ** 2 * S0.to(x.dtype) ** 2 + std ** 2)
    return score


def expected_lw_loss(sde, eps):
    """The likelihood-weighted DSM loss of the exact score, by quadrature:

        L = 1 / (1 - eps) int_eps^1 g^2 / std^2 sum_d alpha^2 s0_d^2 / (alpha^2 s0_d^2 + std^2) dt

    (with s = -x_t / v, std s + z = (alpha^2 s0^2 z - std alpha x0) / v has variance alpha^2 s0^2 / v per dim,
    v = alpha^2 s0^2 + std^2). Integrated in u = log t, where the ~1/t weight is smooth."""
    def integrand(u):
        t = torch.tensor(math.exp(u), dtype=torch.float64)
        a, s, g = float(sde.mean_coeff(t)), float(sde.marginal_prob_std(t)), float(sde.diffusion_coeff(t))
        return g * g / (s * s) * sum(a * a * s0 * s0 / (a * a * s0 * s0 + s * s) for s0 in S0.tolist()) * float(t)
    return quad(integrand, math.log(eps), 0.0, epsabs=0.0, epsrel=1e-10, limit=200)[0] / (1.0 - eps)


def batch_losses(score, sde, eps, *, importance_sampling, batches=200, batch_size=500, seed=0):
    """dsm_loss with likelihood weighting over independent batches of Gaussian data: float64 [batches]."""
    g = gen(seed)
    values = []
    for _ in range(batches):
        x0 = torch.randn(batch_size, 2, generator=g, dtype=torch.float64) * S0
        values.append(float(dsm_loss(score, x0, sde, eps=eps, generator=g, likelihood_weighting=True,
                                     importance_sampling=importance_sampling)))
    return torch.tensor(values, dtype=torch.float64)


# --- the tutorial's loss ---------------------------------------------------------------------------------


def tutorial_loss(model, x, marginal_prob_std, eps=1e-5, generator=None):
    """The tutorial's loss_fn, written out (with a generator for its two draws, in its order)."""
    random_t = torch.rand(x.shape[0], generator=generator) * (1.0 - eps) + eps
    z = torch.randn(x.shape, generator=generator)
    std = marginal_prob_std(random_t)
    perturbed_x = x + z * std.view(-1, *([1] * (x.dim() - 1)))
    score = model(perturbed_x, random_t)
    return torch.mean(torch.sum((score * std.view(-1, *([1] * (x.dim() - 1))) + z) ** 2,
                                dim=tuple(range(1, x.dim()))))


def image_score(x, t):
    return -x * t.view(-1, 1, 1, 1) + 0.1 * torch.sin(x)


@pytest.mark.parametrize("sigma", [25.0, 10.0])
def test_tutorial_call_equals_the_sde_call_and_the_tutorials_loss(sigma):
    """For VE the tutorial's call dsm_loss(model, x, sde.marginal_prob_std) is bit-for-bit the SDE call, and both
    equal the tutorial's loss_fn on the same generator (float32 rounding of the same operations: rtol 1e-6)."""
    sde = VESDE(sigma)
    torch.manual_seed(0)
    mlp = ToyScoreMLP(sde.marginal_prob_std, hidden=16, layers=2)
    cases = [(mlp, torch.randn(64, 2, generator=gen(1))), (image_score, torch.rand(8, 1, 4, 4, generator=gen(2)))]
    for model, x in cases:
        for eps in (1e-5, 1e-3):
            a = dsm_loss(model, x, sde.marginal_prob_std, eps=eps, generator=gen(3))
            b = dsm_loss(model, x, sde, eps=eps, generator=gen(3))
            ref = tutorial_loss(model, x, sde.marginal_prob_std, eps=eps, generator=gen(3))
            assert torch.equal(a, b)
            torch.testing.assert_close(a, ref, rtol=1e-6, atol=0)
            assert not torch.equal(a, dsm_loss(model, x, sde, eps=eps, generator=gen(4)))  # the seed matters


@pytest.mark.parametrize("sde_name", ["vp", "subvp"])
def test_a_bound_marginal_prob_std_of_vp_is_not_silently_treated_as_ve(sde_name):
    """``train(model, data, sde.marginal_prob_std)`` recognises the SDE behind the bound method (``sde_of``) and
    perturbs with alpha(t) x. ``dsm_loss`` given the same argument must agree with the SDE call, or refuse it:
    perturbing with mean x (VE's) under VP's std is a different, wrong objective."""
    sde = SDES[sde_name]
    model = exact_gaussian_score(sde)  # a score that depends on where x(t) is, so the mean matters
    x = torch.randn(4096, 2, generator=gen(1), dtype=torch.float64) * S0
    try:
        via_function = dsm_loss(model, x, sde.marginal_prob_std, generator=gen(3))
    except ValueError:
        return
    torch.testing.assert_close(via_function, dsm_loss(model, x, sde, generator=gen(3)), rtol=1e-6, atol=0)


def test_default_weighting_for_vp_perturbs_with_the_mean_coefficient():
    """For VP the default loss is E || std s(alpha x + std z, t) + z ||^2: the model sees alpha(t) x + std(t) z."""
    sde = SDES["vp"]
    x = torch.randn(16, 2, generator=gen(5))
    seen = {}

    def model(xt, t):
        seen["xt"], seen["t"] = xt, t
        return torch.zeros_like(xt)

    loss = dsm_loss(model, x, sde, generator=gen(6))
    g = gen(6)  # the loss draws u ~ U[0, 1) [B], then z ~ N(0, I) [B, D], from its generator
    t = torch.rand(16, generator=g) * (1 - 1e-5) + 1e-5
    z = torch.randn(16, 2, generator=g)
    assert torch.equal(seen["t"], t)
    expected_xt = sde.mean_coeff(t)[:, None] * x + sde.marginal_prob_std(t)[:, None] * z
    torch.testing.assert_close(seen["xt"], expected_xt, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss, z.pow(2).sum(1).mean())  # a zero score leaves ||z||^2


# --- likelihood weighting and importance sampling ------------------------------------------------------------


@pytest.mark.parametrize("sde_name", list(SDES))
def test_importance_sampling_keeps_the_expectation_of_the_likelihood_weighted_loss(sde_name):
    """With the exact score of Gaussian data the likelihood-weighted loss has a closed form (quadrature,
    ``expected_lw_loss``). eps = 1e-3, 200 batches of 500: the plain estimator's mean (weights g^2 / std^2,
    t uniform) and the importance-sampled one's (t ~ g^2 / (Z std^2), weight Z / (1 - eps)) both lie within K
    standard errors (from the batches' spread) of it. Measured: |deviation| < 0.9 SE for all three SDEs; the
    SEs are 2% (plain) and 0.5% (IS) of the loss, so a Z or a weight off by more than ~3% would show."""
    sde = SDES[sde_name]
    eps = 1e-3
    score = exact_gaussian_score(sde)
    expected = expected_lw_loss(sde, eps)
    for importance_sampling in (False, True):
        v = batch_losses(score, sde, eps, importance_sampling=importance_sampling)
        se = float(v.std()) / math.sqrt(len(v))
        assert abs(float(v.mean()) - expected) <= K * se, (importance_sampling, float(v.mean()), expected, se)
        assert se < 0.03 * expected


@pytest.mark.parametrize("sde_name", list(SDES))
def test_importance_sampling_matches_at_the_training_eps_with_far_lower_variance(sde_name):
    """eps = 1e-5 (the training default), where the weight g^2 / std^2 ~ 1/t makes the plain estimator
    heavy-tailed. The importance-sampled mean lies within K SE (0.4% of the loss) of the quadrature value,
    and the per-batch variance ratio plain / IS, measured 3200 (VE), 1500 (VP) and 2200 (sub-VP) here, must
    exceed 300; at eps = 1e-3 it is 27, 14 and 22 and must exceed 5."""
    sde = SDES[sde_name]
    score = exact_gaussian_score(sde)
    for eps, min_ratio in ((1e-5, 300.0), (1e-3, 5.0)):
        plain = batch_losses(score, sde, eps, importance_sampling=False, seed=1)
        weighted = batch_losses(score, sde, eps, importance_sampling=True, seed=1)
        assert float(plain.var() / weighted.var()) > min_ratio, float(plain.var() / weighted.var())
        if eps == 1e-5:
            se = float(weighted.std()) / math.sqrt(len(weighted))
            assert abs(float(weighted.mean()) - expected_lw_loss(sde, eps)) <= K * se


@pytest.mark.parametrize("sde_name", list(SDES))
def test_importance_sampling_keeps_the_expectation_for_a_network(sde_name):
    """The same equality for a fixed random ToyScoreMLP, which is far from the true score (no closed form):
    the two estimators' means agree within K combined standard errors (eps = 1e-3, 200 batches of 500 each)."""
    sde = SDES[sde_name]
    torch.manual_seed(0)
    model = ToyScoreMLP(sde.marginal_prob_std, hidden=16, layers=2).double()
    with torch.no_grad():
        plain = batch_losses(model, sde, 1e-3, importance_sampling=False, seed=2)
        weighted = batch_losses(model, sde, 1e-3, importance_sampling=True, seed=3)
    se = math.sqrt(float(plain.var()) / len(plain) + float(weighted.var()) / len(weighted))
    assert abs(float(plain.mean() - weighted.mean())) <= K * se, (float(plain.mean()), float(weighted.mean()), se)
    assert float(plain.var()) > float(weighted.var())


def expected_default_loss(sde, eps):
    """The default-weighted DSM loss of the exact score, 1 / (1 - eps) int_eps^1 sum_d alpha^2 s0_d^2 / v_d dt."""
    def integrand(t):
        t = torch.tensor(t, dtype=torch.float64)
        a, s = float(sde.mean_coeff(t)), float(sde.marginal_prob_std(t))
        return sum(a * a * s0 * s0 / (a * a * s0 * s0 + s * s) for s0 in S0.tolist())
    return quad(integrand, eps, 1.0, epsabs=0.0, epsrel=1e-10, limit=200)[0] / (1.0 - eps)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_a_uniform_share_mixes_the_default_weighting_into_the_likelihood_weighted_loss(sde_name):
    """uniform_share = a draws t uniformly for a share a of the examples, with importance sampling's constant
    weight W = Z / (1 - eps) for all: the expectation is (1 - a) L_likelihood + a W L_default, both by quadrature
    (eps = 1e-3, exact score of Gaussian data, 200 batches of 500), for a = 0.3 and for a = 1."""
    sde = SDES[sde_name]
    eps = 1e-3
    score = exact_gaussian_score(sde)
    weight = sde.importance_normalizer(eps) / (1.0 - eps)
    for share in (0.3, 1.0):
        g = gen(4)
        values = []
        for _ in range(200):
            x0 = torch.randn(500, 2, generator=g, dtype=torch.float64) * S0
            values.append(float(dsm_loss(score, x0, sde, eps=eps, generator=g, likelihood_weighting=True,
                                         importance_sampling=True, uniform_share=share)))
        v = torch.tensor(values, dtype=torch.float64)
        expected = (1 - share) * expected_lw_loss(sde, eps) + share * weight * expected_default_loss(sde, eps)
        se = float(v.std()) / math.sqrt(len(v))
        assert abs(float(v.mean()) - expected) <= K * se, (share, float(v.mean()), expected, se)
        # and it differs from the likelihood-weighted loss by far more than that
        assert abs(expected - expected_lw_loss(sde, eps)) > 20 * se


@pytest.mark.parametrize("bad,match", [
    (dict(likelihood_weighting=True, uniform_share=0.5), r"uniform_share=0.5 .* needs importance_sampling=True"),
    (dict(likelihood_weighting=True, importance_sampling=True, uniform_share=1.5), r"uniform_share must be a share"),
    (dict(likelihood_weighting=True, importance_sampling=True, uniform_share=-0.1), r"uniform_share must be a share"),
    (dict(likelihood_weighting=True, importance_sampling=True, uniform_share=True), r"uniform_share must be a share"),
])
def test_a_bad_uniform_share_is_a_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        dsm_loss(lambda x, t: x, torch.zeros(4, 2), SDES["vp"], **bad)


def test_likelihood_weighting_changes_the_loss_and_gradients_flow():
    sde = SDES["vp"]
    torch.manual_seed(0)
    model = ToyScoreMLP(sde.marginal_prob_std, hidden=16, layers=2)
    x = torch.randn(32, 2, generator=gen(1))
    plain = dsm_loss(model, x, sde, generator=gen(2))
    lw = dsm_loss(model, x, sde, generator=gen(2), likelihood_weighting=True)
    assert not torch.allclose(plain, lw)
    lw_is = dsm_loss(model, x, sde, generator=gen(2), likelihood_weighting=True, importance_sampling=True)
    lw_is.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# --- sliced score matching -----------------------------------------------------------------------------------


S = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=torch.float64)  # x ~ N(0, S)
S_INV = torch.linalg.inv(S)
TR = float(torch.trace(S_INV))


def gaussian_data(n, seed):
    return torch.randn(n, 2, generator=gen(seed), dtype=torch.float64) @ torch.linalg.cholesky(S).T


def scaled_score(c):
    return lambda x: -c * x @ S_INV


def ssm_batches(model, batches=20, batch_size=2000, seed=0, variance_reduction=True):
    g = gen(seed + 1000)
    return torch.tensor([float(ssm_loss(model, gaussian_data(batch_size, seed + i), generator=g,
                                        variance_reduction=variance_reduction).detach()) for i in range(batches)],
                        dtype=torch.float64)


def test_ssm_is_minimised_by_the_true_score_among_scaled_scores():
    """For s_c = -c S^-1 x: E[tr J + 1/2 ||s||^2] = (-c + c^2 / 2) tr(S^-1), minimal at c = 1. Compared on the same
    x and v (a paired comparison, so sampling noise largely cancels): the true score is lowest, by more than 0.1
    tr(S^-1) (the expected gap is 0.125 tr(S^-1))."""
    x = gaussian_data(20_000, 0)
    values = {c: float(ssm_loss(scaled_score(c), x, generator=gen(1)).detach()) for c in (0.5, 1.0, 1.5)}
    assert values[1.0] < values[0.5] - 0.1 * TR and values[1.0] < values[1.5] - 0.1 * TR, values


@pytest.mark.parametrize("variance_reduction", [True, False])
def test_ssm_value_is_the_closed_form(variance_reduction):
    """With variance reduction or without, the expectation for the true score is -tr(S^-1) + 1/2 tr(S^-1):
    the mean of 20 batches of 2000 within K standard errors (from their spread). For c = 0.5 it is -3/8 tr(S^-1)."""
    for c, expected in ((1.0, -0.5 * TR), (0.5, -0.375 * TR)):
        v = ssm_batches(scaled_score(c), variance_reduction=variance_reduction)
        se = float(v.std()) / math.sqrt(len(v))
        assert abs(float(v.mean()) - expected) <= K * se, (c, float(v.mean()), expected, se)
        assert se < 0.05 * abs(expected)


@pytest.mark.parametrize("variance_reduction", [True, False])
def test_ssm_gradient_reaches_the_parameters_and_is_exact(variance_reduction):
    """A linear model s = W x + b: the loss is mean[v^T W v + 1/2 ||W x + b||^2] (or 1/2 (v^T (W x + b))^2), whose
    gradient is known in closed form; autograd through ssm_loss's double backward must give it (float64)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(2, 2).double()
    x = gaussian_data(64, 3)
    ssm_loss(lin, x, generator=gen(4), variance_reduction=variance_reduction).backward()
    v = torch.randn(x.shape, generator=gen(4), dtype=torch.float64)  # the projections ssm_loss draws
    with torch.no_grad():
        s = lin(x)
        if variance_reduction:
            grad_w = (v[:, :, None] * v[:, None, :]).mean(0) + (s[:, :, None] * x[:, None, :]).mean(0)
            grad_b = s.mean(0)
        else:
            vs = (v * s).sum(1)
            grad_w = ((v[:, :, None] * v[:, None, :]).mean(0)
                      + (vs[:, None, None] * v[:, :, None] * x[:, None, :]).mean(0))
            grad_b = (vs[:, None] * v).mean(0)
    torch.testing.assert_close(lin.weight.grad, grad_w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(lin.bias.grad, grad_b, rtol=1e-10, atol=1e-12)


# --- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sde", [VESDE(25.0), VPSDE(), VESDE(25.0).marginal_prob_std])
def test_importance_sampling_without_likelihood_weighting_is_a_value_error(sde):
    with pytest.raises(ValueError, match=r"importance_sampling=True needs likelihood_weighting=True"):
        dsm_loss(lambda x, t: x, torch.zeros(4, 2), sde, importance_sampling=True)


@pytest.mark.parametrize("importance_sampling", [False, True])
def test_likelihood_weighting_with_a_bare_std_function_is_a_value_error(importance_sampling):
    def std_fn(t):
        return torch.sqrt(t)

    with pytest.raises(ValueError, match=r"likelihood_weighting needs an SDE"):
        dsm_loss(lambda x, t: x, torch.zeros(4, 2), std_fn, likelihood_weighting=True,
                 importance_sampling=importance_sampling)


@pytest.mark.parametrize("sde", [None, 3.0, "vp"])
def test_sde_that_is_neither_an_sde_nor_a_function_is_a_value_error(sde):
    with pytest.raises(ValueError, match=r"sde must be an SDE"):
        dsm_loss(lambda x, t: x, torch.zeros(4, 2), sde)


def test_ssm_needs_a_batch_dimension():
    with pytest.raises(ValueError, match=r"x must have shape \[B, \.\.\.\]"):
        ssm_loss(lambda x: x, torch.zeros(3))
