"""A completed job's model, taken away: the export archive (built once by :func:`ftkit.export.stage.export_job` and
cached) and the Hugging Face push (run in the background by :func:`ftkit.export.hub.push_to_hub`).

The Hub token lives only in the push's thread: it is not stored, logged, or echoed, and error messages are redacted.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ftkit.errors import FtkitError
from ftkit.export.hub import check_repo_id, push_to_hub
from ftkit.export.stage import export_job
from ftkit.files import sha256_file
from ftkit.job import store as jobstore
from ftkit.job.problems import MISSING, SpecProblem
from ftkit.server.db import Database, new_id, utc_now
from ftkit.server.errors import conflict
from ftkit.server.jobspec import invalid

HUB_FIELDS = ("huggingface_user_id", "huggingface_access_token", "huggingface_repository_id")
_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


def require_completed(row: dict, what: str) -> None:
    if row["status"] != "completed":
        raise conflict("job_not_completed", f"job {row['id']!r} is {row['status']}: only a completed job can be {what}")


def archive(db: Database, jobs_dir: Path, state: Path, row: dict) -> dict:
    """The job's export archive (``<id>.tar.gz``: adapter, tokenizer, job, metrics, model card), built on first ask."""
    require_completed(row, "downloaded")
    with _locks_lock:
        lock = _locks.setdefault(row["id"], threading.Lock())
    with lock:  # two downloads at once build it once
        cached = db.get("archives", row["id"], key="job_id")
        if cached and Path(cached["path"]).is_file():
            return cached
        out = state / "archives" / f"{row['id']}.tar.gz"
        export_job(jobstore.Job(jobs_dir / row["id"]), out=out, quiet=True)
        entry = {
            "job_id": row["id"],
            "path": str(out),
            "bytes": out.stat().st_size,
            "sha256": sha256_file(out),
            "created_at": utc_now(),
        }
        if cached:
            db.delete("archives", row["id"], key="job_id")
        return db.insert("archives", entry)


def _hub_body(body: Any) -> tuple[str, str, str]:
    """The three fields of the Hub dialog; problems never show the token's value."""
    problems = []
    if not isinstance(body, dict):
        raise invalid(
            [SpecProblem("(body)", MISSING, "must be a JSON object", ", ".join(HUB_FIELDS))], "invalid_export"
        )
    for key in body:
        if key not in HUB_FIELDS:
            problems.append(SpecProblem(key, MISSING, "unknown field", "fields: " + ", ".join(HUB_FIELDS)))
    for key in HUB_FIELDS:
        value = body.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(SpecProblem(key, MISSING, "is required", "a non-empty string"))
    repo = body.get("huggingface_repository_id")
    if isinstance(repo, str) and repo.strip():
        try:
            check_repo_id(repo)
        except FtkitError as e:
            problems.append(SpecProblem("huggingface_repository_id", repo, str(e), "namespace/name"))
    if problems:
        raise invalid(problems, "invalid_export")
    return body["huggingface_user_id"], body["huggingface_access_token"].strip(), repo


def start_hub_push(db: Database, jobs_dir: Path, row: dict, body: Any) -> dict:
    """Record a Hub export and push in a background thread; returns the export row (status ``running``)."""
    user, token, repo = _hub_body(body)
    require_completed(row, "exported")
    export = db.insert(
        "exports",
        {
            "id": new_id(),
            "job_id": row["id"],
            "type": "hugging-face",
            "status": "running",
            "huggingface_user_id": user,
            "huggingface_repository_id": repo,
            "url": None,
            "error": None,
            "created_at": utc_now(),
            "finished_at": None,
        },
    )

    def push() -> None:
        try:
            url = push_to_hub(jobstore.Job(jobs_dir / row["id"]), repo_id=repo, token=token, quiet=True)
        except Exception as e:  # any failure ends the export, with the token taken out of the message
            message = f"{type(e).__name__}: {e}" if not isinstance(e, FtkitError) else str(e)
            db.update(
                "exports", export["id"], status="failed", error=message.replace(token, "***"), finished_at=utc_now()
            )
        else:
            db.update("exports", export["id"], status="completed", url=url, finished_at=utc_now())

    threading.Thread(target=push, name=f"hub-push-{export['id']}", daemon=True).start()
    return export
