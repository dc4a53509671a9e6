"""EDM's Heun sampler in the noise level sigma: schedule, cost, exactness on Gaussian and mixture data,
second-order convergence, the stochastic (churn) variant, reproducibility and bad input."""

import math

import pytest
import torch

from sgm_helpers import VESDE, ScoreNet, heun_sampler, ode_sampler, three_modes
from sgm_helpers.samplers import edm_sigma_steps

SDE = VESDE(25.0)
EPS = 1e-3
S0 = torch.tensor([0.5, 2.0])       # data x0 ~ N(0, diag(S0^2))


def _std(t: float) -> float:
    """std(t) of VESDE(25) in float64, written out: sqrt((25^(2t) - 1) / (2 ln 25))."""
    return math.sqrt((25.0 ** (2 * t) - 1) / (2 * math.log(25.0)))


def _v(s0: float, sigma: float) -> float:
    return s0 ** 2 + sigma ** 2


def gaussian_score(x, t):
    """grad log p_t(x) for 2-D x0 ~ N(0, diag(S0^2)): p_t = N(0, diag(S0^2 + std(t)^2))."""
    return -x / (S0 ** 2 + SDE.marginal_prob_std(t)[:, None] ** 2)


class Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        assert t.shape == (x.shape[0],) and t.dtype == torch.float32
        return self.fn(x, t)


def _schedule(num_steps, rho=7.0, eps=EPS):
    smax, smin = _std(1.0), _std(eps)
    i = torch.arange(num_steps, dtype=torch.float64)
    frac = i / max(num_steps - 1, 1)
    return (smax ** (1 / rho) + frac * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho


def heun_factor(s0: float, num_steps: int) -> float:
    """What Heun's method does to x on the linear ODE dx/dsigma = sigma x / (s0^2 + sigma^2) (Gaussian data),
    step by step in float64: each step multiplies x by a number."""
    sig = _schedule(num_steps).tolist() + [0.0]
    f = 1.0
    for i in range(num_steps):
        s, s_next = sig[i], sig[i + 1]
        h = s_next - s
        a = s / _v(s0, s)
        if s_next > 0:
            a_next = s_next / _v(s0, s_next)
            f *= 1 + h / 2 * (a + a_next * (1 + h * a))
        else:
            f *= 1 + h * a
    return f


def test_time_of_std_inverts_the_marginal_std():
    t = torch.tensor([1e-5, 1e-3, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    torch.testing.assert_close(SDE.t_of_sigma(SDE.marginal_prob_std(t)), t, rtol=1e-12, atol=0)


@pytest.mark.parametrize("num_steps", [1, 2, 18])
def test_edm_sigma_steps_run_from_std_1_to_std_eps_then_0(num_steps):
    s = edm_sigma_steps(SDE, num_steps, eps=EPS)
    assert s.shape == (num_steps + 1,) and s.dtype == torch.float64
    assert float(s[0]) == pytest.approx(_std(1.0), rel=1e-12) and float(s[-1]) == 0.0
    if num_steps > 1:
        assert float(s[-2]) == pytest.approx(_std(EPS), rel=1e-12)
    assert (s[1:] < s[:-1]).all()
    torch.testing.assert_close(s[:-1], _schedule(num_steps), rtol=1e-12, atol=0)
    # rho = 1: evenly spaced in sigma.
    even = edm_sigma_steps(SDE, 5, eps=EPS, rho=1.0)[:-1]
    torch.testing.assert_close(even.diff(), torch.full((4,), (_std(EPS) - _std(1.0)) / 4, dtype=torch.float64))


@pytest.mark.parametrize("num_steps", [1, 2, 18])
@pytest.mark.parametrize("s_churn", [0.0, 10.0])
def test_heun_costs_two_score_evaluations_per_step_but_the_last(num_steps, s_churn):
    score = Counter(gaussian_score)
    x = heun_sampler(score, SDE, (8, 2), num_steps=num_steps, s_churn=s_churn,
                     generator=torch.Generator().manual_seed(0), progress=False)
    assert score.calls == 2 * num_steps - 1
    assert x.shape == (8, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()


def test_heun_is_exactly_heuns_method_on_gaussian_data():
    # For Gaussian data the ODE is linear, so every sample is its latent times a number we can
    # compute by hand from the schedule: this pins down the schedule, the steps and the last (Euler) step.
    # The float32 state loses a few ulps of |z| (up to ~30) per step as x shrinks ~40-fold: atol ~1e-6 |z|.
    z = SDE.prior_sampling((64, 2), generator=torch.Generator().manual_seed(1))
    for num_steps in (1, 5, 18):
        x = heun_sampler(gaussian_score, SDE, z=z, num_steps=num_steps, progress=False)
        expected = z.double() * torch.tensor([heun_factor(float(s), num_steps) for s in S0], dtype=torch.float64)
        torch.testing.assert_close(x.double(), expected, rtol=1e-5, atol=1e-6 * float(z.abs().max()))


def test_heun_converges_at_second_order_to_the_denoised_flow():
    # The exact probability flow maps x(1) to x(eps) = x(1) sqrt(v(eps) / v(1)); the last step (sigma_min -> 0)
    # then denoises, x(eps) s0^2 / v(eps). Heun's error must fall ~4x per doubling of the steps (2nd order).
    for s0 in S0.tolist():
        exact = math.sqrt(_v(s0, _std(EPS)) / _v(s0, _std(1.0))) * s0 ** 2 / _v(s0, _std(EPS))
        errors = [abs(heun_factor(s0, n) / exact - 1) for n in (18, 36, 72)]
        assert errors[0] < 0.02
        assert 0.15 < errors[1] / errors[0] < 0.3 and 0.15 < errors[2] / errors[1] < 0.3


def test_heun_on_a_mixture_converges_to_the_adaptive_ode_solution():
    mix = three_modes()
    score = mix.perturbed_score(SDE)
    z = SDE.prior_sampling((300, 2), generator=torch.Generator().manual_seed(2))
    ref, _ = ode_sampler(score, SDE, z=z, eps=EPS, rtol=1e-7, atol=1e-7, progress=False)
    sigma_min = float(SDE.marginal_prob_std(EPS))
    ref = ref + sigma_min ** 2 * score(ref, torch.full((len(z),), EPS))  # the same final denoising step
    err = [float((heun_sampler(score, SDE, z=z, num_steps=n, eps=EPS, progress=False) - ref).abs().max())
           for n in (20, 40)]
    # Mode spacing is 4-5 and mode stds 0.4-0.6: 0.05 is a small fraction of either.
    assert err[1] < 0.05
    assert err[1] < err[0] / 2.5          # second order: ~4x smaller


def test_heun_samples_a_mixture_with_the_right_weights():
    mix = three_modes()
    n = 4000
    x = heun_sampler(mix.perturbed_score(SDE), SDE, (n, 2), num_steps=18,
                     generator=torch.Generator().manual_seed(3), progress=False)
    share = torch.bincount(mix.assign(x.double()), minlength=3).double() / n
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    se = (weights * (1 - weights) / n).sqrt()
    assert ((share - weights).abs() < 4 * se).all(), share


def test_churn_keeps_gaussian_data_gaussian_with_the_right_std():
    # With noise injection the sampler targets p_eps = N(0, v(eps)) at sigma_min, whose denoised mean
    # x s0^2 / v(eps) has std s0^2 / sqrt(v(eps)). Two known biases, each below 2%: the prior
    # N(0, std(1)^2) ignores s0^2 next to std(1)^2 = 96.9 (-2% for s0 = 2 without churn), and each
    # noise injection followed by one Heun step overshoots slightly (+1-2% at 50 steps, s_churn = 40).
    # Tolerance: 2%, plus four standard errors of a sample std. A noise scale off by 10% fails it.
    n = 20_000
    x = heun_sampler(gaussian_score, SDE, (n, 2), num_steps=50, s_churn=40.0,
                     generator=torch.Generator().manual_seed(4), progress=False)
    for d, s0 in enumerate(S0.tolist()):
        target = s0 ** 2 / math.sqrt(_v(s0, _std(EPS)))
        tol = 0.02 * target + 4 * target / math.sqrt(2 * (n - 1))
        assert float(x[:, d].std()) == pytest.approx(target, abs=tol)


def test_heun_is_deterministic_without_churn_and_reproducible_with_it():
    z = SDE.prior_sampling((16, 2), generator=torch.Generator().manual_seed(5))
    a = heun_sampler(gaussian_score, SDE, z=z, progress=False)
    assert torch.equal(a, heun_sampler(gaussian_score, SDE, (16, 2), z=z.clone(), progress=False))
    assert torch.equal(a, heun_sampler(gaussian_score, SDE, (16, 2), generator=torch.Generator().manual_seed(5),
                                       progress=False))
    assert not torch.equal(a, heun_sampler(gaussian_score, SDE, (16, 2),
                                           generator=torch.Generator().manual_seed(6), progress=False))

    def churned(seed, **kw):
        return heun_sampler(gaussian_score, SDE, z=z, s_churn=20.0, generator=torch.Generator().manual_seed(seed),
                            progress=False, **kw)
    assert torch.equal(churned(0), churned(0))
    assert not torch.equal(churned(0), churned(1))
    assert not torch.equal(churned(0), a)
    # Churn only where s_tmin <= sigma <= s_tmax: a window above sigma_max means no noise at all.
    assert torch.equal(churned(0, s_tmin=20.0), a)


def test_callback_sees_every_level_down_to_zero():
    seen = []
    out = heun_sampler(gaussian_score, SDE, (4, 2), num_steps=6, progress=False,
                       callback=lambda i, sigma, x: seen.append((i, sigma, x.clone())))
    assert [i for i, _, _ in seen] == list(range(6))
    torch.testing.assert_close(torch.tensor([s for _, s, _ in seen], dtype=torch.float64),
                               edm_sigma_steps(SDE, 6, eps=EPS)[1:])
    assert torch.equal(seen[-1][2], out)


def test_heun_runs_a_score_net_on_images():
    torch.manual_seed(0)
    net = ScoreNet(SDE.marginal_prob_std, channels=(32, 32, 64, 64), embed_dim=64).eval()
    out = heun_sampler(net, SDE, (2, 1, 28, 28), num_steps=2, generator=torch.Generator().manual_seed(7),
                       progress=False)
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all()


def test_a_nan_score_stops_heun_with_an_error():
    def nan_score(x, t):
        s = gaussian_score(x, t)
        return torch.where((t < 0.5).view(-1, 1), torch.full_like(s, float("nan")), s)
    with pytest.raises(FloatingPointError, match="heun_sampler: the samples became NaN or inf at step"):
        heun_sampler(nan_score, SDE, (4, 2), num_steps=10, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_steps=0), "num_steps must be an integer >= 1"),
    (dict(num_steps=2.5), "num_steps must be an integer >= 1"),
    (dict(eps=0.0), r"eps must be a number in the open interval \(0, 1\)"),
    (dict(eps=1.5), r"eps must be a number in the open interval \(0, 1\)"),
    (dict(rho=0.0), "rho must be a finite number > 0"),
    (dict(s_churn=-1.0), "s_churn must be a finite number >= 0"),
    (dict(s_churn=float("nan")), "s_churn must be a finite number >= 0"),
    (dict(s_tmin=-0.1), "s_tmin must be a finite number >= 0"),
    (dict(s_tmin=2.0, s_tmax=1.0), "s_tmax must be a number >= s_tmin"),
    (dict(s_noise=0.0), "s_noise must be a finite number > 0"),
])
def test_bad_arguments_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        heun_sampler(gaussian_score, SDE, (4, 2), progress=False, **kwargs)


def test_bad_shape_or_latent_is_a_value_error():
    with pytest.raises(ValueError, match="give shape= or a latent z="):
        heun_sampler(gaussian_score, SDE, progress=False)
    with pytest.raises(ValueError, match="shape"):
        heun_sampler(gaussian_score, SDE, (4,), progress=False)
    with pytest.raises(ValueError, match="does not match z's shape"):
        heun_sampler(gaussian_score, SDE, (3, 2), z=torch.zeros(4, 2), progress=False)
    with pytest.raises(ValueError, match="z contains NaN or inf"):
        heun_sampler(gaussian_score, SDE, z=torch.full((4, 2), float("inf")), progress=False)
