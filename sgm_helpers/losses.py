"""Training objectives: denoising score matching (with likelihood weighting, optionally class-conditional),
sliced score matching, and the cross-entropy of a noise-conditional classifier."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .models import NULL_CLASS, NUM_CLASSES
from .sde import SDE, sde_of
from .utils import batch_view, check_eps, randn


def dsm_loss(model, x: torch.Tensor, sde, eps: float = 1e-5, generator: torch.Generator | None = None, *,
             likelihood_weighting: bool = False, importance_sampling: bool = False, uniform_share: float = 0.0,
             y: torch.Tensor | None = None, p_uncond: float = 0.0) -> torch.Tensor:
    """The weighted denoising score matching loss, averaged over the batch.

    With x(t) = alpha(t) x + std(t) z drawn from the perturbation kernel, whose score is
    grad log p_0t(x(t) | x) = -z / std(t), and a weight lambda(t):

        L = E_t E_z lambda(t) || s_theta(x(t), t) + z / std(t) ||^2
          = E_t E_z lambda(t) / std(t)^2 || std(t) s_theta(x(t), t) + z ||^2

    - default, lambda(t) = std(t)^2 (the tutorial): every t contributes on the same scale,
      L = E_{t ~ U(eps, 1)} || std s_theta + z ||^2;
    - ``likelihood_weighting``, lambda(t) = g(t)^2 (Song, Durkan, Murray and Ermon 2021): then the loss is,
      up to a constant, an upper bound on the negative log-likelihood of the SDE model;
    - with ``importance_sampling`` too, t is drawn with density g^2 / (Z std^2) instead of uniformly
      (:meth:`SDE.sample_importance_time`), which leaves the weight a constant: the same expectation,
      L = Z / (1 - eps) E || std s_theta + z ||^2, with far lower variance;
    - and with ``uniform_share`` = a > 0, a share a of the draws (each example with probability a) takes t
      uniform instead, with the same weight: t ~ (1 - a) g^2 / (Z std^2) + a / (1 - eps). That is no longer
      an estimate of the likelihood-weighted loss but a mixture of two objectives,
      L = (1 - a) L_likelihood + a Z / (1 - eps) L_default, whose default part keeps the large noise levels,
      which likelihood weighting all but ignores, trained.

    Class-conditional (``y`` given): the model is called as ``model(x(t), t, y)`` and learns
    grad log p_t(x | y). With ``p_uncond`` > 0 each label is replaced by the null class (index
    ``model.null_class``, default :data:`~sgm_helpers.models.NULL_CLASS` = 10) with that probability, so the
    same network also learns the unconditional score: classifier-free guidance's label dropout.
    Without ``y`` nothing changes (the same random draws, the same value).

    Args:
        model: score model ``(x [B, ...], t [B]) -> [B, ...]``.
        x: a batch of data ``[B, ...]``.
        sde: an :class:`~sgm_helpers.sde.SDE`, or the tutorial's ``marginal_prob_std`` function t -> std(t):
            a bound ``sde.marginal_prob_std`` stands for its SDE; any other function means a drift-free SDE
            (mean x, as for VE) and allows only the default weighting.
        eps: smallest time sampled, in (0, 1); std(t) -> 0 at t = 0, where the loss is ill-conditioned.
        generator: optional ``torch.Generator`` on ``x``'s device for t and z.
        likelihood_weighting, importance_sampling, uniform_share: see above (a share in [0, 1], which
            needs ``importance_sampling``).
        y: optional class labels ``[B]`` (integers in 0..null_class - 1) for a class-conditional model.
        p_uncond: probability in [0, 1] of dropping each label to the null class (needs ``y``).
    Returns:
        a scalar tensor: the per-example loss summed over the data dims, averaged over the batch.
    """
    sde = sde_of(sde) or sde
    eps = _check_loss_args(x, sde, eps, likelihood_weighting, importance_sampling, uniform_share)
    null_class = getattr(model, "null_class", NULL_CLASS)
    if y is not None:
        y = check_labels(y, x, null_class)
    if (isinstance(p_uncond, bool) or not isinstance(p_uncond, (int, float)) or not math.isfinite(p_uncond)
            or not 0.0 <= p_uncond <= 1.0):
        raise ValueError(f"p_uncond must be a probability in [0, 1], got {p_uncond!r}")
    if p_uncond > 0 and y is None:
        raise ValueError("p_uncond > 0 drops labels to the null class: it needs labels y=")
    u = torch.rand(x.shape[0], device=x.device, generator=generator)
    z = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    if importance_sampling:
        t = sde.sample_importance_time(u, eps)
        if uniform_share > 0:
            uniform = torch.rand(x.shape[0], device=x.device, generator=generator) < uniform_share
            t = torch.where(uniform, u * (1.0 - eps) + eps, t)
        weight = sde.importance_normalizer(eps) / (1.0 - eps)
    else:
        t = u * (1.0 - eps) + eps
        weight = sde.diffusion_coeff(t) ** 2 / sde.marginal_prob_std(t) ** 2 if likelihood_weighting else 1.0
    x_t, std = _perturb(x, sde, t, z)
    if y is None:
        score = model(x_t, t)
    else:
        if p_uncond > 0:
            drop = torch.rand(x.shape[0], device=x.device, generator=generator) < p_uncond
            y = torch.where(drop, torch.full_like(y, null_class), y)
        score = model(x_t, t, y)
    return (weight * (score * std + z).pow(2).flatten(1).sum(1)).mean()


def _perturb(x: torch.Tensor, sde, t: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x(t) = alpha(t) x + std(t) z, the perturbation kernel's draw, and std(t) shaped ``[B, 1, ...]``."""
    if isinstance(sde, SDE):
        mean, std = sde.marginal_prob(x, t)
    else:  # a bare t -> std(t) function: no drift, the mean is x
        mean, std = x, sde(t)
    std = batch_view(std, x)
    return mean + std * z, std


def check_labels(y, x: torch.Tensor, num_classes: int, name: str = "y") -> torch.Tensor:
    """Class labels for the batch ``x``: a ``[B]`` integer tensor with values in 0..num_classes - 1."""
    if (not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool
            or y.shape != (x.shape[0],)):
        got = f"shape {tuple(y.shape)} dtype {y.dtype}" if isinstance(y, torch.Tensor) else repr(y)
        raise ValueError(f"{name} must be a [B] = [{x.shape[0]}] integer tensor of class labels in "
                         f"0..{num_classes - 1}, got {got}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name} must hold class labels in 0..{num_classes - 1}, got values from "
                         f"{int(y.min())} to {int(y.max())}")
    return y.to(x.device, torch.long)


def time_classifier_loss(classifier, x: torch.Tensor, y: torch.Tensor, sde, eps: float = 1e-5,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Cross-entropy of a noise-conditional classifier on data perturbed by the SDE, averaged over the batch.

        L = E_{t ~ U(eps, 1)} E_z [ -log softmax(classifier(x(t), t))[y] ],    x(t) = alpha(t) x + std(t) z

    Its minimizer is log p_t(y | x(t)) up to a constant per x(t): the classifier that classifier guidance
    differentiates (:func:`~sgm_helpers.controllable.classifier_guided_score`).

    Args:
        classifier: ``(x [B, ...], t [B]) -> logits [B, num_classes]``, e.g.
            :class:`~sgm_helpers.models.TimeClassifier`.
        x: a batch of data ``[B, ...]``; y: its labels ``[B]``, integers in 0..num_classes - 1.
        sde: an SDE, or a ``marginal_prob_std`` function (then drift-free), as for :func:`dsm_loss`.
        eps: smallest time sampled, in (0, 1).
        generator: optional ``torch.Generator`` on ``x``'s device for t and z.
    Returns:
        a scalar tensor.
    """
    sde = sde_of(sde) or sde
    eps = _check_loss_args(x, sde, eps, False, False)
    y = check_labels(y, x, getattr(classifier, "num_classes", NUM_CLASSES))
    t = torch.rand(x.shape[0], device=x.device, generator=generator) * (1.0 - eps) + eps
    z = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    x_t, _ = _perturb(x, sde, t, z)
    return F.cross_entropy(classifier(x_t, t), y)


def _check_loss_args(x, sde, eps, likelihood_weighting, importance_sampling, uniform_share=0.0) -> float:
    eps = check_eps(eps)
    if (isinstance(uniform_share, bool) or not isinstance(uniform_share, (int, float))
            or not 0.0 <= uniform_share <= 1.0):
        raise ValueError(f"uniform_share must be a share in [0, 1], got {uniform_share!r}")
    if uniform_share > 0 and not importance_sampling:
        raise ValueError(f"uniform_share={uniform_share} mixes uniform t into importance sampling: it needs "
                         "importance_sampling=True (and likelihood_weighting=True)")
    if x.dim() < 2:
        raise ValueError(f"x must have shape [B, ...] with at least one data dim, got {tuple(x.shape)}")
    if not isinstance(sde, SDE) and not callable(sde):
        raise ValueError(f"sde must be an SDE (VESDE, VPSDE, subVPSDE) or a function t -> std(t), got {sde!r}")
    if importance_sampling and not likelihood_weighting:
        raise ValueError("importance_sampling=True needs likelihood_weighting=True: it samples t from the "
                         "likelihood weighting's density")
    if likelihood_weighting and not isinstance(sde, SDE):
        raise ValueError("likelihood_weighting needs an SDE (for g(t)), not only a marginal_prob_std function")
    return eps


def ssm_loss(model, x: torch.Tensor, generator: torch.Generator | None = None,
             variance_reduction: bool = True) -> torch.Tensor:
    """Sliced score matching (Song, Garg, Shi and Ermon 2019): score matching without noise or a known density.

    Score matching's objective 1/2 E ||s(x) - grad log p(x)||^2 equals, up to a constant that does not
    depend on s, E [tr(grad_x s(x)) + 1/2 ||s(x)||^2] (Hyvarinen 2005, by integration by parts). The trace
    costs D backward passes; projecting onto a random direction v with E[v v^T] = I makes it one:

        L = E_x E_v [ v^T (grad_x s(x)) v + 1/2 (v^T s(x))^2 ]

    and with ``variance_reduction`` (SSM-VR) the second term is replaced by its expectation over v,
    E_v (v^T s)^2 = s^T E[v v^T] s = ||s(x)||^2 (halved). Here v ~ N(0, I), one per example; the Jacobian-vector term is a double backward,
    so the parameters' gradient flows through it.

    Args:
        model: a score model of the data alone, ``x [B, ...] -> [B, ...]`` (no time: the data are not noised).
        x: a batch ``[B, ...]``.
        generator: for the projections v ~ N(0, I).
        variance_reduction: use 1/2 ||s||^2 instead of 1/2 (v^T s)^2.
    Returns:
        a scalar tensor, averaged over the batch. It can be negative: only differences are meaningful.
    """
    if x.dim() < 2:
        raise ValueError(f"x must have shape [B, ...] with at least one data dim, got {tuple(x.shape)}")
    v = randn(x.shape, generator, x.device, x.dtype)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        s = model(x)
        (grad_vs,) = torch.autograd.grad((s * v).sum(), x, create_graph=True)  # grad_x (v^T s), one per example
        vjv = (grad_vs * v).flatten(1).sum(1)
        second = s.pow(2).flatten(1).sum(1) if variance_reduction else (s * v).flatten(1).sum(1).pow(2)
        return (vjv + 0.5 * second).mean()
