"""The job store: one folder per job under a jobs directory (default ``runs/``).

A job folder holds ``job.json`` (spec, status, timestamps, error, device, versions, data hashes; replaced atomically),
``metrics.jsonl`` (one JSON line per logged step with :data:`METRIC_FIELDS`, flushed as written), ``job.log``,
``checkpoints/`` (Trainer checkpoints for resume), ``best/`` (lowest eval_loss so far) and ``model/`` (the job's
result: LoRA adapter or full model, with the tokenizer). Status moves queued -> running -> completed | failed |
cancelled, as on the service.

A process killed outright (``kill -9``, out-of-memory killer, power loss) cannot record that it stopped, so job.json
keeps saying ``running``. Every reader therefore goes through :attr:`Job.status`, which reports such a job as
``failed`` with :data:`INTERRUPTED` when the recorded process (pid and start time, on this host) is gone; the file
itself is left alone, and running the job again resumes it from its last checkpoint.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import signal
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psutil

from ftkit.errors import FtkitError
from ftkit.files import write_json, write_text
from ftkit.job.spec import load_job
from ftkit.paths import display_path

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
DEFAULT_JOBS_DIR = "runs"
CANCEL_FILE = "CANCEL"
JOB_FILE_SUFFIXES = (".json", ".yaml", ".yml")
INTERRUPTED = "the training process ended without finishing (killed?); run the job again to resume"
# The fields of every metrics.jsonl record, in column order (a field a record does not have is null).
METRIC_FIELDS = (
    "step",
    "epoch",
    "train_loss",
    "eval_loss",
    "perplexity",
    "eval_accuracy",
    "eval_macro_f1",
    "eval_auc",
    "eval_label_shares",
    "eval_collapsed",
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


def process_start_time(pid: int | None = None) -> float:
    """When process ``pid`` (default: this one) started, in seconds since the epoch. With the pid it names one
    process: a pid the system reuses for a later process has another start time."""
    return psutil.Process(pid).create_time()


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
        """The job's status as every reader should report it: ``failed`` for a job recorded as running whose
        process is gone (see :meth:`is_interrupted`), else the recorded one."""
        return self.state["status"]

    @property
    def error(self) -> str | None:
        """Why the job failed (:data:`INTERRUPTED` for an interrupted one), else None."""
        return self.state.get("error")

    @property
    def state(self) -> dict:
        """``job.json`` as readers should see it: for an interrupted job, status ``failed``, the error
        :data:`INTERRUPTED` and ``interrupted: true``. Nothing is written: rerunning the job resumes it."""
        rec = self.record
        if self._interrupted(rec):
            rec.update(status="failed", error=INTERRUPTED, interrupted=True)
        return rec

    def is_interrupted(self) -> bool:
        """Recorded as running on this host, but its process (pid and start time) no longer exists."""
        return self._interrupted(self.record)

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
        """Whether the process recorded as running this job still exists on this host (same pid, same start)."""
        rec = self.record
        return rec.get("status") == "running" and _process_state(rec) == "alive"

    @staticmethod
    def _interrupted(rec: dict) -> bool:
        return rec.get("status") == "running" and _process_state(rec) == "gone"

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


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie: a killed worker whose parent is gone stays a zombie where
    PID 1 does not reap (many containers), and ``kill(pid, 0)`` still finds it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: it exists
        return True


def _process_state(rec: dict) -> str:
    """ "alive", "gone", or "unknown" (recorded on another host, or no pid recorded) for a job's recorded process."""
    pid, host = rec.get("pid"), rec.get("host")
    if not pid or host != socket.gethostname():
        return "unknown"
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped by its parent
            return "gone"
        started = proc.create_time()
    except psutil.NoSuchProcess:
        return "gone"
    except psutil.AccessDenied:  # another user's process: it exists, and that is all we can tell
        return "alive"
    recorded = rec.get("pid_started_at")
    # a record without a start time (written by an older ftkit) can only be checked by its pid
    return "gone" if recorded is not None and abs(started - recorded) > 0.01 else "alive"


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
    """A job by id, by the path of its folder, or by the job file it was trained from (see :func:`job_for_file`)."""
    p = Path(job_id)
    if (p / "job.json").is_file():
        return Job(p)
    if p.is_file() and p.suffix.lower() in JOB_FILE_SUFFIXES:
        if _is_job_record(p):
            return Job(p.parent)
        job = job_for_file(p, root)
        if not (job.path / "job.json").is_file():
            raise JobError(f"{p} is the job file of job {job.id!r}, which has not run yet: no {job.path / 'job.json'}")
        return job
    job = Job(jobs_dir(root) / job_id)
    if not (job.path / "job.json").is_file():
        known = [j.id for j in list_jobs(root)]
        hint = difflib.get_close_matches(job_id, known, n=3)
        raise JobError(
            f"no job {job_id!r} in {jobs_dir(root)}"
            + (f"; did you mean {', '.join(hint)}?" if hint else f"; jobs there: {', '.join(known) or 'none'}")
        )
    return job


def job_for_file(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Job:
    """The job a job file trains, where ``ftkit train`` puts it: ``<jobs dir>/<id of its name>``, the jobs dir being
    ``root``, else ``$FTKIT_JOBS_DIR``, else the file's ``local.output_dir``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the spec's notes are for check-job and train, not for finding its job
        spec = load_job(path)
    return Job(jobs_dir(root or os.environ.get("FTKIT_JOBS_DIR") or spec.local.output_dir) / job_id_for(spec.name))


def _is_job_record(path: Path) -> bool:
    """Whether a ``job.json`` is a job folder's record (not a job file that happens to have that name)."""
    if path.name != "job.json":
        return False
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(rec, dict) and "status" in rec and "spec" in rec


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
        rec = j.state
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
    recorded process when it runs on this host. A job that is not queued or running is refused with its status
    (an interrupted one with :data:`INTERRUPTED`).
    """
    job = get_job(job_id, root)
    state = job.state
    status = state["status"]
    if status in ("completed", "failed", "cancelled"):
        why = f": {state['error']}" if status == "failed" and state.get("error") else ""
        raise JobError(f"job {job.id!r} is already {status}{why}")
    (job.path / CANCEL_FILE).write_text(now() + "\n")
    if job.is_alive():
        os.kill(job.record["pid"], signal.SIGTERM)
    elif status == "queued":
        job.update(status="cancelled", finished_at=now())
    return job
