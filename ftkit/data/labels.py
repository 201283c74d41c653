"""Decision labels of prompt/answer rows: the gold label of each row, for task metrics and evaluation.

A row's label comes from a label column when the data has one (``final_decision`` in PubMedQA's CSVs, or the
column a job or ``ftkit evaluate`` names), else from the label word its answer starts with ("yes. The study
shows ..." is "yes"). Matching is case-insensitive and whole-word; the label is returned as the label set spells it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ftkit.errors import UsageError

PUBMEDQA_LABELS = ("yes", "no", "maybe")
DEFAULT_LABEL_COLUMN = "final_decision"


def check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    """The label set as a tuple: at least two distinct, non-empty words."""
    labels = tuple(str(x).strip() for x in labels)
    if len(labels) < 2 or any(not x for x in labels):
        raise UsageError(f"labels must be at least two non-empty words, got {list(labels)}")
    lowered = [x.lower() for x in labels]
    dup = sorted({x for x in lowered if lowered.count(x) > 1})
    if dup:
        raise UsageError(f"labels must differ (ignoring case); {dup} appear more than once in {list(labels)}")
    return labels


class LabelReader:
    """Reads gold labels of one label set from a label column's value or an answer's first word (or, with a
    ``marker``, the first word after the answer's last marker: "<reasoning>\nAnswer: yes")."""

    def __init__(self, labels: Sequence[str], marker: str | None = None):
        self.labels = check_labels(labels)
        self.marker = marker
        self._canon = {x.lower(): x for x in self.labels}
        self._starts = re.compile(r"\s*(" + "|".join(map(re.escape, self.labels)) + r")\b", re.IGNORECASE)

    def from_value(self, value: str | None) -> str | None:
        """The label a label-column cell names (surrounding space and case ignored), else None."""
        return self._canon.get(str(value or "").strip().lower())

    def from_answer(self, answer: str | None) -> str | None:
        """The label word an answer starts with (after its last marker, with one), else None."""
        answer = answer or ""
        if self.marker:
            if self.marker not in answer:
                return None
            answer = answer.rsplit(self.marker, 1)[1]
        m = self._starts.match(answer)
        return self._canon[m.group(1).lower()] if m else None

    def row_label(self, value: str | None, answer: str | None) -> str | None:
        """The label column's value when it is non-empty, else the answer's first word; None when neither names a
        label (a non-empty column value that is not a label is None too: the caller reports it)."""
        if value is not None and str(value).strip():
            return self.from_value(value)
        return self.from_answer(answer)
