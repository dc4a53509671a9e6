"""Sampling by solving the reverse-time SDE, or its probability-flow ODE, from t = 1 down to t = eps.

For the forward SDE dx = f(x, t) dt + g(t) dw the reverse-time SDE is

    dx = [f(x, t) - g(t)^2 grad_x log p_t(x)] dt + g(t) dw_bar,      t running from 1 to 0,

and the probability-flow ODE, which has the same marginals p_t when the score is exact, is

    dx/dt = f(x, t) - 1/2 g(t)^2 grad_x log p_t(x).

Both drifts are :meth:`SDE.reverse_drift <sgm_helpers.sde.SDE.reverse_drift>`. A trained score model
s_theta(x, t) stands in for grad_x log p_t(x). Every sampler takes a ``score_model`` called as
``score_model(x [B, ...], t [B]) -> [B, ...]``, so the exact score of a toy distribution works as well
as a network, and every sampler works for VE, VP and sub-VP.

The reverse-SDE samplers share one loop, :func:`reverse_sde_sampler`: per step an optional Langevin
corrector, then a predictor (Euler-Maruyama, reverse diffusion or ancestral sampling), each a small
function below. Time grid: ``num_steps`` steps from t = 1 to t = eps exactly (``num_steps + 1``
grid points). The original tutorial used ``num_steps`` grid points and so stopped one step short of eps.

:func:`heun_sampler` (Karras et al. 2022, "EDM") solves the same ODE in the noise level
sigma(t) = std(t) / alpha(t) of the rescaled state x / alpha(t), where every SDE looks like VE:

    d(x / alpha)/dsigma = -sigma alpha grad_x log p_t(x),

whose trajectories are close to straight lines, so a second-order method with a few well-placed
steps gets close to the adaptive solver's answer. :func:`dpm_solver_sampler` (DPM-Solver++, Lu et al.
2022) integrates the ODE's linear part exactly in the log signal-to-noise ratio and needs one score
evaluation per step.

:data:`SAMPLERS` names them all; :func:`sample` runs one by name and counts its score evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp
from tqdm.auto import tqdm

from .utils import check_eps, check_positive, check_positive_int, check_shape, model_device, randn


class CountingModel(torch.nn.Module):
    """Wraps a score model ``(x, t) -> score`` and counts its evaluations in ``.calls``.

    One call is one forward pass over a whole batch: the cost unit of every sampler (the number
    of function evaluations, NFE). The wrapped model may be a network (its parameters, and so its
    device, show through) or a plain function such as an exact toy score.
    """

    def __init__(self, score_model):
        super().__init__()
        if not callable(score_model):
            raise ValueError(f"score_model must be callable as score_model(x, t), got {type(score_model).__name__}")
        self.score_model = score_model
        self.calls = 0

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        self.calls += 1
        return self.score_model(x, t)

    def reset(self) -> None:
        self.calls = 0


# --- shared checks -------------------------------------------------------------------------------


def _time_grid(num_steps: int, eps: float, device, T: float = 1.0) -> torch.Tensor:
    return torch.linspace(T, eps, num_steps + 1, device=device)


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


def _expand(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.expand(x.shape[0])


# --- one step of each predictor, and the corrector ------------------------------------------------
# A predictor moves x from t to t_next < t and returns (x, x_mean): the new state and its noise-free part.


def euler_maruyama_step(score_model, sde, x, t, t_next, generator=None):
    """One Euler-Maruyama step of the reverse-time SDE from t to t_next = t - dt, with z ~ N(0, I):

        x_mean = x - [f(x, t) - g(t)^2 s_theta(x, t)] dt
        x      = x_mean + g(t) sqrt(dt) z
    """
    dt = t - t_next
    drift = sde.reverse_drift(x, t, score_model(x, _expand(t, x)))
    x_mean = x - drift * dt
    return x_mean + torch.sqrt(sde.diffusion_coeff(t) ** 2 * dt) * randn(x.shape, generator, x.device), x_mean


def reverse_diffusion_step(score_model, sde, x, t, t_next, generator=None):
    """The reverse of the forward SDE's exact one-step discretization (the official ``ReverseDiffusionPredictor``).

    Forward, x(t) = a x(t_next) + b z with ``(a, b) = sde.transition_kernel(t_next, t)`` (VE: SMLD's
    a = 1, b^2 = std(t)^2 - std(t_next)^2; VP: DDPM's a = sqrt(1 - beta_i), b^2 = beta_i). Reversed:

        x_mean = x - (a - 1) x + b^2 s_theta(x, t)
        x      = x_mean + b z
    """
    a, b = sde.transition_kernel(t_next, t)
    x_mean = x - (a - 1.0) * x + b ** 2 * score_model(x, _expand(t, x))
    return x_mean + b * randn(x.shape, generator, x.device), x_mean


def ancestral_step(score_model, sde, x, t, t_next, generator=None):
    """Ancestral sampling: draw x(t_next) from q(x(t_next) | x(t), x(0) = Tweedie's estimate).

    With ``(a, b) = sde.transition_kernel(t_next, t)`` and s = std(t_next), the Gaussian posterior of
    the forward chain has

        x_mean = (x + b^2 s_theta(x, t)) / a,       variance b^2 s^2 / std(t)^2.

    For VP (a = sqrt(1 - beta_i), b^2 = beta_i) this is DDPM's sampling step,
    x_{i-1} = (x_i - beta_i / sqrt(1 - alpha_bar_i) eps_theta) / sqrt(1 - beta_i) + sigma_i z with
    eps_theta = -std s_theta and sigma_i^2 = beta_tilde_i; for VE it is SMLD's ancestral step.
    """
    a, b = sde.transition_kernel(t_next, t)
    x_mean = (x + b ** 2 * score_model(x, _expand(t, x))) / a
    std = b * sde.marginal_prob_std(t_next) / sde.marginal_prob_std(t)
    return x_mean + std * randn(x.shape, generator, x.device), x_mean


def langevin_corrector_step(score_model, sde, x, t, snr, generator=None):
    """One Langevin MCMC step at fixed t, targeting p_t (the corrector of predictor-corrector sampling).

    The step size is set so that the signal-to-noise ratio ||step s|| / ||sqrt(2 step) z|| is about ``snr``:

        step = 2 (snr sqrt(D) / mean_batch ||s_theta(x, t)||)^2
        x    = x + step s_theta(x, t) + sqrt(2 step) z

    (The tutorial's rule. The official code also multiplies the VP step by 1 - beta_i, a factor
    within 2% of 1 at 1,000 steps.)
    """
    grad = score_model(x, _expand(t, x))
    grad_norm = grad.flatten(1).norm(dim=1).mean()
    step = 2 * (snr * math.sqrt(x[0].numel()) / grad_norm) ** 2
    return x + step * grad + torch.sqrt(2 * step) * randn(x.shape, generator, x.device)


PREDICTORS = {"euler_maruyama": euler_maruyama_step, "reverse_diffusion": reverse_diffusion_step,
              "ancestral": ancestral_step}


# --- the one reverse-time loop ---------------------------------------------------------------------


@torch.no_grad()
def reverse_sde_sampler(score_model, sde, shape=None, *, predictor: str = "euler_maruyama", corrector: bool = False,
                        num_steps: int = 500, snr: float = 0.16, eps: float = 1e-3, z: torch.Tensor | None = None,
                        denoise: bool = False, device=None, generator: torch.Generator | None = None,
                        progress: bool = True, callback=None, step_hook=None, desc: str | None = None) -> torch.Tensor:
    """Predictor-corrector sampling of the reverse-time SDE: the loop every SDE sampler here runs.

        for t, t_next in the grid 1 = t_0 > t_1 > ... > t_N = eps:
            x = corrector(x, t)                      (one Langevin step, if ``corrector``)
            x, x_mean = predictor(x, t, t_next)      (Euler-Maruyama, reverse diffusion or ancestral)

    The corrector runs before the predictor (the paper's Algorithm 2 runs it after): the first
    Langevin step then acts on the prior draw at t = 1, and the last predictor step ends at eps, so
    the noise-free ``x_mean`` of that step is what is returned.

    Args:
        score_model: ``(x [B, ...], t [B]) -> score [B, ...]``.
        sde: the SDE (``VESDE``, ``VPSDE``, ``subVPSDE``): its prior, drift and diffusion.
        shape: ``(B, ...)`` of the batch to draw, e.g. ``(64, 1, 28, 28)``; may be omitted when ``z`` is given.
        predictor: ``"euler_maruyama"``, ``"reverse_diffusion"`` or ``"ancestral"`` (see :data:`PREDICTORS`).
        corrector: run one Langevin corrector step before each predictor step.
        num_steps: number of steps from t = 1 to t = eps (one score evaluation each, two with the corrector).
        snr: the corrector's signal-to-noise ratio.
        eps: the final time, in (0, 1); the score is ill-conditioned at t = 0.
        z: the starting points x(1) ``[B, ...]``; drawn from the prior if None.
        denoise: finish with Tweedie's formula at eps, E[x(0) | x(eps)] = (x + std(eps)^2 s) / alpha(eps)
            (one more score evaluation; the official code's optional last denoising step).
        device: defaults to the model's device.
        generator: a ``torch.Generator`` (CPU or ``device``) for reproducible samples.
        progress: show a ``tqdm.auto`` bar.
        callback: optional ``callback(step, t_next, x_mean)`` after every step (to record trajectories).
        step_hook: optional ``step_hook(step, t, t_next, x, one_step) -> (x, x_mean)`` that replaces the
            plain ``x, x_mean = one_step(x)``: a place to modify the state around a step or to redo it.
            ``one_step(x, condition=f)`` applies ``f`` to the state before each of the step's score
            evaluations (before the corrector and before the predictor): inpainting replaces the known
            pixels there (:func:`~sgm_helpers.controllable.inpaint`).
        desc: the progress bar's label.
    Returns:
        the last step's noise-free mean ``x_mean`` (or its denoised version): the final noise
        g sqrt(dt) z is much larger than the pixel quantization and would only blur the samples.
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    eps = check_eps(eps)
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {sorted(PREDICTORS)}, got {predictor!r}")
    if corrector:
        snr = check_positive(snr, "snr")
    device = model_device(score_model, device)
    predict = PREDICTORS[predictor]
    ts = _time_grid(num_steps, eps, device, sde.T)
    x = _initial_state(sde, shape, z, generator, device)
    x_mean = x
    name = desc or predictor.replace("_", "-")
    for i in tqdm(range(num_steps), disable=not progress, desc=name):
        t, t_next = ts[i], ts[i + 1]

        def one_step(x, condition=None):
            if corrector:
                x = langevin_corrector_step(score_model, sde, x if condition is None else condition(x), t, snr,
                                            generator)
            return predict(score_model, sde, x if condition is None else condition(x), t, t_next, generator)

        x, x_mean = one_step(x) if step_hook is None else step_hook(i, t, t_next, x, one_step)
        _check_step(x, i, float(t), name)
        if callback is not None:
            callback(i, float(t_next), x_mean)
    if denoise:
        x_mean = sde.tweedie_denoise(x_mean, ts[-1], score_model(x_mean, _expand(ts[-1], x_mean)))
    return x_mean


def euler_maruyama_sampler(score_model, sde, shape=None, *, num_steps: int = 500, eps: float = 1e-3, device=None,
                           generator: torch.Generator | None = None, progress: bool = True,
                           callback=None, z: torch.Tensor | None = None, denoise: bool = False) -> torch.Tensor:
    """Solve the reverse-time SDE with the Euler-Maruyama method (see :func:`euler_maruyama_step`):

        x_mean = x - [f(x, t) - g(t)^2 s_theta(x, t)] dt,     x = x_mean + g(t) sqrt(dt) z

    ``num_steps`` score evaluations. Arguments as :func:`reverse_sde_sampler`; returns the last noise-free mean.
    """
    return reverse_sde_sampler(score_model, sde, shape, predictor="euler_maruyama", num_steps=num_steps, eps=eps,
                               z=z, denoise=denoise, device=device, generator=generator, progress=progress,
                               callback=callback, desc="Euler-Maruyama")


def pc_sampler(score_model, sde, shape=None, *, num_steps: int = 500, snr: float = 0.16, eps: float = 1e-3,
               device=None, generator: torch.Generator | None = None, progress: bool = True,
               callback=None, z: torch.Tensor | None = None, denoise: bool = False,
               predictor: str = "euler_maruyama") -> torch.Tensor:
    """Predictor-corrector sampling: one Langevin corrector step, then one predictor step (Euler-Maruyama).

    Two score evaluations per step. (The tutorial's earlier version had the two labels swapped:
    the Langevin step is the corrector.) Arguments as :func:`reverse_sde_sampler`.
    """
    return reverse_sde_sampler(score_model, sde, shape, predictor=predictor, corrector=True, num_steps=num_steps,
                               snr=snr, eps=eps, z=z, denoise=denoise, device=device, generator=generator,
                               progress=progress, callback=callback, desc="predictor-corrector")


def ancestral_sampler(score_model, sde, shape=None, *, num_steps: int = 1000, eps: float = 1e-3, device=None,
                      generator: torch.Generator | None = None, progress: bool = True,
                      callback=None, z: torch.Tensor | None = None, denoise: bool = False) -> torch.Tensor:
    """Ancestral sampling (:func:`ancestral_step`), which for the VP SDE is DDPM's sampler.

    ``num_steps`` score evaluations. Arguments as :func:`reverse_sde_sampler`.
    """
    return reverse_sde_sampler(score_model, sde, shape, predictor="ancestral", num_steps=num_steps, eps=eps, z=z,
                               denoise=denoise, device=device, generator=generator, progress=progress,
                               callback=callback, desc="ancestral")


# --- the probability-flow ODE ----------------------------------------------------------------------


def ode_sampler(score_model, sde, shape=None, *, eps: float = 1e-3, device=None,
                generator: torch.Generator | None = None, progress: bool = True, rtol: float = 1e-5,
                atol: float = 1e-5, z: torch.Tensor | None = None, method: str = "RK45", callback=None,
                denoise: bool = False):
    """Solve the probability-flow ODE dx/dt = f(x, t) - 1/2 g(t)^2 s_theta(x, t) from t = 1 to eps.

    The ODE is deterministic: the same latent ``z`` always decodes to the same sample, and
    :func:`~sgm_helpers.likelihood.ode_likelihood` (the same ODE run forward) inverts it.
    Integrated by ``scipy.integrate.solve_ivp`` (adaptive RK45 by default); the whole batch is one
    ODE state of B*D float64 numbers, and only that state crosses between NumPy and torch.
    There is no step count: the solver picks its steps to meet ``rtol`` and ``atol``.

    Args:
        score_model, sde, eps, device, generator, progress, denoise: as :func:`reverse_sde_sampler`.
        shape: ``(B, ...)``; may be omitted when ``z`` is given.
        rtol, atol: the solver's relative and absolute error tolerances.
        z: latent codes ``[B, ...]`` at t = 1 to decode; drawn from the prior if None.
        method: any ``solve_ivp`` method ("RK45", "RK23", "DOP853", ...).
        callback: optional ``callback(evaluation, t, x)`` at every evaluation of the drift (the solver's
            trial points, not a fixed grid).
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
        t_batch = torch.full((shape[0],), t, device=device)
        with torch.inference_mode():
            out = sde.reverse_drift(xt, t_batch, score_model(xt, t_batch), probability_flow=True)
        if callback is not None:
            callback(nfe, t, xt)
        if progress:
            bar.n = round(1000 * (1.0 - t) / (1.0 - eps))
            bar.set_postfix_str(f"t={t:.4f}, score evaluations={nfe}")
        out = out.reshape(-1).cpu().numpy().astype(np.float64)
        if not np.isfinite(out).all():  # scipy would keep shrinking its step on NaN instead of stopping
            raise FloatingPointError(f"ode_sampler: the score model returned NaN or inf at t = {t:.4g} "
                                     f"(evaluation {nfe})")
        return out

    try:
        res = solve_ivp(drift, (sde.T, eps), x.reshape(-1).double().cpu().numpy(), rtol=rtol, atol=atol,
                        method=method, t_eval=[eps])
    finally:
        bar.close()
    if not res.success:
        raise RuntimeError(f"ode_sampler: the ODE solver failed: {res.message}")
    samples = torch.from_numpy(res.y[:, -1]).to(device, torch.float32).view(shape)
    if denoise:
        with torch.inference_mode():
            t_eps = torch.full((shape[0],), eps, device=device)
            samples = sde.tweedie_denoise(samples, t_eps, score_model(samples, t_eps))
        nfe += 1
    if not torch.isfinite(samples).all():
        raise FloatingPointError("ode_sampler: the solution contains NaN or inf")
    return samples, nfe


# --- EDM's Heun sampler in the noise level ------------------------------------------------------------


def edm_sigma_steps(sde, num_steps: int = 18, *, eps: float = 1e-3, rho: float = 7.0, device=None) -> torch.Tensor:
    """EDM's noise levels (Karras et al. 2022, eq. 5), from sigma(1) down to sigma(eps), then 0.

        sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,  i = 0 .. N - 1
        sigma_N = 0

    with N = ``num_steps``, sigma_max = sigma(1) and sigma_min = sigma(eps), sigma(t) = std(t) / alpha(t)
    (:meth:`SDE.sigma_of_t`; for VE simply std(t)). A large ``rho`` puts the steps close together at
    small sigma, where the image details form (rho = 1: evenly spaced in sigma; rho -> infinity: evenly
    spaced in log sigma). Returns a float64 tensor of N + 1 levels.
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    eps = check_eps(eps)
    rho = check_positive(rho, "rho")
    sigma_max = float(sde.sigma_of_t(torch.tensor(sde.T, dtype=torch.float64)))
    sigma_min = float(sde.sigma_of_t(torch.tensor(eps, dtype=torch.float64)))
    frac = torch.linspace(0.0, 1.0, num_steps, dtype=torch.float64, device=device)
    sigmas = (sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


@torch.no_grad()
def heun_sampler(score_model, sde, shape=None, *, num_steps: int = 18, eps: float = 1e-3, rho: float = 7.0,
                 s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
                 z: torch.Tensor | None = None, device=None, generator: torch.Generator | None = None,
                 progress: bool = True, callback=None) -> torch.Tensor:
    """EDM's sampler (Karras et al. 2022, Algorithms 1 and 2): Heun's method in the noise level sigma.

    In the rescaled state x_hat = x / alpha(t), which is x(0) plus noise of std sigma(t), the
    probability-flow ODE of every SDE reads

        dx_hat/dsigma = d(x_hat, sigma) = -sigma alpha(t) s_theta(alpha(t) x_hat, t),    t = t(sigma)

    (for VE, alpha = 1 and x_hat = x). On the levels sigma_0 > ... > sigma_{N-1} > sigma_N = 0 of
    :func:`edm_sigma_steps`, one step from sigma_i to sigma_{i+1} is

        x'      = x + (sigma_{i+1} - sigma_i) d(x, sigma_i)                            (Euler)
        x_{i+1} = x + (sigma_{i+1} - sigma_i) (d(x, sigma_i) + d(x', sigma_{i+1})) / 2   (Heun's correction)

    The last step, to sigma_N = 0, keeps the Euler step: x_N = x_hat + sigma_{N-1}^2 alpha s_theta, the
    denoised mean E[x(0) | x(eps)] (Tweedie's formula). So N steps cost 2N - 1 score evaluations
    (18 steps: 35).

    Stochastic variant (Algorithm 2), on when ``s_churn > 0``: before each step whose sigma_i lies in
    [``s_tmin``, ``s_tmax``], noise is added to raise the level to sigma_hat = (1 + gamma) sigma_i,

        gamma = min(s_churn / N, sqrt(2) - 1),     x <- x + sqrt(sigma_hat^2 - sigma_i^2) s_noise z,

    and the step starts from sigma_hat. This re-injects the noise the reverse SDE would add and so
    corrects errors of an imperfect score model, as Euler-Maruyama does, at the same 2N - 1 cost.
    sigma_hat is capped at sigma_max = sigma(1), the largest level the model was trained on.

    For VP and sub-VP with the paper's betas, sigma(1) = std(1) / alpha(1) is about 153 (VE with sigma = 25:
    9.8), so the same number of steps covers a wider range of noise levels and is less accurate: on the
    three-mode toy with the exact score, 18 steps miss the exact ODE solution by about twice as much for VP
    as for VE (``tests/test_truth_family.py`` states the measured bias).

    Args:
        score_model, sde, eps, device, generator, progress: as :func:`reverse_sde_sampler`.
        shape: ``(B, ...)``; may be omitted when ``z`` is given.
        num_steps: N, the number of noise levels (>= 1).
        rho: the schedule's exponent (EDM: 7).
        s_churn, s_tmin, s_tmax, s_noise: EDM's stochasticity settings (noise levels in sigma units);
            the default ``s_churn = 0`` is the deterministic sampler.
        z: latent codes x(1) ``[B, ...]`` (distributed as the prior); drawn if None.
        callback: optional ``callback(step, sigma_next, x_hat)`` after every step.
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

    def t_of(sigma: float) -> torch.Tensor:
        return sde.t_of_sigma(torch.tensor(sigma, dtype=torch.float64))

    def d(x_, sigma: float) -> torch.Tensor:
        t = t_of(sigma)
        alpha = float(sde.mean_coeff(t))
        return -sigma * alpha * score_model(alpha * x_, t.to(device, torch.float32).expand(batch))

    x = x / float(sde.mean_coeff(torch.tensor(sde.T, dtype=torch.float64)))
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
        _check_step(x, i, float(t_of(sigma)), "heun_sampler")
        if callback is not None:
            callback(i, sigma_next, x)
    return x


# --- DPM-Solver++ in the log signal-to-noise ratio --------------------------------------------------------


def lambda_steps(sde, num_steps: int, *, eps: float = 1e-3, device=None) -> torch.Tensor:
    """Times from T down to eps, evenly spaced in lambda(t) = log(alpha(t) / std(t)) (half the log SNR).

    lambda = -log sigma(t) with EDM's sigma = std / alpha, so the times come from :meth:`SDE.t_of_sigma`.
    Returns ``num_steps + 1`` float64 times.
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    eps = check_eps(eps)
    ends = torch.tensor([sde.T, eps], dtype=torch.float64)
    lam_max, lam_min = (-torch.log(sde.sigma_of_t(ends))).tolist()
    lambdas = torch.linspace(lam_max, lam_min, num_steps + 1, dtype=torch.float64)
    ts = sde.t_of_sigma(torch.exp(-lambdas))
    ts[0], ts[-1] = sde.T, eps  # exactly, not through the round trip
    return ts.to(device) if device is not None else ts


@torch.no_grad()
def dpm_solver_sampler(score_model, sde, shape=None, *, num_steps: int = 20, eps: float = 1e-3,
                       z: torch.Tensor | None = None, device=None, generator: torch.Generator | None = None,
                       progress: bool = True, callback=None, schedule: str = "logsnr",
                       rho: float = 7.0) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), a multistep solver of the probability-flow ODE built for it.

    With x(t) = alpha_t x(0) + std_t z, the ODE is exactly linear in x apart from the denoised estimate
    D(x, t) = (x + std_t^2 s_theta(x, t)) / alpha_t (Tweedie). In lambda = log(alpha / std) the linear part
    integrates in closed form; from t_{i-1} to t_i, with h_i = lambda_i - lambda_{i-1},

        x_i = (std_i / std_{i-1}) x_{i-1} - alpha_i (e^(-h_i) - 1) D_i

    where the first step uses D_i = D(x_{i-1}, t_{i-1}) and every later one extrapolates from the last two
    estimates (the "2M" of the name),

        D_i = (1 + 1/(2 r_i)) D(x_{i-1}, t_{i-1}) - 1/(2 r_i) D(x_{i-2}, t_{i-2}),    r_i = h_{i-1} / h_i.

    The times t_0 = 1 > ... > t_{N-1} = eps are evenly spaced in lambda (``schedule="logsnr"``, the authors'
    choice, :func:`lambda_steps`) or placed at EDM's noise levels (``schedule="edm"``, :func:`edm_sigma_steps`
    with exponent ``rho``); a last, first-order step from eps to std = 0 (lambda = infinity) returns
    D(x_{N-1}, eps), the denoised mean, as :func:`heun_sampler` does. ``num_steps`` = N is the number of score evaluations. For VE (alpha = 1) the
    update is x_i = rho x_{i-1} + (1 - rho) D_i with rho = std_i / std_{i-1}: DDIM's step, with a second-order D.

    Args:
        score_model, sde, eps, device, generator, progress: as :func:`reverse_sde_sampler`.
        shape: ``(B, ...)``; may be omitted when ``z`` is given.
        num_steps: score evaluations (>= 1; one evaluation is a single denoising of the prior draw).
        z: latent codes x(1) ``[B, ...]`` (distributed as the prior); drawn if None.
        callback: optional ``callback(step, t_next, x)`` after every step (``t_next = 0`` for the last).
        schedule, rho: where the steps go (see above). On the MNIST models, chosen on held-out images at three
            seeds: ``"edm"`` at 10 evaluations, ``"logsnr"`` at 20 (MODEL_CARD.md, DPM-Solver's step schedule).
    Returns:
        samples with ``shape`` (or ``z``'s shape): the denoised estimate at eps.
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    eps = check_eps(eps)
    if schedule == "logsnr":
        ts = lambda_steps(sde, num_steps - 1, eps=eps) if num_steps > 1 else torch.tensor([sde.T], dtype=torch.float64)
    elif schedule == "edm":
        ts = sde.t_of_sigma(edm_sigma_steps(sde, num_steps, eps=eps, rho=rho)[:-1])
        ts[0] = sde.T
    else:
        raise ValueError(f"schedule must be 'logsnr' or 'edm', got {schedule!r}")
    device = model_device(score_model, device)
    x = _initial_state(sde, shape, z, generator, device)
    alpha, std = sde.mean_coeff(ts), sde.marginal_prob_std(ts)
    lam = torch.log(alpha / std)
    previous = None  # (D, h) of the step before
    for i in tqdm(range(num_steps), disable=not progress, desc="DPM-Solver++(2M)"):
        t = ts[i].to(device, torch.float32).expand(x.shape[0])
        denoised = sde.tweedie_denoise(x, t, score_model(x, t))
        if i == num_steps - 1:  # to std = 0: e^(-h) = 0, so x = D
            x, t_next = denoised, 0.0
        else:
            h = float(lam[i + 1] - lam[i])
            d = denoised
            if previous is not None:
                r = previous[1] / h
                d = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * previous[0]
            x = float(std[i + 1] / std[i]) * x - float(alpha[i + 1] * math.expm1(-h)) * d
            previous, t_next = (denoised, h), float(ts[i + 1])
        _check_step(x, i, float(ts[i]), "dpm_solver_sampler")
        if callback is not None:
            callback(i, t_next, x)
    return x


# --- one registry of samplers by name ------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler in :data:`SAMPLERS`: its function, a label for plots and logs, its step argument, and settings
    of the function that this entry fixes (the caller's own keyword arguments override them)."""

    fn: Callable
    label: str
    default_steps: int | None  # None: adaptive, no step count
    cost: str  # score evaluations for N steps, in words
    options: dict = field(default_factory=dict, compare=False)

    def call(self, score_model, sde, shape=None, *, num_steps: int | None = None, **kwargs):
        """Run the sampler; returns only the samples (``ode_sampler``'s NFE is dropped: :func:`sample` counts)."""
        kwargs = {**self.options, **kwargs}
        if num_steps is not None:
            if self.default_steps is None:
                raise ValueError(f"the {self.label} sampler is adaptive and takes no num_steps")
            kwargs["num_steps"] = num_steps
        out = self.fn(score_model, sde, shape, **kwargs)
        return out[0] if isinstance(out, tuple) else out


SAMPLERS = {
    "em": SamplerSpec(euler_maruyama_sampler, "Euler-Maruyama", 500, "N"),
    "pc": SamplerSpec(pc_sampler, "predictor-corrector", 500, "2N"),
    "ancestral": SamplerSpec(ancestral_sampler, "ancestral (DDPM for VP)", 1000, "N"),
    "ode": SamplerSpec(ode_sampler, "probability-flow ODE (RK45)", None, "adaptive"),
    "heun": SamplerSpec(heun_sampler, "Heun (EDM)", 18, "2N - 1"),
    # EDM's stochastic sampler: s_churn = 80 puts the cap gamma = sqrt(2) - 1 on every one of up to 193 steps; 50
    # steps and churning everywhere were the best of the settings tried in benchmarks/RESULTS.md
    "heun-churn": SamplerSpec(heun_sampler, "Heun (EDM), churned", 50, "2N - 1", {"s_churn": 80.0}),
    "dpm2m": SamplerSpec(dpm_solver_sampler, "DPM-Solver++(2M)", 20, "N"),
}


def get_sampler(name: str) -> SamplerSpec:
    """The :class:`SamplerSpec` registered as ``name`` (one of :data:`SAMPLERS`)."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {name!r}")
    return SAMPLERS[name]


def sample(name: str, score_model, sde, shape=None, *, num_steps: int | None = None,
           **kwargs) -> tuple[torch.Tensor, int]:
    """Draw samples with the sampler registered as ``name``; returns ``(samples, score evaluations)``.

    The evaluations are counted by wrapping ``score_model`` in a :class:`CountingModel`, the same way
    for every sampler. ``num_steps`` (None: the sampler's default) and ``kwargs`` (``z``, ``generator``,
    ``eps``, ``snr``, ``s_churn``, ``progress``, ``callback``, ...) are passed on.
    """
    spec = get_sampler(name)
    counted = CountingModel(score_model)
    x = spec.call(counted, sde, shape, num_steps=num_steps, **kwargs)
    return x, counted.calls
