"""The sampler registry, the shared reverse-SDE loop's options (z, callback, denoise, step_hook), and the
tutorial's VE Euler-Maruyama and predictor-corrector loops reproduced bit for bit by the shared loop."""

import math

import pytest
import torch

from sgm_helpers import SAMPLERS, VESDE, VPSDE, subVPSDE, get_sampler, sample, three_modes
from sgm_helpers.samplers import euler_maruyama_sampler, heun_sampler, pc_sampler, reverse_sde_sampler

MIX = three_modes()
SDES = [VESDE(25.0), VPSDE(), subVPSDE()]


def _score(sde):
    return MIX.perturbed_score(sde)


@pytest.mark.parametrize("sde", SDES, ids=repr)
@pytest.mark.parametrize("name, steps, expected_nfe", [("em", 7, 7), ("pc", 7, 14), ("ancestral", 7, 7),
                                                         ("heun", 7, 13), ("heun-churn", 7, 13), ("dpm2m", 7, 7)])
def test_every_registered_sampler_runs_and_counts_its_score_evaluations(sde, name, steps, expected_nfe):
    x, nfe = sample(name, _score(sde), sde, (16, 2), num_steps=steps, generator=torch.Generator().manual_seed(0),
                    progress=False)
    assert x.shape == (16, 2) and torch.isfinite(x).all()
    assert nfe == expected_nfe


def test_the_churned_heun_entry_is_heun_sampler_with_its_fixed_churn():
    sde = VESDE(25.0)
    z = sde.prior_sampling((64, 2), generator=torch.Generator().manual_seed(2))
    churned, _ = sample("heun-churn", _score(sde), sde, z=z, num_steps=6, generator=torch.Generator().manual_seed(3),
                        progress=False)
    direct = heun_sampler(_score(sde), sde, z=z, num_steps=6, s_churn=80.0, generator=torch.Generator().manual_seed(3),
                          progress=False)
    torch.testing.assert_close(churned, direct, rtol=0, atol=0)
    plain, _ = sample("heun-churn", _score(sde), sde, z=z, num_steps=6, s_churn=0.0, progress=False)  # overridden
    torch.testing.assert_close(plain, heun_sampler(_score(sde), sde, z=z, num_steps=6, progress=False), rtol=0, atol=0)
    assert not torch.allclose(churned, plain)


def test_the_ode_sampler_reports_the_same_count_as_the_registry():
    sde = VPSDE()
    z = sde.prior_sampling((8, 2), generator=torch.Generator().manual_seed(1))
    x_direct, nfe_direct = SAMPLERS["ode"].fn(_score(sde), sde, z=z, progress=False)
    x_reg, nfe_reg = sample("ode", _score(sde), sde, z=z, progress=False)
    assert nfe_reg == nfe_direct > 10
    torch.testing.assert_close(x_reg, x_direct, rtol=0, atol=0)


def test_registry_errors_name_the_argument():
    with pytest.raises(ValueError, match="sampler must be one of"):
        get_sampler("rk4")
    with pytest.raises(ValueError, match="adaptive"):
        sample("ode", _score(VESDE()), VESDE(), (2, 2), num_steps=10, progress=False)
    with pytest.raises(ValueError, match="predictor must be one of"):
        reverse_sde_sampler(_score(VESDE()), VESDE(), (2, 2), predictor="leapfrog", progress=False)


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_denoise_adds_one_evaluation_and_applies_tweedie_at_eps(sde):
    score = _score(sde)
    kw = dict(num_steps=20, eps=1e-3, progress=False)
    plain, nfe_plain = sample("em", score, sde, (32, 2), generator=torch.Generator().manual_seed(3), **kw)
    denoised, nfe_denoised = sample("em", score, sde, (32, 2), generator=torch.Generator().manual_seed(3),
                                    denoise=True, **kw)
    assert nfe_denoised == nfe_plain + 1
    t = torch.full((32,), 1e-3)
    std, alpha = sde.marginal_prob_std(t)[:, None], sde.mean_coeff(t)[:, None]
    expected = (plain + std ** 2 * score(plain, t)) / alpha
    torch.testing.assert_close(denoised, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(denoised, plain)  # the step does something at eps = 1e-3


def test_latents_callbacks_and_a_transparent_step_hook():
    sde = VPSDE()
    score = _score(sde)
    z = sde.prior_sampling((10, 2), generator=torch.Generator().manual_seed(4))
    seen = []
    a = euler_maruyama_sampler(score, sde, z=z, num_steps=12, generator=torch.Generator().manual_seed(5),
                               progress=False, callback=lambda i, t, x: seen.append((i, t)))
    assert [i for i, _ in seen] == list(range(12)) and math.isclose(seen[-1][1], 1e-3, rel_tol=1e-6)
    b = reverse_sde_sampler(score, sde, z=z, num_steps=12, generator=torch.Generator().manual_seed(5),
                            progress=False, step_hook=lambda i, t, t_next, x, one_step: one_step(x))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not match"):
        euler_maruyama_sampler(score, sde, (3, 2), z=z, progress=False)


def test_a_step_hook_can_pin_a_coordinate():
    # A hook that overwrites coordinate 0 after every step: the returned samples keep it.
    sde = subVPSDE()

    def pin(i, t, t_next, x, one_step):
        x, x_mean = one_step(x)
        x[:, 0], x_mean[:, 0] = 1.25, 1.25
        return x, x_mean

    x = reverse_sde_sampler(_score(sde), sde, (20, 2), num_steps=10, step_hook=pin, progress=False,
                            generator=torch.Generator().manual_seed(6))
    assert torch.all(x[:, 0] == 1.25) and x[:, 1].std() > 0


def _tutorial_em(score_model, sde, shape, num_steps, eps, generator):
    """The tutorial's Euler-Maruyama loop for the VE SDE, written out (the grid ends at eps)."""
    ts = torch.linspace(1.0, eps, num_steps + 1)
    x = torch.randn(shape, generator=generator) * sde.marginal_prob_std(1.0)
    x_mean = x
    for i in range(num_steps):
        t, dt = ts[i], ts[i] - ts[i + 1]
        g2 = sde.diffusion_coeff(t) ** 2
        x_mean = x + g2 * score_model(x, t.expand(shape[0])) * dt
        x = x_mean + torch.sqrt(g2 * dt) * torch.randn(shape, generator=generator)
    return x_mean


def _tutorial_pc(score_model, sde, shape, num_steps, snr, eps, generator):
    """Langevin corrector then Euler-Maruyama predictor, the tutorial's step size rule, written out."""
    ts = torch.linspace(1.0, eps, num_steps + 1)
    x = torch.randn(shape, generator=generator) * sde.marginal_prob_std(1.0)
    x_mean = x
    for i in range(num_steps):
        t, dt = ts[i], ts[i] - ts[i + 1]
        grad = score_model(x, t.expand(shape[0]))
        step = 2 * (snr * math.sqrt(math.prod(shape[1:])) / grad.flatten(1).norm(dim=1).mean()) ** 2
        x = x + step * grad + torch.sqrt(2 * step) * torch.randn(shape, generator=generator)
        g2 = sde.diffusion_coeff(t) ** 2
        x_mean = x + g2 * score_model(x, t.expand(shape[0])) * dt
        x = x_mean + torch.sqrt(g2 * dt) * torch.randn(shape, generator=generator)
    return x_mean


def test_the_shared_loop_reproduces_the_tutorials_ve_loops_bit_for_bit():
    # The generalization (drift f = 0 subtracted, one loop for every predictor) must not change a single bit
    # of the VE samplers, so the model card's numbers stay reproducible.
    sde, score = VESDE(25.0), _score(VESDE(25.0))
    em = euler_maruyama_sampler(score, sde, (64, 2), num_steps=30, generator=torch.Generator().manual_seed(7),
                                progress=False)
    torch.testing.assert_close(em, _tutorial_em(score, sde, (64, 2), 30, 1e-3, torch.Generator().manual_seed(7)),
                               rtol=0, atol=0)
    pc = pc_sampler(score, sde, (64, 2), num_steps=30, generator=torch.Generator().manual_seed(8), progress=False)
    torch.testing.assert_close(pc, _tutorial_pc(score, sde, (64, 2), 30, 0.16, 1e-3,
                                                torch.Generator().manual_seed(8)), rtol=0, atol=0)


@pytest.mark.parametrize("schedule", ["logsnr", "edm"])
@pytest.mark.parametrize("sde", [VESDE(25.0), VPSDE()], ids=repr)
def test_dpm_solver_converges_to_the_ode_solution_at_second_order(sde, schedule):
    # The exact probability-flow ODE solution from the same latents (DOP853, tight tolerances) is the reference.
    # A second-order method's error falls ~4x per doubling of the steps; measured 3.3x-3.8x from 80 to 160 steps
    # (fewer steps are not yet in the asymptotic range: a few points near the modes' borders dominate) and an error
    # below 0.002 at 160 steps (a mixture whose modes are ~4 apart), so 2.8x / 0.005 leave a margin while a
    # first-order solver (2x) or a wrong coefficient (no convergence) fails.
    score = _score(sde)
    z = sde.prior_sampling((1000, 2), generator=torch.Generator().manual_seed(9))
    # DPM-Solver returns the denoised estimate at eps, so the reference is the ODE's solution denoised the same way.
    ref, _ = sample("ode", score, sde, z=z, progress=False, rtol=1e-8, atol=1e-8, method="DOP853", denoise=True)
    err = {n: float((sample("dpm2m", score, sde, z=z, num_steps=n, progress=False, schedule=schedule)[0] - ref)
                    .pow(2).sum(1).mean().sqrt()) for n in (80, 160)}
    assert err[160] < 0.005 and err[80] / err[160] > 2.8, err


def test_dpm_solver_refuses_an_unknown_schedule():
    with pytest.raises(ValueError, match="schedule must be"):
        sample("dpm2m", _score(VESDE()), VESDE(), (2, 2), num_steps=3, schedule="cosine", progress=False)
