"""The committed notebooks' outputs are what a reader sees on GitHub or before running: they must be clean. No
warning, no absolute path of the machine that ran them, no progress bar (frozen at whatever it showed when saved),
and no widget shown as its Python repr. ``make notebooks`` writes them; this fails the build when one slips in."""

from __future__ import annotations

import re

import nbformat
import pytest

from ftkit.cookbook.runner import NOTEBOOKS, notebooks_dir

WARNING = re.compile(r"\b\w*Warning\b")
ABSOLUTE = re.compile(r"(?<![\w.~-])(/root\b|/home/|/work/|/tmp/)")
PROGRESS_BAR = re.compile(r"\d+%\|[^|\n]*\||\d+/\d+ \[\d+:\d+<")  # tqdm: " 0%|     | 0/272 [00:00<?"
WIDGET_REPR = re.compile(r"\b(VBox|HBox|IntProgress|FloatProgress)\(children=|\b\w+\(value=")


def output_texts(output) -> list[tuple[str, str]]:
    """(kind, text) of everything an output shows as text; images are skipped (base64 can spell anything)."""
    if output.output_type == "stream":
        return [(f"stream {output.name}", output.text)]
    if output.output_type == "error":
        return [("error", "\n".join(output.traceback))]
    data = output.get("data", {})
    return [(mime, v if isinstance(v, str) else str(v)) for mime, v in data.items() if not mime.startswith("image/")]


def problems(nb) -> list[str]:
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            for kind, text in output_texts(out):
                where = f"cell {i} ({kind})"
                for name, pattern in (
                    ("a warning", WARNING),
                    ("an absolute path", ABSOLUTE),
                    ("a progress bar", PROGRESS_BAR),
                    ("a widget's repr", WIDGET_REPR),
                ):
                    m = pattern.search(text)
                    if m and not (name == "a widget's repr" and kind != "text/plain"):
                        start = max(0, m.start() - 60)
                        found.append(f"{where}: {name}: ...{text[start : m.end() + 60]!r}")
                if kind == "error":
                    found.append(f"{where}: an error")
    return found


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_outputs_are_clean(name):
    nb = nbformat.read(notebooks_dir() / f"{name}.ipynb", as_version=4)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "run `make notebooks` to store outputs"
    found = problems(nb)
    assert not found, f"{name}.ipynb has {len(found)} unclean output(s):\n" + "\n".join(found)


def test_the_checks_catch_what_they_are_for():
    """Each pattern fires on the noise the notebooks had before (copied from their outputs) and not on clean text."""
    stream = nbformat.v4.new_output
    noisy = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                outputs=[
                    stream(
                        "stream",
                        name="stderr",
                        text="/x/site-packages/transformers/modeling_utils.py:3312: "
                        "FutureWarning: `is_gradient_checkpointing` is deprecated",
                    ),
                    stream(
                        "display_data", data={"text/plain": "Loading weights:   0%|          | 0/272 [00:00<?, ?it/s]"}
                    ),
                    stream("stream", name="stdout", text="ftkit: completed: /work/main/out/cookbook/runs/x/model"),
                    stream("execute_result", data={"text/plain": "VBox(children=(HTML(value='<b>Job</b>'),"}),
                    stream("stream", name="stdout", text="model from /root/.cache/ftkit/models/SmolLM2"),
                ]
            )
        ]
    )
    kinds = [p.split(": ")[1] for p in problems(noisy)]
    assert kinds == ["a warning", "a progress bar", "an absolute path", "a widget's repr", "an absolute path"]
    clean = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                outputs=[
                    stream(
                        "stream", name="stdout", text="ftkit: completed: ../out/cookbook/runs/x/model, ~/.cache/ftkit"
                    ),
                    stream(
                        "execute_result", data={"text/plain": "JobForm(job 'x', valid): run the notebook to edit it"}
                    ),
                    stream("display_data", data={"image/png": "iVBOR/tmp/root/home/"}),
                ]
            )
        ]
    )
    assert problems(clean) == []


def test_printed_paths_are_relative_to_the_notebook_folder_or_under_home(tmp_path, monkeypatch):
    from pathlib import Path

    from ftkit.paths import display_path

    nb = tmp_path / "repo" / "notebooks"
    nb.mkdir(parents=True)
    monkeypatch.chdir(nb)
    assert display_path(tmp_path / "repo" / "out" / "cookbook" / "job.json") == "../out/cookbook/job.json"
    assert display_path(Path.home() / ".cache" / "ftkit") == "~/.cache/ftkit"
    assert display_path("/usr/share") == "/usr/share"  # far away and outside home: kept whole
