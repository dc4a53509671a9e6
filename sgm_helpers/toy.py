"""Toy distributions whose score is known exactly: Gaussian mixtures, and a Gaussian with a full covariance.

A mixture of K Gaussians with diagonal covariances in D dimensions,

    p(x) = sum_k w_k N(x; mu_k, diag(s_k^2)),

has an exact score. With the responsibilities r_k(x) = w_k N_k(x) / p(x) (the posterior
probability that x came from component k),

    grad_x log p(x) = sum_k r_k(x) * (-(x - mu_k) / s_k^2).

Perturbing the data with Gaussian noise, x + sigma z, keeps it a mixture: every component variance
grows by sigma^2. So the noise-conditional score grad_x log p_sigma(x) is exact too, and so is the
score of every SDE's marginal p_t: x(t) = alpha(t) x(0) + std(t) z turns component k into
N(alpha mu_k, alpha^2 s_k^2 + std^2). That makes a mixture the place to check a sampler or a
likelihood against the truth, for VE, VP and sub-VP alike.

Everything is computed from log-densities with ``logsumexp`` / ``softmax``, never as a ratio of
densities, so points far from every mode get a finite score (pointing back to the nearest mode)
instead of 0 / 0.
"""

from __future__ import annotations

import math

import torch

from .sde import sde_of
from .utils import check_positive, check_positive_int, rand, randn

_LOG_2PI = math.log(2 * math.pi)


def _check_sigma(sigma) -> float:
    """A noise level given as a number: finite and >= 0 (0 means no noise)."""
    if (not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not math.isfinite(sigma)
            or sigma < 0):
        raise ValueError(f"sigma must be a finite number >= 0 or a [B] tensor of them, got {sigma!r}")
    return float(sigma)


def _as_float64(value, name: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be numbers (a tensor or nested lists), got {value!r}") from None
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return t.detach().cpu()


class GaussianMixture:
    """p(x) = sum_k w_k N(x; mu_k, diag(s_k^2)) in D dimensions, with exact log-density and score.

    Args:
        means: ``[K, D]`` component means.
        stds: component standard deviations: a number (the same isotropic std for all), ``[K]``
            (isotropic, one per component) or ``[K, D]`` (diagonal covariances). All > 0.
        weights: ``[K]`` positive weights summing to 1 (within 1e-6; then normalised exactly).
            None means equal weights. Weights that do not sum to 1 are an error, not rescaled:
            pass ``w / w.sum()`` if you mean that.

    ``sigma`` below is the std of added Gaussian noise: ``log_prob(x, sigma)`` and
    ``score(x, sigma)`` describe p_sigma = p convolved with N(0, sigma^2 I), the mixture whose
    component variances are s_k^2 + sigma^2. ``sigma`` is a number or a ``[B]`` tensor (one per
    example). Points ``x`` are ``[B, D]`` (any leading dims work: ``[..., D]``); results follow
    ``x``'s dtype and device. Parameters are stored in float64 on the CPU.
    """

    def __init__(self, means, stds, weights=None):
        means = _as_float64(means, "means")
        if means.dim() != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means must have shape [K, D] with K, D >= 1, got {tuple(means.shape)}")
        k, d = means.shape
        stds = _as_float64(stds, "stds")
        if stds.dim() == 0 or tuple(stds.shape) == (k,):
            stds = stds.reshape(-1, 1).expand(k, d)
        elif tuple(stds.shape) != (k, d):
            raise ValueError(f"stds must be a number, [K] = [{k}] or [K, D] = [{k}, {d}], got {tuple(stds.shape)}")
        if (stds <= 0).any():
            raise ValueError("stds must all be > 0")
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
        weights = _as_float64(weights, "weights")
        if tuple(weights.shape) != (k,):
            raise ValueError(f"weights must have shape [K] = [{k}], got {tuple(weights.shape)}")
        if (weights <= 0).any():
            raise ValueError("weights must all be > 0 (drop a component instead of giving it weight 0)")
        if abs(float(weights.sum()) - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1, got sum {float(weights.sum()):.6g}; "
                             "pass weights / weights.sum() to normalise them")
        self.means = means
        self.stds = stds.clone()
        self.weights = weights / weights.sum()

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def __repr__(self) -> str:
        return f"GaussianMixture(n_components={self.n_components}, dim={self.dim}, weights={self.weights.tolist()})"

    # --- moments and sampling ---------------------------------------------------------------

    def mean(self) -> torch.Tensor:
        """The mixture mean sum_k w_k mu_k, ``[D]`` (float64)."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """The mixture covariance sum_k w_k (diag(s_k^2) + mu_k mu_k^T) - m m^T, ``[D, D]`` (float64)."""
        m = self.mean()
        second = torch.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        return second + torch.diag(self.weights @ self.stds**2) - torch.outer(m, m)

    def noised(self, sigma: float) -> "GaussianMixture":
        """The mixture convolved with N(0, sigma^2 I): the same means and weights, variances s_k^2 + sigma^2."""
        sigma = _check_sigma(sigma)
        return GaussianMixture(self.means, torch.sqrt(self.stds**2 + sigma**2), self.weights)

    def sample(self, n: int, generator: torch.Generator | None = None, *, return_labels: bool = False,
               device=None, dtype=None):
        """Draw ``n`` points ``[n, D]``: a component k ~ Categorical(w), then x ~ N(mu_k, diag(s_k^2)).

        With ``return_labels=True`` returns ``(x, labels)``, ``labels`` ``[n]`` the components drawn.
        """
        n = check_positive_int(n, "n")
        dtype = dtype or torch.get_default_dtype()
        u = rand((n,), generator, device, torch.float64)
        cdf = torch.cumsum(self.weights, 0).to(u.device)
        labels = torch.searchsorted(cdf, u, right=True).clamp_(max=self.n_components - 1)
        z = randn((n, self.dim), generator, device, torch.float64)
        x = self.means.to(z.device)[labels] + self.stds.to(z.device)[labels] * z
        return (x.to(dtype), labels) if return_labels else x.to(dtype)

    # --- densities and scores ---------------------------------------------------------------

    def _terms(self, x: torch.Tensor, sigma, scale=1.0):
        """The per-component quantities everything else is built from, for the points x flattened to [N, D].

        The mixture is first scaled by ``scale`` (alpha: means alpha mu_k, stds alpha s_k), then
        convolved with N(0, sigma^2 I). Returns ``a`` ``[K, N, D]`` with a_k = (x - alpha mu_k) / v_k
        (minus component k's score), ``logits`` ``[K, N]`` with log w_k + log N(x; alpha mu_k, diag(v_k)),
        and the variances v_k = alpha^2 s_k^2 + sigma^2 ``[K, D]`` (``[K, N, D]`` for per-example values).
        Components come first and sums over D are products with a vector of ones: reductions over
        a short last dimension are slow on the CPU.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError("x must be a floating-point tensor [B, D]")
        if x.dim() < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape [B, D] with D = {self.dim}, got {tuple(x.shape)}")
        xf = x.reshape(-1, self.dim)
        s2 = self._per_example(sigma, x, "sigma", minimum=0.0) ** 2
        alpha = self._per_example(scale, x, "scale", minimum=None)
        means = self.means.to(x.device, x.dtype)
        var = self.stds.to(x.device, x.dtype) ** 2
        if s2.dim() == 2 or alpha.dim() == 2:  # one value per example: [N, 1], components get a point axis
            means, var = means.unsqueeze(1) * alpha, var.unsqueeze(1)
        else:
            means = means * alpha
        var = alpha ** 2 * var + s2
        log_w = torch.log(self.weights.to(x.device, x.dtype))
        ones = torch.ones(self.dim, device=x.device, dtype=x.dtype)
        a, logits = [], []
        for k in range(self.n_components):
            diff = xf - means[k]
            a_k = diff / var[k]
            logits.append(log_w[k] - 0.5 * ((diff * a_k) @ ones + torch.log(var[k]) @ ones + self.dim * _LOG_2PI))
            a.append(a_k)
        return torch.stack(a), torch.stack(logits), var

    @staticmethod
    def _per_example(value, x: torch.Tensor, name: str, minimum) -> torch.Tensor:
        """A number (a 0-dim tensor) or a ``[B]`` tensor (one per example, as ``[N, 1]`` over the flattened points)."""
        if not isinstance(value, torch.Tensor):
            if name == "sigma":
                value = _check_sigma(value)
            elif (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
                    or value <= 0):
                raise ValueError(f"{name} must be a finite number > 0 or a [B] tensor of them, got {value!r}")
            return torch.tensor(float(value), dtype=x.dtype, device=x.device)
        if not torch.isfinite(value).all() or (minimum is not None and (value < minimum).any()) or (
                minimum is None and (value <= 0).any()):
            raise ValueError(f"{name} must be finite and {'>= 0' if minimum is not None else '> 0'}")
        if value.dim() > 1 or (value.dim() == 1 and (x.dim() < 2 or value.shape[0] != x.shape[0])):
            raise ValueError(f"a {name} tensor must be a scalar or [B] with B = x.shape[0], "
                             f"got {tuple(value.shape)} for x of shape {tuple(x.shape)}")
        value = value.to(x.device, x.dtype)
        if value.dim() == 1:  # repeated over any middle dims of x
            value = value.reshape((-1,) + (1,) * (x.dim() - 2)).expand(x.shape[:-1]).reshape(-1, 1)
        return value

    def _per_point(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """[K, N] (per component and flattened point) -> [..., K] following x's leading dims."""
        return values.T.reshape(x.shape[:-1] + (self.n_components,))

    def component_log_probs(self, x: torch.Tensor, sigma=0.0, scale=1.0) -> torch.Tensor:
        """log w_k + log N(x; mu_k, diag(s_k^2 + sigma^2)) for every component: ``[B, K]``."""
        return self._per_point(self._terms(x, sigma, scale)[1], x)

    def log_prob(self, x: torch.Tensor, sigma=0.0, scale=1.0) -> torch.Tensor:
        """log p_sigma(x) = logsumexp_k [log w_k + log N_k(x)]: ``[B]`` for ``x`` ``[B, D]``."""
        return torch.logsumexp(self._terms(x, sigma, scale)[1], dim=0).reshape(x.shape[:-1])

    def responsibilities(self, x: torch.Tensor, sigma=0.0, scale=1.0) -> torch.Tensor:
        """r_k(x) = P(component k | x) = softmax_k [log w_k + log N_k(x)]: ``[B, K]``, rows sum to 1."""
        return self._per_point(torch.softmax(self._terms(x, sigma, scale)[1], dim=0), x)

    def assign(self, x: torch.Tensor, sigma=0.0, scale=1.0) -> torch.Tensor:
        """The most probable component of each point, argmax_k r_k(x): ``[B]`` integer labels."""
        return self._terms(x, sigma, scale)[1].argmax(dim=0).reshape(x.shape[:-1])

    def score(self, x: torch.Tensor, sigma=0.0, scale=1.0) -> torch.Tensor:
        """grad_x log p_sigma(x) = sum_k r_k(x) * (-(x - mu_k) / (s_k^2 + sigma^2)): same shape as ``x``.

        Called as ``score(x, sigma)`` with ``sigma`` a ``[B]`` tensor this is the exact
        noise-conditional score that :func:`~sgm_helpers.langevin.annealed_langevin_dynamics` wants.
        Differentiable with autograd (the likelihood's divergence needs that).
        """
        a, logits, _ = self._terms(x, sigma, scale)
        r = torch.softmax(logits, dim=0)
        return -(r.unsqueeze(-1) * a).sum(0).reshape(x.shape)

    def score_divergence(self, x: torch.Tensor, sigma=0.0, scale=1.0) -> torch.Tensor:
        """div_x score = Laplacian of log p_sigma, in closed form: ``[B]``.

        With the component scores u_k = -(x - mu_k) / v_k (v_k = s_k^2 + sigma^2) and s = sum_k r_k u_k,
        the Hessian of log p is sum_k r_k (-diag(1 / v_k) + u_k u_k^T) - s s^T, whose trace is

            sum_k r_k (|u_k|^2 - sum_d 1 / v_kd) - |s|^2.
        """
        a, logits, var = self._terms(x, sigma, scale)
        r = torch.softmax(logits, dim=0)
        s = (r.unsqueeze(-1) * a).sum(0)  # minus the score; only its square appears
        inv_var_sum = (1.0 / var).sum(-1)  # [K] or [K, N]
        per_k = (a**2).sum(-1) - (inv_var_sum if inv_var_sum.dim() == 2 else inv_var_sum.unsqueeze(-1))
        return ((r * per_k).sum(0) - (s**2).sum(-1)).reshape(x.shape[:-1])

    # --- the SDE's marginals p_t -----------------------------------------------------------------

    def diffused(self, sde, t: float) -> "GaussianMixture":
        """p_t, the mixture diffused by ``sde`` to time ``t``: means alpha(t) mu_k, variances alpha^2 s_k^2 + std(t)^2.

        (x(t) = alpha x(0) + std z with x(0) from component k is Gaussian, so p_t is again a mixture
        with the same weights.) For VE, alpha = 1 and this is :meth:`noised` with sigma = std(t).
        """
        alpha, std = _alpha_std(sde, torch.tensor(float(t), dtype=torch.float64))
        return GaussianMixture(self.means * float(alpha), torch.sqrt(float(alpha) ** 2 * self.stds ** 2 + float(std) ** 2),
                               self.weights)

    def perturbed_score(self, sde):
        """The exact score of p_t, the mixture diffused by the SDE to time t, as a score model.

        p_t is the mixture with means alpha(t) mu_k and variances alpha(t)^2 s_k^2 + std(t)^2, so
        grad_x log p_t(x) = ``score(x, sigma=std(t), scale=alpha(t))``. The returned function is called
        ``score_model(x [B, D], t [B]) -> [B, D]`` like a trained network, so the samplers and
        :func:`~sgm_helpers.likelihood.ode_likelihood` take it unchanged. ``sde`` is any
        :class:`~sgm_helpers.sde.SDE` (VE, VP, sub-VP) or its bound ``marginal_prob_std``, or any other function
        ``t -> std(t)`` (then alpha = 1).
        """
        _check_sde(sde)

        def score_model(x: torch.Tensor, t) -> torch.Tensor:
            alpha, std = _alpha_std(sde, t, x)
            return self.score(x, sigma=std, scale=alpha)

        score_model.__doc__ = f"Exact score of {self!r} diffused to time t by {sde!r}: (x [B, D], t [B]) -> [B, D]."
        return score_model

    def perturbed_log_prob(self, sde):
        """log p_t(x) of the diffused mixture, as a function ``(x [B, D], t) -> [B]`` (see :meth:`perturbed_score`)."""
        _check_sde(sde)

        def log_prob_t(x: torch.Tensor, t) -> torch.Tensor:
            alpha, std = _alpha_std(sde, t, x)
            return self.log_prob(x, sigma=std, scale=alpha)

        log_prob_t.__doc__ = f"Exact log-density of {self!r} diffused to time t by {sde!r}: (x, t) -> [B]."
        return log_prob_t

    def perturbed_log_posterior(self, sde):
        """The exact noisy posterior of the components, log p_t(k | x), as a classifier ``(x [B, D], t) -> [B, K]``.

        With the components as classes, p_t(k | x) is the responsibility of component k in the diffused
        mixture p_t (weights w_k, means alpha(t) mu_k, variances alpha(t)^2 s_k^2 + std(t)^2):

            log p_t(k | x) = log w_k + log N_k,t(x) - log p_t(x)

        These are normalized log-probabilities, so they serve as the logits of a perfect time-dependent
        classifier: grad_x log p_t(k | x) = grad_x log N_k,t(x) - grad_x log p_t(x), and
        :func:`~sgm_helpers.controllable.classifier_guided_score` with scale 1 turns :meth:`perturbed_score`
        into the exact score of component k alone. Differentiable (``torch.func.grad`` goes through it).
        """
        _check_sde(sde)

        def log_posterior_t(x: torch.Tensor, t) -> torch.Tensor:
            alpha, std = _alpha_std(sde, t, x)
            return torch.log_softmax(self.component_log_probs(x, sigma=std, scale=alpha), dim=-1)

        log_posterior_t.__doc__ = (f"Exact log p_t(component | x) of {self!r} diffused to time t by {sde!r}: "
                                   "(x [B, D], t) -> [B, K].")
        return log_posterior_t

    def perturbed_conditional_score(self, sde) -> "ExactConditionalScore":
        """The exact class-conditional score, the components as classes, as a model ``(x [B, D], t, y) -> [B, D]``.

        ``y = k`` gives grad_x log p_t(x | k), the score of component k alone diffused to time t
        (-(x - alpha mu_k) / (alpha^2 s_k^2 + std^2)); ``y = None`` or the null class ``K`` gives the
        mixture's score, :meth:`perturbed_score`. It is called like
        :class:`~sgm_helpers.models.ConditionalScoreNet`, so :func:`~sgm_helpers.controllable.cfg_score` takes it:
        with exact scores, s(x, t, k) - s(x, t) = grad_x log p_t(k | x) exactly, and classifier-free guidance at
        scale w equals classifier guidance with :meth:`perturbed_log_posterior` at scale w.
        """
        _check_sde(sde)
        return ExactConditionalScore(self, sde)


class ExactConditionalScore:
    """``(x [B, D], t, y) -> [B, D]``: see :meth:`GaussianMixture.perturbed_conditional_score`.

    ``num_classes`` = K components; ``null_class`` = K stands for "no label" (the mixture).
    """

    def __init__(self, mixture: GaussianMixture, sde):
        self.mixture, self.sde = mixture, sde
        self.num_classes = self.null_class = mixture.n_components

    def __repr__(self) -> str:
        return f"ExactConditionalScore({self.mixture!r}, {self.sde!r})"

    def __call__(self, x: torch.Tensor, t, y=None) -> torch.Tensor:
        alpha, std = _alpha_std(self.sde, t, x)
        a, logits, _ = self.mixture._terms(x, std, alpha)         # a: [K, N, D], minus each component's score
        mixture = -(torch.softmax(logits, dim=0).unsqueeze(-1) * a).sum(0)
        if y is None:
            return mixture.reshape(x.shape)
        y = torch.as_tensor(y, device=x.device).long()
        if x.dim() != 2 or y.dim() > 1 or (y.dim() == 1 and len(y) != len(x)):
            raise ValueError(f"with labels, x must be [B, D] and y an int or [B] labels; got x {tuple(x.shape)}, "
                             f"y {tuple(y.shape)}")
        if ((y < 0) | (y > self.null_class)).any():
            raise ValueError(f"y must hold classes in 0..{self.num_classes - 1} or {self.null_class} (the null class)")
        y = y.expand(len(x))
        is_null = y == self.null_class
        component = -a[torch.where(is_null, 0, y), torch.arange(len(x), device=x.device)]
        return torch.where(is_null[:, None], mixture, component)


class Gaussian:
    """N(mu, C) in D dimensions with a full covariance C: exact diffused scores and exact conditionals.

    The mixtures above have diagonal components, whose coordinates are independent given the component;
    a correlated Gaussian is the simplest case where knowing some coordinates changes the others, which
    is what inpainting is about. Under any of the SDEs x(t) = alpha x(0) + std z, so

        p_t = N(alpha mu, alpha^2 C + std^2 I),   grad log p_t(x) = -(alpha^2 C + std^2 I)^{-1} (x - alpha mu),

    computed in C's eigenbasis (C = V diag(lam) V^T). Conditioning is closed form too (:meth:`conditional`).

    Args:
        mean: ``[D]``.
        cov: ``[D, D]``, symmetric positive definite.
    """

    def __init__(self, mean, cov):
        self.mean = _as_float64(mean, "mean")
        self.cov = _as_float64(cov, "cov")
        d = self.mean.numel()
        if self.mean.dim() != 1 or self.cov.shape != (d, d):
            raise ValueError(f"mean must be [D] and cov [D, D], got {tuple(self.mean.shape)} and {tuple(self.cov.shape)}")
        if not torch.allclose(self.cov, self.cov.T):
            raise ValueError("cov must be symmetric")
        self.lam, self.vec = torch.linalg.eigh(self.cov)
        if not (self.lam > 0).all():
            raise ValueError(f"cov must be positive definite, its smallest eigenvalue is {float(self.lam.min()):.3g}")

    @property
    def dim(self) -> int:
        return self.mean.numel()

    def __repr__(self) -> str:
        return f"Gaussian(mean={self.mean.tolist()}, cov={self.cov.tolist()})"

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[n, D]`` float32 draws: mu + V diag(sqrt(lam)) z."""
        z = randn((check_positive_int(n, "n"), self.dim), generator, dtype=torch.float64)
        return (self.mean + (z * self.lam.sqrt()) @ self.vec.T).float()

    def perturbed_score(self, sde):
        """The exact score of p_t = N(alpha mu, alpha^2 C + std^2 I) as a score model ``(x [B, D], t [B]) -> [B, D]``
        (``x`` may also be ``[B, ...]`` with D values per example, e.g. tiny images; the score has its shape)."""
        _check_sde(sde)

        def score_model(x: torch.Tensor, t) -> torch.Tensor:
            flat = x.reshape(len(x), -1).double()                              # images [B, ...] too, D values each
            alpha, std = _alpha_std(sde, t, flat)
            alpha, std = (v.reshape(-1, 1) if v.dim() else v for v in (alpha, std))
            u = (flat - alpha * self.mean.to(flat.device)) @ self.vec.to(flat.device)  # in C's eigenbasis
            var = alpha ** 2 * self.lam.to(flat.device) + std ** 2
            return (-(u / var) @ self.vec.T.to(flat.device)).to(x.dtype).reshape(x.shape)

        score_model.__doc__ = (f"Exact score of {self!r} diffused to time t by {sde!r}: "
                               "(x [B, D] or [B, ...] with D values, t [B]) -> shaped like x.")
        return score_model

    def conditional(self, known, values) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and covariance of the unknown coordinates given x[known] = values (Schur complement):

            mu_u + C_uk C_kk^{-1} (values - mu_k),     C_uu - C_uk C_kk^{-1} C_ku.

        ``known``: a ``[D]`` boolean mask; ``values``: ``[#known]``.
        """
        known = torch.as_tensor(known, dtype=torch.bool)
        if known.shape != (self.dim,) or known.all() or not known.any():
            raise ValueError(f"known must be a [{self.dim}] boolean mask with some coordinates known and some not")
        values = _as_float64(values, "values").reshape(-1)
        u, k = ~known, known
        gain = self.cov[u][:, k] @ torch.linalg.inv(self.cov[k][:, k])
        return self.mean[u] + gain @ (values - self.mean[k]), self.cov[u][:, u] - gain @ self.cov[k][:, u]


def _check_sde(sde) -> None:
    if not callable(getattr(sde, "marginal_prob_std", sde)):
        raise ValueError(f"sde must be an SDE (VESDE, VPSDE, subVPSDE) or a function t -> std(t), got {sde!r}")


def _alpha_std(sde, t, x: torch.Tensor | None = None):
    """alpha(t) and std(t) as tensors (on x's device and dtype): scalars for a number t, ``[B]`` for t ``[B]``."""
    if x is not None and isinstance(t, torch.Tensor):
        t = t.to(x.device)
    sde = sde_of(sde) or sde  # a bound marginal_prob_std stands for its SDE (with its alpha)
    std_fn = getattr(sde, "marginal_prob_std", sde)
    std = std_fn(t)
    alpha = sde.mean_coeff(t) if hasattr(sde, "mean_coeff") else 1.0
    if x is not None:
        std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
        alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
    return alpha, std


# --- named 2-D examples used by the notebooks ---------------------------------------------------


def two_modes() -> GaussianMixture:
    """Two well-separated modes with weights 0.8 / 0.2: plain Langevin cannot balance them, annealed Langevin can.

    Song & Ermon's (2019) example, halved: 0.8 N((2.5, 2.5), 0.5^2 I) + 0.2 N((-2.5, -2.5), 0.5^2 I).
    Far from both modes the score only points at the nearer one, whatever the weights.
    Its mean (1.5, 1.5) is off-centre, so ``VESDE(25)``'s prior N(0, std(1)^2 I) is a poor stand-in for
    its p_1 (total variation 0.09): the SDE samplers started from the prior give it about 0.78 / 0.22 and
    the ODE sampler about 0.74 / 0.26, even with the exact score. Check samplers on :func:`three_modes`.
    """
    return GaussianMixture(means=[[2.5, 2.5], [-2.5, -2.5]], stds=0.5, weights=[0.8, 0.2])


def three_modes() -> GaussianMixture:
    """Three modes with weights 0.5 / 0.3 / 0.2 and mean exactly 0: the check for samplers and likelihoods.

    0.5 N((-2, -1), 0.6^2 I) + 0.3 N((2, -1), 0.5^2 I) + 0.2 N((2, 4), 0.4^2 I). Centred and small next
    to std(1) = 9.85 of ``VESDE(25)``, so the prior N(0, std(1)^2 I) is close to its true p_1 (total
    variation 0.017): samplers given the exact score reproduce its mode weights to within ~0.01.
    """
    return GaussianMixture(means=[[-2.0, -1.0], [2.0, -1.0], [2.0, 4.0]], stds=[0.6, 0.5, 0.4],
                           weights=[0.5, 0.3, 0.2])


def ring(n_modes: int = 8, radius: float = 4.0, std: float = 0.4) -> GaussianMixture:
    """``n_modes`` equal modes on a circle of ``radius``: many modes, and a hole where the density is ~0."""
    n_modes = check_positive_int(n_modes, "n_modes")
    radius, std = check_positive(radius, "radius"), check_positive(std, "std")
    angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixture(means, std)


def single_gaussian() -> GaussianMixture:
    """One elongated Gaussian N((1, -0.5), diag(1.5^2, 0.5^2)): its score -(x - mu) / s^2 is linear in x."""
    return GaussianMixture(means=[[1.0, -0.5]], stds=[[1.5, 0.5]])
