"""The notebooks' first cell installs sgm_helpers where it is missing, as on Colab: tried for real.

Every notebook starts with the same setup cell:

    try:
        import sgm_helpers
    except ImportError:
        %pip install -q "<this repository>"
        import sgm_helpers
    ...

The test builds a wheel of the package from this checkout, makes a fresh virtual environment that has every
dependency (PyTorch and the rest, linked from the running environment, as Colab has them preinstalled) but
not sgm_helpers, and runs that cell there with IPython, its ``%pip`` magic included, the repository URL
replaced by the wheel's path (the only change: there is no network here). The package must then import from
the new environment with this checkout's version and its shipped weights.
"""

import importlib.metadata
import json
import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

import sgm_helpers

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(nb for nb in (ROOT / "notebooks").rglob("[0-9][0-9]_*.ipynb")
                   if ".ipynb_checkpoints" not in nb.parts)
INSTALL = re.compile(r'^try:\n    import sgm_helpers\nexcept ImportError:\n    %pip install -q "(?P<spec>[^"]+)"\n'
                     r"    import sgm_helpers\n", re.M)


def _setup_cell(notebook: Path) -> str:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    code = next(c for c in cells if c["cell_type"] == "code")
    return "".join(code["source"])


def _pip_spec(notebook: Path) -> str:
    match = INSTALL.search(_setup_cell(notebook))
    assert match, f"{notebook.name}: the first code cell has no try/import/except ImportError/%pip install block"
    return match["spec"]


def test_every_notebook_installs_the_package_from_the_same_place():
    assert NOTEBOOKS
    specs = {nb.name: _pip_spec(nb) for nb in NOTEBOOKS}
    assert len(set(specs.values())) == 1, specs


def test_the_readme_colab_note_gives_what_the_cell_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f'%pip install -q "{_pip_spec(NOTEBOOKS[0])}"' in readme


def _link_site_packages_without_sgm_helpers(target: Path) -> None:
    """Symlink every entry of this environment's site-packages into ``target``, except sgm_helpers' own."""
    for source in map(Path, site.getsitepackages()):
        own = {"sgm_helpers"}          # and what its installation put there: .pth files, an editable finder, dist-info
        for dist in importlib.metadata.distributions(path=[str(source)]):
            if dist.metadata["Name"].replace("_", "-").lower() == "sgm-helpers":
                own |= {Path(str(f)).parts[0] for f in dist.files or []}
        for entry in source.iterdir():
            if entry.name not in own and not (target / entry.name).exists():
                (target / entry.name).symlink_to(entry)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of this checkout, built without network (``--no-build-isolation``: the installed setuptools)."""
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "sgm_helpers", src / "sgm_helpers", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--wheel-dir", str(dist), str(src)], check=True, timeout=300)
    (built,) = dist.glob("sgm_helpers-*.whl")
    return built


def test_the_setup_cell_installs_the_package_into_a_fresh_environment(tmp_path, wheel):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    if not python.exists():
        python = venv / "Scripts" / "python.exe"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    _link_site_packages_without_sgm_helpers(purelib)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    # no index: pip may install the wheel but fetch nothing, so it cannot replace a linked package either
    env.update(PYTHONNOUSERSITE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", MPLBACKEND="Agg")
    linked = {src: sorted(os.listdir(src)) for src in site.getsitepackages()}
    missing = subprocess.run([str(python), "-c", "import sgm_helpers"], cwd=tmp_path, env=env, capture_output=True,
                             text=True)
    assert "No module named 'sgm_helpers'" in missing.stderr, missing.stderr[-2000:]

    # the cell as an IPython script (what Colab's kernel runs), then a line that reports what got imported
    spec = _pip_spec(NOTEBOOKS[0])
    cell = tmp_path / "cell.ipy"
    cell.write_text(_setup_cell(NOTEBOOKS[0]).replace(f'"{spec}"', f'"{wheel}"') + "\n"
                    "import importlib.metadata, json\n"
                    "print(json.dumps({'file': sgm_helpers.__file__, 'version': sgm_helpers.__version__,\n"
                    "                  'metadata': importlib.metadata.version('sgm-helpers'),\n"
                    "                  'pip_exit_code': get_ipython().user_ns.get('_exit_code')}))\n", encoding="utf-8")
    proc = subprocess.run([str(python), "-m", "IPython", "--no-banner", "--colors=nocolor", str(cell)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Note: you may need to restart the kernel" in proc.stdout          # the %pip magic ran
    assert f"sgm_helpers {sgm_helpers.__version__}, torch" in proc.stdout     # the cell's own last line
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    installed = Path(result["file"]).parent
    assert installed == purelib / "sgm_helpers" and not installed.is_symlink()
    assert result["pip_exit_code"] == 0
    assert result["version"] == result["metadata"] == sgm_helpers.__version__
    assert (installed / "weights" / "manifest.json").is_file() and (installed / "weights" / "mnist-ve25.pt").is_file()
    assert {src: sorted(os.listdir(src)) for src in site.getsitepackages()} == linked   # this environment untouched
