"""Fixtures of the browser suite: a JupyterLab server of its own and a headless Chromium.

The suite runs only when asked for (``pytest -m browser``): a plain ``pytest`` deselects it, whatever
other ``-m`` expression is given, unless that expression names the ``browser`` marker. It is skipped,
with the reason, when Playwright or Chromium is missing. Chromium is the one on the PATH (Debian's
``chromium``) or the executable named by ``SGM_CHROMIUM``; Playwright drives it through
``executable_path`` (no browser download).

JupyterLab runs on a free localhost port without a token, in a temporary root holding copies of the
notebooks, with its own settings (notebook ``windowingMode`` "none": every cell stays in the page),
config, runtime and IPython directories. The kernels get ``SGM_QUICK=1`` and no ``MPLBACKEND`` (so
``%matplotlib inline`` shows figures), and draw figures as SVG with text kept as text, so that a test
can read a figure's title. On a failure, a screenshot, the page's HTML and its console messages are
saved in ``browser-artifacts/`` under pytest's rootdir, next to the JupyterLab log; the report names them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from lab_ui import Notebook

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CHROMIUM_ENV = "SGM_CHROMIUM"
TIMEOUT_ENV = "SGM_BROWSER_TIMEOUT"  # seconds for one wait (a notebook's run, a redraw); default 1800
DESELECTED = pytest.StashKey[int]()

LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}
KERNEL_CONFIG = """\
# Figures as SVG with their text as <text> elements, without a date or random ids: the same figure
# gives the same bytes, and a test can read its titles.
c.InlineBackend.figure_formats = {"svg"}
c.InlineBackend.print_figure_kwargs = {"bbox_inches": "tight", "metadata": {"Date": None}}
c.InlineBackend.rc = {"svg.fonttype": "none", "svg.hashsalt": "sgm-browser-tests"}
"""


# Selecting the suite ----------------------------------------------------------------------------------------

def _asks_for_browser(config) -> bool:
    return re.search(r"\bbrowser\b", config.getoption("markexpr") or "") is not None


def pytest_collection_modifyitems(config, items):
    if _asks_for_browser(config):
        return
    browser = [item for item in items if item.get_closest_marker("browser")]
    if browser:
        config.hook.pytest_deselected(items=browser)
        items[:] = [item for item in items if not item.get_closest_marker("browser")]
        config.stash[DESELECTED] = len(browser)


def pytest_terminal_summary(terminalreporter, config):
    n = config.stash.get(DESELECTED, 0)
    if n:
        terminalreporter.write_line(f"{n} browser tests deselected: run them with `pytest -m browser`")


# Artifacts of a failure ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def artifacts(request) -> Path:
    path = Path(request.config.rootpath) / "browser-artifacts"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when not in ("setup", "call") or not report.failed:
        return
    saved = []
    tab = item.funcargs.get("lab_page") if hasattr(item, "funcargs") else None
    if tab is not None:
        saved = tab.save_artifacts(re.sub(r"[^\w.-]+", "_", item.name))
    server = item.funcargs.get("jupyter_lab") if hasattr(item, "funcargs") else None
    if server is not None:
        saved.append(str(server.log))
    if saved:
        report.sections.append(("browser artifacts", "\n".join(saved)))


# Chromium and JupyterLab ---------------------------------------------------------------------------------------

def _chromium() -> str:
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        if not (os.path.isfile(named) and os.access(named, os.X_OK)):
            pytest.fail(f"{CHROMIUM_ENV}={named!r} is not an executable file")
        return named
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"no Chromium: install Debian's `chromium` package (apt-get install chromium) or set {CHROMIUM_ENV} "
                "to a Chromium executable")


@pytest.fixture(scope="session")
def chromium():
    """A headless Chromium driven by Playwright."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install -e '.[dev]'")
    executable = _chromium()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--disable-dev-shm-usage"])
        yield browser
        browser.close()


def _timeout() -> float:
    value = os.environ.get(TIMEOUT_ENV, "1800")
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {value!r}")
    return seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JupyterLab:
    url: str
    root: Path
    log: Path
    process: subprocess.Popen

    def get(self, path: str):
        """GET a JSON answer of the server's REST API (directly: no proxy for localhost)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.url + path, timeout=10) as response:
            return json.load(response)


@pytest.fixture(scope="session")
def jupyter_lab(chromium, tmp_path_factory, artifacts):
    """JupyterLab on a free localhost port, no token, serving a temporary copy of the notebooks."""
    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed: pip install -e '.[dev]'")
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "root"
    root.mkdir()
    for notebook in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(notebook, root)
    for key, values in LAB_SETTINGS.items():
        file = base / "lab-user-settings" / f"{key}.jupyterlab-settings"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(values))
    profile = base / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text(KERNEL_CONFIG)

    env = dict(os.environ, SGM_QUICK="1", IPYTHONDIR=str(base / "ipython"),
               JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTER_DATA_DIR=str(base / "data"),
               JUPYTER_RUNTIME_DIR=str(base / "runtime"))
    env.pop("MPLBACKEND", None)
    port = _free_port()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
               "--ServerApp.password=", f"--ServerApp.root_dir={root}",
               f"--LabApp.user_settings_dir={base / 'lab-user-settings'}",
               f"--LabApp.workspaces_dir={base / 'lab-workspaces'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--ServerApp.allow_root=True")
    log = artifacts / "jupyterlab.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    lab = JupyterLab(url=f"http://127.0.0.1:{port}/", root=root, log=log, process=process)
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with status {process.returncode}; its log: {log}\n"
                            + log.read_text()[-3000:])
            try:
                lab.get("api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer on {lab.url} within 300 s; its log: {log}")
                time.sleep(0.5)
        settings = lab.get("lab/api/settings/@jupyterlab/notebook-extension:tracker")["settings"]
        if settings.get("windowingMode") != "none":
            pytest.fail(f"JupyterLab ignored the notebook setting windowingMode 'none': {settings}")
        yield lab
    finally:
        process.terminate()  # SIGTERM: the server shuts down its kernels, then stops
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LabPage:
    """A browser tab on the JupyterLab server; ``open(name)`` opens a notebook in it."""

    def __init__(self, browser, lab: JupyterLab, artifacts: Path):
        self.lab, self.artifacts = lab, artifacts
        self.context = browser.new_context(viewport={"width": 1600, "height": 1000})
        self.page = self.context.new_page()
        self.timeout = _timeout()
        self.page.set_default_timeout(self.timeout * 1000)
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"[{m.type}] {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"[pageerror] {e}"))

    def open(self, name: str) -> Notebook:
        return Notebook(self.page, self.lab.url, self.lab.root, name, self.timeout)

    def save_artifacts(self, stem: str) -> list[str]:
        saved = []
        try:
            path = self.artifacts / f"{stem}.png"
            self.page.screenshot(path=path, full_page=True)
            saved.append(str(path))
            path = self.artifacts / f"{stem}.html"
            path.write_text(self.page.content())
            saved.append(str(path))
        except Exception as err:  # a crashed page has no screenshot; say so in the report
            saved.append(f"(no screenshot: {err})")
        path = self.artifacts / f"{stem}.console.log"
        path.write_text("\n".join(self.console) + "\n")
        saved.append(str(path))
        return saved

    def close(self):
        """Shut down this tab's kernels (through the server's REST API, as the page would) and close it."""
        try:
            xsrf = next((c["value"] for c in self.context.cookies() if c["name"] == "_xsrf"), "")
            for session in self.lab.get("api/sessions"):
                self.context.request.delete(f"{self.lab.url}api/sessions/{session['id']}",
                                            headers={"X-XSRFToken": xsrf})
        finally:  # a browser already gone leaves the kernels to the server's own shutdown
            self.context.close()


@pytest.fixture
def lab_page(chromium, jupyter_lab, artifacts):
    tab = LabPage(chromium, jupyter_lab, artifacts)
    yield tab
    tab.close()
