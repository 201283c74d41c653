"""PubMedQA-style decision evaluation: predictions in the official format, metrics, base vs tuned comparison.

``evaluate`` reads a prepared CSV (``pmid, prompt, answer, final_decision``), asks a model for a yes/no/maybe
decision per row and writes ``{pmid: decision}`` (the format of the official ``evaluation.py``) plus the
metrics next to it. Metric conventions are those of :mod:`ftkit.results.scores` (scikit-learn's).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ftkit.data.csvread import read_csv
from ftkit.data.labels import DEFAULT_LABEL_COLUMN, LabelReader
from ftkit.data.pubmedqa.official import TRUTH_FILE, fetch
from ftkit.data.pubmedqa.rows import REASON_MARKER
from ftkit.errors import FtkitError, UsageError
from ftkit.files import atomic_path, write_json
from ftkit.results.freetext import TextEvalResult, evaluate_free_text
from ftkit.results.inference import (
    DECISIONS,
    describe_ref,
    generate_texts,
    label_token_ids,
    load_for_inference,
    parse_decision,
    score_labels,
)
from ftkit.results.reasoning import REASON_TOKENS, label_tokens_after, score_after_reasoning
from ftkit.results.scores import UNPARSED, EvalResult, margin_auc

METHODS = ("score", "generate", "reason")
_MAX_LISTED = 30


class EvalDataError(FtkitError, ValueError):
    """An evaluation data file or predictions file with problems; the message lists all of them."""


@dataclass
class EvalRow:
    id: str  # the PMID, or the row number when the file has no pmid column
    prompt: str
    gold: str | None  # the gold label; None for free-text rows (see read_eval_data's free_text)
    row: int  # 1-based data record number
    answer: str = ""  # the reference answer, when the file has an answer column


def _raise(problems: list[str], what: str) -> None:
    if problems:
        listed = problems[:_MAX_LISTED]
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise EvalDataError(f"{what}: {len(problems)} problem(s):\n  " + "\n  ".join(listed) + more)


def read_eval_data(
    path: str | os.PathLike,
    labels=DECISIONS,
    prompt_column: str = "prompt",
    limit: int | None = None,
    label_column: str | None = None,
    answer_column: str = "answer",
    free_text: bool = False,
    marker: str | None = None,
) -> list[EvalRow]:
    """Rows to evaluate: id (``pmid``), prompt, and the gold label from the label column (``label_column``, else
    ``final_decision`` when present) or, where that is missing or empty, from the label word that starts the answer.
    With ``free_text`` a file where no row has a label is read as free-text rows (gold None, the answer kept).
    All problems are reported at once.
    """

    path = Path(path)
    issues: list = []
    table = read_csv(path, str(path), issues)
    problems = [f"{path}{' ' + i.where() if i.where() else ''}: {i.message}" for i in issues if i.severity == "error"]
    if table is None:
        _raise(problems, f"cannot read evaluation data {path}")
    header = table.header
    label_col = label_column or (DEFAULT_LABEL_COLUMN if DEFAULT_LABEL_COLUMN in header else None)
    for col, what in ((prompt_column, "prompt"), (label_column, "label")):
        if col and col not in header:
            problems.append(f"{path}: no {col!r} column for the {what}s (columns: {', '.join(header)})")
    if label_col is None and answer_column not in header:
        problems.append(
            f"{path}: no {DEFAULT_LABEL_COLUMN!r} or {answer_column!r} column to read gold labels from "
            f"(columns: {', '.join(header)})"
        )
    _raise(problems, f"evaluation data {path}")
    reader = LabelReader(labels, marker)
    allowed = ", ".join(reader.labels)
    rows, seen, unlabelled = [], {}, []
    for row, line, fields in table.records:
        rec = dict(zip(header, fields, strict=True))
        where = f"{path} line {line}, row {row}"
        prompt = rec[prompt_column]
        if not prompt.strip():
            problems.append(f"{where}: empty {prompt_column!r}")
        value = rec.get(label_col, "").strip() if label_col else ""
        gold = reader.row_label(value, rec.get(answer_column, ""))
        if value and gold is None:
            problems.append(f"{where}: {label_col} {value!r} is not one of {allowed}")
        elif gold is None:
            unlabelled.append(
                f"{where}: no gold label: {label_col or DEFAULT_LABEL_COLUMN} is empty or missing and "
                f"{answer_column} {rec.get(answer_column, '')[:30]!r} does not start with one of {allowed}"
            )
        rid = rec.get("pmid", "").strip() if "pmid" in header else str(row)
        if not rid:
            problems.append(f"{where}: empty pmid")
        elif rid in seen:
            problems.append(f"{where}: pmid {rid} repeats row {seen[rid]}")
        seen.setdefault(rid, row)
        rows.append(EvalRow(rid, prompt, gold, row, rec.get(answer_column, "")))
    if not (free_text and answer_column in header and len(unlabelled) == len(rows)):
        problems += unlabelled
    _raise(problems, f"evaluation data {path}")
    return _limited(rows, limit)


def _limited(rows: list[EvalRow], limit: int | None) -> list[EvalRow]:
    if limit is not None:
        if limit < 1:
            raise UsageError(f"limit must be >= 1, got {limit}")
        rows = rows[:limit]
    return rows


def metrics_path_for(out: str | os.PathLike) -> Path:
    """``predictions.json`` -> ``predictions.metrics.json`` (beside it)."""
    out = Path(out)
    stem = out.name[: -len(".json")] if out.name.endswith(".json") else out.name
    return out.with_name(f"{stem}.metrics.json")


def _write(result, out):
    if out is not None:
        result.predictions_path = str(write_json(out, result.predictions))
        result.metrics_path = str(metrics_path_for(out))
        write_json(result.metrics_path, result.to_dict())
    return result


def evaluate(
    model_ref,
    data: str | os.PathLike = "test.csv",
    out: str | os.PathLike | None = "predictions.json",
    method: str = "score",
    limit: int | None = None,
    batch_size: int = 8,
    labels=None,
    device: str = "auto",
    jobs_dir: str | os.PathLike | None = None,
    max_new_tokens: int | None = None,
    progress: bool = False,
    loaded=None,
    prompt_column: str = "prompt",
    label_column: str | None = None,
    answer_column: str = "answer",
    marker: str | None = None,
) -> EvalResult | TextEvalResult:
    """Evaluate a model's decisions on a data file; write the predictions and metrics; return an EvalResult.

    A file whose rows carry no label at all (no label column, answers that start with no label word) is evaluated
    as free text instead, unless ``labels`` were given: answer-token loss and exact match
    (a :class:`~ftkit.results.freetext.TextEvalResult`; the predictions file then maps ids to answers).

    Args:
        model_ref: job id or folder, export archive (``.tar.gz``), model reference, or a
            ``(model, tokenizer)`` pair (see :func:`ftkit.results.inference.load_for_inference`).
        data: CSV with ``prompt`` and gold labels in ``final_decision`` (or the first word of ``answer``);
            rows are identified by ``pmid`` (else by row number).
        out: predictions file ``{pmid: label}`` in the official PubMedQA format; metrics go beside it as
            ``<name>.metrics.json``. None writes nothing.
        method: ``"score"``: one forward pass per row, the label whose first token has the highest next-token
            logit after the generation prompt (the token training teaches); ``"generate"``: greedy
            ``max_new_tokens`` tokens (default 8), the first yes/no/maybe word; answers without one are
            ``"unparsed"`` (written as such, counted wrong); ``"reason"``: for models trained to reason first
            (``"<conclusion>\\nAnswer: yes"``), greedy text up to ``marker`` (default ``"Answer:"``; at most
            ``max_new_tokens``, default 128), then the labels' scores right after it
            (:mod:`ftkit.results.reasoning`).
        limit: evaluate only the first ``limit`` rows (the predictions then hold only those).
        batch_size: rows per forward pass (left padded; results do not depend on it beyond float rounding).
        labels: the decision words (default: yes, no, maybe, with the free-text fallback above).
        prompt_column, label_column, answer_column: the data's columns; the gold label is read from
            ``label_column`` (default ``final_decision`` when present), else from the answer's first word.
        device: ``auto`` (CUDA, MPS, CPU), ``cuda``, ``mps`` or ``cpu``.
        jobs_dir: where job ids are looked up (default ``runs/`` or ``$FTKIT_JOBS_DIR``).
        progress: show a progress bar.
    """

    if method not in METHODS:
        raise UsageError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    free_text = labels is None and method != "reason"
    labels = tuple(labels or DECISIONS)
    if method == "reason":
        marker = marker or REASON_MARKER
    max_new_tokens = max_new_tokens or (REASON_TOKENS if method == "reason" else 8)
    rows = read_eval_data(data, labels, prompt_column, limit, label_column, answer_column, free_text, marker)
    model, tok = loaded if loaded is not None else load_for_inference(model_ref, device, jobs_dir)
    prompts = [r.prompt for r in rows]
    if rows and rows[0].gold is None:
        text = evaluate_free_text(
            model, tok, [r.id for r in rows], prompts, [r.answer for r in rows], describe_ref(model_ref), str(data)
        )
        return _write(text, out)
    notes = []
    start = time.perf_counter()
    if method in ("score", "reason"):
        if method == "score":
            preds, logps = score_labels(model, tok, prompts, labels, batch_size, progress)
            reasons, toks = [None] * len(rows), label_token_ids(tok, labels)
        else:
            preds, logps, reasons = score_after_reasoning(
                model, tok, prompts, labels, marker, max_new_tokens, batch_size
            )
            toks = label_tokens_after(tok, labels, marker)
            notes.append(f"decisions read after the generated reasoning and {marker!r}")
        details = [
            {"id": r.id, "gold": r.gold, "pred": p, "logprobs": dict(zip(labels, lp, strict=True))}
            | ({"reasoning": why} if why is not None else {})
            for r, p, lp, why in zip(rows, preds, logps, reasons, strict=True)
        ]
        notes.append("label tokens: " + ", ".join(f"{k}={tok.decode([v])!r} (id {v})" for k, v in toks.items()))
    else:
        texts = generate_texts(model, tok, prompts, max_new_tokens, batch_size, progress)
        preds = [parse_decision(t, labels) or UNPARSED for t in texts]
        details = [
            {"id": r.id, "gold": r.gold, "pred": p, "text": t} for r, p, t in zip(rows, preds, texts, strict=True)
        ]
    seconds = time.perf_counter() - start
    if limit is not None:
        notes.append(f"limited to the first {len(rows)} rows of {data}")
    result = EvalResult.build(
        describe_ref(model_ref),
        str(data),
        method,
        labels,
        [r.id for r in rows],
        [r.gold for r in rows],
        preds,
        seconds=round(seconds, 3),
        notes=notes,
        rows=details,
        auc=margin_auc([r.gold for r in rows], logps, labels) if method != "generate" else None,
    )
    return _write(result, out)


def majority_baseline(data: str | os.PathLike = "test.csv", limit: int | None = None, labels=DECISIONS) -> EvalResult:
    """Predict the most common gold label for every row (on the official test set: "yes", 55.2% accuracy)."""
    rows = read_eval_data(data, labels, limit=limit)
    counts = {label: sum(r.gold == label for r in rows) for label in labels}
    top = max(labels, key=lambda label: counts[label])
    return EvalResult.build(
        f"majority class (always {top})",
        str(data),
        "majority",
        labels,
        [r.id for r in rows],
        [r.gold for r in rows],
        [top] * len(rows),
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def comparison_row(label: str, result: EvalResult) -> dict:
    row = {
        "model": label,
        "method": result.method,
        "n": result.n,
        "accuracy": result.accuracy,
        "macro_f1": result.macro_f1,
    }
    row.update({f"f1_{c}": v["f1"] for c, v in result.per_class.items()})
    row.update({f"share_{c}": result.shares.get(c, 0.0) for c in result.labels})
    row.update({"auc": result.auc, "unparsed": result.unparsed, "collapsed": result.collapsed or ""})
    row["seconds"] = result.seconds
    return row


def compare(
    models,
    data: str | os.PathLike = "test.csv",
    method: str | dict = "score",
    limit: int | None = None,
    batch_size: int = 8,
    out_dir: str | os.PathLike | None = None,
    baseline: bool = True,
    **kwargs,
):
    """Evaluate several models on the same rows, one table row each, plus the majority-class baseline.

    ``models`` is ``{label: ref}`` or a list of refs (labelled by the ref). ``method`` is one method for all, or
    ``{label: method}`` (models not named use ``"score"``): a model trained to reason first is read with
    ``"reason"`` while the base model is scored directly. Returns a pandas DataFrame with accuracy, macro-F1, AUC,
    per-class F1, predicted-label shares, unparsed count, collapsed label and seconds; ``df.attrs["results"]`` maps
    each label to its :class:`EvalResult`. With ``out_dir`` each model's predictions and metrics are written there as
    ``<label>.predictions.json`` and the table as ``comparison.csv``. Other keyword arguments go to :func:`evaluate`.
    """
    import gc

    import pandas as pd

    if not isinstance(models, dict):
        models = {describe_ref(m): m for m in models}
    methods = method if isinstance(method, dict) else dict.fromkeys(models, method)
    read_eval_data(data, kwargs.get("labels") or DECISIONS, limit=limit)  # bad data fails before any model loads
    results: dict[str, EvalResult] = {}
    if baseline:
        base = majority_baseline(data, limit, kwargs.get("labels") or DECISIONS)
        results[base.model] = base
    for label, ref in models.items():
        out = Path(out_dir) / f"{_slug(label)}.predictions.json" if out_dir is not None else None
        results[label] = evaluate(ref, data, out, methods.get(label, "score"), limit, batch_size, **kwargs)
        gc.collect()  # the previous model's weights go before the next one loads
    df = pd.DataFrame([comparison_row(k, r) for k, r in results.items()])
    if out_dir is not None:
        with atomic_path(Path(out_dir) / "comparison.csv") as tmp:
            df.to_csv(tmp, index=False, float_format="%.4f")
    df.attrs["results"] = results
    return df


def score_against_truth(
    predictions_json: str | os.PathLike, test_ground_truth_json: str | os.PathLike | None = None
) -> EvalResult:
    """Score an official predictions file ``{pmid: decision}`` against ``test_ground_truth.json``.

    Like the PubMedQA repository's ``evaluation.py``: the file must predict all and only the ground truth's
    PMIDs; accuracy and macro-F1 follow its sklearn calls (see :mod:`ftkit.results.scores`). The ground truth
    defaults to the official file (cache, shared folder or download). ``"unparsed"`` values (from
    ``method="generate"``) count as wrong; any other value is an error.
    """

    truth_path = Path(test_ground_truth_json) if test_ground_truth_json is not None else fetch(TRUTH_FILE)
    problems = []
    loaded = {}
    for name, p in (("predictions", Path(predictions_json)), ("ground truth", truth_path)):
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            problems.append(f"{name} file {p}: {e}")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{name} file {p}: expected a JSON object {{pmid: decision}}, got {type(obj).__name__}")
            continue
        loaded[name] = obj
    _raise(problems, "cannot score predictions")
    preds, truth = loaded["predictions"], loaded["ground truth"]
    missing = [k for k in truth if k not in preds]
    extra = [k for k in preds if k not in truth]
    if missing:
        problems.append(
            f"{len(missing)} PMIDs of the ground truth have no prediction (first: "
            f"{', '.join(missing[:10])}); predict all and only the test PMIDs"
        )
    if extra:
        problems.append(f"{len(extra)} predicted PMIDs are not in the ground truth (first: {', '.join(extra[:10])})")
    for k, v in preds.items():
        if v not in DECISIONS and v != UNPARSED:
            problems.append(f"PMID {k}: prediction {v!r} is not one of {', '.join(DECISIONS)}")
    _raise(problems, f"predictions file {predictions_json}")
    ids = list(truth)
    return EvalResult.build(
        str(predictions_json),
        str(truth_path),
        "file",
        DECISIONS,
        ids,
        [truth[k] for k in ids],
        [preds[k] for k in ids],
    )
