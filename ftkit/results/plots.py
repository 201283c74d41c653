"""Metric plots: one or several jobs overlaid (:func:`plot_metrics`) and a live plot fed during training.

Figures are plain :class:`matplotlib.figure.Figure` objects rendered with the Agg canvas, never pyplot
figures: pyplot is left alone (no backend is forced, in a notebook or anywhere else), no figure piles up in
pyplot's registry, and a notebook shows each figure exactly once, through its ``_repr_png_``. Text
representations are fixed strings (job names only, no memory addresses or timings) so notebook outputs compare
equal from run to run (nbval).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ftkit.errors import UsageError
from ftkit.files import atomic_path
from ftkit.job.store import Job, get_job, read_metrics

# (metric key, panel title, y scale)
PANELS = (
    ("train_loss", "train loss", "linear"),
    ("eval_loss", "eval loss", "linear"),
    ("perplexity", "eval perplexity", "log"),
    ("learning_rate", "learning rate", "linear"),
)
# drawn when the records carry task metrics (jobs with decision labels): (record key, line style) per panel
TASK_LINES = (("eval_accuracy", "-"), ("eval_macro_f1", "--"), ("eval_auc", ":"))
FIGSIZE = (12.0, 8.0)
DPI = 100


class MetricsFigure(Figure):
    """A Figure that shows itself in notebooks as a PNG, with a fixed text form naming its jobs."""

    ftkit_label = "metrics"

    def _repr_png_(self) -> bytes:
        import io

        buf = io.BytesIO()
        FigureCanvasAgg(self).print_png(buf)
        return buf.getvalue()

    def __repr__(self) -> str:
        return f"<ftkit metrics plot: {self.ftkit_label}>"


def _new_figure(figsize=FIGSIZE, dpi=DPI) -> MetricsFigure:
    fig = MetricsFigure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas: saving and drawing go through Agg
    return fig


def _series(source, jobs_dir) -> tuple[str, list[dict]]:
    """(label, metric records) of a Job, a job id, a job folder or a metrics.jsonl file."""

    if isinstance(source, Job):
        job = source
    else:
        p = Path(source)
        if p.is_file() and p.suffix == ".jsonl":
            label = p.parent.name if p.name == "metrics.jsonl" else p.stem
            return label, read_metrics(p)
        job = get_job(str(source), jobs_dir)
    return str(job.record.get("name") or job.id), job.metrics()


def _unique_labels(labels: list[str], sources: list) -> list[str]:
    """Job names label the lines; two jobs with one name get their folders added so the legend tells them
    apart.
    """
    out = []
    for i, (label, src) in enumerate(zip(labels, sources, strict=True)):
        if labels.count(label) > 1:
            label = f"{label} ({getattr(src, 'path', src)})"
        out.append(label if label not in out else f"{label} #{i + 1}")
    return out


def _epoch_mapping(records: list[dict]):
    """Functions step -> epoch and epoch -> step from the (step, epoch) pairs of the records (for the top
    axis).
    """
    import numpy as np

    pairs = sorted(
        {
            (float(r["step"]), float(r["epoch"]))
            for r in records
            if r.get("step") is not None and r.get("epoch") is not None
        }
    )
    steps = np.array([0.0] + [s for s, _ in pairs])
    epochs = np.array([0.0] + [e for _, e in pairs])
    keep = np.concatenate([[True], np.diff(steps) > 0])  # np.interp needs strictly increasing x
    steps, epochs = steps[keep], epochs[keep]
    ratio = epochs[-1] / steps[-1] if steps[-1] > 0 and epochs[-1] > 0 else 1.0
    epochs_ok = np.all(np.diff(epochs) > 0)

    def to_epoch(x):
        x = np.asarray(x, dtype=float)
        return np.where(x <= steps[-1], np.interp(x, steps, epochs), x * ratio)

    def to_step(e):
        e = np.asarray(e, dtype=float)
        inside = np.interp(e, epochs, steps) if epochs_ok else e / ratio
        return np.where(e <= epochs[-1], inside, e / ratio)

    return to_epoch, to_step


def draw_metrics(fig: Figure, series: list[tuple[str, list[dict]]], title: str | None = None) -> Figure:
    """Draw the four metric panels of ``series`` ((label, records) pairs) into ``fig``, replacing what it
    held.
    """
    fig.clear()
    with_task = any(r.get("eval_accuracy") is not None for _, recs in series for r in recs)
    axes = fig.subplots(2, 3 if with_task else 2, squeeze=False).ravel()
    if with_task:  # the loss panels on the left, the task panels in the last column
        axes = [axes[0], axes[1], axes[3], axes[4], axes[2], axes[5]]
    with_epochs = [recs for _, recs in series if any(r.get("epoch") for r in recs)]
    mapping = _epoch_mapping(with_epochs[0]) if with_epochs else None
    # one epoch axis fits all jobs only when they share steps per epoch; otherwise it is the first job's
    pairs = [
        (r["step"], r["epoch"])
        for _, recs in series
        for r in recs
        if r.get("step") is not None and r.get("epoch") is not None
    ]
    shared = mapping is not None and all(abs(float(mapping[0](s)) - e) <= 1e-3 for s, e in pairs)
    epoch_label = "epoch" if shared else f"epoch ({series[0][0]})"
    if with_task:
        _task_panels(axes[4], axes[5], series)
        for ax in axes[4:]:
            if mapping is not None:
                ax.secondary_xaxis("top", functions=mapping).set_xlabel(epoch_label, fontsize="small")
    for ax, (key, name, scale) in zip(axes[:4], PANELS, strict=True):
        drawn = 0
        for i, (label, recs) in enumerate(series):
            pts = [(r["step"], r[key]) for r in recs if r.get(key) is not None and r.get("step") is not None]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            # evaluations are few: markers make single points visible
            marker = "o" if key in ("eval_loss", "perplexity") else None
            ax.plot(xs, ys, label=label, color=f"C{i % 10}", marker=marker, markersize=4, linewidth=1.5)
            drawn += 1
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if drawn:
            ys = [y for line in ax.get_lines() for y in line.get_ydata()]
            if scale == "log" and min(ys) > 0 and max(ys) / min(ys) > 10:  # log only helps over a wide range
                ax.set_yscale("log")
            ax.legend(fontsize="small")
            if mapping is not None:
                top = ax.secondary_xaxis("top", functions=mapping)
                top.set_xlabel(epoch_label, fontsize="small")
        else:
            ax.text(
                0.5,
                0.5,
                f"no {name} records yet",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="0.5",
            )
    if title:
        fig.suptitle(title)
    fig.set_layout_engine("constrained")
    return fig


def _task_panels(ax_scores, ax_shares, series: list[tuple[str, list[dict]]]) -> None:
    """Validation accuracy, macro-F1 and AUC (one panel) and the predicted-label shares (the other) per job; an
    evaluation whose predictions collapsed onto one label is marked with a red x on both."""
    for i, (label, recs) in enumerate(series):
        evals = [r for r in recs if r.get("eval_accuracy") is not None and r.get("step") is not None]
        if not evals:
            continue
        steps = [r["step"] for r in evals]
        for key, style in TASK_LINES:
            ys = [r.get(key) for r in evals]
            if any(y is not None for y in ys):
                name = key.removeprefix("eval_").replace("macro_f1", "macro-F1").replace("auc", "AUC")
                ax_scores.plot(steps, ys, style, color=f"C{i % 10}", marker="o", markersize=4, label=f"{label} {name}")
        shares = evals[-1].get("eval_label_shares") or {}
        for j, name in enumerate(shares):
            ys = [(r.get("eval_label_shares") or {}).get(name) for r in evals]
            ax_shares.plot(
                steps,
                ys,
                ["-", "--", ":", "-."][j % 4],
                color=f"C{i % 10}",
                marker="o",
                markersize=4,
                label=f"{label}: {name}",
            )
        for r in evals:
            if r.get("eval_collapsed"):
                share = r["eval_label_shares"][r["eval_collapsed"]]
                ax_shares.plot([r["step"]], [share], "x", color="red", markersize=10, markeredgewidth=2)
                ax_shares.annotate(
                    f"collapsed: {r['eval_collapsed']}",
                    (r["step"], share),
                    color="red",
                    fontsize="small",
                    xytext=(4, -12),
                    textcoords="offset points",
                )
    for ax, title in ((ax_scores, "validation accuracy / macro-F1 / AUC"), (ax_shares, "predicted label shares")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1.05)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")


def _save_png(fig: Figure, out: str | os.PathLike) -> Path:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return Path(out)


def plot_metrics(
    jobs,
    out: str | os.PathLike | None = None,
    jobs_dir: str | os.PathLike | None = None,
    figsize: tuple[float, float] = FIGSIZE,
    dpi: int = DPI,
) -> MetricsFigure:
    """Plot train loss, eval loss, perplexity and learning rate against step for one job or several overlaid,
    plus validation accuracy / macro-F1 / AUC and the predicted-label shares when the jobs recorded task metrics.

    ``jobs`` is one job or a list of them: :class:`~ftkit.job.store.Job` objects, job ids (looked up in
    ``jobs_dir``), job folders or ``metrics.jsonl`` files. Lines are labelled with the job names; the top axis
    of each panel shows the epoch. Returns the Figure (a notebook displays it); with ``out`` it is also saved
    as a PNG of ``figsize`` x ``dpi`` pixels (written atomically).
    """
    sources = [jobs] if isinstance(jobs, (str, os.PathLike)) or not isinstance(jobs, Iterable) else list(jobs)
    if not sources:
        raise UsageError("plot_metrics needs at least one job")
    series = [_series(s, jobs_dir) for s in sources]
    labels = _unique_labels([label for label, _ in series], sources)
    series = [(label, recs) for label, (_, recs) in zip(labels, series, strict=True)]
    fig = _new_figure(figsize, dpi)
    fig.ftkit_label = ", ".join(labels)
    draw_metrics(fig, series, title=f"Training metrics: {', '.join(labels)}")
    if out is not None:
        _save_png(fig, out)
    return fig


def _notebook_display():
    """IPython's ``display`` when running in a Jupyter kernel (notebook, papermill, nbval), else None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    ip = get_ipython()
    if ip is None or "IPKernelApp" not in getattr(ip, "config", {}):
        return None
    from IPython.display import display

    return display


class LivePlot:
    """A metric plot that follows a training run; pass it as ``train(spec, on_record=LivePlot("my-job"))``.

    Every ``every`` records it redraws one figure in place: in a notebook through one display handle
    (``display(obj, display_id=True)`` then ``handle.update(obj)``), so the cell shows a single image that
    changes. Outside notebooks nothing is shown; with ``path`` the PNG there is rewritten at each redraw. Call
    :meth:`close` (or use ``with LivePlot(...) as live:``) after training for the final redraw.

    ``display`` is the display function (default: IPython's inside a Jupyter kernel, none elsewhere; ``None``
    turns display off).
    """

    def __init__(
        self,
        job: str = "training",
        every: int = 10,
        path: str | os.PathLike | None = None,
        display="auto",
        figsize: tuple[float, float] = FIGSIZE,
        dpi: int = DPI,
    ):
        if every < 1:
            raise UsageError(f"LivePlot every={every}: it must be at least 1 (records between redraws)")
        self.job = str(job)
        self.every = every
        self.path = Path(path) if path is not None else None
        self.display = _notebook_display() if display == "auto" else display
        self.records: list[dict] = []
        self.figure = _new_figure(figsize, dpi)
        self.figure.ftkit_label = self.job
        self.handle = None
        self.redraws = 0
        self._pending = 0

    def __call__(self, record: dict) -> None:
        self.records.append(dict(record))
        self._pending += 1
        if self._pending >= self.every:
            self.redraw()

    def redraw(self) -> None:
        """Draw all records so far into the figure and push it to the display handle and/or the PNG file."""
        draw_metrics(self.figure, [(self.job, self.records)], title=f"Training metrics: {self.job}")
        self._pending = 0
        self.redraws += 1
        if self.display is not None:
            if self.handle is None:
                self.handle = self.display(self, display_id=True)
            else:
                self.handle.update(self)
        if self.path is not None:
            _save_png(self.figure, self.path)

    def close(self) -> None:
        """Final redraw with every record (when something changed since the last one)."""
        if self._pending or not self.redraws:
            self.redraw()

    def __enter__(self) -> LivePlot:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _repr_png_(self) -> bytes:
        return self.figure._repr_png_()

    def __repr__(self) -> str:
        return f"<ftkit live plot: job {self.job}>"
