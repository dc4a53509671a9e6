"""The exercises: every checker against the package's own function and wrong ones, the generator of the exercise
notebooks, and that the committed exercise notebooks are up to date with the teaching notebooks."""

import importlib.util
import inspect
import math
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

import sgm_helpers.exercises as ex
from sgm_helpers import GaussianFourierProjection, VESDE, bits_per_dim, dsm_loss, hutchinson_divergence, make_ema
from sgm_helpers import samplers
from sgm_helpers.langevin import langevin_dynamics
from sgm_helpers.toy import GaussianMixture

ROOT = Path(__file__).resolve().parent.parent


def _ema_update(ema_param, param, decay):
    model = torch.nn.Module()
    model.weight = torch.nn.Parameter(ema_param.clone())
    ema = make_ema(model, decay)
    ema.update_parameters(model)
    model.weight.data.copy_(param)
    ema.update_parameters(model)
    return ema.module.weight.detach()


def _fourier_features(t, W):
    with torch.random.fork_rng(devices=[]):
        projection = GaussianFourierProjection(2 * W.numel()).to(W.dtype)
    projection.W.copy_(W)
    return projection(t)


# The package's own implementation of every exercise, called with the exercise's arguments.
PACKAGE = {
    "check_gaussian_score": lambda x, mean, std: GaussianMixture(mean[None], std).score(x),
    "check_langevin_step": lambda score_fn, x, step, generator: langevin_dynamics(score_fn, x, step, 1,
                                                                                  generator=generator),
    "check_noised_gaussian_score": lambda x, mean, std, sigma: GaussianMixture(mean[None], std).score(x, sigma),
    "check_ve_std": lambda t, sigma: VESDE(sigma).marginal_prob_std(t),
    "check_ve_diffusion_coeff": lambda t, sigma: VESDE(sigma).diffusion_coeff(t),
    "check_dsm_loss": dsm_loss,
    "check_fourier_features": _fourier_features,
    "check_ema_update": _ema_update,
    "check_euler_maruyama_step": samplers.euler_maruyama_step,
    "check_langevin_corrector_step": samplers.langevin_corrector_step,
    "check_probability_flow_drift": lambda sde, x, t, score: sde.reverse_drift(x, t, score, probability_flow=True),
    "check_tweedie_denoise": lambda sde, x, t, score: sde.tweedie_denoise(x, t, score),
    "check_hutchinson_divergence": hutchinson_divergence,
    "check_bits_per_dim": bits_per_dim,
    "check_prior_logp": lambda z, sde: sde.prior_logp(z),
}
CHECKERS = sorted(name for name in ex.__all__ if name.startswith("check_"))


def _map_outputs(fn, op):
    def wrong(*args):
        out = fn(*args)
        return tuple(op(o) for o in out) if isinstance(out, tuple) else op(out)
    return wrong


def test_every_checker_has_a_package_function_here():
    assert set(CHECKERS) == set(PACKAGE)
    assert {name for name, _ in inspect.getmembers(ex, inspect.isfunction) if name.startswith("check_")} == set(CHECKERS)


@pytest.mark.parametrize("name", CHECKERS)
def test_checker_accepts_the_package_function(name, capsys):
    getattr(ex, name)(PACKAGE[name])
    out = capsys.readouterr().out
    assert out.startswith("Well done") and out.count("\n") == 1


@pytest.mark.parametrize("name", CHECKERS)
def test_checker_rejects_a_wrong_sign(name):
    with pytest.raises(ex.ExerciseError, match="wrong sign") as info:
        getattr(ex, name)(_map_outputs(PACKAGE[name], lambda v: -v))
    assert str(info.value).count(". ") == 0  # one sentence


@pytest.mark.parametrize("name", CHECKERS)
def test_checker_rejects_a_wrong_factor_and_names_it(name):
    with pytest.raises(ex.ExerciseError, match="constant factor: it is 3 times the right answer"):
        getattr(ex, name)(_map_outputs(PACKAGE[name], lambda v: 3 * v))


def test_checker_diagnoses_a_common_mistake_of_its_exercise():
    with pytest.raises(ex.ExerciseError, match=r"leaves out the \+ 8"):
        ex.check_bits_per_dim(lambda logp, x: -logp / (x[0].numel() * math.log(2)))
    with pytest.raises(ex.ExerciseError, match="variance std\\*\\*2"):
        ex.check_gaussian_score(lambda x, mean, std: -(x - mean) / std)
    with pytest.raises(ex.ExerciseError, match="half the score term"):
        ex.check_probability_flow_drift(lambda sde, x, t, score: sde.reverse_drift(x, t, score))

    def langevin_step(score_fn, x, step_size, generator):
        z = torch.randn(x.shape, generator=generator)
        return x + step_size * score_fn(x) + math.sqrt(step_size) * z

    with pytest.raises(ex.ExerciseError, match=r"sqrt\(2 \* step_size\)"):
        ex.check_langevin_step(langevin_step)


def test_checker_explains_bad_results_in_one_sentence():
    def stub(t, sigma):
        raise NotImplementedError("Exercise: write your solution here")

    cases = {
        "is not written yet": stub,
        "returned None": lambda t, sigma: None,
        "returned a float, not a torch tensor": lambda t, sigma: 1.0,
        r"shape \(1,\)": lambda t, sigma: torch.ones(1),
        "NaN or inf": lambda t, sigma: VESDE(sigma).marginal_prob_std(t) / 0.0,
        "raised ZeroDivisionError": lambda t, sigma: 1 / 0,
        r"is off by a constant factor: it is 1.414 times the right answer for every input \(the variance divides by 2":
            lambda t, sigma: VESDE(sigma).marginal_prob_std(t) * math.sqrt(2),
        "right answer plus 0.5 for every input": lambda t, sigma: VESDE(sigma).marginal_prob_std(t) + 0.5,
        r"is right for a 0-dim t and sigma = 2 but not for t of shape \(7,\)":
            lambda t, sigma: VESDE(sigma).marginal_prob_std(t) if t.dim() == 0 else t,
    }
    for pattern, wrong in cases.items():
        with pytest.raises(ex.ExerciseError, match=pattern) as info:
            ex.check_ve_std(wrong)
        assert "\n" not in str(info.value)


def test_checker_names_a_missing_output_and_a_badly_called_model():
    with pytest.raises(ex.ExerciseError, match=r"should return 2 tensors, \(x, x_mean\), but returned a single tensor"):
        ex.check_euler_maruyama_step(lambda *args: samplers.euler_maruyama_step(*args)[0])

    def loss_fn(model, x, marginal_prob_std, eps, generator):  # the tutorial's image-only broadcasting
        t = torch.rand(x.shape[0], generator=generator) * (1.0 - eps) + eps
        z = torch.randn(x.shape, generator=generator)
        std = marginal_prob_std(t)[:, None, None, None]
        return (model(x + std * z, t) * std + z).pow(2).sum(dim=(1, 2, 3)).mean()

    with pytest.raises(ex.ExerciseError, match=r"called the model with x of shape \(64, 1, 64, 2\)"):
        ex.check_dsm_loss(loss_fn)
    with pytest.raises(ValueError, match="your function itself"):
        ex.check_ve_std(VESDE(25.0).marginal_prob_std(0.5))


@pytest.mark.parametrize("name", CHECKERS)
def test_checker_leaves_the_global_random_state_alone(name):
    """A check cell does not change the random numbers of the notebook's later cells."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    getattr(ex, name)(PACKAGE[name])
    assert torch.equal(torch.get_rng_state(), before)


# --- the generator ---------------------------------------------------------------------------------


def _make_exercises():
    spec = importlib.util.spec_from_file_location("make_exercises", ROOT / "scripts" / "make_exercises.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _teaching_notebook():
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell(
        "import math\n\n"
        "def langevin_step(score_fn, x, step_size, generator):\n"
        "    z = torch.randn(x.shape, generator=generator)\n"
        "    # BEGIN SOLUTION\n"
        "    # HINT: a step along the score plus noise of variance 2 * step_size\n"
        "    drift = step_size * score_fn(x)\n"
        "    return x + drift + math.sqrt(2 * step_size) * z\n"
        "    # END SOLUTION\n\n"
        "# BEGIN SOLUTION\n"
        "answer = 42\n"
        "# END SOLUTION\n"
        "print('done')", execution_count=3)
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="done\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# 9. A title"), code,
                nbformat.v4.new_code_cell("check_langevin_step(langevin_step)")]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    return nb


def test_generator_replaces_solutions_keeps_hints_and_indentation():
    make = _make_exercises()
    out = make.make_exercise_notebook(_teaching_notebook())
    assert [c["id"] for c in out.cells] == ["cell-0", make.NOTE_ID, "cell-1", "cell-2"]
    source = out.cells[2].source
    assert source == (
        "import math\n\n"
        "def langevin_step(score_fn, x, step_size, generator):\n"
        "    z = torch.randn(x.shape, generator=generator)\n"
        "    # HINT: a step along the score plus noise of variance 2 * step_size\n"
        f"    {make.RAISE}\n\n"
        f"{make.RAISE}\n"
        "print('done')")
    assert "SOLUTION" not in nbformat.writes(out)
    assert out.cells[2].outputs == [] and out.cells[2].execution_count is None
    assert out.cells[3].source == "check_langevin_step(langevin_step)"
    compile(source, "exercise", "exec")  # still valid Python


def test_generator_is_deterministic_and_skips_notebooks_without_exercises(tmp_path):
    make = _make_exercises()
    nbformat.write(_teaching_notebook(), tmp_path / "09_toy.ipynb")
    plain = nbformat.v4.new_notebook()
    plain.cells = [nbformat.v4.new_markdown_cell("# 10. No exercises")]
    nbformat.write(plain, tmp_path / "10_plain.ipynb")
    first, second = make.build(tmp_path), make.build(tmp_path)
    assert first == second and list(first) == ["09_toy.ipynb"]


@pytest.mark.parametrize("source, message", [
    ("# BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n# END SOLUTION", "without a"),
    ("# BEGIN SOLUTION\n    # BEGIN SOLUTION\n# END SOLUTION", "inside another"),
])
def test_generator_refuses_unbalanced_markers(source, message):
    with pytest.raises(ValueError, match=message):
        _make_exercises().exercise_source(source)


def test_generator_refuses_markers_in_markdown():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# BEGIN SOLUTION\ntext\n# END SOLUTION")]
    with pytest.raises(ValueError, match="code cells only"):
        _make_exercises().make_exercise_notebook(nb)


def test_check_mode_fails_on_stale_missing_or_orphaned_exercises(tmp_path):
    make = _make_exercises()
    nbformat.write(_teaching_notebook(), tmp_path / "09_toy.ipynb")
    args = ["--source", str(tmp_path)]
    assert make.main(args + ["--check"]) == 1  # missing
    assert make.main(args) == 0
    assert make.main(args + ["--check"]) == 0
    (tmp_path / "exercises" / "09_toy.ipynb").write_text("{}", encoding="utf-8")
    assert make.main(args + ["--check"]) == 1  # edited by hand
    make.main(args)
    (tmp_path / "exercises" / "08_gone.ipynb").write_text("{}", encoding="utf-8")
    assert make.main(args + ["--check"]) == 1  # no teaching notebook any more
    make.main(args)
    assert sorted(p.name for p in (tmp_path / "exercises").iterdir()) == ["09_toy.ipynb"]


# --- the committed notebooks -------------------------------------------------------------------------


def test_committed_exercise_notebooks_are_up_to_date(tmp_path):
    """CI's regenerate-and-compare: the exercise notebooks are what the generator makes of the teaching ones."""
    make = _make_exercises()
    assert make.main(["--out", str(tmp_path)]) == 0
    generated = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.ipynb")}
    committed_dir = ROOT / "notebooks" / "exercises"
    committed = {p.name: p.read_text(encoding="utf-8") for p in committed_dir.glob("*.ipynb")}
    assert sorted(committed) == sorted(generated), "run python scripts/make_exercises.py"
    for name, text in generated.items():
        assert committed[name] == text, f"notebooks/exercises/{name} is out of date: run python scripts/make_exercises.py"


def _checks_called(nb) -> list[str]:
    return [name for cell in nb.cells if cell.cell_type == "code"
            for name in re.findall(r"\b(check_\w+)\(", cell.source)]


def test_teaching_notebooks_call_only_existing_checkers_after_their_solutions():
    make = _make_exercises()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        pending = 0  # solution cells not yet followed by a check
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            pending += make.exercise_source(cell.source)[1]
            for name in re.findall(r"\b(check_\w+)\(", cell.source):
                assert name in CHECKERS, f"{path.name} calls {name}, which sgm_helpers.exercises does not define"
                pending = 0
        assert pending == 0, f"{path.name}: an exercise's solution has no check cell after it"


def test_nbval_does_not_collect_the_exercise_notebooks(tmp_path):
    """The repository's conftest.py keeps pytest (and so nbval) out of notebooks/exercises/."""
    (tmp_path / "conftest.py").write_text((ROOT / "conftest.py").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    for path in (tmp_path / "notebooks" / "01_taught.ipynb", tmp_path / "notebooks" / "exercises" / "01_taught.ipynb"):
        path.parent.mkdir(parents=True, exist_ok=True)
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("raise NotImplementedError")]
        nbformat.write(nb, path)

    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "--nbval-lax", "-p", "no:cacheprovider",
                           "notebooks"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "notebooks/01_taught.ipynb" in proc.stdout, proc.stdout + proc.stderr  # nbval collects notebooks here
    assert "exercises" not in proc.stdout
