"""Sampling by solving the reverse-time SDE, or its probability-flow ODE, from t = 1 down to t = eps.

For the VE SDE dx = g(t) dw (no drift) the reverse-time SDE is

    dx = -g(t)^2 grad_x log p_t(x) dt + g(t) dw_bar,      t running from 1 to 0,

and the probability-flow ODE, which has the same marginals p_t, is

    dx/dt = -1/2 g(t)^2 grad_x log p_t(x).

A trained score model s_theta(x, t) stands in for grad_x log p_t(x). Every sampler takes a
``score_model`` called as ``score_model(x [B, ...], t [B]) -> [B, ...]``, so the exact score of a
toy distribution works as well as a network.

Time grid: ``num_steps`` steps from t = 1 to t = eps exactly (``num_steps + 1`` grid points). The
original tutorial used ``num_steps`` grid points and so stopped one step short of eps.

:func:`heun_sampler` (Karras et al. 2022, "EDM") solves the same ODE in the noise level
sigma = std(t) instead of t. Since d std(t)^2 / dt = g(t)^2, the probability-flow ODE becomes

    dx/dsigma = -sigma grad_x log p(x; sigma),

whose trajectories are close to straight lines, so a second-order method with a few well-placed
steps gets close to the adaptive solver's answer.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp
from tqdm.auto import tqdm

from .utils import check_eps, check_positive, check_positive_int, check_shape, model_device, randn


def _time_grid(num_steps: int, eps: float, device) -> torch.Tensor:
    return torch.linspace(1.0, eps, num_steps + 1, device=device)


def _check_step(x: torch.Tensor, step: int, t: float, sampler: str) -> None:
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"{sampler}: the samples became NaN or inf at step {step} (t = {t:.4g}); "
                                 "the score model diverged (more steps or a smaller snr may help)")


def _check_nonnegative(value, name: str) -> float:
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            or value < 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _initial_state(sde, shape, z, generator, device) -> torch.Tensor:
    """The starting point at t = 1: the given latent ``z``, or a draw from the prior of ``shape``."""
    if z is None:
        if shape is None:
            raise ValueError("give shape= or a latent z=")
        return sde.prior_sampling(check_shape(shape), generator=generator, device=device)
    if not isinstance(z, torch.Tensor):
        raise ValueError(f"z must be a tensor [B, ...], got {type(z).__name__}")
    if shape is not None and tuple(shape) != tuple(z.shape):
        raise ValueError(f"shape {tuple(shape)} does not match z's shape {tuple(z.shape)}")
    check_shape(z.shape, "z.shape")
    if not torch.isfinite(z).all():
        raise ValueError("z contains NaN or inf values")
    return z.to(device, torch.float32)


def _setup(score_model, sde, shape, num_steps, eps, device):
    shape = check_shape(shape)
    num_steps = check_positive_int(num_steps, "num_steps")
    eps = check_eps(eps)
    device = model_device(score_model, device)
    return shape, num_steps, eps, device


@torch.no_grad()
def euler_maruyama_sampler(score_model, sde, shape, *, num_steps: int = 500, eps: float = 1e-3, device=None,
                           generator: torch.Generator | None = None, progress: bool = True,
                           callback=None) -> torch.Tensor:
    """Solve the reverse-time SDE with the Euler-Maruyama method.

    One step from t to t - dt, with z ~ N(0, I):

        x_mean = x + g(t)^2 s_theta(x, t) dt
        x      = x_mean + g(t) sqrt(dt) z

    Args:
        score_model: ``(x [B, ...], t [B]) -> score [B, ...]``.
        sde: the SDE (``VESDE``): supplies the prior and g(t).
        shape: ``(B, ...)``, the shape of the batch to draw, e.g. ``(64, 1, 28, 28)``.
        num_steps: number of steps from t = 1 to t = eps (one score evaluation each).
        eps: the final time, in (0, 1); the score is ill-conditioned at t = 0.
        device: defaults to the model's device.
        generator: a ``torch.Generator`` (CPU or ``device``) for reproducible samples.
        progress: show a ``tqdm.auto`` bar.
        callback: optional ``callback(step, t, x_mean)`` after every step (to record trajectories).
    Returns:
        the last step's noise-free mean ``x_mean`` of shape ``shape``: the final noise g sqrt(dt) z
        is much larger than the pixel quantization and would only blur the samples.
    """
    shape, num_steps, eps, device = _setup(score_model, sde, shape, num_steps, eps, device)
    ts = _time_grid(num_steps, eps, device)
    x = sde.prior_sampling(shape, generator=generator, device=device)
    x_mean = x
    for i in tqdm(range(num_steps), disable=not progress, desc="Euler-Maruyama"):
        t, dt = ts[i], ts[i] - ts[i + 1]
        g2 = sde.diffusion_coeff(t) ** 2
        x_mean = x + g2 * score_model(x, t.expand(shape[0])) * dt
        x = x_mean + torch.sqrt(g2 * dt) * randn(shape, generator, device)
        _check_step(x, i, float(t), "euler_maruyama_sampler")
        if callback is not None:
            callback(i, float(ts[i + 1]), x_mean)
    return x_mean


@torch.no_grad()
def pc_sampler(score_model, sde, shape, *, num_steps: int = 500, snr: float = 0.16, eps: float = 1e-3,
               device=None, generator: torch.Generator | None = None, progress: bool = True,
               callback=None) -> torch.Tensor:
    """Predictor-corrector sampling: one Langevin corrector step, then one Euler-Maruyama predictor step.

    Corrector (Langevin MCMC at the current t, targeting p_t), with the step size chosen so
    that the signal-to-noise ratio ||step * score|| / ||sqrt(2 step) z|| is about ``snr``:

        step = 2 (snr * sqrt(D) / mean_batch ||s_theta(x, t)||)^2
        x    = x + step s_theta(x, t) + sqrt(2 step) z

    Predictor (Euler-Maruyama from t to t - dt), as in :func:`euler_maruyama_sampler`.
    Two score evaluations per step. (The tutorial's earlier version had the two labels swapped:
    the Langevin step is the corrector.)

    Arguments as :func:`euler_maruyama_sampler`, plus ``snr > 0``. Returns the last noise-free mean.
    """
    shape, num_steps, eps, device = _setup(score_model, sde, shape, num_steps, eps, device)
    snr = check_positive(snr, "snr")
    ts = _time_grid(num_steps, eps, device)
    noise_norm = math.sqrt(math.prod(shape[1:]))
    x = sde.prior_sampling(shape, generator=generator, device=device)
    x_mean = x
    for i in tqdm(range(num_steps), disable=not progress, desc="predictor-corrector"):
        t, dt = ts[i], ts[i] - ts[i + 1]
        t_batch = t.expand(shape[0])
        # Corrector: one Langevin step at time t.
        grad = score_model(x, t_batch)
        grad_norm = grad.flatten(1).norm(dim=1).mean()
        step = 2 * (snr * noise_norm / grad_norm) ** 2
        x = x + step * grad + torch.sqrt(2 * step) * randn(shape, generator, device)
        # Predictor: one Euler-Maruyama step from t to t - dt.
        g2 = sde.diffusion_coeff(t) ** 2
        x_mean = x + g2 * score_model(x, t_batch) * dt
        x = x_mean + torch.sqrt(g2 * dt) * randn(shape, generator, device)
        _check_step(x, i, float(t), "pc_sampler")
        if callback is not None:
            callback(i, float(ts[i + 1]), x_mean)
    return x_mean


def ode_sampler(score_model, sde, shape=None, *, eps: float = 1e-3, device=None,
                generator: torch.Generator | None = None, progress: bool = True, rtol: float = 1e-5,
                atol: float = 1e-5, z: torch.Tensor | None = None, method: str = "RK45"):
    """Solve the probability-flow ODE dx/dt = -1/2 g(t)^2 s_theta(x, t) from t = 1 to eps.

    The ODE is deterministic: the same latent ``z`` always decodes to the same sample, and
    :func:`~sgm_helpers.likelihood.ode_likelihood` (the same ODE run forward) inverts it.
    Integrated by ``scipy.integrate.solve_ivp`` (adaptive RK45 by default); the whole batch is one
    ODE state of B*D float64 numbers, and only that state crosses between NumPy and torch.
    There is no step count: the solver picks its steps to meet ``rtol`` and ``atol``.

    Args:
        score_model, sde, eps, device, generator, progress: as :func:`euler_maruyama_sampler`.
        shape: ``(B, ...)``; may be omitted when ``z`` is given.
        rtol, atol: the solver's relative and absolute error tolerances.
        z: latent codes ``[B, ...]`` at t = 1 to decode; drawn from the prior if None.
        method: any ``solve_ivp`` method ("RK45", "RK23", "DOP853", ...).
    Returns:
        ``(samples, nfe)``: samples at t = eps with ``z``'s (or ``shape``'s) shape, and the number of
        score-model evaluations the solver used.
    """
    eps = check_eps(eps)
    check_positive(rtol, "rtol")
    check_positive(atol, "atol")
    device = model_device(score_model, device)
    x = _initial_state(sde, shape, z, generator, device)
    shape = x.shape
    bar = tqdm(total=1000, disable=not progress, desc="probability-flow ODE", bar_format="{l_bar}{bar}| {postfix}")
    nfe = 0

    def drift(t: float, y: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        xt = torch.from_numpy(y).view(shape).to(device, torch.float32)
        with torch.inference_mode():
            score = score_model(xt, torch.full((shape[0],), t, device=device))
        half_g2 = 0.5 * float(sde.diffusion_coeff(t)) ** 2
        if progress:
            bar.n = round(1000 * (1.0 - t) / (1.0 - eps))
            bar.set_postfix_str(f"t={t:.4f}, score evaluations={nfe}")
        out = (-half_g2 * score).reshape(-1).cpu().numpy().astype(np.float64)
        if not np.isfinite(out).all():  # scipy would keep shrinking its step on NaN instead of stopping
            raise FloatingPointError(f"ode_sampler: the score model returned NaN or inf at t = {t:.4g} "
                                     f"(evaluation {nfe})")
        return out

    try:
        res = solve_ivp(drift, (1.0, eps), x.reshape(-1).double().cpu().numpy(), rtol=rtol, atol=atol,
                        method=method, t_eval=[eps])
    finally:
        bar.close()
    if not res.success:
        raise RuntimeError(f"ode_sampler: the ODE solver failed: {res.message}")
    samples = torch.from_numpy(res.y[:, -1]).to(device, torch.float32).view(shape)
    if not torch.isfinite(samples).all():
        raise FloatingPointError("ode_sampler: the solution contains NaN or inf")
    return samples, nfe


def _time_of_std(sde, std: torch.Tensor) -> torch.Tensor:
    """The inverse of the VE SDE's std(t): t = log(1 + 2 ln(sigma) std^2) / (2 ln sigma).

    (std(t)^2 = (sigma^(2t) - 1) / (2 ln sigma), solved for t; ``log1p`` keeps small std accurate.)
    """
    return torch.log1p(2.0 * sde.log_sigma * std.double() ** 2) / (2.0 * sde.log_sigma)


def edm_sigma_steps(sde, num_steps: int = 18, *, eps: float = 1e-3, rho: float = 7.0, device=None) -> torch.Tensor:
    """EDM's noise levels (Karras et al. 2022, eq. 5), from std(1) down to std(eps), then 0.

        sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,  i = 0 .. N - 1
        sigma_N = 0

    with N = ``num_steps``, sigma_max = std(1) and sigma_min = std(eps). A large ``rho`` puts the
    steps close together at small sigma, where the image details form (rho = 1: evenly spaced in
    sigma; rho -> infinity: evenly spaced in log sigma). Returns a float64 tensor of N + 1 levels.
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    eps = check_eps(eps)
    rho = check_positive(rho, "rho")
    sigma_max = float(sde.marginal_prob_std(torch.tensor(1.0, dtype=torch.float64)))
    sigma_min = float(sde.marginal_prob_std(torch.tensor(eps, dtype=torch.float64)))
    frac = torch.linspace(0.0, 1.0, num_steps, dtype=torch.float64, device=device)
    sigmas = (sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


@torch.no_grad()
def heun_sampler(score_model, sde, shape=None, *, num_steps: int = 18, eps: float = 1e-3, rho: float = 7.0,
                 s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
                 z: torch.Tensor | None = None, device=None, generator: torch.Generator | None = None,
                 progress: bool = True, callback=None) -> torch.Tensor:
    """EDM's sampler (Karras et al. 2022, Algorithms 1 and 2): Heun's method in the noise level sigma.

    The probability-flow ODE in sigma = std(t) is dx/dsigma = d(x, sigma) = -sigma s_theta(x, t(sigma)),
    where t(sigma) inverts std(t). On the levels sigma_0 > ... > sigma_{N-1} > sigma_N = 0 of
    :func:`edm_sigma_steps`, one step from sigma_i to sigma_{i+1} is

        x'      = x + (sigma_{i+1} - sigma_i) d(x, sigma_i)                            (Euler)
        x_{i+1} = x + (sigma_{i+1} - sigma_i) (d(x, sigma_i) + d(x', sigma_{i+1})) / 2   (Heun's correction)

    The last step, to sigma_N = 0, keeps the Euler step: x_N = x + sigma_{N-1}^2 s_theta(x, eps), the
    denoised mean E[x(0) | x(eps)] (Tweedie's formula). So N steps cost 2N - 1 score evaluations
    (18 steps: 35).

    Stochastic variant (Algorithm 2), on when ``s_churn > 0``: before each step whose sigma_i lies in
    [``s_tmin``, ``s_tmax``], noise is added to raise the level to sigma_hat = (1 + gamma) sigma_i,

        gamma = min(s_churn / N, sqrt(2) - 1),     x <- x + sqrt(sigma_hat^2 - sigma_i^2) s_noise z,

    and the step starts from sigma_hat. This re-injects the noise the reverse SDE would add and so
    corrects errors of an imperfect score model, as Euler-Maruyama does, at the same 2N - 1 cost.
    sigma_hat is capped at sigma_max = std(1), the largest level the model was trained on.

    Args:
        score_model, sde, eps, device, generator, progress: as :func:`euler_maruyama_sampler`.
        shape: ``(B, ...)``; may be omitted when ``z`` is given.
        num_steps: N, the number of noise levels (>= 1).
        rho: the schedule's exponent (EDM: 7).
        s_churn, s_tmin, s_tmax, s_noise: EDM's stochasticity settings (noise levels in sigma units);
            the default ``s_churn = 0`` is the deterministic sampler.
        z: latent codes ``[B, ...]`` at t = 1 (distributed as N(0, std(1)^2 I)); drawn if None.
        callback: optional ``callback(step, sigma_next, x)`` after every step.
    Returns:
        samples with ``shape`` (or ``z``'s shape): the final denoised estimate at sigma = 0.
    """
    sigmas = edm_sigma_steps(sde, num_steps, eps=eps, rho=rho)
    s_churn = _check_nonnegative(s_churn, "s_churn")
    s_tmin = _check_nonnegative(s_tmin, "s_tmin")
    if not isinstance(s_tmax, (int, float)) or isinstance(s_tmax, bool) or not s_tmax >= s_tmin:
        raise ValueError(f"s_tmax must be a number >= s_tmin = {s_tmin}, got {s_tmax!r}")
    s_noise = check_positive(s_noise, "s_noise")
    device = model_device(score_model, device)
    x = _initial_state(sde, shape, z, generator, device)
    shape, batch = x.shape, x.shape[0]
    sigma_max = float(sigmas[0])
    gamma = min(s_churn / num_steps, math.sqrt(2.0) - 1.0)

    def d(x_, sigma: float) -> torch.Tensor:
        t = _time_of_std(sde, torch.tensor(sigma, dtype=torch.float64)).to(device, torch.float32).expand(batch)
        return -sigma * score_model(x_, t)

    for i in tqdm(range(num_steps), disable=not progress, desc="Heun (EDM)"):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        sigma_hat = sigma
        if gamma > 0 and s_tmin <= sigma <= s_tmax:
            sigma_hat = min(sigma * (1.0 + gamma), sigma_max)
            x = x + math.sqrt(sigma_hat ** 2 - sigma ** 2) * s_noise * randn(shape, generator, device)
        d_cur = d(x, sigma_hat)
        x_next = x + (sigma_next - sigma_hat) * d_cur
        if sigma_next > 0:
            x_next = x + (sigma_next - sigma_hat) * 0.5 * (d_cur + d(x_next, sigma_next))
        x = x_next
        _check_step(x, i, float(_time_of_std(sde, torch.tensor(sigma, dtype=torch.float64))), "heun_sampler")
        if callback is not None:
            callback(i, sigma_next, x)
    return x
