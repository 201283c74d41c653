"""A prepared dataset on disk: one CSV per split plus ``manifest.json``, written all at once.

CSVs are UTF-8 with ``\\n`` line ends and minimal quoting, so the same rows always give the same bytes.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ftkit.files import atomic_dir
from ftkit.paths import display_path
from ftkit.version import __version__


@dataclass
class PreparedDataset:
    """A prepared dataset folder: one CSV per split plus ``manifest.json``."""

    out: Path
    files: dict[str, Path]  # split name -> CSV path
    counts: dict[str, dict[str, int]]  # split name -> label -> rows
    manifest: dict = field(repr=False, default_factory=dict)
    label_order: tuple[str, ...] = ()  # labels shown first, in this order

    @property
    def train(self) -> Path:
        return self.files["train"]

    @property
    def validation(self) -> Path | None:
        return self.files.get("validation")

    @property
    def test(self) -> Path | None:
        return self.files.get("test")

    def _labels(self) -> list[str]:
        seen = {k for c in self.counts.values() for k in c}
        return [d for d in self.label_order if d in seen] + sorted(seen - set(self.label_order))

    def summary(self) -> str:
        """Rows per split and label as a text table."""
        labels = self._labels()
        head = ["split", "rows", *labels, "file"]
        body = [
            [s, str(sum(c.values())), *(str(c.get(k, 0)) for k in labels), display_path(self.files[s])]
            for s, c in self.counts.items()
        ]
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) for r in [head, *body])

    def __repr__(self) -> str:
        return f"PreparedDataset({display_path(self.out)!r})\n{self.summary()}"

    def _repr_html_(self) -> str:
        from html import escape

        labels = self._labels()
        head = "".join(f"<th>{escape(h)}</th>" for h in ["split", "rows", *labels, "file"])
        rows = "".join(
            f"<tr><td>{escape(s)}</td><td>{sum(c.values())}</td>"
            + "".join(f"<td>{c.get(k, 0)}</td>" for k in labels)
            + f"<td><code>{escape(self.files[s].name)}</code></td></tr>"
            for s, c in self.counts.items()
        )
        name = escape(str(self.manifest.get("dataset", "Dataset")))
        return f"<b>{name}</b> in <code>{escape(display_path(self.out))}</code><table><tr>{head}</tr>{rows}</table>"


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    """UTF-8, comma-separated, ``\\n`` line ends, minimal quoting: the same rows give the same bytes."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def write_prepared(
    out: str | os.PathLike,
    splits: dict[str, list[dict]],
    columns: tuple[str, ...],
    manifest: dict,
    label_column: str | None = None,
    label_order: tuple[str, ...] = (),
) -> PreparedDataset:
    """Write ``<split>.csv`` files and ``manifest.json`` into ``out`` at once (nothing partial on failure).

    ``label_column`` names the column whose values are counted per split (None: rows are counted as
    "unlabelled"); the manifest gets ftkit's name and version, the columns and those counts.
    """
    out = Path(out)
    counts = {
        name: _count([r.get(label_column, "") if label_column else "" for r in rows], label_order)
        for name, rows in splits.items()
    }
    manifest = {
        "created_by": "ftkit",
        "ftkit_version": __version__,
        **manifest,
        "columns": list(columns),
        "splits": {
            name: {"file": f"{name}.csv", "rows": len(rows), "labels": counts[name]} for name, rows in splits.items()
        },
    }
    with atomic_dir(out) as tmp:
        for name, rows in splits.items():
            write_csv(tmp / f"{name}.csv", columns, rows)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return PreparedDataset(out, {n: out / f"{n}.csv" for n in splits}, counts, manifest, label_order)


def _count(labels: list[str], order: tuple[str, ...]) -> dict[str, int]:
    out = {d: 0 for d in order if d in labels}
    for x in labels:
        out[x or "unlabelled"] = out.get(x or "unlabelled", 0) + 1
    return out
