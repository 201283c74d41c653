"""Metric plots from synthetic metric files and a real tiny training job: PNG, lines per job, live updates."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ftkit.cli import main as cli
from ftkit.results.plots import LivePlot, plot_metrics


def png_size(path: Path) -> tuple[int, int]:
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def synthetic_records(n_steps: int, steps_per_epoch: int, eval_every: int, loss0: float) -> list[dict]:
    rows = []
    for s in range(1, n_steps + 1):
        rows.append(
            {
                "step": s,
                "epoch": round(s / steps_per_epoch, 4),
                "train_loss": loss0 / s,
                "eval_loss": None,
                "perplexity": None,
                "learning_rate": 1e-3 * (1 - s / (n_steps + 1)),
            }
        )
        if s % eval_every == 0:
            rows.append(
                {
                    "step": s,
                    "epoch": round(s / steps_per_epoch, 4),
                    "train_loss": None,
                    "eval_loss": loss0 / s + 0.1,
                    "perplexity": 2.718 ** (loss0 / s + 0.1),
                    "learning_rate": None,
                }
            )
    return rows


def write_job(root: Path, folder: str, name: str, records: list[dict]) -> Path:
    d = root / folder
    d.mkdir(parents=True)
    (d / "job.json").write_text(json.dumps({"id": folder, "name": name, "status": "completed"}))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return d


def lines_by_panel(fig) -> dict[str, list]:
    return {ax.get_title(): ax.get_lines() for ax in fig.axes}


@pytest.fixture
def two_jobs(tmp_path):
    a = write_job(tmp_path / "runs", "job-a", "alpha", synthetic_records(10, 5, 5, 4.0))
    b = write_job(tmp_path / "runs", "job-b", "beta", synthetic_records(6, 5, 3, 3.0))
    return a, b


def test_overlay_of_two_synthetic_jobs_has_one_line_per_job_in_each_panel(two_jobs, tmp_path):
    import matplotlib.pyplot as plt

    a, b = two_jobs
    out = tmp_path / "plots" / "compare.png"
    open_before = plt.get_fignums()  # other tests may leave pyplot figures open
    fig = plot_metrics(["job-a", str(b)], out=out, jobs_dir=tmp_path / "runs")
    assert png_size(out) == (1200, 800)
    assert not list(out.parent.glob(".*.tmp"))  # written through a temp file that was renamed
    panels = lines_by_panel(fig)
    assert list(panels) == ["train loss", "eval loss", "eval perplexity", "learning rate"]
    for title, lines in panels.items():
        assert [ln.get_label() for ln in lines] == ["alpha", "beta"], title
    train_a, train_b = panels["train loss"]
    assert list(train_a.get_xdata()) == list(range(1, 11)) and list(train_b.get_xdata()) == list(range(1, 7))
    assert list(train_a.get_ydata()) == pytest.approx([4.0 / s for s in range(1, 11)])
    assert [list(ln.get_xdata()) for ln in panels["eval loss"]] == [[5, 10], [3, 6]]
    lr_b = [1e-3 * (1 - s / 7) for s in range(1, 7)]
    assert list(panels["learning rate"][1].get_ydata()) == pytest.approx(lr_b)
    # epoch on a secondary top axis, mapped from the records (5 steps per epoch for both jobs)
    top = fig.axes[0].child_axes[0]
    assert top.get_xlabel() == "epoch"
    assert top._functions[0](10.0) == pytest.approx(2.0) and top._functions[1](1.0) == pytest.approx(5.0)
    # deterministic text: names only, no addresses or timings; pyplot never holds the figure
    assert repr(fig) == "<ftkit metrics plot: alpha, beta>"
    assert fig._suptitle.get_text() == "Training metrics: alpha, beta"
    assert plt.get_fignums() == open_before
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_task_metrics_get_their_own_panels_and_a_collapse_is_marked(tmp_path):
    records = synthetic_records(10, 5, 5, 4.0)
    shares = [{"yes": 0.95, "no": 0.05, "maybe": 0.0}, {"yes": 0.6, "no": 0.3, "maybe": 0.1}]
    evals = [r for r in records if r["eval_loss"] is not None]
    for r, sh, acc in zip(evals, shares, (0.55, 0.62), strict=True):
        r.update(eval_accuracy=acc, eval_macro_f1=acc - 0.2, eval_auc=acc + 0.05, eval_label_shares=sh)
        r["eval_collapsed"] = "yes" if sh["yes"] >= 0.9 else None
    job = write_job(tmp_path / "runs", "job-t", "tuned", records)
    fig = plot_metrics(str(job))
    panels = lines_by_panel(fig)
    assert {"validation accuracy / macro-F1 / AUC", "predicted label shares", "eval loss"} <= set(panels)
    scores = panels["validation accuracy / macro-F1 / AUC"]
    assert [ln.get_label() for ln in scores] == ["tuned accuracy", "tuned macro-F1", "tuned AUC"]
    assert list(scores[0].get_ydata()) == [0.55, 0.62] and list(scores[0].get_xdata()) == [5, 10]
    share_lines = panels["predicted label shares"]
    assert [ln.get_label() for ln in share_lines][:3] == ["tuned: yes", "tuned: no", "tuned: maybe"]
    marks = [ln for ln in share_lines if ln.get_marker() == "x"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [5]  # only the collapsed evaluation
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "collapsed: yes" in texts


def test_metrics_file_and_jobs_sharing_a_name(tmp_path):
    recs = synthetic_records(4, 2, 2, 2.0)
    a = write_job(tmp_path / "r1", "x", "same", recs)
    b = write_job(tmp_path / "r2", "x", "same", recs[:3])
    fig = plot_metrics([a, b, a / "metrics.jsonl"])
    labels = [ln.get_label() for ln in lines_by_panel(fig)["train loss"]]
    assert labels == [f"same ({a})", f"same ({b})", "x"]
    # a job with no evaluations yet: the panel says so instead of failing
    fig = plot_metrics(write_job(tmp_path, "y", "no-evals", [r for r in recs if r["eval_loss"] is None]))
    assert lines_by_panel(fig)["eval loss"] == []
    assert "no eval loss records yet" in [t.get_text() for t in fig.axes[1].texts]


def test_unknown_job_is_a_clear_error(tmp_path):
    from ftkit.job.store import JobError

    write_job(tmp_path / "runs", "job-a", "alpha", synthetic_records(2, 2, 2, 1.0))
    with pytest.raises(JobError, match="no job 'job-b'.*did you mean job-a"):
        plot_metrics("job-b", jobs_dir=tmp_path / "runs")


class FakeDisplay:
    """Records calls the way IPython's display(obj, display_id=True) / handle.update(obj) are made."""

    def __init__(self):
        self.shown, self.updates = [], []

    def __call__(self, obj, display_id=None):
        assert display_id is True
        self.shown.append((obj, obj.figure, obj._repr_png_()))
        return self

    def update(self, obj):
        self.updates.append((obj, obj.figure, len(obj.records)))


def test_live_plot_updates_one_display_handle_every_n_records(tmp_path):
    disp = FakeDisplay()
    out = tmp_path / "live.png"
    live = LivePlot("alpha", every=3, display=disp, path=out)
    records = synthetic_records(8, 4, 4, 3.0)  # 10 records
    for r in records:
        live(r)
    assert len(disp.shown) == 1 and [n for _, _, n in disp.updates] == [6, 9]
    live.close()
    assert [n for _, _, n in disp.updates] == [6, 9, 10]
    figs = {id(f) for _, f, _ in disp.shown + disp.updates}
    assert figs == {id(live.figure)} and {id(o) for o, _, _ in disp.updates} == {id(live)}
    assert png_size(out) == (1200, 800)
    panels = lines_by_panel(live.figure)
    assert list(panels["train loss"][0].get_xdata()) == list(range(1, 9))
    assert list(panels["eval loss"][0].get_xdata()) == [4, 8]
    assert repr(live) == "<ftkit live plot: job alpha>"
    live.close()  # nothing new: no redraw
    assert len(disp.updates) == 3
    with pytest.raises(ValueError, match="every=0"):
        LivePlot(every=0)


def test_live_plot_outside_a_notebook_shows_nothing_and_writes_only_with_a_path(tmp_path):
    with LivePlot("quiet", every=2) as live:  # no IPython kernel here: no display
        for r in synthetic_records(3, 3, 3, 1.0):
            live(r)
    assert live.display is None and live.handle is None and live.redraws == 2
    assert list(tmp_path.iterdir()) == []


def test_live_plot_through_ipython_display_machinery(tmp_path):
    """IPython's real display(..., display_id=True) and DisplayHandle.update: one display id, fixed text."""
    script = textwrap.dedent("""
        import json
        from IPython.core.interactiveshell import InteractiveShell
        from IPython.display import display
        from IPython.utils.capture import capture_output
        from ftkit.results.plots import LivePlot
        InteractiveShell.instance()
        with capture_output() as cap:
            live = LivePlot("beta", every=2, display=display)
            for s in range(1, 7):
                live({"step": s, "epoch": s / 6, "train_loss": 1.0 / s, "learning_rate": 1e-4})
            live.close()
        print(json.dumps([{"id": o.transient["display_id"], "update": o.update, "text": o.data["text/plain"],
                           "png": "image/png" in o.data} for o in cap.outputs]))
    """)
    env = {"IPYTHONDIR": str(tmp_path / "ipython"), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    import os

    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    assert res.returncode == 0, res.stderr
    outputs = json.loads(res.stdout.strip().splitlines()[-1])
    assert [o["update"] for o in outputs] == [False, True, True]
    assert len({o["id"] for o in outputs}) == 1
    assert {o["text"] for o in outputs} == {"<ftkit live plot: job beta>"}
    assert all(o["png"] for o in outputs)


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory, tiny_model_dir):
    from ftkit.train.engine import train

    tmp = tmp_path_factory.mktemp("plots-job")
    data = tmp / "data"
    data.mkdir()
    for split, n, start in (("train", 24, 0), ("validation", 6, 100)):
        rows = [f'"Is {i} even?",{"yes" if i % 2 == 0 else "no"}' for i in range(start, start + n)]
        (data / f"{split}.csv").write_text("prompt,answer\n" + "\n".join(rows) + "\n")
    spec = {
        "name": "plot-me",
        "base_model_id": str(tiny_model_dir),
        "dataset": {"id": str(data), "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {
            "batch_size": 4,
            "learning_rate": 1e-3,
            "n_evals": 2,
            "lora": {"r": 4, "alpha": 8},
        },
        "local": {"output_dir": str(tmp / "runs"), "seed": 1, "max_steps": 4},
    }
    disp = FakeDisplay()
    live = LivePlot("plot-me", every=2, display=disp)
    job = train(spec, quiet=True, on_record=live)
    live.close()
    return job, live, disp


def test_real_job_plot_and_live_plot_follow_its_metrics(tiny_job, tmp_path):
    job, live, disp = tiny_job
    rows = job.metrics()
    train_steps = [r["step"] for r in rows if r["train_loss"] is not None]
    eval_steps = [r["step"] for r in rows if r["eval_loss"] is not None]
    assert train_steps == [1, 2, 3, 4] and eval_steps == [2, 4]

    out = tmp_path / "job.png"
    fig = plot_metrics(job, out=out)
    assert png_size(out) == (1200, 800)
    panels = lines_by_panel(fig)
    assert [ln.get_label() for ln in panels["train loss"]] == ["plot-me"]
    assert list(panels["train loss"][0].get_xdata()) == train_steps
    assert list(panels["eval loss"][0].get_ydata()) == [r["eval_loss"] for r in rows if r["eval_loss"]]
    assert list(panels["eval perplexity"][0].get_xdata()) == eval_steps

    # the live plot saw every record the job wrote, redrawing one figure every 2 records
    assert live.records == rows
    assert len(disp.shown) == 1 and len(disp.shown) + len(disp.updates) == live.redraws == len(rows) // 2
    assert list(lines_by_panel(live.figure)["train loss"][0].get_xdata()) == train_steps


def test_cli_plot(tiny_job, tmp_path, capsys, two_jobs):
    job, _, _ = tiny_job
    out = tmp_path / "cli.png"
    assert cli(["plot", str(job.path), str(two_jobs[0]), "--out", str(out)]) == 0
    assert png_size(out) == (1200, 800) and f"wrote {out}" in capsys.readouterr().out
    assert cli(["plot", "nope", "--jobs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "x.png")]) == 1
    assert "no job 'nope'" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
