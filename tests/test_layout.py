"""The package layout reads as the pipeline: each stage imports only the stages before it, nothing imports in a
circle (function-level imports included), ftkit's own light modules are imported at the top of a file, nobody
imports another module's private names, and ``import ftkit`` / ``import ftkit.cli`` load no heavy library."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ftkit"
# the pipeline, in order: a module may import modules of its own stage and of the stages before it
STAGES = ("base", "models", "data", "job", "results", "train", "export", "server", "cookbook", "cli", "top")
BASE = {"ftkit.errors", "ftkit.files", "ftkit.paths", "ftkit.version", "ftkit.client"}  # the client needs only errors
HEAVY_LIBRARIES = {"torch", "transformers", "peft", "accelerate", "pandas", "matplotlib", "ipywidgets", "papermill"}
# the server extra: optional, so `import ftkit.cli` must not need it
HEAVY_LIBRARIES |= {"fastapi", "starlette", "uvicorn"}


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _stage(module: str) -> str:
    if module in BASE:
        return "base"
    if module in ("ftkit", "ftkit.__main__"):
        return "top"
    return module.split(".")[1]


def _imports(module: str) -> list[tuple[str, list[str], bool, int]]:
    """(imported module, names taken from it, at the top level of the file, line) for every import statement."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    for n in tree.body:  # imports inside a top-level `if`/`try` still run when the module loads
        if isinstance(n, (ast.If, ast.Try)):
            top |= {id(c) for c in ast.walk(n)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], id(node) in top, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, [a.name for a in node.names], id(node) in top, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{module}:{node.lineno}: relative import; ftkit imports its modules by full name")
    return out


def _ftkit_targets(module: str):
    """(target ftkit module, names, top level, line): ``from pkg import sub`` counts as importing pkg.sub."""
    for target, names, top, line in _imports(module):
        if target.split(".")[0] != "ftkit":
            continue
        subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
        for t in subs or [target]:
            yield t, [n for n in names if f"{target}.{n}" not in MODULES], top, line


def _heavy_modules() -> set[str]:
    """ftkit modules that load a heavy library when imported (directly or through their top-level imports)."""
    direct = {m for m in MODULES if any(top and t.split(".")[0] in HEAVY_LIBRARIES for t, _, top, _ in _imports(m))}
    heavy = set(direct)
    while True:
        more = {m for m in MODULES if m not in heavy for t, _, top, _ in _ftkit_targets(m) if top and t in heavy}
        if not more:
            return heavy
        heavy |= more


def test_every_stage_imports_only_stages_before_it():
    wrong = [
        f"{m}:{line} ({_stage(m)}) imports {t} ({_stage(t)})"
        for m in MODULES
        for t, _, _, line in _ftkit_targets(m)
        if STAGES.index(_stage(t)) > STAGES.index(_stage(m))
    ]
    assert not wrong, "imports against the pipeline's direction:\n" + "\n".join(wrong)


def test_no_module_imports_in_a_circle():
    graph = {m: {t for t, _, _, _ in _ftkit_targets(m) if t != m} for m in MODULES}
    cycles, state = [], {}

    def visit(m, trail):
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(" -> ".join(trail[trail.index(t) :] + [t]))
            elif t not in state:
                visit(t, trail + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_light_ftkit_modules_are_imported_at_the_top_of_the_file():
    heavy = _heavy_modules()
    late = [
        f"{m}:{line} imports {t} inside a function"
        for m in MODULES
        for t, _, top, line in _ftkit_targets(m)
        if not top and t not in heavy
    ]
    assert not late, "\n".join(late)
    # the heavy modules are the ones that need transformers or matplotlib; everything a command parses with is light
    assert {"ftkit.train.engine", "ftkit.train.trainer", "ftkit.results.plots"} <= heavy
    assert not heavy & {"ftkit.job.spec", "ftkit.data.checks", "ftkit.cli", "ftkit.train.estimate"}


def test_no_module_imports_another_modules_private_names():
    private = [
        f"{p.relative_to(ROOT)}:{line} takes {', '.join(n for n in names if n.startswith('_'))} from {t}"
        for p in [*MODULES.values(), *sorted((ROOT / "benchmarks").glob("*.py"))]
        for t, names, _, line in _ftkit_targets_of(p)
        if any(n.startswith("_") and n != "__version__" for n in names)
    ]
    assert not private, "\n".join(private)


def _ftkit_targets_of(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ftkit":
            yield node.module, [a.name for a in node.names], None, node.lineno


def test_every_stage_says_what_it_owns():
    for stage in STAGES[1:-1]:
        doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text()))
        assert doc and "Owns" in doc and "import" in doc.lower(), f"ftkit/{stage}/__init__.py"
    for m, p in MODULES.items():
        assert ast.get_docstring(ast.parse(p.read_text())) or m == "ftkit.__main__", f"{m} has no docstring"


@pytest.mark.parametrize("statement", ["import ftkit", "import ftkit.cli", "import ftkit.cookbook"])
def test_importing_the_package_and_the_command_loads_no_heavy_library(statement):
    code = f"{statement}; import sys, json; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert not [m for m in loaded if m.split(".")[0] in HEAVY_LIBRARIES]


def test_public_names_stay_reachable_from_the_package():
    import ftkit

    for name in ftkit.__all__:
        assert getattr(ftkit, name) is not None, name
    assert callable(ftkit.evaluate) and callable(ftkit.estimate) and callable(ftkit.generate)
    assert issubclass(ftkit.JobSpecError, ftkit.FtkitError) and issubclass(ftkit.JobSpecError, ValueError)


def test_every_ftkit_exception_derives_from_ftkit_error():
    import importlib
    import inspect

    import ftkit

    loose = []
    for m in MODULES:
        if m.endswith("__main__"):
            continue
        for name, obj in vars(importlib.import_module(m)).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, Exception)
                and obj.__module__ == m
                and not issubclass(obj, Warning)
                and not name.startswith("_")
                and not issubclass(obj, ftkit.FtkitError)
            ):
                loose.append(f"{m}.{name}")
    assert not loose, "exceptions outside ftkit.FtkitError: " + ", ".join(loose)
