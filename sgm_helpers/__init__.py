"""sgm_helpers: the implementations behind the sgm-notebooks teaching series.

Score-based generative modeling through SDEs (Song et al., ICLR 2021), one module per concept:
``sde`` (the VE SDE), ``models`` (the U-Net), ``losses`` (denoising score matching), ``data``
(MNIST), ``training``, ``samplers``, ``likelihood``, ``plotting``, ``utils``.
"""

__version__ = "0.1.0"

from .data import load_mnist
from .likelihood import (BPDResult, bits_per_dim, dequantize, evaluate_bpd, exact_divergence,
                         hutchinson_divergence, ode_likelihood)
from .losses import dsm_loss
from .models import Dense, GaussianFourierProjection, ScoreNet, load_tutorial_checkpoint
from .plotting import image_grid, show_images
from .samplers import euler_maruyama_sampler, ode_sampler, pc_sampler
from .sde import VESDE
from .training import load_checkpoint, make_ema, save_checkpoint, train
from .utils import get_device, seed_everything

__all__ = [
    "VESDE", "ScoreNet", "GaussianFourierProjection", "Dense", "load_tutorial_checkpoint",
    "dsm_loss", "load_mnist", "train", "make_ema", "save_checkpoint", "load_checkpoint",
    "euler_maruyama_sampler", "pc_sampler", "ode_sampler",
    "hutchinson_divergence", "exact_divergence", "ode_likelihood", "bits_per_dim", "dequantize", "evaluate_bpd",
    "BPDResult", "show_images", "image_grid", "get_device", "seed_everything",
]
