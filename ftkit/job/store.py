"""The job store: one folder per job under a jobs directory (default ``runs/``).

A job folder holds ``job.json`` (spec, status, timestamps, error, device, versions, data hashes; replaced atomically),
``metrics.jsonl`` (one JSON line per logged step with :data:`METRIC_FIELDS`, flushed as written), ``job.log``,
``checkpoints/`` (Trainer checkpoints for resume), ``best/`` (lowest eval_loss so far) and ``model/`` (the job's
result: LoRA adapter or full model, with the tokenizer). Status moves queued -> running -> completed | failed |
cancelled, as on the service.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ftkit.errors import FtkitError
from ftkit.files import write_json, write_text
from ftkit.paths import display_path

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
DEFAULT_JOBS_DIR = "runs"
CANCEL_FILE = "CANCEL"
# The fields of every metrics.jsonl record, in column order (a field a record does not have is null).
METRIC_FIELDS = (
    "step",
    "epoch",
    "train_loss",
    "eval_loss",
    "perplexity",
    "learning_rate",
    "grad_norm",
    "tokens_seen",
    "trained_tokens",
    "tokens_per_second",
    "elapsed",
)


class JobError(FtkitError, RuntimeError):
    """A job that cannot be found, run, resumed or changed as asked; or one that failed or was cancelled."""


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def job_id_for(name: str) -> str:
    """A job's id is its name made filesystem-safe: re-running a spec with the same name resumes that job."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.").lower()
    if not slug:
        raise JobError(f"job name {name!r} has no letters or digits to build a job id from")
    return slug[:80]


def jobs_dir(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("FTKIT_JOBS_DIR", DEFAULT_JOBS_DIR))


@dataclass
class Job:
    """A handle on one job folder. Read fields with ``job.record``; change them with :meth:`update`."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def record(self) -> dict:
        try:
            return json.loads((self.path / "job.json").read_text())
        except FileNotFoundError:
            raise JobError(f"no job at {self.path} (job.json missing)") from None

    @property
    def status(self) -> str:
        return self.record["status"]

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    def update(self, **fields) -> dict:
        rec = self.record if (self.path / "job.json").exists() else {}
        rec.update(fields)
        rec["updated_at"] = now()
        write_json(self.path / "job.json", rec)
        return rec

    def log(self, message: str, echo: bool = True) -> None:
        """Append a line to job.log (and print it): device and precision choices, truncation, resume decisions."""
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        with open(self.path / "job.log", "a", encoding="utf-8") as f:
            f.write(line + "\n")
        if echo:
            print(f"ftkit: {message}", flush=True)

    def metrics(self) -> list[dict]:
        return read_metrics(self.metrics_path)

    def is_alive(self) -> bool:
        """Whether the process recorded as running this job still exists (on this host)."""
        rec = self.record
        pid, host = rec.get("pid"), rec.get("host")
        if rec.get("status") != "running" or not pid or host != socket.gethostname():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def __repr__(self) -> str:
        return f"Job({self.id!r}, status={self.status!r})"

    def _repr_html_(self) -> str:
        """Notebooks show a job as a small table: status, model, last step and losses, its folder."""
        from html import escape

        rec, last = self.record, {}
        for m in self.metrics():
            last.update({k: v for k, v in m.items() if v is not None})
        rows = {
            "status": rec.get("status"),
            "model": rec.get("spec", {}).get("base_model_id"),
            "step": last.get("step"),
            "train_loss": last.get("train_loss"),
            "eval_loss": last.get("eval_loss"),
            "folder": display_path(self.path),
        }
        cells = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>"
            f"{escape(f'{v:.4g}' if isinstance(v, float) else str(v))}</td></tr>"
            for k, v in rows.items()
            if v is not None
        )
        return f"<b>Job {escape(self.id)}</b><table>{cells}</table>"


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Metric records of a job; a torn last line (a killed writer) is skipped."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return rows


def truncate_metrics(path: Path, after_step: int) -> int:
    """Drop records past ``after_step`` (logged after the checkpoint we resume from; training re-logs them)."""
    rows = read_metrics(path)
    keep = [r for r in rows if r.get("step", 0) <= after_step]
    write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
    return len(rows) - len(keep)


def get_job(job_id: str, root: str | os.PathLike | None = None) -> Job:
    """A job by id, or by the path of its folder."""
    p = Path(job_id)
    if (p / "job.json").is_file():
        return Job(p)
    job = Job(jobs_dir(root) / job_id)
    if not (job.path / "job.json").is_file():
        known = [j.id for j in list_jobs(root)]
        hint = difflib.get_close_matches(job_id, known, n=3)
        raise JobError(
            f"no job {job_id!r} in {jobs_dir(root)}"
            + (f"; did you mean {', '.join(hint)}?" if hint else f"; jobs there: {', '.join(known) or 'none'}")
        )
    return job


def list_jobs(root: str | os.PathLike | None = None, status: str | None = None) -> list[Job]:
    """Jobs under the jobs directory, oldest first, optionally only those with ``status``."""
    if status is not None and status not in STATUSES:
        raise JobError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    d = jobs_dir(root)
    jobs = [Job(p.parent) for p in d.glob("*/job.json")] if d.is_dir() else []
    jobs.sort(key=lambda j: (j.record.get("created_at", ""), j.id))
    return [j for j in jobs if status is None or j.status == status]


def jobs_table(root: str | os.PathLike | None = None, status: str | None = None):
    """A pandas DataFrame of jobs: id, name, status, model, step, last train/eval loss, created."""
    import pandas as pd

    rows = []
    for j in list_jobs(root, status):
        rec = j.record
        last = {}
        for m in j.metrics():
            last.update({k: v for k, v in m.items() if v is not None})
        rows.append(
            {
                "id": j.id,
                "name": rec.get("name"),
                "status": rec.get("status"),
                "model": rec.get("spec", {}).get("base_model_id"),
                "step": last.get("step"),
                "train_loss": last.get("train_loss"),
                "eval_loss": last.get("eval_loss"),
                "created_at": rec.get("created_at"),
            }
        )
    return pd.DataFrame(
        rows, columns=["id", "name", "status", "model", "step", "train_loss", "eval_loss", "created_at"]
    )


def cancel(job_id: str, root: str | os.PathLike | None = None) -> Job:
    """Ask a running job to stop: it saves a checkpoint at the end of the current step and ends ``cancelled``.

    Works through a CANCEL file the training loop polls (any rank, any host sharing the folder) and a SIGTERM to the
    recorded process when it runs on this host.
    """
    job = get_job(job_id, root)
    status = job.status
    if status in ("completed", "failed", "cancelled"):
        raise JobError(f"job {job.id!r} is already {status}")
    (job.path / CANCEL_FILE).write_text(now() + "\n")
    if job.is_alive():
        os.kill(job.record["pid"], signal.SIGTERM)
    elif status == "queued":
        job.update(status="cancelled", finished_at=now())
    return job
