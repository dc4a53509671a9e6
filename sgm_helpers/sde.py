"""The variance-exploding SDE of the tutorial.

    dx = sigma^t dw,    t in [0, 1].

There is no drift, so x(t) given x(0) is Gaussian with mean x(0) and variance

    std(t)^2 = int_0^t sigma^(2s) ds = (sigma^(2t) - 1) / (2 ln sigma).

At t = 1 the variance is (sigma^2 - 1) / (2 ln sigma); for sigma = 25 that is std(1) = 9.845,
much wider than the [0, 1] pixel range, so p_1 is close to N(0, std(1)^2 I), the prior.
"""

from __future__ import annotations

import math

import torch

from .utils import check_shape, randn


class VESDE:
    """The tutorial's SDE ``dx = sigma^t dw`` on ``t in [0, 1]``.

    ``t`` may be a Python float or a tensor of any shape; results are float tensors on
    ``t``'s device (or on ``device`` for a float ``t``).
    """

    T = 1.0

    def __init__(self, sigma: float = 25.0):
        if (not isinstance(sigma, (int, float)) or isinstance(sigma, bool)
                or not math.isfinite(sigma) or sigma <= 1.0):
            raise ValueError(f"sigma must be a finite number > 1 (the tutorial uses 25), got {sigma!r}")
        self.sigma = float(sigma)
        self.log_sigma = math.log(self.sigma)

    def __repr__(self) -> str:
        return f"VESDE(sigma={self.sigma:g})"

    @staticmethod
    def _as_tensor(t, device=None) -> torch.Tensor:
        if isinstance(t, torch.Tensor):
            return t if t.is_floating_point() else t.to(torch.get_default_dtype())
        return torch.as_tensor(t, dtype=torch.get_default_dtype(), device=device)

    def marginal_prob_std(self, t, device=None) -> torch.Tensor:
        """std(t) = sqrt((sigma^(2t) - 1) / (2 ln sigma)), the std of p_0t(x(t) | x(0)).

        Computed with ``expm1`` so that it stays accurate for small t (std(t) ~ sqrt(t)).
        """
        t = self._as_tensor(t, device)
        return torch.sqrt(torch.expm1(2.0 * self.log_sigma * t) / (2.0 * self.log_sigma))

    def diffusion_coeff(self, t, device=None) -> torch.Tensor:
        """g(t) = sigma^t, the diffusion coefficient of the SDE."""
        t = self._as_tensor(t, device)
        return torch.exp(self.log_sigma * t)

    def marginal_prob(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the perturbation kernel p_0t(x(t) | x(0)) = N(x(0), std(t)^2 I)."""
        return x0, self.marginal_prob_std(t, device=x0.device)

    def prior_sampling(self, shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Draw x(1) ~ N(0, std(1)^2 I) of the given ``shape`` ``[B, ...]``."""
        z = randn(check_shape(shape), generator=generator, device=device)
        return z * self.marginal_prob_std(1.0, device=z.device)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, std(1)^2 I), summed over all non-batch dims: shape ``[B]``.

            log p_1(z) = -D/2 log(2 pi std(1)^2) - |z|^2 / (2 std(1)^2),   D = z[0].numel().
        """
        if z.dim() < 2:
            raise ValueError(f"z must have shape [B, ...] with at least one data dim, got {tuple(z.shape)}")
        var = self.marginal_prob_std(1.0, device=z.device).to(z.dtype) ** 2
        d = z[0].numel()
        return -0.5 * d * torch.log(2 * math.pi * var) - z.flatten(1).pow(2).sum(1) / (2 * var)
