"""Exact likelihoods through the probability-flow ODE.

For an ODE dx/dt = v(x, t) the log-density along a solution obeys the instantaneous change of
variables d log p_t(x(t)) / dt = -div_x v(x(t), t). With the probability-flow velocity
v(x, t) = f(t) x - 1/2 g(t)^2 s_theta(x, t), integrating from t = eps (the data) to t = 1 (the prior) gives

    log p_eps(x(eps)) = log p_1(x(1)) + int_eps^1 div_x v(x(t), t) dt,
    div_x v = f(t) D - 1/2 g(t)^2 div_x s_theta(x, t).

The drift's part f(t) D is exact (VP and sub-VP: -1/2 beta(t) D; VE: 0); only the score's divergence
is estimated.

The divergence (the trace of a D x D Jacobian) is estimated with the Skilling-Hutchinson trick:
div f = E_v[v^T (df/dx) v] for any noise v with E[v v^T] = I, and v^T (df/dx) is one
vector-Jacobian product, i.e. one backward pass. The probes are Rademacher (random signs) by default,
as in the official score_sde code; the tutorial drew Gaussian ones (see :func:`ode_likelihood`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp
from tqdm.auto import tqdm

from .utils import check_eps, check_positive, check_positive_int, model_device, rand, randn

HUTCHINSON_KINDS = ("gaussian", "rademacher", "exact")
# The time t = eps at which the data are placed (the density scored is p_eps): the paper's, and every default here.
DEFAULT_EPS = 1e-5


def hutchinson_divergence(fn, x: torch.Tensor, t, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluate ``fn(x, t)`` and estimate its divergence in the same forward pass.

        div_x fn(x, t) ~ v^T (d fn / dx) v,     v = ``noise``, E[v v^T] = I

    ``v^T (d fn/dx)`` is a single vector-Jacobian product (``torch.func.vjp`` with cotangent v),
    so value and estimate cost one forward and one backward pass. Only ``x`` is differentiated:
    the pass records no graph for the parameters of a network ``fn``, which saves time and memory.

    Args:
        fn: ``(x [B, ...], t) -> [B, ...]``, acting on each example independently.
        x: ``[B, ...]``.
        t: passed through to ``fn``.
        noise: ``[B, ...]``, Gaussian or Rademacher.
    Returns:
        ``(fn(x, t), estimate)``: the value, detached, and the estimate of shape ``[B]``.
    """
    with torch.no_grad():  # switches off the parameters' graph; torch.func.vjp still differentiates x
        fx, vjp_fn = torch.func.vjp(lambda x_: fn(x_, t), x.detach())
        (vjp,) = vjp_fn(noise)
    return fx, (vjp * noise).flatten(1).sum(1)


def exact_divergence(fn, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x, t)`` and its exact divergence sum_i d fn_i / d x_i, by D vector-Jacobian products.

    The cotangent e_i in every example gives row i of every example's Jacobian (the examples are
    independent), so D products give all the diagonals. ``torch.func.vmap`` runs them in chunks, like
    a batch of backward passes, instead of one by one; the work is still D backward passes
    (D = x[0].numel()): meant for low-dimensional toys and for checking :func:`hutchinson_divergence`,
    not for images.
    """
    d = x[0].numel()
    with torch.no_grad():  # as in hutchinson_divergence: only x is differentiated
        fx, vjp_fn = torch.func.vjp(lambda x_: fn(x_, t), x.detach())
        basis = torch.eye(d, dtype=fx.dtype, device=fx.device).view(d, 1, *x.shape[1:]).expand(d, *x.shape)
        (rows,) = torch.func.vmap(vjp_fn, chunk_size=max(1, 2 ** 16 // x.numel()))(basis)   # [d, B, ...]
    return fx, rows.flatten(2).diagonal(dim1=0, dim2=2).sum(-1)     # sum_i rows[i, b, i]


def hutchinson_noise(shape, kind: str = "rademacher", generator: torch.Generator | None = None,
                     device=None) -> torch.Tensor:
    """Probe vectors with E[v v^T] = I: random signs (``"rademacher"``, the default) or standard normal
    (``"gaussian"``).

    Rademacher probes have the smaller variance: Var[v^T A v] = 2 sum_{i != j} A_ij^2 versus
    2 ||A||_F^2 for Gaussian ones (the diagonal contributes no error).
    """
    if kind == "gaussian":
        return randn(shape, generator, device)
    if kind == "rademacher":
        return (rand(shape, generator, device) < 0.5).float() * 2 - 1
    raise ValueError(f"hutchinson must be 'gaussian' or 'rademacher' for noise, got {kind!r}")


def ode_likelihood(x: torch.Tensor, score_model, sde, *, eps: float = DEFAULT_EPS, rtol: float = 1e-5, atol: float = 1e-5,
                   hutchinson: str = "rademacher", generator: torch.Generator | None = None, method: str = "RK45",
                   device=None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """log p_eps(x) under the model, by solving the probability-flow ODE from t = eps to t = 1.

    Along the ODE dx/dt = v = f(t) x - 1/2 g(t)^2 s_theta(x, t) the log-density changes by
    d delta/dt = div v = f(t) D - 1/2 g(t)^2 div s_theta, delta(eps) = 0; then
    log p_eps(x) = log p_1(x(1)) + delta(1), with p_1 the SDE's prior. Each solver step evaluates the
    score and the Hutchinson estimate of its divergence from a single forward pass plus one
    vector-Jacobian product; the drift's divergence f(t) D is added exactly. The probe noise v is drawn once and kept fixed for the
    whole solve, so the integrand is a smooth function of t the adaptive solver can integrate.

    Which probe: the path x(t) does not depend on v, so the estimate is the value with the exact trace
    plus v^T M v - tr M, where M = -1/2 int_eps^1 g(t)^2 (d s_theta / dx)(x(t), t) dt (symmetrized). Both
    kinds are unbiased; the error's variance is 2 sum_{i != j} M_ij^2 for Rademacher probes and 2 ||M||_F^2
    for Gaussian ones, so Rademacher probes are never worse, and far better when the diagonal of M carries
    much of its weight (notebook 5 measures both on the shipped MNIST model). Hence the default;
    ``"gaussian"`` gives the tutorial's estimator.

    The solver's state is (u, delta), where u(t) = x(t) - x(eps) is how far each coordinate has
    moved from the data. (The solution is the same; what changes is the error control:
    ``solve_ivp`` bounds each component's local error by atol + rtol |component|. Near t = eps the
    data move by about std(t), a few thousandths of the pixel range for eps = 1e-5, so a bound
    relative to the value x itself (a pixel near 1) would let the error swamp the motion; relative
    to u it follows the motion.) The first step is a tenth of eps: near t = eps the data move on the time
    scale of t itself (std(t) ~ sqrt(t)), while scipy's own first guess, made from the size of the first
    derivative alone, is about 1e-4, a hundred times eps = 1e-6, and RK45's error estimate does not catch the
    error of such a step (for data as sharp as a dequantized pixel: whole bits/dim, see the tests). Between
    evaluations x(eps) and the probes stay on ``device`` as tensors; only the flat float64 vector the solver
    steps with crosses to NumPy, once each way.

    Args:
        x: data ``[B, ...]`` (for images: dequantized, in [0, 1]).
        score_model: ``(x, t) -> score``; the exact score of a toy distribution works too.
        sde: the SDE: its drift, g(t) and the prior log-density.
        eps: the time the data is placed at, in (0, 1).
        rtol, atol: ``solve_ivp`` tolerances (on u and delta). The solver controls the error of the
            whole batch's state at once, so a single example can be less accurate than the tolerance
            suggests when the others set the step size (solve it alone to check).
        hutchinson: ``"rademacher"`` (default) or ``"gaussian"`` probes, or ``"exact"`` for the exact trace
            (D backward passes per evaluation; for low-dimensional data only).
        generator: for the probe noise.
        method: the ``solve_ivp`` method.
        device: defaults to the model's device.
    Returns:
        ``(z, logp, nfe)``: the latent code x(1) ``[B, ...]``, log p_eps(x) in nats per example
        ``[B]``, and the number of function evaluations (each one score pass plus one VJP).
    """
    eps = check_eps(eps)
    check_positive(rtol, "rtol")
    check_positive(atol, "atol")
    if hutchinson not in HUTCHINSON_KINDS:
        raise ValueError(f"hutchinson must be one of {HUTCHINSON_KINDS}, got {hutchinson!r}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape [B, ...] with B >= 1, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf values")
    device = model_device(score_model, device)
    x = x.to(device, torch.float32)
    shape, batch = x.shape, x.shape[0]
    noise = None if hutchinson == "exact" else hutchinson_noise(shape, hutchinson, generator, device)
    nfe = 0

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        xt = x + torch.from_numpy(y[:-batch]).view(shape).to(device, torch.float32)
        t_batch = torch.full((batch,), t, device=device)
        if noise is None:
            score, div_score = exact_divergence(score_model, xt, t_batch)
        else:
            score, div_score = hutchinson_divergence(score_model, xt, t_batch, noise)
        velocity = sde.reverse_drift(xt, t_batch, score, probability_flow=True)
        div = sde.drift_divergence(xt, t_batch) - 0.5 * sde.diffusion_coeff(t_batch) ** 2 * div_score.to(xt.dtype)
        out = torch.cat([velocity.reshape(-1), div.reshape(-1)]).cpu().numpy().astype(np.float64)
        if not np.isfinite(out).all():  # scipy would keep shrinking its step on NaN instead of stopping
            raise FloatingPointError(f"ode_likelihood: the score model or its divergence returned NaN or inf "
                                     f"at t = {t:.4g} (evaluation {nfe})")
        return out

    y0 = np.zeros(x.numel() + batch)
    res = solve_ivp(rhs, (eps, sde.T), y0, rtol=rtol, atol=atol, method=method, t_eval=[1.0],
                    first_step=min(0.1 * eps, sde.T - eps))
    if not res.success:
        raise RuntimeError(f"ode_likelihood: the ODE solver failed: {res.message}")
    y1 = torch.from_numpy(res.y[:, -1])
    z = x.double().cpu() + y1[:-batch].view(shape)
    logp = sde.prior_logp(z) + y1[-batch:]
    if not torch.isfinite(logp).all():
        raise FloatingPointError("ode_likelihood: the log-likelihood came out NaN or inf")
    return z.to(device, torch.float32), logp.to(device, torch.float32), nfe


def bits_per_dim(logp: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Convert log-densities of dequantized 8-bit images in [0, 1] to bits per dimension.

        bpd = -logp / (D ln 2) + 8,     D = x[0].numel()

    Why ``+ 8``: a pixel k in {0, ..., 255} is dequantized to y = (k + u) / 256, u ~ U[0, 1), so
    y is continuous in [0, 1). ``logp`` is a density on [0, 1)^D; the same density on the
    [0, 256)^D scale of the integer pixels is p(y) / 256^D. By Jensen, the model's discrete
    log-probability satisfies -log2 P(k) <= E_u[-log2 p(y)] + D log2(256) = E_u[-log2 p(y)] + 8 D;
    per dimension that is ``-logp / (D ln 2) + 8``, an upper bound on the discrete codelength.
    """
    d = x[0].numel()
    return -logp / (d * math.log(2.0)) + 8.0


@dataclass
class BPDResult:
    """Bits/dim of every image, and the function evaluations each batch's ODE solve took."""

    bpd: torch.Tensor
    nfe: list

    @property
    def mean(self) -> float:
        return float(self.bpd.double().mean())

    @property
    def stderr(self) -> float:
        """Standard error of the mean over images (it includes the Hutchinson and dequantization noise)."""
        n = self.bpd.numel()
        return float(self.bpd.double().std() / math.sqrt(n)) if n > 1 else float("nan")

    def __str__(self) -> str:
        return (f"{self.mean:.3f} ± {self.stderr:.3f} bits/dim over {self.bpd.numel()} images "
                f"({np.mean(self.nfe):.0f} function evaluations per batch)")


def dequantize(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantization of 8-bit images stored as k / 255 in [0, 1]: y = (255 x + u) / 256, u ~ U[0, 1).

    ``generator`` may live on the CPU or on the images' device.
    """
    return (images * 255.0 + rand(images.shape, generator, images.device)) / 256.0


def evaluate_bpd(score_model, sde, images: torch.Tensor, *, batch_size: int = 64,
                 generator: torch.Generator | None = None, progress: bool = True, eps: float = DEFAULT_EPS,
                 rtol: float = 3e-3, atol: float = 1e-5, hutchinson: str = "rademacher",
                 device=None) -> BPDResult:
    """Bits/dim of a set of 8-bit images in [0, 1] (``[N, ...]``), with uniform dequantization.

    Each batch is dequantized (:func:`dequantize`), run through :func:`ode_likelihood`, and
    converted with :func:`bits_per_dim`. ``generator`` seeds the dequantization and probe noise.

    Tolerances: bits/dim need less than the tutorial's rtol = atol = 1e-5. Since
    :func:`ode_likelihood` controls the error relative to how far each pixel has moved, the
    defaults (rtol = 3e-3, atol = 1e-5) still follow the small motions near t = eps; on the shipped
    MNIST model they take about a third of the score evaluations of rtol = atol = 1e-5 and move the
    mean bits/dim by about 0.002 (see ``benchmarks/RESULTS.md``, measured with Gaussian probes). ``rtol=1e-5``
    gives the tutorial's setting.

    Probes: Rademacher by default (``hutchinson``, see :func:`ode_likelihood`): unbiased like Gaussian
    probes, with less noise in each image's bits/dim. ``hutchinson="gaussian"`` gives the tutorial's
    estimator (with the same ``generator`` and batch size, the same noise as the tutorial's loop in
    ``benchmarks/baseline.py``). The expected bits/dim is the same for both; only the noise around it
    differs.

    Returns a :class:`BPDResult` (per-image bits/dim, ``.mean``, ``.stderr``, NFE per batch).
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if images.dim() < 2 or len(images) == 0:
        raise ValueError(f"images must be a non-empty [N, ...] tensor, got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError("images must be 8-bit images scaled to [0, 1] (pixel / 255)")
    device = model_device(score_model, device)
    bpds, nfes = [], []
    bar = tqdm(total=len(images), disable=not progress, desc="bits/dim", unit="img")
    for start in range(0, len(images), batch_size):
        x = dequantize(images[start:start + batch_size].to(device), generator)
        _, logp, nfe = ode_likelihood(x, score_model, sde, eps=eps, rtol=rtol, atol=atol, hutchinson=hutchinson,
                                      generator=generator, device=device)
        bpds.append(bits_per_dim(logp, x).cpu())
        nfes.append(nfe)
        bar.update(len(x))
        bar.set_postfix_str(f"mean {torch.cat(bpds).mean():.3f} bits/dim")
    bar.close()
    return BPDResult(torch.cat(bpds), nfes)
