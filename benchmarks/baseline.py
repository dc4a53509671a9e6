"""The original tutorial's approach, re-written for side-by-side benchmarks against ``sgm_helpers``.

Everything here mirrors how the tutorial (Song's "Tutorial on Score-Based Generative Modeling",
VE SDE with sigma = 25) does the work, because the benchmarks measure what the package changed:

- data come from ``torchvision.datasets.MNIST`` with ``transforms.ToTensor()`` through a
  ``DataLoader``: one PIL image converted per example, collated per batch;
- the likelihood evaluates the score (one forward pass, ``no_grad``) and the Hutchinson divergence
  (a second forward pass plus a vector-Jacobian product) separately at every solver step;
- every solver step converts the state from NumPy to a new torch tensor (``torch.tensor``) and the
  results back (``.cpu().numpy()`` then ``astype(np.float64)``), and the time is wrapped in fresh
  tensors (``torch.tensor(t)``) for the SDE coefficients;
- training calls ``loss.item()`` every step and writes nothing else.

Only what a fair comparison needs differs from the tutorial, and all of it is noise handling: the
same ``torch.Generator`` feeds the dequantization noise, the Hutchinson probes, the latent codes,
the batch order and the loss's (t, z) draws in the package's order, so both sides see the same
images, the same noise and the same model weights, and their numbers can be compared one by one.
The tutorial also shuffled the test set; here both sides take the first N test images in order.

Not part of the package, and not meant for use: this is the slow reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import integrate
from torch.utils.data import DataLoader, Sampler, Subset


# -- The SDE, in the tutorial's functional form -------------------------------------------------

def marginal_prob_std(t, sigma: float) -> torch.Tensor:
    """std(t) = sqrt((sigma^(2t) - 1) / (2 ln sigma)), as the tutorial computes it."""
    t = torch.tensor(t) if not isinstance(t, torch.Tensor) else t
    return torch.sqrt((sigma ** (2 * t) - 1.0) / 2.0 / np.log(sigma))


def diffusion_coeff(t, sigma: float) -> torch.Tensor:
    """g(t) = sigma^t."""
    t = torch.tensor(t) if not isinstance(t, torch.Tensor) else t
    return sigma ** t


def prior_likelihood(z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, sigma^2 I), summed over the non-batch dims."""
    n = np.prod(z.shape[1:])
    return -n / 2.0 * torch.log(2 * np.pi * sigma ** 2) - torch.sum(z ** 2, dim=tuple(range(1, z.dim()))) / (
        2 * sigma ** 2)


# -- Data ---------------------------------------------------------------------------------------

def mnist_dataset(root, train: bool):
    """MNIST with the tutorial's per-image ``ToTensor`` transform (pixel / 255 in [0, 1])."""
    from torchvision import transforms
    from torchvision.datasets import MNIST

    return MNIST(str(root), train=train, transform=transforms.ToTensor(), download=False)


def test_loader(root, n: int, batch_size: int, num_workers: int = 0) -> DataLoader:
    """The first ``n`` test images in order, in batches, through the per-image pipeline."""
    return DataLoader(Subset(mnist_dataset(root, train=False), range(n)), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers)


class EpochBatchSampler(Sampler):
    """Yields the index lists of ``steps`` batches in the order ``sgm_helpers.train`` uses (one seeded
    ``randperm`` per epoch, the last batch of an epoch possibly short), so both training loops see
    the same batches."""

    def __init__(self, n: int, batch_size: int, steps: int, seed: int = 0):
        self.n, self.batch_size, self.steps, self.seed = n, batch_size, steps, seed

    def __iter__(self):
        per_epoch = math.ceil(self.n / self.batch_size)
        for step in range(self.steps):
            epoch, k = divmod(step, per_epoch)
            if k == 0:
                perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
            yield perm[k * self.batch_size:(k + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return self.steps


def train_loader(root, batch_size: int, steps: int, seed: int = 0, num_workers: int = 0) -> DataLoader:
    """The training split through ``ToTensor`` and a ``DataLoader``, batches in the package's order."""
    ds = mnist_dataset(root, train=True)
    return DataLoader(ds, batch_sampler=EpochBatchSampler(len(ds), batch_size, steps, seed), num_workers=num_workers)


# -- Likelihood ---------------------------------------------------------------------------------

def ode_likelihood(x, score_model, sigma: float, epsilon: torch.Tensor, *, eps: float = 1e-5, rtol: float = 1e-5,
                   atol: float = 1e-5, device="cpu"):
    """Bits/dim through the probability-flow ODE, the tutorial's way.

    Each right-hand-side evaluation runs the score model twice: once under ``no_grad`` for the
    drift, and once more with autograd for the Skilling-Hutchinson divergence v^T (ds/dx) v.
    Returns ``(z, bpd [B] float64, nfe)``.
    """
    shape = x.shape
    nfe = 0

    def divergence_eval(sample, time_steps):
        with torch.enable_grad():
            sample.requires_grad_(True)
            score_e = torch.sum(score_model(sample, time_steps) * epsilon)
            grad_score_e = torch.autograd.grad(score_e, sample)[0]
        return torch.sum(grad_score_e * epsilon, dim=tuple(range(1, len(shape))))

    def score_eval_wrapper(sample, time_steps):
        sample = torch.tensor(sample, device=device, dtype=torch.float32).reshape(shape)
        time_steps = torch.tensor(time_steps, device=device, dtype=torch.float32).reshape((shape[0],))
        with torch.no_grad():
            score = score_model(sample, time_steps)
        return score.cpu().numpy().reshape((-1,)).astype(np.float64)

    def divergence_eval_wrapper(sample, time_steps):
        with torch.no_grad():
            sample = torch.tensor(sample, device=device, dtype=torch.float32).reshape(shape)
            time_steps = torch.tensor(time_steps, device=device, dtype=torch.float32).reshape((shape[0],))
            div = divergence_eval(sample, time_steps)
            return div.cpu().numpy().reshape((-1,)).astype(np.float64)

    def ode_func(t, y):
        nonlocal nfe
        nfe += 1
        time_steps = np.ones((shape[0],)) * t
        sample, _ = y[:-shape[0]], y[-shape[0]:]
        g = diffusion_coeff(torch.tensor(t), sigma).cpu().numpy()
        sample_grad = -0.5 * g ** 2 * score_eval_wrapper(sample, time_steps)
        logp_grad = -0.5 * g ** 2 * divergence_eval_wrapper(sample, time_steps)
        return np.concatenate([sample_grad, logp_grad], axis=0)

    init = np.concatenate([x.cpu().numpy().reshape((-1,)), np.zeros((shape[0],))], axis=0)
    res = integrate.solve_ivp(ode_func, (eps, 1.0), init, rtol=rtol, atol=atol, method="RK45")
    zp = torch.tensor(res.y[:, -1], device=device)
    z = zp[:-shape[0]].reshape(shape)
    delta_logp = zp[-shape[0]:].reshape(shape[0])
    sigma_max = marginal_prob_std(1.0, sigma).double()
    prior_logp = prior_likelihood(z, sigma_max)
    bpd = -(prior_logp + delta_logp) / np.log(2)
    bpd = bpd / np.prod(shape[1:]) + 8.0
    return z, bpd, nfe


def evaluate_bpd(score_model, sigma: float, loader, generator: torch.Generator, *, eps: float = 1e-5,
                 rtol: float = 1e-5, atol: float = 1e-5, device="cpu"):
    """The tutorial's bits/dim loop: per batch, uniform dequantization, then :func:`ode_likelihood`.

    Noise comes from ``generator`` in the package's order (``dequantize``, then the Gaussian
    probes), so with the same seed and batch size both see the same noise. Returns
    ``(bpd [N] float64, nfe per batch)``.
    """
    bpds, nfes = [], []
    for x, _ in loader:
        x = x.to(device)
        x = (x * 255.0 + torch.rand(x.shape, generator=generator).to(device)) / 256.0
        epsilon = torch.randn(x.shape, generator=generator).to(device)
        _, bpd, nfe = ode_likelihood(x, score_model, sigma, epsilon, eps=eps, rtol=rtol, atol=atol, device=device)
        bpds.append(bpd.cpu())
        nfes.append(nfe)
    return torch.cat(bpds), nfes


# -- Sampling -----------------------------------------------------------------------------------

def ode_sampler(score_model, sigma: float, z: torch.Tensor, *, eps: float = 1e-3, rtol: float = 1e-5,
                atol: float = 1e-5, device="cpu"):
    """The tutorial's black-box probability-flow ODE sampler (scipy RK45) from latent ``z``.

    Returns ``(samples, nfe)``.
    """
    shape = z.shape
    nfe = 0

    def score_eval_wrapper(sample, time_steps):
        sample = torch.tensor(sample, device=device, dtype=torch.float32).reshape(shape)
        time_steps = torch.tensor(time_steps, device=device, dtype=torch.float32).reshape((shape[0],))
        with torch.no_grad():
            score = score_model(sample, time_steps)
        return score.cpu().numpy().reshape((-1,)).astype(np.float64)

    def ode_func(t, x):
        nonlocal nfe
        nfe += 1
        time_steps = np.ones((shape[0],)) * t
        g = diffusion_coeff(torch.tensor(t), sigma).cpu().numpy()
        return -0.5 * (g ** 2) * score_eval_wrapper(x, time_steps)

    res = integrate.solve_ivp(ode_func, (1.0, eps), z.reshape(-1).cpu().numpy(), rtol=rtol, atol=atol,
                              method="RK45")
    x = torch.tensor(res.y[:, -1], device=device).reshape(shape)
    return x, nfe


# -- Training -----------------------------------------------------------------------------------

def loss_fn(model, x, marginal_prob_std_fn, eps: float = 1e-5, generator: torch.Generator | None = None):
    """The tutorial's denoising score-matching loss (t and z drawn from ``generator``, t first)."""
    random_t = torch.rand(x.shape[0], device=x.device, generator=generator) * (1.0 - eps) + eps
    z = torch.randn(x.shape, device=x.device, generator=generator)
    std = marginal_prob_std_fn(random_t)
    perturbed_x = x + z * std[:, None, None, None]
    score = model(perturbed_x, random_t)
    return torch.mean(torch.sum((score * std[:, None, None, None] + z) ** 2, dim=(1, 2, 3)))


def train(score_model, loader, marginal_prob_std_fn, *, lr: float = 1e-4, seed: int = 0, device="cpu"):
    """The tutorial's training loop (Adam, ``loss.item()`` each step) over every batch of ``loader``.

    The model is wrapped in ``torch.nn.DataParallel`` as in the tutorial. Returns the per-step losses.
    """
    model = torch.nn.DataParallel(score_model).to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator(device=device).manual_seed(seed)
    losses = []
    for x, _ in loader:
        x = x.to(device)
        loss = loss_fn(model, x, marginal_prob_std_fn, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
