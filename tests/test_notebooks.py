"""The cookbook notebooks: structure, a fast papermill run of the whole suite, and a two-run sweep.

nbval re-executes them at their defaults and compares with the committed outputs in a separate pytest invocation
(`make test` runs both); see the README.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from ftkit.cookbook.defaults import JOB_DEFAULTS, PRESETS
from ftkit.cookbook.runner import NOTEBOOKS, notebooks_dir, parse_parameters, run_suite, suite_parameters, sweep
from ftkit.cookbook.steps import build_job
from ftkit.errors import FtkitError

# tiny settings: every notebook still runs every cell for real (data prep, training steps, evaluation, export)
FAST = {
    "max_train": 16,
    "max_validation": 4,
    "max_test": 9,
    "max_steps": 2,
    "batch_size": 4,
    "max_seq_length": 256,
    "measure_estimate": False,
    "export_merged": False,
    "n_examples": 1,
    "n_evals": 1,
}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_structure(name):
    nb = nbformat.read(notebooks_dir() / f"{name}.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "papermill needs exactly one parameters cell"
    declared = pm.inspect_notebook(str(notebooks_dir() / f"{name}.ipynb"))
    lines = [ln for ln in tagged[0].source.splitlines() if ln.strip()]
    assert len(declared) == len(lines), "every parameter line must parse (no '=' in comments)"
    assert all("  # " in ln for ln in lines), "every parameter has a comment"
    assert "run_dir" in declared and "data_dir" in declared
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def test_parse_parameters_reads_yaml_scalars():
    assert parse_parameters(["a=1", "b=0.5", "c=true", "d=null", "e=text", "f=[1, 2]"]) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": None,
        "e": "text",
        "f": [1, 2],
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_parameters(["oops"])


def test_a_preset_runs_with_any_one_notebook_but_typed_parameters_are_still_checked():
    declared = {"01_prepare_pubmedqa": {"max_train", "max_test", "run_dir"}}  # no n_epochs or learning_rate here
    params = suite_parameters({"max_test": 10}, PRESETS["full"], declared)  # was refused: n_epochs unknown to 01
    assert params["max_test"] == 10 and params["max_train"] is None and params["n_epochs"] == 2
    with pytest.raises(FtkitError, match="n_epoch"):
        suite_parameters({"n_epoch": 3}, PRESETS["full"], declared)


@pytest.mark.slow
def test_suite_runs_end_to_end_with_papermill(tmp_path, pqal_path, bundled_model_dir):
    run = run_suite(tmp_path / "run", {**FAST, "source": str(pqal_path)}, progress=False)
    assert [p.stem for p in run.executed] == list(NOTEBOOKS)
    art = run.artifacts()
    assert {p.name for p in art["plots"]} >= {"token_lengths.png", "metrics.png", "confusion.png"}
    assert len(art["metrics"]) == 1 and len(art["archives"]) == 1
    preds = json.loads((tmp_path / "run" / "eval" / "tuned.predictions.json").read_text())
    assert len(preds) == 9 and set(preds.values()) <= {"yes", "no", "maybe"}
    job = json.loads((tmp_path / "run" / "runs" / "pubmedqa-lora" / "job.json").read_text())
    assert job["status"] == "completed"
    # the executed notebooks carry their outputs
    nb = nbformat.read(run.executed[0], as_version=4)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
def test_sweep_over_two_learning_rates(tmp_path, pqal_path, bundled_model_dir):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "parameters:\n"
        + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in {**FAST, "max_steps": 1, "source": str(pqal_path)}.items())
        + "grid:\n  learning_rate: [0.0001, 0.001]\n"
    )
    table = sweep(grid, out=tmp_path / "sweep", progress=False)
    assert list(table["learning_rate"]) == [0.0001, 0.001]
    assert (table["status"] == "ok").all(), table.to_dict("records")
    assert table["eval_loss"].notna().all() and table["accuracy"].between(0, 1).all()
    assert (tmp_path / "sweep" / "summary.csv").is_file() and (tmp_path / "sweep" / "summary.png").is_file()
    assert Path(tmp_path / "sweep" / "run-01" / "notebooks" / "03_train_local.ipynb").is_file()


def test_notebook_02_trains_the_cookbook_defaults(tmp_path):
    """One home for the cookbook's job: notebook 02's parameters restate JOB_DEFAULTS, and build_job uses them."""
    import ast

    declared = pm.inspect_notebook(str(notebooks_dir() / "02_configure_job.ipynb"))
    shown = {k: ast.literal_eval(v["default"]) for k, v in declared.items() if k in JOB_DEFAULTS}
    assert len(shown) >= 12 and shown == {k: JOB_DEFAULTS[k] for k in shown}
    spec = build_job(tmp_path, "defaults", learning_rate=0.001)
    hp = spec.hyperparameters
    assert (hp.batch_size, hp.learning_rate, hp.lora.r, spec.local.max_seq_length) == (8, 0.001, 16, 512)
    assert (spec.local.label_marker, spec.local.best_metric) == ("Answer:", "eval_macro_f1")
    with pytest.raises(ValueError, match="unknown parameter.*lora_rank"):
        build_job(tmp_path, "typo", lora_rank=16)
