"""Opening a job before it trains: a fresh job folder, or the existing one picked up to resume (refused when its
spec or data changed, with what changed), decided once by rank 0 under DDP."""

from __future__ import annotations

import shutil

from transformers.trainer_utils import get_last_checkpoint

from ftkit.job import store as jobstore
from ftkit.models.device import pick_device

# Local settings that change how a job is run or reported but not what it learns: a resume may change them.
_RESUME_SAFE_LOCAL = {"output_dir", "logging_steps", "device", "save_steps", "report_to"}


def _diff(old, new, path="") -> list[str]:
    """Dotted paths whose values differ between two JSON-like values, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{path}.{k}" if path else k)
        return out
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def _fingerprint(spec_dict: dict, data: dict) -> dict:
    spec = {k: v for k, v in spec_dict.items() if k != "local"}
    local = {k: v for k, v in (spec_dict.get("local") or {}).items() if k not in _RESUME_SAFE_LOCAL}
    return {"spec": spec, "local": local, "data": {k: v and v["sha256"] for k, v in data.items()}}


def open_job(spec, spec_dict: dict, data: dict, root, fresh: bool) -> tuple[jobstore.Job, str | None]:
    """Create the job folder, or pick up an existing one; returns (job, checkpoint to resume from, or
    "completed" when there is nothing left to do)."""
    job = jobstore.Job(jobstore.jobs_dir(root) / jobstore.job_id_for(spec.name))
    fp = _fingerprint(spec_dict, data)
    if (job.path / "job.json").is_file():
        rec = job.record
        if rec.get("status") == "running" and job.is_alive():
            raise jobstore.JobError(f"job {job.id!r} is already running (pid {rec.get('pid')} on {rec.get('host')})")
        changed = _diff(rec.get("fingerprint"), fp)
        if fresh:
            shutil.rmtree(job.path)
        elif changed:
            raise jobstore.JobError(
                f"job {job.id!r} exists with a different spec or data, so it cannot be resumed:\n  "
                + "\n  ".join(changed)
                + "\nStart it again from scratch with fresh=True (CLI: --fresh), or give the job another name."
            )
        elif rec.get("status") == "completed":
            return job, "completed"
    if not (job.path / "job.json").is_file():
        job.path.mkdir(parents=True, exist_ok=True)
        job.update(
            id=job.id,
            name=spec.name,
            status="queued",
            created_at=jobstore.now(),
            started_at=None,
            finished_at=None,
            error=None,
            spec=spec_dict,
            data=data,
            fingerprint=fp,
        )
        return job, None
    (job.path / jobstore.CANCEL_FILE).unlink(missing_ok=True)
    ckpt_dir = job.path / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    return job, last


def open_everywhere(spec, data: dict, root, fresh: bool, rank: int, world: int):
    """``open_job`` on rank 0 alone, which records its decision (``resume_from``); under DDP the other ranks wait
    for it and read that decision."""
    state = None
    if world > 1:
        from accelerate import PartialState

        # Initialise the process group now (as the Trainer will) so that rank 0 can set the job up alone.
        state = PartialState(cpu=pick_device(spec.local.device) == "cpu")
    if rank == 0:
        job, resume = open_job(spec, spec.normalized(), data, root, fresh)
        if resume != "completed":
            job.update(resume_from=resume)
    if state is not None:
        state.wait_for_everyone()
    if rank != 0:
        job = jobstore.Job(jobstore.jobs_dir(root) / jobstore.job_id_for(spec.name))
        resume = "completed" if job.status == "completed" else job.record.get("resume_from")
    return job, resume
