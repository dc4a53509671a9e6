"""Langevin dynamics: sampling from p(x) with nothing but its score grad_x log p(x).

The Langevin diffusion dx = grad_x log p(x) dt + sqrt(2) dw has p as its stationary distribution.
Discretised with step size ``step_size`` (written epsilon), with z_k ~ N(0, I):

    x_{k+1} = x_k + epsilon * grad_x log p(x_k) + sqrt(2 epsilon) z_k.

This is the convention of the tutorial's corrector step (and of :func:`~sgm_helpers.samplers.pc_sampler`).
Song & Ermon (2019) write the same update as x + (alpha / 2) score + sqrt(alpha) z, i.e. alpha = 2 epsilon.

Small epsilon and many steps give samples from p up to an O(epsilon) bias (no Metropolis
correction here). But a particle only finds the modes it can reach: separated modes exchange
particles very rarely, so the fraction of particles in each mode stays the fraction that started
in its basin, whatever the true weights. Annealed Langevin dynamics fixes that by starting on the
smooth, heavily noised density (where all modes are connected) and lowering the noise step by step.

Too large a step fails in a way worth seeing. On a Gaussian N(mu, s^2 I) one update is the linear
recursion x' - mu = (1 - eps / s^2)(x - mu) + sqrt(2 eps) z: for eps > s^2 each step jumps past the
mean (the factor is negative) and for eps > 2 s^2 it grows the distance (|factor| > 1), so the chain
diverges. When the iterates become NaN or inf both functions raise :class:`DivergenceError`, which
carries what was computed up to then, so that a caller can show the blow-up instead of a traceback.
"""

from __future__ import annotations

import math

import torch

from .utils import check_positive, check_positive_int, randn


def _check_x0(x0) -> None:
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point():
        raise ValueError("x0 must be a floating-point tensor [B, ...]")
    if x0.dim() < 2 or x0.shape[0] < 1:
        raise ValueError(f"x0 must have shape [B, ...] with a batch dim and at least one data dim, "
                         f"got {tuple(x0.shape)}")
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or inf values")


class DivergenceError(FloatingPointError):
    """Langevin iterates became NaN or inf. Keeps the run up to the last finite state.

    Attributes:
        step: how many updates completed before the failing one (over all noise levels, for the
            annealed version); the failing update is number ``step`` counting from 0.
        x: the last finite state ``[B, ...]`` (``x0`` itself if the first update failed).
        trajectory: with ``return_trajectory=True``, the finite iterates ``[step + 1, B, ...]``
            (``[0]`` is ``x0``, ``[-1]`` is ``x``); otherwise None.
    """

    def __init__(self, message: str, *, step: int, x: torch.Tensor, trajectory: torch.Tensor | None):
        super().__init__(message)
        self.step, self.x, self.trajectory = step, x, trajectory


def _langevin_step(x, score, step: float, generator) -> torch.Tensor:
    if score.shape != x.shape:
        raise ValueError(f"score_fn returned shape {tuple(score.shape)} for x of shape {tuple(x.shape)}")
    return x + step * score + math.sqrt(2.0 * step) * randn(x.shape, generator, x.device, x.dtype)


def _check_finite(x_new, x, trajectory, completed: int, where: str) -> None:
    if not torch.isfinite(x_new).all():
        raise DivergenceError(f"the samples became NaN or inf at {where}; the step size is too large "
                              "for this score (or the score itself is not finite)", step=completed, x=x,
                              trajectory=torch.stack(trajectory) if trajectory is not None else None)


@torch.no_grad()
def langevin_dynamics(score_fn, x0: torch.Tensor, step_size: float, n_steps: int, *,
                      generator: torch.Generator | None = None, return_trajectory: bool = False):
    """Run ``n_steps`` of Langevin dynamics x <- x + eps * score_fn(x) + sqrt(2 eps) z from ``x0``.

    Args:
        score_fn: ``x [B, ...] -> grad_x log p(x) [B, ...]``, the score of the target (no noise level).
            Called under ``torch.no_grad()``; a score computed by autograd must enable it itself.
        x0: starting points ``[B, ...]`` (any data shape); not modified.
        step_size: eps > 0. The stationary distribution is p up to an O(eps) error (for a Gaussian
            with variance v the chain's variance is v / (1 - eps / (2 v))), so eps should be small
            next to the smallest variance of p.
        n_steps: number of updates, >= 1.
        generator: a ``torch.Generator`` for reproducible noise.
        return_trajectory: also return every iterate.
    Returns:
        the final ``x [B, ...]``, or with ``return_trajectory=True`` the tensor of all iterates
        ``[n_steps + 1, B, ...]`` (``[0]`` is ``x0``, ``[-1]`` the final x).
    Raises:
        DivergenceError (a ``FloatingPointError``) naming the step if the samples become NaN or inf;
        its ``.trajectory`` (with ``return_trajectory=True``) and ``.x`` hold the run up to then.
    """
    _check_x0(x0)
    step_size = check_positive(step_size, "step_size")
    n_steps = check_positive_int(n_steps, "n_steps")
    x = x0.clone()
    trajectory = [x] if return_trajectory else None
    for k in range(n_steps):
        x_new = _langevin_step(x, score_fn(x), step_size, generator)
        _check_finite(x_new, x, trajectory, k, f"step {k}")
        x = x_new
        if trajectory is not None:
            trajectory.append(x)
    return torch.stack(trajectory) if trajectory is not None else x


def _check_sigmas(sigmas) -> list[float]:
    try:
        values = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
    except (TypeError, ValueError):
        raise ValueError(f"sigmas must be a 1-D sequence of numbers, got {sigmas!r}") from None
    if not values:
        raise ValueError("sigmas must hold at least one noise level")
    if any(not math.isfinite(s) or s <= 0 for s in values):
        raise ValueError(f"sigmas must all be finite and > 0, got {values}")
    if any(a <= b for a, b in zip(values, values[1:])):
        raise ValueError(f"sigmas must be strictly decreasing (largest noise first), got {values}")
    return values


@torch.no_grad()
def annealed_langevin_dynamics(score_fn, x0: torch.Tensor, sigmas, step_size: float, n_steps_each: int, *,
                               generator: torch.Generator | None = None, return_trajectory: bool = False):
    """Annealed Langevin dynamics (Song & Ermon, 2019): Langevin steps at decreasing noise levels.

    For each noise level sigma_i in ``sigmas`` (decreasing, sigma_1 > ... > sigma_L), run
    ``n_steps_each`` Langevin steps on p_{sigma_i} = p convolved with N(0, sigma_i^2 I), with

        eps_i = step_size * sigma_i^2 / sigma_L^2,
        x <- x + eps_i * score_fn(x, sigma_i) + sqrt(2 eps_i) z.

    The step grows with sigma_i^2 so that the ratio of the score step to the noise is the same at
    every level (the score of p_sigma scales like 1 / sigma). At large sigma the modes of
    p_sigma overlap, particles move freely between them and settle in proportion to the weights
    (adding noise does not change a mode's mass); the later, smaller levels sharpen each mode.
    ``step_size`` is the step at the last level; Song & Ermon's epsilon is ``2 * step_size``.

    Args:
        score_fn: the noise-conditional score ``(x [B, ...], sigma [B]) -> grad_x log p_sigma(x) [B, ...]``;
            ``sigma`` is a ``[B]`` tensor on x's device holding sigma_i for every example (as the
            samplers pass ``t``). ``GaussianMixture.score`` is such a function. Called under
            ``torch.no_grad()``.
        x0: starting points ``[B, ...]``; usually noise of scale sigma_1.
        sigmas: the noise levels, a 1-D sequence or tensor, strictly decreasing, all > 0.
        step_size: > 0, the step eps_L at the smallest level.
        n_steps_each: Langevin steps per level, >= 1.
        generator, return_trajectory: as :func:`langevin_dynamics`; the trajectory has
            ``len(sigmas) * n_steps_each + 1`` entries.
    Raises:
        DivergenceError (a ``FloatingPointError``) naming the level and step if the samples become
        NaN or inf; it holds the run up to then, as in :func:`langevin_dynamics`.
    """
    _check_x0(x0)
    sigmas = _check_sigmas(sigmas)
    step_size = check_positive(step_size, "step_size")
    n_steps_each = check_positive_int(n_steps_each, "n_steps_each")
    x = x0.clone()
    trajectory = [x] if return_trajectory else None
    for i, sigma in enumerate(sigmas):
        step = step_size * sigma**2 / sigmas[-1] ** 2
        sigma_batch = torch.full((x.shape[0],), sigma, device=x.device, dtype=x.dtype)
        for k in range(n_steps_each):
            x_new = _langevin_step(x, score_fn(x, sigma_batch), step, generator)
            _check_finite(x_new, x, trajectory, i * n_steps_each + k,
                          f"noise level {i} (sigma = {sigma:.4g}), step {k}")
            x = x_new
            if trajectory is not None:
                trajectory.append(x)
    return torch.stack(trajectory) if trajectory is not None else x
