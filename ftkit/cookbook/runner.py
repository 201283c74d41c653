"""Run the cookbook notebooks with papermill: the whole suite in order, or a sweep over a parameter grid.

``ftkit notebooks run`` executes each notebook with the pinned ``python3`` kernel, working directory
``notebooks/``, and every artifact in one run folder. ``ftkit notebooks sweep GRID.yaml`` prepares the data once, then
runs the configure/train/evaluate notebooks once per parameter combination, each in its own process, and writes a
summary table (CSV + plot). One failed run is reported and does not stop the others.
"""

from __future__ import annotations

import csv
import difflib
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ftkit.errors import FtkitError, UsageError
from ftkit.files import atomic_path
from ftkit.job.store import read_metrics
from ftkit.paths import repo_root

NOTEBOOKS = (
    "01_prepare_pubmedqa",
    "02_configure_job",
    "03_train_local",
    "04_plot_metrics",
    "05_export_and_evaluate",
    "06_local_api_server",
)
SWEEP_NOTEBOOKS = ("02_configure_job", "03_train_local", "05_export_and_evaluate")
KERNEL = "python3"
# the kernel's own log (that it talks over local TCP, that papermill's shutdown interrupted it) is nothing a user of
# the cookbook can act on; a cell's error reaches them through papermill, a dead kernel as papermill's error
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


class NotebooksMissing(FtkitError, FileNotFoundError):
    """ftkit runs from an installed copy without the source checkout's notebooks/ folder."""


def notebooks_dir() -> Path:
    d = repo_root() / "notebooks"
    if not d.is_dir():
        raise NotebooksMissing(f"the cookbook notebooks are not at {d}; run ftkit from a source checkout")
    return d


class NotebookFailed(FtkitError, RuntimeError):
    """A cookbook notebook raised in one of its cells."""


PARAMETER_FORM = "one -p key=value per parameter; values are read as YAML: 3, 5e-4, true, null, [a, b]"


def parse_parameters(pairs: list[str], stray: list[str] = ()) -> dict:
    """``key=value`` strings to a dict; values are read as YAML scalars (numbers, true/false, null, lists).
    ``stray``: command-line words that followed them without a ``-p`` (``-p batch_size 3``), refused with the
    form that works."""
    import yaml

    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            example = f"{pair}={stray[0]}" if stray else f"{pair}=VALUE"
            raise UsageError(f"-p {pair!r} is not key=value: write -p {example} ({PARAMETER_FORM})")
        k, v = pair.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    if stray:
        raise UsageError(f"unexpected argument(s) {' '.join(stray)}: notebook parameters are {PARAMETER_FORM}")
    return out


def _check_parameters(parameters: dict, declared: dict[str, set[str]]) -> None:
    """Refuse parameters that none of the notebooks to run declares (they would be dropped without a word)."""
    known = set().union(*declared.values()) - {"run_dir"}
    unknown = sorted(set(parameters) - known)
    if unknown:
        close = {u: difflib.get_close_matches(u, known, 1) for u in unknown}
        hints = [f"{u} (did you mean {close[u][0]}?)" if close[u] else u for u in unknown]
        raise UsageError(
            f"no notebook of this run ({', '.join(declared)}) has the parameter(s) {', '.join(hints)}; "
            f"they have: {', '.join(sorted(known))}"
        )


def _failure(nb: str, target: Path, e) -> NotebookFailed:
    """The notebook, the cell and the error alone; the executed notebook keeps the cell's traceback."""
    ftkit_error = e.ename in {c.__name__ for c in _subclasses(FtkitError)}
    what = e.evalue if ftkit_error else f"{e.ename}: {e.evalue}"
    failed = NotebookFailed(f"notebook {nb}.ipynb failed in cell [{e.exec_count}]: {what}")
    failed.hint = f"the executed notebook, with the cell's traceback: {target}"
    return failed


def _subclasses(cls) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def _select(only) -> list[str]:
    if not only:
        return list(NOTEBOOKS)
    wanted = [o.strip() for o in (only.split(",") if isinstance(only, str) else only)]
    chosen = [nb for nb in NOTEBOOKS if any(nb == w or nb.startswith(w + "_") or nb[:2] == w for w in wanted)]
    if len(chosen) != len(wanted):
        raise UsageError(f"--only {only!r}: choose among {', '.join(NOTEBOOKS)} (or their numbers)")
    return chosen


@dataclass
class SuiteRun:
    """What a suite run produced: executed notebooks and the artifacts in the run folder."""

    run_dir: Path
    executed: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def artifacts(self) -> dict[str, list[Path]]:
        r = self.run_dir
        return {
            "executed notebooks": self.executed,
            "plots": sorted(r.glob("plots/*.png")),
            "metrics": sorted(r.glob("runs/*/metrics.jsonl")),
            "evaluation": sorted(r.glob("eval/*.json")),
            "archives": sorted(r.glob("exports/*.tar.gz")),
        }

    def __str__(self) -> str:
        lines = [f"cookbook run in {self.run_dir} ({self.seconds:.0f} s)"]
        for kind, files in self.artifacts().items():
            lines.append(f"  {kind}:")
            lines += [f"    {f}" for f in files] or ["    (none)"]
        table = comparison_text(self.run_dir)
        return "\n".join(lines + ([f"\nbase vs tuned on the test rows (notebook 05):\n{table}"] if table else []))


def comparison_text(run_dir: Path) -> str | None:
    """Notebook 05's first result (majority, base, tuned: accuracy, macro-F1, AUC, per-label F1 and shares) as a
    text table, read from ``eval/comparison.csv``; None before notebook 05 ran."""
    path = Path(run_dir) / "eval" / "comparison.csv"
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    wanted = ["model", "method", "n", "accuracy", "macro_f1", "auc"]
    wanted += [c for c in rows[0] if c.startswith(("f1_", "share_"))]
    cells = [wanted] + [[_cell(r.get(c, "")) for c in wanted] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(wanted))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells)


def _cell(value: str) -> str:
    try:
        return f"{float(value):.3f}" if "." in value else value
    except ValueError:
        return value


def suite_parameters(parameters: dict | None, preset: dict | None, declared: dict[str, set[str]]) -> dict:
    """The parameters of a run: a preset's (applied where a notebook declares them: ``--preset full --only 01``
    is fine) under the user's own, which some notebook of the run must declare."""
    _check_parameters(parameters or {}, declared)
    return {**(preset or {}), **(parameters or {})}


def run_suite(
    out: str | os.PathLike = "out/cookbook",
    parameters: dict | None = None,
    only=None,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
    preset: dict | None = None,
) -> SuiteRun:
    """Execute the notebooks in order with papermill; parameters a notebook does not declare are not passed to it.
    ``preset`` is a parameter set under ``parameters`` (see :data:`ftkit.cookbook.defaults.PRESETS`)."""
    import papermill as pm

    src = notebooks_dir()
    chosen = _select(only)
    declared = {nb: set(pm.inspect_notebook(str(src / f"{nb}.ipynb"))) for nb in chosen}
    parameters = suite_parameters(parameters, preset, declared)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UsageError(f"--data-dir {data_dir}: no such folder (give one written by `ftkit prepare pubmedqa`)")
    run = SuiteRun(Path(out).resolve())
    (run.run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for nb in chosen:
        params = {k: v for k, v in (parameters or {}).items() if k in declared[nb]}
        params["run_dir"] = str(run.run_dir)
        if data_dir and "data_dir" in declared[nb]:
            params["data_dir"] = str(Path(data_dir).resolve())
        target = run.run_dir / "notebooks" / f"{nb}.ipynb"
        if progress:
            print(f"ftkit: running {nb} ...", flush=True)
        try:
            execute(src / f"{nb}.ipynb", target, params, cwd=src)
        except pm.PapermillExecutionError as e:
            raise _failure(nb, target, e) from None
        run.executed.append(target)
    run.seconds = time.perf_counter() - t0
    return run


def execute(source: Path, target: Path, parameters: dict, cwd: Path) -> Path | None:
    """Execute one notebook with papermill into ``target``. What the kernel process itself writes to stderr (its
    shutdown log, C libraries writing to the file descriptor) goes to ``<target>.kernel.log`` rather than the
    terminal; the log is kept only when not empty and its path returned."""
    import papermill as pm

    log = Path(target).with_suffix(".kernel.log")
    try:
        pm.execute_notebook(
            str(source),
            str(target),
            parameters=parameters,
            kernel_name=KERNEL,
            cwd=str(cwd),
            progress_bar=False,
            extra_arguments=KERNEL_ARGUMENTS,
            kernel_manager_class=_kernel_logged_to(log),
        )
    finally:
        if log.is_file() and log.stat().st_size == 0:
            log.unlink()
    return log if log.is_file() else None


def _kernel_logged_to(log: Path) -> type:
    """A kernel manager whose kernel process writes its stderr to ``log``: the kernel can log a traceback of its
    own while papermill shuts it down (a ZMQ socket already closed), which a user would take for a failure."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            with open(log, "ab") as f:  # the kernel process keeps its own copy of the descriptor
                return await super().start_kernel(stderr=f, **kw)

    return LoggedKernelManager


def refresh_outputs() -> float:
    """Execute the notebooks in place at their defaults (fresh run folder) so they carry the outputs nbval
    compares against. Returns the seconds it took: the cookbook's wall time on this machine."""
    import shutil

    import papermill as pm

    src = notebooks_dir()
    shutil.rmtree(src / "../out/cookbook", ignore_errors=True)  # the notebooks' default run_dir
    t0 = time.perf_counter()
    for nb in NOTEBOOKS:
        path = src / f"{nb}.ipynb"
        pm.execute_notebook(str(path), str(path), kernel_name=KERNEL, cwd=str(src), progress_bar=False)
    return time.perf_counter() - t0


def _final(run_dir: Path) -> dict:
    """Final eval_loss and the tuned model's accuracy / macro-F1 of one sweep run, read from its files."""

    res = {"eval_loss": None, "accuracy": None, "macro_f1": None}
    for m in sorted(run_dir.glob("runs/*/metrics.jsonl")):
        evals = [r["eval_loss"] for r in read_metrics(m) if r.get("eval_loss") is not None]
        if evals:
            res["eval_loss"] = evals[-1]
    metrics = run_dir / "eval" / "tuned.predictions.metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        res["accuracy"], res["macro_f1"] = m.get("accuracy"), m.get("macro_f1")
    return res


def sweep(grid_file: str | os.PathLike, out: str | os.PathLike | None = None, progress: bool = True):
    """Run configure/train/evaluate once per combination of a parameter grid; returns the summary DataFrame.

    The grid file (YAML) has ``grid`` (parameter -> list of values) and optional ``parameters`` (fixed for every
    run, e.g. ``max_steps``). Data are prepared once and shared.
    """
    import pandas as pd
    import papermill as pm
    import yaml

    spec = yaml.safe_load(Path(grid_file).read_text()) or {}
    unknown = set(spec) - {"grid", "parameters"}
    if unknown or not isinstance(spec.get("grid"), dict) or not spec["grid"]:
        raise UsageError(
            f"{grid_file}: expected a mapping with 'grid' (parameter -> list of values) and optional "
            f"'parameters'; found keys {sorted(spec)}"
        )
    fixed = spec.get("parameters") or {}
    keys = list(spec["grid"])
    values = [v if isinstance(v, list) else [v] for v in spec["grid"].values()]
    out = Path(out or Path(grid_file).with_suffix("")).resolve()
    declared = {nb: set(pm.inspect_notebook(str(notebooks_dir() / f"{nb}.ipynb"))) for nb in NOTEBOOKS}
    _check_parameters({**fixed, **spec["grid"]}, declared)
    per_run = set().union(*(declared[nb] for nb in SWEEP_NOTEBOOKS))  # the rest are for the shared preparation
    shared = run_suite(out / "shared", _only(fixed, declared[NOTEBOOKS[0]]), only=["01"], progress=progress)
    data_dir = shared.run_dir / "data" / "pubmedqa"

    rows = []
    for i, combo in enumerate(itertools.product(*values)):
        params = {**fixed, **dict(zip(keys, combo, strict=True))}
        run_dir = out / f"run-{i:02d}"
        cmd = [
            sys.executable,
            "-m",
            "ftkit",
            "notebooks",
            "run",
            "--out",
            str(run_dir),
            "--data-dir",
            str(data_dir),
            "--only",
            ",".join(n[:2] for n in SWEEP_NOTEBOOKS),
            "--quiet",
        ]
        cmd += [x for k, v in _only(params, per_run).items() for x in ("-p", f"{k}={json.dumps(v)}")]
        if progress:
            print(f"ftkit: sweep run {i}: {dict(zip(keys, combo, strict=True))}", flush=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        row = {
            "run": run_dir.name,
            **dict(zip(keys, combo, strict=True)),
            "status": "ok" if proc.returncode == 0 else "failed",
            "wall_s": round(time.perf_counter() - t, 1),
            **_final(run_dir),
            "error": None,
        }
        if proc.returncode != 0:
            said = [ln for ln in proc.stderr.splitlines() if ln.startswith("ftkit: ")] or proc.stderr.splitlines()
            row["error"] = (said or [f"exit code {proc.returncode}"])[0][:300]
            if progress:
                print(f"ftkit: sweep run {i} failed: {row['error']}", flush=True)
        rows.append(row)

    table = pd.DataFrame(rows)
    with atomic_path(out / "summary.csv") as tmp:
        table.to_csv(tmp, index=False)
    _plot_sweep(table, keys, out / "summary.png")
    return table


def _only(params: dict, names: set[str]) -> dict:
    return {k: v for k, v in params.items() if k in names}


def _plot_sweep(table, keys: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels = [", ".join(f"{k}={row[k]}" for k in keys) for _, row in table.iterrows()]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, col in zip(axes, ("eval_loss", "accuracy", "macro_f1"), strict=True):
        ax.bar(range(len(table)), table[col].astype(float).fillna(0.0))
        ax.set_xticks(range(len(table)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(col)
    fig.suptitle("ftkit sweep")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
