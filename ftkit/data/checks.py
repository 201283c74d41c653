"""Check prompt/answer CSV files before training and report every problem at once, with its line and row.

The files follow the fine-tuning service's format: CSV, UTF-8, a header row, an answer column and an optional
prompt column whose names the user chooses. Structure is checked with the :mod:`csv` module rather than
pandas so that an unclosed quote or a row with the wrong number of fields is reported at the line where it
starts.

Severities: errors are problems the service rejects or that break training (unreadable file, missing column,
empty answer, a row longer than the model's context); warnings are suspicious but trainable (duplicate rows,
validation rows also in training, rows far longer than the rest). Validation rows that also appear in training
are a warning: they inflate validation metrics but do not make the data unusable.
"""

from __future__ import annotations

import difflib
import os
import statistics
from pathlib import Path

from ftkit.data.csvread import CsvTable, read_csv
from ftkit.data.report import DatasetReport, Issue, TokenStats, excerpt
from ftkit.data.tokens import count_chat_tokens, tokenizer_for
from ftkit.errors import FtkitError, UsageError

HOLDOUT_FRACTION = 0.01  # the service holds out 1% of training rows (at least one) without a validation file
SKEW_FACTOR = 10  # a row this many times longer than the file's median length is an outlier
SPLIT_SKEW = 3  # validation vs training median length ratio that gets a warning


def holdout_rows(n_train: int) -> int:
    """Rows the service holds out for validation when no validation file is given: 1%, at least 1."""
    return max(1, int(n_train * HOLDOUT_FRACTION))


def check_dataset(
    train: str | os.PathLike,
    validation: str | os.PathLike | None = None,
    prompt_column: str | None = "prompt",
    answer_column: str = "answer",
    tokenizer=None,
    context_length: int | None = None,
) -> DatasetReport:
    """Check a training CSV (and optional validation CSV) and return a :class:`DatasetReport` of all problems.

    Args:
        train, validation: CSV files; without a validation file the service holds out 1% of training rows.
        prompt_column: name of the prompt column; None for answer-only data.
        answer_column: name of the answer column (required).
        tokenizer: a transformers tokenizer, or a model reference (local folder, catalog name, ``"bundled"``);
            adds token statistics after the chat template and flags rows longer than the context length.
        context_length: overrides the model's context length.
    """
    paths = {"train": train} if validation is None else {"train": train, "validation": validation}
    report = DatasetReport(files={s: str(p) for s, p in paths.items()}, rows={})
    tables: dict[str, CsvTable] = {}
    for split, path in paths.items():
        table = read_csv(Path(path), str(path), report.issues)
        if table is None:
            continue
        report.rows[split] = table.n_rows
        if _check_columns(table, prompt_column, answer_column, report.issues):
            tables[split] = table
            _check_values(table, prompt_column, answer_column, report.issues)

    if prompt_column is None:
        report.notes.append("no prompt column: each row trains the assistant turn alone (answer-only data)")
    if validation is None and "train" in report.rows:
        n = report.rows["train"]
        report.notes.append(
            f"no validation file: the service holds out 1% of the training rows (at least 1) for validation: "
            f"{holdout_rows(n)} of {n}"
        )
        if n < 2:
            report.issues.append(
                Issue(
                    "error",
                    "too_few_rows",
                    str(train),
                    f"{n} data rows: nothing left to train on after holding one out",
                    allowed="at least 2 rows, or a validation file",
                )
            )
    if "train" in tables and "validation" in tables:
        _check_leakage(tables["train"], tables["validation"], prompt_column, answer_column, report.issues)

    lengths: dict[str, list[int]] = {}
    unit = "characters"
    if tokenizer is not None:
        try:
            tok, ctx, report.model = tokenizer_for(tokenizer)
        except FtkitError as e:  # the model or its tokenizer cannot be loaded: an argument to fix
            raise UsageError(str(e)) from e
        report.context_length = context_length or ctx
        if report.context_length is None:
            report.notes.append("the model's context length is unknown: pass context_length to check row lengths")
        unit = "tokens"
        for split, t in tables.items():
            prompts = None if prompt_column is None else [t.value(r, prompt_column) for r in t.records]
            counts = count_chat_tokens(tok, prompts, [t.value(r, answer_column) for r in t.records])
            lengths[split] = counts
            report.tokens[split] = TokenStats.from_counts([r[0] for r in t.records], counts, report.context_length)
            _check_context(t, counts, report.context_length, report.model, report.issues)
    else:
        for split, t in tables.items():
            cols = [c for c in (prompt_column, answer_column) if c is not None]
            lengths[split] = [sum(len(t.value(r, c)) for c in cols) for r in t.records]
    _check_skew(tables, lengths, unit, report.issues)
    # file by file, in file order: problems of the whole file first, then by line
    order = {str(p): i for i, p in enumerate(paths.values())}
    report.issues.sort(key=lambda i: (order.get(i.file, 0), i.line or 0, i.row or 0))
    return report


def _check_columns(table: CsvTable, prompt_column: str | None, answer_column: str, issues: list[Issue]) -> bool:
    ok = True
    for role, col in (("answer", answer_column), ("prompt", prompt_column)):
        if col is None or col in table.header:
            continue
        ok = False
        near = [h for h in table.header if h.strip().lower() == col.strip().lower()]
        near += [h for h in difflib.get_close_matches(col, table.header, n=3, cutoff=0.6) if h not in near]
        hint = f"; did you mean {' or '.join(map(repr, near))}?" if near else ""
        extra = " (or no prompt column, for answer-only data)" if role == "prompt" else ""
        issues.append(
            Issue(
                "error",
                "missing_column",
                table.name,
                f"no {role} column {col!r}{hint}",
                line=1,
                column=col,
                allowed=f"a column of the header{extra}: {', '.join(map(repr, table.header))}",
            )
        )
    return ok


def _check_values(table: CsvTable, prompt_column: str | None, answer_column: str, issues: list[Issue]) -> None:
    first: dict[tuple[str, ...], tuple[int, int]] = {}
    for row, line, fields in table.records:
        for role, col in (("answer", answer_column), ("prompt", prompt_column)):
            if col is not None and not fields[table.header.index(col)].strip():
                value = fields[table.header.index(col)]
                issues.append(
                    Issue(
                        "error",
                        f"empty_{role}",
                        table.name,
                        f"empty {role}" + (" (only whitespace)" if value else ""),
                        line=line,
                        row=row,
                        column=col,
                        value=value,
                        allowed=f"non-blank {role} text",
                    )
                )
        key = tuple(fields)
        if key in first:
            r, ln = first[key]
            issues.append(
                Issue(
                    "warning",
                    "duplicate_row",
                    table.name,
                    f"same as row {r} (line {ln})",
                    line=line,
                    row=row,
                    value=excerpt(",".join(fields)),
                    allowed="each row once",
                )
            )
        else:
            first[key] = (row, line)


def _check_leakage(train: CsvTable, val: CsvTable, prompt_column: str | None, answer_column: str, issues: list[Issue]):
    cols = [c for c in (prompt_column, answer_column) if c is not None]
    seen: dict[tuple[str, ...], tuple[int, int]] = {}
    for rec in train.records:
        seen.setdefault(tuple(train.value(rec, c) for c in cols), (rec[0], rec[1]))
    for rec in val.records:
        hit = seen.get(tuple(val.value(rec, c) for c in cols))
        if hit:
            issues.append(
                Issue(
                    "warning",
                    "in_training",
                    val.name,
                    f"the same {' and '.join(cols)} is in the training file at row {hit[0]} (line {hit[1]}): "
                    "validation metrics on it are optimistic",
                    line=rec[1],
                    row=rec[0],
                    value=excerpt(val.value(rec, cols[0])),
                    allowed="validation rows not in training",
                )
            )


def _check_context(t: CsvTable, counts: list[int], ctx: int | None, model, issues: list[Issue]) -> None:
    if not ctx:
        return
    for (row, line, _), n in zip(t.records, counts, strict=True):
        if n > ctx:
            issues.append(
                Issue(
                    "error",
                    "too_long",
                    t.name,
                    f"{n} tokens after the chat template, more than the context length {ctx} of {model}",
                    line=line,
                    row=row,
                    allowed=f"at most {ctx} tokens",
                )
            )


def _check_skew(tables: dict[str, CsvTable], lengths: dict[str, list[int]], unit: str, issues: list[Issue]) -> None:
    medians = {}
    for split, t in tables.items():
        ls = lengths.get(split) or []
        if len(ls) < 2:
            continue
        med = medians[split] = statistics.median(ls)
        outliers = sorted(
            ((n, rec) for n, rec in zip(ls, t.records, strict=True) if n > SKEW_FACTOR * max(med, 1)),
            key=lambda x: (-x[0], x[1][0]),
        )
        if outliers:
            n, (row, line, _) = outliers[0]
            worst = ", ".join(f"row {r[0]}: {k}" for k, r in outliers[:5])
            issues.append(
                Issue(
                    "warning",
                    "length_skew",
                    t.name,
                    f"{len(outliers)} rows are over {SKEW_FACTOR}× the "
                    f"median length ({med:g} {unit}); longest {worst}. They dominate memory and padding: "
                    "check they are not merged or corrupt rows",
                    line=line,
                    row=row,
                    allowed=f"rows of similar length (up to {SKEW_FACTOR}× the median)",
                )
            )
    if len(medians) == 2 and min(medians.values()) > 0:
        ratio = medians["validation"] / medians["train"]
        if ratio >= SPLIT_SKEW or ratio <= 1 / SPLIT_SKEW:
            issues.append(
                Issue(
                    "warning",
                    "length_skew",
                    tables["validation"].name,
                    f"validation rows have a median length of {medians['validation']:g} {unit}, training "
                    f"rows {medians['train']:g}: the files look like different data",
                    allowed=f"validation rows like the training rows (within {SPLIT_SKEW}×)",
                )
            )
