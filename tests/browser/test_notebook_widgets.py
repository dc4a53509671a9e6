"""The notebooks' widgets, used in JupyterLab in a headless Chromium as a learner uses them.

Each test opens one notebook, runs all its cells (quick mode), checks that no error output appeared,
then works a widget and checks what the widget's output area shows afterwards. Widgets are found by
their descriptions (the labels a learner reads), so the tests do not depend on cell positions.
Adding a notebook is one more function like these. Run with ``pytest -m browser``.
"""

import json
import re

import pytest
from lab_ui import figure_texts

pytestmark = pytest.mark.browser


def test_01_sigma_slider_redraws_the_noised_density(lab_page):
    notebook = lab_page.open("01_score_functions_and_langevin.ipynb")
    notebook.run_all()
    sigma = notebook.widget("sigma")
    figure, value = sigma.figure_src(), sigma.readout("sigma")

    sigma.nudge_slider("sigma", "ArrowRight")  # the keyboard on the slider's handle: one step up

    sigma.wait_for_new_figure(figure)
    assert sigma.readout("sigma") != value
    notebook.assert_no_errors()


def test_02_sigma_typed_into_the_slider_redraws_the_figure(lab_page):
    notebook = lab_page.open("02_ve_sde_and_loss.ipynb")
    notebook.run_all()
    sigma = notebook.widget("sigma")
    figure, value = sigma.figure_src(), float(sigma.readout("sigma"))
    new_value = 10.0 if value != 10.0 else 5.0

    sigma.type_into_slider("sigma", f"{new_value:g}")  # the slider's text box, as a learner types a value

    sigma.wait_for_new_figure(figure)
    assert float(sigma.readout("sigma")) == pytest.approx(new_value, rel=1e-3)
    notebook.assert_no_errors()


def test_04_sample_button_shows_the_chosen_samplers_grid(lab_page):
    notebook = lab_page.open("04_samplers.ipynb")
    notebook.run_all()
    panel = notebook.widget("sampler")
    figure = panel.figure_src()  # the panel opens with one run at the default settings
    current = panel.selected("sampler")
    choice = next(option for option in panel.options("sampler") if option != current)

    panel.choose("sampler", choice)
    panel.press("Sample")

    figure = panel.wait_for_new_figure(figure)
    captions = [text for text in figure_texts(figure) if text.startswith(f"{choice}:")]
    assert captions and re.search(r"\d+ score evaluations", captions[0]), figure_texts(figure)
    notebook.assert_no_errors()


def test_06_sde_dropdown_and_sigma_slider_redraw_the_figure(lab_page):
    notebook = lab_page.open("06_one_framework_ve_vp_subvp.ipynb")
    notebook.run_all()
    controls = notebook.widget("SDE")
    figure = controls.figure_src()
    if controls.selected("SDE") == "VE":  # start from another SDE, so that choosing VE changes the figure
        controls.choose("SDE", "VP")
        figure = controls.wait_for_new_figure(figure)

    controls.choose("SDE", "VE")

    figure = controls.wait_for_new_figure(figure)
    assert any(text.endswith(" of VE") for text in figure_texts(figure)), figure_texts(figure)

    controls.nudge_slider("sigma (VE)", "ArrowLeft")

    figure = controls.wait_for_new_figure(figure)
    sigma = float(controls.readout("sigma (VE)"))  # the legend names the SDE with the slider's new sigma
    shown = [float(v) for text in figure_texts(figure) for v in re.findall(r"VESDE\(sigma=([-+\d.e]+)\)", text)]
    assert any(v == pytest.approx(sigma, rel=1e-2) for v in shown), (sigma, shown)
    notebook.assert_no_errors()


def test_07_guidance_cfg_and_inpainting_panels_sample_what_they_are_asked(lab_page):
    notebook = lab_page.open("07_controllable_generation.ipynb")
    notebook.run_all()
    panel = notebook.widget("digit")
    figure = panel.figure_src()  # the panel opens with one run at the default settings

    panel.choose("digit", "7")
    panel.press("Sample")

    figure = panel.wait_for_new_figure(figure)
    assert any(re.match(r"digit 7, scale [\d.]+, \d+ steps: \d+% classified as 7", t) for t in figure_texts(figure)), \
        figure_texts(figure)

    compare = notebook.widget("label")           # classifier guidance and CFG side by side, one row each
    figure = compare.figure_src()
    compare.choose("label", "4")
    compare.press("Compare")

    figure = compare.wait_for_new_figure(figure)
    assert any(re.match(r"label 4, \d+ steps: classifier guidance \d+%, classifier-free \d+% classified as 4", t)
               for t in figure_texts(figure)), figure_texts(figure)

    inpainting = notebook.widget("hide")
    figure = inpainting.figure_src()
    inpainting.choose("hide", "left")
    inpainting.press("Inpaint")

    figure = inpainting.wait_for_new_figure(figure)
    assert any(t.startswith("test digit 0 (a 7)") for t in figure_texts(figure)), figure_texts(figure)
    notebook.assert_no_errors()


def _write_notebook(root, name: str, sources: list[str]) -> str:
    cells = [{"id": f"cell-{i}", "cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
              "source": source} for i, source in enumerate(sources)]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook = {"cells": cells, "metadata": {"kernelspec": kernelspec}, "nbformat": 4, "nbformat_minor": 5}
    (root / name).write_text(json.dumps(notebook))
    return name


def test_harness_reports_a_cell_that_raises(lab_page):
    name = _write_notebook(lab_page.lab.root, "harness_raises.ipynb",
                           ["print('first')", "raise ValueError('the harness must see this')", "print('never')"])
    notebook = lab_page.open(name)
    with pytest.raises(AssertionError, match="the harness must see this"):
        notebook.run_all()


def test_harness_sees_a_redraw_and_a_callback_that_raises(lab_page):
    name = _write_notebook(lab_page.lab.root, "harness_widget.ipynb", [
        "%matplotlib inline\n"
        "import ipywidgets as widgets\n"
        "import matplotlib.pyplot as plt\n"
        "from sgm_helpers.notebook import interactive_figure\n"
        "\n"
        "def draw(x):\n"
        "    if x > 1:\n"
        "        raise ValueError('the harness must see the callback fail')\n"
        "    plt.plot([0, 1], [0, x])\n"
        "    plt.title(f'x is {x}')\n"
        "    plt.show()\n"
        "\n"
        "interactive_figure(draw, {'x': widgets.FloatSlider(value=1, min=0, max=2, step=0.5, description='x',\n"
        "                                                   continuous_update=False)})"])
    notebook = lab_page.open(name)
    notebook.run_all()
    x = notebook.widget("x")
    figure = x.figure_src()
    assert "x is 1.0" in figure_texts(figure)

    x.nudge_slider("x", "ArrowLeft")
    figure = x.wait_for_new_figure(figure)
    assert "x is 0.5" in figure_texts(figure)

    x.type_into_slider("x", "2")
    with pytest.raises(AssertionError, match="the harness must see the callback fail"):
        x.wait_for_new_figure(figure)
