"""Controllable generation with an unconditional score model (Song et al. 2021, section 5 and appendix I).

Bayes' rule for scores: for a condition y (a class, the known pixels, a low-resolution image),

    grad_x log p_t(x | y) = grad_x log p_t(x) + grad_x log p_t(y | x),

so the reverse-time SDE of p_t(x | y) only needs the unconditional score plus the gradient of a
noisy likelihood. Four ways to use that, each a score function or a step hook of the shared sampler
loop (:func:`~sgm_helpers.samplers.reverse_sde_sampler`), for every SDE:

- :func:`classifier_guided_score`: p_t(y | x) from a noise-conditional classifier, scaled by ``scale``.
- :func:`cfg_score`: classifier-free guidance, mixing a class-conditional model's conditional and
  unconditional scores.
- :func:`inpaint`: imputation. The known pixels are replaced, before every score evaluation, by the data
  perturbed to the current time, and the score is guided towards them by :func:`reconstruction_guided_score`
  (p_t(known | x) through Tweedie's denoiser); optionally RePaint's resampling (Lugmayr et al. 2022).
- :func:`super_resolve`: imputation after an orthogonal change of basis in which the low-resolution image
  is a set of known coordinates (the per-block normalized mean).
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn as nn

from .models import NULL_CLASS, NUM_CLASSES
from .samplers import reverse_sde_sampler
from .utils import batch_view, check_positive_int, model_device, randn

DEFAULT_SCALES = {"classifier": 8.0, "cfg": 2.0}
"""The guidance scale the command line uses when none is given (``sample --class K --guidance METHOD``), per method:
the smallest scale of the model card's sweep at which at least 97% of the samples (100 per digit, 500
Euler-Maruyama steps, the bundled models) were classified as the requested digit. The functions themselves
default to the scale Bayes' rule gives, 1."""

INPAINT_GUIDANCE = 2.0
"""The default scale of :func:`inpaint`'s reconstruction guidance: chosen on 200 held-out training digits (bottom
half hidden, 500 Euler-Maruyama steps), where scale 2 had 88.0% of the completions classified as the original digit
and scale 1 (the approximate likelihood as it is) 84.0% (``scripts/evaluate_controllable.py inpaint --split holdout``,
the model card). On the toy Gaussian of the tests, whose data have the unit variance the approximation assumes,
scale 1 comes close to the true conditional and 2 overshoots it; MNIST's pixels vary about ten times less, so there
the Gaussian likelihood is too broad and a larger scale makes up for it."""

INPAINT_RESAMPLINGS = 2
"""The default number U of RePaint resamplings per step of :func:`inpaint`: chosen on 200 held-out training digits
(500 Euler-Maruyama steps, guidance :data:`INPAINT_GUIDANCE`), where U = 2 had 89.5% of the completions classified
as the original digit against 88.0% for U = 1 with the bottom half hidden, and 91.0% against 87.0% with the right
half hidden (``scripts/evaluate_controllable.py inpaint --split holdout --resamplings 2``, the model card). It
doubles the cost. :func:`super_resolve` keeps U = 1: its completions were already measured without resampling."""

# --- argument checks ---------------------------------------------------------------------------------


def _check_scale(scale, name: str = "scale") -> float:
    if (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale)
            or scale < 0):
        raise ValueError(f"{name} must be a finite number >= 0 (0: no guidance), got {scale!r}")
    return float(scale)


def _check_callable_as(fn, name: str, args: tuple[str, ...], usage: str) -> None:
    """``fn`` must be callable with the positional arguments ``args`` (judged by its signature, where it has one)."""
    if not callable(fn):
        raise ValueError(f"{name} must be callable as {usage}, got {type(fn).__name__}")
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: cannot tell, trust it
        return
    try:
        signature.bind(*args)
    except TypeError:
        raise ValueError(f"{name} must be callable as {usage}; {type(fn).__name__} takes {signature}") from None


def _check_classes(y, num_classes: int, name: str, null: int | None = None):
    """An int or a 1-D integer tensor of classes in 0..num_classes - 1 (or ``null``); returned as int or long tensor."""
    allowed = f"a class in 0..{num_classes - 1}" + (f", or None or {null} (the null class) for unconditional"
                                                     if null is not None else "")
    if isinstance(y, bool) or not isinstance(y, (int, torch.Tensor)) or (
            isinstance(y, torch.Tensor) and (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool
                                             or y.dim() > 1)):
        raise ValueError(f"{name} must be {allowed}, as an int or a [B] integer tensor; got {y!r}")
    values = y.reshape(-1).tolist() if isinstance(y, torch.Tensor) else [y]
    bad = sorted({v for v in values if not (0 <= v < num_classes or v == null)})
    if bad:
        raise ValueError(f"{name} must be {allowed}; got {bad[0] if not isinstance(y, torch.Tensor) else bad}")
    return y.long() if isinstance(y, torch.Tensor) else int(y)


def _batch_labels(y, x: torch.Tensor, name: str) -> torch.Tensor:
    """An int or ``[B]`` labels as a ``[B]`` int64 tensor on x's device."""
    y = torch.as_tensor(y, dtype=torch.long, device=x.device)
    if y.dim() == 0:
        return y.expand(x.shape[0])
    if y.shape != (x.shape[0],):
        raise ValueError(f"{name} has {y.shape[0]} labels for a batch of {x.shape[0]}: give one int or [B] labels")
    return y


def _batch_time(t, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


def _check_images(images, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or not images.is_floating_point():
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a float tensor [B, ...] (e.g. [B, 1, 28, 28]), got {got}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return images


def _check_mask(mask, images: torch.Tensor) -> torch.Tensor:
    """A 0/1 (or bool) mask that broadcasts to ``images``' shape, as a bool tensor (True = known)."""
    try:
        mask = torch.as_tensor(mask)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"mask must be a 0/1 tensor, got {type(mask).__name__}") from None
    try:
        broadcast = torch.broadcast_shapes(mask.shape, images.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != images.shape:
        raise ValueError(f"mask must broadcast to the images' shape {tuple(images.shape)} (e.g. "
                         f"{tuple(images.shape[1:])} for one mask for all, or the same shape), got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
            raise ValueError("mask must hold only 0 and 1 (or bools): 1 on the known pixels, 0 on those to fill in")
        mask = mask == 1
    return mask


def _detached(fn):
    """``fn`` as a function of its inputs alone: an ``nn.Module`` is called with its parameters and buffers
    detached, so ``torch.func`` transforms of it build no graph through them (and work inside ``torch.no_grad``)."""
    if not isinstance(fn, nn.Module):
        return fn
    state = {k: v.detach() for k, v in [*fn.named_parameters(), *fn.named_buffers()]}
    return lambda *args: torch.func.functional_call(fn, state, args)


# --- classifier guidance -----------------------------------------------------------------------------


class _ClassifierGuidedScore(nn.Module):
    """s(x, t) + scale * grad_x log p_t(y | x): see :func:`classifier_guided_score`."""

    def __init__(self, score_model, classifier, y, scale: float, num_classes: int):
        super().__init__()
        self.score_model, self.classifier = score_model, classifier
        self.y, self.scale, self.num_classes = y, scale, num_classes

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = _batch_time(t, x)
        score = self.score_model(x, t)
        if self.scale == 0:
            return score
        return score + self.scale * self.log_likelihood_grad(x, t)

    def log_likelihood_grad(self, x: torch.Tensor, t) -> torch.Tensor:
        """grad_x log p_t(y | x) = grad_x log_softmax(classifier(x, t))[y], one per example: ``[B, ...]``.

        The log-probabilities of different examples do not depend on each other, so the gradient of their
        sum is every example's own gradient; ``torch.func.grad`` takes it with respect to x alone, with the
        classifier's parameters detached (no graph through them; it works inside ``torch.no_grad``).
        """
        t = _batch_time(t, x)
        y = _batch_labels(self.y, x, "y")
        classifier = _detached(self.classifier)

        def log_p_y(x_):
            logits = classifier(x_, t)
            if logits.dim() != 2 or logits.shape[0] != x_.shape[0]:
                raise ValueError(f"classifier must return logits [B, num_classes] = [{x_.shape[0]}, K], "
                                 f"got {tuple(logits.shape)}")
            if int(y.max()) >= logits.shape[1]:
                raise ValueError(f"y = {int(y.max())} but the classifier has only {logits.shape[1]} classes")
            return torch.log_softmax(logits, dim=-1).gather(1, y[:, None]).sum()

        return torch.func.grad(log_p_y)(x)


def classifier_guided_score(score_model, classifier, y, scale: float = 1.0, *, num_classes: int = NUM_CLASSES):
    """The score of p_t(x | y) by Bayes' rule with a noise-conditional classifier (the paper's conditional sampling):

        s(x, t) + scale * grad_x log p_t(y | x),     log p_t(y | x) = log_softmax(classifier(x, t))[y]

    With ``scale = 1`` and exact ingredients this is exactly grad_x log p_t(x | y); a larger scale samples
    from a sharpened p_t(x) p_t(y | x)^scale (Dhariwal and Nichol 2021): more confident samples, less diverse.

    The classifier must be time-dependent, trained on x(t) for all t (a clean-image classifier knows nothing
    of noisy images, and its gradient there is meaningless): ``classifier(x [B, ...], t [B]) -> logits [B, K]``
    (e.g. :class:`~sgm_helpers.models.TimeClassifier`, or the toy's exact
    :meth:`~sgm_helpers.toy.GaussianMixture.perturbed_log_posterior`). Its gradient is taken with ``torch.func.grad``.

    Args:
        score_model: the unconditional score model ``(x, t) -> score``.
        classifier: the noise-conditional classifier ``(x, t) -> logits``.
        y: the class to generate: an int in 0..num_classes - 1, or ``[B]`` such labels (one per sample).
        scale: the guidance scale, a finite number >= 0 (0: the unconditional score).
        num_classes: the classes y may name (MNIST: 10).
    Returns:
        a score model ``(x [B, ...], t [B]) -> [B, ...]`` (an ``nn.Module`` holding both networks, so their
        device shows through) that every sampler accepts. One score and one classifier evaluation per call.
    """
    _check_callable_as(score_model, "score_model", ("x", "t"), "score_model(x, t) -> score")
    _check_callable_as(classifier, "classifier", ("x", "t"),
                       "classifier(x, t) -> logits [B, num_classes]: a time-dependent (noise-conditional) "
                       "classifier such as TimeClassifier")
    num_classes = check_positive_int(num_classes, "num_classes")
    y = _check_classes(y, num_classes, "y")
    return _ClassifierGuidedScore(score_model, classifier, y, _check_scale(scale), num_classes)


# --- classifier-free guidance ------------------------------------------------------------------------


class _CFGScore(nn.Module):
    """(1 - w) s(x, t, null) + w s(x, t, y): see :func:`cfg_score`."""

    def __init__(self, model, y, scale: float, null_class: int):
        super().__init__()
        self.model, self.y, self.scale, self.null_class = model, y, scale, null_class

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = _batch_time(t, x)
        if self.y is None or self.scale == 0:
            return self.model(x, t, None)
        y = _batch_labels(self.y, x, "y")
        if self.scale == 1:
            return self.model(x, t, y)
        # Both scores in one forward pass of 2B examples.
        null = torch.full_like(y, self.null_class)
        s_uncond, s_cond = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([null, y])).chunk(2)
        return (1.0 - self.scale) * s_uncond + self.scale * s_cond


def cfg_score(model, y, scale: float):
    """Classifier-free guidance (Ho and Salimans 2022) with a class-conditional score model ``model(x, t, y)``:

        s_w(x, t) = (1 - w) s(x, t, null) + w s(x, t, y) = s(x, t, null) + w (s(x, t, y) - s(x, t, null))

    with ``w = scale``. Convention: w = 0 is the unconditional model, w = 1 the plain conditional model
    (no guidance beyond the label), w > 1 extrapolates away from the unconditional score. Since
    s(x, t, y) - s(x, t, null) estimates grad_x log p_t(y | x), w plays the role of classifier guidance's
    scale with an implicit classifier. (Ho and Salimans write (1 + w') s_cond - w' s_uncond: their w' is w - 1.)

    Args:
        model: a class-conditional score model such as :class:`~sgm_helpers.models.ConditionalScoreNet`,
            where ``y = None`` (or the null class, ``model.null_class``, 10 for MNIST) is unconditional.
        y: the class, an int in 0..9 or ``[B]`` such labels; None or 10 for the unconditional score.
        scale: w, a finite number >= 0.
    Returns:
        a score model ``(x [B, ...], t [B]) -> [B, ...]`` for every sampler: one forward pass per call (of 2B
        examples when 0 < w != 1, of B when w is 0 or 1 or y is None).
    """
    _check_callable_as(model, "model", ("x", "t", "y"),
                       "model(x, t, y) -> score: a class-conditional model such as ConditionalScoreNet")
    null_class = getattr(model, "null_class", NULL_CLASS)
    num_classes = getattr(model, "num_classes", NUM_CLASSES)
    if y is not None:
        y = _check_classes(y, num_classes, "y", null=null_class)
    return _CFGScore(model, y, _check_scale(scale), null_class)


# --- imputation: inpainting and super-resolution -------------------------------------------------------


class _ReconstructionGuidedScore(nn.Module):
    """s(x, t) + scale * grad_x log p_t(known pixels | x): see :func:`reconstruction_guided_score`."""

    def __init__(self, score_model, sde, images: torch.Tensor, known: torch.Tensor, scale: float):
        super().__init__()
        self.score_model, self.sde, self.images, self.known, self.scale = score_model, sde, images, known, scale

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = _batch_time(t, x)
        score_model = _detached(self.score_model)
        if self.scale == 0:
            return score_model(x, t)

        def denoised(x_):
            score = score_model(x_, t)
            return self.sde.tweedie_denoise(x_, t, score), score

        x0_hat, pull_back, score = torch.func.vjp(denoised, x, has_aux=True)
        sigma2 = batch_view(self.sde.sigma_of_t(t), x) ** 2
        r2 = sigma2 / (1 + sigma2)
        residual = torch.where(self.known, self.images - x0_hat, torch.zeros_like(x0_hat))
        return score + self.scale * pull_back(residual / r2)[0]


def reconstruction_guided_score(score_model, sde, images, mask, scale: float = 1.0):
    """A score function ``(x, t) -> s(x, t) + scale * grad_x log p_t(y | x)`` for y = the known pixels of ``images``.

    Bayes' rule for scores with the noisy likelihood of the known pixels y = M x(0) approximated through
    Tweedie's denoiser x0_hat(x, t) = E[x(0) | x(t) = x] (reconstruction guidance, Ho et al. 2022; the variance
    of Song et al. 2023's pseudoinverse guidance):

        p_t(y | x) ~= N(y; M x0_hat(x, t), r_t^2 I),     r_t^2 = sigma(t)^2 / (1 + sigma(t)^2),
        grad_x log p_t(y | x) ~= (d x0_hat / dx)^T M (y - x0_hat(x, t)) / r_t^2,

    with sigma(t) = std(t) / alpha(t) (``sde.sigma_of_t``) and r_t^2 the variance of x(0) given x(t) if the
    data were standard normal. The vector-Jacobian product goes back through the score network with
    ``torch.func.vjp`` (about three times the cost of a plain evaluation, counted as one). Where the
    replacement of :func:`inpaint` only tells the network what the known pixels look like now, this term
    pulls the unknown ones towards values from which the denoiser predicts the known pixels correctly.

    Args:
        score_model: ``(x [B, ...], t [B]) -> score``.
        sde: the SDE the model was trained with.
        images: ``[B, ...]`` data; only the known pixels are read.
        mask: 1 (or True) on the known pixels; broadcasts to ``images``.
        scale: >= 0; 0 is the plain score, 1 the approximate likelihood as it is.
    """
    images = _check_images(images, "images")
    return _ReconstructionGuidedScore(score_model, sde, images, _check_mask(mask, images), _check_scale(scale))


@torch.no_grad()
def inpaint(score_model, sde, images, mask, *, num_steps: int = 500, snr: float = 0.16,
            resamplings: int = INPAINT_RESAMPLINGS,
            guidance: float = INPAINT_GUIDANCE, generator: torch.Generator | None = None, progress: bool = True,
            predictor: str = "euler_maruyama", corrector: bool = False, eps: float = 1e-3, device=None,
            callback=None) -> torch.Tensor:
    """Fill in the pixels where ``mask`` is 0, keeping those where it is 1 (the paper's imputation, appendix I.2).

    Each step of the reverse-time sampler runs on the whole image; before each of its score evaluations
    at time t, the known pixels are replaced by the data perturbed to t by the forward SDE,

        x[known] <- alpha(t) images[known] + std(t) z,     z ~ N(0, I) drawn afresh

    (``sde.marginal_prob``), and the unknown ones keep the sampler's update. The result keeps the known
    pixels exactly. This is a step hook of the shared loop (:func:`~sgm_helpers.samplers.reverse_sde_sampler`),
    so every predictor, the corrector and every SDE work as they do for plain sampling.

    The replacement is an approximation: it never lets the unknown pixels' history influence the known
    ones, so the two halves are not sampled jointly and the result is biased towards the unconditional
    distribution. On a correlated 2-D Gaussian it undershoots the conditional mean (tests/test_controllable.py
    measures it); on MNIST the completions often continue the strokes into another digit. Three fixes:

    - ``guidance`` (default :data:`INPAINT_GUIDANCE` = 2): the score model is wrapped by
      :func:`reconstruction_guided_score`, Bayes' rule with the known pixels' likelihood through Tweedie's
      denoiser, which steers the unknown pixels towards values consistent with the known ones. One backward
      pass per score evaluation.
    - ``resamplings = U > 1`` (default :data:`INPAINT_RESAMPLINGS` = 2), RePaint's fix (Lugmayr et al. 2022):
      after a step from t to t_next, jump back to t along the forward SDE, x <- a x + b z with
      ``(a, b) = sde.transition_kernel(t_next, t)``, and redo the step; U times in all, so the two parts mix
      before moving on. U times the cost.

    - ``corrector=True``: one Langevin corrector step at ``snr`` before each predictor step (as
      :func:`~sgm_helpers.samplers.pc_sampler`), an MCMC move on the whole image at fixed t with the known
      pixels replaced before it, so it too lets the two parts adjust to each other. Twice the cost.

    The model card measures them on MNIST digits. ``guidance=0`` is the paper's plain replacement.

    Defaults: ``num_steps`` Euler-Maruyama steps with reconstruction guidance at scale 2, each done twice
    (U = 2), no corrector (chosen on held-out training digits; see the model card). The cost is
    ``num_steps * resamplings`` steps of one score evaluation (two with the corrector), each with a backward
    pass when ``guidance > 0``; wrap the model in :class:`~sgm_helpers.samplers.CountingModel` to count them.

    Args:
        score_model: ``(x [B, ...], t [B]) -> score``.
        sde: the SDE the model was trained with.
        images: ``[B, ...]`` data; only the known pixels are read.
        mask: 1 (or True) on the known pixels, 0 on those to fill in; any shape that broadcasts to ``images``
            (``[1, 28, 28]`` for one mask for all, ``[B, 1, 28, 28]`` for one per image).
        num_steps, snr, predictor, corrector, eps, device, generator, progress, callback: as
            :func:`~sgm_helpers.samplers.reverse_sde_sampler`.
        resamplings: U >= 1, the number of times each step is done (1: no resampling; default 2).
        guidance: the scale of reconstruction guidance, >= 0 (0: replacement alone).
    Returns:
        ``[B, ...]``: the known pixels of ``images`` and the sampler's final noise-free mean elsewhere.
    """
    images = _check_images(images, "images")
    known = _check_mask(mask, images)
    resamplings = check_positive_int(resamplings, "resamplings")
    guidance = _check_scale(guidance, "guidance")
    device = model_device(score_model, device)
    images, known = images.to(device, torch.float32), known.to(device)
    if guidance > 0:
        score_model = _ReconstructionGuidedScore(score_model, sde, images, known, guidance)

    def hook(i, t, t_next, x, one_step):
        def replace_known(x):
            mean, std = sde.marginal_prob(images, t)
            return torch.where(known, mean + std * randn(x.shape, generator, x.device), x)

        for u in range(resamplings):
            if u > 0:  # RePaint: back from t_next to t along the forward SDE, then the step again
                a, b = sde.transition_kernel(t_next, t)
                x = a * x + b * randn(x.shape, generator, x.device)
            x, x_mean = one_step(x, condition=replace_known)
        return x, x_mean

    x = reverse_sde_sampler(score_model, sde, images.shape, predictor=predictor, corrector=corrector,
                            num_steps=num_steps, snr=snr, eps=eps, device=device, generator=generator,
                            progress=progress, callback=callback, step_hook=hook, desc="inpaint")
    return torch.where(known, images, x)


MASK_REGIONS = ("bottom", "top", "left", "right", "square")


def region_mask(region: str = "bottom", size: int = 28, *, square_size: int | None = None,
                square_at: tuple[int, int] | None = None) -> torch.Tensor:
    """A mask for :func:`inpaint`, ``[1, size, size]`` (bool): True on the known pixels, False on ``region``.

    ``region`` is a half of the image (``"bottom"``, ``"top"``, ``"left"``, ``"right"``) or a ``"square"`` of
    side ``square_size`` (default: half the image) with its top-left pixel at ``square_at = (row, col)``
    (default: centred). The square must lie inside the image.
    """
    if region not in MASK_REGIONS:
        raise ValueError(f"region must be one of {MASK_REGIONS}, got {region!r}")
    n = check_positive_int(size, "size")
    if region != "square":
        if square_size is not None or square_at is not None:
            raise ValueError(f"square_size and square_at place region='square', not region={region!r}")
        half = n // 2
        holes = {"bottom": (slice(half, n), slice(None)), "top": (slice(0, half), slice(None)),
                 "left": (slice(None), slice(0, half)), "right": (slice(None), slice(half, n))}
        known = torch.ones(1, n, n, dtype=torch.bool)
        known[(slice(None), *holes[region])] = False
        return known
    side = n // 2 if square_size is None else check_positive_int(square_size, "square_size")
    if side >= n:
        raise ValueError(f"square_size must be below {n} (the image's side), got {side}")
    row, col = ((n - side) // 2,) * 2 if square_at is None else square_at
    if not (0 <= row <= n - side and 0 <= col <= n - side):
        raise ValueError(f"square_at = ({row}, {col}) with square_size = {side} leaves the {n}x{n} image: row and "
                         f"col must be in 0..{n - side}")
    known = torch.ones(1, n, n, dtype=torch.bool)
    known[:, row:row + side, col:col + side] = False
    return known


def block_basis(factor: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The ``factor x factor`` Helmert matrix H: orthogonal, first row the normalized mean 1 / sqrt(f).

        H[0, j] = 1 / sqrt(f);   H[k, j] = 1 / sqrt(k (k + 1)) for j < k,  -k / sqrt(k (k + 1)) for j = k,  0 after

    Rows k >= 1 are contrasts (they sum to zero). For f = 2 it is the Haar matrix [[1, 1], [1, -1]] / sqrt(2).
    """
    f = check_positive_int(factor, "factor")
    h = torch.zeros(f, f, dtype=torch.float64)
    h[0] = 1.0 / math.sqrt(f)
    for k in range(1, f):
        h[k, :k] = 1.0 / math.sqrt(k * (k + 1))
        h[k, k] = -k / math.sqrt(k * (k + 1))
    return h.to(device=device, dtype=dtype)


def _blocks(x: torch.Tensor, factor: int) -> torch.Tensor:
    b, c, hh, ww = x.shape
    return x.reshape(b, c, hh // factor, factor, ww // factor, factor)


def to_block_basis(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Images ``[B, C, H, W]`` in the per-block orthogonal basis: each f x f block X becomes H X H^T.

    The result has ``x``'s shape: block (i, j)'s coefficient (p, q) sits at pixel (i f + p, j f + q). The
    coefficient (0, 0) of a block is its normalized mean, sum(X) / f = f * mean(X); the others are
    separable Helmert (for f = 2: Haar) details, orthogonal to it and to each other. ``H`` and ``W`` must be
    multiples of ``factor``. The map is orthogonal: norms, and the isotropic noise of the SDEs, are unchanged.
    """
    if x.dim() != 4 or x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(f"x must be [B, C, H, W] with H and W multiples of factor = {factor}, got {tuple(x.shape)}")
    h = block_basis(factor, x.dtype, x.device)
    return torch.einsum("pr,bcirjs,qs->bcipjq", h, _blocks(x, factor), h).reshape(x.shape)


def from_block_basis(c: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """The inverse of :func:`to_block_basis`: each block of coefficients C becomes H^T C H."""
    if c.dim() != 4 or c.shape[2] % factor or c.shape[3] % factor:
        raise ValueError(f"c must be [B, C, H, W] with H and W multiples of factor = {factor}, got {tuple(c.shape)}")
    h = block_basis(factor, c.dtype, c.device)
    return torch.einsum("pr,bcipjq,qs->bcirjs", h, _blocks(c, factor), h).reshape(c.shape)


@torch.no_grad()
def super_resolve(score_model, sde, low_res, factor: int = 2, *, num_steps: int = 500, snr: float = 0.16,
                  resamplings: int = 1, guidance: float = INPAINT_GUIDANCE, generator: torch.Generator | None = None,
                  progress: bool = True, predictor: str = "euler_maruyama", corrector: bool = False, eps: float = 1e-3,
                  device=None, callback=None) -> torch.Tensor:
    """Upsample ``low_res`` by ``factor``: a high-resolution sample whose f x f block means are ``low_res``.

    The paper's colorization trick (appendix I.3) carried over to resolution. In the orthogonal per-block
    basis of :func:`to_block_basis` (for f = 2: the normalized block mean and three Haar details) the
    low-resolution image is a set of known coordinates, c_00 = f * low_res, and the details are unknown.
    The forward SDEs add isotropic noise and scale x by alpha(t), so they look the same in an orthogonal
    basis, and the score there is the model's score rotated the same way,

        s_c(c, t) = Q s(Q^T c, t)      (Q = to_block_basis, Q^T = from_block_basis),

    so :func:`inpaint` runs in that basis with the block-mean coordinates known. The result's block means
    equal ``low_res`` up to float rounding.

    Args:
        score_model: ``(x [B, C, f h, f w], t) -> score`` for the high-resolution images.
        sde: its SDE.
        low_res: ``[B, C, h, w]`` block means (e.g. ``[B, 1, 14, 14]`` for 28x28 MNIST).
        factor: the upsampling factor, an integer >= 2.
        num_steps, snr, guidance, generator, progress, predictor, corrector, eps, device: as
            :func:`inpaint` (reconstruction guidance acts on the known block-mean coordinates).
        resamplings: as :func:`inpaint`, but the default here is 1 (no resampling), the setting the model
            card measures super-resolution with.
        callback: optional ``callback(step, t_next, x_mean)`` with ``x_mean`` in pixel space.
    Returns:
        ``[B, C, f h, f w]``.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise ValueError(f"factor must be an integer >= 2, got {factor!r}")
    low_res = _check_images(low_res, "low_res")
    if low_res.dim() != 4:
        raise ValueError(f"low_res must be [B, C, h, w], got {tuple(low_res.shape)}")
    device = model_device(score_model, device)
    low_res = low_res.to(device, torch.float32)
    b, ch, h, w = low_res.shape
    coeffs = low_res.new_zeros(b, ch, h * factor, w * factor)
    coeffs[..., ::factor, ::factor] = factor * low_res
    known = torch.zeros(1, 1, h * factor, w * factor, dtype=torch.bool, device=device)
    known[..., ::factor, ::factor] = True

    pixel_score = _detached(score_model)  # no graph through its parameters when guidance differentiates it

    def score_in_basis(c, t):
        return to_block_basis(pixel_score(from_block_basis(c, factor), t), factor)

    pixel_callback = None if callback is None else (
        lambda i, t, c: callback(i, t, from_block_basis(c, factor)))
    c = inpaint(score_in_basis, sde, coeffs, known, num_steps=num_steps, snr=snr, resamplings=resamplings,
                guidance=guidance, generator=generator, progress=progress, predictor=predictor, corrector=corrector,
                eps=eps, device=device, callback=pixel_callback)
    return from_block_basis(c, factor)


def block_means(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """The mean of every ``factor x factor`` block of ``x [B, C, H, W]``: ``[B, C, H / f, W / f]`` (downsampling)."""
    if x.dim() != 4 or x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(f"x must be [B, C, H, W] with H and W multiples of factor = {factor}, got {tuple(x.shape)}")
    return _blocks(x, factor).mean(dim=(3, 5))
