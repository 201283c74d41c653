"""Packaging: pyproject and environment.yml install the same runtime set; the CI entry runs the README's command."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch"}  # conda-forge's name for the same package


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_every_runtime_dependency_is_in_environment_yml():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda = {_name(d) for d in env if isinstance(d, str)}
    pip = {_name(d) for section in env if isinstance(section, dict) for d in section.get("pip", [])}
    missing = [d for d in map(_name, deps) if CONDA_NAMES.get(d, d) not in conda and d not in pip]
    assert not missing, f"in pyproject.toml but not environment.yml: {missing}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert ci[-1] == "make test"


def test_console_script_and_version():
    from ftkit import __version__
    from ftkit.cli import build_parser

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["ftkit"] == "ftkit.cli:main" and project["version"] == __version__
    assert "demo" in build_parser().format_help()
