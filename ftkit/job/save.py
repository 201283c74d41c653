"""Writing a job out: as a JSON job file whose relative data paths stay valid, and as the README's table of
every field (built from the models, so the table and the validation cannot drift)."""

from __future__ import annotations

import os
from pathlib import Path

from ftkit.files import write_json
from ftkit.job.problems import field_rows
from ftkit.job.spec import JobSpec, load_job


def save_job(spec: JobSpec | dict, path: str | os.PathLike) -> Path:
    """Write the job as JSON, atomically; relative dataset paths are rewritten to stay valid from there."""
    spec = spec if isinstance(spec, JobSpec) else load_job(spec)
    path = Path(path)
    body = spec.dump()
    new_base = path.parent.resolve()
    old_base = spec.base_dir.resolve()
    if new_base != old_base:
        for section, key in (("dataset", "id"), ("local", "validation_file")):
            value = body.get(section, {}).get(key)
            if value and not Path(value).expanduser().is_absolute() and (old_base / value).exists():
                body[section][key] = os.path.relpath(old_base / value, new_base)
    return write_json(path, body)


def fields_table() -> str:
    """A markdown table of every job field (name, type, default, allowed, meaning), built from the models."""
    rows = field_rows(JobSpec)
    out = ["| field | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [f"`{r['field']}`", r["type"], r["default"], r["allowed"], r["meaning"]]
        out.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(out)
