"""Task metrics during training: at every evaluation, score the validation rows' decision labels the way
``ftkit evaluate`` does and record accuracy, macro-F1, the yes-vs-no AUC and the predicted-label shares.

Falling eval loss does not mean a classifier got better: a model can learn the label prior (every answer "yes")
and lower its loss while ignoring the input. These metrics show that, and ``local.best_metric`` can pick the
checkpoint by them. The rows' labels come from :mod:`ftkit.data.labels` (a label column, else the answer's first
word); the task is on when every validation row has one (``local.labels`` null = auto) or when labels are given.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftkit.data.labels import PUBMEDQA_LABELS, LabelReader
from ftkit.errors import FtkitError
from ftkit.results.inference import argmax_labels, contexts, label_token_ids, next_token_logprobs
from ftkit.results.reasoning import REASON_TOKENS, label_tokens_after, score_after_reasoning
from ftkit.results.scores import classification_metrics, margin_auc


class TaskLabelsError(FtkitError, ValueError):
    """Labels were asked for (local.labels or a task best_metric) but rows do not carry them."""


@dataclass
class Task:
    """A decision task: the label set and the gold label of every training and validation row."""

    labels: tuple[str, ...]
    train_gold: list[str | None]
    validation_gold: list[str]
    source: str  # where the labels were read, for the job log
    marker: str | None = None  # the label follows this text in an answer that reasons first (local.label_marker)


def _golds(reader: LabelReader, values, answers) -> list[str | None]:
    values = values if values is not None else [None] * len(answers)
    return [reader.row_label(v, a) for v, a in zip(values, answers, strict=True)]


def decision_task(spec, rows) -> tuple[Task | None, str]:
    """The job's task (or None) and one line for the job log saying which and why.

    ``rows`` is the job's :class:`~ftkit.train.plan.JobRows`. Auto mode (``local.labels`` null) turns the task on
    only when every validation row has a PubMedQA label; explicit labels, or a task ``best_metric``, make
    unlabelled validation rows an error that names them.
    """
    local = spec.local
    if local.labels == []:
        return None, "task metrics off (local.labels is [])"
    explicit = bool(local.labels) or local.best_metric != "eval_loss" or local.class_weights != "none"
    reader = LabelReader(local.labels or PUBMEDQA_LABELS, local.label_marker)
    source = (
        f"column {local.label_column or 'final_decision'}"
        if rows.validation_label_values is not None
        else "the answers' first words"
    )
    if not rows.validation_answers:
        if explicit:
            raise TaskLabelsError("task metrics need validation rows, and this job has none")
        return None, "task metrics off: no validation rows"
    gold = _golds(reader, rows.validation_label_values, rows.validation_answers)
    missing = [i + 1 for i, g in enumerate(gold) if g is None]
    if missing:
        why = (
            f"{len(missing)} of {len(gold)} validation rows (first: {missing[:5]}) have no label from "
            f"{list(reader.labels)} in {source}"
        )
        if explicit:
            raise TaskLabelsError(
                f"{why}; local.labels, a task best_metric and class_weights need a label on every validation row "
                "(set local.label_column, or start each answer with its label)"
            )
        return None, f"task metrics off: {why}"
    task = Task(reader.labels, _golds(reader, rows.label_values, rows.answers), gold, source, local.label_marker)
    after = f", decided after generating up to {task.marker!r}" if task.marker else ""
    return task, f"task metrics on: labels {list(task.labels)} from {source}{after}"


class TaskScorer:
    """Scores the validation prompts' labels with a model as ``ftkit evaluate`` does: one forward pass per row, or
    generation up to the label marker and the labels' scores after it."""

    def __init__(self, task: Task, tokenizer, prompts: list[str] | None, batch_size: int = 8):
        self.task = task
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.prompts = prompts or [None] * len(task.validation_gold)
        if task.marker:  # fails here, before training, when the labels cannot be told apart after the marker
            label_tokens_after(tokenizer, task.labels, task.marker)
        else:
            self.token_ids = [label_token_ids(tokenizer, task.labels)[x] for x in task.labels]
            self.contexts = contexts(tokenizer, self.prompts, task.labels[0])

    def _logprobs(self, model) -> list[list[float]]:
        if self.task.marker:
            args = (model, self.tokenizer, self.prompts, self.task.labels, self.task.marker)
            return score_after_reasoning(*args, max_new_tokens=REASON_TOKENS, batch_size=self.batch_size)[1]
        return next_token_logprobs(model, self.tokenizer, self.contexts, self.token_ids, self.batch_size)

    def __call__(self, model) -> dict:
        """The ``eval_*`` task fields of an eval record (see ftkit.job.store.METRIC_FIELDS) for ``model`` now."""
        was_training = model.training
        model.eval()
        try:
            logps = self._logprobs(model)
        finally:
            model.train(was_training)
        labels = self.task.labels
        m = classification_metrics(self.task.validation_gold, argmax_labels(logps, labels), labels)
        return {
            "eval_accuracy": m["accuracy"],
            "eval_macro_f1": m["macro_f1"],
            "eval_auc": margin_auc(self.task.validation_gold, logps, labels),
            "eval_label_shares": {x: round(m["shares"][x], 4) for x in labels},
            "eval_collapsed": m["collapsed"],
        }


def balanced_weights(task: Task) -> list[float]:
    """Per training row: rows / (labels x rows with its label), so each label weighs the same in total.

    Raises :class:`TaskLabelsError` naming the training rows that have no label."""
    missing = [i + 1 for i, g in enumerate(task.train_gold) if g is None]
    if missing:
        raise TaskLabelsError(
            f"class_weights balanced needs a label on every training row; {len(missing)} have none "
            f"(first: {missing[:5]}) in {task.source}"
        )
    counts = {x: task.train_gold.count(x) for x in task.labels}
    present = [x for x in task.labels if counts[x]]
    return [len(task.train_gold) / (len(present) * counts[g]) for g in task.train_gold]
