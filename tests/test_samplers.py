"""Samplers with the exact score of Gaussian data: shapes, statistics, reproducibility, bad input, NaN."""

import math

import pytest
import torch

from sgm_helpers import VESDE, ScoreNet, euler_maruyama_sampler, ode_sampler, pc_sampler

SDE = VESDE(25.0)
EPS = 1e-3
S0 = torch.tensor([0.5, 2.0])       # data x0 ~ N(0, diag(S0^2))


def exact_score(x, t):
    """grad log p_t(x) for 2-D x0 ~ N(0, diag(S0^2)): p_t = N(0, diag(S0^2 + std(t)^2))."""
    return -x / (S0 ** 2 + SDE.marginal_prob_std(t)[:, None] ** 2)


def iso_score(s0):
    def score(x, t):
        var = s0 ** 2 + SDE.marginal_prob_std(t) ** 2
        return -x / var.view(-1, *([1] * (x.dim() - 1)))
    return score


def _grid(num_steps):
    return torch.linspace(1.0, EPS, num_steps + 1, dtype=torch.float64)


def _var_t(s0, t):
    return s0 ** 2 + float(SDE.marginal_prob_std(torch.tensor(float(t), dtype=torch.float64))) ** 2


def _em_step(v, s0, t, dt):
    """Variance after one Euler-Maruyama step with the linear score -x / v_t: x_mean = a x, x = x_mean + g sqrt(dt) z."""
    g2 = float(SDE.diffusion_coeff(torch.tensor(float(t), dtype=torch.float64))) ** 2
    a = 1.0 - g2 * dt / _var_t(s0, t)
    v_mean = a * a * v
    return v_mean, v_mean + g2 * dt


def em_output_std(s0, num_steps):
    """The exact std of euler_maruyama_sampler's output (the last x_mean) for Gaussian data, by its variance recursion."""
    ts = _grid(num_steps)
    v = float(SDE.marginal_prob_std(1.0)) ** 2
    for i in range(num_steps):
        v_mean, v = _em_step(v, s0, float(ts[i]), float(ts[i] - ts[i + 1]))
    return math.sqrt(v_mean)


def pc_output_std(s0, num_steps, snr, dim):
    """The same for pc_sampler, with the Langevin step size taken at the batch's expected score norm.

    For x ~ N(0, v I_dim), E ||x|| = sqrt(2 v) Gamma((dim + 1) / 2) / Gamma(dim / 2), and ||score|| = ||x|| / v_t.
    With thousands of samples the batch mean of the norms is within a fraction of a percent of it.
    """
    ts = _grid(num_steps)
    v = float(SDE.marginal_prob_std(1.0)) ** 2
    chi_mean = math.sqrt(2) * math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2))
    for i in range(num_steps):
        t, dt = float(ts[i]), float(ts[i] - ts[i + 1])
        vt = _var_t(s0, t)
        grad_norm = math.sqrt(v) * chi_mean / vt
        step = 2 * (snr * math.sqrt(dim) / grad_norm) ** 2
        v = (1 - step / vt) ** 2 * v + 2 * step
        v_mean, v = _em_step(v, s0, t, dt)
    return math.sqrt(v_mean)


def _std_tolerance(std, n):
    """Four standard errors of a sample std of n Gaussian values: std / sqrt(2 (n - 1))."""
    return 4 * std / math.sqrt(2 * (n - 1))


def test_euler_maruyama_gives_the_right_std_for_gaussian_data():
    n, num_steps = 16_000, 300
    x = euler_maruyama_sampler(exact_score, SDE, (n, 2), num_steps=num_steps, eps=EPS,
                               generator=torch.Generator().manual_seed(0), progress=False)
    assert x.shape == (n, 2) and torch.isfinite(x).all()
    for d in range(2):
        s0 = float(S0[d])
        expected = em_output_std(s0, num_steps)
        # Error budget: the 300-step scheme's own std is within 1% of the true std of p_eps ...
        assert expected == pytest.approx(math.sqrt(_var_t(s0, EPS)), rel=0.01)
        # ... and the samples match the scheme to within four standard errors (2%).
        assert float(x[:, d].std()) == pytest.approx(expected, abs=_std_tolerance(expected, n))
        assert abs(float(x[:, d].mean())) < 4 * expected / math.sqrt(n)


def test_predictor_corrector_gives_the_right_std_for_gaussian_data():
    n, num_steps, snr, s0 = 10_000, 150, 0.16, 0.5
    x = pc_sampler(iso_score(s0), SDE, (n, 2), num_steps=num_steps, snr=snr, eps=EPS,
                   generator=torch.Generator().manual_seed(1), progress=False)
    assert x.shape == (n, 2) and torch.isfinite(x).all()
    expected = pc_output_std(s0, num_steps, snr, dim=2)
    # Error budget: a Langevin step alone would overshoot the variance by step / (2 v_t), a few percent;
    # the 150-step scheme as a whole stays within 2% of the true std of p_eps (it is within 0.1% here) ...
    assert expected == pytest.approx(math.sqrt(_var_t(s0, EPS)), rel=0.02)
    # ... and the samples match the scheme to within four standard errors (2%).
    assert float(x.std()) == pytest.approx(expected, abs=_std_tolerance(expected, 2 * n))


def test_ode_sampler_maps_the_prior_by_the_closed_form_flow():
    # For Gaussian data the probability-flow ODE dx/dt = g^2 x / (2 v(t)) with v' = g^2 gives
    # x(t) = x(1) sqrt(v(t) / v(1)) per dimension: the sampler must reproduce it to the solver's tolerance.
    z = SDE.prior_sampling((64, 2), generator=torch.Generator().manual_seed(2))
    calls = 0

    def counting_score(x, t):
        nonlocal calls
        calls += 1
        return exact_score(x, t)

    x, nfe = ode_sampler(counting_score, SDE, z=z, eps=EPS, progress=False)
    assert x.shape == z.shape and nfe == calls and nfe > 0
    ratio = torch.tensor([math.sqrt(_var_t(float(s), EPS) / _var_t(float(s), 1.0)) for s in S0])
    torch.testing.assert_close(x, z * ratio, rtol=1e-3, atol=1e-4)


def test_ode_sampler_is_deterministic_given_z_and_reproducible_given_a_seed():
    z = SDE.prior_sampling((16, 2), generator=torch.Generator().manual_seed(3))
    a, _ = ode_sampler(exact_score, SDE, z=z, progress=False)
    b, _ = ode_sampler(exact_score, SDE, (16, 2), z=z.clone(), progress=False)
    assert torch.equal(a, b)
    c, nfe = ode_sampler(exact_score, SDE, (16, 2), generator=torch.Generator().manual_seed(3), progress=False)
    assert torch.equal(a, c) and isinstance(nfe, int)
    d, _ = ode_sampler(exact_score, SDE, (16, 2), generator=torch.Generator().manual_seed(4), progress=False)
    assert not torch.equal(a, d)


@pytest.mark.parametrize("sampler", [euler_maruyama_sampler, pc_sampler])
def test_stochastic_samplers_are_reproducible_with_a_seed(sampler):
    def run(seed):
        return sampler(exact_score, SDE, (8, 2), num_steps=20, generator=torch.Generator().manual_seed(seed),
                       progress=False)
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


@pytest.mark.parametrize("sampler", [euler_maruyama_sampler, pc_sampler])
def test_callback_sees_every_step_down_to_eps(sampler):
    seen = []
    out = sampler(exact_score, SDE, (4, 2), num_steps=5, eps=EPS, progress=False,
                  callback=lambda i, t, x: seen.append((i, t, x.clone())))
    assert [i for i, _, _ in seen] == list(range(5))
    assert seen[-1][1] == pytest.approx(EPS)
    assert torch.equal(seen[-1][2], out)


def test_samplers_return_finite_images_of_the_requested_shape():
    # The exact score of Gaussian "images", and one cheap pass through an untrained ScoreNet.
    shape = (3, 1, 28, 28)
    score = iso_score(0.3)
    g = torch.Generator().manual_seed(5)
    for out in (euler_maruyama_sampler(score, SDE, shape, num_steps=10, generator=g, progress=False),
                pc_sampler(score, SDE, shape, num_steps=10, generator=g, progress=False),
                ode_sampler(score, SDE, shape, generator=g, progress=False)[0]):
        assert out.shape == shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.manual_seed(0)
    net = ScoreNet(SDE.marginal_prob_std, channels=(32, 32, 64, 64), embed_dim=64).eval()
    out = euler_maruyama_sampler(net, SDE, (2, 1, 28, 28), num_steps=2, generator=g, progress=False)
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all()


def _nan_after(t_switch):
    """A score that turns NaN once t < t_switch."""
    def score(x, t):
        s = iso_score(0.5)(x, t)
        return torch.where((t < t_switch).view(-1, 1), torch.full_like(s, float("nan")), s)
    return score


@pytest.mark.parametrize("sampler", [euler_maruyama_sampler, pc_sampler])
@pytest.mark.parametrize("t_switch", [2.0, 0.5])
def test_nan_score_stops_with_the_step(sampler, t_switch):
    num_steps = 10
    first_bad = int((_grid(num_steps) < t_switch).nonzero()[0])
    with pytest.raises(FloatingPointError, match=rf"NaN or inf at step {first_bad} "):
        sampler(_nan_after(t_switch), SDE, (4, 2), num_steps=num_steps, eps=EPS, progress=False)


@pytest.mark.parametrize("t_switch", [2.0, 0.5])
def test_ode_sampler_with_a_nan_score_stops_with_an_error(t_switch):
    calls = 0

    def nan_score(x, t):
        nonlocal calls
        calls += 1
        if calls > 500:     # fail the test instead of letting a solver stuck on NaN run forever
            raise AssertionError(f"ode_sampler kept calling a NaN score model ({calls} calls, t = {float(t[0])})")
        return _nan_after(t_switch)(x, t)

    with pytest.raises(FloatingPointError, match="NaN or inf"):
        ode_sampler(nan_score, SDE, (4, 2), eps=EPS, generator=torch.Generator().manual_seed(6), progress=False)


@pytest.mark.parametrize("sampler", [euler_maruyama_sampler, pc_sampler])
@pytest.mark.parametrize("num_steps", [0, -5, 2.5, "10", None])
def test_bad_num_steps_is_a_value_error(sampler, num_steps):
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        sampler(exact_score, SDE, (4, 2), num_steps=num_steps, progress=False)


@pytest.mark.parametrize("sampler", [euler_maruyama_sampler, pc_sampler, ode_sampler])
@pytest.mark.parametrize("eps", [0.0, 1.0, -0.1, 2.0, float("nan")])
def test_bad_eps_is_a_value_error(sampler, eps):
    with pytest.raises(ValueError, match=r"eps must be a number in the open interval \(0, 1\)"):
        sampler(exact_score, SDE, (4, 2), eps=eps, progress=False)


@pytest.mark.parametrize("snr", [0.0, -0.16, float("nan"), float("inf"), "0.16"])
def test_bad_snr_is_a_value_error(snr):
    with pytest.raises(ValueError, match="snr must be a finite number > 0"):
        pc_sampler(exact_score, SDE, (4, 2), snr=snr, progress=False)


@pytest.mark.parametrize("sampler", [euler_maruyama_sampler, pc_sampler, ode_sampler])
@pytest.mark.parametrize("shape", [(4,), (0, 2), "4x2"])
def test_bad_shape_is_a_value_error(sampler, shape):
    with pytest.raises(ValueError, match="shape"):
        sampler(exact_score, SDE, shape, progress=False)


def test_ode_sampler_bad_latent():
    with pytest.raises(ValueError, match="give shape= or a latent z="):
        ode_sampler(exact_score, SDE, progress=False)
    with pytest.raises(ValueError, match="does not match z's shape"):
        ode_sampler(exact_score, SDE, (3, 2), z=torch.zeros(4, 2), progress=False)
    with pytest.raises(ValueError, match="z contains NaN or inf"):
        ode_sampler(exact_score, SDE, z=torch.full((4, 2), float("nan")), progress=False)
    for name in ("rtol", "atol"):
        with pytest.raises(ValueError, match=name):
            ode_sampler(exact_score, SDE, (4, 2), progress=False, **{name: 0.0})
