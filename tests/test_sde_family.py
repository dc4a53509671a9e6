"""VE, VP and sub-VP: closed forms against simulation and quadrature, the importance-sampling density,
configs, DDPM's discrete chain and the predictors that reproduce DDPM's and SMLD's steps, bad input.

Reference formulas (Song et al. 2021, eqs. 9-11 and appendix B) are written out here, independently of
the package, with beta(t) = beta_min + t (beta_max - beta_min) and B(t) = int_0^t beta:

    VE:      f = 0,        g = sigma^t,                      alpha = 1,          std^2 = (sigma^(2t) - 1) / (2 ln sigma)
    VP:      f = -beta/2,  g = sqrt(beta),                   alpha = e^(-B/2),   std^2 = 1 - e^(-B)
    sub-VP:  f = -beta/2,  g = sqrt(beta (1 - e^(-2B))),     alpha = e^(-B/2),   std   = 1 - e^(-B)
"""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import quad

from sgm_helpers import SDE, VESDE, VPSDE, forward_sde_paths, make_sde, subVPSDE
from sgm_helpers.samplers import ancestral_step, reverse_diffusion_step

SDES = [VESDE(25.0), VPSDE(0.1, 20.0), subVPSDE(0.1, 20.0)]
IDS = ["ve", "vp", "subvp"]


def f64(t):
    return torch.as_tensor(t, dtype=torch.float64)


def reference(sde, t):
    """(f, g, alpha, std) at a float t from the formulas above, in plain Python floats."""
    if isinstance(sde, VESDE):
        s = sde.sigma
        return 0.0, s ** t, 1.0, math.sqrt(math.expm1(2 * t * math.log(s)) / (2 * math.log(s)))
    bmin, bmax = sde.beta_min, sde.beta_max
    beta = bmin + t * (bmax - bmin)
    big_b = bmin * t + 0.5 * t * t * (bmax - bmin)
    alpha = math.exp(-0.5 * big_b)
    if isinstance(sde, VPSDE):
        return -0.5 * beta, math.sqrt(beta), alpha, math.sqrt(-math.expm1(-big_b))
    return -0.5 * beta, math.sqrt(beta * -math.expm1(-2 * big_b)), alpha, -math.expm1(-big_b)


def weight(sde, t):
    """g(t)^2 / std(t)^2 at a float t (the likelihood weighting's density, unnormalised), from the package."""
    t = f64(t)
    return float(sde.diffusion_coeff(t) ** 2 / sde.marginal_prob_std(t) ** 2)


def weight_integral_quad(sde, a, b):
    """int_a^b g^2 / std^2 dt by quadrature in u = log t (the integrand ~ 1/t or 2/t near 0 is smooth in u)."""
    val, _ = quad(lambda u: weight(sde, math.exp(u)) * math.exp(u), math.log(a), math.log(b),
                  epsabs=0.0, epsrel=1e-11, limit=200)
    return val


# --- the five formulas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sde", SDES + [VESDE(3.0), VPSDE(0.5, 8.0), subVPSDE(0.05, 12.0)],
                         ids=IDS + ["ve3", "vp-0.5-8", "subvp-0.05-12"])
def test_coefficients_match_the_papers_formulas(sde):
    """float64 t: the package's f, g, alpha, std agree with the formulas in the module docstring to 1e-12."""
    for t in (1e-6, 1e-3, 0.05, 0.3, 0.7, 1.0):
        f, g, alpha, std = reference(sde, t)
        got = [float(fn(f64(t))) for fn in (sde.drift_coeff, sde.diffusion_coeff, sde.mean_coeff,
                                           sde.marginal_prob_std)]
        assert got == pytest.approx([f, g, alpha, std], rel=1e-12, abs=1e-300), (t, got)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_moments_solve_the_forward_sdes_moment_equations(sde):
    """For dx = f x dt + g dw: d log alpha / dt = f and d std^2 / dt = 2 f std^2 + g^2 (Sarkka & Solin eq. 5.51).

    Central differences in float64 with h = 1e-5 t: truncation ~h^2 and rounding ~1e-16 / h, both below
    1e-7 relative to the terms checked. A mismatch between (f, g) and (alpha, std) of any one SDE fails.
    """
    for t in (1e-3, 0.02, 0.1, 0.4, 0.8, 0.99):
        h = 1e-5 * t
        tt = f64([t - h, t, t + h])
        log_alpha = torch.log(sde.mean_coeff(tt))
        var = sde.marginal_prob_std(tt) ** 2
        f, g = float(sde.drift_coeff(f64(t))), float(sde.diffusion_coeff(f64(t)))
        d_log_alpha = float(log_alpha[2] - log_alpha[0]) / (2 * h)
        d_var = float(var[2] - var[0]) / (2 * h)
        assert d_log_alpha == pytest.approx(f, rel=1e-7, abs=1e-9)
        assert d_var == pytest.approx(2 * f * float(var[1]) + g * g, rel=1e-6)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginal_prob_matches_a_simulation_of_the_forward_sde(sde):
    """20,000 particles from x0 = (1.5, -2) through 1,000 Euler-Maruyama steps of the forward SDE.

    At t in {0.1, 0.3, 0.6, 1}, per coordinate: the empirical mean is within Z = 4.5 standard errors
    (std(t) / sqrt(n)) plus 0.0025 of alpha(t) x0, and the std pooled over both coordinates within
    Z standard errors (1 / sqrt(4 n) relative) plus 1% of std(t).

    The additive terms are the Euler scheme's own bias at dt = 1e-3, computed from the exact moment
    recursion of the discrete chain (m <- (1 + f dt) m, v <- (1 + f dt)^2 v + g^2 dt): at most 0.0014 in
    the mean (|x0| <= 2) and 0.86% in std (sub-VP at t = 0.1; VE: 0.16% everywhere). They are fixed
    numbers here, not recomputed from the package's f and g, so a wrong alpha or std cannot widen them.
    A std off by the classic slips (VP's std for sub-VP, std^2 for std) is off by far more than 2.6%.
    """
    n, z = 20_000, 4.5
    x0 = torch.tensor([[1.5, -2.0]]).expand(n, 2).clone()
    times, paths = forward_sde_paths(sde, x0, num_steps=1000, record_every=100,
                                     generator=torch.Generator().manual_seed(0))
    assert paths.shape == (11, n, 2) and torch.equal(paths[0], x0)
    assert times.double().numpy() == pytest.approx(np.linspace(0, 1, 11), abs=1e-6)
    for k in (1, 3, 6, 10):
        t = f64(round(float(times[k]), 6))
        mean, std = sde.marginal_prob(x0[:1].double(), t)
        xt = paths[k].double()
        std = float(std)
        emp_mean, emp_std = xt.mean(0), float(torch.sqrt(((xt - xt.mean(0)) ** 2).mean()))
        assert ((emp_mean - mean[0]).abs() <= z * std / math.sqrt(n) + 0.0025).all(), (float(t), emp_mean, mean)
        assert abs(emp_std / std - 1) <= z / math.sqrt(4 * n) + 0.01, (float(t), emp_std, std)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_logp_and_prior_sampling(sde):
    """prior_logp is Normal(0, prior_std).log_prob summed over the data dims; prior_sampling has std prior_std
    (within 4.5 standard errors, prior_std / sqrt(2 * 40,000)); the prior is p_1's std: VE std(1), VP and sub-VP 1."""
    prior_std = sde.prior_std()
    expected = float(sde.marginal_prob_std(1.0)) if isinstance(sde, VESDE) else 1.0
    assert prior_std == pytest.approx(expected, rel=1e-6)
    if not isinstance(sde, VESDE):  # and p_1 is N(0, I) to within 1e-4 in std
        assert float(sde.marginal_prob_std(f64(1.0))) == pytest.approx(1.0, abs=1e-4)
    z = 3 * torch.randn(6, 1, 3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = torch.distributions.Normal(0.0, torch.tensor(prior_std, dtype=torch.float64)).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), ref, rtol=1e-12, atol=1e-10)
    n = 20_000
    x = sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(3))
    assert x.shape == (n, 2)
    assert float(x.double().std()) == pytest.approx(prior_std, abs=4.5 * prior_std / math.sqrt(4 * n))
    assert abs(float(x.double().mean())) < 4.5 * prior_std / math.sqrt(2 * n)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_transition_kernel_is_consistent_with_the_marginals(sde):
    """(a, b) = transition_kernel(s, t): a = alpha(t) / alpha(s), a^2 std(s)^2 + b^2 = std(t)^2, and b^2 is the
    variance the SDE adds between s and t, int_s^t (alpha(t) / alpha(u))^2 g(u)^2 du (quadrature, rel 1e-8).
    VP: b^2 = 1 - a^2 (DDPM's beta_i); VE: a = 1."""
    for s, t in ((0.0, 0.1), (1e-3, 2e-3), (0.2, 0.5), (0.5, 0.501), (0.9, 1.0), (0.0, 1.0)):
        a, b = sde.transition_kernel(f64(s), f64(t))
        a, b = float(a), float(b)
        _, _, alpha_s, std_s = reference(sde, s)
        _, _, alpha_t, std_t = reference(sde, t)
        assert a == pytest.approx(alpha_t / alpha_s, rel=1e-12)
        assert a * a * std_s ** 2 + b * b == pytest.approx(std_t ** 2, rel=1e-10)
        added, _ = quad(lambda u: (alpha_t / reference(sde, u)[2]) ** 2 * reference(sde, u)[1] ** 2, s, t,
                        epsabs=0.0, epsrel=1e-12)
        assert b * b == pytest.approx(added, rel=1e-8)
        if isinstance(sde, VPSDE):
            assert b * b == pytest.approx(1 - a * a, rel=1e-10)
        if isinstance(sde, VESDE):
            assert a == 1.0
    # batched: [B] times give [B] kernels; s = t gives the identity
    s, t = f64([0.1, 0.5, 0.7]), f64([0.2, 0.5, 0.9])
    a, b = sde.transition_kernel(s, t)
    assert a.shape == b.shape == (3,) and float(a[1]) == pytest.approx(1.0) and float(b[1]) < 1e-7


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_sigma_of_t_and_t_of_sigma_invert_each_other(sde):
    """sigma(t) = std / alpha is increasing and t_of_sigma inverts it in float64 (rel 1e-9), both ways."""
    t = torch.cat([f64([1e-6, 1e-5, 1e-4, 1e-3]), torch.linspace(0.01, 1.0, 100, dtype=torch.float64)])
    sigma = sde.sigma_of_t(t)
    torch.testing.assert_close(sigma, sde.marginal_prob_std(t) / sde.mean_coeff(t), rtol=1e-14, atol=0)
    assert (sigma[1:] > sigma[:-1]).all()
    torch.testing.assert_close(sde.t_of_sigma(sigma), t, rtol=1e-9, atol=0)
    levels = torch.logspace(-3, math.log10(float(sigma[-1])), 30, dtype=torch.float64)
    torch.testing.assert_close(sde.sigma_of_t(sde.t_of_sigma(levels)), levels, rtol=1e-9, atol=0)
    # VP: sigma(1) = sqrt(e^B(1) - 1) ~ 152 (EDM's sigma_max for VP); VE: std(1) = 9.85
    expected = 9.8452 if isinstance(sde, VESDE) else (
        math.sqrt(math.expm1(10.05)) if isinstance(sde, VPSDE) else 2 * math.sinh(10.05 / 2))
    assert float(sigma[-1]) == pytest.approx(expected, rel=1e-4)


# --- the importance-sampling density g^2 / (Z std^2) -----------------------------------------------------


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_weight_integral_is_an_antiderivative_of_g2_over_std2(sde):
    """d F / dt = g^2 / std^2 by central differences (float64, h = 1e-4 t: error < 1e-8 relative; rtol 1e-6),
    from t = 1e-5, where the weight is ~1/t (VE) or ~2/t (sub-VP), to 1; and the inverse maps F(t) back to t."""
    for t in (1e-5, 1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.999):
        h = 1e-4 * t
        lo, hi = sde._weight_integral(f64([t - h, t + h]))
        assert float(hi - lo) / (2 * h) == pytest.approx(weight(sde, t), rel=1e-6)
    t = torch.cat([f64([1e-5, 1e-4]), torch.linspace(1e-3, 1.0, 50, dtype=torch.float64)])
    torch.testing.assert_close(sde._weight_integral_inverse(sde._weight_integral(t)), t, rtol=1e-9, atol=0)


@pytest.mark.parametrize("eps", [1e-5, 1e-3])
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_importance_normalizer_is_the_integral_of_the_weight(sde, eps):
    """Z = int_eps^1 g^2 / std^2 dt against scipy quad (rel 1e-11): agreement to 1e-8 relative."""
    assert sde.importance_normalizer(eps) == pytest.approx(weight_integral_quad(sde, eps, 1.0), rel=1e-8)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_sample_importance_time_has_density_g2_over_z_std2(sde):
    """The draws have the CDF P(T <= t) = int_eps^t w / Z, w = g^2 / std^2, with both sides from quadrature.

    Deterministic check first: the map u -> t is the inverse CDF, so quad(w, eps, t(u)) / Z = u (to 1e-7).
    Then a binned chi-square on 20,000 draws from uniforms (20 bins, even in log t, probabilities by quad):
    the statistic's 99.99% quantile with 19 degrees of freedom is 50; a uniform t would give ~10^5.
    """
    eps = 1e-5
    z_norm = weight_integral_quad(sde, eps, 1.0)
    u = f64([0.001, 0.05, 0.2, 0.5, 0.8, 0.95, 0.999])
    t = sde.sample_importance_time(u, eps)
    assert t.dtype == torch.float64
    for ui, ti in zip(u.tolist(), t.tolist()):
        assert weight_integral_quad(sde, eps, ti) / z_norm == pytest.approx(ui, abs=1e-7)
    n = 20_000
    draws = sde.sample_importance_time(torch.rand(n, generator=torch.Generator().manual_seed(0),
                                                  dtype=torch.float64), eps)
    assert float(draws.min()) >= eps and float(draws.max()) <= 1.0
    edges = np.exp(np.linspace(math.log(eps), 0.0, 21))
    probs = np.array([weight_integral_quad(sde, a, b) for a, b in zip(edges[:-1], edges[1:])]) / z_norm
    assert probs.sum() == pytest.approx(1.0, abs=1e-9)
    counts = np.histogram(draws.numpy(), bins=edges)[0]
    assert counts.sum() == n
    chi2 = float(((counts - n * probs) ** 2 / (n * probs)).sum())
    assert chi2 < stats.chi2.ppf(0.9999, df=19), (chi2, counts, n * probs)
    # float32 uniforms give float32 times, still inside [eps, 1] as float32 numbers (float32(1e-5) < 1e-5)
    t32 = sde.sample_importance_time(torch.tensor([0.0, 0.5, 0.9999999]), eps)
    assert t32.dtype == torch.float32 and (t32 >= torch.tensor(eps)).all() and (t32 <= 1.0).all()


# --- configs and names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sde", SDES + [VESDE(3.5), VPSDE(0.2, 15.0), subVPSDE(0.05, 12.0)],
                         ids=IDS + ["ve3.5", "vp-0.2-15", "subvp-0.05-12"])
def test_config_round_trips_through_json(sde):
    config = sde.config()
    again = SDE.from_config(json.loads(json.dumps(config)))
    assert type(again) is type(sde) and again == sde and hash(again) == hash(sde)
    assert again.config() == config
    for t in (0.01, 0.5, 1.0):
        assert float(again.marginal_prob_std(f64(t))) == float(sde.marginal_prob_std(f64(t)))
    assert SDE.from_config(sde) is sde
    # another parameter value is another SDE
    other = VESDE(sde.sigma + 1.0) if isinstance(sde, VESDE) else type(sde)(sde.beta_min, sde.beta_max + 1.0)
    assert other != sde and SDE.from_config(other.config()) == other


def test_make_sde_names_and_defaults():
    assert make_sde("ve") == VESDE(25.0) and type(make_sde("ve")) is VESDE
    assert make_sde("vp") == VPSDE(0.1, 20.0) and type(make_sde("vp")) is VPSDE
    assert make_sde("subvp") == subVPSDE(0.1, 20.0) and type(make_sde("subvp")) is subVPSDE
    assert make_sde("VP", beta_min=0.2, beta_max=10.0) == VPSDE(0.2, 10.0)
    assert make_sde("subVPSDE") == subVPSDE() and make_sde("ve", sigma=50.0) == VESDE(50.0)
    assert SDE.from_config("subvp") == subVPSDE()
    assert VESDE(25.0).config() == {"name": "VESDE", "sigma": 25.0}
    assert VPSDE().config() == {"name": "VPSDE", "beta_min": 0.1, "beta_max": 20.0}
    assert subVPSDE().config() == {"name": "subVPSDE", "beta_min": 0.1, "beta_max": 20.0}
    # VP and sub-VP with the same betas are different SDEs
    assert VPSDE() != subVPSDE() and VPSDE() != VESDE()
    assert repr(VPSDE()) == "VPSDE(beta_min=0.1, beta_max=20)"


def test_vesde_is_unchanged_from_the_tutorial():
    """std(1) = 9.8452 for sigma = 25, g = 25^t, no drift, mean coefficient 1, prior std = std(1)."""
    sde = VESDE(25.0)
    assert float(sde.marginal_prob_std(1.0)) == pytest.approx(9.8452, abs=1e-4)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(sde.diffusion_coeff(t), 25.0 ** t, rtol=1e-14, atol=0)
    assert torch.equal(sde.drift_coeff(t), torch.zeros_like(t)) and torch.equal(sde.mean_coeff(t), torch.ones_like(t))
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    drift, diffusion = sde.sde(x, torch.full((4,), 0.5))
    assert torch.equal(drift, torch.zeros_like(x)) and diffusion.shape == (4, 1)
    assert torch.allclose(diffusion, torch.full((4, 1), 5.0))
    assert sde.prior_std() == float(sde.marginal_prob_std(1.0))
    mean, std = sde.marginal_prob(x, torch.full((4,), 0.3))
    assert torch.equal(mean, x) and torch.equal(std, sde.marginal_prob_std(torch.full((4,), 0.3)))


# --- DDPM's discrete chain -------------------------------------------------------------------------------


def test_discrete_betas_are_ddpms_and_their_product_approaches_alpha_squared():
    """N = 1000: linspace(1e-4, 0.02, 1000) (Ho et al. 2020), to float64 rounding (torch's and numpy's linspace
    may differ in the last bit). prod (1 - beta_i) -> alpha(1)^2 = e^(-B(1)): sum beta_i = B(1) exactly, so
    log prod + B(1) = -sum beta_i^2 / 2 + O(N^-2) ~ -int beta^2 dt / (2N) = -67.0 / N; checked to within 2% of
    that leading term at N = 1e3, 1e4, 1e5, which makes the product within 7e-4 relative of alpha(1)^2 at N = 1e5."""
    betas = VPSDE().discrete_betas(1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    np.testing.assert_allclose(betas.numpy(), np.linspace(1e-4, 0.02, 1000), rtol=1e-14, atol=0)
    sde = VPSDE()
    alpha1_sq = float(sde.mean_coeff(f64(1.0))) ** 2
    int_beta2 = (20.0 ** 3 - 0.1 ** 3) / (3 * (20.0 - 0.1))
    for n in (1000, 10_000, 100_000):
        log_prod = float(torch.log1p(-sde.discrete_betas(n)).sum())
        gap = log_prod - math.log(alpha1_sq)
        assert gap == pytest.approx(-int_beta2 / (2 * n), rel=0.02), (n, gap)
    prod = float(torch.prod(1 - sde.discrete_betas(100_000)))
    assert prod / alpha1_sq == pytest.approx(1.0, abs=7e-4)
    with pytest.raises(ValueError, match="num_steps"):
        sde.discrete_betas(1)


# --- the predictors are DDPM's and SMLD's steps ------------------------------------------------------------


def fixed_score(x, t):
    """Some smooth non-linear function of (x, t) standing in for a network."""
    return -x * (1.0 + t[:, None]) + torch.sin(3.0 * x) - 0.5


PAIRS = [(1.0, 0.999), (0.5, 0.45), (0.05, 0.049), (0.002, 0.001)]


def _step(step_fn, sde, x, t, s, seed):
    return step_fn(fixed_score, sde, x, torch.tensor(t), torch.tensor(s), torch.Generator().manual_seed(seed))


# The package steps in float32 (x, t and the kernel): rounding of a few ulp of terms of size <= 10, ~1e-6;
# checked at 2e-5. A wrong coefficient (e.g. DDPM's sigma^2 = beta instead of beta_tilde) is off by >= 1e-3.
TOL = dict(rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("t,s", PAIRS)
def test_ancestral_step_is_ddpms_sampling_step_for_vp(t, s):
    """DDPM (Ho et al. 2020, Algorithm 2) with a = alpha(t) / alpha(s), beta = 1 - a^2, alpha_bar = alpha^2 and
    eps_theta = -std(t) score: x_s = (x_t - beta / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(1 - beta) + sigma z,
    sigma^2 = beta (1 - alpha_bar_s) / (1 - alpha_bar_t); the same generator seed gives the same z."""
    sde = VPSDE()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    new, mean = _step(ancestral_step, sde, x, t, s, seed=7)
    _, _, alpha_t, std_t = reference(sde, t)
    _, _, alpha_s, _ = reference(sde, s)
    a = alpha_t / alpha_s
    beta = 1 - a * a
    abar_t, abar_s = alpha_t ** 2, alpha_s ** 2
    score = fixed_score(x.double(), torch.full((64,), t, dtype=torch.float64))
    eps_theta = -std_t * score
    ddpm_mean = (x.double() - beta / math.sqrt(1 - abar_t) * eps_theta) / math.sqrt(1 - beta)
    sigma = math.sqrt(beta * (1 - abar_s) / (1 - abar_t))
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(7)).double()
    torch.testing.assert_close(mean.double(), ddpm_mean, **TOL)
    torch.testing.assert_close(new.double(), ddpm_mean + sigma * z, **TOL)


@pytest.mark.parametrize("t,s", PAIRS)
def test_ancestral_step_is_smlds_step_for_ve(t, s):
    """SMLD's ancestral step (Song et al. 2021, eq. 47): x + (std_t^2 - std_s^2) score
    + sqrt(std_s^2 (std_t^2 - std_s^2) / std_t^2) z."""
    sde = VESDE(25.0)
    x = 5 * torch.randn(64, 2, generator=torch.Generator().manual_seed(2))
    new, mean = _step(ancestral_step, sde, x, t, s, seed=8)
    std_t, std_s = reference(sde, t)[3], reference(sde, s)[3]
    score = fixed_score(x.double(), torch.full((64,), t, dtype=torch.float64))
    smld_mean = x.double() + (std_t ** 2 - std_s ** 2) * score
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(8)).double()
    torch.testing.assert_close(mean.double(), smld_mean, **TOL)
    noise = math.sqrt(std_s ** 2 * (std_t ** 2 - std_s ** 2) / std_t ** 2)
    torch.testing.assert_close(new.double(), smld_mean + noise * z, **TOL)


@pytest.mark.parametrize("t,s", PAIRS)
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_reverse_diffusion_step_is_the_official_predictor(sde, t, s):
    """The official ReverseDiffusionPredictor: x_mean = x - f_i + G_i^2 score, x = x_mean + G_i z, with VP's
    discretization f_i = (sqrt(1 - beta) - 1) x, G_i = sqrt(beta) (beta = 1 - (alpha_t / alpha_s)^2), VE's
    f_i = 0, G_i^2 = std_t^2 - std_s^2; sub-VP (no discretization upstream) with the exact kernel
    f_i = (a - 1) x, G_i^2 = std_t^2 - a^2 std_s^2."""
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    new, mean = _step(reverse_diffusion_step, sde, x, t, s, seed=9)
    _, _, alpha_t, std_t = reference(sde, t)
    _, _, alpha_s, std_s = reference(sde, s)
    a = alpha_t / alpha_s
    if isinstance(sde, VPSDE):
        beta = 1 - a * a
        f_i, g2 = (math.sqrt(1 - beta) - 1) * x.double(), beta
    elif isinstance(sde, VESDE):
        f_i, g2 = 0.0 * x.double(), std_t ** 2 - std_s ** 2
    else:
        f_i, g2 = (a - 1) * x.double(), std_t ** 2 - a * a * std_s ** 2
    score = fixed_score(x.double(), torch.full((64,), t, dtype=torch.float64))
    ref_mean = x.double() - f_i + g2 * score
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(9)).double()
    torch.testing.assert_close(mean.double(), ref_mean, **TOL)
    torch.testing.assert_close(new.double(), ref_mean + math.sqrt(g2) * z, **TOL)


# --- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["xx", "VE25", "", None, "vesde "])
def test_unknown_sde_name_is_a_value_error(name):
    with pytest.raises(ValueError, match=r"sde must be one of"):
        make_sde(name)


@pytest.mark.parametrize("config,match", [
    ({"name": "Foo"}, "unknown SDE name 'Foo'"),
    ({"sigma": 25.0}, "must be a dict with a 'name'"),
    (["VESDE"], "must be a dict with a 'name'"),
    ("nope", "sde must be one of"),
    ({"name": "VPSDE", "sigma": 25.0}, "bad parameters for VPSDE"),
    ({"name": "VESDE", "sigma": 0.5}, "sigma must be a finite number > 1"),
])
def test_bad_config_is_a_value_error(config, match):
    with pytest.raises(ValueError, match=match):
        SDE.from_config(config)


@pytest.mark.parametrize("cls", [VPSDE, subVPSDE])
@pytest.mark.parametrize("kwargs,name", [
    (dict(beta_min=20.0, beta_max=0.1), "beta_max"),
    (dict(beta_min=1.0, beta_max=1.0), "beta_max"),
    (dict(beta_min=0.0, beta_max=20.0), "beta_min"),
    (dict(beta_min=-0.1, beta_max=20.0), "beta_min"),
    (dict(beta_min=0.1, beta_max=-5.0), "beta_max"),
    (dict(beta_min=float("nan"), beta_max=20.0), "beta_min"),
    (dict(beta_min=0.1, beta_max=float("inf")), "beta_max"),
    (dict(beta_min="0.1", beta_max=20.0), "beta_min"),
])
def test_bad_betas_are_a_value_error_naming_the_argument(cls, kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number >"):
        cls(**kwargs)
    with pytest.raises(ValueError, match=name):
        make_sde("vp" if cls is VPSDE else "subvp", **kwargs)


@pytest.mark.parametrize("sigma", [1.0, 0.5, 0.0, -2.0, float("nan"), True])
def test_sigma_at_most_one_is_a_value_error_naming_it(sigma):
    with pytest.raises(ValueError, match=r"^sigma must be a finite number > 1"):
        VESDE(sigma)
    with pytest.raises(ValueError, match=r"sigma must be a finite number > 1"):
        make_sde("ve", sigma=sigma)


@pytest.mark.parametrize("make", [lambda: make_sde(["ve"]), lambda: SDE.from_config({"name": ["VESDE"]}),
                                  lambda: SDE.from_config({"name": {"VESDE": 1}})],
                         ids=["make_sde-list", "from_config-list", "from_config-dict"])
def test_a_name_that_is_not_a_string_is_a_value_error(make):
    """A malformed name (e.g. in a hand-edited or corrupted checkpoint config) is bad input like any other: a
    ValueError naming what was expected, which the CLI turns into its one-line error, not a TypeError traceback."""
    with pytest.raises(ValueError, match=r"sde must be one of|unknown SDE name"):
        make()
