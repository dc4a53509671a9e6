"""VESDE: the perturbation kernel's std, the diffusion coefficient, the prior."""

import math

import pytest
import torch
from scipy.integrate import quad

from sgm_helpers import VESDE


@pytest.mark.parametrize("sigma", [2.0, 25.0, 50.0])
@pytest.mark.parametrize("t", [1e-4, 0.1, 0.5, 1.0])
def test_std_squared_is_integral_of_g_squared(sigma, t):
    sde = VESDE(sigma)
    integral, _ = quad(lambda s: float(sde.diffusion_coeff(torch.tensor(s, dtype=torch.float64))) ** 2, 0.0, t,
                       epsabs=0.0, epsrel=1e-12)
    std = sde.marginal_prob_std(torch.tensor(t, dtype=torch.float64))
    assert float(std) ** 2 == pytest.approx(integral, rel=1e-10)


def test_diffusion_coeff_is_sigma_to_the_t():
    sde = VESDE(25.0)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(sde.diffusion_coeff(t), 25.0 ** t, rtol=1e-14, atol=0)


def test_std_at_one_matches_the_documented_value():
    # std(1)^2 = (sigma^2 - 1) / (2 ln sigma); the module docstring quotes 9.845 for sigma = 25.
    assert float(VESDE(25.0).marginal_prob_std(1.0)) == pytest.approx(math.sqrt(624 / (2 * math.log(25))), rel=1e-6)
    assert float(VESDE(25.0).marginal_prob_std(1.0)) == pytest.approx(9.845, abs=5e-4)


def test_std_is_accurate_near_zero_in_float32():
    # The naive (sigma^(2t) - 1) loses all digits in float32 for tiny t; expm1 keeps them.
    sde = VESDE(25.0)
    t = torch.tensor([1e-9, 1e-7, 1e-5, 1e-3, 1e-1])
    ref = torch.sqrt(torch.expm1(2 * math.log(25.0) * t.double()) / (2 * math.log(25.0)))
    torch.testing.assert_close(sde.marginal_prob_std(t).double(), ref, rtol=1e-6, atol=0)
    # and std(t) ~ sqrt(t) as t -> 0
    assert float(sde.marginal_prob_std(1e-9)) == pytest.approx(math.sqrt(1e-9), rel=1e-6)


def test_float_and_tensor_t_agree_and_keep_shape():
    sde = VESDE(25.0)
    for t in (0.0, 0.3, 1.0):
        assert torch.equal(sde.marginal_prob_std(t), sde.marginal_prob_std(torch.tensor(t)))
        assert torch.equal(sde.diffusion_coeff(t), sde.diffusion_coeff(torch.tensor(t)))
    t = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    assert sde.marginal_prob_std(t).shape == (3, 4)
    assert sde.diffusion_coeff(t).shape == (3, 4)
    assert sde.marginal_prob_std(0.5).dtype == torch.get_default_dtype()
    # integer tensors are promoted, not truncated
    assert float(sde.marginal_prob_std(torch.tensor(1))) == pytest.approx(float(sde.marginal_prob_std(1.0)))
    assert float(sde.marginal_prob_std(0.0)) == 0.0


def test_marginal_prob_is_mean_x0_and_std():
    sde = VESDE(25.0)
    x0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    t = torch.full((5,), 0.4)
    mean, std = sde.marginal_prob(x0, t)
    assert torch.equal(mean, x0)
    assert torch.equal(std, sde.marginal_prob_std(t))


def test_prior_logp_equals_torch_normal():
    sde = VESDE(25.0)
    z = 10 * torch.randn(6, 1, 3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    std1 = sde.marginal_prob_std(1.0).double()
    ref = torch.distributions.Normal(0.0, std1).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), ref, rtol=1e-12, atol=1e-10)
    assert sde.prior_logp(z).shape == (6,)


def test_prior_sampling_std_and_reproducibility():
    sde = VESDE(25.0)
    n = 20_000
    z = sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(3))
    assert z.shape == (n, 2)
    std1 = float(sde.marginal_prob_std(1.0))
    # sample std of 2n Gaussian values: standard error std1 / sqrt(2 * 2n)
    assert float(z.std()) == pytest.approx(std1, abs=4 * std1 / math.sqrt(4 * n))
    assert abs(float(z.mean())) < 4 * std1 / math.sqrt(2 * n)
    z2 = sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(3))
    assert torch.equal(z, z2)
    z3 = sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(4))
    assert not torch.equal(z, z3)


def test_cpu_generator_gives_the_same_samples_whatever_the_device_argument():
    sde = VESDE(25.0)
    devices = ["cpu", torch.device("cpu")] + (["cuda"] if torch.cuda.is_available() else [])
    ref = sde.prior_sampling((4, 1, 2, 2), generator=torch.Generator().manual_seed(5))
    for device in devices:
        z = sde.prior_sampling((4, 1, 2, 2), generator=torch.Generator().manual_seed(5), device=device)
        assert z.device.type == torch.device(device).type
        torch.testing.assert_close(z.cpu(), ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("sigma", [1.0, 0.5, 0, -3.0, float("nan"), float("inf"), True, "25", None])
def test_bad_sigma_is_a_value_error_naming_it(sigma):
    with pytest.raises(ValueError, match=r"sigma must be a finite number > 1"):
        VESDE(sigma)


@pytest.mark.parametrize("shape", [(4,), (), (0, 2), (3, -1), "abc", 5])
def test_bad_prior_shape_is_a_value_error(shape):
    with pytest.raises(ValueError, match="shape"):
        VESDE(25.0).prior_sampling(shape)


def test_prior_logp_needs_a_batch_dimension():
    with pytest.raises(ValueError, match=r"\[B, \.\.\.\]"):
        VESDE(25.0).prior_logp(torch.zeros(3))
