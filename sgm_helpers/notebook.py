"""Small helpers the notebooks share, so that their cells stay short.

- running: ``quick_mode`` (``SGM_QUICK``), ``Stopwatch``, ``TrajectoryRecorder`` (a sampler callback),
  ``train_live`` (training with a live loss curve);
- teaching: ``layer_shapes`` (what flows through a network);
- showing: ``format_table``, ``interactive_figure`` (sliders that redraw a figure), ``RunPanel``
  (controls and a Run button).

Nothing here is part of the method itself; that lives in the other modules. For the notebooks'
convenience this module also re-exports a few helpers that live with their concept:
``CountingModel`` (samplers), ``forward_sde_paths`` (sde), ``ToyScoreMLP`` (models), ``label_grid``
and ``plot_losses`` (plotting).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from .models import ToyScoreMLP
from .plotting import label_grid, plot_losses
from .samplers import CountingModel
from .sde import forward_sde_paths
from .utils import check_positive, check_positive_int

__all__ = ["quick_mode", "Stopwatch", "CountingModel", "TrajectoryRecorder", "forward_sde_paths", "ToyScoreMLP",
           "layer_shapes", "label_grid", "format_table", "plot_losses", "train_live", "RunPanel",
           "interactive_figure"]

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


def train_live(model, data, sde, *, steps: int, checkpoint_path, chunk_steps: int = 100,
               time_budget: float | None = None, resume: bool = False, plot: bool = True, **train_kwargs) -> list[float]:
    """Train with :func:`sgm_helpers.training.train` in chunks, redrawing a loss curve after each one.

    ``train`` writes a checkpoint at the end of every call and, given ``resume=True``, continues
    from it with the same batch order and noise; so training in chunks gives exactly the losses and
    weights of one uninterrupted run, with a chance to update the figure (and check the clock) in
    between.

    Args:
        model, data, sde: as for ``train``.
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
            losses = train(model, data, sde, steps=target, checkpoint_path=checkpoint_path,
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
