"""The objects the API returns, in the service's field names: files, datasets and the flat job object.

A job object joins the database row (name, queue status, body, estimate) with its job folder (progress, start and
end times, the model), so the client sees the union of the fields the docs and the demo client read.
"""

from __future__ import annotations

from ftkit.job import store as jobstore
from ftkit.server.db import to_utc


def file_object(row: dict, base: str) -> dict:
    return {
        "id": row["id"],
        "object": "file",
        "name": row["name"],
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "columns": row["columns"],
        "lines": row["lines"],
        "sha256": row["sha256"],
        "download_url": f"{base}/files/{row['id']}/content",
    }


def dataset_object(row: dict) -> dict:
    return {k: row[k] for k in ("id", "name", "training_file_id", "validation_file_id", "created_at")}


def _progress(rec: dict, status: str) -> float:
    if status == "completed":
        return 1.0
    p = rec.get("progress") or {}
    step, total = p.get("step"), p.get("max_steps")
    return round(min(step / total, 1.0), 4) if step is not None and total else 0.0


def job_object(row: dict, job: jobstore.Job, queue_position: int | None = None) -> dict:
    """The flat job object of ``GET jobs/{id}``."""
    try:
        rec = job.record
    except (jobstore.JobError, ValueError):
        rec = {}
    body, status = row["body"], row["status"]
    finished = row["finished_at"] if status in ("completed", "failed", "cancelled") else None
    error = {"code": row["error_code"] or "failed", "message": row["error"]} if row["error"] else None
    progress = rec.get("progress") or {}
    return {
        "id": row["id"],
        "object": "fine_tuning.job",
        "name": row["name"],
        "status": status,
        "base_model": row["base_model"],
        "base_model_id": body["base_model_id"],
        "dataset": body["dataset"],
        "hyperparameters": body["hyperparameters"],
        "local": body.get("local") or {},
        "created_at": row["created_at"],
        "started_at": to_utc(rec.get("started_at")) or row["started_at"],
        "finished_at": finished,
        "completed_at": finished if status == "completed" else None,
        "progress": _progress(rec, status),
        "step": progress.get("step"),
        "max_steps": progress.get("max_steps"),
        "queue_position": queue_position,
        "estimated_usage": {"tokens": row["estimated_tokens"], "cost": None},
        "error": error,
        "fine_tuned_model": str(job.model_dir.resolve()) if status == "completed" else None,
    }
