"""The result of :func:`ftkit.datacheck.check_dataset`: every problem found, token statistics, and notes.

Positions are given two ways: ``line`` is the line of the file where the record starts, as an editor shows
it (the header is line 1; a quoted value spanning lines makes later records start further down), and ``row``
is the 1-based number of the data record (row 1 is the first record after the header; pandas index = row - 1;
blank lines are not records).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from html import escape

from ftkit.paths import display_path


@dataclass
class Issue:
    """One problem in one place."""

    severity: str  # "error" (the service would reject the file or train on broken rows) or "warning"
    check: str  # short name of the check, e.g. "empty_answer"
    file: str  # the file as the user named it
    message: str
    line: int | None = None  # line where the record starts; header = line 1
    row: int | None = None  # 1-based data record number (pandas index + 1)
    column: str | None = None
    value: str | None = None  # excerpt of the offending value
    allowed: str | None = None  # what would be accepted

    def where(self) -> str:
        parts = [f"line {self.line}" if self.line else "", f"row {self.row}" if self.row else ""]
        return ", ".join(p for p in parts if p)


@dataclass
class TokenStats:
    """Token counts of one file after the chat template."""

    rows: int
    total: int
    mean: float
    p95: int
    max: int
    over_context: int  # rows longer than the context length
    worst: list[tuple[int, int]] = field(default_factory=list)  # (row, tokens) of the longest rows

    @classmethod
    def from_counts(cls, rows: list[int], counts: list[int], context_length: int | None) -> TokenStats:
        import math

        ordered = sorted(counts)
        n = len(ordered)
        p95 = ordered[max(0, math.ceil(0.95 * n) - 1)] if n else 0
        worst = sorted(zip(rows, counts, strict=True), key=lambda rc: (-rc[1], rc[0]))[:5]
        over = sum(c > context_length for c in counts) if context_length else 0
        return cls(n, sum(counts), sum(counts) / n if n else 0.0, p95, ordered[-1] if n else 0, over, worst)


def excerpt(value: str | None, width: int = 40) -> str | None:
    """A one-line excerpt of a value: newlines shown as ⏎, long values cut with an ellipsis."""
    if value is None:
        return None
    s = value.replace("\r", "").replace("\n", "⏎")
    return s if len(s) <= width else s[: width - 1] + "…"


@dataclass
class DatasetReport:
    """All problems of a training (and validation) CSV. ``ok`` is True when there is no error."""

    files: dict[str, str]  # split ("train", "validation") -> file path
    rows: dict[str, int]  # split -> data rows read
    issues: list[Issue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tokens: dict[str, TokenStats] = field(default_factory=dict)
    model: str | None = None
    context_length: int | None = None

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def to_frame(self):
        """The issues as a pandas DataFrame (one row per issue)."""
        import pandas as pd

        cols = list(Issue.__dataclass_fields__)
        return pd.DataFrame([asdict(i) for i in self.issues], columns=cols)

    def _shown(self, limit: int | None) -> tuple[list[Issue], dict[str, int]]:
        """Issues to display, at most ``limit`` per (file, check); and how many were left out per check."""
        shown, seen, hidden = [], {}, {}
        for i in self.issues:
            k = (i.file, i.check)
            seen[k] = seen.get(k, 0) + 1
            if limit is None or seen[k] <= limit:
                shown.append(i)
            else:
                hidden[f"{i.check} in {i.file}"] = hidden.get(f"{i.check} in {i.file}", 0) + 1
        return shown, hidden

    def headline(self) -> str:
        files = "; ".join(
            f"{s}: {display_path(f)} ({_plural(self.rows[s], 'row')})" if s in self.rows else f"{s}: {f} (not read)"
            for s, f in self.files.items()
        )
        verdict = "OK" if self.ok else "NOT OK"
        counts = f"{_plural(len(self.errors), 'error')}, {_plural(len(self.warnings), 'warning')}"
        return f"Dataset check {verdict}: {counts} — {files}"

    def format(self, limit: int | None = 20) -> str:
        """Text report; at most ``limit`` issues per check and file (None: all)."""
        out = [self.headline()]
        shown, hidden = self._shown(limit)
        if shown:
            head = ["severity", "file", "line", "row", "column", "value", "problem (allowed)"]
            body = [
                [
                    i.severity,
                    i.file,
                    str(i.line or ""),
                    str(i.row or ""),
                    i.column or "",
                    repr(excerpt(i.value, 30)) if i.value is not None else "",
                    i.message + (f" (allowed: {i.allowed})" if i.allowed else ""),
                ]
                for i in shown
            ]
            widths = [max(len(r[c]) for r in [head, *body]) for c in range(len(head) - 1)]
            for r in [head, *body]:
                out.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1])
        for what, n in hidden.items():
            out.append(f"… {n} more of {what} (report.format(limit=None) or `ftkit validate --all` lists them)")
        for note in self.notes:
            out.append(f"note: {note}")
        if self.tokens:
            ctx = f", context length {self.context_length}" if self.context_length else ", context length unknown"
            out.append(f"tokens after the chat template ({self.model}{ctx}):")
            head = [
                "split",
                "rows",
                "total",
                "mean",
                "p95",
                "max",
                "over context",
                "longest rows (row: tokens)",
            ]
            body = [
                [
                    s,
                    str(t.rows),
                    str(t.total),
                    f"{t.mean:.1f}",
                    str(t.p95),
                    str(t.max),
                    str(t.over_context),
                    ", ".join(f"{r}: {c}" for r, c in t.worst),
                ]
                for s, t in self.tokens.items()
            ]
            widths = [max(len(r[c]) for r in [head, *body]) for c in range(len(head))]
            out += [
                "  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)).rstrip() for r in [head, *body]
            ]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return f"<DatasetReport ok={self.ok} errors={len(self.errors)} warnings={len(self.warnings)}>"

    def _repr_html_(self) -> str:
        color = {"error": "#c62828", "warning": "#b26a00"}
        shown, hidden = self._shown(200)
        h = [f"<p><b>{escape(self.headline())}</b></p>"]
        if shown:
            cols = ["severity", "file", "line", "row", "column", "value", "problem", "allowed"]
            h.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>")
            for i in shown:
                cells = [
                    f'<span style="color:{color.get(i.severity, "")}">{i.severity}</span>',
                    escape(i.file),
                    str(i.line or ""),
                    str(i.row or ""),
                    escape(i.column or ""),
                    f"<code>{escape(excerpt(i.value, 60))}</code>" if i.value is not None else "",
                    escape(i.message),
                    escape(i.allowed or ""),
                ]
                h.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            h.append("</table>")
        h += [f"<p>… {n} more of {escape(w)} (see <code>report.to_frame()</code>)</p>" for w, n in hidden.items()]
        h += [f"<p>note: {escape(n)}</p>" for n in self.notes]
        if self.tokens:
            h.append(
                f"<p>Tokens after the chat template ({escape(str(self.model))}, context {self.context_length})</p>"
            )
            h.append(
                "<table><tr><th>split</th><th>rows</th><th>total</th><th>mean</th><th>p95</th><th>max</th>"
                "<th>over context</th></tr>"
            )
            for s, t in self.tokens.items():
                h.append(
                    f"<tr><td>{s}</td><td>{t.rows}</td><td>{t.total}</td><td>{t.mean:.1f}</td><td>{t.p95}</td>"
                    f"<td>{t.max}</td><td>{t.over_context}</td></tr>"
                )
            h.append("</table>")
        return "\n".join(h)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
