"""Small helpers the cookbook notebooks call, so that no logic lives only in a notebook.

The five notebooks share one run folder (``run_dir``) and pass work to each other through files in it:
``data/`` (prepared CSVs), ``job.json`` (the job spec), ``runs/`` (job folders), ``plots/``, ``eval/``, ``exports/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
        return f"CookbookPaths(run_dir={os.path.relpath(self.run_dir)!r})"


def paths(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> CookbookPaths:
    """The run folder's layout (created on first use). ``data_dir`` is only for sweeps sharing one dataset."""
    run = Path(run_dir).resolve()
    run.mkdir(parents=True, exist_ok=True)
    return CookbookPaths(run, Path(data_dir).resolve() if data_dir else run / "data" / "pubmedqa")


def build_job(
    run_dir: str | os.PathLike,
    name: str,
    model: str = "bundled",
    n_epochs: int = 1,
    n_evals: int = 2,
    batch_size: int = 8,
    learning_rate: float = 3e-4,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.0,
    mask_prompt_labels: bool = True,
    best_checkpoints: bool = False,
    lora_enabled: bool = True,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    trainable_modules: list[str] | None = None,
    max_seq_length: int | None = 512,
    micro_batch_size: int | None = None,
    max_steps: int | None = None,
    max_train_rows: int | None = None,
    seed: int = 42,
    data_dir: str | os.PathLike | None = None,
):
    """A validated :class:`~ftkit.spec.JobSpec` from the flat parameters of notebook 02 (service field names)."""
    from .spec import load_job

    p = paths(run_dir, data_dir)
    data = p.data
    local = {
        "seed": seed,
        "max_seq_length": max_seq_length,
        "micro_batch_size": micro_batch_size,
        "max_steps": max_steps,
        "max_train_rows": max_train_rows,
        "output_dir": str(p.jobs),
    }
    body = {
        "name": name,
        "base_model_id": model,
        "dataset": {"id": str(data), "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {
            "n_epochs": n_epochs,
            "n_evals": n_evals,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "warmup_ratio": warmup_ratio,
            "weight_decay": weight_decay,
            "best_checkpoints": best_checkpoints,
            "mask_prompt_labels": mask_prompt_labels,
            "lora": {
                "enabled": lora_enabled,
                "r": lora_r,
                "alpha": lora_alpha,
                "dropout": lora_dropout,
                "trainable_modules": list(trainable_modules or []),
            },
        },
        "local": {k: v for k, v in local.items() if v is not None},
    }
    return load_job(body)


def validation_messages(body: dict) -> str:
    """What ftkit says about a job body: 'valid' with its notes, or every problem at once."""
    from .spec import JobSpecError, load_job

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

    from .modeling import load_tokenizer
    from .tokenview import render_trained_tokens

    files = spec.dataset_files()
    df = pd.read_csv(files.train, dtype=str, keep_default_na=False)
    prompt = df[spec.dataset.prompt_column].iloc[row] if spec.dataset.prompt_column else None
    answer = df[spec.dataset.answer_column].iloc[row]
    tok = load_tokenizer(spec.resolved_model())
    return HTML(render_trained_tokens(tok, prompt, answer, spec.hyperparameters.mask_prompt_labels))


def maybe_push(job, repo_id: str = "", token_env: str = "HF_TOKEN", merged: bool = False) -> str:
    """Push a job's result to the Hugging Face Hub when a repo id and a token are set; otherwise say why not."""
    if not repo_id:
        return "Hub push skipped: no hub_repo_id given"
    if not os.environ.get(token_env):
        return f"Hub push skipped: ${token_env} is not set"
    from .hub import push_to_hub

    url = push_to_hub(job, repo_id=repo_id, token=os.environ[token_env], merged=merged)
    return f"pushed to {url}"


def plot_token_lengths(
    data_dir: str | os.PathLike, model: str = "bundled", out: str | os.PathLike | None = None
):
    """Histogram of tokens per row (chat template applied, as training sees them) for each split of a dataset."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from ._io import atomic_path
    from .modeling import load_tokenizer
    from .tokencount import count_chat_tokens

    tok = load_tokenizer(model)
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    for split in ("train", "validation", "test"):
        f = Path(data_dir) / f"{split}.csv"
        if not f.is_file():
            continue
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
        counts = count_chat_tokens(tok, df["prompt"].tolist(), df["answer"].tolist())
        ax.hist(counts, bins=30, alpha=0.5, label=f"{split} ({len(counts)} rows, max {max(counts)})")
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
    import json

    print(json.dumps(obj, indent=2))


def last_metrics(job, n: int = 5):
    """The job's last metric records as a DataFrame."""
    import pandas as pd

    return pd.DataFrame(job.metrics()[-n:])


def job_ids(jobs_dir: str | os.PathLike, jobs: list[str] | None = None) -> list[str]:
    """The jobs to plot: the given ids, or every job in ``jobs_dir`` (oldest first)."""
    from .jobs import list_jobs

    return list(jobs) if jobs else [j.id for j in list_jobs(jobs_dir)]


def export_merged(job, out: str | os.PathLike, enabled: bool = True) -> str:
    """Export the merged model (notebook 05), or say it was skipped."""
    if not enabled:
        return "merged export skipped (export_merged = False)"
    from .export import export_job

    return export_job(job, out=out, merged=True).name


def plot_confusion(table, label: str = "tuned", out: str | os.PathLike | None = None):
    """Confusion matrix of one model of a :func:`ftkit.compare` table, saved as PNG when ``out`` is given."""
    import matplotlib.pyplot as plt

    from ._io import atomic_path
    from .metrics import plot_confusion as draw

    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=100)
    draw(table.attrs["results"][label], ax=ax)
    fig.tight_layout()
    if out is not None:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    plt.close(fig)
    return fig
