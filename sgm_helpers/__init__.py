"""sgm_helpers: the implementations behind the sgm-notebooks teaching series.

Score-based generative modeling through SDEs (Song et al., ICLR 2021), one module per concept:
``sde`` (VE, VP and sub-VP), ``models`` (the tutorial's U-Net and a modern one), ``losses`` (denoising and sliced score
matching), ``data`` (MNIST), ``training``, ``samplers``, ``likelihood``, ``toy`` (exact scores),
``langevin``, ``classifier`` and ``metrics`` (sample quality), ``evaluation`` (the model card's pipeline),
``controllable`` (guidance, inpainting, super-resolution),
``pretrained``, ``plotting``, ``utils``.
"""

__version__ = "0.1.0"

from .classifier import MNISTClassifier, classifier_accuracy, load_classifier, predict_proba, train_classifier
from .controllable import (block_means, cfg_score, classifier_guided_score, inpaint, reconstruction_guided_score,
                           super_resolve)
from .data import load_mnist
from .langevin import annealed_langevin_dynamics, langevin_dynamics
from .likelihood import (BPDResult, bits_per_dim, dequantize, evaluate_bpd, exact_divergence,
                         hutchinson_divergence, ode_likelihood)
from .losses import dsm_loss, ssm_loss, time_classifier_loss
from .metrics import SampleQuality, classifier_features, frechet_distance, sample_quality
from .models import (NULL_CLASS, ConditionalScoreNet, Dense, GaussianFourierProjection, Reparameterized,
                     ReparameterizedScoreNet, ReparameterizedUNet, ScoreNet, TimeClassifier, ToyScoreMLP, UNet,
                     load_tutorial_checkpoint)
from .plotting import (animate_trajectories, image_grid, plot_density_and_score, plot_trajectories,
                       show_images)
from .pretrained import available_models, load_pretrained, load_score_checkpoint, model_info, pretrained_sde
from .samplers import (SAMPLERS, CountingModel, ancestral_sampler, dpm_solver_sampler, edm_sigma_steps,
                       euler_maruyama_sampler,
                       get_sampler, heun_sampler, ode_sampler, pc_sampler, reverse_sde_sampler, sample)
from .sde import SDE, VESDE, VPSDE, forward_sde_paths, make_sde, subVPSDE
from .toy import Gaussian, GaussianMixture, ring, single_gaussian, three_modes, two_modes
from .training import load_checkpoint, make_ema, save_checkpoint, train
from .utils import get_device, seed_everything

__all__ = [
    "SDE", "VESDE", "VPSDE", "subVPSDE", "make_sde", "forward_sde_paths",
    "ScoreNet", "Reparameterized", "ReparameterizedScoreNet", "ReparameterizedUNet", "GaussianFourierProjection",
    "Dense", "ToyScoreMLP", "load_tutorial_checkpoint",
    "dsm_loss", "ssm_loss", "load_mnist", "train", "make_ema", "save_checkpoint", "load_checkpoint",
    "euler_maruyama_sampler", "pc_sampler", "ancestral_sampler", "reverse_sde_sampler", "ode_sampler",
    "heun_sampler", "dpm_solver_sampler", "edm_sigma_steps", "SAMPLERS", "get_sampler", "sample", "CountingModel",
    "hutchinson_divergence", "exact_divergence", "ode_likelihood", "bits_per_dim", "dequantize", "evaluate_bpd",
    "BPDResult", "show_images", "image_grid", "get_device", "seed_everything",
    "Gaussian", "GaussianMixture", "two_modes", "three_modes", "ring", "single_gaussian",
    "langevin_dynamics", "annealed_langevin_dynamics",
    "plot_density_and_score", "plot_trajectories", "animate_trajectories",
    "load_pretrained", "pretrained_sde", "load_score_checkpoint", "available_models", "model_info",
    "MNISTClassifier", "train_classifier", "load_classifier", "predict_proba", "classifier_accuracy",
    "frechet_distance", "classifier_features", "sample_quality", "SampleQuality",
    "inpaint", "super_resolve", "block_means", "classifier_guided_score", "cfg_score", "reconstruction_guided_score",
    "ConditionalScoreNet", "TimeClassifier", "NULL_CLASS", "time_classifier_loss", "UNet",
]
