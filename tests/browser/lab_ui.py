"""Drive JupyterLab in a browser as a learner would: open a notebook, run it, use its widgets.

``Notebook`` is one open notebook tab; ``WidgetArea`` is the output area of the cell that shows a
given control, found by the control's description (the label a learner reads), never by cell
position. Figures are read from the ``<img>`` that JupyterLab renders for a figure inside the
widgets' ``Output`` area; the kernel draws them as SVG with text kept as text (see conftest.py), so
a figure's titles and legends can be read back with ``figure_texts``.

Every wait has a timeout (seconds, generous: the machines are slow), and nothing here measures time.
"""

from __future__ import annotations

import html
import json
import re
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily: without Playwright the suite is skipped, not broken
    from playwright.sync_api import Locator, Page

ms = 1000

# A Python error as JupyterLab shows it: the traceback of an exception, or a SyntaxError's short form.
ERROR_TEXT = re.compile(r"Traceback \(most recent call last\)|^\s*\w*(Error|Exception)\b", re.M)

_STATE_JS = r"""
() => {
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
  const stderr = [...document.querySelectorAll(
      '.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')];
  // the status bar's "Python 3 (ipykernel) | Idle": says Idle only once the kernel is connected and idle
  const status = [...document.querySelectorAll('.jp-StatusBar-TextItem')].map(e => e.textContent)
      .find(t => / \| \w+$/.test(t));
  return {
    prompts: cells.map(c => (c.querySelector('.jp-InputPrompt') || {}).textContent || ''),
    stderr: stderr.map(e => e.innerText),
    kernel: status ? status.split('|').pop().trim().toLowerCase() : null,
  };
}
"""


def error_texts(stderr_texts) -> list[str]:
    """The stderr outputs that are Python errors (warnings and progress messages are not)."""
    return [t for t in stderr_texts if ERROR_TEXT.search(t)]


def _assert_no_errors(stderr_texts, where: str):
    errors = error_texts(stderr_texts)
    assert not errors, f"{where} shows an error:\n" + "\n---\n".join(errors)


def _shown(text: str) -> str:
    """Text as a reader sees it: no-break spaces (ipywidgets and matplotlib write some) and runs of spaces as one."""
    return " ".join(text.replace("\xa0", " ").split())


def figure_texts(src: str) -> list[str]:
    """The text elements of an SVG figure shown as ``<img src="data:image/svg+xml,...">``.

    Spaces are normalized (matplotlib writes some as no-break spaces), so a title reads as it was set.
    """
    prefix = "data:image/svg+xml,"
    if not src.startswith(prefix):
        raise ValueError(f"not an SVG figure (the kernel should draw SVG here): {src[:60]!r}")
    svg = urllib.parse.unquote(src[len(prefix):])
    texts = []
    for match in re.finditer(r"<text\b[^>]*>(.*?)</text>", svg, flags=re.S):
        text = html.unescape(re.sub(r"<[^>]+>", "", match.group(1)))
        texts.append(_shown(text))
    return texts


class Notebook:
    """One notebook opened in JupyterLab from the server's root directory."""

    def __init__(self, page: Page, base_url: str, root: Path, name: str, timeout: float):
        self.page, self.name, self.timeout = page, name, timeout
        cells = json.loads((root / name).read_text())["cells"]
        self.cells, self.code_cells = len(cells), sum(c["cell_type"] == "code" for c in cells)
        # JupyterLab never executes an empty code cell, so its prompt stays "[ ]:"
        self.runnable = [bool("".join(c["source"]).strip()) for c in cells if c["cell_type"] == "code"]
        # ?reset: a fresh workspace, so that the page shows this notebook alone (no tabs of earlier tests)
        page.goto(f"{base_url}lab/tree/{urllib.parse.quote(name)}?reset")

    def state(self) -> dict:
        return self.page.evaluate(_STATE_JS)

    def wait_until_ready(self):
        """The kernel is idle and every cell of the file is in the page, fully rendered.

        With JupyterLab's windowed rendering (any notebook windowingMode but "none") cells out of view
        are left out of the page, or kept as placeholders, or not painted; a test would miss their outputs.
        """
        self.page.wait_for_function(f"({_STATE_JS})().kernel === 'idle'", polling=500, timeout=self.timeout * ms)
        counts = """() => [document.querySelectorAll('.jp-Notebook .jp-Cell').length,
                           document.querySelectorAll('.jp-Notebook .jp-CodeCell').length,
                           document.querySelectorAll('.jp-Notebook .jp-content-visibility-mode').length]"""
        try:
            self.page.wait_for_function(f"() => ({counts})().join() === '{self.cells},{self.code_cells},0'",
                                        polling=500, timeout=60 * ms)
        except Exception:
            cells, code, windowed = self.page.evaluate(counts)
            raise AssertionError(
                f"{self.name}: the page shows {cells} cells ({code} code cells, content-visibility mode: "
                f"{bool(windowed)}), the file has {self.cells} ({self.code_cells}): JupyterLab's windowed "
                "rendering hides cells (the notebook setting windowingMode should be 'none')") from None

    def run_all(self):
        """Run > Run All Cells, then wait until the run is over: every cell has run, or one failed."""
        self.wait_until_ready()
        self.page.get_by_role("menuitem", name="Run", exact=True).click()
        self.page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        deadline, start_deadline = time.monotonic() + self.timeout, time.monotonic() + 60
        while True:
            state = self.state()
            prompts = [p.strip() for p in state["prompts"]]
            queued = any(p == "[*]:" for p in prompts)
            numbered = [bool(re.fullmatch(r"\[\d+\]:", p)) for p in prompts]
            started = any(numbered) or queued
            if started and not queued and state["kernel"] == "idle":
                break
            if not started and time.monotonic() > start_deadline:
                raise AssertionError(f"{self.name}: Run All Cells ran nothing within 60 s; kernel {state['kernel']}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: still running after {self.timeout:.0f} s; prompts: {prompts}")
            time.sleep(2)
        _assert_no_errors(state["stderr"], self.name)
        not_run = [i for i, (ok, runnable) in enumerate(zip(numbered, self.runnable)) if runnable and not ok]
        assert not not_run, f"{self.name}: code cells {not_run} (0-based among code cells) did not run: {prompts}"

    def assert_no_errors(self):
        _assert_no_errors(self.state()["stderr"], self.name)

    def widget(self, description: str) -> "WidgetArea":
        """The output area of the (one) cell that shows a control described as ``description``."""
        area = self.page.locator(".jp-Notebook .jp-Cell-outputArea").filter(has=_label(self.page, description))
        count = area.count()
        assert count == 1, f"{self.name}: {count} cells show a control described {description!r} (expected one)"
        return WidgetArea(self, area)


def _label(page: Page, description: str) -> Locator:
    return page.locator("label.widget-label", has_text=re.compile(rf"^\s*{re.escape(description)}\s*$"))


class WidgetArea:
    """The output area of one widget cell: its controls, and the figures of its ``Output`` widget."""

    def __init__(self, notebook: Notebook, area: Locator):
        self.notebook, self.area, self.timeout = notebook, area, notebook.timeout

    def control(self, description: str) -> Locator:
        control = self.area.locator(".widget-inline-hbox").filter(has=_label(self.notebook.page, description))
        assert control.count() == 1, f"no single control described {description!r} in this cell"
        return control

    # Figures
    def figures(self) -> Locator:
        return self.area.locator(".widget-output img")

    def figure_src(self) -> str:
        """The src of the one figure in the widgets' output area (waits for it to appear)."""
        self.figures().first.wait_for(timeout=self.timeout * ms)
        count = self.figures().count()
        assert count == 1, f"{count} figures in the widgets' output area (expected one)"
        return self.figures().first.get_attribute("src")

    def wait_for_new_figure(self, old_src: str) -> str:
        """Wait until the output area shows one figure that differs from ``old_src``; returns its src.

        Fails at once, with the traceback, if an error appears in the output area instead.
        """
        self.notebook.page.wait_for_function(
            """([area, old, error]) => {
                 const out = [...area.querySelectorAll('.widget-output')];
                 const imgs = out.flatMap(o => [...o.querySelectorAll('img')]);
                 const stderr = out.flatMap(o => [...o.querySelectorAll(
                     '[data-mime-type="application/vnd.jupyter.stderr"]')]);
                 const fresh = imgs.length === 1 && imgs[0].getAttribute('src') !== old && imgs[0].complete;
                 return fresh || stderr.some(e => new RegExp(error, 'm').test(e.innerText));
               }""",
            arg=[self.area.element_handle(), old_src, ERROR_TEXT.pattern], polling=500, timeout=self.timeout * ms)
        _assert_no_errors(self._stderr(), "the widgets' output area")
        return self.figure_src()

    def _stderr(self) -> list[str]:
        """The stderr outputs of the widgets' output area (where a callback's traceback lands)."""
        return self.area.locator('.widget-output [data-mime-type="application/vnd.jupyter.stderr"]').all_inner_texts()

    # Controls, used as a learner uses them
    def readout(self, description: str) -> str:
        return self.control(description).locator(".widget-readout").inner_text().strip()

    def nudge_slider(self, description: str, key: str = "ArrowRight"):
        """Focus the slider's handle and press ``key`` (one step of the slider)."""
        handle = self.control(description).locator(".noUi-handle")
        handle.focus()
        handle.press(key)

    def type_into_slider(self, description: str, text: str):
        """Replace the text in the slider's value box with ``text`` and press Enter."""
        box = self.control(description).locator(".widget-readout")
        box.click()
        box.press("Control+A")
        box.type(text)
        box.press("Enter")

    def options(self, description: str) -> list[str]:
        return [_shown(t) for t in self.control(description).locator("select option").all_inner_texts()]

    def selected(self, description: str) -> str:
        return _shown(self.control(description).locator("select").evaluate("s => s.options[s.selectedIndex].text"))

    def choose(self, description: str, option: str):
        """Pick ``option`` (its text as shown) in the dropdown described as ``description``."""
        select = self.control(description).locator("select")
        labels = select.locator("option").all_inner_texts()
        matching = [raw for raw in labels if _shown(raw) == option]
        assert matching, f"{option!r} is not among the options of {description!r}: {labels}"
        select.select_option(label=matching[0])

    def press(self, button: str):
        """Click the button labelled ``button`` (what it starts shows up in the output area)."""
        locator = self.area.locator("button.widget-button", has_text=re.compile(rf"^\s*{re.escape(button)}\s*$"))
        assert locator.count() == 1, f"no single button labelled {button!r} in this cell"
        locator.click()
