"""Tests of sgm_helpers.notebook and of the committed notebooks' form (stripped, Colab-ready, checked)."""

import importlib.util
import math
from pathlib import Path

import nbformat
import pytest
import torch

from sgm_helpers import VESDE, ScoreNet, euler_maruyama_sampler, ode_likelihood, pc_sampler, train
from sgm_helpers.notebook import (CountingModel, RunPanel, Stopwatch, TrajectoryRecorder, format_table,
                                  forward_sde_paths, layer_shapes, quick_mode, train_live)
from sgm_helpers.toy import three_modes

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
COLAB_INSTALL = '%pip install -q "git+https://github.com/sgm-notebooks/sgm-notebooks"'


def _strip_module():
    spec = importlib.util.spec_from_file_location("strip_notebook_outputs", ROOT / "scripts" / "strip_notebook_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- quick mode, timing, tables ---------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("YES", True), (" on ", True),
                                             ("0", False), ("", False), ("false", False), ("Off", False)])
def test_quick_mode_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("SGM_QUICK", value)
    assert quick_mode() is expected


def test_quick_mode_unset_is_off_and_garbage_is_an_error(monkeypatch):
    monkeypatch.delenv("SGM_QUICK", raising=False)
    assert quick_mode() is False
    monkeypatch.setenv("SGM_QUICK", "maybe")
    with pytest.raises(ValueError, match="SGM_QUICK"):
        quick_mode()


def test_stopwatch_measures_the_block_with_the_given_clock():
    ticks = iter([10.0, 12.5])
    with Stopwatch(clock=lambda: next(ticks)) as sw:
        assert math.isnan(sw.seconds)
    assert sw.seconds == 2.5


def test_format_table_aligns_columns_and_rounds_floats():
    text = format_table([("Euler-Maruyama", 500, 12.3456), ("ODE", 86, 3.0)], ["sampler", "NFE", "seconds"])
    lines = text.splitlines()
    assert lines[0].split() == ["sampler", "NFE", "seconds"]
    assert lines[2].split() == ["Euler-Maruyama", "500", "12.35"]
    assert lines[3].split() == ["ODE", "86", "3"]
    assert len({len(line) for line in lines}) == 1  # fixed width
    with pytest.raises(ValueError, match="entries"):
        format_table([(1, 2)], ["a"])


# --- counting evaluations and recording trajectories ------------------------------------------

def test_counting_model_counts_sampler_evaluations():
    sde = VESDE(25.0)
    model = CountingModel(three_modes().perturbed_score(sde))
    euler_maruyama_sampler(model, sde, (8, 2), num_steps=7, generator=torch.Generator().manual_seed(0),
                           progress=False)
    assert model.calls == 7
    model.reset()
    pc_sampler(model, sde, (8, 2), num_steps=5, generator=torch.Generator().manual_seed(0), progress=False)
    assert model.calls == 10  # one corrector and one predictor evaluation per step


def test_counting_model_sees_one_forward_pass_per_likelihood_evaluation():
    # ode_likelihood gets the drift and its Hutchinson divergence from one forward pass per solver evaluation.
    sde = VESDE(25.0)
    model = CountingModel(three_modes().perturbed_score(sde))
    x = three_modes().sample(4, torch.Generator().manual_seed(1))
    _, _, nfe = ode_likelihood(x, model, sde, rtol=1e-3, atol=1e-3, generator=torch.Generator().manual_seed(2))
    assert model.calls == nfe > 0


def test_counting_model_keeps_the_network_device_and_parameters():
    net = torch.nn.Linear(2, 2)
    wrapped = CountingModel(lambda x, t: net(x))
    assert list(wrapped.parameters()) == []
    wrapped = CountingModel(net)
    assert len(list(wrapped.parameters())) == 2
    with pytest.raises(ValueError, match="callable"):
        CountingModel(3)


def test_trajectory_recorder_keeps_every_kth_state_and_the_final_sample():
    sde = VESDE(25.0)
    rec = TrajectoryRecorder(every=5)
    out = euler_maruyama_sampler(three_modes().perturbed_score(sde), sde, (3, 2), num_steps=20,
                                 generator=torch.Generator().manual_seed(0), progress=False, callback=rec)
    states = rec.stack()
    assert states.shape == (4, 3, 2)
    assert torch.equal(states[-1], out)
    assert rec.times[-1] == pytest.approx(1e-3) and rec.times == sorted(rec.times, reverse=True)
    with pytest.raises(ValueError, match="every"):
        TrajectoryRecorder(every=0)
    with pytest.raises(ValueError, match="nothing recorded"):
        TrajectoryRecorder().stack()


# --- the forward SDE --------------------------------------------------------------------------

def test_forward_sde_paths_match_the_perturbation_kernel():
    # x(1) - x(0) ~ N(0, std(1)^2 I). Euler-Maruyama sums g(t_i)^2 dt, a left Riemann sum of
    # int_0^1 sigma^(2t) dt that is low by about ln(sigma) dt = 0.3 % with 1000 steps. The sample
    # variance of n = 2 * 4000 values has relative standard error sqrt(2 / n) = 1.6 %; allow 4 of them.
    sde = VESDE(25.0)
    x0 = three_modes().sample(4000, torch.Generator().manual_seed(0))
    times, paths = forward_sde_paths(sde, x0, 1000, record_every=250, generator=torch.Generator().manual_seed(1))
    assert times.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert paths.shape == (5, 4000, 2) and torch.equal(paths[0], x0)
    for k in (2, 4):
        var = (paths[k] - x0).double().pow(2).mean()
        expected = float(sde.marginal_prob_std(times[k].item())) ** 2
        assert abs(float(var) / expected - 1) < 4 * math.sqrt(2 / 8000) + 0.003
    with pytest.raises(ValueError, match="num_steps"):
        forward_sde_paths(sde, x0, 0)


# --- layer shapes -----------------------------------------------------------------------------

def test_layer_shapes_walks_the_scorenet_in_call_order():
    torch.manual_seed(0)
    model = ScoreNet(VESDE(25.0).marginal_prob_std)
    rows = layer_shapes(model, torch.zeros(2, 1, 28, 28), torch.full((2,), 0.5))
    shapes = {name: shape for name, _, shape, _ in rows}
    names = [name for name, *_ in rows]
    assert names[0] == "embed" and names[-1] == "tconv1"
    assert names.index("conv4") < names.index("tconv4")
    assert shapes["embed"] == (2, 256)
    assert shapes["conv1"] == (2, 32, 26, 26)
    assert shapes["conv2"] == (2, 64, 12, 12)
    assert shapes["conv3"] == (2, 128, 5, 5)
    assert shapes["conv4"] == (2, 256, 2, 2)
    assert shapes["tconv3"] == (2, 64, 12, 12)
    assert shapes["tconv1"] == (2, 1, 28, 28)
    assert shapes["dense1"] == (2, 32, 1, 1)
    assert sum(n for *_, n in rows) == sum(p.numel() for p in model.parameters())


# --- the run panel ----------------------------------------------------------------------------

def test_run_panel_runs_only_on_click_with_the_current_values():
    widgets = pytest.importorskip("ipywidgets")
    calls = []
    steps = widgets.IntSlider(value=10, min=1, max=100, continuous_update=False)
    snr = widgets.FloatSlider(value=0.16, min=0.01, max=1.0, continuous_update=False)
    panel = RunPanel(lambda num_steps, snr: calls.append((num_steps, snr)) or "done",
                     {"num_steps": steps, "snr": snr}, description="Sample")
    steps.value = 42
    assert calls == []  # moving a control runs nothing
    panel.button.click()
    assert calls == [(42, pytest.approx(0.16))] and panel.runs == 1
    assert panel.run() == "done" and panel.runs == 2
    assert not panel.button.disabled and panel.button.description == "Sample"
    with pytest.raises(ValueError, match="controls"):
        RunPanel(print, {})


# --- training in chunks -----------------------------------------------------------------------

class _TinyScore(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], 1))


def test_train_live_in_chunks_equals_one_uninterrupted_run(tmp_path):
    sde = VESDE(25.0)
    data = three_modes().sample(64, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    a = _TinyScore()
    b = _TinyScore()
    b.load_state_dict(a.state_dict())
    ref = train(a, data, sde.marginal_prob_std, steps=11, batch_size=16, seed=3, progress=False)
    got = train_live(b, data, sde.marginal_prob_std, steps=11, chunk_steps=4, batch_size=16, seed=3,
                     checkpoint_path=tmp_path / "ckpt.pt", plot=False)
    assert got == pytest.approx(ref, rel=1e-6)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)
    assert (tmp_path / "ckpt.pt").is_file()


def test_train_live_stops_at_the_time_budget_and_starts_fresh_unless_resuming(tmp_path):
    sde = VESDE(25.0)
    data = three_modes().sample(32, torch.Generator().manual_seed(0))
    ckpt = tmp_path / "ckpt.pt"
    losses = train_live(_TinyScore(), data, sde.marginal_prob_std, steps=20, chunk_steps=3, time_budget=0,
                        batch_size=8, checkpoint_path=ckpt, plot=False)
    assert len(losses) == 3  # the budget is checked after each chunk
    again = train_live(_TinyScore(), data, sde.marginal_prob_std, steps=5, chunk_steps=5, batch_size=8,
                       checkpoint_path=ckpt, plot=False)
    assert len(again) == 5  # an old checkpoint is replaced, not continued
    more = train_live(_TinyScore(), data, sde.marginal_prob_std, steps=7, chunk_steps=5, batch_size=8,
                      checkpoint_path=ckpt, resume=True, plot=True)
    assert len(more) == 7 and more[:5] == pytest.approx(again)
    with pytest.raises(ValueError, match="epochs"):
        train_live(_TinyScore(), data, sde.marginal_prob_std, steps=5, epochs=1, checkpoint_path=ckpt)


# --- the strip script and the committed notebooks ---------------------------------------------

def _executed_notebook():
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.metadata["language_info"] = {"name": "python", "version": "3.12.1"}
    checked = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(1)\n2", execution_count=3)
    checked.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n"),
                       nbformat.v4.new_output("stream", name="stderr", text="a warning\n"),
                       nbformat.v4.new_output("execute_result", data={"text/plain": "2", "text/html": "<b>2</b>"},
                                              execution_count=3)]
    plain = nbformat.v4.new_code_cell("plot()", execution_count=4)
    plain.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"})]
    plain.metadata["execution"] = {"iopub.status.busy": "2024-01-01T00:00:00"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), checked, plain]
    return nb


def test_strip_keeps_only_the_checked_text_outputs():
    strip = _strip_module()
    nb = strip.strip_notebook(_executed_notebook())
    assert "widgets" not in nb.metadata and nb.metadata["language_info"] == {"name": "python"}
    checked, plain = nb.cells[1], nb.cells[2]
    assert checked.execution_count == 3
    assert [o.get("text") for o in checked.outputs] == ["1\n", None]
    assert checked.outputs[1]["data"] == {"text/plain": "2"}
    assert plain.outputs == [] and plain.execution_count is None and "execution" not in plain.metadata


def test_strip_is_idempotent(tmp_path):
    strip = _strip_module()
    path = tmp_path / "nb.ipynb"
    nbformat.write(_executed_notebook(), path)
    assert strip.strip_file(path) is True
    assert strip.strip_file(path) is False
    assert strip.main(["--check", str(path)]) == 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_is_stripped(path):
    assert _strip_module().strip_file(path, check=True) is False, \
        f"{path.name} holds outputs or widget state: run python scripts/strip_notebook_outputs.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_is_colab_ready_and_content_checked(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = code[0].source
    assert COLAB_INSTALL in first and "seed_everything" in first and "get_device()" in first
    assert "quick_mode()" in first
    checked = [c for c in code if "# NBVAL_CHECK_OUTPUT" in c.source]
    assert checked, "every notebook checks some of its outputs"
    for cell in checked:
        assert cell.execution_count is not None and cell.outputs, \
            "a checked cell needs its reference output (nbval skips unrun cells)"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def test_notebooks_are_numbered_without_gaps_and_listed_in_the_readme():
    assert [p.name[:3] for p in NOTEBOOKS] == [f"{i:02d}_" for i in range(1, len(NOTEBOOKS) + 1)]
    assert len(NOTEBOOKS) >= 6  # 1-5 on the VE SDE, 6 on the SDE family
    readme = (NOTEBOOKS[0].parent.parent / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert f"(notebooks/{path.name})" in readme, f"README's table does not link {path.name}"


def test_label_grid_puts_one_tick_at_the_centre_of_every_tile():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sgm_helpers import show_images
    from sgm_helpers.notebook import label_grid

    ax = show_images(torch.zeros(6, 1, 28, 28), nrow=3)
    label_grid(ax, columns=["a", "b", "c"], rows=[0, 1], xlabel="t", ylabel="digit")
    assert list(ax.get_xticks()) == [15.5, 45.5, 75.5]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert list(ax.get_yticks()) == [15.5, 45.5] and ax.get_xlabel() == "t" and ax.get_ylabel() == "digit"
    image = ax.get_images()[0].get_array()
    assert image.shape == (2 + 2 * 30, 2 + 3 * 30)  # the grid the ticks refer to
    plt.close(ax.figure)


def test_interactive_figure_draws_once_then_on_every_change_and_raises_a_broken_first_drawing():
    widgets = pytest.importorskip("ipywidgets")
    from sgm_helpers.notebook import interactive_figure

    calls = []
    sigma = widgets.FloatSlider(value=25.0, min=2.0, max=100.0, continuous_update=False)
    box = interactive_figure(lambda sigma: calls.append(sigma), {"sigma": sigma})
    assert calls == [25.0] and isinstance(box, widgets.VBox)
    sigma.value = 50.0
    assert calls == [25.0, 50.0]

    def broken(sigma):
        raise RuntimeError("bad figure")

    with pytest.raises(RuntimeError, match="bad figure"):
        interactive_figure(broken, {"sigma": widgets.FloatSlider(value=1.0)})
    with pytest.raises(ValueError, match="controls"):
        interactive_figure(print, {"sigma": 3})


def test_run_panel_raises_errors_when_run_from_code():
    widgets = pytest.importorskip("ipywidgets")

    def broken(n):
        raise RuntimeError("sampler failed")

    panel = RunPanel(broken, {"n": widgets.IntSlider(value=3)})
    with pytest.raises(RuntimeError, match="sampler failed"):
        panel.run()
    assert not panel.button.disabled and panel.runs == 0


def test_toy_score_mlp_divides_by_std_and_learns_a_gaussian_score():
    from sgm_helpers.notebook import ToyScoreMLP
    from sgm_helpers.toy import single_gaussian

    torch.manual_seed(0)
    model = ToyScoreMLP(lambda t: torch.full_like(t, 0.5), dim=2, hidden=32, layers=2)
    x = torch.randn(5, 2)
    twice = ToyScoreMLP(lambda t: torch.full_like(t, 1.0), dim=2, hidden=32, layers=2)
    twice.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x, 0.3), 2 * twice(x, torch.full((5,), 0.3)))
    assert model(x, 0.3).shape == (5, 2)
    # Denoising score matching at one noise level sigma = 0.5 on a Gaussian N(mu, diag(1.5^2, 0.5^2)): the
    # minimizer is the score of the noised Gaussian, -(x - mu) / (s^2 + sigma^2). After training, the
    # learned score's error at the data must be well below the error of predicting zero.
    toy = single_gaussian()
    data = toy.sample(2048, torch.Generator().manual_seed(1))
    train(model, data, lambda t: torch.full_like(t, 0.5), steps=400, batch_size=256, lr=3e-3, progress=False)
    with torch.no_grad():
        target = toy.score(data[:512], sigma=0.5)
        err = (model(data[:512], 0.5) - target).pow(2).sum(1).mean()
    assert float(err) < 0.1 * float(target.pow(2).sum(1).mean())


def test_show_images_saturates_out_of_range_values_without_changing_the_tensor(caplog):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sgm_helpers import show_images

    for channels in (1, 3):
        images = torch.linspace(-0.5, 1.5, 4 * channels * 4 * 4).reshape(4, channels, 4, 4)
        before = images.clone()
        caplog.clear()
        ax = show_images(images, nrow=2)
        shown = ax.get_images()[0]
        assert shown.get_array().min() >= 0.0 or shown.get_clim() == (0.0, 1.0)
        # matplotlib logs "Clipping input data..." when it has to saturate RGB data itself
        assert not [r for r in caplog.records if "Clipping" in r.getMessage()]
        assert torch.equal(images, before)
        plt.close(ax.figure)
