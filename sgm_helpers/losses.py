"""Denoising score matching, the training objective."""

from __future__ import annotations

import torch

from .utils import check_eps


def dsm_loss(model, x: torch.Tensor, marginal_prob_std, eps: float = 1e-5,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The weighted denoising score matching loss, with lambda(t) = std(t)^2.

        L = E_{t ~ U(eps, 1)} E_{z ~ N(0, I)} || std(t) s_theta(x + std(t) z, t) + z ||^2

    This is lambda(t) || s_theta(x(t), t) - grad log p_0t(x(t) | x(0)) ||^2 with
    grad log p_0t = -z / std(t): the weighting makes every t contribute on the same scale.
    Summed over the non-batch dims, averaged over the batch.

    Args:
        model: score model ``(x [B, ...], t [B]) -> [B, ...]``.
        x: a batch of data ``[B, ...]``.
        marginal_prob_std: t -> std(t).
        eps: smallest time sampled, in (0, 1); std(t) -> 0 at t = 0, where the loss is ill-conditioned.
        generator: optional ``torch.Generator`` on ``x``'s device for t and z.
    Returns:
        a scalar tensor.
    """
    eps = check_eps(eps)
    if x.dim() < 2:
        raise ValueError(f"x must have shape [B, ...] with at least one data dim, got {tuple(x.shape)}")
    t = torch.rand(x.shape[0], device=x.device, generator=generator) * (1.0 - eps) + eps
    z = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    std = marginal_prob_std(t).to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    score = model(x + std * z, t)
    return (score * std + z).pow(2).flatten(1).sum(1).mean()
