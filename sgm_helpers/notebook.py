"""Small helpers the notebooks share, so that their cells stay short.

- running: ``quick_mode`` (``SGM_QUICK``), ``Stopwatch``, ``CountingModel`` (score evaluations),
  ``TrajectoryRecorder`` (a sampler callback), ``train_live`` (training with a live loss curve);
- teaching: ``forward_sde_paths`` (simulate the forward SDE), ``ToyScoreMLP`` (a score network for
  2-D toys), ``layer_shapes`` (what flows through a network);
- showing: ``format_table``, ``plot_losses``, ``label_grid`` (axis labels for image grids),
  ``interactive_figure`` (sliders that redraw a figure), ``RunPanel`` (controls and a Run button).

Nothing here is part of the method itself; that lives in the other modules.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from .utils import check_positive, check_positive_int, randn

QUICK_ENV = "SGM_QUICK"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def quick_mode() -> bool:
    """True when the environment variable ``SGM_QUICK`` asks for quick mode (CI sets ``SGM_QUICK=1``).

    In quick mode every expensive notebook cell runs the same code on less: fewer steps, fewer
    images. Accepted values (any case): 1/true/yes/on and 0/false/no/off (or unset, or empty).
    """
    value = os.environ.get(QUICK_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{QUICK_ENV} must be 1 or 0 (or true/false, yes/no, on/off), got {os.environ[QUICK_ENV]!r}")


class Stopwatch:
    """Wall time of a ``with`` block, in ``.seconds``; waits for queued CUDA work at both ends.

        with Stopwatch() as sw:
            samples = euler_maruyama_sampler(...)
        print(f"{sw.seconds:.1f} s")
    """

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.seconds = math.nan
        self._start = None

    @staticmethod
    def _sync():
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def __enter__(self) -> "Stopwatch":
        self._sync()
        self._start = self.clock()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds = self.clock() - self._start


class CountingModel(torch.nn.Module):
    """Wraps a score model ``(x, t) -> score`` and counts its evaluations in ``.calls``.

    One call is one forward pass over a whole batch: the cost unit of every sampler (the number
    of function evaluations, NFE). The wrapped model may be a network (its parameters, and so its
    device, show through) or a plain function such as an exact toy score.
    """

    def __init__(self, score_model):
        super().__init__()
        if not callable(score_model):
            raise ValueError(f"score_model must be callable as score_model(x, t), got {type(score_model).__name__}")
        self.score_model = score_model
        self.calls = 0

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        self.calls += 1
        return self.score_model(x, t)

    def reset(self) -> None:
        self.calls = 0


class TrajectoryRecorder:
    """A sampler ``callback(step, t, x_mean)`` that keeps a copy of the batch every ``every`` steps.

    Records after steps ``every - 1, 2 every - 1, ...`` (so the last step is recorded when
    ``every`` divides the number of steps). ``.times`` holds the times reached and ``.stack()``
    the states, ``[K, B, ...]`` on the CPU.
    """

    def __init__(self, every: int = 1):
        self.every = check_positive_int(every, "every")
        self.times: list[float] = []
        self.states: list[torch.Tensor] = []

    def __call__(self, step: int, t: float, x: torch.Tensor) -> None:
        if (step + 1) % self.every == 0:
            self.times.append(float(t))
            self.states.append(x.detach().cpu().clone())

    def stack(self) -> torch.Tensor:
        if not self.states:
            raise ValueError("nothing recorded yet: pass the recorder as the sampler's callback=")
        return torch.stack(self.states)


def forward_sde_paths(sde, x0: torch.Tensor, num_steps: int = 1000, *, record_every: int = 1,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulate the forward SDE dx = g(t) dw from t = 0 to t = 1 with the Euler-Maruyama method.

    One step from t to t + dt adds independent Gaussian noise, x <- x + g(t) sqrt(dt) z. (There is
    no drift: the VE SDE only adds noise.)

    Args:
        sde: supplies ``diffusion_coeff(t)`` = g(t).
        x0: starting points ``[B, ...]`` (2-D points, images...).
        num_steps: Euler-Maruyama steps on a uniform grid of [0, 1].
        record_every: keep the state every this many steps (t = 0 and t = 1 are always kept
            when it divides ``num_steps``).
        generator: for reproducible noise.
    Returns:
        ``(times [K], paths [K, B, ...])`` with ``times[0] = 0`` and ``paths[0] = x0``.
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    record_every = check_positive_int(record_every, "record_every")
    if not isinstance(x0, torch.Tensor) or x0.dim() < 2:
        raise ValueError("x0 must be a tensor of shape [B, ...]")
    ts = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)
    x = x0.clone()
    times, paths = [0.0], [x.cpu().clone()]
    for i in range(num_steps):
        dt = float(ts[i + 1] - ts[i])
        g = float(sde.diffusion_coeff(float(ts[i])))
        x = x + g * math.sqrt(dt) * randn(x.shape, generator, x.device, x.dtype)
        if (i + 1) % record_every == 0:
            times.append(float(ts[i + 1]))
            paths.append(x.cpu().clone())
    return torch.tensor(times), torch.stack(paths)


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


def layer_shapes(model: torch.nn.Module, *inputs) -> list[tuple[str, str, tuple, int]]:
    """Run ``model(*inputs)`` once and report every direct sub-module, in the order it ran.

    Returns rows ``(name, module type, output shape, number of parameters)``. A sub-module that
    runs several times is reported each time; one that never runs is left out.
    """
    rows, handles = [], []
    for name, module in model.named_children():
        def hook(mod, args, out, name=name):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            rows.append((name, type(mod).__name__, shape, sum(p.numel() for p in mod.parameters())))
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return rows


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


def format_table(rows, headers) -> str:
    """Rows of values as a fixed-width text table with ``headers``; floats printed with 4 significant digits."""
    headers = [str(h) for h in headers]
    if any(len(r) != len(headers) for r in rows):
        raise ValueError(f"every row must have {len(headers)} entries (one per header)")

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in body])


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


def train_live(model, data, marginal_prob_std, *, steps: int, checkpoint_path, chunk_steps: int = 100,
               time_budget: float | None = None, resume: bool = False, plot: bool = True, **train_kwargs) -> list[float]:
    """Train with :func:`sgm_helpers.training.train` in chunks, redrawing a loss curve after each one.

    ``train`` writes a checkpoint at the end of every call and, given ``resume=True``, continues
    from it with the same batch order and noise; so training in chunks gives exactly the losses and
    weights of one uninterrupted run, with a chance to update the figure (and check the clock) in
    between.

    Args:
        model, data, marginal_prob_std: as for ``train``.
        steps: total optimizer steps (the most that will run).
        checkpoint_path: the checkpoint ``train`` writes and resumes from.
        chunk_steps: steps between two redraws.
        time_budget: seconds; if given, stop after the first chunk that ends past it.
        resume: continue a run saved at ``checkpoint_path`` (else an existing file is replaced).
        plot: draw the live loss curve (in a notebook: one figure updated in place).
        train_kwargs: passed on to ``train`` (``batch_size``, ``lr``, ``seed``, ``ema_model``, ...).
    Returns:
        the loss of every step, as ``train`` returns it.
    """
    from tqdm.auto import tqdm

    from .training import train

    steps = check_positive_int(steps, "steps")
    chunk_steps = check_positive_int(chunk_steps, "chunk_steps")
    if time_budget is not None:
        time_budget = check_positive(time_budget, "time_budget") if time_budget != 0 else 0.0
    for key in ("steps", "epochs", "resume", "checkpoint_path", "progress"):
        if key in train_kwargs:
            raise ValueError(f"train_live sets {key}= itself; do not pass it")
    checkpoint_path = Path(checkpoint_path)
    if not resume and checkpoint_path.exists():
        checkpoint_path.unlink()

    handle = fig = ax = None
    if plot:
        import matplotlib.pyplot as plt
        from IPython.display import display

        fig, ax = plt.subplots(figsize=(6, 3.5))
        handle = display(fig, display_id=True)
    start = time.perf_counter()
    losses: list[float] = []
    bar = tqdm(total=steps, desc="train", unit="step")
    try:
        done = 0
        while done < steps:
            target = min(done + chunk_steps, steps)
            losses = train(model, data, marginal_prob_std, steps=target, checkpoint_path=checkpoint_path,
                           resume=True, progress=False, **train_kwargs)
            bar.update(len(losses) - bar.n)
            done = len(losses)
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.2f}")
            if ax is not None:
                ax.clear()
                plot_losses(losses, ax, title=f"Training loss (step {done} of {steps})")
                if handle is not None:
                    handle.update(fig)
            if time_budget is not None and time.perf_counter() - start >= time_budget and done < steps:
                bar.set_postfix_str(f"time budget of {time_budget:.0f} s reached after {done} steps")
                break
    finally:
        bar.close()
        if fig is not None:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return losses


class RunPanel:
    """Controls plus a Run button: ``fn(**values)`` runs only when the button is pressed.

    Moving a slider never starts a computation, so a slow sampler can sit behind cheap controls.
    The function's prints and figures go to the panel's output area, which is cleared before every
    run. Display the panel with ``display(panel)`` or as a cell's last expression.

    Args:
        fn: called as ``fn(**{name: control.value})``.
        controls: ``{name: widget}``, any ipywidgets with a ``.value``.
        description: the button's label.
    """

    def __init__(self, fn, controls: dict, *, description: str = "Run"):
        import ipywidgets as widgets

        if not callable(fn):
            raise ValueError("fn must be callable")
        if not controls or not all(hasattr(w, "value") for w in controls.values()):
            raise ValueError("controls must be a non-empty dict {name: widget with a .value}")
        self.fn = fn
        self.controls = dict(controls)
        self.button = widgets.Button(description=description, button_style="primary", icon="play")
        self.output = widgets.Output()
        self.button.on_click(lambda _: self.run(raise_errors=False))
        self.widget = widgets.VBox([widgets.HBox(list(self.controls.values())), self.button, self.output])
        self.runs = 0

    def values(self) -> dict:
        return {name: w.value for name, w in self.controls.items()}

    def run(self, raise_errors: bool = True):
        """Run ``fn`` with the controls' current values, as pressing the button does; returns its result.

        Called from code, an error is raised as usual (so a notebook run, and nbval, see it); from
        the button (``raise_errors=False``) its traceback is shown in the panel's output area.
        """
        label = self.button.description
        self.button.disabled, self.button.description = True, "running..."
        try:
            result = _run_in_output(self.output, self.fn, self.values(), raise_errors)
            self.runs += 1
            return result
        finally:
            self.button.disabled, self.button.description = False, label

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _run_in_output(output, fn, kwargs: dict, raise_errors: bool):
    """``fn(**kwargs)`` with its prints and figures sent to the ``Output`` widget ``output`` (cleared first).

    Inside IPython an ``Output`` widget swallows exceptions and shows their traceback; with
    ``raise_errors`` the exception is re-raised after the block instead.
    """
    from IPython.display import clear_output

    error = None
    with output:
        clear_output(wait=True)
        try:
            result = fn(**kwargs)
        except Exception as err:
            if not raise_errors:
                raise
            error = err
    if error is not None:
        raise error
    return result


def interactive_figure(fn, controls: dict):
    """Controls that redraw ``fn(**values)`` whenever one of them changes; returns the widget to display.

    Like ``ipywidgets.interactive_output`` (create the controls with ``continuous_update=False``
    so that a figure is redrawn when a slider is released, not on every pixel of a drag), with one
    difference: the first drawing, made here, raises its errors instead of hiding them in the
    output area, so a broken figure fails the notebook's run (and nbval).

    Args:
        fn: draws a figure (and calls ``plt.show()``) for ``fn(**{name: control.value})``.
        controls: ``{name: widget}``, any ipywidgets with a ``.value``.
    """
    import ipywidgets as widgets

    if not callable(fn):
        raise ValueError("fn must be callable")
    if not controls or not all(hasattr(w, "value") for w in controls.values()):
        raise ValueError("controls must be a non-empty dict {name: widget with a .value}")
    controls = dict(controls)
    output = widgets.Output()

    def values():
        return {name: w.value for name, w in controls.items()}

    def redraw(change):
        _run_in_output(output, fn, values(), raise_errors=False)

    for w in controls.values():
        w.observe(redraw, names="value")
    _run_in_output(output, fn, values(), raise_errors=True)
    return widgets.VBox([widgets.HBox(list(controls.values())), output])
