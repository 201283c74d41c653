"""Metrics of decision labels (accuracy, macro-F1, per class, confusion) and :class:`EvalResult`.

Computed in plain Python with scikit-learn's conventions, so the numbers equal the official PubMedQA
``evaluation.py`` (``accuracy_score`` and ``f1_score(average="macro")``) on files it accepts:

- precision of a class never predicted and recall of a class with no support are 0 (``zero_division=0``);
  F1 is ``2·tp / (2·tp + fp + fn)``, 0 when that is 0/0;
- macro-F1 averages over the labels that occur in the gold labels or in the predictions; a label
  with neither (e.g. no "maybe" in a small subset, never predicted) is left out of the average, as
  sklearn does when it is not given an explicit label list. A predicted label with no support counts,
  with F1 0.
- a generated answer with no decision word is ``"unparsed"``: it is a wrong prediction (it lowers
  recall of its gold class) but not a class of its own, so it is not averaged into macro-F1 (the
  official script would count it as a fourth class).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from html import escape

from ftkit.errors import UsageError

UNPARSED = "unparsed"
COLLAPSE_SHARE = 0.9  # one label taking this share of predictions means the model ignores the input


def classification_metrics(gold: list[str], pred: list[str], labels: tuple[str, ...]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, confusion, predicted shares, collapse."""
    if len(gold) != len(pred):
        raise UsageError(f"{len(gold)} gold labels but {len(pred)} predictions")
    n = len(gold)
    per_class = {}
    for c in labels:
        tp = sum(g == c and p == c for g, p in zip(gold, pred, strict=True))
        n_pred = sum(p == c for p in pred)
        support = sum(g == c for g in gold)
        fp, fn = n_pred - tp, support - tp
        per_class[c] = {
            "precision": tp / n_pred if n_pred else 0.0,
            "recall": tp / support if support else 0.0,
            "f1": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0,
            "support": support,
            "predicted": n_pred,
        }
    averaged = [c for c in labels if per_class[c]["support"] or per_class[c]["predicted"]]
    columns = list(labels) + ([UNPARSED] if UNPARSED in pred else [])
    confusion = {g: {p: 0 for p in columns} for g in labels}
    for g, p in zip(gold, pred, strict=True):
        confusion[g][p] += 1
    shares = {c: (sum(p == c for p in pred) / n if n else 0.0) for c in columns}
    top = max(labels, key=lambda c: shares[c]) if n else None
    return {
        "n": n,
        "accuracy": sum(g == p for g, p in zip(gold, pred, strict=True)) / n if n else 0.0,
        "macro_f1": sum(per_class[c]["f1"] for c in averaged) / len(averaged) if averaged else 0.0,
        "macro_over": averaged,
        "per_class": per_class,
        "confusion": confusion,
        "shares": shares,
        "unparsed": sum(p == UNPARSED for p in pred),
        "collapsed": top if top is not None and shares[top] >= COLLAPSE_SHARE else None,
    }


def margin_auc(gold: list[str], logprobs: list[list[float]], labels: tuple[str, ...]) -> float | None:
    """How well the score margin log P(labels[0]) - log P(labels[1]) ranks gold labels[0] rows above gold
    labels[1] rows (PubMedQA: yes above no): the area under the ROC curve, ties counting half. 0.5 is chance.

    Unlike accuracy it cannot be raised by shifting every score the same way (a calibration, or a model that
    learned only the label prior). None when either label has no gold rows.
    """
    if len(labels) < 2:
        return None
    pos = [lp[0] - lp[1] for g, lp in zip(gold, logprobs, strict=True) if g == labels[0]]
    neg = [lp[0] - lp[1] for g, lp in zip(gold, logprobs, strict=True) if g == labels[1]]
    if not pos or not neg:
        return None
    # rank statistic (Mann-Whitney U) over the sorted pooled margins, ties given their average rank
    pooled = sorted([(m, 1) for m in pos] + [(m, 0) for m in neg])
    rank_sum, i = 0.0, 0
    while i < len(pooled):
        j = i
        while j < len(pooled) and pooled[j][0] == pooled[i][0]:
            j += 1
        avg_rank = (i + 1 + j) / 2
        rank_sum += avg_rank * sum(flag for _, flag in pooled[i:j])
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


@dataclass
class EvalResult:
    """One model's decisions on one data file, with metrics. ``str()`` gives text tables, notebooks HTML."""

    model: str  # the model reference as given
    data: str  # the data file
    method: str  # "score" (one forward pass, label-token argmax), "generate" (parse the answer) or "file"
    labels: tuple[str, ...]
    predictions: dict[str, str]  # id (PMID) -> predicted label, in data order; the official predictions format
    gold: dict[str, str]  # id -> gold label
    n: int
    accuracy: float
    macro_f1: float
    macro_over: list[str]  # the labels averaged into macro-F1 (present in gold or predictions)
    per_class: dict[str, dict]  # label -> precision, recall, f1, support, predicted
    confusion: dict[str, dict[str, int]]  # gold label -> predicted label -> count
    shares: dict[str, float]  # predicted label -> share of rows
    unparsed: int  # generated answers without a decision word
    collapsed: str | None  # the label taking >= 90% of predictions, else None
    seconds: float = 0.0  # model loading excluded
    auc: float | None = None  # score margin AUC of labels[0] vs labels[1] (see margin_auc); scoring method only
    predictions_path: str | None = None
    metrics_path: str | None = None
    notes: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # per row: id, gold, pred (+ label log-probs or generated text)

    @classmethod
    def build(cls, model, data, method, labels, ids, gold, pred, **extra) -> EvalResult:
        m = classification_metrics(gold, pred, tuple(labels))
        return cls(
            model=model,
            data=data,
            method=method,
            labels=tuple(labels),
            predictions=dict(zip(ids, pred, strict=True)),
            gold=dict(zip(ids, gold, strict=True)),
            **m,
            **extra,
        )

    @property
    def warnings(self) -> list[str]:
        out = []
        if self.collapsed is not None:
            out.append(
                f"WARNING: predictions collapsed: {self.collapsed!r} is {self.shares[self.collapsed]:.0%} of "
                f"predictions (>= {COLLAPSE_SHARE:.0%}); the model is not reading the question "
                f"(accuracy equals the share of {self.collapsed!r} in the data)"
            )
        if self.unparsed:
            out.append(
                f"WARNING: {self.unparsed} of {self.n} generated answers have no yes/no/maybe word "
                f"(counted as wrong, shown as {UNPARSED!r})"
            )
        return out

    def per_class_table(self):
        """pandas DataFrame: precision, recall, f1, support, predicted per label."""
        import pandas as pd

        return pd.DataFrame(self.per_class).T.astype({"support": int, "predicted": int})

    def confusion_table(self):
        """pandas DataFrame of counts: rows are gold labels, columns predicted labels."""
        import pandas as pd

        df = pd.DataFrame(self.confusion).T
        df.index.name, df.columns.name = "gold", "predicted"
        return df

    def to_dict(self, with_rows: bool = True) -> dict:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["warnings"] = self.warnings
        d.pop("predictions")
        d.pop("gold")
        if not with_rows:
            d.pop("rows")
        return d

    def _tables(self) -> tuple[list[list[str]], list[list[str]]]:
        cls_rows = [["class", "precision", "recall", "f1", "support", "predicted"]]
        for c, v in self.per_class.items():
            cls_rows.append(
                [
                    c,
                    f"{v['precision']:.3f}",
                    f"{v['recall']:.3f}",
                    f"{v['f1']:.3f}",
                    str(v["support"]),
                    f"{v['predicted']} ({self.shares.get(c, 0):.1%})",
                ]
            )
        cols = list(next(iter(self.confusion.values())))
        conf_rows = [["gold \\ predicted", *cols]] + [
            [g, *(str(r[c]) for c in cols)] for g, r in self.confusion.items()
        ]
        return cls_rows, conf_rows

    def headline(self) -> str:
        auc = f"  AUC {self.labels[0]}-vs-{self.labels[1]} {self.auc:.3f}" if self.auc is not None else ""
        return (
            f"accuracy {self.accuracy:.3f}  macro-F1 {self.macro_f1:.3f} "
            f"(over {', '.join(self.macro_over)}){auc}  "
            f"N={self.n}"
        )

    def __str__(self) -> str:
        cls_rows, conf_rows = self._tables()
        shares = ", ".join(f"{k} {v:.1%}" for k, v in self.shares.items())
        lines = [
            f"{self.model} on {self.data} (method {self.method}, {self.seconds:.1f} s)",
            self.headline(),
            "",
            *_text_table(cls_rows),
            "",
            *_text_table(conf_rows),
            "",
            f"predicted shares: {shares}",
        ]
        lines += self.warnings + self.notes
        if self.predictions_path:
            lines.append(
                f"predictions: {self.predictions_path}"
                + (f"  metrics: {self.metrics_path}" if self.metrics_path else "")
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        scores = f"accuracy={self.accuracy:.3f}, macro_f1={self.macro_f1:.3f}"
        return f"EvalResult({self.model!r}, {scores}, n={self.n})"

    def _repr_html_(self) -> str:
        cls_rows, conf_rows = self._tables()
        warn = "".join(f"<p style='color:#b00020;font-weight:bold'>{escape(w)}</p>" for w in self.warnings)
        notes = "".join(f"<p>{escape(n)}</p>" for n in self.notes)
        return (
            f"<div><p><b>{escape(self.model)}</b> on {escape(self.data)} (method {self.method}, "
            f"{self.seconds:.1f} s)<br>{escape(self.headline())}</p>{warn}"
            f"<div style='display:flex;gap:2em'>{_html_table(cls_rows)}{_html_table(conf_rows)}</div>"
            f"{notes}</div>"
        )


def _text_table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
