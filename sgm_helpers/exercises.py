"""Checkers for the notebooks' exercises: does a learner's function agree with the package's?

Each ``check_<name>(your_function)`` calls the learner's function and the package's own
implementation on the same seeded random inputs of a few shapes. If they agree it prints a short
congratulation; if not it raises :class:`ExerciseError` with one sentence that says what is wrong:
an exception, ``None`` or a non-tensor result, the wrong shape, NaN, the wrong sign, a constant
factor or offset, or one of the exercise's common mistakes. Each common mistake is computed from the
package's function, with changed inputs (``dsm_loss`` of the negated model is the loss with the wrong
sign inside the norm) or a rearranged output, so a diagnosis is as right as the package, which is tested.

Where the package has a function of the same arguments (``dsm_loss``, ``euler_maruyama_step``,
``bits_per_dim``...), the learner writes that signature, and the package's function is itself a correct
answer. Where it draws noise from a ``generator`` (the Langevin step, the DSM loss, the samplers' steps),
the exercise's stub draws it the same way, so both see the same noise.

    notebook 1: check_gaussian_score, check_langevin_step, check_noised_gaussian_score
    notebook 2: check_ve_std, check_ve_diffusion_coeff, check_dsm_loss
    notebook 3: check_fourier_features, check_ema_update
    notebook 4: check_euler_maruyama_step, check_langevin_corrector_step, check_probability_flow_drift,
                check_tweedie_denoise
    notebook 5: check_hutchinson_divergence, check_bits_per_dim, check_prior_logp
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from . import samplers
from .langevin import langevin_dynamics
from .likelihood import bits_per_dim, hutchinson_divergence, hutchinson_noise
from .losses import dsm_loss
from .models import GaussianFourierProjection
from .sde import VESDE
from .toy import GaussianMixture, three_modes
from .training import make_ema
from .utils import batch_view

__all__ = [
    "ExerciseError",
    "check_gaussian_score", "check_langevin_step", "check_noised_gaussian_score",
    "check_ve_std", "check_ve_diffusion_coeff", "check_dsm_loss",
    "check_fourier_features", "check_ema_update",
    "check_euler_maruyama_step", "check_langevin_corrector_step", "check_probability_flow_drift",
    "check_tweedie_denoise",
    "check_hutchinson_divergence", "check_bits_per_dim", "check_prior_logp",
]

RTOL = 1e-4  # float32 arithmetic done in another order stays well within this


class ExerciseError(AssertionError):
    """The learner's function disagrees with the package's; the message says how, in one sentence."""


class CallError(ValueError):
    """Raised by a checker's model when the learner's function calls it wrongly; the message completes
    "your function ..." ("called the model with x of shape ...")."""


@dataclass(frozen=True)
class Case:
    """One test input. ``where`` completes a sentence ("for x of shape (5, 2)"); ``make_args`` returns
    fresh arguments (new tensors, a newly seeded generator) for each call."""

    where: str
    make_args: Callable[[], tuple]


@dataclass(frozen=True)
class Mistake:
    """A common mistake: ``says`` completes "your function ..."; ``output(*args)`` is what a function with
    that mistake returns, computed with the package's function."""

    says: str
    output: Callable


# --- the comparison core --------------------------------------------------------------------------


def _as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    return torch.allclose(got, expected, rtol=RTOL, atol=RTOL * 1e-2 * max(1.0, scale))


def _number(value: float) -> str:
    return f"{value:.4g}"


def _hint(value: float, hints: dict) -> str:
    for key, text in hints.items():
        if math.isclose(value, key, rel_tol=1e-3):
            return f" ({text})"
    return ""


def _constant_factor(got: list, expected: list):
    """got / expected if it is the same number for every input (over the entries that are not tiny next to the
    largest of their input, at least 3 in all), else None. ``got`` and ``expected`` are lists of tensors."""
    ratios = []
    for g, e in zip(got, expected):
        keep = e.abs() > 1e-3 * e.abs().max()
        ratios.append(g[keep] / e[keep])
    ratio = torch.cat(ratios)
    if ratio.numel() < 3:
        return None
    mean = float(ratio.mean())
    constant = float(ratio.max() - ratio.min()) <= 1e-3 * abs(mean)
    return mean if constant and mean != 0 and abs(mean - 1) > 1e-3 else None


def _constant_offset(got: list, expected: list):
    """got - expected if it is the same number everywhere (at least 3 entries) and not zero, else None."""
    diff = torch.cat([(g - e).flatten() for g, e in zip(got, expected)])
    if diff.numel() < 3:
        return None
    scale = 1.0 + max(float(e.abs().max()) for e in expected)
    mean = float(diff.mean())
    return mean if float(diff.max() - diff.min()) <= 1e-5 * scale and abs(mean) > 1e-4 * scale else None


def _describe(got: torch.Tensor, expected: torch.Tensor, factor_hints: dict) -> str:
    """How ``got`` differs from ``expected``, as the end of a sentence."""
    if _close(got, -expected):
        return "it returns minus the right answer (a sign is wrong)"
    factor = _constant_factor([got], [expected])
    if factor is not None:
        return f"it returns {_number(factor)} times the right answer{_hint(factor, factor_hints)}"
    offset = _constant_offset([got], [expected])
    if offset is not None:
        return f"it returns the right answer {'plus' if offset > 0 else 'minus'} {_number(abs(offset))}"
    error = float((got - expected).abs().max())
    return (f"its largest error is {_number(error)}, where the right answers are up to "
            f"{_number(float(expected.abs().max()))} in size")


def _shape_hint(got: tuple, expected: tuple) -> str:
    if expected == ():
        return ": one number, averaged over the batch"
    if len(expected) == 1 and got[:1] == expected:
        return ": one value per example (sum over the data dimensions)"
    if math.prod(got) == math.prod(expected):
        return ": the right number of entries, arranged differently"
    return ""


def _check(your_function, *, exercise: str, reference: Callable, reference_name: str, cases: list,
           outputs: tuple = ("result",), mistakes: tuple = (), factor_hints: dict | None = None) -> None:
    """Compare ``your_function`` with ``reference`` on ``cases``; print a congratulation or raise ExerciseError."""
    if not callable(your_function):
        raise ValueError(f"check_{exercise} takes your function itself (no parentheses after its name), "
                         f"got {type(your_function).__name__}")
    label = getattr(your_function, "__name__", exercise)
    label = exercise if label == "<lambda>" else label
    factor_hints = factor_hints or {}

    expected, got = [], []
    for case in cases:
        want = tuple(v.detach().double() for v in _as_tuple(reference(*case.make_args())))
        try:
            answer = your_function(*case.make_args())
        except NotImplementedError:
            raise ExerciseError(f"{label} is not written yet: replace the `raise NotImplementedError` line "
                                f"with your code, run that cell, then this one.") from None
        except CallError as err:
            raise ExerciseError(f"{label} {err} ({case.where}).") from None
        except Exception as err:
            raise ExerciseError(f"{label} raised {type(err).__name__}: {err} ({case.where}).") from err
        got.append(_validate(answer, want, label, case.where, outputs))
        expected.append(want)

    if all(_close(g, e) for gs, es in zip(got, expected) for g, e in zip(gs, es)):
        print(f"Well done: {label} agrees with {reference_name} on {len(cases)} random inputs.")
        return

    for mistake in mistakes:
        if all(_close(g, w.detach().double())
               for case, gs in zip(cases, got) for g, w in zip(gs, _as_tuple(mistake.output(*case.make_args())))):
            raise ExerciseError(f"Not quite: {label} {mistake.says}.")

    for k, name in enumerate(outputs):
        what = label if len(outputs) == 1 else f"the {name} that {label} returns"
        right = [_close(gs[k], es[k]) for gs, es in zip(got, expected)]
        if all(right):
            continue
        got_k, expected_k = [gs[k] for gs in got], [es[k] for es in expected]
        if all(_close(g, -e) for g, e in zip(got_k, expected_k)):
            raise ExerciseError(f"Not quite: {what} has the wrong sign: it is minus the right answer "
                                f"for every input.")
        factor = _constant_factor(got_k, expected_k)
        if factor is not None:
            raise ExerciseError(f"Not quite: {what} is off by a constant factor: it is {_number(factor)} times "
                                f"the right answer for every input{_hint(factor, factor_hints)}.")
        offset = _constant_offset(got_k, expected_k)
        if offset is not None:
            raise ExerciseError(f"Not quite: {what} is off by a constant: it is the right answer "
                                f"{'plus' if offset > 0 else 'minus'} {_number(abs(offset))} for every input.")
        bad = right.index(False)
        detail = _describe(got[bad][k], expected[bad][k], factor_hints)
        if any(right):
            good = cases[right.index(True)].where
            raise ExerciseError(f"Not quite: {what} is right {good} but not {cases[bad].where}: there {detail}.")
        raise ExerciseError(f"Not quite: {what} does not match {reference_name} {cases[bad].where}: {detail}.")


def _validate(answer, want: tuple, label: str, where: str, outputs: tuple) -> tuple:
    """The learner's answer as a tuple of float64 tensors shaped like ``want``, or an ExerciseError."""
    if answer is None:
        raise ExerciseError(f"{label} returned None ({where}): did you forget the `return`?")
    if len(want) > 1 and (not isinstance(answer, (tuple, list)) or len(answer) != len(want)):
        what = "a single tensor" if isinstance(answer, torch.Tensor) else f"a {type(answer).__name__}"
        raise ExerciseError(f"{label} should return {len(want)} tensors, ({', '.join(outputs)}), "
                            f"but returned {what} ({where}).")
    answers = _as_tuple(answer) if len(want) > 1 else (answer,)
    checked = []
    for value, right, name in zip(answers, want, outputs):
        returned = f"{label} returned" if len(want) == 1 else f"{label} returned {name} as"
        if not isinstance(value, torch.Tensor):
            kind = type(value).__qualname__ if type(value).__module__ == "builtins" else \
                f"{type(value).__module__.split('.')[0]}.{type(value).__qualname__}"
            raise ExerciseError(f"{returned} a {kind}, not a torch tensor ({where}): build it with torch "
                                f"operations (and no .item()).")
        if tuple(value.shape) != tuple(right.shape):
            raise ExerciseError(f"{returned} a tensor of shape {tuple(value.shape)} {where}, but the answer has shape "
                                f"{tuple(right.shape)}{_shape_hint(tuple(value.shape), tuple(right.shape))}.")
        value = value.detach().double()
        if not torch.isfinite(value).all() and torch.isfinite(right).all():
            raise ExerciseError(f"{returned} a tensor with NaN or inf {where}, where the answer is finite: look for "
                                f"a division by zero, the log or square root of a negative number, or an overflow.")
        checked.append(value)
    return tuple(checked)


# --- inputs ---------------------------------------------------------------------------------------


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=_gen(seed))


def _rand(seed: int, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=_gen(seed))


def _mixture(seed: int, dim: int, n_components: int = 2) -> GaussianMixture:
    """A random mixture in ``dim`` dimensions: exact scores of any dimension to feed the checks."""
    weights = _rand(seed, n_components, low=0.5, high=1.5)
    return GaussianMixture(2 * _randn(seed + 1, n_components, dim), _rand(seed + 2, n_components, low=0.3, high=1.0),
                           weights / weights.sum())


def _image_score(mixture: GaussianMixture, sde) -> Callable:
    """The exact score of ``mixture`` diffused by ``sde``, for images ``[B, C, H, W]`` (flattened to its dimension)."""
    score = mixture.perturbed_score(sde)
    return lambda x, t: score(x.flatten(1), t).view_as(x)


def _strict(model: Callable, shape: tuple) -> Callable:
    """``model`` that first checks it is called as a score network is: x of the data's ``shape`` and t of shape [B]."""
    def checked(x, t):
        if tuple(x.shape) != tuple(shape):
            raise CallError(f"called the model with x of shape {tuple(x.shape)}, not the data's shape {tuple(shape)}: "
                            f"reshape std(t) (shape [B]) to [B, 1, ...] so that it broadcasts over x")
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(shape[:1]):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise CallError(f"called the model with t of shape {got}; a score network takes one time per example, "
                            f"t of shape {tuple(shape[:1])}: t.expand(x.shape[0]) repeats a 0-dim t")
        return model(x, t)
    return checked


# --- notebook 1: scores and Langevin dynamics -----------------------------------------------------


def check_gaussian_score(gaussian_score) -> None:
    """``gaussian_score(x [B, D], mean [D], std)``: the score of N(mean, std^2 I), -(x - mean) / std^2, ``[B, D]``.

    Compared with the score of a one-component :class:`~sgm_helpers.toy.GaussianMixture`.
    """
    def reference(x, mean, std):
        return GaussianMixture(mean[None], std).score(x)

    cases = [Case(f"for x of shape {(b, d)} and std = {std}",
                  lambda b=b, d=d, std=std, s=s: (3 * _randn(s, b, d), _randn(s + 1, d), std))
             for s, (b, d, std) in enumerate([(5, 2, 0.5), (3, 1, 2.0), (4, 7, 1.5)])]
    _check(gaussian_score, exercise="gaussian_score", reference=reference,
           reference_name="GaussianMixture.score", cases=cases, mistakes=(
               Mistake("divides by std; the score divides by the variance std**2",
                       lambda x, mean, std: reference(x, mean, std) * std),))


def check_langevin_step(langevin_step) -> None:
    """``langevin_step(score_fn, x, step_size, generator)``: one Langevin update with z drawn from ``generator``,

        x + step_size * score_fn(x) + sqrt(2 * step_size) * z,      z = torch.randn(x.shape, generator=generator).

    Compared with one step of :func:`~sgm_helpers.langevin.langevin_dynamics`.
    """
    def reference(score_fn, x, step_size, generator):
        return langevin_dynamics(score_fn, x, step_size, 1, generator=generator)

    def half_noise(score_fn, x, step_size, generator):  # x + step (2 s) / 2 + sqrt(2 step / 2) z
        return reference(lambda y: 2 * score_fn(y), x, step_size / 2, generator)

    def no_noise(score_fn, x, step_size, generator):  # the update minus its noise term
        noise = reference(torch.zeros_like, x, step_size, _gen(generator.initial_seed())) - x
        return reference(score_fn, x, step_size, generator) - noise

    targets = [three_modes(), _mixture(10, 5), _mixture(20, 1)]
    cases = [Case(f"for x of shape {tuple(shape)} and step_size = {step}",
                  lambda target=target, shape=shape, step=step, s=s: (target.score, 2 * _randn(s, *shape), step, _gen(100 + s)))
             for s, (target, shape, step) in enumerate(zip(targets, [(6, 2), (4, 5), (3, 1)], [0.1, 0.01, 0.5]))]
    _check(langevin_step, exercise="langevin_step", reference=reference,
           reference_name="sgm_helpers.langevin.langevin_dynamics", cases=cases, mistakes=(
               Mistake("moves against the score: the update adds step_size * score_fn(x)",
                       lambda f, x, step, g: reference(lambda y: -f(y), x, step, g)),
               Mistake("uses noise sqrt(step_size) * z; Langevin dynamics needs sqrt(2 * step_size) * z", half_noise),
               Mistake("leaves out the noise sqrt(2 * step_size) * z: without it the particles only climb to a mode",
                       no_noise)))


def check_noised_gaussian_score(noised_gaussian_score) -> None:
    """``noised_gaussian_score(x [B, D], mean [D], std, sigma)``: the score of N(mean, std^2 I) convolved with
    N(0, sigma^2 I), i.e. of N(mean, (std^2 + sigma^2) I): -(x - mean) / (std^2 + sigma^2), ``[B, D]``.

    Compared with ``GaussianMixture.score(x, sigma)`` of a one-component mixture.
    """
    def reference(x, mean, std, sigma):
        return GaussianMixture(mean[None], std).score(x, sigma)

    cases = [Case(f"for x of shape {(b, d)}, std = {std} and sigma = {sigma}",
                  lambda b=b, d=d, std=std, sigma=sigma, s=s: (3 * _randn(s, b, d), _randn(s + 1, d), std, sigma))
             for s, (b, d, std, sigma) in enumerate([(5, 2, 0.5, 2.0), (3, 1, 1.0, 0.1), (4, 3, 0.3, 1.0)])]
    _check(noised_gaussian_score, exercise="noised_gaussian_score", reference=reference,
           reference_name="GaussianMixture.score(x, sigma)", cases=cases, mistakes=(
               Mistake("adds the standard deviations; independent noise adds variances: std**2 + sigma**2",
                       lambda x, mean, std, sigma: GaussianMixture(mean[None], std + sigma).score(x)),
               Mistake("ignores the noise: that is the score of p, not of p_sigma",
                       lambda x, mean, std, sigma: GaussianMixture(mean[None], std).score(x))))


# --- notebook 2: the VE SDE and the loss ----------------------------------------------------------


def _time_cases() -> list:
    """t of three shapes in [0.05, 1] (not near 0, where float32 rounding of sigma**(2t) - 1 is large) and three sigmas."""
    return [Case(f"for {f't of shape {shape}' if shape else 'a 0-dim t'} and sigma = {sigma:g}",
                 lambda shape=shape, sigma=sigma, s=s: (_rand(s, *shape, low=0.05), sigma))
            for s, (shape, sigma) in enumerate([((7,), 25.0), ((2, 3), 5.0), ((), 2.0)])]


def check_ve_std(marginal_prob_std) -> None:
    """``marginal_prob_std(t, sigma)``: the VE SDE's std(t) = sqrt((sigma^(2t) - 1) / (2 ln sigma)), shaped like ``t``.

    Compared with :meth:`VESDE.marginal_prob_std <sgm_helpers.sde.VESDE.marginal_prob_std>`.
    """
    def reference(t, sigma):
        return VESDE(sigma).marginal_prob_std(t)

    _check(marginal_prob_std, exercise="ve_std", reference=reference, reference_name="VESDE.marginal_prob_std",
           cases=_time_cases(), factor_hints={math.sqrt(2): "the variance divides by 2 ln sigma",
                                              math.sqrt(math.log(10)): "use the natural log, math.log"},
           mistakes=(Mistake("returns the variance std(t)**2: take its square root", lambda t, s: reference(t, s) ** 2),
                     Mistake("uses sigma**t where the variance has sigma**(2 t)", lambda t, s: reference(t / 2, s))))


def check_ve_diffusion_coeff(diffusion_coeff) -> None:
    """``diffusion_coeff(t, sigma)``: the VE SDE's g(t) = sigma^t, shaped like ``t``.

    Compared with :meth:`VESDE.diffusion_coeff <sgm_helpers.sde.VESDE.diffusion_coeff>`.
    """
    def reference(t, sigma):
        return VESDE(sigma).diffusion_coeff(t)

    _check(diffusion_coeff, exercise="ve_diffusion_coeff", reference=reference,
           reference_name="VESDE.diffusion_coeff", cases=_time_cases(),
           mistakes=(Mistake("returns g(t)**2 = sigma**(2 t); g(t) = sigma**t", lambda t, s: reference(t, s) ** 2),))


def _linear_model(seed: int, dim: int) -> Callable:
    """A fixed, imperfect "score network" for loss checks: s(x, t) = (x W) (1 + t), any data shape of size ``dim``."""
    weight = 0.5 * _randn(seed, dim, dim)
    return lambda x, t: (x.flatten(1) @ weight).view_as(x) * batch_view(1 + t, x)


def check_dsm_loss(loss_fn) -> None:
    """``loss_fn(model, x, marginal_prob_std, eps, generator)``: the denoising score matching loss, a scalar.

    With t ~ U(eps, 1) and z ~ N(0, I) drawn from ``generator`` as the stub does (t first, then z),

        loss = mean over the batch of || std(t) * model(x + std(t) z, t) + z ||^2, summed over the data dims.

    Compared with :func:`~sgm_helpers.losses.dsm_loss`.
    """
    sde = VESDE(25.0)
    data = [three_modes().sample(64, generator=_gen(0)), _rand(1, 8, 1, 4, 4), _randn(2, 16, 3)]
    models = [lambda x, t: 1.3 * three_modes().perturbed_score(sde)(x, t), _linear_model(3, 16), _linear_model(4, 3)]
    cases = [Case(f"for x of shape {tuple(x.shape)} and eps = {eps}",
                  lambda x=x, model=model, eps=eps, s=s: (_strict(model, x.shape), x.clone(), sde.marginal_prob_std, eps,
                                                          _gen(200 + s)))
             for s, (x, model, eps) in enumerate(zip(data, models, [1e-5, 1e-3, 1e-2]))]
    _check(loss_fn, exercise="dsm_loss", reference=dsm_loss, reference_name="sgm_helpers.losses.dsm_loss",
           cases=cases, mistakes=(
               Mistake("has the wrong sign inside the norm: the target score is -z / std, so the loss is "
                       "|| std * s + z ||^2", lambda m, x, std, eps, g: dsm_loss(lambda y, t: -m(y, t), x, std, eps, g)),
               Mistake("averages over the data dimensions; the loss sums over them, then averages over the batch",
                       lambda m, x, std, eps, g: dsm_loss(m, x, std, eps, g) / x[0].numel()),
               Mistake("sums over the batch; the loss averages over it",
                       lambda m, x, std, eps, g: dsm_loss(m, x, std, eps, g) * len(x))))


# --- notebook 3: the network and its training ------------------------------------------------------


def check_fourier_features(fourier_features) -> None:
    """``fourier_features(t [B], W [E/2])``: the time embedding [sin(2 pi W t), cos(2 pi W t)], ``[B, E]``.

    Compared with :class:`~sgm_helpers.models.GaussianFourierProjection` holding the same ``W``.
    """
    def reference(t, W):
        with torch.random.fork_rng(devices=[]):  # its constructor draws a W we replace: leave the global RNG alone
            projection = GaussianFourierProjection(2 * W.numel()).to(W.dtype)
        projection.W.copy_(W)
        return projection(t)

    def cos_first(t, W):
        features = reference(t, W)
        return torch.cat([features[:, W.numel():], features[:, :W.numel()]], dim=1)

    # float64: sin(2 pi W t) of angles in the hundreds loses ~1e-5 to float32 rounding, which depends on the order
    # in which 2 pi, W and t are multiplied
    cases = [Case(f"for t of shape {(b,)} and W of shape {(k,)}",
                  lambda b=b, k=k, s=s: (_rand(s, b).double(), 30 * _randn(s + 1, k).double()))
             for s, (b, k) in enumerate([(5, 4), (1, 16), (7, 1)])]
    _check(fourier_features, exercise="fourier_features", reference=reference,
           reference_name="GaussianFourierProjection", cases=cases, mistakes=(
               Mistake("leaves out the 2 pi: the features are sin(2 pi W t) and cos(2 pi W t)",
                       lambda t, W: reference(t, W / (2 * math.pi))),
               Mistake("puts the cosines first; the features are [sin(2 pi W t), cos(2 pi W t)]", cos_first)))


def check_ema_update(ema_update) -> None:
    """``ema_update(ema_param, param, decay)``: one step of the exponential moving average, a new tensor

        decay * ema_param + (1 - decay) * param.

    Compared with :func:`~sgm_helpers.training.make_ema` (``torch.optim.swa_utils.AveragedModel``), which
    the training loop updates after every optimizer step.
    """
    def reference(ema_param, param, decay):
        model = torch.nn.Module()
        model.weight = torch.nn.Parameter(ema_param.clone())
        ema = make_ema(model, decay)
        ema.update_parameters(model)  # the first update copies the weights: the average starts at ema_param
        model.weight.data.copy_(param)
        ema.update_parameters(model)
        return ema.module.weight.detach().clone()

    cases = [Case(f"for parameters of shape {shape} and decay = {decay}",
                  lambda shape=shape, decay=decay, s=s: (_randn(s, *shape), 1 + _randn(s + 1, *shape), decay))
             for s, (shape, decay) in enumerate([((5,), 0.999), ((3, 4), 0.9), ((2, 1, 3, 3), 0.75)])]
    _check(ema_update, exercise="ema_update", reference=reference, reference_name="sgm_helpers.training.make_ema",
           cases=cases, mistakes=(
               Mistake("swaps the weights: the average keeps the fraction decay of its old value, "
                       "decay * ema_param + (1 - decay) * param", lambda ema, p, d: reference(p, ema, d)),))


# --- notebook 4: samplers -------------------------------------------------------------------------


def _sampler_cases(times: bool = True) -> list:
    """Points of three shapes with the exact toy scores of VE SDEs, at 0-dim times t (and t_next) as the sampler loop has."""
    setups = [(VESDE(25.0), three_modes(), (6, 2), 1.0, 0.99),
              (VESDE(25.0), _mixture(30, 4), (4, 1, 2, 2), 0.5, 0.45),
              (VESDE(5.0), _mixture(40, 3), (5, 3), 0.2, 0.19)]
    cases = []
    for s, (sde, mixture, shape, t, t_next) in enumerate(setups):
        score = _image_score(mixture, sde) if len(shape) > 2 else mixture.perturbed_score(sde)
        where = f"for x of shape {shape}, sigma = {sde.sigma:g} and t = {t}" + (f", t_next = {t_next}" if times else "")
        cases.append((where, _strict(score, shape), sde, shape, torch.tensor(t), torch.tensor(t_next), s))
    return cases


def check_euler_maruyama_step(euler_maruyama_step) -> None:
    """``euler_maruyama_step(score_model, sde, x, t, t_next, generator)``: one Euler-Maruyama step of the reverse SDE
    from t down to t_next = t - dt, returning ``(x, x_mean)``:

        x_mean = x - [f(x, t) - g(t)^2 s(x, t)] dt      (VE: x + g(t)^2 s(x, t) dt)
        x      = x_mean + g(t) sqrt(dt) z,              z = torch.randn(x.shape, generator=generator).

    Checked on VE SDEs. Compared with :func:`sgm_helpers.samplers.euler_maruyama_step`.
    """
    reference = samplers.euler_maruyama_step

    def forward_in_time(score_model, sde, x, t, t_next, generator):
        new, mean = reference(score_model, sde, x, t, t_next, generator)
        return 2 * x - mean + (new - mean), 2 * x - mean

    def no_sqrt_dt(score_model, sde, x, t, t_next, generator):
        new, mean = reference(score_model, sde, x, t, t_next, generator)
        return mean + (new - mean) / torch.sqrt(t - t_next), mean

    cases = [Case(where, lambda score=score, sde=sde, shape=shape, t=t, t_next=t_next, s=s:
                  (score, sde, sde.marginal_prob_std(t) * _randn(s, *shape), t, t_next, _gen(300 + s)))
             for where, score, sde, shape, t, t_next, s in _sampler_cases()]
    _check(euler_maruyama_step, exercise="euler_maruyama_step", reference=reference,
           reference_name="sgm_helpers.samplers.euler_maruyama_step", cases=cases, outputs=("x", "x_mean"), mistakes=(
               Mistake("steps forward in time: the reverse SDE goes from t to t - dt, so x_mean = x - drift * dt "
                       "(for VE, x + g(t)**2 * score * dt)", forward_in_time),
               Mistake("leaves out sqrt(dt) in the noise: x = x_mean + g(t) * sqrt(dt) * z", no_sqrt_dt)))


def check_langevin_corrector_step(langevin_corrector_step) -> None:
    """``langevin_corrector_step(score_model, sde, x, t, snr, generator)``: one Langevin step at fixed t whose step size
    makes the signal-to-noise ratio ``snr``:

        step = 2 (snr sqrt(D) / mean over the batch of ||s(x, t)||)^2,       D = x[0].numel()
        x    = x + step s(x, t) + sqrt(2 step) z,                            z = torch.randn(x.shape, generator=generator).

    Compared with :func:`sgm_helpers.samplers.langevin_corrector_step`.
    """
    reference = samplers.langevin_corrector_step
    snrs = [0.16, 0.05, 0.3]
    cases = [Case(f"{where} and snr = {snr}", lambda score=score, sde=sde, shape=shape, t=t, s=s, snr=snr:
                  (score, sde, sde.marginal_prob_std(t) * _randn(s, *shape), t, snr, _gen(400 + s)))
             for (where, score, sde, shape, t, _, s), snr in zip(_sampler_cases(times=False), snrs)]
    _check(langevin_corrector_step, exercise="langevin_corrector_step", reference=reference,
           reference_name="sgm_helpers.samplers.langevin_corrector_step", cases=cases, mistakes=(
               Mistake("uses half the step size: step = 2 (snr sqrt(D) / ||s||)**2 has a factor 2",
                       lambda m, sde, x, t, snr, g: reference(m, sde, x, t, snr / math.sqrt(2), g)),
               Mistake("uses D where the step size has sqrt(D): step = 2 (snr sqrt(D) / ||s||)**2",
                       lambda m, sde, x, t, snr, g: reference(m, sde, x, t, snr * math.sqrt(x[0].numel()), g))))


def _drift_cases() -> list:
    """x, a [B] tensor of times and a score of the same shape as x, for three VE SDEs."""
    return [Case(f"for x of shape {shape}, sigma = {sigma:g} and t of shape {shape[:1]}",
                 lambda shape=shape, sigma=sigma, s=s: (VESDE(sigma), 3 * _randn(s, *shape), _rand(s + 1, shape[0]),
                                                        _randn(s + 2, *shape)))
            for s, (shape, sigma) in enumerate([((5, 2), 25.0), ((3, 1, 2, 2), 25.0), ((4, 3), 10.0)])]


def check_probability_flow_drift(probability_flow_drift) -> None:
    """``probability_flow_drift(sde, x, t, score)``: the drift of the probability-flow ODE, shaped like ``x``,

        dx/dt = f(x, t) - 1/2 g(t)^2 score        (VE: -1/2 g(t)^2 score),     t a [B] tensor.

    Checked on VE SDEs. Compared with :meth:`SDE.reverse_drift(..., probability_flow=True) <sgm_helpers.sde.SDE.reverse_drift>`.
    """
    def reference(sde, x, t, score):
        return sde.reverse_drift(x, t, score, probability_flow=True)

    _check(probability_flow_drift, exercise="probability_flow_drift", reference=reference,
           reference_name="SDE.reverse_drift(..., probability_flow=True)", cases=_drift_cases(), mistakes=(
               Mistake("is the reverse SDE's drift f - g**2 * score; the probability-flow ODE has half the score "
                       "term, f - 1/2 g**2 * score", lambda sde, x, t, score: sde.reverse_drift(x, t, score)),))


def check_tweedie_denoise(tweedie_denoise) -> None:
    """``tweedie_denoise(sde, x, t, score)``: Tweedie's estimate E[x(0) | x(t)] = (x + std(t)^2 score) / alpha(t),
    shaped like ``x`` (VE: alpha = 1, so x + std(t)^2 score), ``t`` a [B] tensor.

    Checked on VE SDEs. Compared with :meth:`SDE.tweedie_denoise <sgm_helpers.sde.SDE.tweedie_denoise>`.
    """
    def reference(sde, x, t, score):
        return sde.tweedie_denoise(x, t, score)

    def std_not_variance(sde, x, t, score):
        return reference(sde, x, t, score / batch_view(sde.marginal_prob_std(t), x))

    _check(tweedie_denoise, exercise="tweedie_denoise", reference=reference, reference_name="SDE.tweedie_denoise",
           cases=_drift_cases(), mistakes=(
               Mistake("moves against the score: the estimate is x + std(t)**2 * score",
                       lambda sde, x, t, score: reference(sde, x, t, -score)),
               Mistake("multiplies the score by std(t); it takes the variance std(t)**2", std_not_variance)))


# --- notebook 5: likelihoods ----------------------------------------------------------------------


def check_hutchinson_divergence(hutchinson_estimate) -> None:
    """``hutchinson_estimate(fn, x, t, noise)``: ``(fn(x, t), estimate)`` with the Skilling-Hutchinson estimate
    of the divergence of ``fn`` at x from the probe v = ``noise``, one number per example:

        estimate = v^T (d fn / dx) v,    v^T (d fn / dx) being one vector-Jacobian product.

    Compared with :func:`sgm_helpers.likelihood.hutchinson_divergence`, with Gaussian and Rademacher probes.
    """
    sde = VESDE(25.0)
    setups = [(three_modes().perturbed_score(sde), (6, 2), "gaussian"),
              (_image_score(_mixture(50, 4), sde), (3, 1, 2, 2), "rademacher"),
              (_mixture(60, 5).perturbed_score(sde), (4, 5), "gaussian")]
    cases = [Case(f"for x of shape {shape} and {kind} probes",
                  lambda fn=fn, shape=shape, kind=kind, s=s: (fn, 2 * _randn(s, *shape), _rand(s + 1, shape[0], low=0.05),
                                                              hutchinson_noise(shape, kind, _gen(s + 2))))
             for s, (fn, shape, kind) in enumerate(setups)]
    _check(hutchinson_estimate, exercise="hutchinson_divergence", reference=hutchinson_divergence,
           reference_name="sgm_helpers.likelihood.hutchinson_divergence", cases=cases,
           outputs=("fn(x, t)", "estimate"))


def check_bits_per_dim(bits_per_dim_fn) -> None:
    """``bits_per_dim_fn(logp [B], x [B, ...])``: bits per dimension of dequantized 8-bit images, ``[B]``,

        bpd = -logp / (D ln 2) + 8,     D = x[0].numel().

    Compared with :func:`sgm_helpers.likelihood.bits_per_dim`.
    """
    def case(shape, s):
        d = math.prod(shape[1:])
        return lambda: ((8 - _rand(s, shape[0], low=1, high=5)) * d * math.log(2), _rand(s + 1, *shape))

    cases = [Case(f"for x of shape {shape}", case(shape, s))
             for s, shape in enumerate([(4, 1, 28, 28), (3, 2, 4, 4), (5, 10)])]
    _check(bits_per_dim_fn, exercise="bits_per_dim", reference=bits_per_dim,
           reference_name="sgm_helpers.likelihood.bits_per_dim", cases=cases, mistakes=(
               Mistake("leaves out the + 8: a density on [0, 1) per pixel, rescaled to the 256 levels of a byte, "
                       "costs log2(256) = 8 more bits per dimension", lambda logp, x: bits_per_dim(logp, x) - 8),
               Mistake("gives nats, not bits: divide by ln 2 as well", lambda logp, x: bits_per_dim(logp * math.log(2), x)),
               Mistake("divides by the size of the whole batch; D is the size of one example, x[0].numel()",
                       lambda logp, x: bits_per_dim(logp / len(x), x)),
               Mistake("uses log p where bits/dim measure the code length -log2 p",
                       lambda logp, x: bits_per_dim(-logp, x))))


def check_prior_logp(prior_logp) -> None:
    """``prior_logp(z [B, ...], sde)``: log N(z; 0, sde.prior_std()^2 I), summed over the data dims, ``[B]``:

        -D/2 log(2 pi std^2) - ||z||^2 / (2 std^2),    std = sde.prior_std(), D = z[0].numel().

    Compared with :meth:`SDE.prior_logp <sgm_helpers.sde.SDE.prior_logp>`.
    """
    def reference(z, sde):
        return sde.prior_logp(z)

    cases = [Case(f"for z of shape {shape} and sigma = {sigma:g}",
                  lambda shape=shape, sigma=sigma, s=s: (VESDE(sigma).prior_std() * _randn(s, *shape), VESDE(sigma)))
             for s, (shape, sigma) in enumerate([((4, 1, 4, 4), 25.0), ((6, 2), 5.0), ((3, 7), 2.0)])]
    _check(prior_logp, exercise="prior_logp", reference=reference, reference_name="SDE.prior_logp", cases=cases,
           mistakes=(
               Mistake("leaves out the normalizing term -D/2 log(2 pi std**2)",
                       lambda z, sde: sde.prior_logp(z) - sde.prior_logp(torch.zeros_like(z))),
               Mistake("divides ||z||**2 by 2 std; the exponent is -||z||**2 / (2 std**2)",
                       lambda z, sde: sde.prior_logp(z * math.sqrt(sde.prior_std())))))
