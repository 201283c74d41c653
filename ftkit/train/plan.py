"""What a job will process before anything heavy loads: its rows (with the 1% hold-out), the optimizer-step
arithmetic, the evaluation schedule and the batching mode. The engine and the estimate both use these, so the
estimate's counts are exactly what training processes."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import NamedTuple

from ftkit.data.labels import DEFAULT_LABEL_COLUMN
from ftkit.errors import FtkitError, UsageError


class RowsError(FtkitError, ValueError):
    """A job's CSV lacks a column the job names."""


class JobRows(NamedTuple):
    """The rows a job trains and evaluates on; prompts are None without a prompt column, label values None
    without a label column (see :func:`label_column_of`)."""

    prompts: list[str] | None
    answers: list[str]
    validation_prompts: list[str] | None
    validation_answers: list[str]
    held_out: bool
    """True when the validation rows are 1% of the training rows (there is no validation file)."""
    label_values: list[str] | None = None
    validation_label_values: list[str] | None = None


def label_column_of(spec, header: list[str]) -> str | None:
    """The column holding gold labels: local.label_column (which must exist), else final_decision when present."""
    named = spec.local.label_column
    if named:
        return named
    return DEFAULT_LABEL_COLUMN if DEFAULT_LABEL_COLUMN in header else None


def read_rows(path: Path, prompt_column: str | None, answer_column: str, spec=None):
    """(prompts or None, answers, label column values or None) of a CSV, every value as text."""
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    label_column = label_column_of(spec, list(df.columns)) if spec is not None else None
    missing = [c for c in (prompt_column, answer_column, label_column) if c and c not in df.columns]
    if missing:
        raise RowsError(f"{path}: column(s) {missing} not found; the header has {list(df.columns)}")
    prompts = df[prompt_column].tolist() if prompt_column else None
    labels = df[label_column].tolist() if label_column else None
    return prompts, df[answer_column].tolist(), labels


def holdout(n: int, seed: int) -> list[int]:
    """Indexes of the 1% (at least one row) of training rows held out for evaluation, as the service did."""
    k = max(1, n // 100)
    return sorted(random.Random(seed).sample(range(n), k))


def job_rows(spec, files) -> JobRows:
    """The job's rows: local.max_train_rows first, then the 1% hold-out when there is no validation file."""
    ds, local = spec.dataset, spec.local_settings()
    prompts, answers, labels = read_rows(files.train, ds.prompt_column, ds.answer_column, spec)
    if local.max_train_rows:
        prompts, answers, labels = (
            None if xs is None else xs[: local.max_train_rows] for xs in (prompts, answers, labels)
        )
    if files.validation is not None:
        v_prompts, v_answers, v_labels = read_rows(files.validation, ds.prompt_column, ds.answer_column, spec)
        return JobRows(prompts, answers, v_prompts, v_answers, False, labels, v_labels)
    held = set(holdout(len(answers), local.seed))

    def pick(xs, keep):
        return None if xs is None else [x for i, x in enumerate(xs) if (i in held) == keep]

    return JobRows(
        pick(prompts, False),
        pick(answers, False),
        pick(prompts, True),
        pick(answers, True),
        True,
        pick(labels, False),
        pick(labels, True),
    )


def step_plan(spec, n_train: int, world: int = 1) -> tuple[int, int, int, int]:
    """(micro-batch, gradient accumulation, optimizer steps per epoch, total steps after local.max_steps) for
    ``n_train`` rows over ``world`` processes."""
    hp, local = spec.hyperparameters, spec.local_settings()
    micro = spec.micro_batch_size()
    if hp.batch_size % (micro * world):
        raise UsageError(
            f"batch_size {hp.batch_size} is not a multiple of micro_batch_size {micro} x {world} "
            "process(es); choose a micro-batch that divides it"
        )
    accum = hp.batch_size // (micro * world)
    per_epoch = max(1, math.ceil(math.ceil(n_train / (micro * world)) / accum))
    total = per_epoch * hp.n_epochs
    return micro, accum, per_epoch, min(total, local.max_steps) if local.max_steps else total


def max_steps_note(max_steps: int, full: int, n_epochs: int) -> str:
    """What to tell the user when local.max_steps is more than the job's n_epochs take (it caps, never extends)."""
    return (
        f"local.max_steps={max_steps} is more than the {full} steps of n_epochs={n_epochs}: max_steps only caps "
        f"training, which stops after {full} steps (raise n_epochs for more)"
    )


def eval_schedule(total_steps: int, n_evals: int, has_validation: bool) -> list[int]:
    """Optimizer steps after which to evaluate: ``n_evals`` evenly spaced, the last at the end of training.

    ``n_evals = 0`` means one evaluation at the end when there is validation data.
    """
    if not has_validation or total_steps <= 0:
        return []
    n = n_evals or 1
    return sorted({max(1, math.ceil(total_steps * k / n)) for k in range(1, n + 1)})


def auto_batching(model) -> str:
    """padding_free where attention runs packed rows without a dense mask (FlashAttention-2 varlen), else padded.

    With SDPA or eager attention a packed micro-batch needs a block-diagonal mask over all its tokens: attention
    then costs (sum of lengths)^2 instead of the sum of squares, and on CPU the mask and the attention weights are
    materialised for every layer (SmolLM2-135M, 8 x 384 tokens: 9.7 GB resident and 1.6x slower than
    length-grouped padding; benchmarks/engine_settings.py).
    """
    impl = getattr(model.config, "_attn_implementation", None) or ""
    return "padding_free" if "flash" in impl else "padded"


def batching_for(model, requested: str) -> str:
    """local.batching, with ``auto`` decided by :func:`auto_batching`."""
    return requested if requested != "auto" else auto_batching(model)
