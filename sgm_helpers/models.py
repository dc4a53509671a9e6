"""Networks: the tutorial's time-conditioned U-Net for 28x28 single-channel images, its class-conditional
version, a modern score network (:class:`UNet`: residual blocks, self-attention), a noise-conditional
classifier, and a small MLP for 2-D toys.

ScoreNet's parameter names follow the original tutorial exactly, so a ``ckpt.pth`` it saved loads here
(see :func:`load_tutorial_checkpoint`). All of them embed the time the same way (:func:`time_embedding`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .utils import check_positive_int, read_torch_file


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of the time: t -> [sin(2 pi W t), cos(2 pi W t)].

    ``W ~ N(0, scale^2)`` has ``embed_dim // 2`` entries, drawn once and never trained
    (a buffer, saved under the tutorial's key ``W``). Input ``[B]``, output ``[B, embed_dim]``.
    """

    def __init__(self, embed_dim: int, scale: float = 30.0):
        super().__init__()
        if embed_dim < 2 or embed_dim % 2:
            raise ValueError(f"embed_dim must be an even integer >= 2, got {embed_dim!r}")
        self.register_buffer("W", torch.randn(embed_dim // 2) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_proj = t[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(t_proj), torch.cos(t_proj)], dim=-1)


class Dense(nn.Module):
    """A linear layer whose output ``[B, C]`` is reshaped to ``[B, C, 1, 1]`` to add to feature maps."""

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        self.dense = nn.Linear(input_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)[..., None, None]


NUM_CLASSES = 10  # MNIST's digits
NULL_CLASS = NUM_CLASSES  # the label index of "no label" in ConditionalScoreNet (classifier-free guidance)


# What a score network's time embedding sees, and the scale of its Fourier frequencies: the time t itself on
# [0, 1] (the tutorial's), or the log noise level log std(t), about -7 to 2.3 for these SDEs (as NCSN++ and EDM
# condition on the noise level). Near t = 0, where bits/dim are decided, features of t barely change
# (sin(2 pi W t) ~ 2 pi W t < 0.2 for t < 1e-3) while log std(t) still moves by a unit per factor e in noise.
TIME_INPUTS = {"t": 30.0, "log_std": 4.0}


def time_embedding(embed_dim: int, scale: float = TIME_INPUTS["t"]) -> nn.Sequential:
    """ScoreNet's time embedding: Gaussian Fourier features, then a linear layer, ``[B] -> [B, embed_dim]``.

    (The swish that follows is applied by the network.) Keys ``0.W``, ``1.weight``, ``1.bias``, as in the tutorial.
    """
    return nn.Sequential(GaussianFourierProjection(embed_dim=embed_dim, scale=scale), nn.Linear(embed_dim, embed_dim))


def _check_time_input(time_input) -> str:
    if time_input not in TIME_INPUTS:
        raise ValueError(f"time_input must be one of {', '.join(map(repr, TIME_INPUTS))}, got {time_input!r}")
    return time_input


def time_feature(t: torch.Tensor, marginal_prob_std, time_input: str) -> torch.Tensor:
    """The input ``[B]`` of the time embedding: ``t`` itself, or ``log std(t)`` for ``time_input="log_std"``."""
    return t if time_input == "t" else torch.log(marginal_prob_std(t))


def _check_images_and_time(x: torch.Tensor, t, name: str) -> torch.Tensor:
    """x must be ``[B, 1, 28, 28]``; t a float or ``[B]``. Returns t as a ``[B]`` tensor of x's dtype and device."""
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"{name} takes x of shape [B, 1, 28, 28], got {tuple(x.shape)}")
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"{name} takes t as a float or a tensor of shape [B]={x.shape[0]}, got {tuple(t.shape)}")
    return t


class ScoreNet(nn.Module):
    """A U-Net s_theta(x, t) approximating the score grad_x log p_t(x) of 1x28x28 images.

    Four encoder blocks (28 -> 26 -> 12 -> 5 -> 2 pixels) and four decoder blocks with skip
    connections; every block adds a learned projection of the time embedding and applies
    GroupNorm and the swish nonlinearity. The output is divided by ``marginal_prob_std(t)``:
    the true score of p_0t(x(t) | x(0)) is -z / std(t) with z ~ N(0, I), so the network only
    has to predict a quantity of unit scale.

    Args:
        marginal_prob_std: t -> std(t) (for example ``VESDE(25).marginal_prob_std``).
        channels: feature channels of the four resolutions; each must be a positive multiple of 32
            (GroupNorm with 32 groups; the first resolution also has one with 4 groups).
        embed_dim: size of the time embedding.
        time_input: what the time embedding sees (:data:`TIME_INPUTS`): ``"t"``, the tutorial's, or
            ``"log_std"``, the log noise level log std(t).

    Input ``x`` of shape ``[B, 1, 28, 28]`` and ``t`` of shape ``[B]`` (or a float); output ``[B, 1, 28, 28]``.
    """

    def __init__(self, marginal_prob_std, channels=(32, 64, 128, 256), embed_dim: int = 256,
                 time_input: str = "t"):
        super().__init__()
        channels = tuple(channels)
        if (len(channels) != 4 or any(not isinstance(c, numbers.Integral) or isinstance(c, bool) or c < 32 or c % 32
                                      for c in channels)):
            raise ValueError("channels must be 4 positive multiples of 32 (GroupNorm uses 32 groups at every "
                             f"resolution), got {channels!r}")
        channels = tuple(int(c) for c in channels)
        self.marginal_prob_std = marginal_prob_std
        self.channels = channels
        self.embed_dim = embed_dim
        self.time_input = _check_time_input(time_input)
        self.embed = time_embedding(embed_dim, TIME_INPUTS[self.time_input])
        # Encoder: resolution goes down.
        self.conv1 = nn.Conv2d(1, channels[0], 3, stride=1, bias=False)
        self.dense1 = Dense(embed_dim, channels[0])
        self.gnorm1 = nn.GroupNorm(4, num_channels=channels[0])
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, stride=2, bias=False)
        self.dense2 = Dense(embed_dim, channels[1])
        self.gnorm2 = nn.GroupNorm(32, num_channels=channels[1])
        self.conv3 = nn.Conv2d(channels[1], channels[2], 3, stride=2, bias=False)
        self.dense3 = Dense(embed_dim, channels[2])
        self.gnorm3 = nn.GroupNorm(32, num_channels=channels[2])
        self.conv4 = nn.Conv2d(channels[2], channels[3], 3, stride=2, bias=False)
        self.dense4 = Dense(embed_dim, channels[3])
        self.gnorm4 = nn.GroupNorm(32, num_channels=channels[3])
        # Decoder: resolution goes up, with skip connections from the encoder.
        self.tconv4 = nn.ConvTranspose2d(channels[3], channels[2], 3, stride=2, bias=False)
        self.dense5 = Dense(embed_dim, channels[2])
        self.tgnorm4 = nn.GroupNorm(32, num_channels=channels[2])
        self.tconv3 = nn.ConvTranspose2d(channels[2] + channels[2], channels[1], 3, stride=2, bias=False,
                                         output_padding=1)
        self.dense6 = Dense(embed_dim, channels[1])
        self.tgnorm3 = nn.GroupNorm(32, num_channels=channels[1])
        self.tconv2 = nn.ConvTranspose2d(channels[1] + channels[1], channels[0], 3, stride=2, bias=False,
                                         output_padding=1)
        self.dense7 = Dense(embed_dim, channels[0])
        self.tgnorm2 = nn.GroupNorm(32, num_channels=channels[0])
        self.tconv1 = nn.ConvTranspose2d(channels[0] + channels[0], 1, 3, stride=1)

    @property
    def architecture(self) -> dict:
        """The class name and constructor arguments (JSON-ready), from which a manifest or checkpoint rebuilds it."""
        return {"class": type(self).__name__, "channels": list(self.channels), "embed_dim": self.embed_dim,
                **({"time_input": self.time_input} if self.time_input != "t" else {})}

    @staticmethod
    def act(x: torch.Tensor) -> torch.Tensor:
        """Swish, x * sigmoid(x)."""
        return F.silu(x)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = _check_images_and_time(x, t, type(self).__name__)
        return self._unet(x, t, self.act(self.embed_time(t)))

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """The time embedding ``[B] -> [B, embed_dim]`` (before the swish)."""
        return self.embed(time_feature(t, self.marginal_prob_std, self.time_input))

    def _unet(self, x: torch.Tensor, t: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        """The U-Net body, given the (activated) conditioning embedding ``[B, embed_dim]``."""
        h1 = self.act(self.gnorm1(self.conv1(x) + self.dense1(embed)))
        h2 = self.act(self.gnorm2(self.conv2(h1) + self.dense2(embed)))
        h3 = self.act(self.gnorm3(self.conv3(h2) + self.dense3(embed)))
        h4 = self.act(self.gnorm4(self.conv4(h3) + self.dense4(embed)))
        h = self.act(self.tgnorm4(self.tconv4(h4) + self.dense5(embed)))
        h = self.act(self.tgnorm3(self.tconv3(torch.cat([h, h3], dim=1)) + self.dense6(embed)))
        h = self.act(self.tgnorm2(self.tconv2(torch.cat([h, h2], dim=1)) + self.dense7(embed)))
        h = self.tconv1(torch.cat([h, h1], dim=1))
        return h / self.marginal_prob_std(t)[:, None, None, None]


class Reparameterized:
    """A score network of one SDE (the *source*), used as the score model of another through the noise level.

    Every SDE here has x(t) = alpha(t) x(0) + std(t) z, so x(t) / alpha(t) = x(0) + sigma(t) z with EDM's noise
    level sigma(t) = std(t) / alpha(t) (:meth:`SDE.sigma_of_t`). Two SDEs at times of equal sigma therefore see
    the same noisy data up to a scale, and their scores differ by that scale alone (Song et al. 2021, appendix B;
    Karras et al. 2022):

        s(x, t) = (alpha'(t') / alpha(t)) s'(alpha'(t') x / alpha(t), t'),    t' = t'(sigma(t))

    with primes for the source SDE (:meth:`SDE.t_of_sigma`). With a VE source (alpha' = 1) this is
    s'(x / alpha(t), t') / alpha(t): a VP or sub-VP model built from a network trained on the tutorial's VE SDE,
    whose weights (the same parameter names) it starts from. Where the target SDE's sigma goes beyond the
    source's (sigma(1) = 152 for VP with the paper's betas, 9.85 for the tutorial's VE), t' lies past the source's
    T = 1: the network is asked about times it has not been trained on until it is.

    A mixin placed before the network's class (:class:`ReparameterizedScoreNet`, :class:`ReparameterizedUNet`):
    the network is built for the source SDE, and ``forward`` wraps the network's own.
    """

    @staticmethod
    def _source(sde, source_sde):
        """The source SDE (from an ``SDE`` or its :meth:`SDE.config`), after checking that ``sde`` is an SDE."""
        from .sde import SDE

        if not isinstance(sde, SDE):
            raise ValueError(f"sde must be an SDE (a VESDE, VPSDE or subVPSDE), got {sde!r}")
        return SDE.from_config(source_sde)

    @property
    def architecture(self) -> dict:
        return {**super().architecture, "source_sde": self.source_sde.config()}

    def source_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t' with sigma'(t') = sigma(t), and the scale alpha'(t') / alpha(t), both ``[B]`` in t's dtype."""
        t64 = t.double()
        t_source = self.source_sde.t_of_sigma(self.sde.sigma_of_t(t64))
        scale = self.source_sde.mean_coeff(t_source) / self.sde.mean_coeff(t64)
        return t_source.to(t.dtype), scale.to(t.dtype)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = _check_images_and_time(x, t, type(self).__name__)
        t_source, scale = self.source_time(t)
        scale = scale[:, None, None, None]
        return scale * super().forward(scale * x, t_source)


class ReparameterizedScoreNet(Reparameterized, ScoreNet):
    """A :class:`ScoreNet` of ``source_sde`` as the score model of ``sde`` (:class:`Reparameterized`).

    Args:
        sde: the SDE this model is the score of.
        source_sde: the SDE the network is conditioned on (an ``SDE`` or its :meth:`SDE.config`).
        channels, embed_dim, time_input: as for :class:`ScoreNet` (which is built for ``source_sde``).

    Input ``x`` of shape ``[B, 1, 28, 28]`` and ``t`` of shape ``[B]`` (or a float); output ``[B, 1, 28, 28]``.
    """

    def __init__(self, sde, source_sde, channels=(32, 64, 128, 256), embed_dim: int = 256, time_input: str = "t"):
        source = self._source(sde, source_sde)
        super().__init__(source.marginal_prob_std, channels, embed_dim, time_input)
        self.sde, self.source_sde = sde, source


_NO_LABELS = object()  # marks a class-conditional network called without its y argument


class ConditionalScoreNet(ScoreNet):
    """A class-conditional :class:`ScoreNet` s_theta(x, t, y) for classifier-free guidance (Ho and Salimans 2022).

    A learned label embedding of ``num_classes + 1`` entries (the digits and one null class, index
    ``num_classes`` = :data:`NULL_CLASS` = 10) is added to the time embedding before its swish:

        embed = swish(Linear(Fourier(t)) + E[y])

    and the U-Net is ScoreNet's, unchanged. Trained with labels replaced by the null class with some
    probability (``dsm_loss(..., y=labels, p_uncond=0.1)``), one network gives both the conditional score
    s(x, t, y) and the unconditional s(x, t, null). The embedding starts at zero, so an untrained network
    ignores the label. The state dict is ScoreNet's plus ``label_embed.weight``.

    Called as ``model(x [B, 1, 28, 28], t, y)`` with ``y`` an int or ``[B]`` integers in 0..num_classes
    (``num_classes`` meaning unconditional), or None (all unconditional). ``y`` is required: a call without
    it is a ValueError, so the network cannot be passed to a sampler by mistake (use
    :func:`~sgm_helpers.controllable.cfg_score`).
    """

    def __init__(self, marginal_prob_std, channels=(32, 64, 128, 256), embed_dim: int = 256,
                 num_classes: int = NUM_CLASSES, time_input: str = "t"):
        super().__init__(marginal_prob_std, channels, embed_dim, time_input)
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.null_class = self.num_classes
        self.label_embed = nn.Embedding(self.num_classes + 1, embed_dim)
        nn.init.zeros_(self.label_embed.weight)

    def forward(self, x: torch.Tensor, t, y=_NO_LABELS) -> torch.Tensor:
        t = _check_images_and_time(x, t, type(self).__name__)
        y = self.labels(y, x.shape[0], x.device)
        return self._unet(x, t, self.act(self.embed_time(t) + self.label_embed(y)))

    @property
    def architecture(self) -> dict:
        return {**super().architecture, "num_classes": self.num_classes}

    def labels(self, y, batch: int, device=None) -> torch.Tensor:
        """``y`` (None, an int or ``[B]`` integers in 0..num_classes) as ``[B]`` int64 labels; None: the null class."""
        return class_labels(y, batch, self.num_classes, device, type(self).__name__)


def class_labels(y, batch: int, num_classes: int, device=None, owner: str = "the model") -> torch.Tensor:
    """The labels ``y`` of a class-conditional network's call, as ``[B]`` int64 in 0..num_classes.

    ``y`` is an int or a ``[B]`` integer tensor of classes 0..num_classes - 1, or ``num_classes`` (the null
    class) or None for unconditional (all null). A call without ``y`` (``_NO_LABELS``) is a ValueError.
    """
    null_class = num_classes
    allowed = (f"y must be class labels in 0..{num_classes - 1}, or {null_class} or None for the "
               "unconditional (null) class, as an int or a [B] integer tensor")
    if y is _NO_LABELS:
        raise ValueError(f"{owner} needs labels: call it as model(x, t, y); {allowed}. "
                         "To sample, wrap it with cfg_score(model, y, scale)")
    if y is None:
        return torch.full((batch,), null_class, dtype=torch.long, device=device)
    if isinstance(y, bool) or not isinstance(y, (int, torch.Tensor)) or (
            isinstance(y, torch.Tensor) and (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool)):
        raise ValueError(f"{allowed}; got {y!r}")
    y = torch.as_tensor(y, dtype=torch.long, device=device)
    if y.dim() == 0:
        y = y.expand(batch)
    if y.shape != (batch,):
        raise ValueError(f"{allowed}; got shape {tuple(y.shape)} for a batch of {batch}")
    if ((y < 0) | (y > null_class)).any():
        raise ValueError(f"{allowed}; got values {sorted(set(y.tolist()))}")
    return y


class TimeClassifier(nn.Module):
    """A noise-conditional classifier of x(t): logits of p_t(y | x(t)) for classifier guidance.

    ScoreNet's encoder in small: the same time embedding (:func:`time_embedding`), added to the
    features of each of three convolution blocks, then GroupNorm and swish; a linear head on the
    flattened 5x5 feature map.

        [B,1,28,28] -> conv 3x3 -> [B,c0,26,26] -> conv 3x3/2 -> [B,c1,12,12] -> conv 3x3/2 -> [B,c2,5,5]
                    -> flatten -> [B,25 c2] -> linear -> [B,num_classes]

    The head sees where each feature is: a 6 and a 9 share their strokes and differ in where they are, and
    in a very noisy image the evidence for a digit is spread over all of it. (Averaging the map over its
    pixels instead, the same recipe reached 95% held-out accuracy at t = 0.01 and 30% at t = 0.5.)

    GroupNorm after every convolution makes the features independent of the input's overall scale, which
    grows from ~0.3 (data) to std(1) (~10 for VE) along the SDE; the time embedding tells the network how
    noisy x is. Trained with :func:`~sgm_helpers.losses.time_classifier_loss` (cross-entropy on images
    perturbed by the SDE at t ~ U(eps, 1)).

    Args:
        channels: feature channels of the three blocks: positive multiples of 32 (GroupNorm with 32 groups;
            the first block uses 4).
        embed_dim: size of the time embedding (even).
        num_classes: number of classes.

    Called as ``classifier(x [B, 1, 28, 28], t)`` with ``t`` a float or ``[B]``; returns logits ``[B, num_classes]``.
    """

    def __init__(self, channels=(32, 64, 128), embed_dim: int = 128, num_classes: int = NUM_CLASSES):
        super().__init__()
        channels = tuple(channels)
        if (len(channels) != 3 or any(not isinstance(c, numbers.Integral) or isinstance(c, bool) or c < 32 or c % 32
                                      for c in channels)):
            raise ValueError(f"channels must be 3 positive multiples of 32 (GroupNorm uses 32 groups), "
                             f"got {channels!r}")
        self.channels = tuple(int(c) for c in channels)
        self.embed_dim = check_positive_int(embed_dim, "embed_dim")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        c = self.channels
        self.embed = time_embedding(embed_dim)
        self.conv1 = nn.Conv2d(1, c[0], 3, stride=1, bias=False)
        self.dense1 = Dense(embed_dim, c[0])
        self.gnorm1 = nn.GroupNorm(4, num_channels=c[0])
        self.conv2 = nn.Conv2d(c[0], c[1], 3, stride=2, bias=False)
        self.dense2 = Dense(embed_dim, c[1])
        self.gnorm2 = nn.GroupNorm(32, num_channels=c[1])
        self.conv3 = nn.Conv2d(c[1], c[2], 3, stride=2, bias=False)
        self.dense3 = Dense(embed_dim, c[2])
        self.gnorm3 = nn.GroupNorm(32, num_channels=c[2])
        self.head = nn.Linear(c[2] * 5 * 5, self.num_classes)

    @property
    def architecture(self) -> dict:
        """The class name and constructor arguments (JSON-ready), from which a manifest or checkpoint rebuilds it."""
        return {"class": type(self).__name__, "channels": list(self.channels), "embed_dim": self.embed_dim,
                "num_classes": self.num_classes}

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = _check_images_and_time(x, t, type(self).__name__)
        act = F.silu
        embed = act(self.embed(t))
        h = act(self.gnorm1(self.conv1(x) + self.dense1(embed)))
        h = act(self.gnorm2(self.conv2(h) + self.dense2(embed)))
        h = act(self.gnorm3(self.conv3(h) + self.dense3(embed)))
        return self.head(h.flatten(1))


NORM_GROUPS = 8  # GroupNorm's groups in UNet's blocks: its channel counts are multiples of 8


class ResBlock(nn.Module):
    """A residual block conditioned on an embedding (DDPM's, Ho et al. 2020), ``[B, c_in, H, W] -> [B, c_out, H, W]``:

        h   = conv3x3(swish(GroupNorm(x))) + Linear(embed)     (the embedding, one number per channel)
        h   = conv3x3(swish(GroupNorm(h)))
        out = skip(x) + h                                     (skip: identity, or a 1x1 conv if c_in != c_out)

    The second convolution starts at zero, so a new block passes its input through unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(NORM_GROUPS, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.dense = Dense(embed_dim, out_channels)
        self.norm2 = nn.GroupNorm(NORM_GROUPS, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.dense(embed)
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the H*W positions of a feature map, with a residual connection:

        q, k, v = 1x1 convs of GroupNorm(x), each seen as [B, HW, C]
        out     = x + proj(softmax(q k^T / sqrt(C)) v)            (proj: a 1x1 conv that starts at zero)

    Every position sees every other one: at 7x7, 49 positions, it is cheap, and it links the far corners
    of a digit that the 3x3 convolutions of a small network do not reach. ``[B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(NORM_GROUPS, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, height * width).transpose(2, 3).unbind(1)
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), dim=-1)       # [B, HW, HW]
        h = (weights @ v).transpose(1, 2).reshape(b, c, height, width)
        return x + self.proj(h)


class UNet(nn.Module):
    """A modern score network s_theta(x, t[, y]) for 1x28x28 images: residual blocks, attention, skip connections.

    The architecture of DDPM (Ho et al. 2020) and of the paper's NCSN++/DDPM++ in small. With the default
    ``channels=(16, 32, 96)`` (L = 3 levels, at 28x28, 14x14 and 7x7):

        x [B,1,28,28] -> conv3x3 -> c0 channels
        encoder, level i = 0..L-1:  (3x3 stride-2 conv to c_i, halving the size, for i > 0)
                                    num_res_blocks ResBlocks at c_i -> skip_i
        middle, at 7x7:             ResBlock, SelfAttention (if ``attention``), ResBlock
        decoder, level i = L-1..0:  (2x2 stride-2 transposed conv to c_i, doubling the size, for i < L-1)
                                    concatenate skip_i (2 c_i channels), num_res_blocks ResBlocks at c_i
        GroupNorm, swish, conv3x3 -> [B,1,28,28], divided by marginal_prob_std(t)

    Every :class:`ResBlock` (GroupNorm with 8 groups, swish) adds a learned projection of the embedding

        embed = swish(Linear(Fourier(t)) [+ E[y]])

    built by :func:`time_embedding` (the tutorial's Gaussian Fourier features), as in :class:`ScoreNet`, of t or,
    with ``time_input="log_std"``, of log std(t) (:data:`TIME_INPUTS`). As there, the output is divided by
    ``marginal_prob_std(t)``, the std of the SDE's perturbation kernel (VE, VP or sub-VP alike): the score of
    p_0t(x(t) | x(0)) is -z / std(t), so the network predicts a quantity of unit scale. The last convolution and the second one of each block start at zero, so a new
    network outputs 0.

    Class-conditional with ``num_classes`` (as :class:`ConditionalScoreNet`): a label embedding of
    ``num_classes + 1`` entries (the last, index ``num_classes``, is the null class), starting at zero, is
    added to the time embedding; the network is then called as ``model(x, t, y)`` (see
    :func:`class_labels`; ``y`` is required) and serves classifier-free guidance. Without ``num_classes`` it
    is unconditional, called as ``model(x, t)``.

    The default is sized to train on one CPU core: 0.99M parameters (4 MB), about twice ScoreNet's time per
    training step there (``benchmarks/networks.py``; numbers in ``benchmarks/RESULTS.md``). Its width sits at
    7x7, where a weight costs 49 multiply-adds per image against 784 at 28x28. Wider networks, such as
    ``channels=(32, 64, 128)`` (1.9M parameters, about 5x ScoreNet's step on a CPU), suit a GPU.

    Args:
        marginal_prob_std: t -> std(t) (for example ``VPSDE().marginal_prob_std``).
        channels: feature channels of the 1 to 3 resolutions (28, 14, 7), each a positive multiple of 8.
        num_res_blocks: residual blocks per resolution, in the encoder and in the decoder.
        attention: self-attention in the middle, at the lowest resolution.
        embed_dim: size of the time (and label) embedding, even.
        num_classes: None (unconditional) or the number of classes.

    Input ``x`` ``[B, 1, 28, 28]``, ``t`` a float or ``[B]``; output ``[B, 1, 28, 28]``.
    """

    def __init__(self, marginal_prob_std, channels=(16, 32, 96), num_res_blocks: int = 1, attention: bool = True,
                 embed_dim: int = 128, num_classes: int | None = None, time_input: str = "t"):
        super().__init__()
        channels = tuple(channels)
        if (not 1 <= len(channels) <= 3 or any(not isinstance(c, numbers.Integral) or isinstance(c, bool) or c < 1
                                                 or c % NORM_GROUPS for c in channels)):
            raise ValueError(f"channels must be 1 to 3 positive multiples of {NORM_GROUPS} (one per resolution: "
                             f"28, 14, 7; GroupNorm uses {NORM_GROUPS} groups), got {channels!r}")
        if not isinstance(attention, bool):
            raise ValueError(f"attention must be True or False, got {attention!r}")
        self.marginal_prob_std = marginal_prob_std
        self.channels = tuple(int(c) for c in channels)
        self.num_res_blocks = check_positive_int(num_res_blocks, "num_res_blocks")
        self.attention = attention
        self.embed_dim = check_positive_int(embed_dim, "embed_dim")
        self.num_classes = None if num_classes is None else check_positive_int(num_classes, "num_classes")
        self.time_input = _check_time_input(time_input)
        c, n = self.channels, self.num_res_blocks
        self.embed = time_embedding(embed_dim, TIME_INPUTS[self.time_input])
        if self.num_classes is not None:
            self.null_class = self.num_classes
            self.label_embed = nn.Embedding(self.num_classes + 1, embed_dim)
            nn.init.zeros_(self.label_embed.weight)
        self.conv_in = nn.Conv2d(1, c[0], 3, padding=1)
        self.encoder = nn.ModuleList(nn.ModuleList(ResBlock(ci, ci, embed_dim) for _ in range(n)) for ci in c)
        self.downsample = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(c[:-1], c[1:]))
        self.mid1 = ResBlock(c[-1], c[-1], embed_dim)
        self.mid_attention = SelfAttention(c[-1]) if attention else nn.Identity()
        self.mid2 = ResBlock(c[-1], c[-1], embed_dim)
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(c[:-1], c[1:]))
        self.decoder = nn.ModuleList(
            nn.ModuleList(ResBlock(2 * ci if k == 0 else ci, ci, embed_dim) for k in range(n)) for ci in c)
        self.norm_out = nn.GroupNorm(NORM_GROUPS, c[0])
        self.conv_out = nn.Conv2d(c[0], 1, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def architecture(self) -> dict:
        """The class name and constructor arguments (JSON-ready), from which a manifest or checkpoint rebuilds it."""
        return {"class": type(self).__name__, "channels": list(self.channels), "num_res_blocks": self.num_res_blocks,
                "attention": self.attention, "embed_dim": self.embed_dim, "num_classes": self.num_classes,
                **({"time_input": self.time_input} if self.time_input != "t" else {})}

    def forward(self, x: torch.Tensor, t, y=_NO_LABELS) -> torch.Tensor:
        name = type(self).__name__
        t = _check_images_and_time(x, t, name)
        embed = self.embed(time_feature(t, self.marginal_prob_std, self.time_input))
        if self.num_classes is not None:
            embed = embed + self.label_embed(class_labels(y, x.shape[0], self.num_classes, x.device, name))
        elif y is not _NO_LABELS and y is not None:
            raise ValueError(f"y: this {name} is unconditional (num_classes=None) and takes no labels; "
                             f"got {y!r} (build it with num_classes=... for a class-conditional model)")
        embed = F.silu(embed)
        h = self.conv_in(x)
        skips = []
        for i, blocks in enumerate(self.encoder):
            if i > 0:
                h = self.downsample[i - 1](h)
            for block in blocks:
                h = block(h, embed)
            skips.append(h)
        h = self.mid2(self.mid_attention(self.mid1(h, embed)), embed)
        for i in reversed(range(len(self.decoder))):
            if i < len(self.decoder) - 1:
                h = self.upsample[i](h)
            h = torch.cat([h, skips.pop()], dim=1)
            for block in self.decoder[i]:
                h = block(h, embed)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return h / self.marginal_prob_std(t)[:, None, None, None]


class ReparameterizedUNet(Reparameterized, UNet):
    """An unconditional :class:`UNet` of ``source_sde`` as the score model of ``sde`` (:class:`Reparameterized`):
    ``mnist-unet``'s network as a VP model, for example.

    Args:
        sde: the SDE this model is the score of.
        source_sde: the SDE the network is conditioned on (an ``SDE`` or its :meth:`SDE.config`).
        channels, num_res_blocks, attention, embed_dim, time_input: as for :class:`UNet` (built for ``source_sde``).

    Input ``x`` of shape ``[B, 1, 28, 28]`` and ``t`` of shape ``[B]`` (or a float); output ``[B, 1, 28, 28]``.
    """

    def __init__(self, sde, source_sde, channels=(16, 32, 96), num_res_blocks: int = 1, attention: bool = True,
                 embed_dim: int = 128, time_input: str = "t"):
        source = self._source(sde, source_sde)
        super().__init__(source.marginal_prob_std, channels, num_res_blocks, attention, embed_dim, num_classes=None,
                         time_input=time_input)
        self.sde, self.source_sde = sde, source

    @property
    def architecture(self) -> dict:
        return {key: value for key, value in super().architecture.items() if key != "num_classes"}


class ToyScoreMLP(torch.nn.Module):
    """A small score network for low-dimensional toys, built like ``ScoreNet``:

        s_theta(x, t) = MLP([x, t]) / marginal_prob_std(t)

    The MLP (``layers`` hidden layers of ``hidden`` units, SiLU) sees the point and the time;
    dividing by std(t) lets it predict a quantity of unit size, as in ``ScoreNet``. Called as
    ``model(x [B, dim], t [B])``, so ``train`` and ``dsm_loss`` take it unchanged.
    """

    def __init__(self, marginal_prob_std, dim: int = 2, hidden: int = 128, layers: int = 3):
        super().__init__()
        dim = check_positive_int(dim, "dim")
        hidden = check_positive_int(hidden, "hidden")
        layers = check_positive_int(layers, "layers")
        self.marginal_prob_std = marginal_prob_std
        sizes = [dim + 1] + [hidden] * layers
        blocks = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            blocks += [torch.nn.Linear(a, b), torch.nn.SiLU()]
        self.net = torch.nn.Sequential(*blocks, torch.nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        std = torch.as_tensor(self.marginal_prob_std(t), dtype=x.dtype, device=x.device)
        return self.net(torch.cat([x, t[:, None]], dim=1)) / std.reshape(-1, 1)


def _read_state_dict(path_or_state_dict) -> dict:
    if isinstance(path_or_state_dict, Mapping):
        return dict(path_or_state_dict)
    return read_torch_file(path_or_state_dict)


def load_tutorial_checkpoint(model: nn.Module, path_or_state_dict) -> nn.Module:
    """Load a state dict saved by the original tutorial (``torch.save(score_model.state_dict(), 'ckpt.pth')``).

    Accepts a path, an open binary file or a state dict. Keys prefixed ``module.`` (a model wrapped in
    ``torch.nn.DataParallel``) are stripped; a package checkpoint (see ``training.save_checkpoint``)
    also works, its ``"model"`` entry being used. The file is read with ``weights_only=True``.
    Raises ``ValueError`` naming missing, unexpected or mis-shaped keys if the checkpoint is from
    another architecture. Returns ``model``.
    """
    state = _read_state_dict(path_or_state_dict)
    if "model" in state and isinstance(state["model"], Mapping):
        state = dict(state["model"])
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = sorted(k for k in set(own) & set(state)
                        if not isinstance(state[k], torch.Tensor) or state[k].shape != own[k].shape)
    if missing or unexpected or mis_shaped:
        def first(keys):
            return ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "") if keys else "none"
        raise ValueError("checkpoint does not match this architecture: "
                         f"missing keys: {first(missing)}; unexpected keys: {first(unexpected)}; "
                         f"shape mismatches: {first(mis_shaped)}")
    model.load_state_dict(state)
    return model
