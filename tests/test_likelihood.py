"""Divergence estimators, ODE likelihoods against closed forms, bits/dim."""

import math

import pytest
import torch

from sgm_helpers import (VESDE, BPDResult, bits_per_dim, dequantize, evaluate_bpd, exact_divergence,
                         hutchinson_divergence, ode_likelihood)
from sgm_helpers.likelihood import hutchinson_noise

SDE = VESDE(25.0)
EPS = 1e-5
S0 = torch.tensor([0.5, 2.0])       # data x0 ~ N(0, diag(S0^2))


def exact_score(x, t):
    """grad log p_t(x) for 2-D x0 ~ N(0, diag(S0^2)): p_t = N(0, diag(S0^2 + std(t)^2))."""
    return -x / (S0 ** 2 + SDE.marginal_prob_std(t)[:, None] ** 2)


def _var_t(s0, t):
    return s0 ** 2 + float(SDE.marginal_prob_std(torch.tensor(float(t), dtype=torch.float64))) ** 2


def model_logp(x, s0, eps=EPS):
    """Closed-form log-density of the model that ode_likelihood evaluates, for Gaussian data and the exact score.

    The probability-flow ODE maps x(eps) to x(1) = x(eps) sqrt(v(1) / v(eps)) per dimension (v = s0^2 + std^2),
    and the prior is N(0, std(1)^2): so the model is N(0, v(eps) std(1)^2 / v(1)) in each dimension. It differs
    from the data's own p_eps = N(0, v(eps)) only because the prior ignores s0^2 next to std(1)^2 = 96.9.
    """
    std1_sq = float(SDE.marginal_prob_std(torch.tensor(1.0, dtype=torch.float64))) ** 2
    var = torch.tensor([_var_t(float(s), eps) * std1_sq / _var_t(float(s), 1.0) for s in s0], dtype=torch.float64)
    return torch.distributions.Normal(0.0, var.sqrt()).log_prob(x.double()).sum(1)


def _linear(a):
    return lambda x, t: x @ a.T


def _random_matrix(d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, d, generator=g, dtype=torch.float64) + 3 * torch.eye(d, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_hutchinson_averages_to_the_trace(kind):
    a = _random_matrix()
    n = 20_000
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    v = hutchinson_noise((n, 5), kind, generator=g).double()
    fx, est = hutchinson_divergence(_linear(a), x, None, v)
    assert est.shape == (n,)
    torch.testing.assert_close(fx, x @ a.T)
    assert not fx.requires_grad and not est.requires_grad
    # Var[v^T A v] with S = (A + A^T) / 2: 2 ||S||_F^2 for Gaussian probes, 2 sum_{i != j} S_ij^2 for Rademacher.
    s = (a + a.T) / 2
    var = 2 * (s ** 2).sum() - (2 * (s.diagonal() ** 2).sum() if kind == "rademacher" else 0)
    assert abs(float(est.mean() - a.trace())) < 4 * math.sqrt(float(var) / n)
    # The variance formula itself (relative standard error of a sample variance here is below 3%).
    assert float(est.var()) == pytest.approx(float(var), rel=0.12)


def test_rademacher_is_exact_for_a_diagonal_map():
    a = torch.diag(torch.tensor([1.5, -2.0, 0.25, 4.0], dtype=torch.float64))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(100, 4, generator=g, dtype=torch.float64)
    v = hutchinson_noise((100, 4), "rademacher", generator=g).double()
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    _, est = hutchinson_divergence(_linear(a), x, None, v)
    torch.testing.assert_close(est, torch.full((100,), float(a.trace()), dtype=torch.float64), rtol=1e-14, atol=1e-14)


def test_hutchinson_noise_moments_and_kinds():
    g = torch.Generator().manual_seed(3)
    n = 40_000
    for kind in ("gaussian", "rademacher"):
        v = hutchinson_noise((n, 2), kind, generator=g)
        cov = v.T @ v / n           # E[v v^T] = I, each entry within 4 standard errors (<= sqrt(2 / n))
        torch.testing.assert_close(cov, torch.eye(2), rtol=0, atol=4 * math.sqrt(2 / n))
    with pytest.raises(ValueError, match="hutchinson must be"):
        hutchinson_noise((2, 2), "uniform")


def test_exact_divergence_equals_the_jacobian_trace():
    a = _random_matrix(d=4, seed=4)
    x = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def fn(x, t):
        return torch.tanh(x.flatten(1) @ a.T * t[:, None]).view_as(x)

    t = torch.linspace(0.2, 1.0, 6, dtype=torch.float64)
    fx, div = exact_divergence(fn, x, t)
    torch.testing.assert_close(fx, fn(x, t))
    jac = torch.func.vmap(torch.func.jacrev(lambda xi, ti: fn(xi[None], ti[None])[0]))(x, t)   # [6, 1,2,2, 1,2,2]
    expected = jac.reshape(6, 4, 4).diagonal(dim1=1, dim2=2).sum(1)
    torch.testing.assert_close(div, expected, rtol=1e-12, atol=1e-12)
    # and the closed form: J = diag(1 - tanh^2(t A x)) t A
    pre = x.flatten(1) @ a.T * t[:, None]
    torch.testing.assert_close(div, ((1 - torch.tanh(pre) ** 2) * a.diagonal() * t[:, None]).sum(1))


def _gaussian_points(n=16, seed=6):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) * S0


@pytest.mark.parametrize("hutchinson", ["exact", "rademacher"])
def test_ode_likelihood_matches_the_closed_form_for_gaussian_data(hutchinson):
    # For a diagonal Jacobian Rademacher probes are exact (v_i^2 = 1), so both runs have only ODE-solver error:
    # with rtol = atol = 1e-5 on a state of size ~10 that is ~1e-4 nats; the budget is 2e-3 nats.
    x = _gaussian_points()
    z, logp, nfe = ode_likelihood(x, exact_score, SDE, hutchinson=hutchinson, eps=EPS,
                                  generator=torch.Generator().manual_seed(7))
    assert z.shape == x.shape and logp.shape == (16,) and nfe > 0
    torch.testing.assert_close(logp.double(), model_logp(x, S0), rtol=0, atol=2e-3)
    ratio = torch.tensor([math.sqrt(_var_t(float(s), 1.0) / _var_t(float(s), EPS)) for s in S0])
    torch.testing.assert_close(z, x * ratio, rtol=1e-3, atol=1e-3)
    # The model is within the prior's approximation of the true log-density log N(x; 0, v(eps)).
    true_logp = torch.distributions.Normal(0.0, torch.tensor([_var_t(float(s), EPS) for s in S0]).sqrt()
                                           ).log_prob(x).sum(1)
    assert (logp - true_logp).abs().max() < 0.1


@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_ode_likelihood_is_accurate_for_data_as_sharp_as_a_dequantized_pixel(eps):
    # Data with std 1e-3 (a quarter of a pixel's dequantization interval, 1/256) start moving on the time scale of
    # eps itself. At evaluate_bpd's tolerances, a first step of scipy's choosing (1e-4) was off by 1.7 bits/dim
    # at eps = 1e-6 and by 0.09 at eps = 1e-5; with a first step of eps / 10 it is about 0.004 and 0.002.
    s0 = torch.full((64,), 1e-3)

    def score(x, t):
        return -x / (s0 ** 2 + SDE.marginal_prob_std(t)[:, None] ** 2)

    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(0)) * s0
    _, logp, _ = ode_likelihood(x, score, SDE, eps=eps, rtol=3e-3, atol=1e-5, hutchinson="exact")
    error_bits = (logp.double() - model_logp(x, s0, eps=eps)).abs() / (64 * math.log(2.0))
    assert error_bits.max() < 0.01


def test_ode_likelihood_with_gaussian_probes_is_unbiased():
    # One point, 4,000 independent Gaussian probes: the estimates average to the exact log-density.
    # (Each estimate has a std of about 5 nats here, so the tolerance is about 0.3 nats.)
    n = 4_000
    x = _gaussian_points(n=1).expand(n, 2).contiguous()
    _, logp, _ = ode_likelihood(x, exact_score, SDE, hutchinson="gaussian", eps=EPS,
                                generator=torch.Generator().manual_seed(8))
    exact = float(model_logp(x[:1], S0))
    assert logp.std() > 0.1                       # the probes do make a difference ...
    assert abs(float(logp.double().mean()) - exact) < 4 * float(logp.double().std()) / math.sqrt(n)  # ... on average none


def _rotated_gaussian(angle=0.5):
    """2-D data x0 ~ N(0, C) with C = R diag(S0^2) R^T: a non-diagonal score Jacobian -(C + std(t)^2 I)^-1."""
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = rot @ torch.diag(S0.double() ** 2) @ rot.T

    def score(x, t):
        var = SDE.marginal_prob_std(t).double()[:, None, None] ** 2
        prec = torch.linalg.inv(cov + var * torch.eye(2, dtype=torch.float64))
        return -(prec @ x.double()[:, :, None])[:, :, 0].to(x.dtype)

    return rot, score


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_probe_noise_of_the_log_likelihood_matches_its_closed_form(kind):
    # The probe v does not change the path x(t), so logp = exact + v^T M v - tr M with
    # M = -1/2 int g^2 ds/dx dt = 1/2 R diag(log(v_i(1) / v_i(eps))) R^T for this Gaussian. Its variance over probes is
    # 2 sum_{i != j} M_ij^2 (Rademacher) or 2 ||M||_F^2 (Gaussian): here about 1.4 against 23 nats^2.
    rot, score = _rotated_gaussian()
    m = 0.5 * rot @ torch.diag(torch.tensor([math.log(_var_t(float(s), 1.0) / _var_t(float(s), EPS)) for s in S0],
                                            dtype=torch.float64)) @ rot.T
    off_diagonal = 2 * (m ** 2).sum() - 2 * (m.diagonal() ** 2).sum()
    predicted_var = float(off_diagonal if kind == "rademacher" else 2 * (m ** 2).sum())
    n = 4_000
    point = torch.tensor([[0.3, -1.2]])
    _, logp, _ = ode_likelihood(point.expand(n, 2).contiguous(), score, SDE, hutchinson=kind, eps=EPS,
                                generator=torch.Generator().manual_seed(15))
    _, exact, _ = ode_likelihood(point, score, SDE, hutchinson="exact", eps=EPS)
    logp = logp.double()
    assert float(logp.var()) == pytest.approx(predicted_var, rel=0.15)
    assert abs(float(logp.mean() - exact.double())) < 4 * math.sqrt(predicted_var / n)


def test_rademacher_probes_are_the_default():
    # Rademacher probes: never more variance than Gaussian ones (the test above), and the official score_sde default.
    v = hutchinson_noise((50, 3), generator=torch.Generator().manual_seed(16))
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    _, score = _rotated_gaussian()
    x = _gaussian_points(n=3)
    runs = {kind: ode_likelihood(x, score, SDE, generator=torch.Generator().manual_seed(17),
                                 **({} if kind is None else {"hutchinson": kind}))[1]
            for kind in (None, "rademacher", "gaussian")}
    assert torch.equal(runs[None], runs["rademacher"]) and not torch.allclose(runs[None], runs["gaussian"])
    images = torch.randint(0, 256, (3, 1, 1, 2), generator=torch.Generator().manual_seed(18)) / 255.0
    bpd = {kind: evaluate_bpd(lambda x, t: score(x.flatten(1), t).view_as(x), SDE, images, progress=False,
                              generator=torch.Generator().manual_seed(19),
                              **({} if kind is None else {"hutchinson": kind})).bpd
           for kind in (None, "rademacher", "gaussian")}
    assert torch.equal(bpd[None], bpd["rademacher"]) and not torch.allclose(bpd[None], bpd["gaussian"])


def test_ode_likelihood_on_image_shaped_data():
    s0 = 0.3

    def score(x, t):
        return -x / (s0 ** 2 + SDE.marginal_prob_std(t) ** 2).view(-1, 1, 1, 1)

    x = torch.randn(3, 1, 3, 3, generator=torch.Generator().manual_seed(9)) * s0
    _, logp, _ = ode_likelihood(x, score, SDE, hutchinson="rademacher", generator=torch.Generator().manual_seed(10))
    expected = model_logp(x.flatten(1), torch.full((9,), s0))
    torch.testing.assert_close(logp.double(), expected, rtol=0, atol=5e-3)


@pytest.mark.parametrize("kwargs, message", [
    ({"eps": 0.0}, r"eps must be a number in the open interval \(0, 1\)"),
    ({"eps": 1.0}, r"eps must be a number in the open interval \(0, 1\)"),
    ({"hutchinson": "uniform"}, "hutchinson must be one of"),
    ({"rtol": 0.0}, "rtol must be"),
    ({"atol": -1.0}, "atol must be"),
])
def test_ode_likelihood_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ode_likelihood(_gaussian_points(n=2), exact_score, SDE, **kwargs)


@pytest.mark.parametrize("x, message", [
    (torch.zeros(3), r"x must have shape \[B, \.\.\.\]"),
    (torch.zeros(0, 2), r"x must have shape \[B, \.\.\.\]"),
    (torch.tensor([[0.0, float("nan")]]), "x contains NaN or inf"),
    (torch.tensor([[0.0, float("inf")]]), "x contains NaN or inf"),
])
def test_ode_likelihood_bad_data(x, message):
    with pytest.raises(ValueError, match=message):
        ode_likelihood(x, exact_score, SDE)


def test_bits_per_dim_formula():
    x = torch.zeros(2, 1, 4, 4)
    d = 16
    # The uniform density on [0, 1)^D has log p = 0: exactly 8 bits per dimension.
    assert torch.equal(bits_per_dim(torch.zeros(2), x), torch.full((2,), 8.0))
    # Halving the density in every dimension costs exactly one more bit per dimension.
    torch.testing.assert_close(bits_per_dim(torch.full((2,), -d * math.log(2.0)), x), torch.full((2,), 9.0))
    torch.testing.assert_close(bits_per_dim(torch.tensor([d * math.log(4.0)]), x[:1]), torch.tensor([6.0]))


def test_dequantize_stays_in_its_pixel_bin():
    g = torch.Generator().manual_seed(11)
    k = torch.randint(0, 256, (64, 1, 5, 5), generator=g)
    y = dequantize(k / 255.0, generator=torch.Generator().manual_seed(12))
    assert ((y >= 0) & (y < 1)).all()
    assert torch.equal(torch.floor(y * 256).long(), k)       # y in [k / 256, (k + 1) / 256)
    assert torch.equal(y, dequantize(k / 255.0, generator=torch.Generator().manual_seed(12)))


def test_evaluate_bpd_matches_the_closed_form():
    s0 = 0.5

    def score(x, t):
        return -x / (s0 ** 2 + SDE.marginal_prob_std(t) ** 2).view(-1, 1, 1, 1)

    images = torch.randint(0, 256, (5, 1, 2, 3), generator=torch.Generator().manual_seed(13)) / 255.0
    result = evaluate_bpd(score, SDE, images, batch_size=8, hutchinson="rademacher",
                          generator=torch.Generator().manual_seed(14), progress=False)
    assert isinstance(result, BPDResult) and result.bpd.shape == (5,) and len(result.nfe) == 1
    # The first draws of the generator dequantize the (single) batch.
    x = dequantize(images, generator=torch.Generator().manual_seed(14))
    expected = -model_logp(x.flatten(1), torch.full((6,), s0)) / (6 * math.log(2.0)) + 8
    torch.testing.assert_close(result.bpd.double(), expected, rtol=0, atol=1e-3)
    assert result.mean == pytest.approx(float(expected.mean()), abs=1e-3)
    assert result.stderr == pytest.approx(float(expected.std()) / math.sqrt(5), rel=1e-2)
    assert "bits/dim over 5 images" in str(result)


@pytest.mark.parametrize("images", [torch.full((2, 1, 2, 2), 1.5), torch.full((2, 1, 2, 2), -0.1),
                                    torch.full((2, 1, 2, 2), float("nan")), torch.full((2, 1, 2, 2), 255.0)])
def test_evaluate_bpd_rejects_images_outside_the_unit_interval(images):
    with pytest.raises(ValueError, match=r"images must be 8-bit images scaled to \[0, 1\]"):
        evaluate_bpd(exact_score, SDE, images, progress=False)


def test_evaluate_bpd_rejects_empty_input_and_bad_batch_size():
    with pytest.raises(ValueError, match="non-empty"):
        evaluate_bpd(exact_score, SDE, torch.zeros(0, 1, 2, 2), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_bpd(exact_score, SDE, torch.zeros(2, 1, 2, 2), batch_size=0, progress=False)
