"""The forward SDEs of the paper: one abstract ``SDE`` and one small class for each of VE, VP and sub-VP.

Every SDE here has a linear drift and a time-only diffusion,

    dx = f(t) x dt + g(t) dw,    t in [0, T = 1],

so the perturbation kernel p_0t(x(t) | x(0)) is Gaussian, N(alpha(t) x(0), std(t)^2 I), with
alpha(t) = exp(int_0^t f) the *mean coefficient*. A subclass states five formulas in closed form:
f(t), g(t), alpha(t), std(t), and the prior p_T it samples from. Everything built from them (the
reverse-time SDE, the probability-flow ODE, the transition kernel between two times, EDM's noise
level sigma(t) and the time density of importance sampling) lives once in the base class.

    VE (SMLD/NCSN, the tutorial):  f = 0,            g = sigma^t,                          alpha = 1
    VP (DDPM):                      f = -beta(t)/2,   g = sqrt(beta(t)),                    alpha = exp(-B(t)/2)
    sub-VP:                         f = -beta(t)/2,   g = sqrt(beta(t) (1 - exp(-2 B(t)))), alpha = exp(-B(t)/2)

with beta(t) = beta_min + t (beta_max - beta_min) and B(t) = int_0^t beta = beta_min t + t^2 (beta_max - beta_min) / 2.

``t`` may be a Python float or a tensor of any shape; results are float tensors on ``t``'s device
(or on ``device`` for a float ``t``).
"""

from __future__ import annotations

import abc
import math

import torch

from .utils import batch_view, check_finite_number, check_positive_int, check_shape, randn

SDE_NAMES = {"ve": "VESDE", "vp": "VPSDE", "subvp": "subVPSDE"}


def _check_parameter(value, name: str, lower: float, note: str) -> float:
    """An SDE parameter: a finite number > ``lower``, else a ValueError naming it."""
    try:
        number = check_finite_number(value, name)
    except ValueError:
        number = None
    if number is None or not number > lower:
        raise ValueError(f"{name} must be a finite number > {lower:g} {note}, got {value!r}")
    return number


def _as_tensor(t, device=None) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t if t.is_floating_point() else t.to(torch.get_default_dtype())
    return torch.as_tensor(t, dtype=torch.get_default_dtype(), device=device)


class SDE(abc.ABC):
    """dx = f(t) x dt + g(t) dw on t in [0, T]: the interface the losses, samplers and likelihood use.

    Subclasses implement :meth:`drift_coeff` f(t), :meth:`diffusion_coeff` g(t), :meth:`mean_coeff`
    alpha(t), :meth:`marginal_prob_std` std(t), :meth:`prior_std`, the antiderivative of
    g(t)^2 / std(t)^2 and its inverse (for importance sampling), :meth:`t_of_sigma`, and
    :meth:`config`.
    """

    T = 1.0

    # --- the five formulas each SDE states ----------------------------------------------------

    @abc.abstractmethod
    def drift_coeff(self, t, device=None) -> torch.Tensor:
        """f(t) in the drift f(x, t) = f(t) x."""

    @abc.abstractmethod
    def diffusion_coeff(self, t, device=None) -> torch.Tensor:
        """g(t), the diffusion coefficient."""

    @abc.abstractmethod
    def mean_coeff(self, t, device=None) -> torch.Tensor:
        """alpha(t) = exp(int_0^t f(s) ds): the mean of p_0t(x(t) | x(0)) is alpha(t) x(0)."""

    @abc.abstractmethod
    def marginal_prob_std(self, t, device=None) -> torch.Tensor:
        """std(t), the standard deviation of p_0t(x(t) | x(0))."""

    @abc.abstractmethod
    def prior_std(self) -> float:
        """The standard deviation of the prior N(0, prior_std^2 I) that sampling starts from at t = T."""

    @abc.abstractmethod
    def config(self) -> dict:
        """A JSON-ready description, e.g. ``{"name": "VPSDE", "beta_min": 0.1, "beta_max": 20.0}``."""

    @abc.abstractmethod
    def _weight_integral(self, t: torch.Tensor) -> torch.Tensor:
        """An antiderivative F(t) of g(t)^2 / std(t)^2 (float64 in, float64 out)."""

    @abc.abstractmethod
    def _weight_integral_inverse(self, value: torch.Tensor) -> torch.Tensor:
        """The t with F(t) = ``value`` (float64)."""

    @abc.abstractmethod
    def t_of_sigma(self, sigma) -> torch.Tensor:
        """The time t at which :meth:`sigma_of_t` equals ``sigma`` (float64 in, float64 out)."""

    # --- built once for every SDE -------------------------------------------------------------

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return isinstance(other, SDE) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.config().items())))

    def sde(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward SDE's drift f(x, t) = f(t) x ``[B, ...]`` and diffusion g(t) (shaped to broadcast)."""
        t = _as_tensor(t, x.device)
        return batch_view(self.drift_coeff(t), x) * x, batch_view(self.diffusion_coeff(t), x)

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """f(x, t) = f(t) x."""
        return batch_view(self.drift_coeff(_as_tensor(t, x.device)), x) * x

    def drift_divergence(self, x: torch.Tensor, t) -> torch.Tensor:
        """div_x f(x, t) = f(t) D, ``[B]`` (D = x[0].numel()): exact, so the likelihood never estimates it."""
        t = _as_tensor(t, x.device)
        return (self.drift_coeff(t) * x[0].numel()).to(x.dtype).expand(x.shape[0])

    def marginal_prob(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean alpha(t) x(0) ``[B, ...]`` and std(t) of the perturbation kernel p_0t(x(t) | x(0))."""
        t = _as_tensor(t, x0.device)
        return batch_view(self.mean_coeff(t), x0) * x0, self.marginal_prob_std(t)

    def transition_kernel(self, s, t) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernel from time s to a later time t: x(t) | x(s) ~ N(a x(s), b^2 I), returned as ``(a, b)``.

            a = alpha(t) / alpha(s),     b^2 = std(t)^2 - a^2 std(s)^2

        (x(t) = alpha(t) x(0) + std(t) z and x(s) = alpha(s) x(0) + std(s) z' must agree in mean and
        variance.) For VE this is SMLD's step, b^2 = std(t)^2 - std(s)^2; for VP it is DDPM's step
        a = sqrt(1 - beta), b^2 = beta with beta = 1 - alpha(t)^2 / alpha(s)^2 = 1 - exp(-int_s^t beta(u) du),
        the exact noise of that interval (DDPM's linear schedule, :meth:`VPSDE.discrete_betas`, agrees with it
        to first order in the step: 1.0e-4 against 1.1e-4 for the first of 1,000 steps).
        """
        s, t = _as_tensor(s), _as_tensor(t)
        t = t.to(s.device) if t.device != s.device else t
        a = self.mean_coeff(t) / self.mean_coeff(s)
        b2 = self.marginal_prob_std(t) ** 2 - (a * self.marginal_prob_std(s)) ** 2
        return a, torch.sqrt(b2.clamp_min(0.0))  # clamp only removes a rounding error of -1e-17 at s = t

    def reverse_drift(self, x: torch.Tensor, t, score: torch.Tensor, probability_flow: bool = False) -> torch.Tensor:
        """The drift of the reverse-time SDE, or of the probability-flow ODE (Song et al. 2021, eqs. 6 and 13).

            reverse SDE:       dx = [f(x, t) - g(t)^2 score] dt + g(t) dw_bar    (t running from T to 0)
            probability flow:  dx = [f(x, t) - 1/2 g(t)^2 score] dt

        ``score`` is grad_x log p_t(x) (or the model's estimate), shaped like ``x``.
        """
        t = _as_tensor(t, x.device)
        g2 = batch_view(self.diffusion_coeff(t) ** 2, x)
        return self.drift(x, t) - (0.5 if probability_flow else 1.0) * g2 * score

    def prior_sampling(self, shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Draw x(T) ~ N(0, prior_std^2 I) of the given ``shape`` ``[B, ...]``."""
        return randn(check_shape(shape), generator=generator, device=device) * self.prior_std()

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std^2 I), summed over all non-batch dims: shape ``[B]``.

            log p_T(z) = -D/2 log(2 pi prior_std^2) - |z|^2 / (2 prior_std^2),   D = z[0].numel().
        """
        if z.dim() < 2:
            raise ValueError(f"z must have shape [B, ...] with at least one data dim, got {tuple(z.shape)}")
        var = torch.tensor(self.prior_std() ** 2, dtype=z.dtype, device=z.device)
        d = z[0].numel()
        return -0.5 * d * torch.log(2 * math.pi * var) - z.flatten(1).pow(2).sum(1) / (2 * var)

    def sigma_of_t(self, t, device=None) -> torch.Tensor:
        """EDM's noise level sigma(t) = std(t) / alpha(t) (Karras et al. 2022).

        x(t) / alpha(t) = x(0) + sigma(t) z: dividing out the mean coefficient turns every SDE into
        the VE form, where the noise level alone says how noisy x is.
        """
        t = _as_tensor(t, device)
        return self.marginal_prob_std(t) / self.mean_coeff(t)

    def tweedie_denoise(self, x: torch.Tensor, t, score: torch.Tensor) -> torch.Tensor:
        """E[x(0) | x(t)] = (x(t) + std(t)^2 grad log p_t(x(t))) / alpha(t) (Tweedie's formula)."""
        t = _as_tensor(t, x.device)
        std, alpha = batch_view(self.marginal_prob_std(t), x), batch_view(self.mean_coeff(t), x)
        return (x + std ** 2 * score) / alpha

    # --- likelihood weighting and importance sampling of t (Song, Durkan, Murray and Ermon 2021) ----

    def importance_normalizer(self, eps: float) -> float:
        """Z = int_eps^T g(t)^2 / std(t)^2 dt, the mass of the importance-sampling density on [eps, T]."""
        lo, hi = self._weight_integral(torch.tensor([eps, self.T], dtype=torch.float64))
        return float(hi - lo)

    def sample_importance_time(self, u: torch.Tensor, eps: float) -> torch.Tensor:
        """Map uniforms ``u`` in [0, 1) to t in [eps, T] with density g(t)^2 / (Z std(t)^2), by the inverse CDF.

            F(t) = int g^2 / std^2 dt (closed form per SDE),    t = F^-1(F(eps) + u (F(T) - F(eps)))

        Likelihood weighting lambda(t) = g(t)^2 puts weight g^2 / std^2 on || std s + z ||^2, which for
        small t is huge (VE: ~1/t). Drawing t from that density instead makes the weight a constant Z.
        """
        lo, hi = self._weight_integral(torch.tensor([eps, self.T], dtype=torch.float64))
        t = self._weight_integral_inverse(lo + u.double() * (hi - lo))
        return t.clamp(eps, self.T).to(u.dtype)  # clamp only removes rounding past the ends

    # --- construction from a config -----------------------------------------------------------

    @staticmethod
    def from_config(config) -> "SDE":
        """Rebuild an SDE from :meth:`config` (or an ``SDE`` itself, or a short name: ve, vp, subvp)."""
        if isinstance(config, SDE):
            return config
        if isinstance(config, str):
            return make_sde(config)
        if not isinstance(config, dict) or "name" not in config:
            raise ValueError(f"an SDE config must be a dict with a 'name' (one of {sorted(_CLASSES)}), got {config!r}")
        params = {k: v for k, v in config.items() if k != "name"}
        cls = _CLASSES.get(config["name"]) if isinstance(config["name"], str) else None
        if cls is None:
            raise ValueError(f"unknown SDE name {config['name']!r}; known: {sorted(_CLASSES)}")
        try:
            return cls(**params)
        except TypeError as err:
            raise ValueError(f"bad parameters for {config['name']}: {params} ({err})") from None


class VESDE(SDE):
    """The variance-exploding SDE of the tutorial: dx = sigma^t dw on t in [0, 1] (SMLD/NCSN in the limit).

    There is no drift, so x(t) given x(0) is Gaussian with mean x(0) and variance

        std(t)^2 = int_0^t sigma^(2s) ds = (sigma^(2t) - 1) / (2 ln sigma).

    For sigma = 25, std(1) = 9.845, much wider than the [0, 1] pixel range, so p_1 is close to the
    prior N(0, std(1)^2 I).
    """

    def __init__(self, sigma: float = 25.0):
        sigma = _check_parameter(sigma, "sigma", 1.0, "(the tutorial uses 25)")
        self.sigma = float(sigma)
        self.log_sigma = math.log(self.sigma)

    def config(self) -> dict:
        return {"name": "VESDE", "sigma": self.sigma}

    def drift_coeff(self, t, device=None) -> torch.Tensor:
        """f(t) = 0: the VE SDE only adds noise."""
        return torch.zeros_like(_as_tensor(t, device))

    def diffusion_coeff(self, t, device=None) -> torch.Tensor:
        """g(t) = sigma^t."""
        return torch.exp(self.log_sigma * _as_tensor(t, device))

    def mean_coeff(self, t, device=None) -> torch.Tensor:
        """alpha(t) = 1."""
        return torch.ones_like(_as_tensor(t, device))

    def marginal_prob_std(self, t, device=None) -> torch.Tensor:
        """std(t) = sqrt((sigma^(2t) - 1) / (2 ln sigma)), with ``expm1`` so that small t stay accurate (~sqrt(t))."""
        t = _as_tensor(t, device)
        return torch.sqrt(torch.expm1(2.0 * self.log_sigma * t) / (2.0 * self.log_sigma))

    def prior_std(self) -> float:
        """std(1): the prior is N(0, std(1)^2 I) (computed in the default dtype, as the tutorial does)."""
        return float(self.marginal_prob_std(self.T))

    def t_of_sigma(self, sigma) -> torch.Tensor:
        """t = log(1 + 2 ln(sigma) s^2) / (2 ln sigma), the inverse of std(t) (``log1p`` for small s); sigma(t) = std(t) for VE."""
        s = _as_tensor(sigma).double()
        return torch.log1p(2.0 * self.log_sigma * s ** 2) / (2.0 * self.log_sigma)

    def _weight_integral(self, t):
        # g^2 = d std^2 / dt, so g^2 / std^2 = d log std^2 / dt.
        return torch.log(torch.expm1(2.0 * self.log_sigma * t) / (2.0 * self.log_sigma))

    def _weight_integral_inverse(self, value):
        return self.t_of_sigma(torch.exp(0.5 * value))


class _LinearBetaSDE(SDE):
    """Shared by VP and sub-VP: beta(t) = beta_min + t (beta_max - beta_min) and its integral B(t)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        beta_min = _check_parameter(beta_min, "beta_min", 0.0, "(the paper uses 0.1)")
        beta_max = _check_parameter(beta_max, "beta_max", beta_min, "= beta_min (the paper uses 20)")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def config(self) -> dict:
        return {"name": type(self).__name__, "beta_min": self.beta_min, "beta_max": self.beta_max}

    def beta(self, t, device=None) -> torch.Tensor:
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        return self.beta_min + _as_tensor(t, device) * (self.beta_max - self.beta_min)

    def integrated_beta(self, t, device=None) -> torch.Tensor:
        """B(t) = int_0^t beta(s) ds = beta_min t + t^2 (beta_max - beta_min) / 2."""
        t = _as_tensor(t, device)
        return self.beta_min * t + 0.5 * t ** 2 * (self.beta_max - self.beta_min)

    def _time_of_integrated_beta(self, b: torch.Tensor) -> torch.Tensor:
        """The t >= 0 with B(t) = b: the positive root of (beta_max - beta_min)/2 t^2 + beta_min t - b = 0.

        Written as 2b / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) b)), which does not cancel for small b.
        """
        d = self.beta_max - self.beta_min
        return 2.0 * b / (self.beta_min + torch.sqrt(self.beta_min ** 2 + 2.0 * d * b))

    def drift_coeff(self, t, device=None) -> torch.Tensor:
        """f(t) = -beta(t) / 2."""
        return -0.5 * self.beta(t, device)

    def mean_coeff(self, t, device=None) -> torch.Tensor:
        """alpha(t) = exp(-B(t) / 2)."""
        return torch.exp(-0.5 * self.integrated_beta(t, device))

    def prior_std(self) -> float:
        """1: the prior is N(0, I) (for the default betas std(1) = 1 - 2.2e-5 for VP, 1 - 4.3e-5 for sub-VP)."""
        return 1.0


class VPSDE(_LinearBetaSDE):
    """The variance-preserving SDE, the continuous limit of DDPM: dx = -beta(t)/2 x dt + sqrt(beta(t)) dw.

        alpha(t) = exp(-B(t)/2),   std(t)^2 = 1 - exp(-B(t)),   so alpha^2 + std^2 = 1:

    data of unit variance keep unit variance at every t. With the paper's beta_min = 0.1 and
    beta_max = 20, alpha(1) = 0.0066 and p_1 is N(0, I) to within 4e-5 in std.
    """

    def diffusion_coeff(self, t, device=None) -> torch.Tensor:
        """g(t) = sqrt(beta(t))."""
        return torch.sqrt(self.beta(t, device))

    def marginal_prob_std(self, t, device=None) -> torch.Tensor:
        """std(t) = sqrt(1 - exp(-B(t))) (``expm1`` keeps small t accurate)."""
        return torch.sqrt(-torch.expm1(-self.integrated_beta(t, device)))

    def t_of_sigma(self, sigma) -> torch.Tensor:
        """sigma^2 = 1 / alpha^2 - 1 = exp(B) - 1, so B = log(1 + sigma^2), then t = B^-1."""
        s = _as_tensor(sigma).double()
        return self._time_of_integrated_beta(torch.log1p(s ** 2))

    def _weight_integral(self, t):
        # g^2 / std^2 = beta / (1 - e^-B) = (dB/dt) e^B / (e^B - 1) = d log(e^B - 1) / dt.
        return torch.log(torch.expm1(self.integrated_beta(t)))

    def _weight_integral_inverse(self, value):
        return self._time_of_integrated_beta(torch.nn.functional.softplus(value))  # B = log(1 + e^F)

    def discrete_betas(self, num_steps: int = 1000) -> torch.Tensor:
        """DDPM's noise schedule beta_1, ..., beta_N: beta(t) / N on N evenly spaced t from 0 to 1.

            beta_i = (beta_min + (i - 1) / (N - 1) (beta_max - beta_min)) / N,    i = 1 .. N

        With the defaults and N = 1000 these are exactly DDPM's betas, linspace(1e-4, 0.02, 1000)
        (Ho et al. 2020). The discrete process x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z is the
        Euler discretization of this SDE with dt = 1 / N, so prod_i (1 - beta_i) approaches alpha(1)^2 as N grows.
        Returns float64 ``[N]``.
        """
        n = check_positive_int(num_steps, "num_steps")
        if n < 2:
            raise ValueError(f"num_steps must be an integer >= 2, got {num_steps!r}")
        return torch.linspace(self.beta_min / n, self.beta_max / n, n, dtype=torch.float64)


class subVPSDE(_LinearBetaSDE):
    """The sub-VP SDE: the VP drift with a smaller diffusion, dx = -beta/2 x dt + sqrt(beta (1 - e^(-2B))) dw.

        alpha(t) = exp(-B(t)/2),   std(t) = 1 - exp(-B(t))

    std(t)^2 is below the VP SDE's 1 - e^-B at every t (hence the name): the noise starts slower,
    which the paper found gives better likelihoods.
    """

    def diffusion_coeff(self, t, device=None) -> torch.Tensor:
        """g(t) = sqrt(beta(t) (1 - exp(-2 B(t))))."""
        return torch.sqrt(self.beta(t, device) * -torch.expm1(-2.0 * self.integrated_beta(t, device)))

    def marginal_prob_std(self, t, device=None) -> torch.Tensor:
        """std(t) = 1 - exp(-B(t))."""
        return -torch.expm1(-self.integrated_beta(t, device))

    def t_of_sigma(self, sigma) -> torch.Tensor:
        """sigma = (1 - e^-B) / e^(-B/2) = 2 sinh(B/2), so B = 2 asinh(sigma / 2), then t = B^-1."""
        s = _as_tensor(sigma).double()
        return self._time_of_integrated_beta(2.0 * torch.asinh(0.5 * s))

    def _weight_integral(self, t):
        # g^2 / std^2 = beta (1 + e^-B) / (1 - e^-B); in B that integrates to 2 log(e^B - 1) - B.
        b = self.integrated_beta(t)
        return 2.0 * torch.log(torch.expm1(b)) - b

    def _weight_integral_inverse(self, value):
        # (e^B - 1)^2 / e^B = e^F, a quadratic in u = e^B whose root > 1 is u = 1 + a/2 + sqrt(a + a^2/4), a = e^F.
        a = torch.exp(value)
        return self._time_of_integrated_beta(torch.log1p(0.5 * a + torch.sqrt(a + 0.25 * a ** 2)))


_CLASSES = {"VESDE": VESDE, "VPSDE": VPSDE, "subVPSDE": subVPSDE}


def make_sde(name: str, **params) -> SDE:
    """An SDE by its short name (``"ve"``, ``"vp"``, ``"subvp"``) or class name, with its parameters.

        make_sde("vp", beta_min=0.1, beta_max=20.0)  ->  VPSDE(beta_min=0.1, beta_max=20)
    """
    cls_name = SDE_NAMES.get(name.lower(), name) if isinstance(name, str) else None
    if cls_name not in _CLASSES:
        raise ValueError(f"sde must be one of {sorted(SDE_NAMES)} (or {sorted(_CLASSES)}), got {name!r}")
    return SDE.from_config({"name": cls_name, **params})


def sde_of(obj) -> SDE | None:
    """The SDE behind ``obj``: an ``SDE`` itself, or the SDE whose bound ``marginal_prob_std`` ``obj`` is; else None.

    Lets code written for the tutorial, which passes ``sde.marginal_prob_std`` around, still tell which SDE it is.
    """
    if isinstance(obj, SDE):
        return obj
    owner = getattr(obj, "__self__", None)
    return owner if isinstance(owner, SDE) else None


def forward_sde_paths(sde: SDE, x0: torch.Tensor, num_steps: int = 1000, *, record_every: int = 1,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulate the forward SDE dx = f(t) x dt + g(t) dw from t = 0 to t = T with the Euler-Maruyama method.

    One step from t to t + dt: x <- x + f(t) x dt + g(t) sqrt(dt) z.

    Args:
        sde: the SDE.
        x0: starting points ``[B, ...]`` (2-D points, images...).
        num_steps: Euler-Maruyama steps on a uniform grid of [0, T].
        record_every: keep the state every this many steps (t = 0 and t = T are always kept
            when it divides ``num_steps``).
        generator: for reproducible noise.
    Returns:
        ``(times [K], paths [K, B, ...])`` with ``times[0] = 0`` and ``paths[0] = x0``.
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    record_every = check_positive_int(record_every, "record_every")
    if not isinstance(x0, torch.Tensor) or x0.dim() < 2:
        raise ValueError("x0 must be a tensor of shape [B, ...]")
    ts = torch.linspace(0.0, sde.T, num_steps + 1, dtype=torch.float64)
    x = x0.clone()
    times, paths = [0.0], [x.cpu().clone()]
    for i in range(num_steps):
        t, dt = float(ts[i]), float(ts[i + 1] - ts[i])
        f, g = float(sde.drift_coeff(t)), float(sde.diffusion_coeff(t))
        x = x + f * x * dt + g * math.sqrt(dt) * randn(x.shape, generator, x.device, x.dtype)
        if (i + 1) % record_every == 0:
            times.append(float(ts[i + 1]))
            paths.append(x.cpu().clone())
    return torch.tensor(times), torch.stack(paths)
