"""Figures for the notebooks."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation

from .utils import check_positive_int


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile ``[B, C, H, W]`` images into one ``[C, H', W']`` grid (``torchvision.utils.make_grid``)."""
    from torchvision.utils import make_grid  # imported here: torchvision is slow to import

    if images.dim() != 4:
        raise ValueError(f"images must have shape [B, C, H, W], got {tuple(images.shape)}")
    nrow = nrow or max(1, math.isqrt(images.shape[0] - 1) + 1)
    return make_grid(images.detach().float().cpu(), nrow=nrow, padding=padding, pad_value=1.0)


def save_image_grid(images: torch.Tensor, path, nrow: int | None = None) -> Path:
    """Save ``[B, C, H, W]`` images as one PNG grid (``torchvision.utils.save_image``), each pixel clipped to [0, 1]
    as it is displayed; ``nrow`` defaults to a square. Returns the path."""
    from torchvision.utils import save_image  # imported here: torchvision is slow to import

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"the grid must be a .png file, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, math.isqrt(len(images) - 1) + 1)
    save_image(images.clamp(0.0, 1.0), path, nrow=nrow, padding=2, pad_value=1.0)
    return path


def show_images(images: torch.Tensor, nrow: int | None = None, *, title: str | None = None, ax=None,
                figsize=(6, 6)):
    """Show ``[B, C, H, W]`` images in [0, 1] as one grid (``nrow`` per row; default: a square).

    Values outside [0, 1] are displayed saturated (black below 0, white above 1); the tensor is not changed.
    Returns the matplotlib axes.
    """
    grid = image_grid(images, nrow)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    if grid.shape[0] == 1 or (grid.shape[0] == 3 and images.shape[1] == 1):
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
    else:
        # imshow ignores vmin/vmax for RGB: saturate a display copy explicitly (it would clip with a warning)
        ax.imshow(grid.permute(1, 2, 0).clamp(0.0, 1.0).numpy())
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


# --- 2-D toys: densities, score fields, particle trajectories ------------------------------------


def _grid(extent, n: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    xmin, xmax, ymin, ymax = _check_extent(extent)
    xs, ys = np.linspace(xmin, xmax, n), np.linspace(ymin, ymax, n)
    gx, gy = np.meshgrid(xs, ys)
    points = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.get_default_dtype())
    return gx, gy, points


def _check_extent(extent) -> tuple[float, float, float, float]:
    try:
        xmin, xmax, ymin, ymax = (float(v) for v in extent)
    except (TypeError, ValueError):
        raise ValueError(f"extent must be (xmin, xmax, ymin, ymax), got {extent!r}") from None
    if not (xmin < xmax and ymin < ymax):
        raise ValueError(f"extent must have xmin < xmax and ymin < ymax, got {extent!r}")
    return xmin, xmax, ymin, ymax


def _log_prob_fn(density):
    """A ``GaussianMixture``'s ``log_prob``, or ``density`` itself if it is a function ``x [N, 2] -> log p [N]``."""
    fn = getattr(density, "log_prob", density)
    if not callable(fn):
        raise ValueError("density must be a GaussianMixture (anything with .log_prob) or a function x -> log p(x)")
    return fn


def _density_contours(ax, density, extent, grid_size: int, levels, cmap: str):
    gx, gy, points = _grid(extent, grid_size)
    with torch.no_grad():
        logp = _log_prob_fn(density)(points).detach().double().cpu().numpy().reshape(gx.shape)
    return ax.contourf(gx, gy, np.exp(logp), levels=levels, cmap=cmap)


def plot_density_and_score(density, score_fn=None, *, ax=None, extent=(-6.0, 6.0, -6.0, 6.0), grid_size: int = 150,
                           n_arrows: int = 21, normalize_arrows: bool = True, levels: int = 12, cmap: str = "Blues",
                           title: str | None = None, figsize=(5.5, 5)):
    """Filled contours of a 2-D density p(x) with its score grad_x log p(x) drawn as arrows.

    Args:
        density: a :class:`~sgm_helpers.toy.GaussianMixture`, or a function ``x [N, 2] -> log p(x) [N]``.
        score_fn: ``x [N, 2] -> score [N, 2]``; defaults to ``density.score``. Pass e.g.
            ``lambda x: model(x, t)`` to draw a learned score over the true density. None and no
            ``density.score``: contours only.
        extent: ``(xmin, xmax, ymin, ymax)`` of the plotted square.
        grid_size: contour grid resolution; ``n_arrows``: arrows per side.
        normalize_arrows: draw every arrow with the same length (the direction of the score only:
            its size spans orders of magnitude between the modes and the far field). If False,
            lengths are proportional to |score| (matplotlib's autoscaling).
    Returns:
        the matplotlib axes.
    """
    if score_fn is None:
        score_fn = getattr(density, "score", None)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    _density_contours(ax, density, extent, grid_size, levels, cmap)
    if score_fn is not None:
        gx, gy, points = _grid(extent, n_arrows)
        with torch.no_grad():
            s = score_fn(points).detach().double().cpu().numpy()
        if normalize_arrows:
            s = s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)
        ax.quiver(gx, gy, s[:, 0].reshape(gx.shape), s[:, 1].reshape(gx.shape), color="k", alpha=0.6,
                  angles="xy", pivot="mid", width=0.004)
    if title is None:
        title = "density p(x) and score ∇log p(x)" + (" (arrows: direction only)" if normalize_arrows else "")
    ax.set(xlabel="$x_1$", ylabel="$x_2$", title=title, aspect="equal")
    return ax


def _as_trajectory(traj) -> np.ndarray:
    traj = np.asarray(traj.detach().cpu() if isinstance(traj, torch.Tensor) else traj, dtype=float)
    if traj.ndim != 3 or traj.shape[2] != 2 or traj.shape[0] < 1 or traj.shape[1] < 1:
        raise ValueError(f"traj must have shape [T, B, 2] (time, particle, coordinate), got {traj.shape}")
    return traj


def _data_extent(traj: np.ndarray, margin: float = 0.05) -> tuple[float, float, float, float]:
    lo, hi = traj.reshape(-1, 2).min(0), traj.reshape(-1, 2).max(0)
    pad = np.maximum((hi - lo) * margin, 1e-3)
    return lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1]


def plot_trajectories(traj, *, ax=None, density=None, extent=None, max_particles: int | None = 200,
                      title: str = "particle trajectories", figsize=(5.5, 5)):
    """Paths of particles in 2-D: ``traj`` ``[T, B, 2]`` (e.g. from ``return_trajectory=True``).

    Thin lines are the paths, hollow grey circles the starting points, dots the end points.
    ``density`` (a mixture or a log-density function) is drawn underneath; ``extent`` defaults
    to the data's range; ``max_particles`` caps how many paths are drawn (the first ones).
    Returns the matplotlib axes.
    """
    traj = _as_trajectory(traj)
    if max_particles is not None:
        traj = traj[:, :max_particles]
    extent = _check_extent(extent) if extent is not None else _data_extent(traj)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    if density is not None:
        _density_contours(ax, density, extent, 120, 12, "Blues")
    ax.plot(traj[:, :, 0], traj[:, :, 1], color="tab:orange", lw=0.6, alpha=0.5)
    ax.scatter(traj[0, :, 0], traj[0, :, 1], s=14, facecolors="none", edgecolors="0.4", label="start")
    ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=10, color="tab:red", label="end", zorder=3)
    ax.set(xlim=extent[:2], ylim=extent[2:], xlabel="$x_1$", ylabel="$x_2$", title=title, aspect="equal")
    ax.legend(loc="upper right")
    return ax


def animate_trajectories(traj, *, density=None, extent=None, times=None, max_frames: int = 100, interval: int = 80,
                         tail: int = 5, title: str = "particles", figsize=(5, 5)) -> animation.FuncAnimation:
    """An animation of particles moving in 2-D: ``traj`` ``[T, B, 2]``, one frame per (sub-sampled) time.

    In Jupyter: ``from IPython.display import HTML; HTML(anim.to_jshtml())``. The figure is closed
    before returning so that the notebook does not also show a static copy; works with the Agg backend.

    Args:
        traj: positions ``[T, B, 2]``.
        density: optional background (a mixture or a log-density function).
        extent: ``(xmin, xmax, ymin, ymax)``; defaults to the data's range.
        times: optional ``[T]`` values shown as "t = ..." in the title (default: the step index).
        max_frames: at most this many frames, evenly spaced over T (the first and last always in).
        interval: milliseconds between frames.
        tail: each particle trails a line through its last ``tail`` frames (0 for none).
    """
    traj = _as_trajectory(traj)
    max_frames = max(2, int(max_frames))
    if times is not None:
        times = np.asarray(times.detach().cpu() if isinstance(times, torch.Tensor) else times, dtype=float)
        if times.shape != (traj.shape[0],):
            raise ValueError(f"times must have shape [T] = [{traj.shape[0]}], got {times.shape}")
    extent = _check_extent(extent) if extent is not None else _data_extent(traj)
    frames = np.unique(np.linspace(0, traj.shape[0] - 1, min(max_frames, traj.shape[0])).round().astype(int))
    fig, ax = plt.subplots(figsize=figsize)
    if density is not None:
        _density_contours(ax, density, extent, 120, 12, "Blues")
    ax.set(xlim=extent[:2], ylim=extent[2:], xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
    dots = ax.scatter(traj[0, :, 0], traj[0, :, 1], s=10, color="tab:red", zorder=3)
    tails = [ax.plot([], [], color="tab:orange", lw=0.6, alpha=0.5)[0] for _ in range(traj.shape[1])] if tail else []

    def draw(j: int):
        k = frames[j]
        dots.set_offsets(traj[k])
        start = frames[max(0, j - tail)]
        for b, line in enumerate(tails):
            line.set_data(traj[start:k + 1, b, 0], traj[start:k + 1, b, 1])
        when = f"t = {times[k]:.3g}" if times is not None else f"step {k}"
        ax.set_title(f"{title} ({when})")
        return [dots, *tails]

    anim = animation.FuncAnimation(fig, draw, frames=len(frames), interval=interval, blit=False)
    plt.close(fig)
    return anim


def label_grid(ax, *, columns=None, rows=None, xlabel: str | None = None, ylabel: str | None = None,
               tile: int = 28, padding: int = 2):
    """Put one tick label under every column (and beside every row) of an image grid.

    For grids drawn by :func:`~sgm_helpers.plotting.show_images` (``make_grid`` tiles of
    ``tile`` pixels separated by ``padding``), which hides the axes: they are switched back on,
    without spines or tick marks. Returns the axes.
    """
    centre = lambda j: padding + j * (tile + padding) + (tile - 1) / 2  # noqa: E731
    ax.set_axis_on()
    ax.set_xticks([centre(j) for j in range(len(columns))], [str(c) for c in columns]) if columns else ax.set_xticks([])
    ax.set_yticks([centre(i) for i in range(len(rows))], [str(r) for r in rows]) if rows else ax.set_yticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    return ax


def plot_losses(losses, ax=None, *, window: int = 100, title: str = "Training loss"):
    """Plot per-step losses (faint) and their running mean over ``window`` steps, on a log scale. Returns the axes."""
    import matplotlib.pyplot as plt

    window = check_positive_int(window, "window")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    losses = torch.as_tensor(list(losses), dtype=torch.float64)
    steps = torch.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, lw=0.8, label="per step")
    if len(losses) >= 2:
        w = min(window, len(losses))
        kernel = torch.ones(1, 1, w, dtype=torch.float64) / w
        smooth = torch.nn.functional.conv1d(losses.view(1, 1, -1), kernel).view(-1)
        ax.plot(steps[w - 1:], smooth, color="tab:blue", lw=2, label=f"mean of {w} steps")
    ax.set_yscale("log")  # the first steps' loss is 100 times the final one
    ax.set_xlabel("training step")
    ax.set_ylabel("DSM loss (log scale)")
    ax.set_title(title)
    ax.legend(loc="upper right")
    return ax
