"""VP and sub-VP samplers and likelihoods against the truth: the exact score of a 2-D mixture.

``three_modes()`` (weights 0.5 / 0.3 / 0.2) diffused by any of the SDEs is again a mixture, with means
alpha(t) mu_k and variances alpha(t)^2 s_k^2 + std(t)^2, so ``perturbed_score(sde)`` is the exact score of
every marginal p_t and whatever error is left belongs to the sampler (tests/test_truth.py does the same
for VE). How the statistics are judged, as there: samples are split by their most probable component
(``GaussianMixture.assign``), the same split of N_REF exact samples of the target p_eps gives the reference,
and a statistic passes within Z = 4.5 standard errors (both sample sizes; chance ~7e-6 per check) plus a
stated bias. Seeds are fixed.

Biases. (1) The samplers start from the prior N(0, I) instead of p_1; by the data processing inequality
that moves any event's probability by at most TV(prior, p_1), computed on a grid: ~6e-5 for VP and
~5e-5 for sub-VP (alpha(1) = 0.0066 shrinks the modes onto the origin). (2) Discretization, measured with
N = 3000 (stated per sampler in SAMPLER_BIAS): none resolved for EM, ancestral and the adaptive ODE
solver; the unadjusted Langevin corrector of PC inflates the spreads by ~2%; Heun with 18 steps puts
the modes ~2-3% too far out and ~3-6% too wide (sigma runs from sigma(1) ~ 152 down to 0.01 for VP, a far
longer way than VE's 9.85), an error that shrinks as it converges to the ODE's answer with more steps.
"""

import math

import pytest
import torch

from sgm_helpers import VESDE, VPSDE, subVPSDE
from sgm_helpers.likelihood import ode_likelihood
from sgm_helpers.samplers import sample
from sgm_helpers.toy import GaussianMixture, three_modes

Z = 4.5
EPS = 1e-3  # the samplers' default final time
N = 3000  # samples per sampler run: binomial SE of the 0.5 weight 0.009
N_REF = 100_000
FAMILY = {"vp": VPSDE(0.1, 20.0), "subvp": subVPSDE(0.1, 20.0)}

# sampler -> (steps, extra absolute allowance on per-mode means, extra relative allowance on per-mode stds),
# from the measurements in the module docstring with about 1.5x margin.
SAMPLER_BIAS = {
    "em": (500, 0.0, 0.0),
    "pc": (300, 0.0, 0.03),
    "ancestral": (500, 0.0, 0.0),
    "ode": (None, 0.0, 0.0),
    "heun": (18, 0.13, 0.08),
}
EXPECTED_NFE = {"em": 500, "pc": 600, "ancestral": 500, "heun": 35}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def f64(t):
    return torch.tensor(t, dtype=torch.float64)


def mode_stats(m, x):
    """Per mode k (points assigned to k): fraction, count, mean [K, 2] and std [K] pooled over the 2 coordinates."""
    x = x.double()
    labels = m.assign(x)
    counts = torch.bincount(labels, minlength=m.n_components)
    means = torch.stack([x[labels == k].mean(0) for k in range(m.n_components)])
    stds = torch.stack([x[labels == k].var(0).mean().sqrt() for k in range(m.n_components)])
    return counts.double() / len(x), counts.double(), means, stds


@pytest.fixture(scope="module")
def mixture():
    return three_modes()


@pytest.fixture(scope="module")
def references(mixture):
    """Per SDE: mode statistics of N_REF exact samples of p_eps, and TV(prior, p_1) on a grid."""
    g = torch.linspace(-8.0, 8.0, 321, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    area = float(g[1] - g[0]) ** 2
    out = {}
    for i, (name, sde) in enumerate(FAMILY.items()):
        ref = mode_stats(mixture, mixture.diffused(sde, EPS).sample(N_REF, gen(100 + i), dtype=torch.float64))
        log_p1 = mixture.perturbed_log_prob(sde)(pts, f64(1.0))
        tv = 0.5 * float((log_p1.exp() - sde.prior_logp(pts).exp()).abs().sum()) * area
        out[name] = ref, tv
    return out


def test_prior_mismatch_is_negligible_for_vp_and_subvp(references):
    """The budget used below: TV(prior, p_1) < 1e-3 (measured ~6e-5), far below the weights' standard errors."""
    for name in FAMILY:
        assert 0 < references[name][1] < 1e-3


@pytest.mark.parametrize("sampler", list(SAMPLER_BIAS))
@pytest.mark.parametrize("sde_name", list(FAMILY))
def test_sampler_reproduces_the_mixture(mixture, references, sde_name, sampler):
    """Mode weights within Z SE + TV; per-mode means and stds within Z SE + the sampler's stated bias.

    The SE of a pooled std over n 2-D Gaussian points is std / sqrt(4 n); of a mean coordinate, std / sqrt(n).
    With N = 3000 the weights are pinned to ~0.04 (a sampler giving the modes equal weight is off by 0.17)."""
    sde = FAMILY[sde_name]
    steps, mean_bias, std_bias = SAMPLER_BIAS[sampler]
    x, nfe = sample(sampler, mixture.perturbed_score(sde), sde, (N, 2), num_steps=steps, eps=EPS,
                    generator=gen(1), progress=False)
    assert x.shape == (N, 2) and torch.isfinite(x).all()
    assert nfe == EXPECTED_NFE.get(sampler, nfe) and 0 < nfe < 1000
    (w_ref, n_ref, mu_ref, sd_ref), tv = references[sde_name]
    w, n, mu, sd = mode_stats(mixture, x)
    se_w = torch.sqrt(w_ref * (1 - w_ref) * (1 / N + 1 / N_REF))
    assert ((w - w_ref).abs() <= Z * se_w + tv).all(), (w, w_ref)
    assert torch.allclose(w_ref, mixture.weights, atol=0.01)  # the reference itself is the 0.5 / 0.3 / 0.2 mixture
    inv_n = 1 / n + 1 / n_ref
    assert ((mu - mu_ref).abs() <= Z * sd_ref[:, None] * torch.sqrt(inv_n)[:, None] + mean_bias).all(), (mu, mu_ref)
    assert ((sd / sd_ref - 1).abs() <= Z * torch.sqrt(inv_n / 4) + std_bias).all(), (sd, sd_ref)


def data_points(mixture):
    """64 samples, plus points between the modes where the density is low."""
    between = torch.tensor([[0.0, -1.0], [0.0, 1.5], [2.0, 1.5], [-1.0, 2.0]])
    return torch.cat([mixture.sample(64, gen(5)), between])


@pytest.mark.parametrize("sde_name", list(FAMILY))
def test_ode_likelihood_returns_the_exact_log_density(mixture, sde_name):
    """ode_likelihood(x, exact score, hutchinson="exact") = log p_eps(x) (eps = 1e-5, default tolerances).

    The difference is the ODE solver's error plus the prior mismatch log p_1(z) - log prior(z) at the latent,
    which for VP and sub-VP is < 1e-3 nats (KL(p_1 || prior) ~ 1e-8): measured, the solver's error is at most
    0.0055 (VP) and 0.0073 (sub-VP) nats, at the low-density point (-1, 2), and falls to the 6e-4 of the
    mismatch at rtol = atol = 1e-7. Checked: max error < 0.02 nats, mean error over the points < 0.005.
    (A wrong drift divergence, e.g. without the f(t) D term, is off by int_eps^1 beta = 10 nats.)"""
    sde = FAMILY[sde_name]
    x = data_points(mixture)
    z, logp, nfe = ode_likelihood(x, mixture.perturbed_score(sde), sde, hutchinson="exact")
    assert z.shape == x.shape and 0 < nfe < 1000
    exact = mixture.perturbed_log_prob(sde)(x.double(), torch.full((len(x),), 1e-5, dtype=torch.float64))
    err = logp.double() - exact
    assert err.abs().max() < 0.02, err.abs().max()
    assert err.mean().abs() < 0.005
    # the latents are distributed like p_1 ~ N(0, I): 136 numbers, sample std within 4.5 * 6% of 1
    assert abs(float(z.std()) - 1.0) < 0.3


# --- the diffused mixture's density and score ---------------------------------------------------------------


ALL = {"ve": VESDE(25.0), **FAMILY}


@pytest.mark.parametrize("sde_name", list(ALL))
def test_diffused_mixture_is_the_convolution_of_the_data_with_the_kernel(mixture, sde_name):
    """p_t(x) = int p_0(x0) N(x; alpha(t) x0, std(t)^2 I) dx0, by a midpoint rule on a 0.05 grid over x0
    (the integrand is a product of Gaussians of std >= 0.4: the rule's error ~ exp(-2 pi^2 0.4^2 / 0.05^2) is nil).
    ``diffused(sde, t).log_prob`` and ``perturbed_log_prob(sde)`` both match it to 1e-6 relative."""
    sde = ALL[sde_name]
    h = 0.05
    g = torch.arange(-6.0, 8.0, h, dtype=torch.float64) + h / 2
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    x0 = torch.stack([xx.flatten(), yy.flatten()], 1)
    p0 = mixture.log_prob(x0).exp() * h * h
    assert float(p0.sum()) == pytest.approx(1.0, abs=1e-8)
    x = torch.tensor([[-2.0, -1.0], [0.3, 0.2], [1.5, 3.0], [-0.5, 0.7]], dtype=torch.float64)
    for t in (0.3, 0.7):
        alpha, std = float(sde.mean_coeff(f64(t))), float(sde.marginal_prob_std(f64(t)))
        d2 = ((x[:, None, :] - alpha * x0[None]) ** 2).sum(-1)
        p_t = (p0 * torch.exp(-d2 / (2 * std ** 2))).sum(1) / (2 * math.pi * std ** 2)
        diffused = mixture.diffused(sde, t)
        assert isinstance(diffused, GaussianMixture)
        torch.testing.assert_close(diffused.log_prob(x), p_t.log(), rtol=0, atol=1e-6)
        torch.testing.assert_close(mixture.perturbed_log_prob(sde)(x, f64(t)), p_t.log(), rtol=0, atol=1e-6)
        # and the two agree with each other to rounding, also with a per-example [B] t
        t_batch = torch.full((len(x),), t, dtype=torch.float64)
        torch.testing.assert_close(mixture.perturbed_log_prob(sde)(x, t_batch), diffused.log_prob(x),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde_name", list(ALL))
def test_perturbed_score_is_the_gradient_of_perturbed_log_prob(mixture, sde_name):
    """At 50 points (float64) with a different t per point from 1e-3 to 1: autograd's gradient of the
    log-density equals the closed-form score to 1e-9 relative."""
    sde = ALL[sde_name]
    x = 3 * torch.randn(50, 2, generator=gen(9), dtype=torch.float64)
    t = torch.logspace(-3, 0, 50, dtype=torch.float64)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(mixture.perturbed_log_prob(sde)(x, t).sum(), x)
    score = mixture.perturbed_score(sde)(x.detach(), t)
    torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-9)
    # not trivially equal: VP and sub-VP shrink the means by alpha(t), so the scores differ from VE's
    if sde_name != "ve":
        ve_score = mixture.perturbed_score(VESDE(25.0))(x.detach(), t)
        assert not torch.allclose(score, ve_score, rtol=1e-3)
