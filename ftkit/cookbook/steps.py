"""Small helpers the cookbook notebooks call, so that no logic lives only in a notebook.

The five notebooks share one run folder (``run_dir``) and pass work to each other through files in it:
``data/`` (prepared CSVs), ``job.json`` (the job spec), ``runs/`` (job folders), ``plots/``, ``eval/``, ``exports/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ftkit.cookbook.defaults import JOB_DEFAULTS
from ftkit.cookbook.tokenview import render_trained_tokens
from ftkit.data.tokens import count_chat_tokens
from ftkit.errors import UsageError
from ftkit.export.hub import push_to_hub
from ftkit.export.stage import export_job
from ftkit.files import atomic_path
from ftkit.job.problems import JobSpecError
from ftkit.job.save import save_job
from ftkit.job.spec import HYPERPARAMETER_FIELDS, load_job
from ftkit.job.store import list_jobs
from ftkit.models.loading import load_tokenizer
from ftkit.paths import display_path
from ftkit.results.figures import plot_confusion as draw


@dataclass(frozen=True)
class CookbookPaths:
    """Where each notebook reads and writes inside one run folder."""

    run_dir: Path
    data: Path  # the prepared PubMedQA folder (inside run_dir unless a sweep shares one)

    @property
    def job_file(self) -> Path:
        return self.run_dir / "job.json"

    @property
    def jobs(self) -> Path:
        return self.run_dir / "runs"

    @property
    def plots(self) -> Path:
        return self.run_dir / "plots"

    @property
    def eval(self) -> Path:
        return self.run_dir / "eval"

    @property
    def exports(self) -> Path:
        return self.run_dir / "exports"

    def __repr__(self) -> str:  # notebooks show this: keep it free of absolute, machine-specific paths
        return f"CookbookPaths(run_dir={display_path(self.run_dir)!r})"


def paths(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> CookbookPaths:
    """The run folder's layout (created on first use). ``data_dir`` is only for sweeps sharing one dataset."""
    run = Path(run_dir).resolve()
    run.mkdir(parents=True, exist_ok=True)
    return CookbookPaths(run, Path(data_dir).resolve() if data_dir else run / "data" / "pubmedqa")


def build_job(run_dir: str | os.PathLike, name: str, data_dir: str | os.PathLike | None = None, **overrides):
    """A validated :class:`~ftkit.job.spec.JobSpec` from notebook 02's flat parameters: :data:`JOB_DEFAULTS`
    with ``overrides`` (same names) on top. The job trains on ``<run_dir>/data/pubmedqa`` (or ``data_dir``) and keeps
    its folder under ``<run_dir>/runs``."""
    unknown = sorted(set(overrides) - set(JOB_DEFAULTS))
    if unknown:
        raise UsageError(f"build_job: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(JOB_DEFAULTS)}")
    v = {**JOB_DEFAULTS, **overrides}
    p = paths(run_dir, data_dir)
    local = {
        "seed": v["seed"],
        "max_seq_length": v["max_seq_length"],
        "micro_batch_size": v["micro_batch_size"],
        "max_steps": v["max_steps"],
        "max_train_rows": v["max_train_rows"],
        "label_marker": v["label_marker"],
        "best_metric": v["best_metric"],
        "output_dir": str(p.jobs),
    }
    body = {
        "name": name,
        "base_model_id": v["model"],
        "dataset": {"id": str(p.data), "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {
            **{k: v[k] for k in HYPERPARAMETER_FIELDS},
            "lora": {
                "enabled": v["lora_enabled"],
                "r": v["lora_r"],
                "alpha": v["lora_alpha"],
                "dropout": v["lora_dropout"],
                "trainable_modules": list(v["trainable_modules"] or []),
            },
        },
        "local": {k: x for k, x in local.items() if x is not None},
    }
    return load_job(body)


def save_or_keep_job(spec, job_file: str | os.PathLike, form=None):
    """Notebook 02's last step: write the parameters' job to ``job_file`` (the file notebook 03 trains), unless
    the form saved a job there in this session; then that job stays and is returned. Papermill runs have no
    form to save with, so they always train the parameters."""
    job_file = Path(job_file)
    saved = getattr(form, "saved_to", None)
    if saved is not None and Path(saved).resolve() == job_file.resolve() and job_file.is_file():
        print(f"kept the job saved by the form in {display_path(job_file)} (notebook 03 trains it)")
        return load_job(job_file)
    save_job(spec, job_file)
    print(
        f"saved the parameters' job to {display_path(job_file)}: notebook 03 trains it "
        "(the form's Save job writes the same file)"
    )
    return spec


def validation_messages(body: dict) -> str:
    """What ftkit says about a job body: 'valid' with its notes, or every problem at once."""

    try:
        spec = load_job(body)
    except JobSpecError as e:
        return str(e)
    notes = getattr(spec, "notes", None) or []
    return "valid" + "".join(f"\n  note: {n}" for n in notes)


def preview_example(spec, row: int = 0):
    """The first training row rendered as tokens coloured by whether they are trained (an HTML object)."""
    import pandas as pd
    from IPython.display import HTML

    files = spec.dataset_files()
    df = pd.read_csv(files.train, dtype=str, keep_default_na=False)
    prompt = df[spec.dataset.prompt_column].iloc[row] if spec.dataset.prompt_column else None
    answer = df[spec.dataset.answer_column].iloc[row]
    tok = load_tokenizer(spec.resolved_model())
    mask = spec.hyperparameters.mask_prompt_labels
    return HTML(render_trained_tokens(tok, prompt, answer, mask, max_seq_length=spec.max_seq_length()))


def maybe_push(job, repo_id: str = "", token_env: str = "HF_TOKEN", merged: bool = False) -> str:
    """Push a job's result to the Hugging Face Hub when a repo id and a token are set; otherwise say why not."""
    if not repo_id:
        return "Hub push skipped: no hub_repo_id given"
    if not os.environ.get(token_env):
        return f"Hub push skipped: ${token_env} is not set"

    url = push_to_hub(job, repo_id=repo_id, token=os.environ[token_env], merged=merged)
    return f"pushed to {url}"


def plot_token_lengths(data_dir: str | os.PathLike, model: str = "bundled", out: str | os.PathLike | None = None):
    """Histogram of tokens per row (chat template applied, as training sees them) for each split of a dataset."""
    import matplotlib.pyplot as plt
    import pandas as pd

    tok = load_tokenizer(model)
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    splits = {}
    for split in ("train", "validation", "test"):
        f = Path(data_dir) / f"{split}.csv"
        if f.is_file():
            df = pd.read_csv(f, dtype=str, keep_default_na=False)
            splits[split] = count_chat_tokens(tok, df["prompt"].tolist(), df["answer"].tolist())
    # shared bins and outlined bars: a small split (8 validation rows) stays visible over a large one
    lo, hi = min(map(min, splits.values())), max(map(max, splits.values()))
    bins = list(range(lo, hi + (hi - lo) // 30 + 2, max(1, (hi - lo) // 30 + 1)))
    colours = {"train": "#1f77b4", "validation": "#d62728", "test": "#2ca02c"}
    for split, counts in sorted(splits.items(), key=lambda kv: -len(kv[1])):  # the smallest split on top
        label = f"{split} ({len(counts)} rows, max {max(counts)})"
        ax.hist(counts, bins=bins, histtype="stepfilled", alpha=0.25, color=colours[split])
        ax.hist(counts, bins=bins, histtype="step", linewidth=1.8, color=colours[split], label=label)
    ax.set_xlabel("tokens per row (chat template applied)")
    ax.set_ylabel("rows")
    ax.legend()
    fig.tight_layout()
    if out is not None:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    plt.close(fig)
    return fig


def show_rows(csv_path: str | os.PathLike, n: int = 3, width: int = 160):
    """The first rows of a prompt/answer CSV with long texts shortened, as a DataFrame."""
    import pandas as pd

    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False).head(n)
    return df.map(lambda v: v if len(v) <= width else v[: width - 1] + "…")


def show_json(obj) -> None:
    """Print a job body as JSON; absolute paths are shown as :func:`ftkit.paths.display_path` does (the
    job itself keeps them absolute)."""
    import json

    def shown(v):
        if isinstance(v, dict):
            return {k: shown(x) for k, x in v.items()}
        if isinstance(v, list):
            return [shown(x) for x in v]
        return display_path(v) if isinstance(v, str) and os.path.isabs(v) else v

    print(json.dumps(shown(obj), indent=2))


def last_metrics(job, n: int = 5):
    """The job's last metric records as a DataFrame."""
    import pandas as pd

    return pd.DataFrame(job.metrics()[-n:])


def job_ids(jobs_dir: str | os.PathLike, jobs: list[str] | None = None) -> list[str]:
    """The jobs to plot: the given ids, or every job in ``jobs_dir`` (oldest first)."""

    return list(jobs) if jobs else [j.id for j in list_jobs(jobs_dir)]


def export_merged(job, out: str | os.PathLike, enabled: bool = True) -> str:
    """Export the merged model (notebook 05), or say it was skipped."""
    if not enabled:
        return "merged export skipped (export_merged = False)"

    return export_job(job, out=out, merged=True).name


def plot_confusion(table, label: str = "tuned", out: str | os.PathLike | None = None):
    """Confusion matrix of one model of a :func:`ftkit.compare` table, titled by its label (not the model's
    folder), saved as PNG when ``out`` is given."""
    import dataclasses

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=100)
    draw(dataclasses.replace(table.attrs["results"][label], model=label), ax=ax)
    fig.tight_layout()
    if out is not None:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    plt.close(fig)
    return fig
