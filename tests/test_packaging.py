"""Packaging: pyproject.toml and environment.yml agree; the public API imports."""

import importlib
import re
import tomllib
from pathlib import Path

import sgm_helpers

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}


def _split(requirement: str) -> tuple[str, str]:
    """'torch>=2.1  # comment' -> ('torch', '>=2.1'): the normalized name and the version specifier."""
    requirement = requirement.split("#")[0].strip()
    match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name, match.group(2).replace(" ", "")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _conda_dependencies() -> dict[str, str]:
    """The top-level ``dependencies:`` list of environment.yml (a minimal reader: no PyYAML needed)."""
    deps, inside = {}, False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            inside = line.split("#")[0].strip() == "dependencies:"
            continue
        item = re.fullmatch(r"  - (.+)", line)     # exactly two spaces: top-level items, not the pip: sub-list
        if inside and item and not item.group(1).rstrip().endswith(":"):
            name, spec = _split(item.group(1))
            deps[CONDA_TO_PIP.get(name, name)] = spec
    return deps


def test_environment_yml_has_the_runtime_and_dev_packages_of_pyproject():
    project = _pyproject()["project"]
    runtime = dict(_split(r) for r in project["dependencies"])
    dev = dict(_split(r) for r in project["optional-dependencies"]["dev"])
    conda = _conda_dependencies()
    assert "torch" in runtime and "torch" in conda          # the reader found the lists at all
    assert {k: v for k, v in conda.items() if k not in NOT_PACKAGES and k not in dev} == runtime
    assert set(dev) <= set(conda)


def test_environment_yml_installs_this_package_and_pins_python_like_pyproject():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s+- pip:\s*\n\s+- -e \.\s*$", text, flags=re.M)
    python = _conda_dependencies()["python"]
    assert python == _pyproject()["project"]["requires-python"].replace(" ", "")


def test_public_api_is_importable():
    assert len(set(sgm_helpers.__all__)) == len(sgm_helpers.__all__)
    for name in sgm_helpers.__all__:
        assert getattr(sgm_helpers, name) is not None, name
    namespace = {}
    exec("from sgm_helpers import *", namespace)
    assert set(sgm_helpers.__all__) <= set(namespace)


def test_version_matches_pyproject():
    assert sgm_helpers.__version__ == _pyproject()["project"]["version"]


def test_console_scripts_point_at_callables():
    for name, target in _pyproject()["project"].get("scripts", {}).items():
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, attr)), f"[project.scripts] {name} = {target!r} is not callable"
