"""Figures for the notebooks."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from torchvision.utils import make_grid


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile ``[B, C, H, W]`` images into one ``[C, H', W']`` grid (``torchvision.utils.make_grid``)."""
    if images.dim() != 4:
        raise ValueError(f"images must have shape [B, C, H, W], got {tuple(images.shape)}")
    nrow = nrow or max(1, math.isqrt(images.shape[0] - 1) + 1)
    return make_grid(images.detach().float().cpu(), nrow=nrow, padding=padding, pad_value=1.0)


def show_images(images: torch.Tensor, nrow: int | None = None, *, title: str | None = None, ax=None,
                figsize=(6, 6)):
    """Show ``[B, C, H, W]`` images in [0, 1] as one grid (``nrow`` per row; default: a square).

    Values outside [0, 1] are displayed saturated (imshow's vmin/vmax); the tensor is not changed.
    Returns the matplotlib axes.
    """
    grid = image_grid(images, nrow)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    if grid.shape[0] == 1 or (grid.shape[0] == 3 and images.shape[1] == 1):
        ax.imshow(grid[0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(grid.permute(1, 2, 0).clamp(0, 1))
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax
